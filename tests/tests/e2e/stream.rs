//! `GET /api/v1/stream`: live quotes as Server-Sent Events, pushed from one refresh per
//! interval in the quote worker to every subscriber of every API instance.
//!
//! The stacks here refresh every 300 ms (`WATCH_REFRESH` in the test settings) and the fake
//! feed's prices move only when a test says so (`advance_prices`), so every change a test
//! waits for is one it made.

use std::time::{Duration, Instant};

use api_service::store::Role;
use reqwest::StatusCode;
use tests::sse::{self, SseEvent, SseStream};
use tests::{QuoteHandle, TestApp, Transport, stack};

/// The worker's (and the HTTP poller's) refresh interval in these stacks.
const REFRESH: Duration = Duration::from_millis(300);
/// How long a pushed change may take beyond one refresh (fetch, broker hop, fan-out) on a
/// busy test machine.
const SLACK: Duration = Duration::from_millis(700);
/// Long enough for the first events of a stream (one quote RPC per symbol).
const FIRST: Duration = Duration::from_secs(5);

async fn open(app: &TestApp, base: &str, token: &str, q: &str) -> SseStream {
    sse::open(&app.client, base, token, q, None)
        .await
        .unwrap_or_else(|(status, body)| panic!("stream refused: {status} {body}"))
}

/// The first `n` events, which must all arrive at once.
async fn first_events(stream: &mut SseStream, n: usize) -> Vec<SseEvent> {
    let mut events = Vec::new();
    for _ in 0..n {
        events.push(stream.next_event(FIRST).await.expect("a first event"));
    }
    events
}

fn worker(app: &TestApp) -> &QuoteHandle {
    app.quote.as_ref().expect("a quote worker")
}

/// Waits until the worker has run `n` more refreshes with `symbols` symbols watched, so
/// whatever interest was sent before has been acted on.
async fn refreshes_with(app: &TestApp, symbols: usize, n: u64) {
    let watch = &worker(app).watch;
    let deadline = Instant::now() + Duration::from_secs(10);
    let start = watch.refreshes();
    while watch.watched() != symbols || watch.refreshes() < start + n {
        assert!(
            Instant::now() < deadline,
            "no refresh of {symbols} symbols (watched {}, refreshes {})",
            watch.watched(),
            watch.refreshes()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_starts_with_the_current_quote_of_each_symbol_and_writes_no_history() {
    let Some(app) = stack().spawn().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;

    let mut stream = open(&app, &app.address, &token, "MSFT.us,aapl.us,aapl.us").await;
    let events = first_events(&mut stream, 2).await;

    assert_eq!(events[0].event, "quote");
    assert_eq!(events[0].symbol(), "AAPL.US");
    assert_eq!(events[0].close(), 183.05);
    assert_eq!(events[0].json()["company_name"], "APPLE");
    assert_eq!(events[1].symbol(), "MSFT.US");
    assert!(events.iter().all(|e| e.id.is_some()));
    assert!(
        app.history(&token).await.is_empty(),
        "streaming records nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_change_reaches_the_subscriber_within_one_refresh() {
    let Some(app) = stack().spawn().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;
    let mut stream = open(&app, &app.address, &token, "aapl.us").await;
    let before = first_events(&mut stream, 1).await[0].close();
    refreshes_with(&app, 1, 1).await;

    app.stooq.advance_prices();
    let started = Instant::now();
    let change = stream.next_event(REFRESH + SLACK).await;

    let change = change.unwrap_or_else(|| panic!("no change within {:?}", REFRESH + SLACK));
    assert_eq!(change.event, "quote");
    assert_ne!(change.close(), before);
    assert!(
        started.elapsed() <= REFRESH + SLACK,
        "{:?}",
        started.elapsed()
    );
    assert!(
        stream.events_within(REFRESH * 3).await.is_empty(),
        "one event per change, not one per refresh"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_carries_the_instant_the_worker_published_it() {
    let Some(app) = stack().spawn().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;
    let mut stream = open(&app, &app.address, &token, "aapl.us").await;
    first_events(&mut stream, 1).await;
    refreshes_with(&app, 1, 1).await;

    app.stooq.advance_prices();
    let asked_at = chrono::Utc::now().timestamp_millis();
    let change = stream.next_event(REFRESH + SLACK).await.expect("a change");
    let received_at = chrono::Utc::now().timestamp_millis();

    let published = change.json()["published_at_ms"]
        .as_i64()
        .unwrap_or_else(|| panic!("no published_at_ms in {}", change.data));
    assert!(
        (asked_at..=received_at).contains(&published),
        "published at {published}, prices moved at {asked_at}, received at {received_at}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_instances_both_deliver_the_change_from_one_worker_fetch() {
    let Some(app) = stack().spawn().await else {
        return;
    };
    let other = app.spawn_other_api().await;
    let token = app.token_for("alice", Role::User).await;
    let mut here = open(&app, &app.address, &token, "aapl.us").await;
    let mut there = open(&app, &other.address, &token, "aapl.us").await;
    first_events(&mut here, 1).await;
    first_events(&mut there, 1).await;
    let watch = &worker(&app).watch;
    while watch.instances() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    refreshes_with(&app, 1, 1).await;
    let (hits, refreshes) = (app.stooq.symbol_hits("aapl.us"), watch.refreshes());

    app.stooq.advance_prices();
    let (a, b) = (
        here.next_event(REFRESH + SLACK)
            .await
            .expect("instance 1 delivers"),
        there
            .next_event(REFRESH + SLACK)
            .await
            .expect("instance 2 delivers"),
    );

    assert_eq!(a.close(), b.close());
    let fetched = app.stooq.symbol_hits("aapl.us") - hits;
    let refreshed = watch.refreshes() - refreshes;
    // A refresh under way when the counters were read may land on either side of them.
    assert!(
        fetched.abs_diff(refreshed) <= 1 && fetched <= 2,
        "{fetched} upstream fetches for {refreshed} refreshes and two instances"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_subscribers_to_twenty_symbols_cost_one_upstream_call_per_refresh() {
    let Some(app) = stack()
        .api_settings(|s| s.stream_max_per_user = 100)
        .spawn()
        .await
    else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;
    let symbols: Vec<String> = (0..20).map(|i| format!("s{i}.us")).collect();
    let q = symbols.join(",");
    let mut streams = Vec::new();
    for _ in 0..100 {
        let mut stream = open(&app, &app.address, &token, &q).await;
        let first = first_events(&mut stream, 20).await;
        assert!(first.iter().all(|e| e.event == "quote"), "{first:?}");
        streams.push(stream);
    }
    refreshes_with(&app, 20, 2).await;
    app.stooq.reset();
    let refreshes = worker(&app).watch.refreshes();

    app.stooq.advance_prices();
    for stream in &mut streams {
        let mut changed = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let event = stream.next_event(REFRESH + SLACK).await.expect("a change");
            changed.insert(event.symbol());
        }
        assert_eq!(changed.len(), 20, "every subscriber gets every change once");
    }
    let extra =
        futures::future::join_all(streams.iter_mut().map(|s| s.events_within(REFRESH * 2))).await;
    assert!(extra.iter().all(Vec::is_empty), "{extra:?}");

    let refreshed = worker(&app).watch.refreshes() - refreshes;
    let requests = app.stooq.requests();
    assert!(
        requests.len() as u64 <= refreshed + 1 && !requests.is_empty(),
        "{} upstream calls for {refreshed} refreshes",
        requests.len()
    );
    for request in &requests {
        let mut asked = request.clone();
        asked.sort();
        let mut want = symbols.clone();
        want.sort();
        assert_eq!(asked, want, "one call carries all twenty symbols");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_with_what_changed_and_nothing_else_on_any_instance() {
    let Some(app) = stack()
        .api_settings(|s| s.stream_heartbeat = Duration::from_millis(100))
        .spawn()
        .await
    else {
        return;
    };
    let other = app.spawn_other_api().await;
    let token = app.token_for("alice", Role::User).await;
    let mut stream = open(&app, &app.address, &token, "aapl.us,msft.us").await;
    let first = first_events(&mut stream, 2).await;
    let id = first[1].id.clone().unwrap();
    drop(stream);

    // Unchanged since: resuming (here or on the other instance) sends nothing, only heartbeats.
    for base in [&app.address, &other.address] {
        let mut resumed = sse::open(&app.client, base, &token, "aapl.us,msft.us", Some(&id))
            .await
            .unwrap();
        let events = resumed.events_within(REFRESH * 3).await;
        assert!(events.is_empty(), "{base}: {events:?} after {id}");
        assert!(resumed.comments > 0, "heartbeats keep the stream alive");
    }

    // Both moved while away: exactly those two, at their new prices, then nothing.
    app.stooq.advance_prices();
    let mut resumed = sse::open(
        &app.client,
        &other.address,
        &token,
        "aapl.us,msft.us",
        Some(&id),
    )
    .await
    .unwrap();
    let events = resumed.events_within(REFRESH * 3).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_ne!(events[0].close(), first[0].close());
    assert_ne!(events[1].close(), first[1].close());

    // A garbled id (or one for other symbols) starts afresh.
    let mut fresh = sse::open(&app.client, &app.address, &token, "aapl.us", Some(&id))
        .await
        .unwrap();
    assert_eq!(first_events(&mut fresh, 1).await[0].symbol(), "AAPL.US");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_on_streams_and_symbols_answer_429() {
    let Some(app) = stack()
        .api_settings(|s| {
            s.stream_max_per_user = 2;
            s.stream_max_symbols = 3;
        })
        .spawn()
        .await
    else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;
    let other_user = app.token_for("bob", Role::User).await;
    let one = open(&app, &app.address, &token, "aapl.us").await;
    let _two = open(&app, &app.address, &token, "aapl.us").await;

    let (status, body) = sse::open(&app.client, &app.address, &token, "aapl.us", None)
        .await
        .err()
        .expect("a third stream is refused");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "too_many_requests");
    let _bobs = open(&app, &app.address, &other_user, "aapl.us").await;
    let (status, _) = sse::open(
        &app.client,
        &app.address,
        &other_user,
        "a.us,b.us,c.us,d.us",
        None,
    )
    .await
    .err()
    .expect("four symbols are refused");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    // A closed stream gives its slot back.
    drop(one);
    let deadline = Instant::now() + Duration::from_secs(5);
    while sse::open(&app.client, &app.address, &token, "aapl.us", None)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the slot was never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_before_streaming() {
    let Some(app) = stack().spawn().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;

    let no_token = app.get("/api/v1/stream?q=aapl.us").await;
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    for (q, code) in [
        ("aapl.us,no/slash", "invalid_symbol"),
        (",,", "bad_request"),
    ] {
        let (status, body) = sse::open(&app.client, &app.address, &token, q, None)
            .await
            .err()
            .expect("refused");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(body["error"]["code"], code, "{q}");
    }
    let missing = app.get_with_token("/api/v1/stream", &token).await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_symbol_gets_an_error_event_and_the_stream_goes_on() {
    let Some(app) = stack().spawn().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;
    let mut stream = open(&app, &app.address, &token, "aapl.us,xxxx.us").await;
    let events = first_events(&mut stream, 2).await;

    assert_eq!(events[0].event, "quote");
    assert_eq!(events[1].event, "error");
    assert_eq!(events[1].json()["code"], "not_found");
    assert_eq!(events[1].json()["symbol"], "xxxx.us");
    refreshes_with(&app, 2, 1).await;
    app.stooq.advance_prices();
    let change = stream
        .next_event(REFRESH + SLACK)
        .await
        .expect("aapl still moves");
    assert_eq!(change.symbol(), "AAPL.US");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_http_transport_the_api_polls_with_the_same_contract() {
    let Some(app) = stack().transport(Transport::Http).spawn().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;
    let mut stream = open(&app, &app.address, &token, "aapl.us").await;
    let before = first_events(&mut stream, 1).await[0].close();
    // Let one poll pass, so the change below is the next poll's news.
    tokio::time::sleep(REFRESH).await;

    app.stooq.advance_prices();
    let change = stream
        .next_event(REFRESH + SLACK)
        .await
        .expect("the next poll delivers the change");

    assert_ne!(change.close(), before);
    assert!(stream.events_within(REFRESH * 3).await.is_empty());
}

/// Says, as an API instance called `instance` would, that it watches `symbols` for `ttl`.
async fn announce(app: &TestApp, instance: &str, symbols: &[&str], ttl: Duration) {
    use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
    use lapin::types::FieldTable;
    let names = shared::live::LiveNames::for_queue(&app.queue);
    let connection =
        lapin::Connection::connect(tests::AMQP_URL, lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .exchange_declare(
            names.interest_exchange.as_str().into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let interest = shared::live::Interest {
        v: shared::live::LIVE_VERSION,
        instance: instance.into(),
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        ttl_ms: ttl.as_millis() as u64,
    };
    channel
        .basic_publish(
            names.interest_exchange.as_str().into(),
            "".into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&interest).unwrap(),
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let _ = connection.close(200, "done".into()).await;
}

/// Upstream fetches of `symbol` during `window`.
async fn hits_during(app: &TestApp, symbol: &str, window: Duration) -> u64 {
    let before = app.stooq.symbol_hits(symbol);
    tokio::time::sleep(window).await;
    app.stooq.symbol_hits(symbol) - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interest_that_is_not_renewed_expires_and_its_symbols_stop_being_refreshed() {
    let Some(app) = stack().spawn().await else {
        return;
    };
    let ttl = Duration::from_secs(1);
    announce(&app, "crashed-instance", &["gone.us"], ttl).await;
    refreshes_with(&app, 1, 1).await;
    assert!(app.stooq.symbol_hits("gone.us") >= 1, "watched: refreshed");

    // Never renewed, as after a SIGKILL: once the TTL is over, nobody fetches it any more.
    tokio::time::sleep(ttl).await;
    assert_eq!(hits_during(&app, "gone.us", REFRESH * 4).await, 0);
    assert_eq!(worker(&app).watch.instances(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_workers_refresh_once_per_interval_and_a_survivor_takes_over() {
    let Some(app) = stack().spawn().await else {
        return;
    };
    let second = QuoteHandle::spawn(app.quote_settings.clone()).await;
    // Both listening before the (one-shot) interest goes out; an API instance would renew it
    // every INTEREST_TTL / 3, which reaches a late worker too.
    while !(second.watch.connected() && worker(&app).watch.connected()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    announce(&app, "api-1", &["both.us"], Duration::from_secs(60)).await;
    while app.stooq.symbol_hits("both.us") == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Ten intervals, two workers: about ten fetches, not twenty.
    let window = REFRESH * 10;
    let hits = hits_during(&app, "both.us", window).await;
    assert!((5..=13).contains(&hits), "{hits} fetches in ten intervals");
    let (first, other) = (worker(&app).watch.refreshes(), second.watch.refreshes());
    assert!(
        first == 0 || other == 0,
        "one refresher: {first} and {other}"
    );

    // The refresher stops; the other worker (which knows the watch list) carries on.
    let mut app = app;
    if first > 0 {
        app.stop_quote_service().await;
        let hits = hits_during(&app, "both.us", window).await;
        assert!(hits >= 5, "{hits} fetches after the refresher left");
        assert!(second.watch.refreshes() > 0);
    } else {
        second.stop().await;
        let hits = hits_during(&app, "both.us", window).await;
        assert!(hits >= 5, "{hits} fetches after the refresher left");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_carry_on_without_duplicates_after_the_live_links_are_cut() {
    if !tests::rabbitmq_or_skip().await || !tests::faults::broker_controllable() {
        return;
    }
    let Some(app) = stack().spawn().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;
    let mut stream = open(&app, &app.address, &token, "aapl.us").await;
    let before = first_events(&mut stream, 1).await[0].close();
    refreshes_with(&app, 1, 1).await;

    // Only this stack's live-quote connections (the worker's watch, the API's feed): their
    // names carry the queue's name followed by a dot; the RPC links are left alone.
    let needle = format!("{}.", app.queue);
    let closed =
        tokio::task::spawn_blocking(move || tests::faults::close_broker_connections_named(&needle))
            .await
            .unwrap();
    assert_eq!(closed, 2, "the worker's watch and the API's feed");
    let watch = &worker(&app).watch;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !watch.connected() {
        assert!(Instant::now() < deadline, "the watch never reconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    refreshes_with(&app, 1, 2).await;

    app.stooq.advance_prices();
    let change = stream
        .next_event(Duration::from_secs(5))
        .await
        .expect("the change arrives over the new links");
    assert_ne!(change.close(), before);
    assert!(
        stream.events_within(REFRESH * 3).await.is_empty(),
        "nothing is sent twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_outlives_the_http_request_timeout() {
    let request_timeout = Duration::from_secs(1);
    let Some(app) = stack()
        .api_settings(move |s| s.http_server.request_timeout = request_timeout)
        .spawn()
        .await
    else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;
    let mut stream = open(&app, &app.address, &token, "aapl.us").await;
    let before = first_events(&mut stream, 1).await[0].close();

    // Past the request timeout and the delivery grace that would cut any other response.
    tokio::time::sleep(request_timeout * 3).await;
    app.stooq.advance_prices();
    let change = stream
        .next_event(REFRESH + SLACK)
        .await
        .expect("the stream is still open and delivering");

    assert_ne!(change.close(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_or_a_deletion_ends_the_users_streams() {
    let Some(app) = stack().spawn().await else {
        return;
    };
    let admin = app.token_for("root", Role::Admin).await;
    let alice = app.token_for("alice", Role::User).await;
    let bob = app.token_for("bob", Role::User).await;
    let mut alices = open(&app, &app.address, &alice, "aapl.us").await;
    let mut bobs = open(&app, &app.address, &bob, "aapl.us").await;
    first_events(&mut alices, 1).await;
    first_events(&mut bobs, 1).await;

    let changed = app
        .client
        .patch(app.url("/api/v1/users/alice"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"password": "a brand new passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    let deleted = app
        .client
        .delete(app.url("/api/v1/users/bob"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    // The user cache's TTL (2 s) plus the check interval, with slack.
    for stream in [&mut alices, &mut bobs] {
        let started = Instant::now();
        assert!(stream.next_event(Duration::from_secs(8)).await.is_none());
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "the stream ended rather than timed out"
        );
    }
}

/// The API's `stream_feed_connected` gauge.
async fn feed_connected(app: &TestApp) -> bool {
    app.metric(&app.address, "stream_feed_connected").await == 1.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_connects_to_the_broker_only_once_a_stream_opens() {
    let Some(app) = stack().spawn().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;
    // An eager feed connects within milliseconds of start-up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !feed_connected(&app).await,
        "no stream, so no second broker connection"
    );

    let mut stream = open(&app, &app.address, &token, "aapl.us").await;
    first_events(&mut stream, 1).await;

    let deadline = Instant::now() + FIRST;
    while !feed_connected(&app).await {
        assert!(Instant::now() < deadline, "the feed never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
