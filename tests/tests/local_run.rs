//! `scripts/run-local.sh`, the README's no-Docker command, run as a user runs it: it starts
//! every service, a user signs in and gets a quote, and a signal stops all of it. Each run has
//! its own ports and state directory; the fake feed and loopback only, no network.
//!
//! The script runs in a process group of its own, so the test can list what it started (every
//! process in the group) and a failing test kills the whole group when its guard drops.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::test_support::poll::wait_exit;

/// The first start may build the binaries (the script runs `cargo build`; minutes on a busy
/// 2-core machine).
const FIRST_OUTPUT_LIMIT: Duration = Duration::from_secs(600);
/// The script gives services 15 s after SIGTERM before it SIGKILLs them.
const STOP_LIMIT: Duration = Duration::from_secs(25);
const URL_PREFIX: &str = "stock-quotes is running: ";

#[tokio::test]
async fn the_command_serves_a_signed_in_user_and_ctrl_c_stops_every_service() {
    // Arrange: no broker at AMQP_URL, so the HTTP transport.
    let state = StateDir::new();
    let (_refusing, no_broker) = tests::refusing_addr();
    let amqp_url = format!("amqp://guest:guest@{no_broker}/%2f");
    let mut run = LocalRun::start(&state, &[("AMQP_URL", &amqp_url)], &["--demo-users"]).await;
    let http = reqwest::Client::new();

    // Act
    let token = login(&http, &run.url, "johndoe", "john").await;
    let quote = http
        .get(format!("{}api/v1/stock?q=aapl.us", run.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET /api/v1/stock");
    let quote_status = quote.status();
    let quote: Value = quote.json().await.expect("a JSON quote");
    let services = run.services();
    run.ctrl_c();
    let exit = run.wait_exit().await;

    // Assert
    assert!(
        run.summary("transport").starts_with("HTTP"),
        "{}",
        run.output()
    );
    assert!(
        run.summary("feed").contains("fake stooq"),
        "{}",
        run.output()
    );
    assert_eq!(
        run.summary("database"),
        state.0.join("api_service.db").display().to_string()
    );
    assert_eq!(quote_status, StatusCode::OK, "{quote}");
    assert_eq!(quote["symbol"], "AAPL.US");
    assert_eq!(
        services.len(),
        3,
        "fake_stooq, quote_service, api_service: {services:?}"
    );
    assert_eq!(
        exit.code(),
        Some(0),
        "after SIGINT: {exit}\n{}",
        run.output()
    );
    assert_eq!(run.group_processes(), Vec::<String>::new(), "left running");
}

#[tokio::test]
async fn a_restart_reuses_the_0600_jwt_key_and_the_database() {
    // Arrange: a first run makes the key, a user's token and a history row, then stops.
    let state = StateDir::new();
    let (_refusing, no_broker) = tests::refusing_addr();
    let amqp_url = format!("amqp://guest:guest@{no_broker}/%2f");
    let env = [("AMQP_URL", amqp_url.as_str())];
    let http = reqwest::Client::new();
    let mut first = LocalRun::start(&state, &env, &["--demo-users"]).await;
    let token = login(&http, &first.url, "johndoe", "john").await;
    let quote = http
        .get(format!("{}api/v1/stock?q=msft.us", first.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET /api/v1/stock");
    assert_eq!(quote.status(), StatusCode::OK);
    first.signal("TERM");
    assert_eq!(
        first.wait_exit().await.code(),
        Some(0),
        "{}",
        first.output()
    );
    let key_file = state.0.join("jwt-secret");
    let key_before = std::fs::read(&key_file).expect("the key file");

    // Act: start again, without asking for demo users.
    let mut second = LocalRun::start(&state, &env, &[]).await;
    let history = http
        .get(format!("{}api/v1/users/history", second.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET /api/v1/users/history");

    // Assert
    let mode = std::fs::metadata(&key_file)
        .expect("key metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "key file mode {mode:o}");
    assert_eq!(std::fs::read(&key_file).expect("the key file"), key_before);
    assert!(
        key_before.len() >= 32,
        "a key of {} bytes",
        key_before.len()
    );
    assert!(
        first.summary("jwt key").ends_with("(generated, 0600)"),
        "{}",
        first.output()
    );
    assert!(
        second.summary("jwt key").ends_with("(reused)"),
        "{}",
        second.output()
    );
    assert_eq!(history.status(), StatusCode::OK, "the first run's token");
    let rows: Value = history.json().await.expect("JSON history");
    assert_eq!(rows[0]["symbol"], "MSFT.US", "{rows}");
    second.signal("INT");
    assert_eq!(
        second.wait_exit().await.code(),
        Some(0),
        "{}",
        second.output()
    );
}

#[tokio::test]
async fn when_a_service_dies_the_others_are_stopped_and_the_command_fails_naming_it() {
    // Arrange: the local RabbitMQ answers, so the AMQP transport, on a queue of this test's own.
    if !tests::rabbitmq_or_skip().await {
        return;
    }
    let state = StateDir::new();
    let queue = format!("quotes.rpc.test.{}", uuid::Uuid::new_v4().simple());
    let env = [
        ("AMQP_URL", tests::AMQP_URL),
        ("QUOTE_QUEUE", queue.as_str()),
    ];
    let mut run = LocalRun::start(&state, &env, &[]).await;
    let worker = run.group_process_named("quote_service");

    // Act
    let killed = Command::new("kill")
        .args(["-KILL", &worker.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let exit = run.wait_exit().await;

    // Assert
    assert!(
        run.summary("transport")
            .starts_with("RabbitMQ at 127.0.0.1:5672"),
        "{}",
        run.output()
    );
    assert_eq!(exit.code(), Some(1), "{exit}\n{}", run.output());
    assert!(
        run.output().contains("stopped because quote_service died"),
        "{}",
        run.output()
    );
    assert_eq!(run.group_processes(), Vec::<String>::new(), "left running");
}

#[tokio::test]
async fn a_port_in_use_is_refused_before_anything_starts() {
    // Arrange
    let state = StateDir::new();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = taken.local_addr().expect("its address").port().to_string();

    // Act
    let mut run = LocalRun::spawn(&state, &[("API_PORT", port.as_str())], &[]);
    let exit = run.wait_exit().await;

    // Assert
    let output = run.output();
    assert_eq!(exit.code(), Some(1), "{output}");
    assert!(
        output.contains(&format!("port {port} (API_PORT) is in use")),
        "{output}"
    );
    assert!(!state.0.join("jwt-secret").exists(), "nothing is made");
}

/// A fresh state directory (the script's LOCAL_STATE_DIR), removed afterwards.
struct StateDir(PathBuf);

impl StateDir {
    fn new() -> StateDir {
        let dir = std::env::temp_dir().join(format!("run-local-{}", uuid::Uuid::new_v4()));
        StateDir(dir)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The script with ports that were free a moment ago, its own state directory, the binaries
/// of the target directory and profile this test was built with (so its `cargo build` has
/// nothing to do), and none of the caller's settings that would change what it chooses.
fn script_command(state: &StateDir, env: &[(&str, &str)], args: &[&str]) -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository");
    let exe = std::env::current_exe().expect("the test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("no profile in {}", profile_dir.display()),
    };
    let mut command = Command::new("bash");
    command
        .arg(root.join("scripts/run-local.sh"))
        .args(args)
        .env(
            "CARGO_TARGET_DIR",
            profile_dir.parent().expect("target dir"),
        )
        .env("RUN_LOCAL_PROFILE", profile)
        .env("LOCAL_STATE_DIR", &state.0)
        .env("API_PORT", free_port())
        .env("QUOTE_PORT", free_port())
        .env("FAKE_STOOQ_PORT", free_port())
        .env("SHUTDOWN_GRACE", "5s")
        .env_remove("STOOQ_API_KEY")
        .env_remove("STOOQ_URL")
        .env_remove("QUOTE_TRANSPORT")
        .env_remove("JWT_SECRET")
        .env_remove("QUOTE_QUEUE")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .process_group(0);
    command
}

/// A port nothing listened on a moment ago. The script binds it itself (it takes no port 0),
/// so another process could take it first: the script then refuses clearly, not silently.
fn free_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener
        .local_addr()
        .expect("its address")
        .port()
        .to_string()
}

/// A running `scripts/run-local.sh`: its output is collected as it comes; dropping it SIGKILLs
/// its whole process group.
struct LocalRun {
    child: Child,
    /// The web app's URL, as printed (ends in `/`).
    url: String,
    output: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl LocalRun {
    /// Starts the script and waits until it prints the URL (every service ready).
    async fn start(state: &StateDir, env: &[(&str, &str)], args: &[&str]) -> LocalRun {
        let mut run = LocalRun::spawn(state, env, args);
        let until = Instant::now() + FIRST_OUTPUT_LIMIT;
        loop {
            if let Some(url) = run.line_after(URL_PREFIX) {
                run.url = url;
                return run;
            }
            if let Some(status) = run.child.try_wait().expect("try_wait") {
                panic!(
                    "the script exited ({status}) before printing the URL:\n{}",
                    run.output()
                );
            }
            assert!(
                Instant::now() < until,
                "no URL within {FIRST_OUTPUT_LIMIT:?}:\n{}",
                run.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the script, collecting its output.
    fn spawn(state: &StateDir, env: &[(&str, &str)], args: &[&str]) -> LocalRun {
        let mut child = script_command(state, env, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start scripts/run-local.sh");
        let output = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().expect("stdout"), output.clone()),
            collect(child.stderr.take().expect("stderr"), output.clone()),
        ];
        LocalRun {
            child,
            url: String::new(),
            output,
            readers,
        }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The rest of the first output line starting with `prefix`.
    fn line_after(&self, prefix: &str) -> Option<String> {
        self.output()
            .lines()
            .find_map(|line| line.strip_prefix(prefix).map(str::to_owned))
    }

    /// What the summary says after `  label:`.
    fn summary(&self, label: &str) -> String {
        self.line_after(&format!("  {label}:"))
            .unwrap_or_else(|| panic!("no '{label}' line in:\n{}", self.output()))
            .trim()
            .to_owned()
    }

    /// What Ctrl-C in a terminal does: SIGINT to every process of the foreground group, the
    /// services and whatever the script runs at that moment included.
    fn ctrl_c(&self) {
        let status = Command::new("kill")
            .args(["-INT", "--", &format!("-{}", self.child.id())])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -INT to the group");
    }

    /// `name` to the script alone, as a supervisor or `kill` would send it.
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name}");
    }

    /// Its exit status, once its last words are collected too (the readers reach the end of
    /// the pipes; bounded, in case something it left behind still holds them).
    async fn wait_exit(&mut self) -> ExitStatus {
        let status = wait_exit(&mut self.child, STOP_LIMIT)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "still running {STOP_LIMIT:?} after the signal:\n{}",
                    self.output()
                )
            });
        let until = Instant::now() + Duration::from_secs(2);
        while !self.readers.iter().all(|r| r.is_finished()) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        status
    }

    /// "pid name" of every process in the script's group but the script itself.
    fn group_processes(&self) -> Vec<String> {
        let group = self.child.id();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let name = &stat[open + 1..close];
            let pgrp = stat[close + 1..].split_whitespace().nth(2);
            if pgrp == Some(&group.to_string()) && pid != group {
                found.push(format!("{pid} {name}"));
            }
        }
        found
    }

    /// The services it started: its group without the script's own helpers (`sleep`, and
    /// `bash` subshells for the probes).
    fn services(&self) -> Vec<String> {
        self.group_processes()
            .into_iter()
            .filter(|p| !p.ends_with(" sleep") && !p.ends_with(" bash"))
            .collect()
    }

    fn group_process_named(&self, name: &str) -> u32 {
        self.services()
            .iter()
            .find_map(|p| {
                let (pid, comm) = p.split_once(' ')?;
                (comm == name).then(|| pid.parse().expect("a pid"))
            })
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.services()))
    }
}

impl Drop for LocalRun {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// Appends everything `from` writes to `into` (and echoes it to the test's output), to the
/// end, so the script never blocks on a full pipe.
fn collect(
    from: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            println!("run-local| {line}");
            let mut all = into.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    })
}

async fn login(http: &reqwest::Client, base: &str, username: &str, password: &str) -> String {
    let response = http
        .post(format!("{base}api/v1/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("POST /api/v1/login");
    assert_eq!(response.status(), StatusCode::OK, "login as {username}");
    let body: Value = response.json().await.expect("a JSON login answer");
    body["token"].as_str().expect("a token").to_owned()
}
