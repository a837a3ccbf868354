//! `quote_service --help` is the settings reference: every variable must appear in it.

use std::process::Command;

#[test]
fn help_lists_every_environment_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_quote_service"))
        .arg("--help")
        .output()
        .expect("the binary runs");
    let help = String::from_utf8_lossy(&output.stdout);

    assert!(output.status.success());
    for var in [
        "QUOTE_TRANSPORT",
        "AMQP_URL",
        "QUOTE_QUEUE",
        "QUOTE_HTTP_ADDR",
        "STOOQ_URL",
        "STOOQ_API_KEY",
        "STOOQ_CONNECT_TIMEOUT",
        "STOOQ_TIMEOUT",
        "STOOQ_MAX_RETRIES",
        "CACHE_TTL",
        "NOT_FOUND_CACHE_TTL",
        "CACHE_MAX_ENTRIES",
        "BATCH_SIZE",
        "BATCH_WINDOW",
        "UPSTREAM_CONCURRENCY",
        "WORKER_CONCURRENCY",
        "REQUEST_TIMEOUT",
        "SHUTDOWN_GRACE",
        "RUST_LOG",
        "LOG_FORMAT",
    ] {
        assert!(help.contains(var), "--help does not mention {var}");
    }
}

#[test]
fn help_never_prints_the_api_key_value() {
    let output = Command::new(env!("CARGO_BIN_EXE_quote_service"))
        .arg("--help")
        .env("STOOQ_API_KEY", "do-not-show-me")
        .env("AMQP_URL", "amqp://user:hunter2@example.invalid:5672/%2f")
        .output()
        .expect("the binary runs");
    let help = String::from_utf8_lossy(&output.stdout);

    assert!(!help.contains("do-not-show-me"));
    assert!(!help.contains("hunter2"));
}

#[test]
fn invalid_duration_is_refused_with_a_clear_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_quote_service"))
        .env("CACHE_TTL", "ten seconds")
        .output()
        .expect("the binary runs");

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("CACHE_TTL") || stderr.contains("cache-ttl"),
        "{stderr}"
    );
}
