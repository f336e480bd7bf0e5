//! Roster and check-ins end to end: the real binary, its CLI and its API.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of the tests: a failed unwrap is a failed test"
)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use pithead_e2e::{Daemon, free_port, http_get, http_request, pithead_bin};
use serde_json::Value;

const TOKEN: &str = pithead_e2e::TEST_TOKEN;
const ROSTER: &str = "badge,name,team,role\n0001,张伟,综采一队,采煤机司机\n0002,王芳,综采一队,支架工\n0003,李强,掘进二队,班长\n";

fn setup(shift: &str) -> (tempfile::TempDir, SocketAddr, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = pithead_e2e::config_with_token(dir.path(), http)
        + &format!("[roster]\nshift_length = \"{shift}\"\noverdue_grace = \"0s\"\n");
    let file = dir.path().join("pithead.toml");
    std::fs::write(&file, cfg).unwrap();
    (dir, http, file)
}

fn import(config: &std::path::Path, csv: &str) -> (Option<i32>, String, String) {
    let f = config.with_file_name("roster.csv");
    std::fs::write(&f, csv).unwrap();
    let out = Command::new(pithead_bin())
        .args(["roster", "import", "--config"])
        .arg(config)
        .arg(&f)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn start(dir: &std::path::Path, file: &std::path::Path, http: SocketAddr) -> Daemon {
    let cfg = std::fs::read_to_string(file).unwrap();
    let mut d = Daemon::start(dir, &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    d
}

fn check(http: SocketAddr, badge: &str, direction: &str) -> (u16, Value) {
    let (s, b) = http_request(
        http,
        "POST",
        "/api/v1/checkins",
        &[],
        &format!("{{\"badge\": \"{badge}\", \"direction\": \"{direction}\"}}"),
    )
    .unwrap();
    (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
}

fn authed(http: SocketAddr, path: &str) -> Value {
    let auth = format!("Bearer {TOKEN}");
    let (s, b) = http_request(http, "GET", path, &[("Authorization", &auth)], "").unwrap();
    assert_eq!(s, 200, "{b}");
    serde_json::from_str(&b).unwrap_or_else(|e| panic!("{e}: {b}"))
}

#[test]
fn the_cli_imports_a_roster_or_reports_every_bad_line() {
    let (_dir, _http, file) = setup("8h");
    let (code, _, err) = import(
        &file,
        "badge,name,team,role\n0001,张伟,队,工\n,无卡,队,工\n0001,重复,队,工\n",
    );
    assert_eq!(code, Some(65), "{err}");
    assert!(err.contains("roster.csv:3: the badge is empty"), "{err}");
    assert!(
        err.contains("roster.csv:4: badge 0001 is listed twice"),
        "{err}"
    );
    assert!(err.contains("2 problems; nothing was imported"), "{err}");
    let (code, out, err) = import(&file, ROSTER);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("3 workers — 3 added, 0 updated, 0 unchanged, 0 no longer on the roster"),
        "{out}"
    );
    let (code, out, _) = import(
        &file,
        "badge,name,team,role\n0001,张伟,综采一队,采煤机司机\n0002,王芳,综采二队,支架工\n",
    );
    assert_eq!(code, Some(0));
    assert!(
        out.contains("0 added, 1 updated, 1 unchanged, 1 no longer on the roster"),
        "{out}"
    );
}

#[test]
fn check_ins_and_outs_are_answered_clearly_and_all_recorded() {
    let (dir, http, file) = setup("8h");
    assert_eq!(import(&file, ROSTER).0, Some(0));
    let d = start(dir.path(), &file, http);

    let (s, v) = check(http, " 0001 ", "in");
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["record"]["name"], "张伟");
    assert!(
        v["message_zh"]
            .as_str()
            .unwrap_or("")
            .contains("下井登记成功"),
        "{v}"
    );
    let (s, v) = check(http, "0001", "in");
    assert_eq!(
        (s, v["record"]["outcome"].as_str()),
        (409, Some("already_in")),
        "{v}"
    );
    let (s, v) = check(http, "0009", "in");
    assert_eq!(
        (s, v["record"]["outcome"].as_str()),
        (404, Some("unknown_badge")),
        "{v}"
    );
    assert!(
        v["message_zh"]
            .as_str()
            .unwrap_or("")
            .contains("不在花名册"),
        "{v}"
    );
    let (s, v) = check(http, "0002", "out");
    assert_eq!(
        (s, v["record"]["outcome"].as_str()),
        (409, Some("not_in")),
        "{v}"
    );
    check(http, "0003", "in");

    let u = authed(http, "/api/v1/underground");
    assert_eq!(u["count"], 2, "{u}");
    assert_eq!(u["people"][0]["badge"], "0001");
    assert_eq!(u["people"][1]["name"], "李强");

    let (s, v) = check(http, "0001", "out");
    assert_eq!(
        (s, v["record"]["outcome"].as_str()),
        (201, Some("ok")),
        "{v}"
    );
    assert_eq!(v["record"]["minutes_underground"], 0);
    assert_eq!(authed(http, "/api/v1/underground")["count"], 1);

    // Bad input: an answer, and nothing recorded.
    for body in [
        "{\"badge\": \"<script>\", \"direction\": \"in\"}",
        "{\"badge\": \"0001\", \"direction\": \"down\"}",
        "nonsense",
        "{}",
    ] {
        let (s, b) = http_request(http, "POST", "/api/v1/checkins", &[], body).unwrap();
        assert_eq!(s, 400, "{body}: {b}");
        assert!(b.contains("message_zh"), "{b}");
    }
    let (s, _) = http_get(http, "/api/v1/underground").unwrap();
    assert_eq!(s, 401, "the underground list is for supervisors");

    drop(d);
    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    let q = |sql: &str| -> i64 {
        db.query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    assert_eq!(
        q("SELECT count(*) FROM checkins"),
        6,
        "every attempt, refused ones too"
    );
    assert_eq!(q("SELECT count(*) FROM outbox WHERE kind = 'checkin'"), 6);
    assert_eq!(
        q("SELECT count(*) FROM checkins WHERE outcome = 'unknown_badge' AND badge = '0009'"),
        1
    );
}

#[test]
fn a_check_in_answered_ok_survives_sigkill() {
    let (dir, http, file) = setup("8h");
    let csv: String = std::iter::once("badge,name,team,role\n".to_owned())
        .chain((0..60).map(|i| format!("{i:04},工人{i},一队,工\n")))
        .collect();
    assert_eq!(import(&file, &csv).0, Some(0));
    let mut d = start(dir.path(), &file, http);
    for i in 0..60 {
        let (s, v) = check(http, &format!("{i:04}"), "in");
        assert_eq!(s, 201, "{v}");
    }
    d.signal(libc::SIGKILL);
    let _ = d.wait_exit(Duration::from_secs(10));
    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    let q = |sql: &str| -> i64 {
        db.query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    assert_eq!(q("SELECT count(*) FROM checkins WHERE outcome = 'ok'"), 60);
    assert_eq!(q("SELECT count(*) FROM underground"), 60);
    assert_eq!(q("SELECT count(*) FROM outbox WHERE kind = 'checkin'"), 60);
}

#[test]
fn an_overdue_miner_raises_an_alarm_that_clears_on_check_out() {
    let (dir, http, file) = setup("2s");
    assert_eq!(import(&file, ROSTER).0, Some(0));
    let _d = start(dir.path(), &file, http);
    assert_eq!(check(http, "0003", "in").0, 201);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let a = authed(http, "/api/v1/alarms?active=true");
        if a.as_array().is_some_and(|v| {
            v.iter()
                .any(|x| x["level"] == "overdue" && x["channel"] == "worker:0003")
        }) {
            break;
        }
        assert!(Instant::now() < end, "no overdue alarm: {a}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // To anyone else, the alarm says a miner is overdue, not which.
    let (_, public) = http_get(http, "/api/v1/alarms?active=true").unwrap();
    assert!(
        public.contains("\"channel\":\"worker\"") && !public.contains("0003"),
        "{public}"
    );
    let o = authed(http, "/api/v1/outputs");
    assert_eq!(
        (o["siren"].as_bool(), o["beacon"].as_str()),
        (Some(true), Some("yellow")),
        "{o}"
    );
    assert_eq!(
        authed(http, "/api/v1/underground")["people"][0]["overdue"],
        true
    );
    assert_eq!(check(http, "0003", "out").0, 201);
    let end = Instant::now() + Duration::from_secs(10);
    while authed(http, "/api/v1/alarms?active=true")
        .as_array()
        .is_some_and(|v| !v.is_empty())
    {
        assert!(Instant::now() < end, "overdue alarm did not clear");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_roster_uploads_over_the_api_all_or_nothing() {
    let (dir, http, file) = setup("8h");
    let _d = start(dir.path(), &file, http);
    let auth = format!("Bearer {TOKEN}");
    let (s, b) = http_request(
        http,
        "POST",
        "/api/v1/roster",
        &[("Authorization", &auth)],
        "badge,name,team,role\n1,a,b,c\n1,a,b,c\n",
    )
    .unwrap();
    assert_eq!(s, 422, "{b}");
    assert!(b.contains("listed twice"), "{b}");
    assert_eq!(authed(http, "/api/v1/roster"), serde_json::json!([]));
    let (s, b) = http_request(
        http,
        "POST",
        "/api/v1/roster",
        &[("Authorization", &auth)],
        ROSTER,
    )
    .unwrap();
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        authed(http, "/api/v1/roster").as_array().map(Vec::len),
        Some(3)
    );
    let (s, _) = http_request(http, "POST", "/api/v1/roster", &[], ROSTER).unwrap();
    assert_eq!(s, 401);
}

/// A roster import that drops someone underground never strands them: the
/// check-out at the kiosk is accepted. A supervisor can check someone out
/// by hand, with a reason, recorded with who and why and kept beside the
/// roll.
#[test]
fn nobody_is_stranded_underground_by_an_import_and_a_supervisor_can_check_out_by_hand() {
    let (dir, http, file) = setup("8h");
    assert_eq!(import(&file, ROSTER).0, Some(0));
    let d = start(dir.path(), &file, http);
    assert_eq!(check(http, "0001", "in").0, 201);
    assert_eq!(check(http, "0002", "in").0, 201);
    // 张伟 leaves the roster while underground.
    let auth = format!("Bearer {TOKEN}");
    let (s, b) = pithead_e2e::http_send(
        http,
        "POST",
        "/api/v1/roster",
        &[("Authorization", &auth)],
        Some("text/csv; charset=utf-8"),
        b"badge,name,team,role\n0002,\xe7\x8e\x8b\xe8\x8a\xb3,\xe7\xbb\xbc\xe9\x87\x87\xe4\xb8\x80\xe9\x98\x9f,\xe6\x94\xaf\xe6\x9e\xb6\xe5\xb7\xa5\n",
    )
    .unwrap();
    assert_eq!(s, 200, "{b}");
    let (s, v) = check(http, "0001", "out");
    assert_eq!(s, 201, "{v}");
    assert!(
        v["message_zh"]
            .as_str()
            .unwrap_or_default()
            .contains("张伟"),
        "{v}"
    );
    // Off the roster now: he cannot go down again.
    assert_eq!(check(http, "0001", "in").0, 404);

    // By hand: a reason is required, and only for someone underground.
    let by_hand = |badge: &str, body: &str| {
        http_request(
            http,
            "POST",
            &format!("/api/v1/underground/{badge}/checkout"),
            &[("Authorization", &auth)],
            body,
        )
        .unwrap()
    };
    assert_eq!(
        by_hand("0002", "{\"reason\": \"\", \"by\": \"王班长\"}").0,
        400
    );
    assert_eq!(
        by_hand("0002", "{\"reason\": \"x\"}").0,
        400,
        "who, with the token"
    );
    assert_eq!(
        http_request(
            http,
            "POST",
            "/api/v1/underground/0002/checkout",
            &[],
            "{\"reason\": \"x\"}"
        )
        .map(|r| r.0)
        .ok(),
        Some(401),
        "never without a supervisor"
    );
    let (s, b) = by_hand(
        "0002",
        "{\"reason\": \"卡丢失，已确认在地面\", \"by\": \"王班长\"}",
    );
    assert_eq!(s, 201, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap_or_default();
    assert_eq!(
        (v["direction"].as_str(), v["by"].as_str()),
        (Some("out"), Some("王班长"))
    );
    assert_eq!(
        by_hand("0002", "{\"reason\": \"again\", \"by\": \"王班长\"}").0,
        409
    );
    let u = authed(http, "/api/v1/underground");
    assert_eq!(u["count"], 0, "{u}");
    let hand = &u["checked_out_by_hand"][0];
    assert_eq!(
        (
            hand["name"].as_str(),
            hand["by"].as_str(),
            hand["reason"].as_str()
        ),
        (Some("王芳"), Some("王班长"), Some("卡丢失，已确认在地面")),
        "{u}"
    );
    // The county gets it with who and why.
    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    let payload: String = db
        .query_row(
            "SELECT payload FROM outbox WHERE kind = 'checkin' ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        payload.contains("卡丢失") && payload.contains("\"by\":\"王班长\""),
        "{payload}"
    );
    drop(d);
}

/// Issue 15: a client on the station LAN is no kiosk. Check-ins and
/// check-outs come from the box's own screen (loopback) or a kiosk with a
/// key, and each record says which; anyone else gets 403 and no name. A
/// request naming another host (DNS rebinding) and a change sent from
/// another site are refused; a LAN address may hold a few live streams,
/// not all.
#[test]
fn only_kiosks_check_miners_in_and_out_and_the_lan_is_kept_at_arms_length() {
    let (dir, _, file) = setup("8h");
    assert_eq!(import(&file, ROSTER).0, Some(0));
    let lan = pithead_e2e::lan_ip();
    let port = free_port();
    let keys = dir.path().join("kiosk-keys");
    pithead_e2e::write_secret(&keys, "lamp-room 0123456789abcdef0123456789\n");
    let cfg = std::fs::read_to_string(&file).unwrap_or_default().replacen(
        "listen = \"127.0.0.1:",
        &format!(
            "allow_plain_http = true\nnames = [\"{lan}\"]\nlisten = \"0.0.0.0:{port}\"\n# was "
        ),
        1,
    ) + &format!("[kiosk]\nkeys_file = \"{}\"\n", keys.display());
    std::fs::write(&file, &cfg).unwrap();
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    let from_lan = SocketAddr::new(lan, port);
    let mut d = Daemon::start(dir.path(), &cfg, local);
    d.wait_healthy(Duration::from_secs(20));
    assert!(
        d.log_text().contains("serving plain HTTP beyond this box"),
        "{}",
        d.log_text()
    );
    let body = "{\"badge\": \"0001\", \"direction\": \"in\"}";
    // From the LAN, without a key: refused, and nothing personal said.
    let (s, b) = http_request(from_lan, "POST", "/api/v1/checkins", &[], body).unwrap();
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("not_a_kiosk") && !b.contains("张伟"), "{b}");
    let wrong = [("X-Kiosk-Key", "0123456789abcdef0123456789-not")];
    assert_eq!(
        http_request(from_lan, "POST", "/api/v1/checkins", &wrong, body)
            .map(|r| r.0)
            .ok(),
        Some(403)
    );
    // With its key, the lamp room's kiosk; on the box, the local one.
    let key = [("X-Kiosk-Key", "0123456789abcdef0123456789")];
    let (s, b) = http_request(from_lan, "POST", "/api/v1/checkins", &key, body).unwrap();
    assert_eq!(s, 201, "{b}");
    assert!(b.contains("\"kiosk\":\"lamp-room\""), "{b}");
    let (s, b) = check(local, "0002", "in");
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["record"]["kiosk"], "local");
    // Another host named: refused before anything is done.
    let (s, b) = http_request(
        local,
        "GET",
        "/api/v1/channels",
        &[("Host", "evil.example:8080")],
        "",
    )
    .unwrap();
    assert_eq!(s, 421, "{b}");
    // A report from another site, as a form would send it: refused.
    let (s, b) = pithead_e2e::http_send(
        from_lan,
        "POST",
        "/api/v1/hazards",
        &[("Origin", "http://evil.example")],
        Some("text/plain"),
        b"{\"category\":\"gas\",\"location\":\"x\",\"grade\":\"general\",\"description\":\"x\",\"anonymous\":true}",
    )
    .unwrap();
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("cross_site"), "{b}");
    let (s, _) = pithead_e2e::http_send(
        from_lan,
        "POST",
        "/api/v1/hazards",
        &[("Sec-Fetch-Site", "cross-site")],
        Some("application/json"),
        b"{\"category\":\"gas\",\"location\":\"x\",\"grade\":\"general\",\"description\":\"x\",\"anonymous\":true}",
    )
    .unwrap();
    assert_eq!(s, 403);
    // JSON answers are not sniffed, and those with names not cached.
    let head = raw_head(local, "/api/v1/channels");
    assert!(
        head.contains("x-content-type-options: nosniff")
            && head.contains("cache-control: no-store"),
        "{head}"
    );
    // /metrics is limited per LAN address like the other public endpoints.
    let limited = (0..40)
        .map(|_| {
            pithead_e2e::http_get(from_lan, "/metrics")
                .map(|r| r.0)
                .unwrap_or(0)
        })
        .filter(|s| *s == 429)
        .count();
    assert!(limited > 0, "/metrics never limited");
    // Live streams: a LAN address holds a few, never the box's own slots.
    let streams: Vec<u16> = (0..6).map(|_| stream_status(from_lan)).collect();
    assert_eq!(
        streams.iter().filter(|s| **s == 200).count(),
        4,
        "{streams:?}"
    );
    assert_eq!(
        stream_status(local),
        200,
        "the box's own screen still gets one"
    );
    d.signal(libc::SIGTERM);
    let _ = d.wait_exit(Duration::from_secs(15));
}

/// The head of a GET's answer, lower case.
fn raw_head(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Opens a live stream and keeps it (the connection is leaked on purpose
/// until the test ends); its status.
fn stream_status(addr: SocketAddr) -> u16 {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let _ = write!(s, "GET /api/v1/stream HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    let status = String::from_utf8_lossy(&buf[..n])
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    std::mem::forget(s);
    status
}

#[test]
fn a_check_in_beyond_the_limit_is_recorded_and_raises_overcrowded_until_the_count_falls() {
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // Two for the mine, one for 综采一队; a shift long enough for nobody
    // to be overdue meanwhile.
    let cfg = pithead_e2e::config_with_token(dir.path(), http)
        + "[roster]\nshift_length = \"8h\"\nmax_underground = 2\nmax_per_team = { \"综采一队\" = 1 }\n";
    let file = dir.path().join("pithead.toml");
    std::fs::write(&file, cfg).unwrap();
    assert_eq!(import(&file, ROSTER).0, Some(0));
    let d = start(dir.path(), &file, http);
    let crowded = |http| -> Vec<(String, f64)> {
        authed(http, "/api/v1/alarms?active=true")
            .as_array()
            .map(|v| {
                v.iter()
                    .filter(|x| x["level"] == "overcrowded")
                    .map(|x| {
                        (
                            x["channel"].as_str().unwrap_or("").to_owned(),
                            x["value"].as_f64().unwrap_or(-1.0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let until = |http, what: &str, want: &[(&str, f64)]| {
        let end = Instant::now() + Duration::from_secs(3);
        loop {
            let mut got = crowded(http);
            got.sort_by(|a, b| a.0.cmp(&b.0));
            if got
                .iter()
                .map(|(s, n)| (s.as_str(), *n))
                .collect::<Vec<_>>()
                == want
            {
                return;
            }
            assert!(Instant::now() < end, "{what}: {got:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let (s, v) = check(http, "0003", "in");
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["overcrowded"], serde_json::json!([]));
    let (s, v) = check(http, "0001", "in");
    assert_eq!(
        (s, v["overcrowded"].as_array().map(Vec::len)),
        (201, Some(0)),
        "{v}"
    );
    until(http, "within both limits", &[]);
    // The second of 综采一队: over the team's limit, recorded all the same.
    let (s, v) = check(http, "0002", "in");
    assert_eq!(s, 201, "never kept from checking in: {v}");
    let over: Vec<&str> = v["overcrowded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["subject"].as_str().unwrap())
        .collect();
    assert_eq!(over, ["underground", "team:综采一队"], "{v}");
    assert_eq!(v["overcrowded"][0]["count"], 3);
    assert_eq!(v["overcrowded"][0]["limit"], 2);
    assert!(
        v["message_zh"]
            .as_str()
            .unwrap()
            .contains("井下已超员（3 人，限 2 人）"),
        "{v}"
    );
    until(
        http,
        "overcrowded at once",
        &[("team:综采一队", 2.0), ("underground", 3.0)],
    );
    assert_eq!(
        authed(http, "/api/v1/underground")["people"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    let o = authed(http, "/api/v1/outputs");
    assert_eq!(
        (o["siren"].as_bool(), o["beacon"].as_str()),
        (Some(true), Some("yellow")),
        "{o}"
    );
    // One comes up: the mine is within its limit, the team too.
    assert_eq!(check(http, "0001", "out").0, 201);
    until(http, "cleared by the count", &[]);
    // A clean stop: the recorder writes what the outputs already showed.
    let mut d = d;
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(15)).success());
    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    let n: i64 = db
        .query_row(
            "SELECT count(*) FROM outbox WHERE kind = 'alarm' AND payload LIKE '%\"overcrowded\"%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 4, "raised and cleared, mine and team, to the county");
}
