#!/usr/bin/env python3
"""Station alarm → county dashboard: how long from the moment a real
station raises an alarm to the moment a county dashboard shows it.

A private PostgreSQL and Mosquitto, one `pithead-county` instance with the
dashboard, a real `pithead` station reading a real Modbus simulator over
TCP (1 s poll, CH4 alarm at 1.00 %vol, not latching) and sending to the
broker. The dashboard client is this script doing what the page does: it
logs in, follows `/api/v1/stream`, and on every `changed` reads the
station's page (`/api/v1/stations/bench/bench`), as a county operator
watching it would. Each trial raises CH4 to 1.50 % through the simulator's
control port (at a random phase of the poll) and records, for the first
page that shows the alarm raised again, the time it was read minus the
alarm's own `at` (the station's time of the transition; one clock, this
machine's). Then CH4 falls back and the page must show it returned.

Two cases: the county otherwise idle, and the county under the traffic of
100 other stations at 200 messages/s in all (a shift change everywhere at
once: several times a county's usual rate), from `pithead-county-load`.

Target (issue 18): p99 ≤ 500 ms.

Usage: bench/county_latency.py [--trials 60]
"""

import argparse
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from acquisition import control, wait_port  # noqa: E402
from county_ingest import free_port, pg_bin  # noqa: E402
from results import record  # noqa: E402

TARGET_MS = 500
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PASSWORD = "bench-password-2026"


def rfc3339_to_unix(s):
    # 2026-12-02T19:10:11.123Z (the station writes milliseconds, UTC).
    import datetime
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


class Dashboard:
    """A logged-in dashboard page following the stream."""

    def __init__(self, port):
        self.port = port
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("POST", "/api/v1/session", json.dumps({"user": "bench", "password": PASSWORD}),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            sys.exit(f"login: {r.status} {body!r}")
        self.cookie = r.getheader("Set-Cookie").split(";")[0]
        self.page = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.lock = threading.Condition()
        self.seen = []  # (time read, alarms) per page read
        self.stop = False
        threading.Thread(target=self.follow, daemon=True).start()

    def read_page(self):
        # One kept-alive connection, as a browser has; opened again when
        # the server has closed it.
        for attempt in range(2):
            try:
                self.page.request("GET", "/api/v1/stations/bench/bench?hours=1", headers={"Cookie": self.cookie})
                r = self.page.getresponse()
                data = json.loads(r.read())
                return time.time(), data["alarms"]
            except (http.client.HTTPException, OSError):
                self.page.close()
                self.page = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                if attempt:
                    raise

    def follow(self):
        try:
            self.follow_stream()
        except (http.client.HTTPException, OSError):
            if not self.stop:
                raise

    def follow_stream(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        c.request("GET", "/api/v1/stream", headers={"Cookie": self.cookie, "Accept": "text/event-stream"})
        r = c.getresponse()
        while not self.stop:
            line = r.fp.readline()
            if not line:
                return
            if line.strip() == b"event: changed":
                seen = self.read_page()
                with self.lock:
                    self.seen.append(seen)
                    self.lock.notify_all()

    def wait_for(self, pred, after, timeout):
        end = time.time() + timeout
        with self.lock:
            while True:
                for t, alarms in self.seen:
                    if t >= after:
                        hit = pred(alarms)
                        if hit is not None:
                            return t, hit
                left = end - time.time()
                if left <= 0:
                    return None
                self.lock.wait(left)


def station_config(data_dir, http_port, modbus, mqtt):
    return f"""[station]\ncounty = "bench"\nid = "bench"\nname = "bench"
[storage]\ndata_dir = "{data_dir}"
[http]\nlisten = "127.0.0.1:{http_port}"
[log]\nlevel = "warn"
[outputs]\nbackend = "sim"\nself_test = false
[acquisition]\nwarm_up = "0s"
[mqtt]\nenabled = true\nurl = "mqtt://127.0.0.1:{mqtt}"\nkeep_alive = "5s"
[[bus]]\nid = "sim"\ntransport = "tcp"\nhost = "127.0.0.1"\nport = {modbus}\ntimeout = "300ms"\nretries = 1
[[device]]\nid = "face"\nbus = "sim"\nunit = 1
[[channel]]\nid = "ch4"\ndevice = "face"\nkind = "ch4"\nunit = "%vol"\ntable = "input"\naddress = 0
scale = 0.01\nrange = [0.0, 4.0]\npoll = "1s"
[[channel.level]]\nname = "alarm"\nthreshold = 1.0\ndeadband = 0.05\nlatching = false
"""


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def trials(dash, ctl, n):
    lat = []
    for _ in range(n):
        time.sleep(random.uniform(0.2, 1.2))
        t0 = int(control(ctl, "set 1 input 0 150").split()[1]) / 1e9

        def raised(alarms):
            for a in alarms:
                if a["channel"] == "ch4" and a["event"] in ("raised", "recurred", "escalated") and a["at"]:
                    at = rfc3339_to_unix(a["at"])
                    if at >= t0 - 0.01:
                        return at
            return None

        got = dash.wait_for(raised, t0, 15)
        if got is None:
            sys.exit("the dashboard never showed the alarm")
        seen, at = got
        lat.append((seen - at) * 1000)
        t2 = int(control(ctl, "set 1 input 0 30").split()[1]) / 1e9
        back = dash.wait_for(lambda al: True if all(a["channel"] != "ch4" or a["event"] in ("returned", "cleared")
                                                    for a in al) else None, t2, 15)
        if back is None:
            sys.exit("the dashboard never showed the alarm returned")
    return lat


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "pithead"))
    ap.add_argument("--county", default=os.path.join(ROOT, "target", "release", "pithead-county"))
    ap.add_argument("--load", default=os.path.join(ROOT, "target", "release", "pithead-county-load"))
    a = ap.parse_args()
    root = os.geteuid() == 0
    d = tempfile.mkdtemp(prefix="pithead-county-latency-")
    procs = []
    pg = pg_bin()
    run_as = ["runuser", "-u", "postgres", "--"] if root else []
    data = os.path.join(d, "pg")
    try:
        os.makedirs(data)
        if root:
            subprocess.run(["chown", "-R", "postgres:postgres", d], check=True)
        subprocess.run(run_as + [f"{pg}/initdb", "-D", data, "-U", "pithead", "--auth=trust", "-E", "UTF8",
                                 "--locale=C.UTF-8"], check=True, capture_output=True)
        pg_port = free_port()
        subprocess.run(run_as + [f"{pg}/pg_ctl", "-D", data, "-l", os.path.join(d, "pg.log"), "-w",
                                 "-o", f"-p {pg_port} -c listen_addresses=127.0.0.1 -k {d}", "start"],
                       check=True, capture_output=True)
        mq_port = free_port()
        conf = os.path.join(d, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(("user root\n" if root else "") + f"listener {mq_port} 127.0.0.1\nallow_anonymous true\n"
                    "persistence false\nmax_inflight_messages 100\nmax_queued_messages 0\n")
        procs.append(subprocess.Popen(["/usr/sbin/mosquitto", "-c", conf], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        wait_port(mq_port)
        web = free_port()
        cfg = os.path.join(d, "county.toml")
        with open(cfg, "w") as f:
            f.write(f'[mqtt]\nurl = "mqtt://127.0.0.1:{mq_port}"\nclient_id = "county-1"\n'
                    f'[postgres]\nurl = "host=127.0.0.1 port={pg_port} dbname=postgres user=pithead"\n'
                    f'[ingest]\nresend_after = "1h"\n[http]\nlisten = "127.0.0.1:{web}"\n'
                    '[[station]]\ncounty = "bench"\nid = "bench"\nname = "bench"\nmine = "bench"\n')
        log = open(os.path.join(d, "county.log"), "w")
        procs.append(subprocess.Popen([a.county, "run", "--config", cfg], stdout=subprocess.DEVNULL, stderr=log,
                                      env={**os.environ, "RUST_LOG": "warn"}))
        wait_port(web)
        subprocess.run([a.county, "user", "add", "bench", "--role", "viewer", "--config", cfg],
                       input=PASSWORD + "\n", text=True, check=True, capture_output=True)

        modbus, ctl, http_port = free_port(), free_port(), free_port()
        procs.append(subprocess.Popen([a.bin, "simulate", "--listen", f"127.0.0.1:{modbus}", "--control",
                                       f"127.0.0.1:{ctl}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(modbus)
        wait_port(ctl)
        control(ctl, "set 1 input 0 30")
        scfg = os.path.join(d, "pithead.toml")
        with open(scfg, "w") as f:
            f.write(station_config(os.path.join(d, "station"), http_port, modbus, mq_port))
        procs.append(subprocess.Popen([a.bin, "run", "--config", scfg], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        wait_port(http_port)
        time.sleep(3)
        dash = Dashboard(web)

        print(f"station alarm → county dashboard, {a.trials} trials per case, {os.cpu_count()} cores")
        print("| county | p50 (ms) | p99 (ms) | max (ms) |")
        print("|---|---|---|---|")
        rows = []
        idle = trials(dash, ctl, a.trials)
        rows.append(("idle", idle))
        load = subprocess.Popen([a.load, str(mq_port), "100", "100000", "200"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        procs.append(load)
        time.sleep(3)
        busy = trials(dash, ctl, a.trials)
        rows.append(("100 more stations, 200 msg/s", busy))
        stored = subprocess.run(run_as + [f"{pg}/psql", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "pithead",
                                          "-d", "postgres", "-At", "-c",
                                          "SELECT count(*) FROM messages WHERE county = 'bench-county'"],
                                capture_output=True, text=True).stdout.strip()
        print(f"  background messages stored meanwhile: {stored}", file=sys.stderr)
        dash.stop = True
        for name, lat in rows:
            p99 = pct(lat, 0.99)
            print(f"| {name} | {pct(lat, 0.5):.0f} | {p99:.0f} | {max(lat):.0f} |")
            record("county latency", f"station alarm → dashboard p99, {name}", round(p99), "ms",
                   target=f"≤ {TARGET_MS} ms", ok=p99 <= TARGET_MS)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        subprocess.run(run_as + [f"{pg}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], capture_output=True)
        if os.environ.get("KEEP"):
            print(f"kept {d}", file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
