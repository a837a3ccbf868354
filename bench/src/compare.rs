//! Before-and-after runs of two builds (`--compare-with`), alternated by the harness itself.
//!
//! Throughput on a shared 2-core machine drifts by 10-20 % within minutes, more than most
//! changes are worth, so two builds measured one after the other compare the machine's mood
//! as much as the code. Here every round runs each scenario once with each build, back to
//! back, and swaps which goes first from one round to the next, so drift falls on both sides
//! alike. The figure to read is the median over the rounds of each round's own ratio
//! (candidate / baseline): two runs minutes apart share the machine's state, two medians over
//! a whole session do not.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::scenarios::{Check, RunFigures, ScenarioReport};
use crate::stats::median;

/// The JSON written to `--output` by a comparison.
#[derive(Debug, Serialize)]
pub struct ComparisonSummary {
    pub generated_at: String,
    pub machine: crate::report::Machine,
    pub baseline_bin_dir: String,
    pub candidate_bin_dir: String,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub rounds: u16,
    pub rows: Vec<Comparison>,
    /// Scenario runs that could not be made, with which build and why.
    pub failures: Vec<crate::Failure>,
}

/// Which build a run used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Baseline,
    Candidate,
}

/// The order of the two builds in round `round` (from 0): baseline first in even rounds.
pub fn order(round: usize) -> [Side; 2] {
    if round.is_multiple_of(2) {
        [Side::Baseline, Side::Candidate]
    } else {
        [Side::Candidate, Side::Baseline]
    }
}

/// What one build's run of one row gave in one round.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub round: usize,
    pub figures: RunFigures,
    /// stock-hot* and stock-rpc: requests/s over the echo's (at the same connection count)
    /// of the same build and round.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_echo: Option<f64>,
    /// The scenario's own figures (broker messages per request, ...), numeric ones only.
    pub extra: BTreeMap<String, f64>,
    pub checks: Vec<Check>,
}

impl Measured {
    /// A one-run scenario report as a round's measurement.
    pub fn of(round: usize, report: &ScenarioReport) -> Option<Self> {
        let figures = report.runs.first()?.clone();
        Some(Self {
            round,
            figures,
            ratio_to_echo: None,
            extra: report
                .extra
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect(),
            checks: report.checks.clone(),
        })
    }
}

/// One table row compared between the builds.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub name: String,
    pub connections: usize,
    pub baseline: Vec<Measured>,
    pub candidate: Vec<Measured>,
    /// Median over the rounds of candidate / baseline requests/s within the round.
    pub rps_ratio: f64,
    /// The same for p99 latency (below 1: the candidate's tail is shorter).
    pub p99_ratio: f64,
    /// Every run of both builds passed its checks.
    pub checks_pass: bool,
}

impl Comparison {
    fn new(name: &str, connections: usize) -> Self {
        Self {
            name: name.to_owned(),
            connections,
            baseline: Vec::new(),
            candidate: Vec::new(),
            rps_ratio: f64::NAN,
            p99_ratio: f64::NAN,
            checks_pass: true,
        }
    }

    fn side(&self, side: Side) -> &[Measured] {
        match side {
            Side::Baseline => &self.baseline,
            Side::Candidate => &self.candidate,
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut Vec<Measured> {
        match side {
            Side::Baseline => &mut self.baseline,
            Side::Candidate => &mut self.candidate,
        }
    }

    /// Median of `f` over one build's rounds.
    pub fn median_of(&self, side: Side, f: impl Fn(&Measured) -> Option<f64>) -> f64 {
        median(&self.side(side).iter().filter_map(f).collect::<Vec<_>>())
    }

    /// Median over the rounds that both builds completed of candidate / baseline for `f`.
    fn round_ratio(&self, f: impl Fn(&Measured) -> f64) -> f64 {
        let ratios: Vec<f64> = self
            .candidate
            .iter()
            .filter_map(|c| {
                let b = self.baseline.iter().find(|b| b.round == c.round)?;
                Some(f(c) / f(b))
            })
            .filter(|r| r.is_finite())
            .collect();
        median(&ratios)
    }
}

/// Collects the rounds as they finish.
#[derive(Debug, Default)]
pub struct Comparisons {
    rows: Vec<Comparison>,
}

impl Comparisons {
    /// Records the rows one build's run of a scenario produced in `round`.
    pub fn record(&mut self, side: Side, round: usize, reports: &[ScenarioReport]) {
        for report in reports {
            let Some(measured) = Measured::of(round, report) else {
                continue;
            };
            let row = match self.rows.iter().position(|r| r.name == report.name) {
                Some(i) => &mut self.rows[i],
                None => {
                    self.rows
                        .push(Comparison::new(&report.name, report.connections));
                    self.rows.last_mut().expect("just pushed")
                }
            };
            row.side_mut(side).push(measured);
        }
    }

    /// The rows with their ratios worked out.
    pub fn finish(mut self) -> Vec<Comparison> {
        let echoes: Vec<Comparison> = self
            .rows
            .iter()
            .filter(|r| r.name == "echo" || r.name == "echo-1conn")
            .cloned()
            .collect();
        for row in &mut self.rows {
            if row.name.starts_with("stock-hot") || row.name == "stock-rpc" {
                let echo = echoes.iter().find(|e| e.connections == row.connections);
                for side in [Side::Baseline, Side::Candidate] {
                    for m in row.side_mut(side) {
                        m.ratio_to_echo = echo
                            .and_then(|e| e.side(side).iter().find(|x| x.round == m.round))
                            .map(|x| m.figures.rps / x.figures.rps);
                    }
                }
            }
            row.rps_ratio = row.round_ratio(|m| m.figures.rps);
            row.p99_ratio = row.round_ratio(|m| m.figures.p99_ms);
            row.checks_pass = row
                .baseline
                .iter()
                .chain(&row.candidate)
                .flat_map(|m| &m.checks)
                .all(|c| c.passed);
        }
        self.rows
    }
}

/// The printed (and Markdown) comparison: medians of each build, the median per-round ratio,
/// and each round's requests/s so the drift shows.
pub fn table(rows: &[Comparison], rounds: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nBaseline (--bin-dir) against candidate (--compare-with), {rounds} alternated round(s); \
         ratios are candidate / baseline within each round, median over the rounds.\n"
    );
    let _ = writeln!(
        s,
        "| scenario | conns | baseline req/s | candidate req/s | req/s ratio | baseline p99 ms | \
         candidate p99 ms | p99 ratio | x echo (baseline / candidate) | checks | req/s per round (baseline / candidate) |"
    );
    let _ = writeln!(
        s,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |"
    );
    for r in rows {
        let rps = |side| r.median_of(side, |m| Some(m.figures.rps));
        let p99 = |side| r.median_of(side, |m| Some(m.figures.p99_ms));
        let echo = |side| r.median_of(side, |m| m.ratio_to_echo);
        let x_echo = if echo(Side::Baseline).is_nan() {
            "-".to_owned()
        } else {
            format!("{:.2} / {:.2}", echo(Side::Baseline), echo(Side::Candidate))
        };
        let per_round: Vec<String> = r
            .baseline
            .iter()
            .map(|b| {
                let c = r
                    .candidate
                    .iter()
                    .find(|c| c.round == b.round)
                    .map_or_else(|| "-".to_owned(), |c| format!("{:.0}", c.figures.rps));
                format!("{:.0} / {c}", b.figures.rps)
            })
            .collect();
        let _ = writeln!(
            s,
            "| `{}` | {} | {:.0} | {:.0} | **{:.3}** | {:.2} | {:.2} | {:.3} | {} | {} | {} |",
            r.name,
            r.connections,
            rps(Side::Baseline),
            rps(Side::Candidate),
            r.rps_ratio,
            p99(Side::Baseline),
            p99(Side::Candidate),
            r.p99_ratio,
            x_echo,
            if r.checks_pass { "pass" } else { "FAIL" },
            per_round.join("; "),
        );
    }
    let extras = extra_table(rows);
    if !extras.is_empty() {
        let _ = write!(s, "\n{extras}");
    }
    s
}

/// The scenarios' own figures (broker messages per request, ...), median per build.
fn extra_table(rows: &[Comparison]) -> String {
    let mut s = String::new();
    for r in rows {
        let keys: std::collections::BTreeSet<&String> = r
            .baseline
            .iter()
            .chain(&r.candidate)
            .flat_map(|m| m.extra.keys())
            .collect();
        for key in keys {
            let of = |side| r.median_of(side, |m| m.extra.get(key).copied());
            let _ = writeln!(
                s,
                "| `{}` | {} | {:.4} | {:.4} |",
                r.name,
                key,
                of(Side::Baseline),
                of(Side::Candidate)
            );
        }
    }
    if s.is_empty() {
        return s;
    }
    format!(
        "| scenario | figure (median) | baseline | candidate |\n| --- | --- | ---: | ---: |\n{s}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str, rps: f64, p99_ms: f64, passed: bool) -> ScenarioReport {
        let mut r = ScenarioReport::new(
            name,
            "",
            64,
            vec![RunFigures {
                rps,
                p99_ms,
                ..RunFigures::default()
            }],
        );
        r.checks.push(Check {
            name: "rows == 200s".into(),
            passed,
            detail: String::new(),
        });
        r.extra
            .insert("broker_messages_per_request".into(), serde_json::json!(0.3));
        r
    }

    #[test]
    fn the_order_of_the_builds_swaps_every_round() {
        assert_eq!(order(0), [Side::Baseline, Side::Candidate]);
        assert_eq!(order(1), [Side::Candidate, Side::Baseline]);
        assert_eq!(order(2), [Side::Baseline, Side::Candidate]);
    }

    #[test]
    fn the_ratio_is_taken_within_each_round_so_drift_between_rounds_cancels() {
        // Arrange: the machine halves its speed in round 1; the candidate is 10 % faster
        // than the baseline in every round.
        let mut comparisons = Comparisons::default();
        for (round, machine) in [(0, 1.0), (1, 0.5)] {
            let echo = report("echo", 8_000.0 * machine, 20.0, true);
            comparisons.record(Side::Baseline, round, std::slice::from_ref(&echo));
            comparisons.record(Side::Candidate, round, &[echo]);
        }
        comparisons.record(
            Side::Baseline,
            0,
            &[report("stock-hot", 10_000.0, 8.0, true)],
        );
        comparisons.record(
            Side::Candidate,
            0,
            &[report("stock-hot", 11_000.0, 6.0, true)],
        );
        comparisons.record(
            Side::Candidate,
            1,
            &[report("stock-hot", 5_500.0, 12.0, true)],
        );
        comparisons.record(
            Side::Baseline,
            1,
            &[report("stock-hot", 5_000.0, 16.0, true)],
        );

        // Act
        let rows = comparisons.finish();

        // Assert
        let hot = &rows[1];
        assert_eq!(hot.name, "stock-hot");
        assert!((hot.rps_ratio - 1.1).abs() < 1e-9, "{}", hot.rps_ratio);
        assert!((hot.p99_ratio - 0.75).abs() < 1e-9, "{}", hot.p99_ratio);
        assert!(hot.checks_pass);
        // Against each round's own echo: 1.25 and 1.25 for the baseline, 1.375 for the
        // candidate.
        assert_eq!(hot.median_of(Side::Baseline, |m| m.ratio_to_echo), 1.25);
        assert_eq!(hot.median_of(Side::Candidate, |m| m.ratio_to_echo), 1.375);
        let printed = table(&rows, 2);
        assert!(printed.contains("**1.100**"), "{printed}");
        assert!(printed.contains("1.25 / 1.38"), "{printed}");
        assert!(printed.contains("10000 / 11000; 5000 / 5500"), "{printed}");
        assert!(printed.contains("broker_messages_per_request"), "{printed}");
    }

    #[test]
    fn one_failed_check_on_either_side_fails_the_row() {
        let mut comparisons = Comparisons::default();
        comparisons.record(
            Side::Baseline,
            0,
            &[report("stock-rpc", 7_000.0, 15.0, true)],
        );
        comparisons.record(
            Side::Candidate,
            0,
            &[report("stock-rpc", 7_500.0, 14.0, false)],
        );

        let rows = comparisons.finish();

        assert!(!rows[0].checks_pass);
        assert!(table(&rows, 1).contains("FAIL"));
    }

    #[test]
    fn a_round_only_one_build_finished_gives_no_ratio() {
        let mut comparisons = Comparisons::default();
        comparisons.record(Side::Baseline, 0, &[report("stats", 30_000.0, 5.0, true)]);

        let rows = comparisons.finish();

        assert!(rows[0].rps_ratio.is_nan());
    }
}
