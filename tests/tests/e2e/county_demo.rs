//! `pithead-county demo`, as a newcomer runs it: a private PostgreSQL and
//! Mosquitto, three real stations, the dashboard with an operator made for
//! the run; Ctrl-C stops and removes all of it.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of the tests: a failed unwrap is a failed test"
)]

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pithead_e2e::{county_bin, free_port, http_request, http_request_head, pithead_bin};

#[test]
fn the_county_demo_shows_three_stations_online_in_one_command_and_cleans_up() {
    let web = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut demo = Command::new(county_bin())
        .args(["demo", "--http", &web.to_string()])
        .env("PITHEAD_BIN", pithead_bin())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(demo.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = Vec::new();
    let end = Instant::now() + Duration::from_secs(120);
    while !printed.iter().any(|l: &String| l.contains("Ctrl-C")) {
        let line = rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("the demo did not say it is up: {printed:#?}"));
        printed.push(line);
    }
    let text = printed.join("\n");
    let password = text
        .split("password: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert_eq!(password.len(), 16, "{text}");
    assert_eq!(text.matches("kiosk http://").count(), 3, "{text}");
    let dir = text
        .split(" in ")
        .nth(1)
        .and_then(|r| r.lines().next())
        .unwrap()
        .trim()
        .to_owned();
    assert!(std::path::Path::new(&dir).is_dir(), "{dir}");

    // Log in with what it printed; all three stations come online.
    let body = serde_json::json!({ "user": "演示操作员", "password": password }).to_string();
    let (s, head, b) = http_request_head(web, "POST", "/api/v1/session", &[], &body).unwrap();
    assert_eq!(s, 200, "{b}");
    let cookie = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        })
        .map(|(_, v)| v.trim().split(';').next().unwrap_or_default().to_owned())
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, list) =
            http_request(web, "GET", "/api/v1/stations", &[("Cookie", &cookie)], "").unwrap();
        let v: serde_json::Value = serde_json::from_str(&list).unwrap_or_default();
        let online = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|s| s["registered"] == true && s["presence"] == "online")
                    .count()
            })
            .unwrap_or(0);
        if online == 3 {
            break;
        }
        assert!(Instant::now() < end, "three stations online: {list}");
        std::thread::sleep(Duration::from_millis(300));
    }

    // Ctrl-C: everything stops, and the temporary directory goes.
    let pid = i32::try_from(demo.id()).unwrap();
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = demo.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < end, "the demo did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !std::path::Path::new(&dir).exists(),
        "{dir} was left behind"
    );
    assert!(
        std::net::TcpStream::connect(web).is_err(),
        "the dashboard still answers"
    );
}
