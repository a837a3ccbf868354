//! Every way the upstream feed misbehaves (`docs/stooq-feed.md`): each gets the right status, a
//! stable code and a message naming the cause; retries happen only where they can help; and
//! nothing reaches anyone's history.

use std::time::Duration;

use api_service::store::Role;
use fake_stooq::Mode;
use serde_json::Value;
use tests::ledger::{Client, Ledger};
use tests::{TestApp, stack};

/// One misbehaviour and what the client must see.
struct Case {
    mode: Mode,
    status: u16,
    code: &'static str,
    /// Lower-case fragment the message must contain.
    says: &'static str,
    /// Upstream requests the call may cost: 1 for a refusal or a non-data page, 1 + retries
    /// for failures that may pass (5xx, dropped connections).
    hits: u64,
}

async fn answer(app: &TestApp, token: &str, symbol: &str) -> (u16, Value) {
    let response = app.stock(token, symbol).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_upstream_failure_gets_its_own_status_code_and_message() {
    // Nine failures in a row would open the circuit breaker (tested on its own below) and
    // every later case would get its refusal instead of its own answer.
    let Some(app) = stack()
        .quote_settings(|s| s.stooq_breaker_threshold = 0)
        .spawn()
        .await
    else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;
    let retries = u64::from(app.quote_settings.stooq_max_retries);
    // DailyLimit and a 503 are covered by the end-to-end spec (tests/tests/e2e/stock.rs).
    let cases = [
        Case {
            mode: Mode::Status(500),
            status: 502,
            code: "upstream_unavailable",
            says: "http 500",
            hits: 1 + retries,
        },
        Case {
            mode: Mode::Drop,
            status: 502,
            code: "upstream_unavailable",
            says: "stooq",
            hits: 1 + retries,
        },
        Case {
            mode: Mode::Status(429),
            status: 502,
            code: "upstream_rejected",
            says: "429",
            hits: 1,
        },
        Case {
            mode: Mode::Status(404),
            status: 502,
            code: "upstream_rejected",
            says: "stooq_api_key",
            hits: 1,
        },
        Case {
            mode: Mode::ApiKeyPage,
            status: 502,
            code: "upstream_rejected",
            says: "api key",
            hits: 1,
        },
        Case {
            mode: Mode::Challenge,
            status: 502,
            code: "upstream_rejected",
            says: "browser challenge",
            hits: 1,
        },
        Case {
            mode: Mode::OtherHtml,
            status: 502,
            code: "upstream_unavailable",
            says: "html",
            hits: 1,
        },
        Case {
            mode: Mode::Empty,
            status: 502,
            code: "upstream_unavailable",
            says: "empty",
            hits: 1,
        },
        Case {
            mode: Mode::Truncated,
            status: 502,
            code: "upstream_unavailable",
            says: "truncated",
            hits: 1,
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        app.stooq.set_mode(case.mode);
        let symbol = format!("case{i}.us");

        let (status, body) = answer(&app, &token, &symbol).await;

        let what = format!("{}", case.mode);
        assert_eq!(status, case.status, "{what}: {body}");
        assert_eq!(body["error"]["code"], case.code, "{what}: {body}");
        let message = body["error"]["message"].as_str().unwrap().to_lowercase();
        assert!(
            message.contains(case.says),
            "{what}: {message:?} should say {:?}",
            case.says
        );
        assert_eq!(
            app.stooq.symbol_hits(&symbol),
            case.hits,
            "{what}: upstream requests"
        );
    }
    app.stooq.set_mode(Mode::Normal);
    assert!(
        app.history(&token).await.is_empty(),
        "no failure is recorded"
    );
    assert_eq!(
        app.stock(&token, "aapl.us").await.status(),
        200,
        "healthy again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_upstream_is_retried_within_the_deadline() {
    let Some(app) = stack().spawn().await else {
        return;
    };
    let client = Client::new(&app, "alice").await;
    let ledger = Ledger::new();
    let retries = app.quote_settings.stooq_max_retries;

    // One transient failure of each kind, then the feed answers: served, recorded once.
    for (i, mode) in [Mode::Status(503), Mode::Drop, Mode::Status(502)]
        .into_iter()
        .enumerate()
    {
        app.stooq.fail_next(retries, mode);
        let symbol = format!("flaky{i}.us");
        let call = ledger
            .stock(&app.client, &app.address, &client, &symbol)
            .await;
        assert_eq!(call.status(), Some(200), "{mode} x{retries} then normal");
        assert_eq!(app.stooq.symbol_hits(&symbol), u64::from(retries) + 1);
    }
    // One failure more than the retries: the last failure is reported, not a timeout.
    app.stooq.fail_next(retries + 1, Mode::Status(503));
    let call = ledger
        .stock(&app.client, &app.address, &client, "flaky9.us")
        .await;
    assert_eq!(call.status(), Some(502));
    assert_eq!(app.stooq.symbol_hits("flaky9.us"), u64::from(retries) + 1);

    ledger.assert_consistent(app.store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_served_while_in_time_and_cut_per_attempt_when_not() {
    let Some(app) = stack()
        .rpc_timeout(Duration::from_secs(3))
        .quote_settings(|s| s.stooq_timeout = Duration::from_millis(600))
        .spawn()
        .await
    else {
        return;
    };
    let client = Client::new(&app, "alice").await;
    let ledger = Ledger::new();

    app.stooq.set_latency(Duration::from_millis(300));
    let slow = ledger
        .stock(&app.client, &app.address, &client, "aapl.us")
        .await;
    app.stooq.set_latency(Duration::from_secs(2));
    let too_slow = ledger
        .stock(&app.client, &app.address, &client, "msft.us")
        .await;

    assert_eq!(slow.status(), Some(200), "slow but within every limit");
    // Each attempt is cut at STOOQ_TIMEOUT and retried; the caller hears why, in time.
    assert_eq!(too_slow.status(), Some(502), "{:?}", too_slow.outcome);
    assert!(
        too_slow.took < Duration::from_secs(3),
        "{:?}",
        too_slow.took
    );
    assert_eq!(app.stooq.symbol_hits("msft.us"), 3);
    ledger.assert_consistent(app.store.as_ref()).await;
}

/// Steady load against a feed answering 503 to everything: (calls made, upstream requests).
async fn load_on_a_dead_feed(app: &TestApp, clients: &[Client], ledger: &Ledger) -> (usize, u64) {
    app.stooq.set_mode(Mode::Status(503));
    let before = app.stooq.hits();
    let load =
        tests::load::Load::start_with(app, clients, &crate::SYMBOLS, crate::PAUSE, ledger.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls = load.stop().await.len();
    (calls, app.stooq.hits() - before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_trips_the_breaker_instead_of_multiplying_the_load() {
    const THRESHOLD: u32 = 3;
    // Well beyond the 1.5 s of load, so the circuit that opened early in it is certainly still
    // open when the test asks right after: no trial can land in between on a slow machine.
    const COOLDOWN: Duration = Duration::from_secs(5);
    let Some(app) = stack()
        .quote_settings(|s| {
            s.stooq_breaker_threshold = THRESHOLD;
            s.stooq_breaker_cooldown = COOLDOWN;
        })
        .spawn()
        .await
    else {
        return;
    };
    let Some(unprotected) = stack()
        .quote_settings(|s| s.stooq_breaker_threshold = 0)
        .spawn()
        .await
    else {
        return;
    };
    let clients = Client::many(&app, "client", crate::CLIENTS).await;
    let ledger = Ledger::new();

    let (calls, hits) = load_on_a_dead_feed(&app, &clients, &ledger).await;
    // Still within the cooldown: the open circuit answers, naming the feed's last failure,
    // without a request to the feed.
    let hits_before_answer = app.stooq.hits();
    let (status, body) = answer(&app, &clients[0].token, "aapl.us").await;
    let hits_for_answer = app.stooq.hits() - hits_before_answer;
    let other_clients = Client::many(&unprotected, "client", crate::CLIENTS).await;
    let (calls_without, hits_without) =
        load_on_a_dead_feed(&unprotected, &other_clients, &Ledger::new()).await;

    eprintln!(
        "dead feed for 1.5 s: {calls} calls cost {hits} upstream requests with the breaker, \
         {calls_without} calls cost {hits_without} without"
    );
    // Up to THRESHOLD failures open it; fetches already running may each finish one more
    // attempt; one trial per cooldown after that.
    let bound = u64::from(THRESHOLD) + crate::CLIENTS as u64 + 2;
    assert!(
        hits <= bound,
        "{hits} upstream requests for {calls} calls (bound {bound})"
    );
    assert!(calls > 40, "the load kept going: {calls}");
    assert!(
        hits_without > 3 * hits,
        "without the breaker every call goes out, with retries: {hits_without}"
    );
    let refused: Vec<_> = ledger
        .calls()
        .into_iter()
        .filter(|c| c.status() == Some(502))
        .collect();
    assert_eq!(
        refused.len(),
        calls,
        "every call is a 502 while the feed is dead"
    );
    let fast = refused
        .iter()
        .filter(|c| c.took < Duration::from_millis(100))
        .count();
    assert!(fast * 10 >= calls * 8, "most fail fast: {fast} of {calls}");
    assert_eq!(status, 502);
    assert_eq!(
        hits_for_answer, 0,
        "the open circuit does not call the feed"
    );
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("not being called") && message.contains("HTTP 503"),
        "the open circuit says so, with the feed's last failure: {message}"
    );

    // The feed recovers: within a cooldown one trial request closes the circuit again; the
    // calls before it are refused without calling the feed.
    app.stooq.set_mode(Mode::Normal);
    let hits_before_recovery = app.stooq.hits();
    let recovered = tests::load::wait_until(COOLDOWN + Duration::from_secs(5), || async {
        ledger
            .stock(&app.client, &app.address, &clients[0], "aapl.us")
            .await
            .status()
            == Some(200)
    })
    .await;
    let recovered = recovered.expect("served again after the cooldown");
    assert_eq!(
        app.stooq.hits() - hits_before_recovery,
        1,
        "one trial request closed the circuit (after {recovered:?})"
    );
    ledger.assert_consistent(app.store.as_ref()).await;
}
