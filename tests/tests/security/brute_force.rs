//! Password guessing: locked per (username, address), paced per username and limited per
//! client address, with 429 and `Retry-After`, without letting an attacker lock an owner
//! out of their own account and without touching good logins (many users at once, or one
//! user from many devices at once); and a login takes as long for an unknown username as
//! for a wrong password, so timing does not reveal which accounts exist.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use api_service::store::Role;
use reqwest::Response;
use serde_json::json;
use tests::{PASSWORD, TestApp, stack};

async fn login_from(
    client: &reqwest::Client,
    app: &TestApp,
    user: &str,
    password: &str,
) -> Response {
    client
        .post(app.url("/api/v1/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap()
}

/// Asserts a 429 with the envelope and a `Retry-After` of 1..=`max` seconds.
async fn assert_throttled(response: Response, max: Duration, what: &str) {
    assert_eq!(response.status(), 429, "{what}");
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=max.as_secs()).contains(&retry_after),
        "{what}: Retry-After {retry_after}"
    );
    assert_eq!(
        tests::error_code(response).await,
        "too_many_requests",
        "{what}"
    );
}

/// A client on another loopback address (all of 127/8 is local): a different client to the
/// server's throttle.
fn client_from(last_octet: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet)))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_for_a_username_from_one_address_lock_that_address_out_of_it() {
    const LOCKOUT: Duration = Duration::from_secs(60);
    let Some(app) = stack()
        .api_settings(|s| {
            s.login_max_failures = 3;
            s.login_max_failures_per_ip = 0;
            s.login_lockout = LOCKOUT;
        })
        .spawn()
        .await
    else {
        return;
    };
    app.create_user("alice", Role::User).await;
    app.create_user("bob", Role::User).await;
    let attacker = client_from(2);

    for _ in 0..3 {
        let response = login_from(&attacker, &app, "alice", "guess").await;
        assert_eq!(response.status(), 401);
    }
    let fourth = login_from(&attacker, &app, "alice", "guess").await;
    assert_throttled(fourth, LOCKOUT, "4th guess").await;
    let right = login_from(&attacker, &app, "alice", PASSWORD).await;
    assert_throttled(right, LOCKOUT, "even the right password, from there").await;
    let bob = login_from(&attacker, &app, "bob", PASSWORD).await;
    assert_eq!(bob.status(), 200, "other users log in from there");
    // An unknown username locks the same way: a 429 tells nothing about existence.
    for _ in 0..3 {
        let response = login_from(&attacker, &app, "nobody", "guess").await;
        assert_eq!(response.status(), 401);
    }
    let unknown = login_from(&attacker, &app, "nobody", "guess").await;
    assert_throttled(unknown, LOCKOUT, "unknown user").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_hammering_an_account_cannot_lock_its_owner_out() {
    const ADDRESSES: u8 = 8;
    const BURST: usize = 5;
    let Some(app) = stack()
        .api_settings(|s| {
            s.login_max_failures = 5;
            s.login_max_failures_per_ip = 20;
        })
        .spawn()
        .await
    else {
        return;
    };
    app.create_user("admin", Role::Admin).await;
    // The owner has signed in from their usual address before.
    assert_eq!(app.login("admin", PASSWORD).await.status(), 200);

    // Bursts of concurrent wrong guesses from several other addresses.
    let mut guessed = 0;
    for octet in 2..2 + ADDRESSES {
        let attacker = client_from(octet);
        let burst = (0..BURST).map(|_| login_from(&attacker, &app, "admin", "guess"));
        for response in futures::future::join_all(burst).await {
            match response.status().as_u16() {
                401 => guessed += 1,
                429 => assert_throttled(response, Duration::from_secs(60), "paced").await,
                other => panic!("unexpected {other}"),
            }
        }
    }

    // The account is paced, not locked: once its failures reach the limit, one guess per
    // burst at most gets through.
    assert!(
        guessed < BURST + usize::from(ADDRESSES),
        "{guessed} guesses checked"
    );
    for _ in 0..3 {
        assert_eq!(
            app.login("admin", PASSWORD).await.status(),
            200,
            "the owner, at their usual address, gets straight in"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_spray_from_one_address_checks_only_its_limit() {
    const LOGINS: usize = 1_000;
    let Some(app) = stack()
        .api_settings(|s| {
            s.login_max_failures = 5;
            s.login_max_failures_per_ip = 20;
            s.login_lockout = Duration::from_secs(300);
        })
        .spawn()
        .await
    else {
        return;
    };
    let sprayer = client_from(3);

    // One common password against a thousand names, all at once.
    let names: Vec<String> = (0..LOGINS).map(|i| format!("user{i}")).collect();
    let spray = names
        .iter()
        .map(|name| login_from(&sprayer, &app, name, "Winter2026!"));
    let answers = futures::future::join_all(spray).await;

    let checked = answers.iter().filter(|r| r.status() == 401).count();
    let throttled = answers.iter().filter(|r| r.status() == 429).count();
    assert_eq!(
        (checked, throttled),
        (20, LOGINS - 20),
        "attempts count when admitted, so exactly the address's limit was checked"
    );
    assert_eq!(
        app.login("user1", "Winter2026!").await.status(),
        401,
        "other addresses are unaffected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_concurrent_guesses_cannot_overshoot_the_limit() {
    let Some(app) = stack()
        .api_settings(|s| {
            s.login_max_failures = 3;
            s.login_max_failures_per_ip = 0;
        })
        .spawn()
        .await
    else {
        return;
    };
    app.create_user("alice", Role::User).await;

    let answers = futures::future::join_all((0..20).map(|_| app.login("alice", "guess"))).await;

    let guessed = answers.iter().filter(|r| r.status() == 401).count();
    let throttled = answers.iter().filter(|r| r.status() == 429).count();
    assert_eq!(
        (guessed, throttled),
        (3, 17),
        "exactly the allowance was checked"
    );
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Timing is statistical: 30 samples of each, interleaved in ABBA order, compared by median
/// (robust to the scheduling noise of a shared 2-core machine). A real difference (skipping argon2 for an
/// unknown user) would be 20x, not the 35% tolerated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_and_wrong_passwords_take_the_same_time() {
    const SAMPLES: usize = 30;
    let Some(app) = stack()
        .api_settings(|s| {
            s.login_max_failures = 0;
            s.login_max_failures_per_ip = 0;
        })
        .spawn()
        .await
    else {
        return;
    };
    app.create_user("alice", Role::User).await;
    for _ in 0..3 {
        app.login("alice", "warm up").await;
    }

    let (mut wrong, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..SAMPLES {
        let ghost = format!("ghost{i}");
        let timed = async |user: &str| {
            let started = Instant::now();
            assert_eq!(app.login(user, "wrong password").await.status(), 401);
            started.elapsed()
        };
        // ABBA order: strict alternation would tie each kind to every other blocking-pool
        // thread (and so to one core, maybe shared with a busy process), which skews one
        // kind by a third or more on a loaded machine.
        if i % 2 == 0 {
            wrong.push(timed("alice").await);
            unknown.push(timed(&ghost).await);
        } else {
            unknown.push(timed(&ghost).await);
            wrong.push(timed("alice").await);
        }
    }

    let (wrong, unknown) = (median(wrong), median(unknown));
    eprintln!("median login: wrong password {wrong:?}, unknown user {unknown:?}");
    let (fast, slow) = (wrong.min(unknown), wrong.max(unknown));
    assert!(
        fast.as_secs_f64() >= slow.as_secs_f64() * 0.65,
        "wrong password {wrong:?} vs unknown user {unknown:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_good_logins_at_once_from_one_address_are_not_throttled() {
    let Some(app) = stack()
        .api_settings(|s| s.login_max_failures_per_ip = 5)
        .spawn()
        .await
    else {
        return;
    };
    let users: Vec<String> = (0..15).map(|i| format!("member{i}")).collect();
    for user in &users {
        app.create_user(user, Role::User).await;
    }

    // Everyone behind one NAT or proxy signs in at the same moment: more of them than the
    // address's limit, which counts attempts in flight, so the extra ones wait their turn.
    let answers = futures::future::join_all(users.iter().map(|u| app.login(u, PASSWORD))).await;

    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_good_logins_at_once_for_one_username_are_not_throttled() {
    let Some(app) = stack()
        .api_settings(|s| s.login_max_failures = 5)
        .spawn()
        .await
    else {
        return;
    };
    app.create_user("alice", Role::User).await;

    // One account on several devices and scripts, more of them than its failure limit:
    // attempts in flight hold the account's slots, so the extra ones wait, then get in.
    let answers = futures::future::join_all((0..8).map(|_| app.login("alice", PASSWORD))).await;

    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}
