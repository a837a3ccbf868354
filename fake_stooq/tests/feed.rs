//! Talks to a running fake over real HTTP, as the quote service will.

use std::time::{Duration, Instant};

use fake_stooq::{FakeConfig, FakeStooq, Mode};

const HEADER: &str = "Symbol,Date,Time,Open,High,Low,Close,Volume,Name\r\n";

async fn get(fake: &FakeStooq, symbols: &str) -> reqwest::Result<(u16, String)> {
    get_with(fake, symbols, None).await
}

async fn get_with(
    fake: &FakeStooq,
    symbols: &str,
    key: Option<&str>,
) -> reqwest::Result<(u16, String)> {
    let mut url = format!("{}/q/l/?s={symbols}&f=sd2t2ohlcvn&h&e=csv", fake.url());
    if let Some(key) = key {
        url.push_str("&apikey=");
        url.push_str(key);
    }
    let resp = reqwest::get(url).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

#[tokio::test]
async fn found_row_is_byte_exact() {
    let fake = FakeStooq::start().await;
    let (status, body) = get(&fake, "aapl.us").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        body,
        format!(
            "{HEADER}AAPL.US,2024-05-10,22:00:09,184.9,185.09,182.13,183.05,50759496,APPLE\r\n"
        )
    );
}

#[tokio::test]
async fn unknown_symbol_gets_nd_row() {
    let fake = FakeStooq::start().await;
    let (status, body) = get(&fake, "XXXX.US").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        body,
        format!("{HEADER}XXXX.US,N/D,N/D,N/D,N/D,N/D,N/D,N/D,XXXX.US\r\n")
    );
}

#[tokio::test]
async fn batch_of_three_in_one_request() {
    let fake = FakeStooq::start().await;
    let (_, body) = get(&fake, "aapl.us+t.us+unknown.us").await.unwrap();
    let lines: Vec<&str> = body.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 4, "{body:?}");
    assert!(lines[1].starts_with("AAPL.US,"));
    assert!(lines[2].starts_with("T.US,") && lines[2].ends_with(",\"AT&T, INC.\""));
    assert!(lines[3].starts_with("UNKNOWN.US,N/D,"));
    assert_eq!(fake.hits(), 1);
    assert_eq!(fake.requests(), vec![vec!["aapl.us", "t.us", "unknown.us"]]);
    // `%2B` (a literal plus) splits too.
    let (_, body) = get(&fake, "msft.us%2B^spx").await.unwrap();
    assert!(
        body.contains("\r\n^SPX,") && body.contains(",5222.68,,S&P 500\r\n"),
        "{body:?}"
    );
}

#[tokio::test]
async fn counters_and_reset() {
    let fake = FakeStooq::start().await;
    get(&fake, "aapl.us+msft.us").await.unwrap();
    get(&fake, "AAPL.US").await.unwrap();
    assert_eq!(fake.hits(), 2);
    assert_eq!(fake.symbol_hits("aapl.us"), 2);
    assert_eq!(fake.symbol_hits("Msft.Us"), 1);
    assert_eq!(fake.symbol_hits("nvda.us"), 0);
    assert_eq!(fake.symbols_requested(), 3);

    let stats: serde_json::Value = reqwest::get(format!("{}/fake/stats", fake.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["hits"], 2);
    assert_eq!(stats["symbol_hits"]["aapl.us"], 2);
    assert_eq!(stats["requests"][1][0], "aapl.us");

    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/fake/reset", fake.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(fake.hits(), 0);
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn every_failure_mode() {
    let fake = FakeStooq::start().await;
    let cases: [(Mode, u16, &str); 7] = [
        (Mode::DailyLimit, 200, "Exceeded the daily hits limit"),
        (Mode::ApiKeyPage, 200, "Get your apikey"),
        (
            Mode::Challenge,
            200,
            "This site requires JavaScript to verify your browser",
        ),
        (Mode::OtherHtml, 200, "<html"),
        (Mode::Empty, 200, ""),
        (Mode::Status(503), 503, "Service Unavailable"),
        (Mode::Status(500), 500, ""),
    ];
    for (mode, status, needle) in cases {
        fake.set_mode(mode);
        let (got_status, body) = get(&fake, "aapl.us").await.unwrap();
        assert_eq!(got_status, status, "{mode}");
        assert!(body.contains(needle), "{mode}: {body:?}");
        assert!(!body.contains("AAPL.US"), "{mode}: {body:?}");
    }
    fake.set_mode(Mode::Challenge);
    assert!(get(&fake, "aapl.us").await.unwrap().1.contains("/__verify"));
    fake.set_mode(Mode::Empty);
    assert_eq!(get(&fake, "aapl.us").await.unwrap().1, "");

    fake.set_mode(Mode::Truncated);
    let (_, body) = get(&fake, "aapl.us").await.unwrap();
    assert!(
        body.starts_with(HEADER) && body.len() > HEADER.len(),
        "{body:?}"
    );
    assert!(!body.ends_with('\n'), "{body:?}");
    assert!(!body.contains("APPLE"));

    fake.set_mode(Mode::Drop);
    let err = get(&fake, "aapl.us")
        .await
        .expect_err("connection should be dropped");
    assert!(err.is_request() || err.is_connect(), "{err:?}");

    fake.set_mode(Mode::Normal);
    assert!(get(&fake, "aapl.us").await.unwrap().1.contains("APPLE"));
    assert_eq!(fake.hits(), 12, "failed answers count as upstream hits too");
}

#[tokio::test]
async fn fail_next_then_recovers() {
    let fake = FakeStooq::start().await;
    fake.fail_next(2, Mode::Drop);
    assert!(get(&fake, "aapl.us").await.is_err());
    assert!(get(&fake, "aapl.us").await.is_err());
    assert!(get(&fake, "aapl.us").await.unwrap().1.contains("APPLE"));
    assert_eq!(fake.symbol_hits("aapl.us"), 3);
}

#[tokio::test]
async fn mode_switchable_over_http() {
    let fake = FakeStooq::start().await;
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/fake/mode?mode=status:502&next=1", fake.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(get(&fake, "aapl.us").await.unwrap().0, 502);
    assert_eq!(get(&fake, "aapl.us").await.unwrap().0, 200);
    let resp = client
        .post(format!("{}/fake/mode?mode=sideways", fake.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn latency_slows_answers() {
    let fake = FakeStooq::start().await;
    fake.set_latency(Duration::from_millis(300));
    let started = Instant::now();
    get(&fake, "aapl.us").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    fake.set_latency(Duration::ZERO);
    let started = Instant::now();
    get(&fake, "aapl.us").await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn api_key_is_enforced_when_configured() {
    let fake = FakeStooq::start_with(FakeConfig {
        api_key: Some("k3y".into()),
        ..FakeConfig::default()
    })
    .await;
    let (status, body) = get(&fake, "aapl.us").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("Get your apikey"));
    assert!(
        get_with(&fake, "aapl.us", Some("wrong"))
            .await
            .unwrap()
            .1
            .contains("Get your apikey")
    );
    assert!(
        get_with(&fake, "aapl.us", Some("k3y"))
            .await
            .unwrap()
            .1
            .contains("APPLE")
    );
}

#[tokio::test]
async fn thousands_of_distinct_symbols_are_found() {
    let fake = FakeStooq::start().await;
    let symbols: Vec<String> = (0..200).map(|i| format!("bench{i}.us")).collect();
    let (_, body) = get(&fake, &symbols.join("+")).await.unwrap();
    let lines: Vec<&str> = body.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 201);
    assert!(lines.iter().all(|l| !l.contains("N/D")));
    assert_eq!(
        get(&fake, &symbols.join("+")).await.unwrap().1,
        body,
        "deterministic"
    );
}

#[tokio::test]
async fn wrong_format_is_rejected_loudly() {
    let fake = FakeStooq::start().await;
    let resp = reqwest::get(format!("{}/q/l/?s=aapl.us&f=sc&h&e=csv", fake.url()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn prices_move_on_post_fake_tick_and_the_same_seed_repeats_them() {
    let config = || FakeConfig {
        seed: 9,
        ..FakeConfig::default()
    };
    let (a, b) = (
        FakeStooq::start_with(config()).await,
        FakeStooq::start_with(config()).await,
    );
    let still = get(&a, "aapl.us").await.unwrap().1;

    let resp = reqwest::Client::new()
        .post(format!("{}/fake/tick", a.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "1");
    b.advance_prices();

    let moved = get(&a, "aapl.us").await.unwrap().1;
    assert_ne!(moved, still);
    assert_eq!(get(&b, "aapl.us").await.unwrap().1, moved);
}
