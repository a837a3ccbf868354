//! The API keeps the contract its OpenAPI document states, as a third-party tool reads it:
//! schemathesis (pinned in `tests/schemathesis-requirements.txt`, installed by
//! `scripts/install-schemathesis.sh`) runs every check it has against a live stack (fake
//! stooq, the quote worker over RabbitMQ, the API) from `/api/v1/openapi.json`, once with an
//! admin's token and once with a normal user's. Any schema-valid request rejected,
//! schema-invalid request accepted, undocumented status, header or body, or 5xx fails the test.
//!
//! The seed is fixed and the examples per operation bounded, so a run is reproducible and
//! takes well under a minute. Without schemathesis the test says why and returns, except under
//! `CI=true`, where that is a failure.

use std::path::PathBuf;
use std::process::{Command, Output};

use api_service::store::Role;
use tests::TestApp;

/// Fixed so that a failure seen once is seen again with the same requests.
const SEED: &str = "20240510";
/// Generated test cases per operation and phase: enough to reach every documented rule,
/// few enough to keep each run to about 30 s.
const MAX_EXAMPLES: &str = "100";

/// The schemathesis executable: `SCHEMATHESIS_BIN`, else the one the install script puts in
/// its virtualenv. `None` (after saying why) when absent outside CI; panics under CI.
fn schemathesis_or_skip() -> Option<PathBuf> {
    let bin = match std::env::var_os("SCHEMATHESIS_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
                .unwrap_or_default();
            cache.join("stock-quotes/schemathesis-venv/bin/schemathesis")
        }
    };
    let runs = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if runs {
        return Some(bin);
    }
    let why = format!(
        "schemathesis is not runnable at {} (run scripts/install-schemathesis.sh, or set SCHEMATHESIS_BIN)",
        bin.display()
    );
    if shared::config::running_in_ci() {
        panic!("{why}, and CI=true requires it");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// Runs schemathesis with every check against `app`, authenticated with `token`.
async fn fuzz(bin: PathBuf, app: &TestApp, token: &str) -> Output {
    let schema = app.url(api_service::openapi::OPENAPI_PATH);
    let base = app.address.clone();
    let auth = format!("Authorization: Bearer {token}");
    // Its working directory, where it keeps failures to replay: not the source tree.
    let workdir = std::env::temp_dir().join(format!("contract-fuzz-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&workdir).unwrap();
    let command = {
        let mut command = Command::new(bin);
        command
            .current_dir(&workdir)
            .args(["run", &schema, "--url", &base, "--header", &auth])
            .args(["--checks", "all", "--seed", SEED])
            .args(["--max-examples", MAX_EXAMPLES])
            // One worker: the same seed then sends the same requests in the same order.
            .args(["--workers", "1", "--request-timeout", "10"])
            // No example database carried between runs, no colour codes in the output.
            .args(["--generation-database", "none", "--no-color"])
            // The live-quote stream never ends, which a request/response fuzzer can only
            // time out on; its refusals and head are checked against the document in
            // api_service/tests/openapi.rs, its events in the e2e `stream` tests.
            .args(["--exclude-path", "/api/v1/stream"]);
        command
    };
    let output = tokio::task::spawn_blocking(move || {
        let mut command = command;
        command.output().expect("run schemathesis")
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(workdir);
    output
}

fn assert_clean(who: &str, output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "schemathesis found contract violations as {who} (exit {:?}); its report is above",
        output.status.code()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_its_documented_contract_for_an_admin() {
    let Some(bin) = schemathesis_or_skip() else {
        return;
    };
    let Some(app) = tests::spawn_app().await else {
        return;
    };
    let token = app.token_for("root", Role::Admin).await;

    let output = fuzz(bin, &app, &token).await;

    assert_clean("an admin", &output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_its_documented_contract_for_a_user() {
    let Some(bin) = schemathesis_or_skip() else {
        return;
    };
    let Some(app) = tests::spawn_app().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;

    let output = fuzz(bin, &app, &token).await;

    assert_clean("a user", &output);
}
