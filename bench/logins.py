#!/usr/bin/env python3
"""A login flood against the release daemon (issue 15, item 2): 64 wrong
passwords at once from 8 client addresses (127.0.3.1-8, each its own
limit), while a kiosk reads /api/v1/channels every 10 ms. The daemon's
RSS is sampled every 5 ms. The same kiosk reads are first timed with no
flood, in the same run, so the p99 ratio shows what the flood costs.

Usage: bench/logins.py [--bin PATH] [--rounds 3]

Targets (BENCHMARKS.md): peak RSS during the flood at most 64 MiB; the
kiosk's /api/v1/channels p99 at most 100 ms meanwhile; no address had more
than 5 passwords checked. The figures also go to the summary table
(bench/results.py).
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from acquisition import free_port, wait_port  # noqa: E402
from results import record  # noqa: E402

PASSWORD = "井口安全第一 2026"


def request(port, method, path, body=b"", source="127.0.0.1", timeout=30):
    """One HTTP/1.1 request from `source`; returns the status."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as s:
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        s.sendall(head + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def kiosk_reads(port, stop, out):
    while not stop.is_set():
        t = time.monotonic()
        status = request(port, "GET", "/api/v1/channels")
        out.append(((time.monotonic() - t) * 1000, status))
        time.sleep(0.01)


def p99(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "pithead"))
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        cfg = os.path.join(tmp, "pithead.toml")
        with open(cfg, "w") as f:
            f.write(f"""[station]\ncounty = "bench"\nid = "bench"\nname = "bench"
[storage]\ndata_dir = "{tmp}/data"
[http]\nlisten = "127.0.0.1:{port}"
[log]\nlevel = "warn"
[outputs]\nbackend = "sim"\nself_test = false
""")
        subprocess.run([a.bin, "user", "add", "王班长", "--config", cfg], input=PASSWORD + "\n", text=True,
                       check=True, capture_output=True)
        daemon = subprocess.Popen([a.bin, "run", "--config", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            time.sleep(0.5)
            base_rss = rss_kib(daemon.pid)
            # The kiosk alone.
            quiet = []
            stop = threading.Event()
            t = threading.Thread(target=kiosk_reads, args=(port, stop, quiet))
            t.start()
            time.sleep(3)
            stop.set()
            t.join()
            peak, loud, per_address, statuses = 0, [], {}, {}
            for rnd in range(a.rounds):
                stop = threading.Event()
                reads = threading.Thread(target=kiosk_reads, args=(port, stop, loud))
                sampling = True

                def sample():
                    nonlocal peak
                    while sampling:
                        peak = max(peak, rss_kib(daemon.pid))
                        time.sleep(0.005)

                sampler = threading.Thread(target=sample)
                sampler.start()
                reads.start()
                results = []

                def attempt(i, rnd=rnd):
                    # A fresh block of 8 addresses each round: the limit is per address.
                    source = f"127.0.{3 + rnd}.{1 + i % 8}"
                    body = json.dumps({"user": "王班长", "password": f"wrong password {i}"}).encode()
                    results.append((source, request(port, "POST", "/api/v1/session", body, source)))

                threads = [threading.Thread(target=attempt, args=(i,)) for i in range(64)]
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
                time.sleep(0.5)
                stop.set()
                reads.join()
                sampling = False
                sampler.join()
                for source, status in results:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 401:
                        per_address[source] = per_address.get(source, 0) + 1
            good = request(port, "POST", "/api/v1/session",
                           json.dumps({"user": "王班长", "password": PASSWORD}).encode(), "127.0.9.1")
        finally:
            daemon.kill()
            daemon.wait()
    quiet_ms = [ms for ms, s in quiet if s == 200]
    loud_ms = [ms for ms, s in loud if s == 200]
    failed_reads = sum(1 for _, s in loud if s != 200)
    most_checked = max(per_address.values(), default=0)
    print(f"64 wrong logins from 8 addresses, {a.rounds} rounds: answers {dict(sorted(statuses.items()))}; "
          f"at most {most_checked} passwords checked per address; the right password afterwards: {good}")
    print(f"RSS {base_rss / 1024:.1f} MiB idle, {peak / 1024:.1f} MiB at most during the floods")
    print(f"/api/v1/channels: {len(quiet_ms)} reads alone, p50 {statistics.median(quiet_ms):.2f} ms, "
          f"p99 {p99(quiet_ms):.2f} ms; {len(loud_ms)} reads during the floods, "
          f"p50 {statistics.median(loud_ms):.2f} ms, p99 {p99(loud_ms):.2f} ms, max {max(loud_ms):.2f} ms; "
          f"{failed_reads} failed")
    ratio = p99(loud_ms) / p99(quiet_ms) if quiet_ms else float("nan")
    print(f"p99 ratio flood / alone: {ratio:.1f}")
    ok_rss = peak <= 64 * 1024
    ok_p99 = p99(loud_ms) <= 100 and failed_reads == 0
    ok_limit = most_checked <= 5 and good == 200 and set(statuses) <= {401, 429}
    record("logins", "peak RSS, 64 wrong logins at once", round(peak / 1024, 1), "MiB", target="≤ 64 MiB", ok=ok_rss)
    record("logins", "/api/v1/channels p99 during the flood", round(p99(loud_ms), 2), "ms", target="≤ 100 ms",
           ok=ok_p99, note=f"alone {p99(quiet_ms):.2f} ms")
    record("logins", "passwords checked per address (most)", most_checked, "", target="≤ 5", ok=ok_limit)
    return 0 if ok_rss and ok_p99 and ok_limit else 1


if __name__ == "__main__":
    sys.exit(main())
