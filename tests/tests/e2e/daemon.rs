//! The daemon's lifecycle, as a real process.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of the tests: a failed unwrap is a failed test"
)]

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use pithead_e2e::{
    Daemon, Simulator, face_station, free_port, http_get, minimal_config, pithead_bin, sim_outputs,
    wait_sim_outputs,
};

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

#[test]
fn serves_health_notifies_systemd_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // Port 0: the system picks a free port (no race with another test for
    // one picked beforehand), and the daemon names it in `data/listening`.
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let data = dir.path().join("data");
    let mut d = Daemon::start_with_env(
        dir.path(),
        &minimal_config(&data, any),
        any,
        &[("NOTIFY_SOCKET", &sock_path.display().to_string())],
    );
    let http = d.http;
    assert_ne!(http.port(), 0);
    assert_eq!(
        std::fs::read_to_string(data.join("listening")).unwrap(),
        format!("http {http}\n")
    );
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no sd_notify message: {e}\n{}", d.log_text()));
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    // READY=1 is sent once the outputs are guarded, before the web server
    // (which may not get its port) serves.
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    d.wait_healthy(Duration::from_secs(20));
    let (status, body) = http_get(http, "/healthz").unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["station"], "test-station");
    assert_eq!(v["database"], "ok");
    assert!(data.join("pithead.db").exists());

    let (status, body) = http_get(http, "/no-such-page").unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("没有这个页面"), "{body}");

    d.signal(libc::SIGTERM);
    // Status lines may come first.
    loop {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no STOPPING: {e}"));
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.lines().any(|l| l == "STOPPING=1") {
            break;
        }
        assert!(msg.starts_with("STATUS="), "{msg}");
    }
    let status = d.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}\n{}", d.log_text());
    let log = d.log_text();
    assert!(
        log.contains("shutting down") && log.contains("stopped"),
        "{log}"
    );

    // The start was recorded, and the database is sound after the stop.
    let db = rusqlite::Connection::open(data.join("pithead.db")).unwrap();
    let started: i64 = db
        .query_row(
            "SELECT count(*) FROM events WHERE kind = 'daemon.started'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(started, 1);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let cfg = format!(
        "{}[log]\nformat = \"json\"\n",
        minimal_config(&dir.path().join("data"), any)
    );
    let mut d = Daemon::start(dir.path(), &cfg, any);
    d.wait_healthy(Duration::from_secs(20));
    d.signal(libc::SIGINT);
    assert!(d.wait_exit(Duration::from_secs(15)).success());
    let log = d.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{log}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
}

#[test]
fn a_damaged_database_is_named_and_the_daemon_guards_on_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join("pithead.db");
    std::fs::write(
        &db,
        b"this is not a database, it is a note left by someone".repeat(100),
    )
    .unwrap();
    let http = addr();
    let mut d = Daemon::start(dir.path(), &minimal_config(&data, http), http);
    // It serves (alarms and outputs need no disk) and says what is wrong.
    let mut health = None;
    for _ in 0..200 {
        if let Ok((503, body)) = http_get(http, "/healthz") {
            health = Some(body);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = health.unwrap_or_else(|| panic!("no 503 from /healthz:\n{}", d.log_text()));
    assert!(
        body.contains(&format!("database {} is damaged", db.display())),
        "{body}"
    );
    let log = d.log_text();
    assert!(
        log.contains(&format!("database {} is damaged", db.display())),
        "{log}"
    );
    assert!(log.contains("running WITHOUT a database"), "{log}");
    assert_eq!(
        http_get(http, "/api/v1/channels").map(|r| r.0).ok(),
        Some(200)
    );
    // Blind to who is underground, and to the alarms of before: both said.
    let (_, alarms) = http_get(http, "/api/v1/alarms?active=true").unwrap();
    for subject in ["system:alarm_history", "system:overdue_watch"] {
        assert!(alarms.contains(subject), "{subject}: {alarms}");
    }
    // The operator moves the damaged file aside: the daemon opens a new
    // database by itself, without a restart.
    std::fs::rename(&db, data.join("pithead.db.damaged")).unwrap();
    d.wait_healthy(Duration::from_secs(70));
    assert!(
        d.log_text().contains("the database is open again"),
        "{}",
        d.log_text()
    );
    assert!(data.join("pithead.db").exists());
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(15)).success(),
        "{}",
        d.log_text()
    );
}

/// A taken port (or an unreadable token file) must not take the alarms
/// down with the web server: the daemon says what is wrong, keeps guarding
/// and serves once it can.
#[test]
fn a_taken_port_is_reported_retried_and_the_outputs_keep_guarding() {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = taken.local_addr().unwrap();
    let data = dir.path().join("data");
    let mut d = Daemon::start(dir.path(), &face_station(dir.path(), http, &sim, ""), http);
    sim.control("set 1 input 0 31");
    wait_sim_outputs(&data, Duration::from_secs(15), "power allowed", |o| {
        o.get("power_relay") == Some(&true) && o.get("beacon_green") == Some(&true)
    });
    let log = d.log_text();
    assert!(
        log.contains(&format!("cannot listen on {http} (http.listen)")),
        "{log}"
    );
    // Methane over the power-cut level: the relay drops, the beacon goes
    // red, the siren sounds; no web server is needed for that.
    sim.control("set 1 input 0 160");
    wait_sim_outputs(&data, Duration::from_secs(5), "power cut", |o| {
        o.get("power_relay") == Some(&false)
            && o.get("beacon_red") == Some(&true)
            && o.get("siren") == Some(&true)
    });
    assert!(
        d.child.try_wait().ok().flatten().is_none(),
        "{}",
        d.log_text()
    );
    // The port comes free: the kiosk is served without a restart.
    drop(taken);
    d.wait_healthy(Duration::from_secs(45));
    assert!(d.log_text().contains("web server started after all"));
}

/// Killed outright, the daemon leaves its lines as they were (a Raspberry
/// Pi keeps released lines' levels); the unit's `ExecStopPost=pithead
/// outputs safe` drives them safe.
#[test]
fn after_sigkill_outputs_safe_leaves_the_relay_cut() {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = addr();
    let data = dir.path().join("data");
    let cfg = face_station(dir.path(), http, &sim, "");
    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    sim.control("set 1 input 0 31");
    wait_sim_outputs(&data, Duration::from_secs(15), "power allowed", |o| {
        o.get("power_relay") == Some(&true)
    });
    d.signal(libc::SIGKILL);
    let _ = d.wait_exit(Duration::from_secs(10));
    assert_eq!(
        sim_outputs(&data).get("power_relay"),
        Some(&true),
        "a dead daemon's relay stays as it was: what ExecStopPost is for"
    );
    let out = std::process::Command::new(pithead_bin())
        .args(["outputs", "safe", "--config"])
        .arg(dir.path().join("pithead.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o = sim_outputs(&data);
    assert_eq!(
        (
            o.get("power_relay"),
            o.get("beacon_red"),
            o.get("beacon_green"),
            o.get("siren")
        ),
        (Some(&false), Some(&true), Some(&false), Some(&false)),
        "{o:?}"
    );
}

/// A second signal ends the process at once, but the power is cut first.
#[test]
fn a_second_signal_exits_at_once_with_the_power_cut() {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = addr();
    let data = dir.path().join("data");
    let mut d = Daemon::start(dir.path(), &face_station(dir.path(), http, &sim, ""), http);
    d.wait_healthy(Duration::from_secs(20));
    sim.control("set 1 input 0 31");
    wait_sim_outputs(&data, Duration::from_secs(15), "power allowed", |o| {
        o.get("power_relay") == Some(&true)
    });
    // Two signals at once: the orderly stop has no time to run.
    d.signal(libc::SIGTERM);
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(15));
    assert!(
        !status.success() || d.log_text().contains("stopped"),
        "{status}"
    );
    wait_sim_outputs(
        &data,
        Duration::from_secs(2),
        "power cut after the exit",
        |o| o.get("power_relay") == Some(&false),
    );
}
