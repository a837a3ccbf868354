use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

const OWNER: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
const ATTACKER: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)));
const MINUTE: Duration = Duration::from_secs(60);

fn addr(i: u32) -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
}

fn throttle(per_user: u32, per_ip: u32) -> Arc<LoginThrottle> {
    Arc::new(LoginThrottle::new(per_user, per_ip, 5 * MINUTE))
}

impl LoginThrottle {
    async fn fail(self: &Arc<Self>, username: &str, address: Option<IpAddr>) {
        self.admit(username, address).await.unwrap().failed();
    }

    async fn succeed(self: &Arc<Self>, username: &str, address: Option<IpAddr>) {
        self.admit(username, address).await.unwrap().succeeded();
    }
}

fn refusal(result: Result<Attempt, Refusal>) -> Refusal {
    match result {
        Err(refusal) => refusal,
        Ok(_) => panic!("admitted"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_username_and_address_pair_is_locked_after_its_limit() {
    let throttle = throttle(3, 0);
    for _ in 0..3 {
        throttle.fail("alice", ATTACKER).await;
    }
    assert_eq!(
        refusal(throttle.admit("alice", ATTACKER).await),
        Refusal::LockedOut(5 * MINUTE)
    );
    assert!(
        throttle.admit("bob", ATTACKER).await.is_ok(),
        "other users are unaffected"
    );
}

#[tokio::test(start_paused = true)]
async fn failures_from_elsewhere_never_lock_the_owner_out_of_their_usual_address() {
    let throttle = throttle(5, 0);
    throttle.succeed("admin", OWNER).await;
    // An attacker hammers the account from many addresses, bursts of 5 concurrent guesses.
    for i in 0..40 {
        let burst: Vec<_> =
            futures::future::join_all((0..5).map(|_| throttle.admit("admin", addr(i)))).await;
        burst.into_iter().flatten().for_each(Attempt::failed);
    }
    for _ in 0..3 {
        throttle.succeed("admin", OWNER).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_username_failing_from_everywhere_is_paced_with_a_doubling_delay() {
    let throttle = throttle(3, 0);
    for i in 0..3 {
        throttle.fail("alice", addr(i)).await;
    }
    // The first attempt past the limit is admitted and sets the pace for the next.
    throttle.fail("alice", addr(10)).await;
    assert_eq!(
        refusal(throttle.admit("alice", addr(11)).await),
        Refusal::Paced(Duration::from_secs(1))
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    throttle.fail("alice", addr(11)).await;
    assert_eq!(
        refusal(throttle.admit("alice", addr(12)).await),
        Refusal::Paced(Duration::from_secs(2))
    );
}

#[tokio::test(start_paused = true)]
async fn the_pace_never_exceeds_lockout_divided_by_the_limit() {
    let throttle = throttle(5, 0);
    for i in 0..30 {
        // Wait out whatever pace there is, then fail again.
        loop {
            match throttle.admit("alice", addr(i)).await {
                Ok(attempt) => break attempt.failed(),
                Err(Refusal::Paced(wait)) => {
                    assert!(wait <= MINUTE, "{wait:?}");
                    tokio::time::advance(wait).await;
                }
                Err(other) => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(
        refusal(throttle.admit("alice", addr(99)).await),
        Refusal::Paced(MINUTE)
    );
}

#[tokio::test(start_paused = true)]
async fn a_paced_burst_gets_one_attempt_through() {
    let throttle = throttle(2, 0);
    for i in 0..2 {
        throttle.fail("alice", addr(i)).await;
    }
    let burst =
        futures::future::join_all((0..50).map(|i| throttle.admit("alice", addr(100 + i)))).await;
    let admitted = burst.iter().filter(|r| r.is_ok()).count();
    assert_eq!(admitted, 1);
}

#[tokio::test(start_paused = true)]
async fn a_network_the_user_logged_in_from_skips_the_pace() {
    let throttle = throttle(3, 0);
    throttle.succeed("alice", OWNER).await;
    for i in 0..10 {
        let _ = throttle.admit("alice", addr(i)).await.map(Attempt::failed);
    }
    assert!(matches!(
        refusal(throttle.admit("alice", ATTACKER).await),
        Refusal::Paced(_)
    ));
    assert!(throttle.admit("alice", OWNER).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_known_network_is_still_held_to_its_own_hard_limit() {
    let throttle = throttle(3, 0);
    throttle.succeed("alice", OWNER).await;
    for _ in 0..3 {
        throttle.fail("alice", OWNER).await;
    }
    assert!(matches!(
        refusal(throttle.admit("alice", OWNER).await),
        Refusal::LockedOut(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn an_address_is_locked_after_its_limit_of_failures_whatever_the_usernames() {
    let throttle = throttle(0, 3);
    for name in ["a", "b", "c"] {
        throttle.fail(name, ATTACKER).await;
    }
    assert!(matches!(
        refusal(throttle.admit("d", ATTACKER).await),
        Refusal::LockedOut(_)
    ));
    assert!(
        throttle.admit("d", OWNER).await.is_ok(),
        "other addresses are unaffected"
    );
}

#[tokio::test(start_paused = true)]
async fn a_successful_login_does_not_forgive_its_addresses_failures() {
    let throttle = throttle(0, 3);
    throttle.fail("a", ATTACKER).await;
    throttle.fail("b", ATTACKER).await;
    throttle.succeed("attackers-own-account", ATTACKER).await;
    throttle.fail("c", ATTACKER).await;
    assert!(matches!(
        refusal(throttle.admit("d", ATTACKER).await),
        Refusal::LockedOut(_)
    ));
}

/// Runs `logins` concurrent attempts, each taking 20 ms (virtual) to reach `verdict`; returns
/// the refusals and the most attempts ever admitted at once.
async fn burst(
    throttle: &Arc<LoginThrottle>,
    usernames: impl Fn(usize) -> String,
    logins: usize,
    verdict: Verdict,
) -> (Vec<Refusal>, u32) {
    let (now, peak) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..logins {
        let (throttle, now, peak) = (throttle.clone(), now.clone(), peak.clone());
        let username = usernames(i);
        tasks.spawn(async move {
            let attempt = throttle.admit(&username, ATTACKER).await?;
            peak.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            match verdict {
                Verdict::Succeeded => attempt.succeeded(),
                Verdict::Failed => attempt.failed(),
            }
            Ok(())
        });
    }
    let refusals = tasks.join_all().await.into_iter().filter_map(Result::err);
    (refusals.collect(), peak.load(Ordering::SeqCst))
}

#[tokio::test(start_paused = true)]
async fn a_parallel_spray_from_one_address_checks_exactly_the_limit() {
    let throttle = throttle(5, 20);
    let (refused, peak) = burst(&throttle, |i| format!("user{i}"), 1_000, Verdict::Failed).await;
    assert_eq!(peak, 20, "attempts count when admitted");
    assert_eq!(refused.len(), 980, "exactly the allowance was checked");
    assert!(refused.iter().all(|r| matches!(r, Refusal::LockedOut(_))));
}

#[tokio::test(start_paused = true)]
async fn concurrent_good_logins_from_one_address_wait_for_a_slot() {
    let throttle = throttle(5, 3);
    let (refused, peak) = burst(&throttle, |i| format!("user{i}"), 50, Verdict::Succeeded).await;
    assert_eq!(refused, [], "every login got in");
    assert_eq!(
        peak, 3,
        "at most the address's limit at once; the rest waited"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_good_logins_for_one_username_wait_for_a_slot() {
    let throttle = throttle(5, 0);
    let (refused, peak) = burst(&throttle, |_| "alice".into(), 12, Verdict::Succeeded).await;
    assert_eq!(refused, [], "every login got in");
    assert_eq!(peak, 5, "at most the limit at once; the rest waited");
    assert!(throttle.pairs.lock().is_empty(), "nothing left to remember");
    assert!(throttle.users.lock().is_empty(), "nothing left to remember");
}

#[tokio::test(start_paused = true)]
async fn concurrent_guesses_cannot_overshoot_the_limit() {
    let throttle = throttle(3, 0);
    let (refused, peak) = burst(&throttle, |_| "alice".into(), 20, Verdict::Failed).await;
    assert_eq!(peak, 3);
    assert_eq!(refused.len(), 17, "exactly the allowance was checked");
    assert!(refused.iter().all(|r| matches!(r, Refusal::LockedOut(_))));
}

#[tokio::test(start_paused = true)]
async fn lockouts_end_and_old_failures_are_forgotten() {
    let throttle = Arc::new(LoginThrottle::new(2, 0, MINUTE));
    throttle.fail("alice", ATTACKER).await;
    tokio::time::advance(MINUTE).await;
    throttle.fail("alice", ATTACKER).await;
    assert!(
        throttle.admit("alice", ATTACKER).await.is_ok(),
        "first failure forgotten"
    );
    throttle.fail("alice", ATTACKER).await;
    assert!(matches!(
        refusal(throttle.admit("alice", ATTACKER).await),
        Refusal::LockedOut(_)
    ));
    tokio::time::advance(MINUTE).await;
    assert!(
        throttle.admit("alice", ATTACKER).await.is_ok(),
        "lockout over"
    );
}

#[tokio::test(start_paused = true)]
async fn an_attempt_dropped_without_a_verdict_frees_its_slots_and_is_not_a_failure() {
    let throttle = throttle(2, 2);
    let first = throttle.admit("alice", ATTACKER).await.unwrap();
    let second = throttle.admit("alice", ATTACKER).await.unwrap();
    let waiting = {
        let throttle = throttle.clone();
        tokio::spawn(async move { throttle.admit("alice", ATTACKER).await.map(drop) })
    };
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "both slots are taken");
    drop(first); // a database error mid-check
    assert_eq!(waiting.await.unwrap(), Ok(()), "woken by the freed slot");
    drop(second);
    assert!(throttle.pairs.lock().is_empty(), "no failure was counted");
    assert!(
        throttle.addresses.lock().is_empty(),
        "no failure was counted"
    );
}

#[tokio::test(start_paused = true)]
async fn a_key_busy_for_the_whole_wait_is_refused() {
    let throttle = throttle(1, 0);
    let _in_flight = throttle.admit("alice", ATTACKER).await.unwrap();
    let started = Instant::now();
    assert_eq!(
        refusal(throttle.admit("alice", ATTACKER).await),
        Refusal::Busy
    );
    assert_eq!(started.elapsed(), MAX_WAIT);
}

#[tokio::test(start_paused = true)]
async fn a_full_table_refuses_new_keys_instead_of_not_counting_them() {
    let throttle = Arc::new(LoginThrottle::with_capacity(5, 0, MINUTE, 3));
    for name in ["a", "b", "c"] {
        throttle.fail(name, ATTACKER).await;
    }
    assert_eq!(
        refusal(throttle.admit("d", ATTACKER).await),
        Refusal::Full(FULL_RETRY_AFTER)
    );
    assert!(
        throttle.admit("a", ATTACKER).await.is_ok(),
        "tracked keys still served"
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_table_sweeps_stale_entries_but_never_attempts_in_flight() {
    let throttle = Arc::new(LoginThrottle::with_capacity(1, 0, MINUTE, 3));
    let alice = throttle.admit("alice", ATTACKER).await.unwrap();
    throttle.fail("b", ATTACKER).await;
    throttle.fail("c", ATTACKER).await;
    tokio::time::advance(MINUTE).await;
    let _dave = throttle.admit("dave", ATTACKER).await.unwrap();
    assert_eq!(
        throttle.pairs.lock().len(),
        2,
        "room made for dave, alice kept"
    );
    alice.failed();
    assert!(matches!(
        refusal(throttle.admit("alice", ATTACKER).await),
        Refusal::LockedOut(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn ipv6_neighbours_in_one_64_share_one_count() {
    let throttle = throttle(0, 3);
    for host in 1..=3 {
        let address: IpAddr = format!("2001:db8:0:7::{host}").parse().unwrap();
        throttle.fail(&format!("user{host}"), Some(address)).await;
    }
    let neighbour: IpAddr = "2001:db8:0:7:abcd::1".parse().unwrap();
    let elsewhere: IpAddr = "2001:db8:0:8::1".parse().unwrap();
    assert!(matches!(
        refusal(throttle.admit("user9", Some(neighbour)).await),
        Refusal::LockedOut(_)
    ));
    assert!(throttle.admit("user9", Some(elsewhere)).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn names_that_cannot_be_accounts_are_not_tracked_but_their_address_is() {
    let throttle = throttle(1, 2);
    let huge = "x".repeat(10_000);
    for _ in 0..2 {
        throttle.fail(&huge, ATTACKER).await;
    }
    assert!(matches!(
        refusal(throttle.admit(&huge, ATTACKER).await),
        Refusal::LockedOut(_)
    ));
    assert!(throttle.pairs.lock().is_empty());
    assert!(throttle.users.lock().is_empty());
}

#[tokio::test(start_paused = true)]
async fn zero_limits_disable_it() {
    let throttle = throttle(0, 0);
    let mut attempts = Vec::new();
    for _ in 0..100 {
        attempts.push(throttle.admit("alice", ATTACKER).await.unwrap());
    }
    attempts.into_iter().for_each(Attempt::failed);
    assert!(throttle.admit("alice", ATTACKER).await.is_ok());
}
