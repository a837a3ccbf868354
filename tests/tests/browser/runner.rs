//! Finding the browser tools and running one scenario of `tests/browser/scenarios` with them.
//!
//! The scenarios are JavaScript (playwright-core drives Debian's Chromium over the DevTools
//! protocol; axe-core audits each page), installed by `scripts/install-browser-tools.sh` at
//! the versions of `tests/browser/package-lock.json`. This side starts the stack, prepares
//! the users and data, runs `node tests/browser/run.mjs` and fails on anything it reports.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest a scenario may run before it is killed: each step already gives up after 10 s,
/// so only a hung browser or node process gets here.
const SCENARIO_LIMIT: Duration = Duration::from_secs(120);
/// The oldest Node.js playwright-core supports.
const MIN_NODE_MAJOR: u32 = 20;

/// Node.js, Chromium and the suite's installed npm packages.
pub struct BrowserTools {
    node: PathBuf,
    chromium: PathBuf,
    suite: PathBuf,
}

/// The tools, or `None` after saying what is missing; under `CI=true` a missing tool panics,
/// since a skipped browser suite would hide failures.
pub fn tools_or_skip() -> Option<BrowserTools> {
    match find_tools() {
        Ok(tools) => Some(tools),
        Err(why) => {
            let why = format!(
                "{why} (run scripts/install-browser-tools.sh to install the browser tools)"
            );
            if shared::config::running_in_ci() {
                panic!("{why}, and CI=true requires them");
            }
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

fn find_tools() -> Result<BrowserTools, String> {
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    let node = std::env::var_os("NODE_BIN").map_or_else(|| PathBuf::from("node"), PathBuf::from);
    let version = version_of(&node).ok_or_else(|| format!("{} does not run", node.display()))?;
    let major = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .ok_or_else(|| format!("cannot read the Node.js version {version:?}"))?;
    if major < MIN_NODE_MAJOR {
        return Err(format!(
            "Node.js {version} is older than {MIN_NODE_MAJOR}, which playwright-core needs"
        ));
    }
    let chromium = std::env::var_os("CHROMIUM_BIN")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    version_of(&chromium)
        .ok_or_else(|| format!("Chromium does not run at {}", chromium.display()))?;
    for package in ["playwright-core", "axe-core"] {
        let manifest = suite
            .join("node_modules")
            .join(package)
            .join("package.json");
        if !manifest.is_file() {
            return Err(format!(
                "the npm package {package} is not installed in {}",
                suite.display()
            ));
        }
    }
    Ok(BrowserTools {
        node,
        chromium,
        suite,
    })
}

/// The first line `program --version` prints, when it runs and succeeds.
fn version_of(program: &Path) -> Option<String> {
    let output = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    output.status.success().then(|| {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    })
}

/// Where a scenario's screenshots go: `<target dir>/browser-artifacts/<scenario>`, emptied
/// first so every file there is from the latest run.
fn artifacts_dir(scenario: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // <target>/<profile>/deps/<exe>
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the target directory above <profile>/deps");
    let dir = target.join("browser-artifacts").join(scenario);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the artifacts directory");
    dir
}

impl BrowserTools {
    /// Runs `scenario` against the stack at `base_url` with `fixture` (users, expected data),
    /// prints everything the scenario printed, and fails the test unless it passed.
    pub async fn run(&self, base_url: &str, scenario: &str, fixture: Value) {
        let artifacts = artifacts_dir(scenario);
        let mut command = Command::new(&self.node);
        command
            .arg(self.suite.join("run.mjs"))
            .args(["--base-url", base_url, "--scenario", scenario])
            .arg("--artifacts")
            .arg(&artifacts)
            .arg("--chromium")
            .arg(&self.chromium)
            .args(["--fixture", &fixture.to_string()])
            .current_dir(&self.suite)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let (status, stdout, stderr) = tokio::task::spawn_blocking(move || run_bounded(command))
            .await
            .expect("the scenario runner thread");
        println!("{stdout}");
        eprintln!("{stderr}");
        println!(
            "browser scenario {scenario}: {status} after {:.1} s; screenshots in {}",
            started.elapsed().as_secs_f64(),
            artifacts.display()
        );
        assert!(
            status == "passed",
            "browser scenario {scenario} {status}; its report is above"
        );
    }
}

/// Runs `command` to its end or [`SCENARIO_LIMIT`], whichever comes first (then kills it).
/// Returns "passed", "failed (exit N)" or "hung", and what it printed.
fn run_bounded(mut command: Command) -> (String, String, String) {
    let mut child = command.spawn().expect("start node");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let read_out = std::thread::spawn(move || read_all(&mut stdout));
    let read_err = std::thread::spawn(move || read_all(&mut stderr));
    let deadline = Instant::now() + SCENARIO_LIMIT;
    let status = loop {
        match child.try_wait().expect("wait for node") {
            Some(status) if status.success() => break "passed".to_owned(),
            Some(status) => break format!("failed ({status})"),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break format!("hung (killed after {} s)", SCENARIO_LIMIT.as_secs());
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let stdout = read_out.join().unwrap_or_default();
    let stderr = read_err.join().unwrap_or_default();
    (status, stdout, stderr)
}

fn read_all(pipe: &mut impl std::io::Read) -> String {
    let mut bytes = Vec::new();
    let _ = pipe.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}
