//! The web app in a real browser: headless Chromium, driven like a person (by role, label and
//! text), against the whole stack in-process (fake stooq, the quote worker over HTTP, the API
//! on a fresh SQLite database). One scenario per test; each test has its own stack and its
//! own browser, so none depends on another's data.
//!
//! Every scenario also fails on any Content-Security-Policy violation or uncaught error in
//! the page, and on any serious or critical accessibility violation axe-core finds on a page
//! it shows; each page's screenshot is written to `<target dir>/browser-artifacts/`.
//! Without Node.js, Chromium or the suite's npm packages a test says why and returns, except
//! under `CI=true`, where that fails.

mod runner;

use api_service::store::{NewHistoryEntry, Role};
use chrono::{Duration as ChronoDuration, TimeZone, Utc};
use fake_stooq::feed::Row;
use serde_json::{Value, json};
use std::time::Duration;
use tests::{PASSWORD, StackBuilder, TestApp, Transport};

const ADMIN: &str = "boss";
const USER: &str = "alice";
/// A user whose quotes make the global stats; `USER` never asks for `OTHERS_SYMBOL`.
const OTHER: &str = "bob";
const OTHERS_SYMBOL: &str = "nflx.us";
/// Rows seeded for the paging and CSV scenarios: more than two pages of any sensible size.
const HISTORY_ROWS: usize = 250;
/// Seeded names include a comma and quotes, which the CSV must carry intact.
const SEEDED: &[(&str, &str)] = &[
    ("AAPL.US", "APPLE"),
    ("ACME.US", "ACME, INC."),
    ("QUOT.US", "THE \"QUOTED\" CO"),
    ("MSFT.US", "MICROSOFT"),
    ("CDR.PL", "CDPROJEKT"),
];

/// The browser tools and a fresh stack (HTTP transport: no broker needed for the pages),
/// or `None` when a test must skip.
async fn browser_and_stack() -> Option<(runner::BrowserTools, TestApp)> {
    browser_and(tests::stack()).await
}

async fn browser_and(stack: StackBuilder) -> Option<(runner::BrowserTools, TestApp)> {
    let tools = runner::tools_or_skip()?;
    let app = stack.transport(Transport::Http).spawn().await?;
    Some((tools, app))
}

fn credentials(username: &str) -> Value {
    json!({ "username": username, "password": PASSWORD })
}

/// What the fake feed answers for `symbol`, as the quote page should show it.
fn quote(symbol: &str) -> Value {
    quote_of(fake_stooq::feed::row_for(symbol, &[]))
}

fn quote_of(row: Row) -> Value {
    match row {
        Row::Found {
            symbol,
            open,
            high,
            low,
            close,
            volume,
            name,
            ..
        } => json!({
            "symbol": symbol, "name": name, "open": open, "high": high, "low": low,
            "close": close, "volume": volume,
        }),
        Row::NotFound { symbol } => panic!("the fake feed does not know {symbol}"),
    }
}

/// Writes `HISTORY_ROWS` history rows for `user_id` straight into the store, one minute
/// apart, cycling through [`SEEDED`], each with its own prices.
async fn seed_history(app: &TestApp, user_id: i64) {
    let start = Utc.with_ymd_and_hms(2026, 1, 5, 14, 30, 0).unwrap();
    let entries: Vec<NewHistoryEntry> = (0..HISTORY_ROWS)
        .map(|i| {
            let (symbol, name) = SEEDED[i % SEEDED.len()];
            let close = 100.0 + i as f64 * 0.25;
            NewHistoryEntry {
                requested_at: start + ChronoDuration::minutes(i as i64),
                symbol: symbol.to_owned(),
                name: name.to_owned(),
                open: close - 1.5,
                high: close + 2.0,
                low: close - 2.25,
                close,
            }
        })
        .collect();
    app.store
        .seed_history(user_id, &entries)
        .await
        .expect("seed the history");
}

/// `USER` asks for nothing; `OTHER` asks for a few symbols through the API, so the stats
/// have data that is not the user's own.
async fn others_quotes(app: &TestApp, symbols: &[(&str, usize)]) {
    let token = app.token_for(OTHER, Role::User).await;
    for (symbol, times) in symbols {
        for _ in 0..*times {
            let response = app.stock(&token, symbol).await;
            assert_eq!(response.status(), 200, "quote for {symbol}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_catches_csp_violations_and_accessibility_failures() {
    let Some((browser, app)) = browser_and_stack().await else {
        return;
    };

    browser
        .run(&app.address, "harness-self-check", json!({}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_and_reaches_every_user_page() {
    let Some((browser, app)) = browser_and_stack().await else {
        return;
    };
    app.create_user(USER, Role::User).await;

    browser
        .run(
            &app.address,
            "sign-in",
            json!({ "user": credentials(USER) }),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_wrong_passwords_show_the_wait() {
    const MAX_FAILURES: u32 = 3;
    let Some((browser, app)) =
        browser_and(tests::stack().api_settings(|s| s.login_max_failures = MAX_FAILURES)).await
    else {
        return;
    };
    app.create_user(USER, Role::User).await;

    let fixture = json!({ "user": credentials(USER), "max_failures": MAX_FAILURES });
    browser.run(&app.address, "throttled", fixture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_changes_their_password_on_the_account_page() {
    let Some((browser, app)) = browser_and_stack().await else {
        return;
    };
    app.create_user(USER, Role::User).await;

    let fixture =
        json!({ "user": credentials(USER), "new_password": "a-fresh-passw0rd-for-alice" });
    browser.run(&app.address, "account", fixture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quote_shows_every_field_and_appears_in_history() {
    let Some((browser, app)) = browser_and_stack().await else {
        return;
    };
    app.create_user(USER, Role::User).await;

    // The fake feed's AAPL.US row is stamped 2024-05-10 22:00:09, Warsaw time (CEST, UTC+2):
    // 20:00:09 UTC, so 17:00:09 in São Paulo (UTC-3) and 16:00:09 in New York (EDT, UTC-4).
    let mut aapl = quote("aapl.us");
    aapl["browser_time"] = json!("17:00:09");
    aapl["market_time"] = json!("16:00:09");
    let fixture = json!({
        "user": credentials(USER),
        "timezone": "America/Sao_Paulo",
        "quotes": [aapl, quote("msft.us")],
    });
    browser.run(&app.address, "quote", fixture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_symbol_shows_its_message() {
    let Some((browser, app)) = browser_and_stack().await else {
        return;
    };
    app.create_user(USER, Role::User).await;

    let fixture = json!({ "user": credentials(USER), "unknown_symbol": "xxxx.us" });
    browser.run(&app.address, "unknown-symbol", fixture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_through_250_rows_with_load_more() {
    let Some((browser, app)) = browser_and_stack().await else {
        return;
    };
    let user_id = app.create_user(USER, Role::User).await;
    seed_history(&app, user_id).await;

    let fixture = json!({ "user": credentials(USER), "history_rows": HISTORY_ROWS });
    browser.run(&app.address, "history-paging", fixture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csv_download_matches_the_rows() {
    let Some((browser, app)) = browser_and_stack().await else {
        return;
    };
    let user_id = app.create_user(USER, Role::User).await;
    seed_history(&app, user_id).await;

    let fixture = json!({
        "user": credentials(USER),
        "history_rows": HISTORY_ROWS,
        "filter_symbol": SEEDED[1].0,
    });
    browser.run(&app.address, "csv-download", fixture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_cannot_reach_the_admin_pages_and_the_api_says_403() {
    let Some((browser, app)) = browser_and_stack().await else {
        return;
    };
    app.create_user(ADMIN, Role::Admin).await;
    app.create_user(USER, Role::User).await;
    others_quotes(&app, &[(OTHERS_SYMBOL, 2)]).await;

    let fixture = json!({
        "user": credentials(USER),
        "admin": credentials(ADMIN),
        "others_symbol": OTHERS_SYMBOL,
    });
    browser.run(&app.address, "not-admin", fixture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sees_the_chart_and_creates_promotes_demotes_and_deletes_a_user() {
    let Some((browser, app)) = browser_and_stack().await else {
        return;
    };
    app.create_user(ADMIN, Role::Admin).await;
    app.create_user(USER, Role::User).await;
    others_quotes(
        &app,
        &[
            ("aapl.us", 5),
            ("msft.us", 4),
            ("ibm.us", 3),
            ("cdr.pl", 2),
            (OTHERS_SYMBOL, 1),
        ],
    )
    .await;

    let fixture = json!({
        "admin": credentials(ADMIN),
        "user": credentials(USER),
        "new_user": { "username": "carol", "password": "a-new-users-passw0rd" },
        // Asked 8 times by the scenario: from absent to the top after "Refresh".
        "refresh_symbol": "tsla.us",
        // Asked 10 times with automatic refresh on: shows up within one refresh period.
        "auto_symbol": "amzn.us",
    });
    browser.run(&app.address, "admin", fixture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchlist_shows_live_quotes_that_change_as_the_feed_moves() {
    /// A small cap, so the scenario reaches it; the page must learn it from the server.
    const CAP: u32 = 3;
    let Some((browser, app)) = browser_and(tests::stack().api_settings(|s| {
        s.stream_max_symbols = CAP;
        // One stream per user: a stream the page forgets to close (on a list change, a
        // reload or sign-out) makes the next one 429, and the watchlist never says "Live".
        s.stream_max_per_user = 1;
        // The HTTP transport's stream polls the quote service this often.
        s.watch_refresh = Duration::from_millis(300);
    }))
    .await
    else {
        return;
    };
    app.create_user(USER, Role::User).await;

    // The scenario moves the feed a price tick at a time (`POST /fake/tick`); each symbol's
    // close after one or two is predictable from the feed's seed, and differs from the last.
    let seed = app.stooq.state().config().seed;
    let watched: Vec<Value> = ["aapl.us", "msft.us"]
        .into_iter()
        .map(|symbol| {
            let at = |tick| {
                quote_of(fake_stooq::moving::at_tick(
                    fake_stooq::feed::row_for(symbol, &[]),
                    seed,
                    tick,
                ))["close"]
                    .clone()
            };
            let mut now = quote(symbol);
            assert_ne!(now["close"], at(1), "{symbol} does not move");
            now["moved_close"] = at(1);
            now["moved_again_close"] = at(2);
            now
        })
        .collect();
    let fixture = json!({
        "user": credentials(USER),
        "watched": watched,
        "unknown_symbol": "xxxx.us",
        "cap": CAP,
        "stooq_url": app.stooq.url(),
    });
    browser.run(&app.address, "watchlist", fixture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sign_out_the_back_button_shows_no_data() {
    let Some((browser, app)) = browser_and_stack().await else {
        return;
    };
    app.create_user(USER, Role::User).await;

    let fixture = json!({ "user": credentials(USER), "quotes": [quote("aapl.us")] });
    browser.run(&app.address, "sign-out-back", fixture).await;
}
