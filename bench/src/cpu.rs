//! CPU time per request, by process, over one measured run.
//!
//! On the shared 2-core machine requests/s drift by 10-20 % within minutes, while the CPU a
//! process spends per request drifts far less; and when the whole stack shares two cores, a
//! change that frees CPU in one process can show up as throughput, as idle time or as another
//! process's gain. So every measured wrk run records what each part of the stack spent on it:
//! the services, PostgreSQL's processes, RabbitMQ's Erlang VM, wrk, and the harness itself.
//!
//! Read from `/proc` (user + system time) at the start and end of the run. wrk starts and
//! exits inside the run, so its time is the harness's reaped children's time
//! (`cutime + cstime` of `/proc/self/stat`): wrk is the only child that exits during a run.
//! The machine's idle time is not reported: a draining run ends with up to two idle seconds
//! that would count against it.

use std::collections::BTreeMap;

/// The processes counted, by their `comm` name, and the name they are reported under. wrk
/// is not among them: it is counted from the harness's reaped children (see above).
const COUNTED: [(&str, &str); 5] = [
    ("api_service", "api_service"),
    ("quote_service", "quote_service"),
    ("fake_stooq", "fake_stooq"),
    ("postgres", "postgresql"),
    ("beam.smp", "rabbitmq"),
];

/// CPU ticks spent so far, per process.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// (pid, reported name) -> user + system ticks.
    processes: BTreeMap<(u32, &'static str), u64>,
    /// The harness's own ticks, and its reaped children's (wrk).
    harness: u64,
    children: u64,
}

impl Snapshot {
    /// Reads every counted process's CPU time now. Processes that vanish while being read
    /// are skipped.
    pub fn take() -> Self {
        let mut snapshot = Self::default();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return snapshot;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some((comm, times)) = parse_stat(&stat) else {
                continue;
            };
            if let Some((_, name)) = COUNTED.iter().find(|(c, _)| *c == comm) {
                snapshot.processes.insert((pid, name), times.own);
            }
        }
        if let Some((_, times)) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .as_deref()
            .and_then(parse_stat)
        {
            snapshot.harness = times.own;
            snapshot.children = times.children;
        }
        snapshot
    }

    /// Microseconds of CPU per request between `self` and `later`, per reported name, wrk's
    /// from the reaped children's time. A process that started during the run
    /// counts from zero; one that ended during it is missing from `later` and not counted.
    pub fn per_request(&self, later: &Snapshot, requests: u64) -> BTreeMap<String, f64> {
        let us_per_tick = 1e6 / ticks_per_second();
        let per = |ticks: u64| ticks as f64 * us_per_tick / requests.max(1) as f64;
        let mut spent: BTreeMap<String, u64> = BTreeMap::new();
        for (&(pid, name), &after) in &later.processes {
            let before = self.processes.get(&(pid, name)).copied().unwrap_or(0);
            *spent.entry(name.to_owned()).or_default() += after.saturating_sub(before);
        }
        spent.insert(
            "wrk".to_owned(),
            later.children.saturating_sub(self.children),
        );
        spent.insert(
            "bench".to_owned(),
            later.harness.saturating_sub(self.harness),
        );
        spent.into_iter().map(|(k, v)| (k, per(v))).collect()
    }
}

/// User + system ticks of a process itself and of its reaped children.
struct Times {
    own: u64,
    children: u64,
}

/// `comm` and the times of a `/proc/<pid>/stat` line. `comm` may hold spaces and
/// parentheses, so the fields are counted from its last `)`.
fn parse_stat(stat: &str) -> Option<(&str, Times)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    // After ") ": state is field 3 of proc(5), so utime (14) is index 11 here.
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    Some((
        comm,
        Times {
            own: field(11)? + field(12)?,
            children: field(13)? + field(14)?,
        },
    ))
}

/// The kernel's clock ticks per second (`USER_HZ`): 100 on every architecture Linux runs
/// this on, asked of `getconf` once in case it is not.
fn ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t: &f64| *t > 0.0)
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_name_and_times_even_with_parentheses_in_the_name() {
        let line = "4242 (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 7 3 20 0 4 0 1000 123456 789";

        let (comm, times) = parse_stat(line).unwrap();

        assert_eq!(comm, "odd) name");
        assert_eq!(times.own, 300);
        assert_eq!(times.children, 10);
    }

    #[test]
    fn time_per_request_is_what_each_process_spent_between_the_snapshots() {
        // Arrange: two API processes, a postgres backend that started during the run, and
        // wrk reaped during it.
        let before = Snapshot {
            processes: BTreeMap::from([((1, "api_service"), 100), ((2, "api_service"), 50)]),
            harness: 10,
            children: 0,
        };
        let after = Snapshot {
            processes: BTreeMap::from([
                ((1, "api_service"), 300),
                ((2, "api_service"), 50),
                ((3, "postgresql"), 100),
            ]),
            harness: 20,
            children: 50,
        };

        // Act: 1,000 requests.
        let per = before.per_request(&after, 1_000);

        // Assert: at 100 ticks/s a tick is 10 ms, so 200 ticks over 1,000 requests is 2 ms.
        let us = |name: &str| per[name] * ticks_per_second() / 100.0;
        assert_eq!(us("api_service"), 2_000.0);
        assert_eq!(us("postgresql"), 1_000.0);
        assert_eq!(us("wrk"), 500.0);
        assert_eq!(us("bench"), 100.0);
    }

    #[test]
    fn a_reaped_child_counts_as_wrk_time() {
        // Arrange
        let before = Snapshot::take();

        // Act: a child that burns a few hundred milliseconds of CPU, as wrk does, and exits.
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .status()
            .expect("sh runs");
        let after = Snapshot::take();

        // Assert
        assert!(status.success());
        let per = before.per_request(&after, 1);
        assert!(per["wrk"] >= 10_000.0, "{per:?}");
    }
}
