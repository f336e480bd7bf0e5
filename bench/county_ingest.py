#!/usr/bin/env python3
"""County ingest: a backlog of station messages into PostgreSQL.

A private PostgreSQL (Debian's initdb/pg_ctl, fsync on, as a county would
run it) and Mosquitto (max_inflight_messages 1000, unlimited queue). K
`pithead-county` instances (K = 1, 2, 3) join the shared subscription and
stop, so the broker queues for their sessions; `pithead-county-load`
publishes the backlog — STATIONS simulated stations × PER check-in
messages, valid envelopes numbered in their lanes, interleaved — and waits
for every PUBACK; then the instances start again and drain it. The rate is
messages over the time from the first row stored to the last (PostgreSQL's
`received_at`), and the check is that exactly the backlog is stored, once.

Target: at least 20 000 messages/s with one instance on a 2-core machine.
Two cores limit scaling: the broker, PostgreSQL and every instance share
them, so more instances show what the broker and database cost, not more
cores.
"""

import argparse
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from results import record  # noqa: E402

TARGET = 20_000
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        sys.exit("PostgreSQL's initdb not found: apt-get install postgresql")
    return os.path.dirname(found[-1])


def cpu_by_program():
    """CPU seconds used so far by every running postgres, mosquitto and
    pithead-county process (what shares the cores during the drain)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"postgres": 0.0, "mosquitto": 0.0, "pithead-county": 0.0}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        for name in out:
            if comm.startswith(name[:15]):
                out[name] += (int(fields[11]) + int(fields[12])) / tick
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stations", type=int, default=100)
    ap.add_argument("--per-station", type=int, default=10_000)
    ap.add_argument("--instances", default="1,2,3")
    ap.add_argument("--county", default=os.path.join(ROOT, "target", "release", "pithead-county"))
    ap.add_argument("--load", default=os.path.join(ROOT, "target", "release", "pithead-county-load"))
    a = ap.parse_args()
    total = a.stations * a.per_station
    root = os.geteuid() == 0
    d = tempfile.mkdtemp(prefix="pithead-county-bench-")
    procs = []
    pg = pg_bin()
    run_as = ["runuser", "-u", "postgres", "--"] if root else []
    data = os.path.join(d, "pg")
    try:
        os.makedirs(data)
        if root:
            subprocess.run(["chown", "-R", "postgres:postgres", d], check=True)
        subprocess.run(run_as + [f"{pg}/initdb", "-D", data, "-U", "pithead", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"],
                       check=True, capture_output=True)
        pg_port = free_port()
        subprocess.run(run_as + [f"{pg}/pg_ctl", "-D", data, "-l", os.path.join(d, "pg.log"), "-w",
                                 "-o", f"-p {pg_port} -c listen_addresses=127.0.0.1 -k {d} -c shared_buffers=256MB",
                                 "start"], check=True, capture_output=True)
        psql = run_as + [f"{pg}/psql", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "pithead", "-At"]
        mq_port = free_port()
        conf = os.path.join(d, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(("user root\n" if root else "") + f"listener {mq_port} 127.0.0.1\nallow_anonymous true\n"
                    "persistence false\nmax_inflight_messages 1000\nmax_queued_messages 0\nmax_queued_bytes 0\n")
        broker = subprocess.Popen(["/usr/sbin/mosquitto", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(broker)
        time.sleep(0.5)
        print(f"county ingest: a backlog of {total} messages from {a.stations} stations, {os.cpu_count()} cores")
        print("| instances | publish (msg/s) | ingest (msg/s) | stored once |")
        print("|---|---|---|---|")
        for k in [int(x) for x in a.instances.split(",")]:
            db = f"pithead{k}"
            subprocess.run(psql + ["-d", "postgres", "-c", f"CREATE DATABASE {db}"], check=True, capture_output=True)
            configs = []
            for i in range(k):
                c = os.path.join(d, f"county-{k}-{i}.toml")
                with open(c, "w") as f:
                    f.write(f'[mqtt]\nurl = "mqtt://127.0.0.1:{mq_port}"\nclient_id = "county-{k}-{i}"\ngroup = "g{k}"\n'
                            f'[postgres]\nurl = "host=127.0.0.1 port={pg_port} dbname={db} user=pithead"\n'
                            f'[ingest]\nmax_batch = 2000\nresend_after = "1h"\n')
                configs.append(c)

            def start():
                out = []
                for i, c in enumerate(configs):
                    log = open(os.path.join(d, f"county-{k}-{i}.log"), "a")
                    p = subprocess.Popen([a.county, "run", "--config", c], stdout=subprocess.DEVNULL, stderr=log,
                                         env={**os.environ, "RUST_LOG": "info"})
                    out.append((p, os.path.join(d, f"county-{k}-{i}.log")))
                return out

            def wait_subscribed(instances, n):
                end = time.time() + 60
                for _, log in instances:
                    while open(log).read().count("subscribed") < n:
                        if time.time() > end:
                            sys.exit(f"{log} did not subscribe")
                        time.sleep(0.05)

            inst = start()
            wait_subscribed(inst, 1)
            for p, _ in inst:
                p.terminate()
                p.wait()
            print(f"  {k} instance(s) subscribed and stopped; publishing", file=sys.stderr)
            load = subprocess.run([a.load, str(mq_port), str(a.stations), str(a.per_station)],
                                  check=True, capture_output=True, text=True)
            pub = json.loads(load.stdout)
            print(f"  published {pub}; draining", file=sys.stderr)
            cpu0, t0 = cpu_by_program(), time.time()
            inst = start()
            procs.extend(p for p, _ in inst)
            end = time.time() + 600
            count = 0
            while time.time() < end:
                count = int(subprocess.run(psql + ["-d", db, "-c", "SELECT count(*) FROM messages"],
                                           check=True, capture_output=True, text=True).stdout.strip() or 0)
                if count >= total:
                    break
                print(f"  {count} stored", file=sys.stderr)
                time.sleep(0.5)
            span = float(subprocess.run(psql + ["-d", db, "-c",
                                                "SELECT extract(epoch FROM max(received_at) - min(received_at)) FROM messages"],
                                        check=True, capture_output=True, text=True).stdout.strip() or "nan")
            distinct = int(subprocess.run(psql + ["-d", db, "-c", "SELECT count(DISTINCT msg_id) FROM messages"],
                                          check=True, capture_output=True, text=True).stdout.strip() or 0)
            cpu1, wall = cpu_by_program(), time.time() - t0
            share = ", ".join(f"{n} {(cpu1[n] - cpu0[n]) / wall:.2f}" for n in cpu1)
            print(f"  cores busy during the drain ({wall:.1f} s): {share}", file=sys.stderr)
            deadlocks = subprocess.run(psql + ["-d", db, "-c",
                                               f"SELECT deadlocks FROM pg_stat_database WHERE datname = '{db}'"],
                                       capture_output=True, text=True).stdout.strip()
            for p, _ in inst:
                p.terminate()
                p.wait()
            retried = sum(open(log).read().count("cannot store a batch") for _, log in inst)
            print(f"  PostgreSQL deadlocks: {deadlocks}; batches retried: {retried}", file=sys.stderr)
            rate = count / span if span and span > 0 else float("nan")
            ok = count == total and distinct == total
            print(f"| {k} | {pub['published'] / pub['seconds']:.0f} | {rate:.0f} | {'yes' if ok else f'NO: {count} rows, {distinct} distinct'} |")
            target = f"≥ {TARGET}/s" if k == 1 else None
            record("county ingest", f"messages/s into PostgreSQL, {k} instance(s), {total} backlog", round(rate),
                   "msg/s", target=target, ok=(rate >= TARGET and ok) if k == 1 else (ok or None))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        subprocess.run(run_as + [f"{pg}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
