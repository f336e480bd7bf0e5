#!/usr/bin/env python3
"""Store ingest: readings per second, batched as the recorder writes them,
against the same store writing one reading per transaction (the naive way),
in the same run.

`pithead-ingest-bench` (a helper in tests/, release build) opens a fresh
store and writes polls of N channels through `recorder::flush` — one bulk
transaction (`synchronous=NORMAL`, WAL) per poll, as the daemon does — for
the given time, then single readings through the same call. It checks that
the database holds every reading it wrote.

Target: at least 50 000 readings/s batched, ten times what a 5 000-channel
station polled every second produces.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from results import record  # noqa: E402

TARGET = 50_000


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "pithead-ingest-bench"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run([a.bin, os.path.join(d, "data"), str(a.channels), str(a.seconds)],
                             check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    print(f"store ingest, {a.channels} channels per poll, {a.seconds:.0f} s each")
    print("| writes | readings/s |")
    print("|---|---:|")
    print(f"| one transaction per poll of {a.channels} (the recorder) | {r['batched_per_s']:.0f} |")
    print(f"| one transaction per reading (naive) | {r['unbatched_per_s']:.0f} |")
    print(f"\nbatched / unbatched: **{r['ratio']}×**; {r['readings']} readings written, all stored")
    record("store ingest", f"readings/s, one transaction per poll of {a.channels}", r["batched_per_s"], "readings/s",
           target=f"≥ {TARGET:,}".replace(",", " "), ok=r["batched_per_s"] >= TARGET)
    record("store ingest", "readings/s, one transaction per reading (naive)", r["unbatched_per_s"], "readings/s")
    record("store ingest", "batched / naive", r["ratio"], "×")


if __name__ == "__main__":
    main()
