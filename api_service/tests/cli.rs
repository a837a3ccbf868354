//! The real `api_service` binary as an operator runs it, its output piped as under Docker or
//! a log shipper: what it prints when a dependency is unreachable, and `users create` fed from
//! a script.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use api_service::store::provision::fresh_sqlite;

/// The password in every URL below: it must never be printed.
const PASSWORD: &str = "hunter2-do-not-print";
/// A cold start on a loaded 2-core machine, plus the pool's 2 s acquire timeout.
const OUTPUT_LIMIT: Duration = Duration::from_secs(30);

/// `api_service` with a clean logging environment (text lines at info) and stdout piped.
fn api_service(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_api_service"));
    command
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `command` until a line of its stdout contains `needle` (or it exits, or the limit
/// passes), then kills it. Returns everything it printed on stdout up to then.
fn stdout_until(mut command: Command, needle: &str) -> String {
    let mut child = command
        .stdin(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut output = String::new();
    let deadline = std::time::Instant::now() + OUTPUT_LIMIT;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match lines_rx.recv_timeout(left) {
            Ok(line) => {
                output.push_str(&line);
                output.push('\n');
                if line.contains(needle) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    output
}

#[test]
fn an_unreachable_database_is_named_by_host_and_port_once_without_password_or_colour() {
    // Arrange
    let (_refusing, addr) = shared::test_support::ports::refusing_addr();
    let port = addr.port();
    let url = format!("postgres://app:{PASSWORD}@127.0.0.1:{port}/quotes");
    let mut command = api_service(&["migrate"]);
    command.env("DATABASE_URL", &url);

    // Act
    let output = stdout_until(command, "api_service failed");

    // Assert
    let line = output
        .lines()
        .find(|l| l.contains("api_service failed"))
        .unwrap_or_else(|| panic!("no failure line in:\n{output}"));
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert_eq!(line.matches("pool timed out").count(), 1, "{line}");
    assert!(!output.contains(PASSWORD), "{output}");
    assert!(
        !output.contains('\u{1b}'),
        "ANSI codes in piped output:\n{output}"
    );
}

#[test]
fn an_unreachable_broker_is_named_by_host_and_port_without_password_or_colour() {
    // Arrange
    let db = fresh_sqlite();
    let (_refusing, addr) = shared::test_support::ports::refusing_addr();
    let port = addr.port();
    let mut command = api_service(&["serve"]);
    command
        .env("DATABASE_URL", db.url())
        .env("API_ADDR", "127.0.0.1:0")
        .env("JWT_SECRET", "a-test-secret-of-at-least-thirty-two-bytes")
        .env("QUOTE_TRANSPORT", "amqp")
        .env(
            "AMQP_URL",
            format!("amqp://quotes:{PASSWORD}@127.0.0.1:{port}/%2f"),
        );

    // Act
    let output = stdout_until(command, "cannot connect to the message broker");

    // Assert
    let line = output
        .lines()
        .find(|l| l.contains("cannot connect to the message broker"))
        .unwrap_or_else(|| panic!("no connection failure in:\n{output}"));
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert!(!output.contains(PASSWORD), "{output}");
    assert!(
        !output.contains('\u{1b}'),
        "ANSI codes in piped output:\n{output}"
    );
}

/// `users create` with stdin not a terminal: the first line is the password, as scripts and
/// `docker compose run -T` rely on; nothing echoes it.
fn create_user_from_a_pipe(extra_args: &[&str]) {
    // Arrange
    let db = fresh_sqlite();
    let password = "s3cret-passw0rd-from-a-pipe";
    let mut args = vec!["users", "create", "--username", "bob", "--role", "user"];
    args.extend_from_slice(extra_args);
    let mut child = api_service(&args)
        .env("DATABASE_URL", db.url())
        .stdin(Stdio::piped())
        .spawn()
        .expect("the binary starts");

    // Act
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let output = child.wait_with_output().unwrap();

    // Assert
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("created user \"bob\""), "{stdout}");
    assert!(!stdout.contains(password) && !stderr.contains(password));
    assert!(
        !stderr.contains("Password"),
        "no prompt without a terminal: {stderr}"
    );
}

#[test]
fn users_create_reads_the_password_from_a_pipe_without_a_flag() {
    create_user_from_a_pipe(&[]);
}

#[test]
fn users_create_reads_the_password_from_stdin_with_the_flag() {
    create_user_from_a_pipe(&["--password-stdin"]);
}

#[test]
fn users_create_refuses_an_empty_password_from_a_pipe() {
    // Arrange
    let db = fresh_sqlite();
    let mut child = api_service(&["users", "create", "--username", "bob"])
        .env("DATABASE_URL", db.url())
        .stdin(Stdio::piped())
        .spawn()
        .expect("the binary starts");

    // Act
    writeln!(child.stdin.take().unwrap()).unwrap();
    let output = child.wait_with_output().unwrap();

    // Assert
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("empty password"));
}
