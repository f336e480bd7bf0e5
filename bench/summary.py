#!/usr/bin/env python3
"""Summary of a benchmark run: one markdown table of every figure the
scripts recorded (bench/results.py), each with its target and a mark —
"pass", "short", or "—" for a figure without a target (or one not
measured) — then the counts and a list of the shortfalls.

Usage: bench/summary.py PATH    (PATH: the JSON lines of PITHEAD_BENCH_OUT;
                                 bench/run keeps a copy in target/bench-results.jsonl)

The exit status is 0 even when a figure is short: the table is the report.
It is 1 only when PATH cannot be read.
"""

import argparse
import json
import sys

MARK = {True: "pass", False: "short", None: "—"}


def number(v):
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 1000):
        return f"{v:,.0f}".replace(",", " ")
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}".replace(",", " ")
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def value_cell(r):
    v, unit, note = r.get("value"), r.get("unit") or "", r.get("note") or ""
    if v is None:
        return note or "not measured"
    text = v if isinstance(v, str) else number(v)
    if unit:
        text += unit if unit in ("×", "%") else f" {unit}"
    return f"{text} ({note})" if note else text


def cell(s):
    return str(s).replace("|", "\\|").replace("\n", " ")


def load(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                print(f"{path}:{i}: not JSON ({e}); skipped", file=sys.stderr)
                continue
            if r.get("value") is None:
                r["ok"] = None
            rows.append(r)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path")
    a = ap.parse_args()
    try:
        rows = load(a.path)
    except OSError as e:
        sys.exit(f"cannot read the results: {e}")
    print("\nsummary: every figure of this run")
    print("| group | figure | value | target | mark |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {cell(r.get('group', '?'))} | {cell(r.get('figure', '?'))} | {cell(value_cell(r))} | "
              f"{cell(r.get('target') or '—')} | {MARK[r.get('ok')]} |")
    passed = [r for r in rows if r.get("ok") is True]
    short = [r for r in rows if r.get("ok") is False]
    free = [r for r in rows if r.get("ok") is None and not r.get("target")]
    unmeasured = [r for r in rows if r.get("ok") is None and r.get("target")]
    line = f"\n{len(rows)} figures: {len(passed)} pass, {len(short)} short, {len(free)} without a target"
    if unmeasured:
        line += f", {len(unmeasured)} with a target but no mark"
    print(line)
    if short:
        print("\nShort of the target:")
        for r in short:
            print(f"- {r.get('group')}: {r.get('figure')}: {value_cell(r)}; target {r.get('target')}")
    if unmeasured:
        print("\nWith a target but no mark (not measured, or not known):")
        for r in unmeasured:
            print(f"- {r.get('group')}: {r.get('figure')}: {value_cell(r)}; target {r.get('target')}")


if __name__ == "__main__":
    main()
