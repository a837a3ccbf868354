//! A RabbitMQ user of a test's own, with a random password. A test that searches logs for
//! the broker password needs one that appears nowhere else: the default `guest:guest` has
//! the user name as password, and logs may name the user freely.

use crate::faults::run;

pub struct BrokerUser {
    pub name: String,
    pub password: String,
}

impl BrokerUser {
    /// Creates the user (all rights on the default vhost) with `rabbitmqctl`. Where that
    /// cannot be used, says why and returns `None`, except under `CI=true`, where it fails.
    pub fn create_or_skip() -> Option<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let user = Self {
            name: format!("test-user-{}", &id[..12]),
            password: format!("broker-pw-{}", &id[12..]),
        };
        let created = run(
            "rabbitmqctl",
            &["-q", "add_user", &user.name, &user.password],
        )
        .and_then(|_| {
            run(
                "rabbitmqctl",
                &[
                    "-q",
                    "set_permissions",
                    "-p",
                    "/",
                    &user.name,
                    ".*",
                    ".*",
                    ".*",
                ],
            )
        });
        match created {
            Ok(_) => Some(user),
            Err(why) if shared::config::running_in_ci() => {
                panic!("cannot create a RabbitMQ user, and CI=true requires it: {why}")
            }
            Err(why) => {
                eprintln!("SKIPPED: cannot create a RabbitMQ user here: {why}");
                None
            }
        }
    }

    /// The AMQP URL of the local broker as this user.
    pub fn url(&self) -> String {
        format!("amqp://{}:{}@127.0.0.1:5672/%2f", self.name, self.password)
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        if let Err(why) = run("rabbitmqctl", &["-q", "delete_user", &self.name]) {
            eprintln!(
                "could not delete the test's RabbitMQ user {}: {why}",
                self.name
            );
        }
    }
}
