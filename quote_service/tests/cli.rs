//! The real `quote_service` binary: `--help` is the settings reference (every variable must
//! appear in it), and what it logs when its broker is unreachable.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

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

/// A worker whose broker refuses connections, its stdout piped as under Docker: the log line
/// names the broker by host:port, never the password, and carries no colour codes.
#[test]
fn an_unreachable_broker_is_named_by_host_and_port_without_password_or_colour() {
    // Arrange
    let (_refusing, addr) = shared::test_support::ports::refusing_addr();
    let port = addr.port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_quote_service"))
        .env("QUOTE_TRANSPORT", "amqp")
        .env(
            "AMQP_URL",
            format!("amqp://quotes:hunter2-do-not-print@127.0.0.1:{port}/%2f"),
        )
        .env("QUOTE_HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env_remove("LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the binary runs");

    // Act: read until the first reconnect warning (or 30 s), then stop the worker.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut output = String::new();
    let mut warning = None;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        output.push_str(&line);
        output.push('\n');
        if line.contains("RPC consumer lost RabbitMQ; reconnecting") {
            warning = Some(line);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();

    // Assert
    let warning = warning.unwrap_or_else(|| panic!("no reconnect warning in:\n{output}"));
    assert!(warning.contains(&format!("127.0.0.1:{port}")), "{warning}");
    assert!(!output.contains("hunter2-do-not-print"), "{output}");
    assert!(
        !output.contains('\u{1b}'),
        "ANSI codes in piped output:\n{output}"
    );
}
