//! End-to-end benchmark of the stock-quote stack.
//!
//! `bench` (src/main.rs) starts fake_stooq, quote_service and api_service from release builds,
//! seeds users and history, drives each scenario with wrk and compares the `/stock` scenarios
//! with two baselines measured in the same run: the bare RPC echo of [`echo`] and a bare axum
//! server (`http_baseline`). `scripts/bench.sh` is the one command.

pub mod compare;
pub mod cpu;
pub mod db;
pub mod echo;
pub mod memory;
pub mod report;
pub mod scenarios;
pub mod settings;
pub mod stack;
pub mod stats;
pub mod stream_load;
pub mod wrk;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::report::{Machine, Target};
use crate::scenarios::{Config, Scenario, ScenarioReport};
pub use crate::settings::Settings;
use crate::stack::Binaries;

/// The JSON written to `--output`.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub generated_at: String,
    pub machine: Machine,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub runs: u16,
    pub scenarios: Vec<ScenarioReport>,
    pub targets: Vec<Target>,
    /// Scenarios that could not be run at all, with why.
    pub failures: Vec<Failure>,
}

#[derive(Debug, Serialize)]
pub struct Failure {
    pub scenario: String,
    pub error: String,
}

/// Which scenarios to run, in order: all by default; the baselines a chosen stock scenario is
/// reported against come along, first (echo for stock-hot* and stock-rpc, the bare-HTTP
/// server for stock-hot*).
pub fn plan_scenarios(chosen: &[Scenario]) -> Vec<Scenario> {
    let mut list = if chosen.is_empty() {
        Scenario::all()
    } else {
        chosen.to_vec()
    };
    let stock_hot = list.iter().any(|s| {
        matches!(
            s,
            Scenario::StockHot | Scenario::StockHotSqlite | Scenario::StockHotHttp
        )
    });
    if stock_hot || list.contains(&Scenario::StockRpc) {
        list.push(Scenario::Echo);
    }
    if stock_hot {
        list.push(Scenario::HttpBaseline);
    }
    scenarios::normalise(list)
}

/// The ratios of the `/stock` rows to the baselines of the same run: stock-hot* and stock-rpc
/// to the echo with as many calls in flight as they have connections (`echo` or
/// `echo-1conn`), stock-hot* to `http-baseline` at the same connection count. A row whose
/// baseline did not run gets no ratio.
pub fn assign_ratios(reports: &mut [ScenarioReport]) {
    let baseline = |reports: &[ScenarioReport], name: &str| {
        reports
            .iter()
            .find(|r| r.name == name && r.median.rps > 0.0)
            .map(|r| (r.connections, r.median.rps))
    };
    let echoes: Vec<(usize, f64)> = ["echo", "echo-1conn"]
        .into_iter()
        .filter_map(|name| baseline(reports, name))
        .collect();
    let http = baseline(reports, "http-baseline");
    for r in reports.iter_mut() {
        let hot = r.name.starts_with("stock-hot");
        if !(hot || r.name == "stock-rpc") {
            continue;
        }
        let rps = r.median.rps;
        r.ratio_to_echo = echoes
            .iter()
            .find(|(conns, _)| *conns == r.connections)
            .map(|(_, echo)| rps / echo);
        if hot {
            r.ratio_to_http_baseline = http
                .filter(|(conns, _)| *conns == r.connections)
                .map(|(_, bare)| rps / bare);
        }
    }
}

/// The binaries the run uses, pinned in its work dir first: a `cargo build` elsewhere in
/// the workspace must not swap a binary between (or during) scenarios.
fn snapshot_binaries(from: &std::path::Path, to: &std::path::Path) -> Result<Binaries> {
    let source = Binaries {
        dir: from.to_path_buf(),
    };
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for name in [
        "fake_stooq",
        "quote_service",
        "api_service",
        "rpc_echo",
        "http_baseline",
    ] {
        let src = source.path(name)?;
        let dst = to.join(name);
        // A hard link pins the current file (cargo replaces rather than rewrites binaries);
        // copy where linking is impossible (another filesystem).
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst)
                .with_context(|| format!("copying {} into {}", src.display(), to.display()))?;
        }
    }
    Ok(Binaries {
        dir: to.to_path_buf(),
    })
}

/// Writes the JSON summary to `output` and the Markdown beside it (same name, `.md`).
fn write_outputs(output: &std::path::Path, summary: &impl Serialize, markdown: &str) -> Result<()> {
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(output, serde_json::to_string_pretty(summary)?)
        .with_context(|| format!("writing {}", output.display()))?;
    println!("JSON summary: {}", output.display());
    let markdown_path = output.with_extension("md");
    std::fs::write(&markdown_path, markdown)
        .with_context(|| format!("writing {}", markdown_path.display()))?;
    println!("Markdown tables: {}", markdown_path.display());
    Ok(())
}

fn stamp() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()
}

fn wrk_present() -> Result<()> {
    let present = std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok();
    if !present {
        bail!("wrk is not installed (apt-get install -y wrk, or run scripts/bench.sh)");
    }
    Ok(())
}

/// What every scenario needs from the command line, for one set of binaries.
fn config(settings: &Settings, bins: Binaries, work_dir: std::path::PathBuf) -> Config {
    Config {
        bins,
        work_dir,
        pg_base: settings.pg_base.clone(),
        amqp_url: settings.amqp_url.clone(),
        duration: settings.duration,
        warmup: settings.warmup,
        runs: settings.runs.into(),
        connections: settings.connections,
        wrk_threads: settings.wrk_threads,
        users: settings.users.max(1),
        hot_symbols: settings.hot_symbols.max(1),
        rpc_symbols: settings.rpc_symbols.max(1),
        cold_symbols: settings.cold_symbols.max(1),
        history_rows: settings.history_rows.max(1),
        stats_symbols: settings.stats_symbols.max(1),
        login_connections: settings.login_connections,
        latency_connections: settings.latency_connections.max(1),
        paced_load: settings.paced_load.clamp(0.0, 1.0),
        stream_subscribers: settings.stream_subscribers.max(1),
        stream_symbols: settings.stream_symbols.clamp(1, usize::from(u16::MAX)),
        stream_symbols_each: settings.stream_symbols_each.max(1),
        stream_refresh: settings.stream_refresh,
        api_env: settings.api_env.clone(),
        quote_env: settings.quote_env.clone(),
    }
}

/// Runs the chosen scenarios, prints the table and writes the JSON summary. Returns the
/// summary; scenarios that failed to run are listed in it (missed targets are not errors).
pub async fn run(settings: Settings) -> Result<Summary> {
    wrk_present()?;
    let work_dir = settings.work_dir.join(stamp());
    let bins = snapshot_binaries(&settings.bin_dir, &work_dir.join("bin"))?;
    let cfg = config(&settings, bins, work_dir);
    std::fs::create_dir_all(&cfg.work_dir)
        .with_context(|| format!("creating {}", cfg.work_dir.display()))?;
    let mut reports: Vec<ScenarioReport> = Vec::new();
    let mut failures = Vec::new();
    for scenario in plan_scenarios(&settings.scenarios) {
        eprintln!("bench: === {} ===", scenario.name());
        match scenarios::run(scenario, &cfg).await {
            Ok(done) => reports.extend(done),
            Err(err) => {
                eprintln!("bench: {} failed: {err:#}", scenario.name());
                failures.push(Failure {
                    scenario: scenario.name(),
                    error: format!("{err:#}"),
                });
            }
        }
    }
    assign_ratios(&mut reports);
    let targets = report::targets(&reports);
    println!("{}", report::table(&reports, &targets));
    for f in &failures {
        println!("FAILED TO RUN {}: {}", f.scenario, f.error);
    }
    let summary = Summary {
        generated_at: chrono::Utc::now().to_rfc3339(),
        machine: Machine::detect(&settings.pg_base).await,
        duration_s: settings.duration.as_secs_f64(),
        warmup_s: settings.warmup.as_secs_f64(),
        runs: settings.runs,
        scenarios: reports,
        targets,
        failures,
    };
    let markdown = report::markdown(
        &summary.scenarios,
        &summary.targets,
        &summary.machine,
        summary.runs,
        summary.duration_s,
    );
    write_outputs(&settings.output, &summary, &markdown)?;
    let _ = std::fs::remove_dir_all(cfg.work_dir.join("bin"));
    Ok(summary)
}

/// Runs every chosen scenario once per round with each build (`--bin-dir`, then
/// `--compare-with`, the order swapped each round), prints the comparison and writes it as
/// JSON and Markdown. Per-build tables and targets are not printed: one run per build and
/// round is not the medians-of-runs that targets are judged on.
pub async fn compare(settings: Settings) -> Result<compare::ComparisonSummary> {
    use compare::Side;

    let Some(candidate_dir) = settings.compare_with.clone() else {
        bail!("compare needs --compare-with");
    };
    wrk_present()?;
    let work_dir = settings.work_dir.join(stamp());
    // One run per build and round: the rounds are the runs.
    let build = |dir: &std::path::Path, name: &str| -> Result<Config> {
        let bins = snapshot_binaries(dir, &work_dir.join(name).join("bin"))?;
        Ok(Config {
            runs: 1,
            ..config(&settings, bins, work_dir.join(name))
        })
    };
    let baseline = build(&settings.bin_dir, "baseline")?;
    let candidate = build(&candidate_dir, "candidate")?;
    let mut comparisons = compare::Comparisons::default();
    let mut failures = Vec::new();
    for scenario in plan_scenarios(&settings.scenarios) {
        for round in 0..usize::from(settings.runs) {
            for side in compare::order(round) {
                let base = match side {
                    Side::Baseline => &baseline,
                    Side::Candidate => &candidate,
                };
                let cfg = Config {
                    work_dir: base.work_dir.join(format!("round-{round}")),
                    ..base.clone()
                };
                std::fs::create_dir_all(&cfg.work_dir)
                    .with_context(|| format!("creating {}", cfg.work_dir.display()))?;
                eprintln!(
                    "bench: === {} round {}/{} {side:?} ===",
                    scenario.name(),
                    round + 1,
                    settings.runs
                );
                match scenarios::run(scenario, &cfg).await {
                    Ok(reports) => comparisons.record(side, round, &reports),
                    Err(err) => {
                        eprintln!("bench: {} ({side:?}) failed: {err:#}", scenario.name());
                        failures.push(Failure {
                            scenario: format!(
                                "{} ({side:?}, round {})",
                                scenario.name(),
                                round + 1
                            ),
                            error: format!("{err:#}"),
                        });
                    }
                }
            }
        }
    }
    let rows = comparisons.finish();
    let table = compare::table(&rows, settings.runs.into());
    println!("{table}");
    for f in &failures {
        println!("FAILED TO RUN {}: {}", f.scenario, f.error);
    }
    let summary = compare::ComparisonSummary {
        generated_at: chrono::Utc::now().to_rfc3339(),
        machine: Machine::detect(&settings.pg_base).await,
        baseline_bin_dir: settings.bin_dir.display().to_string(),
        candidate_bin_dir: candidate_dir.display().to_string(),
        duration_s: settings.duration.as_secs_f64(),
        warmup_s: settings.warmup.as_secs_f64(),
        rounds: settings.runs,
        rows,
        failures,
    };
    write_outputs(&settings.output, &summary, &table)?;
    for cfg in [&baseline, &candidate] {
        let _ = std::fs::remove_dir_all(cfg.work_dir.join("bin"));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::scenarios::{Medians, ScenarioReport};

    #[test]
    fn stock_scenarios_bring_their_baselines_first() {
        assert_eq!(
            plan_scenarios(&[Scenario::StockHot]),
            vec![Scenario::Echo, Scenario::HttpBaseline, Scenario::StockHot]
        );
        assert_eq!(
            plan_scenarios(&[Scenario::StockRpc]),
            vec![Scenario::Echo, Scenario::StockRpc]
        );
        assert_eq!(plan_scenarios(&[Scenario::Login]), vec![Scenario::Login]);
        assert_eq!(plan_scenarios(&[]), Scenario::all());
    }

    fn row(name: &str, connections: usize, rps: f64) -> ScenarioReport {
        let mut r = ScenarioReport::new(name, "", connections, Vec::new());
        r.median = Medians {
            rps,
            ..Medians::default()
        };
        r
    }

    #[test]
    fn stock_rows_are_compared_with_the_baseline_at_their_own_connection_count() {
        let mut reports = vec![
            row("echo", 64, 8000.0),
            row("echo-1conn", 1, 2000.0),
            row("http-baseline", 64, 40000.0),
            row("stock-hot", 64, 16000.0),
            row("stock-hot-1conn", 1, 1000.0),
            row("stock-rpc", 64, 4000.0),
            row("stock-cold", 64, 5000.0),
        ];

        assign_ratios(&mut reports);

        let ratios: Vec<(Option<f64>, Option<f64>)> = reports
            .iter()
            .map(|r| (r.ratio_to_echo, r.ratio_to_http_baseline))
            .collect();
        assert_eq!(
            ratios[3..],
            [
                (Some(2.0), Some(0.4)),
                // One connection: against the one-in-flight echo; no 1-connection HTTP row.
                (Some(0.5), None),
                (Some(0.5), None),
                (None, None),
            ]
        );
    }

    #[test]
    fn without_a_baseline_there_is_no_ratio() {
        let mut reports = vec![row("stock-hot", 64, 16000.0)];
        assign_ratios(&mut reports);
        assert_eq!(reports[0].ratio_to_echo, None);
        assert_eq!(reports[0].ratio_to_http_baseline, None);
    }
}
