"""Benchmark figures for the summary table: each script calls `record` for
its key figures, which appends one JSON object per line to the file named
by the environment variable PITHEAD_BENCH_OUT (bench/run sets it; when it
is unset `record` does nothing, so every script also runs on its own).
bench/summary.py turns the file into one table.

    sys.path.insert(0, os.path.dirname(__file__))
    from results import record
    record("check-ins", "check-ins/s, 64 connections", 9065, "check-ins/s",
           target="≥ 5 000/s", ok=9065 >= 5000)

`target` is a human string ("≤ 16 MiB"); `ok` is True (pass), False
(short) or None (a figure without a target, or not measured). `value` is a
number, or a string for a figure that is not one ("100000 / 100000 / yes");
None or NaN means not measured, and `ok` is then None whatever was passed.
"""

import datetime
import json
import math
import os
import sys


def record(group, figure, value, unit, target=None, ok=None, note=""):
    path = os.environ.get("PITHEAD_BENCH_OUT")
    if not path:
        return
    if value is None or isinstance(value, float) and not math.isfinite(value):
        # No figure (too few samples, a binary not built): neither pass nor short.
        if value is not None or not note:
            note = f"{note}; not measured" if note else "not measured"
        value, ok = None, None
    line = {
        "group": group, "figure": figure, "value": value, "unit": unit, "target": target,
        "ok": None if ok is None else bool(ok), "note": note,
        "script": os.path.basename(sys.argv[0]),
        "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line, ensure_ascii=False) + "\n")
