#!/usr/bin/env python3
"""Start-up with a long alarm history: 1,000,000 alarm events in the event
log (250,000 alarms raised, returned, acknowledged and cleared) and 5
alarms still open, as years of a flapping station leave it.

Usage: bench/restore.py [--events 1000000] [--bin PATH] [--runs 3]

Measured, per run: the daemon's own figure for reading the open alarms
(the "alarm history read" log line, took_ms), and the time from the
process start to the restore being applied (the log line's timestamp
against the spawn), each with the median of --runs starts. Then once the
migration of a database that predates the `alarms` table (schema 7): the
table is built from the event log on the first start.

Target (issue 13): start-up with 1,000,000 events in the log ≤ 1 s to the
alarm history being back.
"""

import argparse
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from acquisition import free_port  # noqa: E402
from results import record  # noqa: E402


def config(data_dir, http):
    return f"""[station]\ncounty = "bench"\nid = "bench"\nname = "bench"
[storage]\ndata_dir = "{data_dir}"
[http]\nlisten = "127.0.0.1:{http}"
[outputs]\nbackend = "sim"\nself_test = false
"""


def healthy(http, within=30):
    end = time.time() + within
    while time.time() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


def start(binary, cfg, log):
    with open(log, "w") as err:
        env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
        t0 = time.time()
        p = subprocess.Popen([binary, "run", "--config", cfg], stderr=err, stdout=subprocess.DEVNULL, env=env)
    return p, t0


def restored(log, within=120):
    """took_ms of the restore, and its wall time (from the log line)."""
    end = time.time() + within
    pat = re.compile(r"^(\S+)\s.*alarm history read.*?open=(\d+).*?took_ms=(\d+)")
    while time.time() < end:
        for line in open(log, errors="replace"):
            m = pat.search(re.sub(r"\x1b\[[0-9;]*m", "", line))
            if m:
                ts = m.group(1).rstrip("Z")
                wall = time.mktime(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
                wall += float("0" + ts[19:]) if len(ts) > 19 else 0.0
                return int(m.group(2)), int(m.group(3)), wall
        time.sleep(0.05)
    raise SystemExit(f"no restore in {log}:\n" + open(log).read()[-3000:])


def fill(db, events):
    alarms = events // 4
    c = sqlite3.connect(db)
    c.executescript(f"""
    BEGIN;
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {alarms})
    INSERT INTO events(at, kind, actor, subject, detail)
    SELECT '2026-01-01T00:00:00.000Z', 'alarm.' || k.kind, k.actor, 'ch4',
           json_object('alarm_id', 1000000 + i, 'channel', 'ch4', 'level', 'warning', 'value', 0.85,
                       'state', 'ok', 'event', k.kind, 'at', '2026-01-01T00:00:00.000Z')
    FROM n, (SELECT 'raised' AS kind, NULL AS actor UNION ALL SELECT 'returned', NULL
             UNION ALL SELECT 'acknowledged', '王班长' UNION ALL SELECT 'cleared', NULL) AS k;
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {alarms})
    INSERT INTO alarms(id, subject, level, value, state, raised_at, acked_by, acked_at, cleared_at)
    SELECT 1000000 + i, 'ch4', 'warning', 0.85, 'ok', '2026-01-01T00:00:00.000Z', '王班长',
           '2026-01-01T00:00:01.000Z', '2026-01-01T00:00:02.000Z' FROM n;
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5)
    INSERT INTO events(at, kind, subject, detail)
    SELECT '2026-01-02T00:00:00.000Z', 'alarm.raised', 'ch4',
           json_object('alarm_id', 9000000 + i, 'channel', 'ch4', 'level', 'power_cut', 'value', 1.6,
                       'state', 'ok', 'event', 'raised', 'at', '2026-01-02T00:00:00.000Z') FROM n;
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5)
    INSERT INTO alarms(id, subject, level, value, state, raised_at)
    SELECT 9000000 + i, 'ch4', 'power_cut', 1.6, 'ok', '2026-01-02T00:00:00.000Z' FROM n;
    COMMIT;
    """)
    n = c.execute("SELECT count(*) FROM events WHERE kind LIKE 'alarm.%'").fetchone()[0]
    c.close()
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bin", default="target/release/pithead")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="pithead-restore-")
    data = os.path.join(tmp, "data")
    http = free_port()
    cfg = os.path.join(tmp, "pithead.toml")
    open(cfg, "w").write(config(data, http))
    log = os.path.join(tmp, "log")
    # A database of today's schema, then the history.
    p, _ = start(a.bin, cfg, log)
    healthy(http)
    p.terminate()
    p.wait()
    db = os.path.join(data, "pithead.db")
    n = fill(db, a.events)
    size = os.path.getsize(db) / 1e6
    print(f"{n} alarm events in the log, {size:.0f} MB")
    took, to_restore = [], []
    for _ in range(a.runs):
        p, t0 = start(a.bin, cfg, log)
        opened, ms, wall = restored(log)
        assert opened == 5, opened
        took.append(ms)
        to_restore.append(wall - t0)
        healthy(http)
        p.terminate()
        p.wait()
    # The first start after an upgrade from schema 7: the table is built
    # from the log once.
    c = sqlite3.connect(db)
    c.executescript(
        "DROP TABLE alarms; DROP INDEX checkins_by_hand; ALTER TABLE checkins DROP COLUMN by;"
        " ALTER TABLE checkins DROP COLUMN reason; PRAGMA user_version = 7;"
    )
    c.close()
    p, t0 = start(a.bin, cfg, log)
    opened, ms, wall = restored(log, within=600)
    assert opened == 5, opened
    migrated = wall - t0
    p.terminate()
    p.wait()
    print("| figure | median of %d | all |" % a.runs)
    print("|---|---:|---|")
    print(f"| read the open alarms (took_ms) | {statistics.median(took)} ms | {took} |")
    print(f"| process start → alarm history back | {statistics.median(to_restore) * 1000:.0f} ms | "
          f"{[round(x * 1000) for x in to_restore]} |")
    print(f"| first start after the upgrade (schema 7 → latest, table built from the log) | {migrated:.1f} s | once |")
    record("restore", f"start → alarm history back, {n} events", round(statistics.median(to_restore) * 1000),
           "ms", "≤ 1000", statistics.median(to_restore) <= 1.0)
    record("restore", "read the open alarms", statistics.median(took), "ms", "", True)
    record("restore", "one-time migration from schema 7", round(migrated, 1), "s", "", True)


if __name__ == "__main__":
    main()
