//! The table printed at the end, the targets judged against the medians, and the JSON
//! summary written next to it.

use std::fmt::Write as _;

use serde::Serialize;

use crate::scenarios::ScenarioReport;

/// One target of issue #5 and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub scenario: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

/// The machine the figures came from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub wrk: String,
    pub git_commit: String,
}

impl Machine {
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, model)| model.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0);
        let command_line = |cmd: &str, args: &[&str]| {
            std::process::Command::new(cmd)
                .args(args)
                .output()
                .map(|o| {
                    let text = [o.stdout, o.stderr].concat();
                    String::from_utf8_lossy(&text)
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_owned()
                })
                .unwrap_or_default()
        };
        Self {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            wrk: command_line("wrk", &["--version"])
                .split(" Copyright")
                .next()
                .unwrap_or_default()
                .to_owned(),
            git_commit: command_line("git", &["rev-parse", "--short", "HEAD"]),
        }
    }
}

fn find<'a>(reports: &'a [ScenarioReport], name: &str) -> Option<&'a ScenarioReport> {
    reports.iter().find(|r| r.name == name)
}

fn all_checks_pass(r: &ScenarioReport) -> bool {
    r.checks.iter().all(|c| c.passed)
}

fn total_errors(r: &ScenarioReport) -> u64 {
    r.runs.iter().map(|run| run.errors).sum()
}

/// Judges the medians against the targets (only for scenarios that ran).
pub fn targets(reports: &[ScenarioReport]) -> Vec<Target> {
    let mut out = Vec::new();
    let mut push = |scenario: &str, target: &str, measured: String, met: bool| {
        out.push(Target {
            scenario: scenario.into(),
            target: target.into(),
            measured,
            met,
        })
    };
    for name in ["stock-hot", "stock-hot-sqlite", "stock-hot-http"] {
        let Some(r) = find(reports, name) else {
            continue;
        };
        if let Some(ratio) = r.ratio_to_echo {
            push(
                name,
                "throughput >= 1.0x echo",
                format!("{ratio:.2}x"),
                ratio >= 1.0,
            );
        }
        push(
            name,
            "p99 <= 20 ms",
            format!("{:.1} ms ({} conns)", r.median.p99_ms, r.connections),
            r.median.p99_ms <= 20.0,
        );
        push(
            name,
            "zero errors",
            format!("{} over all runs", total_errors(r)),
            total_errors(r) == 0,
        );
        push(
            name,
            "zero lost rows, counters consistent",
            if all_checks_pass(r) {
                "all checks passed".into()
            } else {
                "a check failed".into()
            },
            all_checks_pass(r),
        );
    }
    if let Some(r) = find(reports, "stock-hot") {
        for (service, mem) in &r.memory {
            push(
                "stock-hot",
                &format!("{service} peak RSS under load <= 100 MB"),
                format!("{:.1} MB", mem.peak_rss_mb),
                mem.peak_rss_mb <= 100.0,
            );
        }
    }
    if let Some(r) = find(reports, "stock-cold") {
        let per_quote = r
            .extra
            .get("upstream_requests_per_quote")
            .and_then(|v| v.as_f64());
        if let Some(per_quote) = per_quote {
            push(
                "stock-cold",
                "upstream requests per quote well below 1",
                format!("{per_quote:.3}"),
                per_quote < 1.0,
            );
        }
        push(
            "stock-cold",
            "zero errors, zero lost rows",
            format!(
                "{} errors, checks {}",
                total_errors(r),
                if all_checks_pass(r) {
                    "passed"
                } else {
                    "FAILED"
                }
            ),
            total_errors(r) == 0 && all_checks_pass(r),
        );
    }
    for (name, limit) in [
        ("history-first", 10.0),
        ("history-first-paced", 10.0),
        ("history-deep", 10.0),
        ("history-deep-paced", 10.0),
        ("stats", 5.0),
        ("stats-paced", 5.0),
    ] {
        let Some(r) = find(reports, name) else {
            continue;
        };
        push(
            name,
            &format!("p99 <= {limit} ms"),
            format!(
                "{:.2} ms ({} conns, {:.0} req/s)",
                r.median.p99_ms, r.connections, r.median.rps
            ),
            r.median.p99_ms <= limit,
        );
        push(
            name,
            "answers correct, zero errors",
            format!(
                "{} errors, checks {}",
                total_errors(r),
                if all_checks_pass(r) {
                    "passed"
                } else {
                    "FAILED"
                }
            ),
            total_errors(r) == 0 && all_checks_pass(r),
        );
    }
    if let Some(r) = find(reports, "login") {
        if let Some(api) = r.memory.get("api_service") {
            push(
                "login",
                "api_service peak RSS < 256 MB",
                format!("{:.1} MB", api.peak_rss_mb),
                api.peak_rss_mb < 256.0,
            );
        }
        push(
            "login",
            "zero errors",
            format!("{} over all runs", total_errors(r)),
            total_errors(r) == 0,
        );
    }
    // Idle footprint: the largest idle figure any stack of the run showed.
    for service in ["quote_service", "api_service"] {
        let idle = reports
            .iter()
            .filter_map(|r| r.memory.get(service))
            .map(|m| m.idle_rss_mb)
            .fold(f64::NAN, f64::max);
        if !idle.is_nan() {
            push(
                "memory",
                &format!("{service} idle RSS <= 30 MB"),
                format!("{idle:.1} MB (largest over all stacks)"),
                idle <= 30.0,
            );
        }
    }
    out
}

/// The human-readable table.
pub fn table(reports: &[ScenarioReport], targets: &[Target]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{:<17} {:>5} {:>10} {:>7} {:>8} {:>8} {:>9} {:>7}  checks",
        "scenario", "conns", "req/s", "x echo", "p50 ms", "p99 ms", "max ms", "errors"
    );
    for r in reports {
        let ratio = r
            .ratio_to_echo
            .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"));
        let checks = if r.checks.is_empty() {
            "-".to_owned()
        } else if all_checks_pass(r) {
            "ok".to_owned()
        } else {
            let failed: Vec<&str> = r
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.name.as_str())
                .collect();
            format!("FAILED: {}", failed.join("; "))
        };
        let _ = writeln!(
            s,
            "{:<17} {:>5} {:>10.0} {:>7} {:>8.2} {:>8.2} {:>9.2} {:>7.0}  {}",
            r.name,
            r.connections,
            r.median.rps,
            ratio,
            r.median.p50_ms,
            r.median.p99_ms,
            r.median.max_ms,
            r.median.errors,
            checks
        );
    }
    let _ = writeln!(
        s,
        "\n{:<17} {:<14} {:>9} {:>12} {:>12} {:>10}",
        "memory (MB)", "service", "idle RSS", "before runs", "run peak RSS", "VmHWM"
    );
    for r in reports {
        for (service, m) in &r.memory {
            let _ = writeln!(
                s,
                "{:<17} {:<14} {:>9.1} {:>12.1} {:>12.1} {:>10.1}",
                r.name,
                service,
                m.idle_rss_mb,
                m.before_runs_rss_mb,
                m.sampled_peak_rss_mb,
                m.peak_rss_mb
            );
        }
    }
    let extras: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            r.extra
                .iter()
                .map(move |(k, v)| format!("{:<17} {k} = {v}", r.name))
        })
        .collect();
    if !extras.is_empty() {
        let _ = writeln!(s, "\n{}", extras.join("\n"));
    }
    let _ = writeln!(s, "\n{:<17} {:<42} {:<34} met", "targets", "", "measured");
    for t in targets {
        let _ = writeln!(
            s,
            "{:<17} {:<42} {:<34} {}",
            t.scenario,
            t.target,
            t.measured,
            if t.met { "yes" } else { "NO" }
        );
    }
    s
}

/// The same figures as Markdown, for pasting into BENCHMARKS.md.
pub fn markdown(
    reports: &[ScenarioReport],
    targets: &[Target],
    machine: &Machine,
    runs: u16,
    duration_s: f64,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Machine: {} CPUs ({}), {} GiB RAM, Linux {}; {}; commit {}. Medians of {runs} runs of {duration_s:.0} s each.\n",
        machine.cpus,
        machine.cpu_model,
        machine.memory_gib,
        machine.kernel,
        machine.wrk,
        machine.git_commit
    );
    let _ = writeln!(
        s,
        "| scenario | conns | req/s | x echo | p50 ms | p99 ms | max ms | errors | checks |"
    );
    let _ = writeln!(
        s,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for r in reports {
        let ratio = r
            .ratio_to_echo
            .map_or_else(|| "".to_owned(), |x| format!("{x:.2}"));
        let _ = writeln!(
            s,
            "| `{}` | {} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {} |",
            r.name,
            r.connections,
            r.median.rps,
            ratio,
            r.median.p50_ms,
            r.median.p99_ms,
            r.median.max_ms,
            r.median.errors,
            if all_checks_pass(r) {
                "pass"
            } else {
                "**FAIL**"
            }
        );
    }
    let _ = writeln!(
        s,
        "\n| scenario | service | idle RSS MB | before runs MB | run peak MB | VmHWM MB |"
    );
    let _ = writeln!(s, "| --- | --- | ---: | ---: | ---: | ---: |");
    for r in reports {
        for (service, m) in &r.memory {
            let _ = writeln!(
                s,
                "| `{}` | {service} | {:.1} | {:.1} | {:.1} | {:.1} |",
                r.name, m.idle_rss_mb, m.before_runs_rss_mb, m.sampled_peak_rss_mb, m.peak_rss_mb
            );
        }
    }
    let _ = writeln!(s, "\n| scenario | figure | value |");
    let _ = writeln!(s, "| --- | --- | ---: |");
    for r in reports {
        for (k, v) in &r.extra {
            let value = v.as_f64().map_or_else(
                || v.to_string(),
                |x| {
                    if x != 0.0 && x.abs() < 0.01 {
                        format!("{x:.2e}")
                    } else {
                        format!("{x:.3}")
                    }
                },
            );
            let _ = writeln!(s, "| `{}` | {k} | {value} |", r.name);
        }
    }
    let _ = writeln!(s, "\n| scenario | target | measured | met |");
    let _ = writeln!(s, "| --- | --- | --- | --- |");
    for t in targets {
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} |",
            t.scenario,
            t.target,
            t.measured,
            if t.met { "yes" } else { "**no**" }
        );
    }
    s
}
