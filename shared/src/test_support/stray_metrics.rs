//! Catches metrics recorded or described through the process-global recorder.
//!
//! Both services record on a recorder each application owns (tests run many applications in
//! one process), and no global recorder is installed. A `metrics::counter!` or
//! `describe_counter!` reached outside that local recorder therefore goes nowhere: the value
//! is never exported. A test installs this trap, exercises the application, and asserts that
//! [`names`] stayed empty.

use std::sync::{Mutex, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
static INSTALLED: OnceLock<bool> = OnceLock::new();

struct Trap;

fn note(name: &str) {
    let mut seen = SEEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if !seen.iter().any(|n| n == name) {
        seen.push(name.to_owned());
    }
}

impl Recorder for Trap {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        note(key.as_str());
    }

    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        note(key.as_str());
    }

    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        note(key.as_str());
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        note(key.name());
        Counter::noop()
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        note(key.name());
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        note(key.name());
        Histogram::noop()
    }
}

/// Installs the trap as the global recorder, once per process. Panics if another global
/// recorder was installed first: then strays would be exported after all, and this check
/// would mean nothing.
pub fn install() {
    let installed = INSTALLED.get_or_init(|| metrics::set_global_recorder(Trap).is_ok());
    assert!(
        *installed,
        "another global metrics recorder was installed first"
    );
}

/// Names of the metrics recorded or described globally since [`install`].
pub fn names() -> Vec<String> {
    SEEN.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// Asserts that nothing was recorded or described where no exporter sees it (needs
/// [`install`] first).
pub fn assert_none() {
    assert_eq!(
        names(),
        Vec::<String>::new(),
        "recorded where /metrics never shows them"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_recorded_without_a_local_recorder_is_caught() {
        install();

        metrics::counter!("stray_requests_total").increment(1);
        // Stands in for an application's own recorder.
        let local = metrics::NoopRecorder;
        metrics::with_local_recorder(&local, || {
            metrics::counter!("local_requests_total").increment(1);
        });

        let names = names();
        assert!(
            names.contains(&"stray_requests_total".to_owned()),
            "{names:?}"
        );
        assert!(
            !names.contains(&"local_requests_total".to_owned()),
            "{names:?}"
        );
    }
}
