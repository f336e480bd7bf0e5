#!/usr/bin/env python3
"""Binary sizes: the release pithead for this machine and, when built, for
the Raspberry Pi targets (cross/build aarch64-unknown-linux-gnu,
cross/build armv7-unknown-linux-gnueabihf), each as it would be shipped:
stripped.

Usage: bench/sizes.py [--root DIR]   (DIR: the target directory, default target/)

Each binary is copied stripped (`strip -o`, with the target's own
aarch64-linux-gnu-strip / arm-linux-gnueabihf-strip when installed) and the
copy measured. Without a strip for the architecture, the file's own size is
taken when `file` says it is stripped already (the release profile strips);
otherwise it is an upper bound, which passes if it is within the target and
is no figure if it is not.

Target (BENCHMARKS.md): at most 10 MB (10 000 000 bytes) each. A cross
binary not built is listed without a figure. The figures also go to the
summary table (bench/results.py).
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from results import record  # noqa: E402

TARGET = 10_000_000
CROSS = [
    ("aarch64-unknown-linux-gnu", "aarch64-linux-gnu-strip"),
    ("armv7-unknown-linux-gnueabihf", "arm-linux-gnueabihf-strip"),
]


def already_stripped(path):
    if not shutil.which("file"):
        return None
    out = subprocess.run(["file", "-b", path], capture_output=True, text=True).stdout
    return ", stripped" in out


def stripped_size(path, tool):
    """(bytes, how) of a stripped copy; bytes is an upper bound when how
    says "not stripped"."""
    if tool and shutil.which(tool):
        with tempfile.TemporaryDirectory() as d:
            copy = os.path.join(d, "pithead")
            r = subprocess.run([tool, "-o", copy, path], capture_output=True, text=True)
            if r.returncode == 0:
                return os.path.getsize(copy), f"{tool} -o"
    size = os.path.getsize(path)
    s = already_stripped(path)
    if s:
        return size, "already stripped (file)"
    return size, "not stripped, no strip for it: upper bound" if s is False else "file size (no `file` to check)"


def mib(n):
    return f"{n / (1 << 20):.1f} MiB"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=os.path.join(os.path.dirname(__file__), "..", "target"))
    a = ap.parse_args()
    host = f"{platform.machine()} (this machine)"
    cases = [(host, os.path.join(a.root, "release", "pithead"), "strip", "cargo build --release -p pithead")]
    cases += [(t, os.path.join(a.root, t, "release", "pithead"), tool, f"cross/build {t}") for t, tool in CROSS]
    print("\nbinary sizes, stripped")
    print("| target | file B | stripped B | how | target |")
    print("|---|---:|---:|---|---|")
    for name, path, tool, build in cases:
        figure = f"stripped binary, {name}"
        if not os.path.isfile(path):
            print(f"| {name} | — | — | not built: run {build} | ≤ 10 MB |")
            record("binary size", figure, None, "B", target="≤ 10 MB", note=f"not built: run {build}")
            continue
        size, how = stripped_size(path, tool)
        ok = size <= TARGET
        if not ok and how.startswith("not stripped"):
            ok = None
        mark = {True: "pass", False: "SHORT", None: "unknown"}[ok]
        print(f"| {name} | {os.path.getsize(path)} | {size} ({mib(size)}) | {how} | ≤ 10 MB {mark} |")
        record("binary size", figure, size, "B", target="≤ 10 MB", ok=ok, note=f"{mib(size)}; {how}")


if __name__ == "__main__":
    main()
