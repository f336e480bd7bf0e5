//! Supervisor accounts and console sessions: the real binary's CLI and API.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of the tests: a failed unwrap is a failed test"
)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use pithead_e2e::{Daemon, Simulator, free_port, http_request, minimal_config, pithead_bin};
use serde_json::Value;

fn user_cmd(config: &std::path::Path, args: &[&str], password: &str) -> (Option<i32>, String) {
    let mut child = Command::new(pithead_bin())
        .args(["user"])
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(mut stdin) = child.stdin.take() {
        let _ = writeln!(stdin, "{password}");
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn cookie_of(raw_headers_body: &str) -> Option<String> {
    raw_headers_body
        .split("pithead_session=")
        .nth(1)
        .map(|r| r.split(';').next().unwrap_or("").to_owned())
}

#[test]
fn a_supervisor_logs_in_acknowledges_with_csrf_and_logs_out() {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = format!(
        "{}[acquisition]\nwarm_up = \"0s\"\n\
         [[bus]]\nid = \"sim\"\ntransport = \"tcp\"\nhost = \"127.0.0.1\"\nport = {}\ntimeout = \"300ms\"\nretries = 0\n\
         [[device]]\nid = \"face\"\nbus = \"sim\"\nunit = 1\n\
         [[channel]]\nid = \"ch4\"\ndevice = \"face\"\nkind = \"ch4\"\nunit = \"%vol\"\ntable = \"input\"\naddress = 0\n\
         scale = 0.01\nrange = [0.0, 4.0]\npreset = \"cn-coal/ch4-face\"\n",
        minimal_config(&dir.path().join("data"), http),
        sim.modbus.port()
    );
    let file = dir.path().join("pithead.toml");
    std::fs::write(&file, &cfg).unwrap();
    let (code, out) = user_cmd(&file, &["add", "王班长"], "short");
    assert_eq!(code, Some(65), "{out}");
    assert!(out.contains("at least 10 characters"), "{out}");
    let (code, out) = user_cmd(&file, &["add", "王班长"], "井口安全第一 2026");
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = user_cmd(&file, &["add", "王班长"], "another password");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("exists already"), "{out}");

    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    sim.control("set 1 input 0 120");

    let login = |user: &str, pw: &str| {
        let body = serde_json::json!({ "user": user, "password": pw }).to_string();
        raw_post(http, "/api/v1/session", &[], &body)
    };
    let (s, raw) = login("王班长", "wrong password!!");
    assert_eq!(s, 401, "{raw}");
    let (s, raw) = login("王班长", "井口安全第一 2026");
    assert_eq!(s, 200, "{raw}");
    let cookie = cookie_of(&raw).unwrap_or_default();
    assert!(
        raw.contains("HttpOnly") && raw.contains("SameSite=Strict"),
        "{raw}"
    );
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: Value = serde_json::from_str(body).unwrap_or_default();
    let csrf = v["csrf"].as_str().unwrap_or_default().to_owned();
    let c = format!("pithead_session={cookie}");

    // Reading needs the session; a change needs its CSRF token too.
    let (s, b) = http_request(
        http,
        "GET",
        "/api/v1/alarms?active=true",
        &[("Cookie", &c)],
        "",
    )
    .unwrap();
    assert_eq!(s, 200, "{b}");
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let alarm_id = loop {
        let (_, b) = http_request(
            http,
            "GET",
            "/api/v1/alarms?active=true",
            &[("Cookie", &c)],
            "",
        )
        .unwrap();
        let a: Value = serde_json::from_str(&b).unwrap_or_default();
        if let Some(id) = a
            .as_array()
            .and_then(|v| v.first())
            .and_then(|x| x["id"].as_u64())
        {
            break id;
        }
        assert!(std::time::Instant::now() < end, "no alarm");
        std::thread::sleep(Duration::from_millis(100));
    };
    let path = format!("/api/v1/alarms/{alarm_id}/ack");
    let (s, b) = http_request(http, "POST", &path, &[("Cookie", &c)], "{}").unwrap();
    assert_eq!(s, 403, "no CSRF token: {b}");
    let (s, b) = http_request(
        http,
        "POST",
        &path,
        &[("Cookie", &c), ("X-CSRF-Token", &csrf)],
        "{\"by\": \"someone else\"}",
    )
    .unwrap();
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap_or_default();
    assert_eq!(
        v["alarm"]["acknowledged_by"], "王班长",
        "the session names who acted: {b}"
    );

    // Device health and the trend need the session too.
    let (s, b) = http_request(http, "GET", "/api/v1/devices", &[("Cookie", &c)], "").unwrap();
    assert_eq!(s, 200, "{b}");
    assert!(b.contains("\"id\":\"face\""), "{b}");
    let (s, b) = http_request(
        http,
        "GET",
        "/api/v1/channels/ch4/trend?hours=8",
        &[("Cookie", &c)],
        "",
    )
    .unwrap();
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap_or_default();
    assert_eq!(
        v["levels"].as_array().map(Vec::len),
        Some(2),
        "the preset's levels: {b}"
    );
    assert!(v["points"].is_array());
    let (s, _) = http_request(
        http,
        "GET",
        "/api/v1/channels/ch4/trend?hours=99",
        &[("Cookie", &c)],
        "",
    )
    .unwrap();
    assert_eq!(s, 400);
    let (s, _) = http_request(
        http,
        "GET",
        "/api/v1/channels/nope/trend",
        &[("Cookie", &c)],
        "",
    )
    .unwrap();
    assert_eq!(s, 404);
    let (s, _) = http_request(http, "GET", "/api/v1/devices", &[], "").unwrap();
    assert_eq!(s, 401);
    // The uplink's state and backlog: off here, alarm events waiting.
    let (s, b) = http_request(http, "GET", "/api/v1/uplink", &[("Cookie", &c)], "").unwrap();
    assert_eq!(s, 200, "{b}");
    let u: Value = serde_json::from_str(&b).unwrap_or_default();
    assert_eq!(
        (u["enabled"].as_bool(), u["connected"].as_bool()),
        (Some(false), Some(false)),
        "{b}"
    );
    assert!(
        u["pending"].as_i64().is_some_and(|n| n >= 2),
        "the alarm and its acknowledgement wait: {b}"
    );

    // Logging out ends the session.
    let (s, _) = http_request(http, "DELETE", "/api/v1/session", &[("Cookie", &c)], "").unwrap();
    assert_eq!(s, 204);
    let (s, _) = http_request(http, "GET", "/api/v1/underground", &[("Cookie", &c)], "").unwrap();
    assert_eq!(s, 401);

    // Guessing is limited per client address.
    for _ in 0..5 {
        assert_eq!(login("王班长", "guess guess guess").0, 401);
    }
    let (s, raw) = login("王班长", "井口安全第一 2026");
    assert_eq!(s, 429, "{raw}");
    d.signal(libc::SIGTERM);
}

/// A POST that returns the raw head and body (to see Set-Cookie).
fn raw_post(http: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    use std::io::Read as _;
    let mut s = std::net::TcpStream::connect(http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

/// Issue 15: supervisors on the LAN reach the console over HTTPS with the
/// station's own certificate (`pithead tls self-signed`); the session
/// cookie is then `Secure`, and the key is written for its owner only.
#[test]
fn the_console_is_served_over_https_with_a_self_signed_certificate() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let cfg = minimal_config(&dir.path().join("data"), http).replacen(
        &format!("listen = \"{http}\"\n"),
        &format!(
            "listen = \"{http}\"\ntls_listen = \"{https}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nnames = [\"pithead.test\"]\n",
            cert.display(),
            key.display()
        ),
        1,
    );
    let file = dir.path().join("pithead.toml");
    std::fs::write(&file, &cfg).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(pithead_bin())
            .args(args)
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    // Before the certificate exists, the configuration says what is missing.
    let (code, out) = run(&["validate"]);
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("http.tls_cert"), "{out}");
    let (code, out) = run(&["tls", "self-signed"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("SHA-256 fingerprint"), "{out}");
    let fingerprint = out
        .lines()
        .find(|l| l.starts_with("  "))
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    assert_eq!(fingerprint.split(':').count(), 32, "{out}");
    let mode = std::fs::metadata(&key)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or_default();
    assert_eq!(mode, 0o600, "the private key is its owner's only");
    // Not again by accident: browsers would have to be told again.
    let (code, out) = run(&["tls", "self-signed"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("--force"), "{out}");
    let (code, out) = run(&["validate"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = user_cmd(&file, &["add", "王班长"], "井口安全第一 2026");
    assert_eq!(code, Some(0), "{out}");

    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    let ca = std::fs::read(&cert).unwrap();
    let get = |host: &str| {
        pithead_e2e::https_request(
            https,
            &ca,
            host,
            &format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    let (s, _, b) = get("pithead.test").unwrap();
    assert_eq!(s, 200, "{b}");
    let (s, _, b) = get("localhost").unwrap();
    assert_eq!(s, 200, "{b}");
    // A name the certificate does not hold fails the handshake.
    assert!(get("elsewhere.test").is_err());

    let body = serde_json::json!({ "user": "王班长", "password": "井口安全第一 2026" }).to_string();
    let login = format!(
        "POST /api/v1/session HTTP/1.1\r\nHost: pithead.test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (s, head, b) = pithead_e2e::https_request(https, &ca, "pithead.test", &login).unwrap();
    assert_eq!(s, 200, "{head}{b}");
    let set_cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_default();
    assert!(
        set_cookie.contains("; Secure") && set_cookie.contains("HttpOnly"),
        "{head}"
    );
    // The box's own screen still talks plain HTTP on loopback; no Secure
    // cookie there (the browser would drop it).
    let (s, raw) = raw_post(http, "/api/v1/session", &[], &body);
    assert_eq!(s, 200, "{raw}");
    let plain = raw
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_default();
    assert!(
        !plain.contains("Secure") && plain.contains("HttpOnly"),
        "{raw}"
    );

    // A client that never finishes its handshake is let go.
    let mut idle = std::net::TcpStream::connect(https).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut idle, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed, nothing said");
    assert!(started.elapsed() < Duration::from_secs(25));
    d.signal(libc::SIGTERM);
}
