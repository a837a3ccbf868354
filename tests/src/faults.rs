//! Breaking the shared infrastructure on purpose: the local RabbitMQ (`rabbitmqctl`) and
//! PostgreSQL (`pg_ctlcluster`). These affect EVERY test on the machine, so only the `chaos`
//! test binary uses them, and it runs alone (`.config/nextest.toml`, `scripts/test.sh`).
//!
//! Each outage is a guard whose `Drop` restores the service synchronously and waits until it
//! accepts connections again, so a failing assertion never leaves the broker or the database
//! down for the tests that follow.

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a restored service may take to accept connections again.
const RESTORE_LIMIT: Duration = Duration::from_secs(60);

/// Runs a command, returning its stdout, or why it failed.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {args:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        ))
    }
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

fn wait_for_port(port: u16, open: bool, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while port_open(port) != open {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// Whether this machine lets the test control the service: the tool exists and works. Outside
/// CI a `false` means "skip"; under CI it is a failure.
fn controllable(what: &str, probe: Result<String, String>) -> bool {
    match probe {
        Ok(_) => true,
        Err(why) if shared::config::running_in_ci() => {
            panic!("cannot control {what} here, and CI=true requires it: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED: cannot control {what} here: {why}");
            false
        }
    }
}

// --- RabbitMQ ---------------------------------------------------------------------------------

pub const AMQP_PORT: u16 = 5672;

/// `rabbitmqctl` with `args`.
pub fn rabbitmqctl(args: &[&str]) -> Result<String, String> {
    run("rabbitmqctl", args)
}

/// Whether `rabbitmqctl` works here (root, broker running).
pub fn broker_controllable() -> bool {
    controllable("RabbitMQ", rabbitmqctl(&["-q", "status"]))
}

/// Force-closes every client connection on the broker.
pub fn close_all_broker_connections() {
    rabbitmqctl(&["close_all_connections", "chaos test"]).expect("close_all_connections");
}

/// Force-closes only the client connections whose name contains `needle` (so a test can cut
/// its own services' links while other tests keep theirs); returns how many it closed.
pub fn close_broker_connections_named(needle: &str) -> usize {
    // The name a client gives its connection is among its client properties.
    let listing = rabbitmqctl(&["-q", "list_connections", "pid", "client_properties"])
        .expect("rabbitmqctl list_connections");
    let mut closed = 0;
    for line in listing.lines() {
        let Some((pid, properties)) = line.split_once('\t') else {
            continue;
        };
        if properties.contains(needle) {
            rabbitmqctl(&["close_connection", pid.trim(), "test cut"]).expect("close_connection");
            closed += 1;
        }
    }
    closed
}

/// While alive, the RabbitMQ application is stopped (the node stays up, the AMQP listener is
/// closed: clients are refused at once). [`BrokerOutage::end`] or `Drop` starts it again.
pub struct BrokerOutage {
    ended: bool,
}

impl BrokerOutage {
    pub fn begin() -> Self {
        let guard = BrokerOutage { ended: false };
        rabbitmqctl(&["stop_app"]).expect("rabbitmqctl stop_app");
        assert!(
            wait_for_port(AMQP_PORT, false, Duration::from_secs(10)),
            "the AMQP port is still open after stop_app"
        );
        guard
    }

    /// Starts the broker again and returns once it accepts AMQP connections. The instant
    /// returned is when the start was issued: from then on the service may be back, so it
    /// ends the "down" window (and recovery is measured from it, the strict reading).
    pub fn end(mut self) -> Instant {
        let issued = Instant::now();
        self.restore();
        issued
    }

    fn restore(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        if let Err(why) = rabbitmqctl(&["start_app"]) {
            eprintln!("rabbitmqctl start_app failed: {why}");
        }
        if !wait_for_port(AMQP_PORT, true, RESTORE_LIMIT) {
            eprintln!("RabbitMQ does not accept connections {RESTORE_LIMIT:?} after start_app");
        }
    }
}

impl Drop for BrokerOutage {
    fn drop(&mut self) {
        self.restore();
    }
}

// --- PostgreSQL -------------------------------------------------------------------------------

pub const POSTGRES_PORT: u16 = 5432;

/// The cluster version directory under /etc/postgresql (the newest if several).
fn postgres_version() -> Result<String, String> {
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .map_err(|e| format!("/etc/postgresql: {e}"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort_by_key(|v| v.parse::<u32>().unwrap_or(0));
    versions
        .pop()
        .ok_or_else(|| "no cluster under /etc/postgresql".into())
}

fn pg_ctlcluster(action: &str) -> Result<String, String> {
    let version = postgres_version()?;
    run(
        "pg_ctlcluster",
        &["--skip-systemctl-redirect", &version, "main", action],
    )
}

/// Whether `pg_ctlcluster` can control the local cluster here.
pub fn postgres_controllable() -> bool {
    controllable("PostgreSQL", pg_ctlcluster("status"))
}

/// While alive, the local PostgreSQL cluster is stopped (fast shutdown: sessions are cut).
/// [`PostgresOutage::end`] or `Drop` starts it again.
pub struct PostgresOutage {
    ended: bool,
}

impl PostgresOutage {
    pub fn begin() -> Self {
        let guard = PostgresOutage { ended: false };
        pg_ctlcluster("stop").expect("pg_ctlcluster stop");
        assert!(
            wait_for_port(POSTGRES_PORT, false, Duration::from_secs(10)),
            "PostgreSQL still accepts connections after stop"
        );
        guard
    }

    /// Starts the cluster again and returns once it accepts connections. The instant
    /// returned is when the start was issued (see [`BrokerOutage::end`]).
    pub fn end(mut self) -> Instant {
        let issued = Instant::now();
        self.restore();
        issued
    }

    fn restore(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        if let Err(why) = pg_ctlcluster("start") {
            eprintln!("pg_ctlcluster start failed: {why}");
        }
        if !wait_for_port(POSTGRES_PORT, true, RESTORE_LIMIT) {
            eprintln!("PostgreSQL does not accept connections {RESTORE_LIMIT:?} after start");
        }
    }
}

impl Drop for PostgresOutage {
    fn drop(&mut self) {
        self.restore();
    }
}
