//! The services as real child processes (the `api_service` and `quote_service` binaries), for
//! what an in-process `Application` cannot show: what a SIGKILLed process leaves behind,
//! whether the SIGTERM handler is installed, and state that is (or is not) shared between
//! separate processes.
//!
//! Each process binds port 0 and logs its address in its JSON start-up line; [`Process`]
//! reads it from there (as `bench` does), so no port is chosen first and raced for.
//!
//! A test in this crate cannot use `CARGO_BIN_EXE_*` for another package's binaries:
//! [`binary`] finds them in the target directory the test executable was built into, and
//! builds them there with cargo when they are missing or older than the test executable
//! (which is rebuilt whenever the services' libraries change). A failed build is a failure.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A cold process start (migrations, broker connection) on a loaded 2-core machine.
pub const START_LIMIT: Duration = Duration::from_secs(30);

/// The path of a workspace binary (`api_service`, `quote_service`), built if needed.
pub fn binary(name: &str) -> PathBuf {
    let dir = profile_dir();
    let path = dir.join(name);
    if !is_fresh(&path) {
        build_service_binaries(&dir);
    }
    assert!(
        path.is_file(),
        "{} is still missing after building it",
        path.display()
    );
    path
}

/// `target/<profile>`: the test executable lives in its `deps` directory.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("the test executable's directory");
    deps.parent()
        .expect("the profile directory above deps")
        .to_path_buf()
}

/// Present and built no earlier than this test executable.
fn is_fresh(path: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let exe = std::env::current_exe().ok();
    match (modified(path), exe.as_deref().and_then(modified)) {
        (Some(bin), Some(test)) => bin >= test,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// `cargo build --bins` of both services into `profile_dir`'s target directory and profile,
/// once per test process.
fn build_service_binaries(profile_dir: &Path) {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target_dir = profile_dir.parent().expect("the target directory");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => panic!("no profile name in {}", profile_dir.display()),
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        eprintln!(
            "building the service binaries ({profile}) into {}",
            target_dir.display()
        );
        let status = Command::new(&cargo)
            .args([
                "build",
                "--bins",
                "-p",
                "api_service",
                "-p",
                "quote_service",
            ])
            .args(["--profile", profile])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
        assert!(
            status.success(),
            "building the service binaries failed: {status}"
        );
    });
}

/// A service running as a child process. Dropping it SIGKILLs and reaps it, so a failing test
/// leaves no orphan behind.
pub struct Process {
    pub name: String,
    /// The address the process announced (its API, or the worker's HTTP server).
    pub addr: SocketAddr,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `bin` with `args` and `env` (added to the test's environment; logging is set to
    /// JSON with warnings plus `startup_target`'s INFO line) and waits for the address.
    pub async fn start(
        name: &str,
        bin: &Path,
        args: &[&str],
        env: &[(String, String)],
        startup_target: &str,
    ) -> Process {
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", format!("warn,{startup_target}=info"))
            .env("LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let (prefix, lines) = (name.to_owned(), log.clone());
        // Passes every line on to the test's output, keeps it for failure messages, and
        // drains the pipe to the end so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("{prefix}: {line}");
                if let Some(addr) = announced_addr(&line)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let mut process = Process {
            name: name.to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            log,
        };
        process.addr = match tokio::time::timeout(START_LIMIT, rx).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(_)) => panic!(
                "{name} ended its output without announcing an address (exit: {:?}); log:\n{}",
                process.child.try_wait(),
                process.log_tail()
            ),
            Err(_) => panic!("{name} announced no address within {START_LIMIT:?}"),
        };
        process
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap: once this returns the process is gone and the kernel has closed
    /// its connections (the broker requeues what it held unacked).
    pub fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// Sends SIGTERM (the orchestrator's "stop") without waiting.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// The exit status once the process has exited, or `None` if it still runs after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        shared::test_support::poll::wait_exit(&mut self.child, limit).await
    }

    /// Polls `/readyz` until it answers 200; fails at once if the process died instead.
    pub async fn wait_ready(&mut self, http: &reqwest::Client) {
        let until = Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "{} exited before ready ({status}); log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            let ready = http
                .get(self.url("/readyz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status() == reqwest::StatusCode::OK);
            if ready {
                return;
            }
            assert!(
                Instant::now() < until,
                "{} not ready within {START_LIMIT:?}; log:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines it logged, for failure messages.
    pub fn log_tail(&self) -> String {
        let lines = self.log.lock().unwrap();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The bound address in a JSON INFO line (`"fields":{"addr":…}`), if it is one.
fn announced_addr(line: &str) -> Option<SocketAddr> {
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    if event["level"] != "INFO" {
        return None;
    }
    event["fields"]["addr"].as_str()?.parse().ok()
}
