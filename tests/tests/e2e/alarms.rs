//! Alarms end to end: the real daemon with simulated outputs against the
//! `pithead simulate` process.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of the tests: a failed unwrap is a failed test"
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pithead_e2e::{Daemon, Simulator, free_port, http_get, http_request, minimal_config};
use serde_json::Value;

const TOKEN: &str = "test-token-0123456789abcdef";

/// A station with the face CH4 guarding power (warning 0.8, alarm 1.0,
/// power-cut 1.5 restoring below 1.0) and CO on the same device.
fn config(dir: &std::path::Path, http: SocketAddr, sim: &Simulator, token: bool) -> String {
    let token_line = if token {
        let f = dir.join("token");
        pithead_e2e::write_secret(&f, TOKEN);
        format!("api_token_file = \"{}\"\n", f.display())
    } else {
        String::new()
    };
    let base = minimal_config(&dir.join("data"), http).replace(
        &format!("listen = \"{http}\"\n"),
        &format!("listen = \"{http}\"\n{token_line}"),
    );
    format!(
        "{base}[acquisition]\nwarm_up = \"0s\"\n\
         [[bus]]\nid = \"sim\"\ntransport = \"tcp\"\nhost = \"127.0.0.1\"\nport = {}\ntimeout = \"300ms\"\nretries = 0\n\
         [[device]]\nid = \"face\"\nbus = \"sim\"\nunit = 1\n\
         [[channel]]\nid = \"ch4\"\ndevice = \"face\"\nkind = \"ch4\"\nunit = \"%vol\"\ntable = \"input\"\naddress = 0\n\
         scale = 0.01\nrange = [0.0, 4.0]\n\
         [[channel.level]]\nname = \"warning\"\nthreshold = 0.8\ndeadband = 0.05\n\
         [[channel.level]]\nname = \"alarm\"\nthreshold = 1.0\ndeadband = 0.05\n\
         [[channel.level]]\nname = \"power_cut\"\nthreshold = 1.5\ndeadband = 0.5\n\
         [[channel]]\nid = \"co\"\ndevice = \"face\"\nkind = \"co\"\nunit = \"ppm\"\ntable = \"input\"\naddress = 1\n\
         range = [0.0, 1000.0]\npreset = \"cn-coal/co\"\n",
        sim.modbus.port()
    )
}

/// A GET as a supervisor (with the API token: the alarm list names who
/// acknowledged only to supervisors).
fn json(http: SocketAddr, path: &str) -> Value {
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = http_request(http, "GET", path, &[("Authorization", &auth)], "")
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn outputs(http: SocketAddr) -> Value {
    json(http, "/api/v1/outputs")
}

fn wait(
    http: SocketAddr,
    within: Duration,
    what: &str,
    pred: impl Fn(&Value, &Value) -> bool,
) -> Duration {
    let start = Instant::now();
    let (mut o, mut a) = (Value::Null, Value::Null);
    while start.elapsed() < within {
        o = outputs(http);
        a = json(http, "/api/v1/alarms?active=true");
        if pred(&o, &a) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("not within {within:?}: {what}\noutputs: {o:#}\nalarms: {a:#}");
}

fn levels(a: &Value) -> Vec<String> {
    a.as_array()
        .map(|v| {
            v.iter()
                .map(|x| {
                    format!(
                        "{}/{}",
                        x["channel"].as_str().unwrap_or(""),
                        x["level"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn ack_all(http: SocketAddr, by: &str) {
    let alarms = json(http, "/api/v1/alarms?active=true");
    for a in alarms.as_array().cloned().unwrap_or_default() {
        if a["acknowledged_by"].is_string() {
            continue;
        }
        let id = a["id"].as_u64().unwrap_or_default();
        let auth = format!("Bearer {TOKEN}");
        let (status, body) = http_request(
            http,
            "POST",
            &format!("/api/v1/alarms/{id}/ack"),
            &[("Authorization", &auth)],
            &format!("{{\"by\": \"{by}\"}}"),
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v["recorded"], true, "{body}");
    }
}

fn start(scenario: &str, token: bool) -> (Simulator, tempfile::TempDir, Daemon, SocketAddr) {
    let sim = Simulator::start(scenario, None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut d = Daemon::start(dir.path(), &config(dir.path(), http, &sim, token), http);
    d.wait_healthy(Duration::from_secs(20));
    (sim, dir, d, http)
}

/// The index of the first change of `output` to `on` after `from`.
fn change_index(o: &Value, from: usize, output: &str, on: bool) -> Option<usize> {
    o["changes"]
        .as_array()?
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, c)| c["output"] == output && c["on"] == on)
        .map(|(i, _)| i)
}

#[test]
fn methane_rise_drives_warning_alarm_power_cut_in_order_ack_silences_restore_clears() {
    let (sim, dir, mut d, http) = start("methane-rise", true);
    // Normal air first: green, power on, no siren.
    wait(http, Duration::from_secs(10), "green with power", |o, _| {
        o["beacon"] == "green" && o["power_allowed"] == true && o["siren"] == false
    });
    let before = outputs(http)["changes"].as_array().map_or(0, Vec::len);
    // The scenario raises CH4 0.04 %/s from 5 s: 0.8 at ~17 s, 1.5 at ~35 s.
    wait(http, Duration::from_secs(60), "power cut", |o, _| {
        o["power_allowed"] == false
    });
    let o = outputs(http);
    let yellow = change_index(&o, before, "beacon_yellow", true);
    let siren = change_index(&o, before, "siren", true);
    let red = change_index(&o, before, "beacon_red", true);
    let cut = change_index(&o, before, "power_relay", false);
    assert!(
        yellow.is_some() && siren.is_some() && red.is_some() && cut.is_some(),
        "{o:#}"
    );
    assert!(
        yellow < red && red < cut,
        "warning → alarm → power-cut, in order: {o:#}"
    );
    assert!(siren < red, "siren from the first (warning) alarm: {o:#}");
    let a = json(http, "/api/v1/alarms?active=true");
    assert_eq!(levels(&a), ["ch4/warning", "ch4/alarm", "ch4/power_cut"]);
    assert!(a[2]["value"].as_f64().unwrap_or_default() >= 1.5, "{a:#}");

    // Acknowledging silences the siren; the danger stays shown.
    ack_all(http, "王班长");
    wait(http, Duration::from_secs(2), "siren silenced", |o, _| {
        o["siren"] == false
    });
    let o = outputs(http);
    assert_eq!(
        (o["beacon"].as_str(), o["power_allowed"].as_bool()),
        (Some("red"), Some(false))
    );
    let a = json(http, "/api/v1/alarms?active=true");
    assert!(
        a.as_array().is_some_and(|v| v
            .iter()
            .all(|x| x["state"] == "acknowledged" && x["acknowledged_by"] == "王班长")),
        "{a:#}"
    );

    // 1.2 %: below power-cut, not below its restore point (1.0): still cut.
    sim.control("set 1 input 0 120");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        outputs(http)["power_allowed"],
        false,
        "restore needs the dead-band"
    );
    // 0.9 %: power-cut and alarm restore (acknowledged, so they clear);
    // the warning (0.8 - 0.05) remains.
    sim.control("set 1 input 0 90");
    wait(
        http,
        Duration::from_secs(3),
        "power back, yellow",
        |o, a| {
            o["power_allowed"] == true && o["beacon"] == "yellow" && levels(a) == ["ch4/warning"]
        },
    );
    sim.control("set 1 input 0 30");
    wait(http, Duration::from_secs(3), "all clear", |o, a| {
        o["beacon"] == "green" && a.as_array().is_some_and(Vec::is_empty)
    });

    // History keeps every alarm with who acknowledged it. The history is
    // read from the store, which the recorder writes after the outputs have
    // acted (alarms never wait on the disk), so the last clear may land a
    // moment after the active list is empty.
    let cleared_of = |all: &Value| -> Vec<Value> {
        all.as_array()
            .map(|v| {
                v.iter()
                    .filter(|x| x["state"] == "cleared")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let until = Instant::now() + Duration::from_secs(3);
    let mut all = json(http, "/api/v1/alarms");
    while cleared_of(&all).len() < 3 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
        all = json(http, "/api/v1/alarms");
    }
    let cleared = cleared_of(&all);
    assert_eq!(cleared.len(), 3, "{all:#}");
    assert!(
        cleared
            .iter()
            .all(|x| x["acknowledged_by"] == "王班长" && x["cleared_at"].is_string())
    );

    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(15)).success());
    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    let count = |sql: &str| -> i64 {
        db.query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    // raised + 2 escalated + 3 acknowledged + 3 cleared, each with its outbox row.
    assert_eq!(
        count("SELECT count(*) FROM events WHERE kind LIKE 'alarm.%'"),
        9
    );
    assert_eq!(
        count("SELECT count(*) FROM outbox WHERE lane = 0 AND kind = 'alarm'"),
        9
    );
    assert_eq!(
        count("SELECT count(*) FROM events WHERE kind = 'alarm.acknowledged' AND actor = '王班长'"),
        3
    );
}

#[test]
fn an_unplugged_sensor_cuts_power_for_its_guarded_channel_until_acknowledged() {
    let (sim, _dir, _d, http) = start("normal", true);
    wait(http, Duration::from_secs(10), "power on", |o, _| {
        o["power_allowed"] == true
    });
    sim.control("fault 1 silent");
    let took = wait(
        http,
        Duration::from_secs(3),
        "power cut by a fault",
        |o, _| o["power_allowed"] == false,
    );
    assert!(
        took < Duration::from_millis(2500),
        "within two polls: {took:?}"
    );
    let a = json(http, "/api/v1/alarms?active=true");
    assert_eq!(
        levels(&a),
        ["ch4/fault", "ch4/power_cut", "co/fault"],
        "{a:#}"
    );
    assert_eq!(a[1]["reading_state"], "comm_fault");
    assert!(a[1]["value"].is_null(), "a fault is never a value: {a:#}");
    // The sensor comes back: the latched power-cut keeps power off.
    sim.control("fault 1 none");
    wait(
        http,
        Duration::from_secs(6),
        "returned, waiting for ack",
        |_, a| {
            a.as_array()
                .is_some_and(|v| v.iter().all(|x| x["state"] == "returned"))
        },
    );
    assert_eq!(outputs(http)["power_allowed"], false);
    ack_all(http, "李工");
    wait(
        http,
        Duration::from_secs(3),
        "power back after ack",
        |o, a| {
            o["power_allowed"] == true
                && o["siren"] == false
                && a.as_array().is_some_and(Vec::is_empty)
        },
    );
}

#[test]
fn the_alarm_path_does_not_wait_for_a_stalled_store() {
    let (sim, dir, _d, http) = start("normal", true);
    wait(http, Duration::from_secs(10), "power on", |o, _| {
        o["power_allowed"] == true
    });
    // Hold the database's write lock from outside for 5 s: the daemon's
    // writer blocks on it, exactly as on a stalled disk.
    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let locked = Instant::now();
    let set = sim.control("set 1 input 0 170");
    let set_ns: u128 = set.trim_start_matches("ok ").parse().unwrap_or_default();
    wait(
        http,
        Duration::from_secs(3),
        "power cut while the store is stalled",
        |o, _| o["power_allowed"] == false,
    );
    assert!(
        locked.elapsed() < Duration::from_secs(5),
        "the lock was still held"
    );
    let o = outputs(http);
    let cut_ns = o["changes"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .rev()
                .find(|c| c["output"] == "power_relay" && c["on"] == false)
        })
        .and_then(|c| c["at_unix_ns"].as_u64())
        .map(u128::from)
        .unwrap_or_default();
    let latency =
        Duration::from_nanos(u64::try_from(cut_ns.saturating_sub(set_ns)).unwrap_or(u64::MAX));
    assert!(
        latency <= Duration::from_millis(1500),
        "register change to relay: {latency:?} (poll 1 s)"
    );
    // Nothing was recorded yet; after the stall the events are written.
    std::thread::sleep(Duration::from_secs(5).saturating_sub(locked.elapsed()));
    db.execute_batch("ROLLBACK").unwrap();
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let n: i64 = db
            .query_row(
                "SELECT count(*) FROM events WHERE kind LIKE 'alarm.%'",
                [],
                |r| r.get(0),
            )
            .unwrap_or_default();
        if n >= 3 {
            break;
        }
        assert!(
            Instant::now() < end,
            "alarm events never recorded after the stall ({n})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn acknowledging_needs_a_token_a_name_and_an_active_alarm() {
    let (sim, _dir, _d, http) = start("normal", true);
    sim.control("set 1 input 0 110");
    wait(http, Duration::from_secs(5), "alarm", |_, a| {
        levels(a).contains(&"ch4/alarm".to_owned())
    });
    let a = json(http, "/api/v1/alarms?active=true");
    let id = a[1]["id"].as_u64().unwrap_or_default();
    let path = format!("/api/v1/alarms/{id}/ack");
    let auth = format!("Bearer {TOKEN}");
    let post = |path: &str, auth: &str, body: &str| {
        let h: Vec<(&str, &str)> = if auth.is_empty() {
            vec![]
        } else {
            vec![("Authorization", auth)]
        };
        http_request(http, "POST", path, &h, body).unwrap()
    };
    let (s, b) = post(&path, "", "{\"by\": \"x\"}");
    assert_eq!(s, 401, "{b}");
    let (s, b) = post(&path, "Bearer wrong-token-0123456789", "{\"by\": \"x\"}");
    assert_eq!(s, 401, "{b}");
    let (s, b) = post(&path, &auth, "{\"by\": \"  \"}");
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("确认人"), "{b}");
    let (s, b) = post(&path, &auth, "not json");
    assert_eq!(s, 400, "{b}");
    let (s, b) = post("/api/v1/alarms/abc/ack", &auth, "{\"by\": \"x\"}");
    assert_eq!(s, 400, "{b}");
    let (s, b) = post("/api/v1/alarms/12345/ack", &auth, "{\"by\": \"x\"}");
    assert_eq!(s, 404, "{b}");
    let (s, b) = post(&path, &auth, "{\"by\": \"张三\"}");
    assert_eq!(s, 200, "{b}");
    let (s, b) = post(&path, &auth, "{\"by\": \"李四\"}");
    assert_eq!(s, 409, "{b}");
    assert!(b.contains("张三"), "{b}");
}

#[test]
fn without_a_configured_token_acknowledging_over_the_api_is_refused() {
    let (sim, _dir, _d, http) = start("normal", false);
    sim.control("set 1 input 0 110");
    wait(http, Duration::from_secs(5), "alarm", |_, a| {
        !levels(a).is_empty()
    });
    let (s, b) = http_request(
        http,
        "POST",
        "/api/v1/alarms/1/ack",
        &[("Authorization", "Bearer x")],
        "{\"by\": \"x\"}",
    )
    .unwrap();
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("ack_disabled"), "{b}");
}

#[test]
fn a_restart_does_not_return_power_or_silence_an_unacknowledged_alarm() {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = config(dir.path(), http, &sim, true);
    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    sim.control("set 1 input 0 170");
    wait(http, Duration::from_secs(5), "power cut", |o, _| {
        o["power_allowed"] == false
    });
    let before = json(http, "/api/v1/alarms?active=true");
    let pc_id = before
        .as_array()
        .and_then(|v| v.iter().find(|x| x["level"] == "power_cut"))
        .and_then(|x| x["id"].as_u64())
        .unwrap_or_default();
    // The events are on disk before the crash.
    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while db
        .query_row(
            "SELECT count(*) FROM events WHERE kind LIKE 'alarm.%'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap_or_default()
        < 3
    {
        assert!(Instant::now() < end, "alarm events not recorded");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.signal(libc::SIGKILL);
    let _ = d.wait_exit(Duration::from_secs(10));
    // The gas clears while the box is down; it comes back.
    sim.control("set 1 input 0 30");
    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(2500));
    let o = outputs(http);
    assert_eq!(
        (o["power_allowed"].as_bool(), o["siren"].as_bool()),
        (Some(false), Some(true)),
        "{o:#}"
    );
    let a = json(http, "/api/v1/alarms?active=true");
    let pc = a
        .as_array()
        .and_then(|v| v.iter().find(|x| x["level"] == "power_cut"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (pc["id"].as_u64(), pc["state"].as_str()),
        (Some(pc_id), Some("returned")),
        "{a:#}"
    );
    ack_all(http, "值班长");
    wait(
        http,
        Duration::from_secs(3),
        "power back after ack",
        |o, a| o["power_allowed"] == true && a.as_array().is_some_and(Vec::is_empty),
    );
    // New alarms get new ids, above the restored ones.
    sim.control("set 1 input 0 110");
    wait(http, Duration::from_secs(5), "new alarm", |_, a| {
        !levels(a).is_empty()
    });
    let a = json(http, "/api/v1/alarms?active=true");
    assert!(
        a.as_array()
            .is_some_and(|v| v.iter().all(|x| x["id"].as_u64() > Some(pc_id))),
        "{a:#}"
    );
}

/// The alarm history cannot be read after a crash (the database is
/// damaged): a power-cut alarm that was latched may be lost with it, so the
/// power stays cut behind a fault alarm until a supervisor acknowledges it
/// — never returned after warm-up by itself.
#[test]
fn a_restart_on_a_damaged_database_keeps_the_power_cut_until_acknowledged() {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = config(dir.path(), http, &sim, true);
    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    sim.control("set 1 input 0 170");
    wait(http, Duration::from_secs(5), "power cut", |o, _| {
        o["power_allowed"] == false
    });
    // The gas clears; the power-cut alarm stays latched, unacknowledged.
    sim.control("set 1 input 0 30");
    wait(http, Duration::from_secs(5), "returned", |_, a| {
        a.as_array().is_some_and(|v| {
            v.iter()
                .any(|x| x["level"] == "power_cut" && x["state"] == "returned")
        })
    });
    d.signal(libc::SIGKILL);
    let _ = d.wait_exit(Duration::from_secs(10));
    // The database is damaged while the box is down.
    let db = dir.path().join("data/pithead.db");
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[..100].fill(0x5a);
    std::fs::write(&db, bytes).unwrap();
    let _ = std::fs::remove_file(dir.path().join("data/pithead.db-wal"));
    let mut d = Daemon::start(dir.path(), &cfg, http);
    // Up (it answers, 503 for the database), warm-up is 0 s, the gas is
    // fine: power must still be cut, for seconds, behind the fault.
    let end = Instant::now() + Duration::from_secs(20);
    while !matches!(http_get(http, "/healthz"), Ok((503, _))) {
        assert!(Instant::now() < end, "not up:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..30 {
        let o = outputs(http);
        assert_eq!(o["power_allowed"], false, "power returned by itself: {o:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let a = json(http, "/api/v1/alarms?active=true");
    assert!(
        levels(&a).contains(&"system:alarm_history/fault".to_owned()),
        "{a:#}"
    );
    assert_eq!(outputs(http)["siren"], true);
    // The acknowledgement cannot be written (no database); it is applied,
    // and said to be not recorded yet.
    let id = a
        .as_array()
        .and_then(|v| v.iter().find(|x| x["channel"] == "system:alarm_history"))
        .and_then(|x| x["id"].as_u64())
        .unwrap_or_default();
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = http_request(
        http,
        "POST",
        &format!("/api/v1/alarms/{id}/ack"),
        &[("Authorization", &auth)],
        "{\"by\": \"值班长\"}",
    )
    .unwrap();
    assert!(matches!(status, 200 | 507), "{status} {body}");
    wait(
        http,
        Duration::from_secs(5),
        "power back after the ack",
        |o, _| o["power_allowed"] == true,
    );
    d.signal(libc::SIGTERM);
    let _ = d.wait_exit(Duration::from_secs(15));
}

/// A relay the backend cannot drive (simulated: it cannot be switched off)
/// is a box that cannot guard: a fault alarm names it, the siren sounds,
/// and the watchdog is no longer fed for as long as it lasts.
#[test]
fn a_relay_that_cannot_be_driven_is_a_fault_and_starves_the_watchdog() {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut d = Daemon::start_with_env(
        dir.path(),
        &config(dir.path(), http, &sim, true),
        http,
        &[("PITHEAD_SIM_OUTPUT_FAULT", "power_relay=stuck_on")],
    );
    d.wait_healthy(Duration::from_secs(20));
    wait(http, Duration::from_secs(10), "power allowed", |o, _| {
        o["power_allowed"] == true
    });
    let feeds = |o: &Value| {
        o["changes"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter(|c| c["output"] == "watchdog" && c["on"] == true)
                    .count()
            })
            .unwrap_or(0)
    };
    std::thread::sleep(Duration::from_millis(2500));
    let before = feeds(&outputs(http));
    assert!(before >= 2, "fed while healthy: {before}");
    // Methane: power must be cut, and the relay does not follow.
    sim.control("set 1 input 0 170");
    wait(http, Duration::from_secs(5), "the output fault", |_, a| {
        levels(a).contains(&"output:power_relay/fault".to_owned())
    });
    let o = outputs(http);
    assert_eq!(o["siren"], true, "{o:#}");
    let starved_from = feeds(&o);
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(
        feeds(&outputs(http)),
        starved_from,
        "the watchdog was fed while the relay could not be cut"
    );
    assert!(
        d.log_text()
            .contains("outputs not in the state they were told"),
        "{}",
        d.log_text()
    );
}

/// A station whose power relay has its feedback contact wired
/// (`power_feedback`), the contactor simulated with `sim_fault`.
fn start_with_feedback(
    sim_fault: Option<&str>,
) -> (Simulator, tempfile::TempDir, Daemon, SocketAddr) {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let fault = sim_fault.map_or(String::new(), |f| format!("sim_fault = \"{f}\"\n"));
    let cfg = config(dir.path(), http, &sim, true).replace(
        "[outputs]\nbackend = \"sim\"\n",
        &format!(
            "[outputs]\nbackend = \"sim\"\npower_feedback = {{ line = 5 }}\nfeedback_delay = \"2s\"\n{fault}"
        ),
    );
    assert!(cfg.contains("power_feedback"), "{cfg}");
    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    (sim, dir, d, http)
}

#[test]
fn a_welded_contactor_is_feedback_fault_within_the_delay_and_a_healthy_cut_is_not() {
    // Healthy: the cut is followed by the feedback; no 馈电异常.
    let (sim, _dir, healthy, http) = start_with_feedback(None);
    wait(http, Duration::from_secs(10), "power on", |o, _| {
        o["power_allowed"] == true && o["power_feedback"]["present"] == true
    });
    sim.control("set 1 input 0 160");
    wait(http, Duration::from_secs(3), "power cut", |o, _| {
        o["power_allowed"] == false && o["power_feedback"]["present"] == false
    });
    std::thread::sleep(Duration::from_millis(3500));
    let a = json(http, "/api/v1/alarms?active=true");
    assert_eq!(
        levels(&a),
        ["ch4/warning", "ch4/alarm", "ch4/power_cut"],
        "{a:#}"
    );
    assert!(outputs(http)["power_feedback"]["mismatch"].is_null());
    drop((sim, healthy));

    // Welded: the cut is commanded, power stays; the fault within the
    // delay (2 s) and one poll (1 s), with the siren and the red lamp.
    let (sim, dir, mut d, http) = start_with_feedback(Some("power_relay=welded"));
    wait(http, Duration::from_secs(10), "power on", |o, _| {
        o["power_allowed"] == true && o["power_feedback"]["present"] == true
    });
    ack_all(http, "王班长");
    sim.control("set 1 input 0 160");
    wait(http, Duration::from_secs(3), "power cut", |o, _| {
        o["power_allowed"] == false
    });
    let cut = Instant::now();
    let feedback = "output:power_relay:feedback/fault".to_owned();
    let took = wait(http, Duration::from_secs(6), "馈电异常", |o, a| {
        levels(a).contains(&feedback) && o["power_feedback"]["mismatch"] == "still_powered"
    });
    let since_cut = cut.elapsed();
    assert!(
        since_cut >= Duration::from_millis(1800) && since_cut <= Duration::from_secs(4),
        "within delay + one poll, not before the delay: {since_cut:?} ({took:?})"
    );
    let o = outputs(http);
    assert_eq!(o["beacon"], "red", "{o:#}");
    assert_eq!(o["power_feedback"]["present"], true, "power is still there");
    // Latching: the air clears, the relay may not come back by itself.
    sim.control("set 1 input 0 30");
    ack_all(http, "王班长");
    std::thread::sleep(Duration::from_millis(2500));
    let a = json(http, "/api/v1/alarms?active=true");
    assert!(levels(&a).contains(&feedback), "still held: {a:#}");
    assert_eq!(outputs(http)["power_allowed"], false);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(15)).success());
    // The event went to the county's lane with the alarm.
    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    let n: i64 = db
        .query_row(
            "SELECT count(*) FROM outbox WHERE lane = 0 AND kind = 'alarm' \
             AND payload LIKE '%output:power_relay:feedback%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(n >= 2, "raised and acknowledged: {n}");
}

#[test]
fn a_channel_in_calibration_is_marked_everywhere_kept_out_of_statistics_and_still_cuts_power() {
    let (sim, dir, mut d, http) = start("normal", true);
    wait(http, Duration::from_secs(10), "power on", |o, _| {
        o["power_allowed"] == true
    });
    let auth = format!("Bearer {TOKEN}");
    let call = |method: &str, path: &str, body: &str| -> (u16, Value) {
        let (s, b) = http_request(http, method, path, &[("Authorization", &auth)], body).unwrap();
        (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
    };
    // Bounded, with who and why.
    let (s, v) = call(
        "POST",
        "/api/v1/channels/ch4/calibration",
        "{\"minutes\": 121, \"reason\": \"标准气样\", \"by\": \"王班长\"}",
    );
    assert_eq!((s, v["error"].as_str()), (400, Some("bad_minutes")), "{v}");
    let (s, v) = call(
        "POST",
        "/api/v1/channels/ch4/calibration",
        "{\"reason\": \"\", \"by\": \"王班长\"}",
    );
    assert_eq!((s, v["error"].as_str()), (400, Some("bad_reason")), "{v}");
    let (s, v) = call(
        "POST",
        "/api/v1/channels/ch4/calibration",
        "{\"reason\": \"通标准气样 1.60%\", \"by\": \"王班长\"}",
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v["guards_power"], true,
        "the console says the cut still acts"
    );
    let until = v["calibration"]["until"].as_str().unwrap().to_owned();
    let (s, _) = call(
        "POST",
        "/api/v1/channels/ch4/calibration",
        "{\"reason\": \"x\", \"by\": \"王\"}",
    );
    assert_eq!(s, 409, "once at a time");
    let (_, chans) = http_get(http, "/api/v1/channels").unwrap();
    let chans: Value = serde_json::from_str(&chans).unwrap();
    let ch4 = chans
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "ch4")
        .unwrap()
        .clone();
    assert_eq!(ch4["state"], "calibrating", "{ch4}");
    assert_eq!(ch4["calibration_until"].as_str(), Some(until.as_str()));

    // The kiosk shows 标校, never the test gas as air.
    let b = pithead_e2e::webdriver::Browser::start(1024, 600);
    b.open(&format!("http://{http}/"));
    b.wait_text(
        "[data-channel='ch4'] .status",
        Duration::from_secs(15),
        "标校 on the tile",
        |t| t == "标校",
    );
    b.wait_text(
        "[data-channel='ch4'] .value",
        Duration::from_secs(5),
        "no number",
        |t| t == "标校中",
    );

    // The test gas crosses the power-cut level: power is cut all the same.
    sim.control("set 1 input 0 160");
    wait(
        http,
        Duration::from_secs(3),
        "cut while calibrating",
        |o, _| o["power_allowed"] == false,
    );
    sim.control("set 1 input 0 30");
    ack_all(http, "王班长");
    let (s, v) = call(
        "DELETE",
        "/api/v1/channels/ch4/calibration",
        "{\"by\": \"王班长\"}",
    );
    assert_eq!(s, 200, "{v}");
    let (s, _) = call(
        "DELETE",
        "/api/v1/channels/ch4/calibration",
        "{\"by\": \"王班长\"}",
    );
    assert_eq!(s, 404, "not calibrating any more");
    wait(http, Duration::from_secs(5), "power back", |o, _| {
        o["power_allowed"] == true
    });
    let (_, list) = call("GET", "/api/v1/calibrations", "");
    let of = |id: &str| {
        list["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel"] == id)
            .unwrap()
            .clone()
    };
    assert!(
        of("ch4")["last_calibrated"].is_string() && of("ch4")["overdue"] == false,
        "{list}"
    );
    assert_eq!(of("co")["overdue"], true, "never calibrated: flagged");
    drop(b);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(15)).success());

    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    let q = |sql: &str| -> i64 {
        db.query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    // The alarms raised meanwhile are calibration alarms, to the county too.
    assert!(
        q(
            "SELECT count(*) FROM outbox WHERE kind = 'alarm' AND json_extract(payload, '$.channel') = 'ch4' \
           AND json_extract(payload, '$.event') = 'raised' AND json_extract(payload, '$.calibration')"
        ) >= 1
    );
    assert_eq!(
        q(
            "SELECT count(*) FROM outbox WHERE kind = 'alarm' AND json_extract(payload, '$.channel') = 'ch4' \
           AND json_extract(payload, '$.event') = 'raised' AND json_extract(payload, '$.calibration') IS NULL"
        ),
        0,
        "every ch4 alarm was raised while calibrating"
    );
    // Its readings meanwhile are counted apart, never in the statistics.
    assert!(q("SELECT coalesce(sum(calibrating), 0) FROM aggregates WHERE channel = 'ch4'") > 0);
    assert!(
        q("SELECT count(*) FROM aggregates WHERE channel = 'ch4' AND max >= 1.6") == 0,
        "the test gas is not in any minute's maximum"
    );
    assert_eq!(
        q("SELECT count(*) FROM calibrations WHERE by = '王班长' AND ended_at IS NOT NULL"),
        1
    );
    assert_eq!(
        q("SELECT count(*) FROM events WHERE kind LIKE 'calibration.%' AND actor = '王班长'"),
        2
    );
}
