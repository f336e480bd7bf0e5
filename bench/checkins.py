#!/usr/bin/env python3
"""Check-in throughput and latency: wrk with 64 connections posting
check-ins and check-outs of 10 000 badges to the release daemon; every
answer (201, or 409 for a repeat) comes after a durable commit with its
outbox row. The baseline is one connection, where every commit waits for
its own fsync; with 64 the writer's group commit shares them. Both run in
the same invocation. The daemon is then killed with SIGKILL and the
database counted: every answered check-in must be there.

Usage: bench/checkins.py [--seconds 20] [--bin PATH]   (needs wrk: apt-get install wrk)

Targets (BENCHMARKS.md), at 64 connections: at least 5000 check-ins/s with
p99 at most 20 ms; and every answered check-in stored after the SIGKILL.
The figures also go to the summary table (bench/results.py), with the
group-commit ratio (64 connections / 1) as a figure.
"""

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from acquisition import free_port, wait_port  # noqa: E402
from results import record  # noqa: E402


def run(binary, seconds, connections):
    http = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        roster = os.path.join(tmp, "roster.csv")
        with open(roster, "w") as f:
            f.write("badge,name,team,role\n")
            for i in range(10000):
                f.write(f"{i:04d},工人{i},一队,工\n")
        cfg = os.path.join(tmp, "pithead.toml")
        with open(cfg, "w") as f:
            f.write(f"""[station]\ncounty = "bench"\nid = "bench"\nname = "bench"
[storage]\ndata_dir = "{tmp}/data"
[http]\nlisten = "127.0.0.1:{http}"
[log]\nlevel = "warn"
[outputs]\nbackend = "sim"\nself_test = false
[roster]\nfile = "{roster}"
""")
        daemon = subprocess.Popen([binary, "run", "--config", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(http)
            out = subprocess.run(
                ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
                 os.path.join(os.path.dirname(__file__), "checkin.lua"), f"http://127.0.0.1:{http}"],
                capture_output=True, text=True, check=True).stdout
        finally:
            daemon.kill()
            daemon.wait()
        figures = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in ("p50_ms", "p99_ms", "max_ms", "requests", "seconds", "errors"):
                figures[parts[0]] = float(parts[1])
        # After SIGKILL: every answered check-in is on disk.
        db = sqlite3.connect(os.path.join(tmp, "data", "pithead.db"))
        stored = db.execute("SELECT count(*) FROM checkins").fetchone()[0]
        outbox = db.execute("SELECT count(*) FROM outbox WHERE kind = 'checkin'").fetchone()[0]
        figures["stored"] = stored
        figures["outbox"] = outbox
        figures["per_s"] = figures["requests"] / figures["seconds"]
        return figures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "pithead"))
    a = ap.parse_args()
    rows = [(c, run(a.bin, a.seconds, c)) for c in (64, 1)]
    print(f"\ncheck-ins, {a.seconds} s each, wrk")
    print("| connections | check-ins/s | p50 ms | p99 ms | max ms | answered | stored after SIGKILL | outbox rows | target |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for c, f in rows:
        target = ""
        if c == 64:
            ok = f["per_s"] >= 5000 and f["p99_ms"] <= 20
            target = f"≥ 5000/s, p99 ≤ 20 ms: {'pass' if ok else 'SHORT'}"
        print(f"| {c} | {f['per_s']:.0f} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} | {f['max_ms']:.2f} | "
              f"{f['requests']:.0f} | {f['stored']} | {f['outbox']} | {target} |")
    ratio = rows[0][1]["per_s"] / rows[1][1]["per_s"]
    print(f"\n64 connections (group commit shares each fsync) / 1 connection: {ratio:.1f}x the throughput")
    g, f = "check-ins", rows[0][1]
    record(g, "throughput, 64 connections", f["per_s"], "check-ins/s", target="≥ 5 000/s", ok=f["per_s"] >= 5000,
           note=f"durable (synchronous=FULL), {a.seconds} s")
    record(g, "p99, 64 connections", f["p99_ms"], "ms", target="≤ 20 ms", ok=f["p99_ms"] <= 20)
    for c, f in rows:
        record(g, f"stored after SIGKILL / answered, {c} connection{'s' if c > 1 else ''}",
               f"{f['stored']} / {f['requests']:.0f}", "", target="every answered one",
               ok=f["stored"] >= f["requests"])
    record(g, "group commit: check-ins/s at 64 connections / 1", ratio, "×",
           note=f"1 connection: {rows[1][1]['per_s']:.0f}/s, same run")


if __name__ == "__main__":
    main()
