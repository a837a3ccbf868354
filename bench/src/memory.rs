//! Resident memory of the services, read from `/proc/<pid>/status` (Linux only).
//!
//! `VmHWM` is the peak resident set since the process started, so a fresh stack per scenario
//! makes it "the peak under this scenario". `VmRSS` sampled while idle and during each run
//! gives the idle figure and a per-run peak.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

/// One field of `/proc/<pid>/status` in KiB, e.g. `VmRSS` or `VmHWM`; `None` when the
/// process is gone or the field is missing.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, field)
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

pub fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Memory figures of one service, MiB.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceMemory {
    /// VmRSS after start-up, before any load.
    pub idle_rss_mb: f64,
    /// VmRSS just before the measured runs: after users logged in, seeding and warm-up.
    pub before_runs_rss_mb: f64,
    /// Highest VmRSS sampled during the measured runs.
    pub sampled_peak_rss_mb: f64,
    /// Highest VmRSS sampled during each measured run, in run order.
    pub run_peaks_mb: Vec<f64>,
    /// VmHWM when the scenario ended: the true peak since the process started (includes
    /// warm-up and seeding).
    pub peak_rss_mb: f64,
}

/// VmRSS of the stack's processes around the measured runs (KiB, in the order of the pids).
#[derive(Debug, Clone, Default)]
pub struct RssFigures {
    pub before_runs: Vec<u64>,
    pub peak: Vec<u64>,
    /// Each measured run's sampled maxima, in run order.
    pub run_peaks: Vec<Vec<u64>>,
}

impl RssFigures {
    pub fn before_runs(pids: &[u32]) -> Self {
        let before_runs: Vec<u64> = pids
            .iter()
            .map(|pid| status_kib(*pid, "VmRSS").unwrap_or(0))
            .collect();
        Self {
            peak: before_runs.clone(),
            before_runs,
            run_peaks: Vec::new(),
        }
    }

    /// Folds in one run's sampled maxima.
    pub fn add_run(&mut self, maxima: &[u64]) {
        for (p, m) in self.peak.iter_mut().zip(maxima) {
            *p = (*p).max(*m);
        }
        self.run_peaks.push(maxima.to_vec());
    }
}

/// Whether a service's memory held steady from the first measured run to the last: identical
/// runs should peak alike once caches and pools are warm, so growth beyond 10 % + 8 MiB of
/// the first run's peak means something keeps what it should release (as the unscraped
/// histogram samples did, ~12 MiB per 30 s run).
pub fn steady(first_mb: f64, last_mb: f64) -> bool {
    last_mb <= first_mb * 1.1 + 8.0
}

/// Samples VmRSS of some processes every `period` until stopped; returns each one's maximum.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<u64>>,
}

impl RssSampler {
    pub fn start(pids: Vec<u32>, period: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut max = vec![0u64; pids.len()];
            loop {
                for (m, pid) in max.iter_mut().zip(&pids) {
                    if let Some(kib) = status_kib(*pid, "VmRSS") {
                        *m = (*m).max(kib);
                    }
                }
                if flag.load(Ordering::Relaxed) {
                    return max;
                }
                tokio::time::sleep(period).await;
            }
        });
        Self { stop, task }
    }

    /// Stops sampling and returns the maxima in KiB, in the order the pids were given.
    pub async fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_allows_noise_but_not_growth_run_after_run() {
        assert!(steady(47.0, 47.0));
        assert!(steady(47.0, 40.0), "shrinking is fine");
        assert!(steady(47.0, 55.0), "within 10 % + 8 MiB");
        assert!(
            !steady(55.0, 75.0),
            "the histogram leak: +20 MiB over two runs"
        );
    }

    #[test]
    fn parses_status_fields() {
        let status = "Name:\tx\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(20480));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(10240));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(status_kib(pid, "VmRSS").unwrap() > 0);
        assert!(status_kib(pid, "VmHWM").unwrap() >= status_kib(pid, "VmRSS").unwrap() / 2);
    }
}
