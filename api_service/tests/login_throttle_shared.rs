//! The login throttle's counts shared through PostgreSQL: two throttles on one database stand
//! for two API instances, and an attacker gets the limits once, not once per instance.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_service::auth::LoginThrottle;
use api_service::auth::login_throttle::{Attempt, CAPACITY, Refusal, SharedCounts};
use api_service::store::{self, Store, provision};

const LOCKOUT: Duration = Duration::from_secs(300);

struct Instances {
    a: Arc<LoginThrottle>,
    b: Arc<LoginThrottle>,
    _store: Arc<dyn Store>,
    _db: provision::TestDatabase,
}

/// Two throttles on one fresh database: per-user limit `per_user`, per-address `per_ip`.
async fn two_instances(per_user: u32, per_ip: u32, lease: Duration) -> Option<Instances> {
    let db = provision::fresh_postgres_or_skip().await?;
    let store = store::connect(db.url(), 8).await.expect("connect");
    store.migrate().await.expect("migrate");
    let pool = store.postgres_pool().expect("a PostgreSQL store");
    let throttle = || {
        Arc::new(
            LoginThrottle::new(per_user, per_ip, LOCKOUT)
                .sharing_through(SharedCounts::with_lease(pool.clone(), CAPACITY, lease)),
        )
    };
    Some(Instances {
        a: throttle(),
        b: throttle(),
        _store: store,
        _db: db,
    })
}

fn ip(text: &str) -> Option<IpAddr> {
    Some(text.parse().unwrap())
}

/// Records a failure and waits until it is written (verdicts are written by a task).
async fn fail(throttle: &Arc<LoginThrottle>, user: &str, from: &str) {
    let attempt = throttle.admit(user, ip(from)).await.expect("admitted");
    attempt.failed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_through_one_instance_lock_the_pair_on_the_other() {
    let Some(instances) = two_instances(3, 0, Duration::from_secs(60)).await else {
        return;
    };

    for _ in 0..3 {
        fail(&instances.a, "alice", "10.0.0.1").await;
    }
    let on_b = instances.b.admit("alice", ip("10.0.0.1")).await;

    assert!(
        matches!(on_b, Err(Refusal::LockedOut(_))),
        "B still admits: {:?}",
        on_b.map(|_| ())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_spray_across_instances_checks_only_the_limit() {
    let Some(instances) = two_instances(5, 20, Duration::from_secs(60)).await else {
        return;
    };

    // 60 guesses at once from one address with 60 names, half through each instance; the
    // admitted ones hold their slots (no verdict yet) until every look has ended.
    let looks: Vec<_> = (0..60)
        .map(|i| {
            let throttle = if i % 2 == 0 {
                Arc::clone(&instances.a)
            } else {
                Arc::clone(&instances.b)
            };
            tokio::spawn(async move { throttle.admit(&format!("user{i}"), ip("10.0.0.2")).await })
        })
        .collect();
    let mut admitted: Vec<Attempt> = Vec::new();
    let mut busy = 0;
    for look in looks {
        match look.await.unwrap() {
            Ok(attempt) => admitted.push(attempt),
            Err(Refusal::Busy) => busy += 1,
            Err(other) => panic!("unexpected refusal {other:?}"),
        }
    }

    assert_eq!((admitted.len(), busy), (20, 40));
    for attempt in admitted {
        attempt.failed();
    }
    let after = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match instances.a.admit("someone-else", ip("10.0.0.2")).await {
                Err(Refusal::LockedOut(_)) => return,
                Err(Refusal::Busy) => continue,
                other => panic!("the address should be locked: {:?}", other.map(|_| ())),
            }
        }
    })
    .await;
    assert!(after.is_ok(), "the 20 failures never locked the address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_held_by_an_instance_that_died_mid_login_ends_with_its_lease() {
    let lease = Duration::from_secs(1);
    let Some(instances) = two_instances(5, 1, lease).await else {
        return;
    };
    let started = Instant::now();
    let attempt = instances.a.admit("bob", ip("10.0.0.3")).await.unwrap();
    // The instance dies: no verdict is ever written.
    std::mem::forget(attempt);

    let on_b = instances.b.admit("carol", ip("10.0.0.3")).await;

    assert!(on_b.is_ok(), "the dead instance's slot never came free");
    assert!(
        started.elapsed() >= lease,
        "admitted before the lease ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_at_a_known_network_skips_the_pace_set_through_the_other_instance() {
    let Some(instances) = two_instances(3, 0, Duration::from_secs(60)).await else {
        return;
    };
    // Dave logs in from home through A; then attackers elsewhere fail through B until dave
    // is paced.
    instances
        .a
        .admit("dave", ip("10.0.0.4"))
        .await
        .unwrap()
        .succeeded();
    for i in 0..4 {
        fail(&instances.b, "dave", &format!("10.9.0.{i}")).await;
    }
    let stranger = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match instances.b.admit("dave", ip("10.9.1.1")).await {
                Err(Refusal::Paced(_)) => return,
                Err(Refusal::Busy) => continue,
                Ok(attempt) => attempt.failed(),
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert!(stranger.is_ok(), "dave was never paced");

    let owner = instances.b.admit("dave", ip("10.0.0.4")).await;

    assert!(
        owner.is_ok(),
        "the owner at home was refused: {:?}",
        owner.map(|_| ())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_table_refuses_new_keys_until_stale_rows_are_swept() {
    let Some(db) = provision::fresh_postgres_or_skip().await else {
        return;
    };
    let store = store::connect(db.url(), 8).await.expect("connect");
    store.migrate().await.expect("migrate");
    let pool = store.postgres_pool().expect("a PostgreSQL store");
    // Room for one attempt's three rows; failures are remembered for one second.
    let window = Duration::from_secs(1);
    let throttle = Arc::new(
        LoginThrottle::new(5, 20, window).sharing_through(SharedCounts::with_lease(
            pool,
            1,
            Duration::from_secs(60),
        )),
    );
    fail(&throttle, "first", "10.0.1.1").await;
    let full = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match throttle.admit("second", ip("10.0.1.2")).await {
                Err(Refusal::Full(_)) => return,
                Err(Refusal::Busy) => continue,
                other => panic!("expected a full table: {:?}", other.map(|_| ())),
            }
        }
    })
    .await;
    assert!(full.is_ok(), "the table never filled");

    // Once the first attempt's rows have nothing left to remember, they are swept.
    tokio::time::sleep(window + Duration::from_millis(200)).await;
    let later = throttle.admit("second", ip("10.0.1.2")).await;

    assert!(later.is_ok(), "still full: {:?}", later.map(|_| ()));
}
