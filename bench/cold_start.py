#!/usr/bin/env python3
"""Cold start to first poll: from spawning `pithead run` to the first Modbus
request the simulator sees, over --trials starts with a fresh data directory
each time; then a check that the short poll gave good readings.

Usage: bench/cold_start.py [--bin PATH] [--runner "qemu-aarch64 -L /usr/aarch64-linux-gnu"]
                           [--channels 200] [--trials 10]

With --runner the daemon and the simulator both run under it (qemu-user
for a Raspberry Pi binary), so the figure includes the emulator's own
start-up: an upper bound for a real Pi 4, whose cores are faster than
emulated ones on this machine.

Target (BENCHMARKS.md): native median under 200 ms, and every channel good
after the short poll. The figures also go to the summary table
(bench/results.py); under --runner the median is a figure only.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from acquisition import config, control, free_port, wait_port  # noqa: E402
from results import record  # noqa: E402

TARGET_MS = 200


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "pithead"))
    ap.add_argument("--runner", default="")
    ap.add_argument("--channels", type=int, default=200)
    ap.add_argument("--trials", type=int, default=10)
    a = ap.parse_args()
    cmd = shlex.split(a.runner) + [a.bin]
    env = {**os.environ, "RUST_LOG": "warn"}
    modbus, ctl = free_port(), free_port()
    units = (a.channels + 99) // 100
    sim = subprocess.Popen(cmd + ["simulate", "--listen", f"127.0.0.1:{modbus}", "--control", f"127.0.0.1:{ctl}",
                                  "--bulk-units", str(units), "--bulk-registers", "100"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    times, ok = [], None
    try:
        wait_port(modbus, timeout=60)
        wait_port(ctl, timeout=60)
        for trial in range(a.trials):
            http = free_port()
            with tempfile.TemporaryDirectory() as tmp:
                cfg = os.path.join(tmp, "pithead.toml")
                with open(cfg, "w") as f:
                    f.write(config(a.channels, os.path.join(tmp, "data"), http, modbus, True))
                before = control(ctl, "requests 10")
                t0 = time.monotonic()
                d = subprocess.Popen(cmd + ["run", "--config", cfg], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=env)
                try:
                    while control(ctl, "requests 10") == before:
                        if d.poll() is not None:
                            sys.exit(f"the daemon exited with {d.returncode} before polling")
                        if time.monotonic() - t0 > 60:
                            sys.exit("the daemon never polled")
                        time.sleep(0.001)
                    times.append((time.monotonic() - t0) * 1000)
                    if trial == a.trials - 1:
                        # The short poll: every channel read and good.
                        wait_port(http, timeout=60)
                        end = time.monotonic() + 30
                        while time.monotonic() < end:
                            chans = json.loads(urllib.request.urlopen(
                                f"http://127.0.0.1:{http}/api/v1/channels", timeout=10).read())
                            ok = sum(1 for c in chans if c.get("state") == "ok")
                            if ok == a.channels:
                                break
                            time.sleep(0.5)
                finally:
                    d.terminate()
                    d.wait(timeout=60)
    finally:
        sim.terminate()
        sim.wait(timeout=60)
    where = a.runner or "native"
    print(f"\ncold start to first poll, {a.channels} channels, {a.trials} starts, {where}")
    print("| runner | median ms | min ms | max ms | channels ok after the short poll |")
    print("|---|---:|---:|---:|---:|")
    median = statistics.median(times)
    print(f"| {where} | {median:.1f} | {min(times):.1f} | {max(times):.1f} | {ok}/{a.channels} |")
    native = not a.runner
    record("cold start", f"cold start to first poll, median, {where}", median, "ms",
           target=f"< {TARGET_MS} ms" if native else None, ok=median < TARGET_MS if native else None,
           note=f"{a.trials} starts, {a.channels} channels, fresh data directory; "
                f"min {min(times):.1f} ms, max {max(times):.1f} ms")
    record("cold start", f"channels good after the short poll, {where}", f"{ok}/{a.channels}", "",
           target="all", ok=ok == a.channels)
    if ok != a.channels:
        sys.exit("not every channel was read")


if __name__ == "__main__":
    main()
