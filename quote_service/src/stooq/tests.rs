//! Every case `docs/stooq-feed.md` lists, both readings where the sources disagree.

use super::*;
use chrono::{NaiveDate, NaiveTime, TimeZone, Utc};
use proptest::prelude::*;

const HEADER: &str = "Symbol,Date,Time,Open,High,Low,Close,Volume,Name";
const AAPL_ROW: &str = "AAPL.US,2024-05-10,22:00:09,184.9,185.09,182.13,183.05,50759496,APPLE";

fn crlf(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("{l}\r\n")).collect()
}

fn found(rows: &Rows, key: &str) -> Quote {
    match rows.get(key) {
        Some(Ok(q)) => q.clone(),
        other => panic!("expected a quote for {key}, got {other:?}"),
    }
}

fn error_code(rows: &Rows, key: &str) -> ErrorCode {
    match rows.get(key) {
        Some(Err(e)) => e.code,
        other => panic!("expected an error for {key}, got {other:?}"),
    }
}

#[test]
fn found_symbol_with_crlf_reads_every_field() {
    let body = crlf(&[HEADER, AAPL_ROW]);

    let rows = parse(body.as_bytes()).unwrap();

    let q = found(&rows, "aapl.us");
    assert_eq!(q.symbol, "AAPL.US");
    assert_eq!(q.name, "APPLE");
    assert_eq!(q.open, 184.9);
    assert_eq!(q.high, 185.09);
    assert_eq!(q.low, 182.13);
    assert_eq!(q.close, 183.05);
    assert_eq!(q.volume, Some(50_759_496));
    assert_eq!(q.local_date, NaiveDate::from_ymd_opt(2024, 5, 10).unwrap());
    assert_eq!(q.local_time, NaiveTime::from_hms_opt(22, 0, 9).unwrap());
}

#[test]
fn warsaw_summer_time_is_converted_to_utc() {
    let rows = parse(crlf(&[HEADER, AAPL_ROW]).as_bytes()).unwrap();

    let q = found(&rows, "aapl.us");

    assert_eq!(q.time, Utc.with_ymd_and_hms(2024, 5, 10, 20, 0, 9).unwrap());
}

#[test]
fn warsaw_winter_time_is_converted_to_utc() {
    let row = "AAPL.US,2024-01-15,22:00:05,1,2,0.5,1.5,10,APPLE";

    let rows = parse(crlf(&[HEADER, row]).as_bytes()).unwrap();

    assert_eq!(
        found(&rows, "aapl.us").time,
        Utc.with_ymd_and_hms(2024, 1, 15, 21, 0, 5).unwrap()
    );
}

#[test]
fn lf_line_endings_are_accepted() {
    let body = format!("{HEADER}\n{AAPL_ROW}\n");

    let rows = parse(body.as_bytes()).unwrap();

    assert_eq!(found(&rows, "aapl.us").close, 183.05);
}

#[test]
fn missing_final_newline_is_accepted() {
    let body = format!("{HEADER}\r\n{AAPL_ROW}");

    let rows = parse(body.as_bytes()).unwrap();

    assert_eq!(found(&rows, "aapl.us").name, "APPLE");
}

#[test]
fn byte_order_mark_is_skipped() {
    let body = format!("\u{feff}{}", crlf(&[HEADER, AAPL_ROW]));

    let rows = parse(body.as_bytes()).unwrap();

    assert_eq!(found(&rows, "aapl.us").symbol, "AAPL.US");
}

#[test]
fn numbers_with_varying_precision_and_bare_integers_parse() {
    let row = "MSFT.US,2024-05-10,22:00:09,150.4,163.015,124,150,1,MICROSOFT";

    let rows = parse(crlf(&[HEADER, row]).as_bytes()).unwrap();

    let q = found(&rows, "msft.us");
    assert_eq!(
        (q.open, q.high, q.low, q.close),
        (150.4, 163.015, 124.0, 150.0)
    );
}

#[test]
fn empty_volume_for_index_and_currency_is_none() {
    let body = crlf(&[
        HEADER,
        "^SPX,2024-05-10,22:00:00,5225.49,5239.66,5209.68,5222.68,,S&P 500",
        "EURUSD,2024-05-10,22:59:58,1.0782,1.0804,1.0765,1.0771,,EUR/USD",
    ]);

    let rows = parse(body.as_bytes()).unwrap();

    assert_eq!(found(&rows, "^spx").volume, None);
    assert_eq!(found(&rows, "eurusd").volume, None);
    assert_eq!(found(&rows, "eurusd").name, "EUR/USD");
}

#[test]
fn quoted_name_with_comma_is_read_whole() {
    let row = r#"T.US,2024-05-10,22:00:09,17,17.2,16.9,17.1,100,"AT&T, INC""#;

    let rows = parse(crlf(&[HEADER, row]).as_bytes()).unwrap();

    assert_eq!(found(&rows, "t.us").name, "AT&T, INC");
}

#[test]
fn unquoted_name_with_comma_still_gives_the_quote() {
    // The other reading: stooq does not quote, so the name spills into an extra field.
    let row = "T.US,2024-05-10,22:00:09,17,17.2,16.9,17.1,100,AT&T, INC";

    let rows = parse(crlf(&[HEADER, row]).as_bytes()).unwrap();

    let q = found(&rows, "t.us");
    assert_eq!(q.close, 17.1);
    assert!(q.name.starts_with("AT&T"), "{}", q.name);
}

#[test]
fn rows_are_keyed_by_symbol_not_position() {
    let body = crlf(&[
        HEADER,
        "MSFT.US,2024-05-10,22:00:09,1,2,0.5,414.74,10,MICROSOFT",
        AAPL_ROW,
    ]);

    let rows = parse(body.as_bytes()).unwrap();

    assert_eq!(found(&rows, "aapl.us").close, 183.05);
    assert_eq!(found(&rows, "msft.us").close, 414.74);
    assert_eq!(rows.len(), 2);
}

#[test]
fn reordered_columns_are_read_by_name() {
    let body = crlf(&[
        "Name,Symbol,Close,Date,Time,Open,High,Low,Volume",
        "APPLE,AAPL.US,183.05,2024-05-10,22:00:09,184.9,185.09,182.13,7",
    ]);

    let rows = parse(body.as_bytes()).unwrap();

    let q = found(&rows, "aapl.us");
    assert_eq!(
        (q.close, q.volume, q.name.as_str()),
        (183.05, Some(7), "APPLE")
    );
}

#[test]
fn unknown_symbol_row_with_name_echoing_symbol_is_not_found() {
    let body = crlf(&[HEADER, "XXXX.US,N/D,N/D,N/D,N/D,N/D,N/D,N/D,XXXX.US"]);

    let rows = parse(body.as_bytes()).unwrap();

    assert_eq!(error_code(&rows, "xxxx.us"), ErrorCode::NotFound);
}

#[test]
fn unknown_symbol_row_with_name_nd_is_not_found() {
    let body = crlf(&[HEADER, "XXXX.US,N/D,N/D,N/D,N/D,N/D,N/D,N/D,N/D"]);

    let rows = parse(body.as_bytes()).unwrap();

    assert_eq!(error_code(&rows, "xxxx.us"), ErrorCode::NotFound);
}

#[test]
fn unknown_symbol_row_with_empty_name_is_not_found() {
    let body = crlf(&[HEADER, "XXXX.US,N/D,N/D,N/D,N/D,N/D,N/D,N/D,"]);

    let rows = parse(body.as_bytes()).unwrap();

    assert_eq!(error_code(&rows, "xxxx.us"), ErrorCode::NotFound);
}

#[test]
fn only_date_nd_is_enough_for_not_found() {
    let body = crlf(&[HEADER, "XXXX.US,N/D,12:00:00,1,1,1,1,1,X"]);

    let rows = parse(body.as_bytes()).unwrap();

    assert_eq!(error_code(&rows, "xxxx.us"), ErrorCode::NotFound);
}

#[test]
fn only_close_nd_is_enough_for_not_found() {
    let body = crlf(&[HEADER, "XXXX.US,2024-05-10,12:00:00,1,1,1,N/D,1,X"]);

    let rows = parse(body.as_bytes()).unwrap();

    assert_eq!(error_code(&rows, "xxxx.us"), ErrorCode::NotFound);
}

#[test]
fn found_and_unknown_rows_in_one_batch_are_told_apart() {
    let body = crlf(&[
        HEADER,
        AAPL_ROW,
        "XXXX.US,N/D,N/D,N/D,N/D,N/D,N/D,N/D,XXXX.US",
    ]);

    let rows = parse(body.as_bytes()).unwrap();

    assert!(rows["aapl.us"].is_ok());
    assert_eq!(error_code(&rows, "xxxx.us"), ErrorCode::NotFound);
}

#[test]
fn a_malformed_row_fails_only_its_symbol() {
    let body = crlf(&[
        HEADER,
        "BAD.US,2024-05-10,22:00:09,abc,1,1,1,1,BAD",
        AAPL_ROW,
    ]);

    let rows = parse(body.as_bytes()).unwrap();

    assert_eq!(error_code(&rows, "bad.us"), ErrorCode::UpstreamUnavailable);
    assert!(rows["aapl.us"].is_ok());
}

#[test]
fn daily_limit_is_rejected() {
    let err = parse(b"Exceeded the daily hits limit").unwrap_err();

    assert_eq!(err, StooqError::DailyLimit);
    assert_eq!(err.code(), ErrorCode::UpstreamRejected);
}

#[test]
fn api_key_page_is_rejected() {
    let page = b"<!DOCTYPE html><html><body><h1>Get your apikey</h1>\
        <p>Visit stooq.com to obtain a free key.</p></body></html>";

    let err = parse(page).unwrap_err();

    assert_eq!(err, StooqError::ApiKeyRequired);
    assert_eq!(err.code(), ErrorCode::UpstreamRejected);
}

#[test]
fn browser_challenge_is_rejected() {
    let page = b"<html><head><title>Just a moment</title></head><body>\
        This site requires JavaScript to verify your browser.\
        <form action=\"/__verify\" method=\"post\"></form></body></html>";

    let err = parse(page).unwrap_err();

    assert_eq!(err, StooqError::BrowserChallenge);
    assert_eq!(err.code(), ErrorCode::UpstreamRejected);
}

#[test]
fn other_html_is_unavailable() {
    let err = parse(b"<html><body>502 Bad Gateway</body></html>").unwrap_err();

    assert_eq!(err, StooqError::Html);
    assert_eq!(err.code(), ErrorCode::UpstreamUnavailable);
}

#[test]
fn empty_body_is_unavailable() {
    for body in [&b""[..], b"\r\n", b"  \n ", b"\xEF\xBB\xBF"] {
        let err = parse(body).unwrap_err();

        assert_eq!(err, StooqError::Empty, "{body:?}");
        assert_eq!(err.code(), ErrorCode::UpstreamUnavailable);
    }
}

#[test]
fn header_without_rows_is_truncated() {
    let err = parse(crlf(&[HEADER]).as_bytes()).unwrap_err();

    assert_eq!(err, StooqError::Truncated);
    assert_eq!(err.code(), ErrorCode::UpstreamUnavailable);
}

#[test]
fn body_cut_inside_the_header_is_truncated() {
    assert_eq!(parse(b"Symbol,Date,Ti").unwrap_err(), StooqError::Truncated);
    assert_eq!(parse(b"Sym").unwrap_err(), StooqError::Truncated);
}

#[test]
fn body_cut_inside_the_last_row_is_truncated() {
    let body = format!("{HEADER}\r\nAAPL.US,2024-05-10,22:00:09,184.9,18");

    assert_eq!(parse(body.as_bytes()).unwrap_err(), StooqError::Truncated);
}

#[test]
fn plain_text_garbage_is_unrecognised() {
    let err = parse(b"hello world\nsomething else").unwrap_err();

    assert!(matches!(err, StooqError::Unrecognised(_)), "{err:?}");
    assert_eq!(err.code(), ErrorCode::UpstreamUnavailable);
}

#[test]
fn every_non_data_answer_has_its_own_message() {
    let errors = [
        StooqError::DailyLimit,
        StooqError::ApiKeyRequired,
        StooqError::BrowserChallenge,
        StooqError::Html,
        StooqError::Empty,
        StooqError::Truncated,
        StooqError::Unrecognised("x".into()),
    ];

    let messages: std::collections::HashSet<String> =
        errors.iter().map(ToString::to_string).collect();

    assert_eq!(messages.len(), errors.len());
}

#[test]
fn quote_whose_name_mentions_a_limit_is_still_data() {
    let row = "LIM.US,2024-05-10,22:00:09,1,1,1,1,1,DAILY HITS LIMIT APIKEY";

    let rows = parse(crlf(&[HEADER, row]).as_bytes()).unwrap();

    assert_eq!(found(&rows, "lim.us").name, "DAILY HITS LIMIT APIKEY");
}

#[test]
fn ambiguous_autumn_time_reads_as_summer_time() {
    let date = NaiveDate::from_ymd_opt(2024, 10, 27).unwrap();
    let time = NaiveTime::from_hms_opt(2, 30, 0).unwrap();

    let utc = warsaw_to_utc(date, time).unwrap();

    assert_eq!(utc, Utc.with_ymd_and_hms(2024, 10, 27, 0, 30, 0).unwrap());
}

#[test]
fn skipped_spring_time_reads_with_the_winter_offset() {
    let date = NaiveDate::from_ymd_opt(2024, 3, 31).unwrap();
    let time = NaiveTime::from_hms_opt(2, 30, 0).unwrap();

    let utc = warsaw_to_utc(date, time).unwrap();

    assert_eq!(utc, Utc.with_ymd_and_hms(2024, 3, 31, 1, 30, 0).unwrap());
}

#[test]
fn extreme_dates_do_not_panic() {
    for (y, m, d) in [(-262_000, 1, 1), (262_000, 12, 31), (1, 1, 1)] {
        let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
        let _ = warsaw_to_utc(date, NaiveTime::MIN);
    }
}

#[test]
fn query_string_joins_symbols_with_plus_and_encodes() {
    let q = query_string(["aapl.us", "^spx", "brk-b.us"], None);

    assert_eq!(q, "s=aapl.us+%5Espx+brk-b.us&f=sd2t2ohlcvn&h&e=csv");
}

#[test]
fn query_string_appends_the_encoded_api_key() {
    let q = query_string(["cdr"], Some("k&y=1"));

    assert_eq!(q, "s=cdr&f=sd2t2ohlcvn&h&e=csv&apikey=k%26y%3D1");
}

fn valid_body() -> String {
    crlf(&[
        HEADER,
        AAPL_ROW,
        "^SPX,2024-05-10,22:00:00,5225.49,5239.66,5209.68,5222.68,,S&P 500",
        r#"T.US,2024-05-10,22:00:09,17,17.2,16.9,17.1,100,"AT&T, INC""#,
        "XXXX.US,N/D,N/D,N/D,N/D,N/D,N/D,N/D,XXXX.US",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&body);
    }

    #[test]
    fn csv_like_text_never_panics(body in "[Symbol,DateTimeOpnHighLwCsVuN/D0-9.:\r\n\" -]{0,300}") {
        let _ = parse(body.as_bytes());
    }

    #[test]
    fn mutated_valid_csv_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8)
    ) {
        let mut body = valid_body().into_bytes();
        for (at, byte, op) in edits {
            if body.is_empty() {
                body.push(byte);
                continue;
            }
            let i = at.index(body.len());
            match op {
                0 => body[i] = byte,
                1 => body.insert(i, byte),
                _ => { body.remove(i); }
            }
        }
        if let Ok(rows) = parse(&body) {
            for (key, row) in rows {
                if let Ok(q) = row {
                    prop_assert_eq!(q.symbol.to_ascii_lowercase(), key);
                    prop_assert!(q.close.is_finite());
                }
            }
        }
    }

    #[test]
    fn truncating_valid_csv_never_panics(cut in 0usize..400) {
        let body = valid_body();
        let _ = parse(&body.as_bytes()[..cut.min(body.len())]);
    }
}
