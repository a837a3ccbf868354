//! Drives HTTP load with wrk: generates the Lua script, runs wrk and reads back one JSON line.
//!
//! wrk runs one Lua state per thread, so per-thread counters (exact count of 200s, non-2xx,
//! requests sent) are kept as thread globals and summed in `done()` through the thread
//! objects collected in `setup()` — the documented way to aggregate across wrk threads.
//!
//! wrk itself stops by cutting off whatever is in flight, so the server may complete requests
//! nobody saw answered. With [`Load::drain`] the script drains instead: after `duration` its
//! `delay()` holds every connection idle once its answer is in (wrk calls `delay()` before
//! each request when the script defines it), so the requests in flight finish and no new one
//! starts; wrk runs on for the drain window. Requests/s are then counted over `duration` only
//! (responses completed before it ended, timed with a monotonic clock through LuaJIT's FFI),
//! and `sent == requests` says nothing was cut off, which makes "one history row per 200"
//! checkable exactly.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// What to send. Request `n` of a thread goes to target `n % targets.len()` with token
/// `(n + n / targets.len()) % tokens.len()`, so consecutive requests hit different targets
/// and every user meets every target.
#[derive(Debug, Clone)]
pub struct Plan {
    pub method: &'static str,
    /// Path and query, e.g. `/api/v1/stock?q=aapl.us`.
    pub targets: Vec<String>,
    /// Bearer tokens to rotate through; empty sends no `Authorization`.
    pub tokens: Vec<String>,
    /// JSON bodies rotated with the request counter (login); empty sends none.
    pub bodies: Vec<String>,
    /// Pause each connection this long after every response (wrk's `delay()`), to offer a
    /// paced load below saturation instead of as many requests as the server can take.
    pub pause_ms: Option<f64>,
}

/// One wrk run, as printed by the generated `done()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WrkResult {
    /// Completed responses (any status).
    pub requests: u64,
    pub duration_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Exactly the responses with status 200.
    pub ok: u64,
    /// Responses outside 2xx.
    pub non2xx: u64,
    /// Requests handed to the socket (`request()` calls); `sent - requests` were still in
    /// flight when wrk stopped, and the server may have completed them anyway.
    pub sent: u64,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    /// Count per HTTP status.
    pub statuses: std::collections::BTreeMap<String, u64>,
    /// Draining runs only: responses completed within the measured window (`duration`),
    /// and that window's length; throughput is counted over these.
    #[serde(default)]
    pub window_requests: Option<u64>,
    #[serde(default)]
    pub window_us: Option<f64>,
}

impl WrkResult {
    /// The measured window: the whole run, or only the part before the drain.
    pub fn duration_s(&self) -> f64 {
        self.window_us.unwrap_or(self.duration_us) / 1e6
    }

    /// Responses per second over the measured window (a drain's idle tail is not counted).
    pub fn rps(&self) -> f64 {
        let answered = self.window_requests.unwrap_or(self.requests);
        answered as f64 / self.duration_s().max(1e-9)
    }

    /// Everything that was not a clean 2xx answer.
    pub fn errors(&self) -> u64 {
        self.non2xx + self.connect_errors + self.read_errors + self.write_errors + self.timeouts
    }

    /// Requests wrk sent but never saw answered (cut off at the end of the run, or lost with
    /// a broken connection). Zero after a complete drain.
    pub fn abandoned(&self) -> u64 {
        self.sent.saturating_sub(self.requests)
    }
}

const MARKER: &str = "BENCH_JSON ";

/// A Lua string literal for `s` (escapes quotes, backslashes and control characters).
fn lua_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\{:03}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn lua_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| lua_str(s)).collect();
    format!("{{{}}}", quoted.join(",\n  "))
}

/// Held this long once draining: longer than any run, so a drained connection stays idle.
const DRAINED_MS: u64 = 3_600_000;

/// The wrk Lua script for a plan; `drain_after` turns on draining (see the module docs).
pub fn script(plan: &Plan, drain_after: Option<Duration>) -> String {
    assert!(!plan.targets.is_empty(), "a plan needs at least one target");
    let pause_ms = plan.pause_ms.map(|ms| ms.max(0.0).round() as u64);
    format!(
        r#"-- Generated by the bench harness; see bench/src/wrk.rs.
{clock}local method = {method}
local targets = {targets}
local tokens = {tokens}
local bodies = {bodies}
local threads = {{}}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  -- Threads start far apart in the rotation, so they do not ask for the same target at once.
  n = math.floor(((tid or 1) - 1) * 0.6180339887 * #targets * math.max(#tokens, 1))
  -- wrk generates one request on the first thread's state to check the script before the
  -- run (script_verify_request) and never sends it: not a request sent.
  sent = 0
  if tid == 1 then
    sent = -1
  end
  ok = 0
  non2xx = 0
  statuses = {{}}
{init_window}end

function request()
  n = n + 1
  sent = sent + 1
  local headers = {{}}
  local target
  -- The target changes on every request (so a cold set really misses); the token shifts
  -- once per pass over the targets, so every user meets every target.
  target = targets[(n % #targets) + 1]
  if #tokens > 0 then
    headers["Authorization"] = "Bearer " .. tokens[((n + math.floor(n / #targets)) % #tokens) + 1]
  end
  local body = nil
  if #bodies > 0 then
    body = bodies[(n % #bodies) + 1]
    headers["Content-Type"] = "application/json"
  end
  return wrk.format(method, target, headers, body)
end

{delay}
function response(status, headers, body)
{count_window}  if status == 200 then
    ok = ok + 1
  end
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local t_ok, t_non2xx, t_sent, t_window = 0, 0, 0, 0
  local merged = {{}}
  for _, t in ipairs(threads) do
    t_window = t_window + (t:get("window_requests") or 0)
    t_ok = t_ok + t:get("ok")
    t_non2xx = t_non2xx + t:get("non2xx")
    t_sent = t_sent + t:get("sent")
    for k, v in pairs(t:get("statuses")) do
      merged[k] = (merged[k] or 0) + v
    end
  end
  local parts = {{}}
  for k, v in pairs(merged) do
    parts[#parts + 1] = string.format('"%s":%d', k, v)
  end
  local e = summary.errors
  io.write(string.format(
    '{marker}{{"requests":%d,"duration_us":%.0f,"p50_us":%.1f,"p99_us":%.1f,"max_us":%.1f,' ..
    '"ok":%d,"non2xx":%d,"sent":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"timeouts":%d,"statuses":{{%s}}{window}}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, t_ok, t_non2xx, t_sent, e.connect, e.read, e.write, e.timeout,
    table.concat(parts, ","){window_args}))
end
"#,
        method = lua_str(plan.method),
        targets = lua_list(&plan.targets),
        tokens = lua_list(&plan.tokens),
        bodies = lua_list(&plan.bodies),
        marker = MARKER,
        clock = if drain_after.is_some() { LUA_CLOCK } else { "" },
        init_window = if drain_after.is_some() {
            "  window_requests = 0\n  started_ms = now_ms()\n"
        } else {
            ""
        },
        count_window = match drain_after {
            Some(window) => format!(
                "  if now_ms() - started_ms < {} then\n    window_requests = window_requests + 1\n  end\n",
                window.as_millis()
            ),
            None => String::new(),
        },
        window = if drain_after.is_some() {
            r#","window_requests":%d,"window_us":%.0f"#
        } else {
            ""
        },
        window_args = drain_after
            .map(|window| format!(", t_window, {}", window.as_micros()))
            .unwrap_or_default(),
        delay = match (drain_after, pause_ms) {
            (Some(window), pause) => format!(
                "function delay()\n  if now_ms() - started_ms >= {} then\n    return {DRAINED_MS}\n  end\n  return {}\nend\n",
                window.as_millis(),
                pause.unwrap_or(0)
            ),
            (None, Some(pause)) => format!("function delay()\n  return {pause}\nend\n"),
            (None, None) => String::new(),
        },
    )
}

/// A monotonic millisecond clock for the script (wrk's Lua is LuaJIT, whose FFI reaches
/// `clock_gettime`; `os.time()` has whole seconds only). 1 is `CLOCK_MONOTONIC` on Linux.
const LUA_CLOCK: &str = r#"local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local clock_buf = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, clock_buf)
  return tonumber(clock_buf.tv_sec) * 1000 + tonumber(clock_buf.tv_nsec) / 1e6
end
"#;

/// How one wrk invocation is shaped.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub threads: usize,
    pub connections: usize,
    pub duration: Duration,
    /// A response slower than this is counted as a timeout by wrk.
    pub timeout: Duration,
    /// Drain for this long after `duration` instead of cutting requests off (see the module
    /// docs); `None` stops the wrk way. A request still unanswered when the drain ends is cut
    /// off all the same and shows as unanswered (`sent > requests`).
    pub drain: Option<Duration>,
}

/// Runs wrk once against `base_url` with the plan's script (written into `work_dir`).
pub async fn run(base_url: &str, plan: &Plan, load: Load, work_dir: &Path) -> Result<WrkResult> {
    let script_path = work_dir.join(format!("wrk-{}.lua", uuid::Uuid::new_v4().simple()));
    tokio::fs::write(
        &script_path,
        script(plan, load.drain.map(|_| load.duration)),
    )
    .await?;
    // wrk takes whole seconds; a drain runs on past `duration`.
    let total = load.duration + load.drain.unwrap_or_default();
    let secs = total.as_secs_f64().ceil().max(1.0) as u64;
    let timeout = load.timeout.as_secs().max(1);
    let threads = load.threads.clamp(1, load.connections.max(1));
    let output = tokio::process::Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{secs}s"))
        .arg(format!("--timeout={timeout}s"))
        .arg("-s")
        .arg(&script_path)
        .arg(base_url)
        // An interrupted bench must not leave wrk hammering a stack that is gone.
        .kill_on_drop(true)
        .output()
        .await
        .context("running wrk (install it: apt-get install -y wrk)")?;
    let _ = tokio::fs::remove_file(&script_path).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_output(&stdout)
}

fn parse_output(stdout: &str) -> Result<WrkResult> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(MARKER))
        .with_context(|| format!("wrk printed no {MARKER}line:\n{stdout}"))?;
    serde_json::from_str(line).with_context(|| format!("parsing wrk summary {line}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lua_strings_are_escaped() {
        assert_eq!(lua_str(r#"{"a":"b\c"}"#), r#""{\"a\":\"b\\c\"}""#);
        assert_eq!(lua_str("a\nb"), "\"a\\010b\"");
    }

    #[test]
    fn parses_the_done_line() {
        let out = "Running 1s test\nBENCH_JSON {\"requests\":10,\"duration_us\":1000000,\"p50_us\":1.5,\
            \"p99_us\":3.0,\"max_us\":4.0,\"ok\":9,\"non2xx\":1,\"sent\":12,\"connect_errors\":0,\
            \"read_errors\":0,\"write_errors\":0,\"timeouts\":0,\"statuses\":{\"200\":9,\"502\":1}}\n";
        let r = parse_output(out).unwrap();
        assert_eq!((r.requests, r.ok, r.errors(), r.abandoned()), (10, 9, 1, 2));
        assert_eq!(r.rps(), 10.0);
        assert_eq!(r.statuses["502"], 1);
    }

    #[test]
    fn script_embeds_every_target_and_token() {
        let s = script(&plan(None), None);
        assert!(!s.contains("function delay()"));
        assert!(!s.contains("ffi"), "no clock needed without a drain");
        assert!(s.contains("\"/a\"") && s.contains("\"/b\"") && s.contains("\"t1\""));
        assert!(s.contains("function done("));
    }

    fn plan(pause_ms: Option<f64>) -> Plan {
        Plan {
            method: "GET",
            targets: vec!["/a".into(), "/b".into()],
            tokens: vec!["t1".into()],
            bodies: vec![],
            pause_ms,
        }
    }

    #[test]
    fn a_draining_script_holds_connections_after_the_window_and_counts_inside_it() {
        let s = script(&plan(Some(3.0)), Some(Duration::from_millis(2500)));

        assert!(s.contains("function delay()"));
        assert!(s.contains("if now_ms() - started_ms >= 2500 then"));
        assert!(s.contains(&format!("return {DRAINED_MS}")));
        // The pacing pause still applies inside the window.
        assert!(s.contains("  return 3\nend"));
        assert!(s.contains("if now_ms() - started_ms < 2500 then"));
        assert!(s.contains("\"window_us\":%.0f") && s.contains(", t_window, 2500000"));
    }

    #[test]
    fn a_drained_run_counts_throughput_over_its_window_only() {
        let out = "BENCH_JSON {\"requests\":1010,\"duration_us\":12000000,\"p50_us\":1.5,\
            \"p99_us\":3.0,\"max_us\":4.0,\"ok\":1010,\"non2xx\":0,\"sent\":1010,\"connect_errors\":0,\
            \"read_errors\":0,\"write_errors\":0,\"timeouts\":0,\"statuses\":{\"200\":1010},\
            \"window_requests\":1000,\"window_us\":10000000}\n";
        let r = parse_output(out).unwrap();
        assert_eq!(r.rps(), 100.0);
        assert_eq!(r.duration_s(), 10.0);
        assert_eq!(r.abandoned(), 0);
    }
}
