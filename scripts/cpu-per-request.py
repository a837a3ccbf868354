#!/usr/bin/env python3
"""CPU spent per committed `/stock` request, by process, while a benchmark runs.

Throughput on the shared 2-core benchmark machine drifts by 10-20 % within minutes, which hides
changes of a few percent. CPU time per request drifts much less, so BENCHMARKS.md reports it
beside requests/s for A/B comparisons.

    scripts/cpu-per-request.py sample FILE     # every second until killed: run beside `bench`
    scripts/cpu-per-request.py summary FILE [MIN_ROWS_PER_S]

`sample` records the CPU time (user + system) of api_service, quote_service, every postgres
process, RabbitMQ (beam.smp) and wrk from /proc, the machine's idle time, and the rows
inserted into PostgreSQL (the sum of pg_stat_database.tup_inserted: one history row per
200 from /stock). `summary` keeps the one-second intervals with at least MIN_ROWS_PER_S rows
(default 5,000: a saturated 64-connection run, not the 1-connection rows or the set-up) and
prints, per process, the median CPU microseconds per row; "idle" is the machine's idle
time per row (both cores).
"""
import json
import os
import statistics
import subprocess
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")
PROCESSES = {
    "api_service": "api",
    "quote_service": "quote",
    "postgres": "pg",
    "beam.smp": "rabbit",
    "wrk": "wrk",
}


def cpu_ticks():
    ticks = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = PROCESSES.get(stat[stat.index("(") + 1 : stat.rindex(")")])
        if name:
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks[name] = ticks.get(name, 0) + int(fields[11]) + int(fields[12])
    return ticks


def rows_inserted():
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc",
         "SELECT sum(tup_inserted) FROM pg_stat_database"],
        capture_output=True, text=True,
    ).stdout.strip()
    return int(out or 0)


def idle_ticks():
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[4]) + int(fields[5])


def sample(path):
    with open(path, "w") as out:
        while True:
            out.write(json.dumps([time.time(), cpu_ticks(), rows_inserted(), idle_ticks()]) + "\n")
            out.flush()
            time.sleep(1)


def summary(path, min_rows_per_s):
    # The sampler is stopped by a signal, which can cut its last line short.
    samples = []
    for line in open(path):
        try:
            samples.append(json.loads(line))
        except json.JSONDecodeError:
            break
    per_row, rates = {}, []
    for a, b in zip(samples, samples[1:]):
        seconds, rows = b[0] - a[0], b[2] - a[2]
        # Skip slow intervals and those where a process started or ended.
        if rows / seconds < min_rows_per_s or set(a[1]) != set(b[1]):
            continue
        rates.append(rows / seconds)
        for name, ticks in b[1].items():
            per_row.setdefault(name, []).append((ticks - a[1][name]) / HZ * 1e6 / rows)
        per_row.setdefault("idle", []).append((b[3] - a[3]) / HZ * 1e6 / rows)
    if not rates:
        print("no interval reached", min_rows_per_s, "rows/s")
        return
    print(f"intervals {len(rates)}, rows/s median {statistics.median(rates):.0f}")
    for name, values in sorted(per_row.items()):
        print(f"  {name:6s} {statistics.median(values):7.1f} us/row")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "sample":
        sample(sys.argv[2])
    elif len(sys.argv) >= 3 and sys.argv[1] == "summary":
        summary(sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 5000)
    else:
        sys.exit(__doc__)
