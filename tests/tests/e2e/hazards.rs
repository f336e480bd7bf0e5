//! Hazard reports end to end: the real binary's API.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of the tests: a failed unwrap is a failed test"
)]

use std::net::SocketAddr;
use std::time::Duration;

use pithead_e2e::{Daemon, free_port, http_get, http_request, jpeg_with_gps, multipart};
use serde_json::Value;

const TOKEN: &str = pithead_e2e::TEST_TOKEN;

fn start() -> (tempfile::TempDir, Daemon, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = pithead_e2e::config_with_token(dir.path(), http);
    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    (dir, d, http)
}

fn post(http: SocketAddr, path: &str, body: &str, auth: bool) -> (u16, Value) {
    let a = format!("Bearer {TOKEN}");
    let h: Vec<(&str, &str)> = if auth {
        vec![("Authorization", &a)]
    } else {
        vec![]
    };
    let (s, b) = http_request(http, "POST", path, &h, body).unwrap();
    (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
}

const XSS: &str = "<img src=x onerror=alert(1)> 顶板\\\"掉渣'; DROP TABLE hazards;--";

#[test]
fn a_report_gets_a_ticket_and_goes_through_the_closed_loop() {
    let (dir, d, http) = start();
    let body = format!(
        "{{\"category\": \"roof\", \"location\": \"1201 回风巷\", \"grade\": \"major\", \"description\": \"{XSS}\", \"anonymous\": false, \"badge\": \"0042\"}}"
    );
    let (s, v) = post(http, "/api/v1/hazards", &body, false);
    assert_eq!(s, 201, "{v}");
    let ticket = v["ticket"].as_str().unwrap_or_default().to_owned();
    assert_eq!(ticket.len(), 6);
    assert!(v["message_zh"].as_str().unwrap_or("").contains(&ticket));

    // The public lookup never shows who reported it; text comes back as text.
    let (s, b) = http_get(http, &format!("/api/v1/hazards/{}", ticket.to_lowercase())).unwrap();
    assert_eq!(s, 200, "{b}");
    let h: Value = serde_json::from_str(&b).unwrap_or_default();
    assert!(h["reporter"].is_null(), "{h}");
    // Nor what was said (it may name people): category, place, status.
    assert!(h["description"].is_null() && h["by"].is_null(), "{h}");
    assert_eq!(h["category"], "roof");
    assert_eq!(h["status"], "reported");
    // Supervisors see the description, as text.
    let (s, b) = http_request(
        http,
        "GET",
        "/api/v1/hazards",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        "",
    )
    .unwrap();
    assert_eq!(s, 200, "{b}");
    let list: Value = serde_json::from_str(&b).unwrap_or_default();
    assert_eq!(list[0]["description"], XSS.replace("\\\"", "\""), "{list}");

    let steps = format!("/api/v1/hazards/{ticket}/steps");
    let (s, v) = post(
        http,
        &steps,
        "{\"status\": \"closed\", \"by\": \"王\"}",
        true,
    );
    assert_eq!(s, 409, "no closing without rectification: {v}");
    let (s, v) = post(
        http,
        &steps,
        "{\"status\": \"rejected\", \"by\": \"王\"}",
        true,
    );
    assert_eq!(s, 409, "rejecting needs a reason: {v}");
    let (s, _) = post(
        http,
        &steps,
        "{\"status\": \"acknowledged\", \"by\": \"王\"}",
        false,
    );
    assert_eq!(s, 401, "triage is for supervisors");
    assert_eq!(
        post(
            http,
            &steps,
            "{\"status\": \"acknowledged\", \"by\": \"王班长\"}",
            true
        )
        .0,
        200
    );
    let (s, v) = post(
        http,
        &steps,
        "{\"status\": \"assigned\", \"by\": \"王班长\", \"owner\": \"李工\"}",
        true,
    );
    assert_eq!(s, 409, "assigning needs measures and a deadline: {v}");
    // A major hazard: the five in place, and its category of the fifteen.
    let (s, v) = post(
        http,
        &steps,
        "{\"status\": \"assigned\", \"by\": \"王班长\", \"owner\": \"李工\", \"measures\": \"加强支护\", \"deadline\": \"2020-01-01T08:00:00Z\"}",
        true,
    );
    assert_eq!(s, 409, "no funds, no plan: {v}");
    assert!(
        v["message_zh"].as_str().unwrap_or("").contains("五落实"),
        "{v}"
    );
    let (s, v) = post(
        http,
        &steps,
        "{\"status\": \"assigned\", \"by\": \"王班长\", \"owner\": \"李工\", \"measures\": \"加强支护\", \"deadline\": \"2020-01-01T08:00:00Z\", \"funds\": \"3 万元\", \"plan\": \"顶板冒落撤人预案\"}",
        true,
    );
    assert_eq!(s, 409, "no category: {v}");
    let (s, v) = post(
        http,
        &steps,
        "{\"status\": \"assigned\", \"by\": \"王班长\", \"owner\": \"李工\", \"measures\": \"加强支护\", \"deadline\": \"2020-01-01T08:00:00Z\", \"funds\": \"3 万元\", \"plan\": \"顶板冒落撤人预案\", \"major_category\": \"no_such\"}",
        true,
    );
    assert_eq!(s, 400, "a category the standard does not have: {v}");
    let (s, v) = post(
        http,
        &steps,
        "{\"status\": \"assigned\", \"by\": \"王班长\", \"owner\": \"李工\", \"measures\": \"加强支护\", \"deadline\": \"2020-01-01T08:00:00Z\", \"funds\": \"3 万元\", \"plan\": \"顶板冒落撤人预案\", \"major_category\": \"other\"}",
        true,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (
            v["funds"].as_str(),
            v["plan"].as_str(),
            v["major_category"].as_str()
        ),
        (Some("3 万元"), Some("顶板冒落撤人预案"), Some("other")),
        "{v}"
    );
    assert_eq!(v["overdue"], true, "past its deadline: {v}");
    assert_eq!(
        post(
            http,
            &steps,
            "{\"status\": \"rectified\", \"by\": \"李工\", \"note\": \"已加锚杆\"}",
            true
        )
        .0,
        200
    );
    let (s, v) = post(
        http,
        &steps,
        "{\"status\": \"closed\", \"by\": \"王班长\", \"note\": \"验收合格，销号\"}",
        true,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["steps"].as_array().map(Vec::len), Some(5));
    assert_eq!(v["reporter"], "0042", "supervisors see the reporter");
    assert_eq!(
        post(
            http,
            &steps,
            "{\"status\": \"rejected\", \"by\": \"王\", \"note\": \"x\"}",
            true
        )
        .0,
        409
    );

    drop(d);
    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    let q = |sql: &str| -> i64 {
        db.query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    assert_eq!(
        q("SELECT count(*) FROM outbox WHERE kind = 'hazard' AND lane = 1"),
        5
    );
    assert_eq!(
        q(
            "SELECT count(*) FROM outbox WHERE kind = 'hazard' AND json_extract(payload, '$.urgent') = 1"
        ),
        5
    );
    assert_eq!(
        q("SELECT count(*) FROM hazards WHERE description LIKE '%DROP TABLE%'"),
        1,
        "stored as text, not run"
    );
}

#[test]
fn bad_reports_get_a_reason_and_nothing_is_stored() {
    let (dir, d, http) = start();
    let long = "长".repeat(2001);
    for (body, why) in [
        (
            "{\"category\": \"roof\", \"location\": \"x\", \"grade\": \"major\", \"description\": \"\", \"anonymous\": true}",
            "描述",
        ),
        (
            "{\"category\": \"meteor\", \"location\": \"x\", \"grade\": \"major\", \"description\": \"d\", \"anonymous\": true}",
            "格式",
        ),
        (
            "{\"category\": \"roof\", \"location\": \"x\", \"grade\": \"huge\", \"description\": \"d\", \"anonymous\": true}",
            "格式",
        ),
        (
            "{\"category\": \"roof\", \"location\": \"x\", \"grade\": \"general\", \"description\": \"d\"}",
            "匿名",
        ),
        (
            "{\"category\": \"roof\", \"location\": \"x\", \"grade\": \"general\", \"description\": \"d\", \"anonymous\": true, \"extra\": 1}",
            "格式",
        ),
        ("not json", "格式"),
    ] {
        let (s, v) = post(http, "/api/v1/hazards", body, false);
        assert_eq!(s, 400, "{body}: {v}");
        assert!(
            v["message_zh"].as_str().unwrap_or("").contains(why),
            "{body}: {v}"
        );
    }
    let body = format!(
        "{{\"category\": \"roof\", \"location\": \"x\", \"grade\": \"general\", \"description\": \"{long}\", \"anonymous\": true}}"
    );
    assert_eq!(post(http, "/api/v1/hazards", &body, false).0, 400);
    let (s, _) = http_get(http, "/api/v1/hazards/NOSUCH").unwrap();
    assert_eq!(s, 404);
    let (s, _) = http_get(http, "/api/v1/hazards/..%2F..%2Fetc").unwrap();
    assert_eq!(s, 400);
    let (s, _) = http_get(http, "/api/v1/hazards").unwrap();
    assert_eq!(s, 401, "the list is for supervisors");
    drop(d);
    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    let n: i64 = db
        .query_row("SELECT count(*) FROM hazards", [], |r| r.get(0))
        .unwrap_or(-1);
    assert_eq!(n, 0);
}

const REPORT: &str = "{\"category\": \"water\", \"location\": \"中央水仓\", \"grade\": \"general\", \"description\": \"水仓渗水\", \"anonymous\": true}";

#[test]
fn a_photo_is_sniffed_stripped_of_its_location_and_stored_by_hash() {
    let (dir, _d, http) = start();
    let (ct, body) = multipart(REPORT, Some(&jpeg_with_gps()));
    let (s, b) =
        pithead_e2e::http_send(http, "POST", "/api/v1/hazards", &[], Some(&ct), &body).unwrap();
    assert_eq!(s, 201, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap_or_default();
    assert_eq!(v["photo"], true);
    let ticket = v["ticket"].as_str().unwrap_or_default();
    let (s, photo) = http_get(http, &format!("/api/v1/hazards/{ticket}/photo")).unwrap();
    assert_eq!(s, 200);
    assert!(!photo.contains("GPS"), "the location is gone: {photo:?}");
    // Exactly what decoding needs: tables, frame, scan, end; no JFIF or
    // EXIF segment, no comment, nothing after the end of the image.
    let segment = |marker: u8, data: &[u8]| {
        let mut s = vec![0xFF, marker];
        s.extend_from_slice(&u16::try_from(data.len() + 2).unwrap_or(0).to_be_bytes());
        s.extend_from_slice(data);
        s
    };
    let mut kept = vec![0xFF, 0xD8];
    kept.extend(segment(0xDB, &[0; 65]));
    kept.extend(segment(0xC0, &[8, 0, 1, 0, 1, 1, 1, 0x11, 0]));
    kept.extend(segment(0xC4, &[0; 17]));
    kept.extend(segment(0xDA, &[1, 1, 0, 0, 0x3F, 0]));
    kept.extend_from_slice(&[0x11, 0x22, 0x33, 0xFF, 0xD9]);
    assert_eq!(photo, String::from_utf8_lossy(&kept), "the served photo");
    let files: Vec<String> = std::fs::read_dir(dir.path().join("data/photos"))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].ends_with(".jpg") && files[0].len() == 68,
        "{files:?}"
    );

    // Not an image, whatever it says it is: 415 and nothing stored.
    let (ct, body) = multipart(REPORT, Some(b"<svg onload=alert(1)></svg>"));
    let (s, b) =
        pithead_e2e::http_send(http, "POST", "/api/v1/hazards", &[], Some(&ct), &body).unwrap();
    assert_eq!(s, 415, "{b}");
    // Too large: 413.
    let mut big = jpeg_with_gps();
    big.resize(6 * 1024 * 1024, 0);
    let (ct, body) = multipart(REPORT, Some(&big));
    let (s, b) =
        pithead_e2e::http_send(http, "POST", "/api/v1/hazards", &[], Some(&ct), &body).unwrap();
    assert_eq!(s, 413, "{b}");
    // A report without its JSON part.
    let (s, _) = pithead_e2e::http_send(
        http,
        "POST",
        "/api/v1/hazards",
        &[],
        Some("multipart/form-data; boundary=x"),
        b"--x\r\nContent-Disposition: form-data; name=\"photo\"\r\n\r\nabc\r\n--x--\r\n",
    )
    .unwrap();
    assert_eq!(s, 400);
    let (s, _) = http_get(http, "/api/v1/hazards/NOSUCH/photo").unwrap();
    assert_eq!(s, 404);
    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    let n: i64 = db
        .query_row("SELECT count(*) FROM hazards", [], |r| r.get(0))
        .unwrap_or(-1);
    assert_eq!(n, 1, "only the good report was taken");
}

/// A multipart body from `parts` (name, extra headers, content) with
/// boundary `b`.
fn parts(b: &str, parts: &[(&str, &str, &[u8])], close: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, headers, content) in parts {
        out.extend_from_slice(
            format!("--{b}\r\nContent-Disposition: form-data; name=\"{name}\"{headers}\r\n\r\n")
                .as_bytes(),
        );
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    }
    out
}

/// Item 6 of RELIABILITY.md: hostile multipart bodies. Each is answered
/// 201 (a well-formed report hidden in it) or 4xx with a reason in both
/// languages, never 5xx; a body that names two reports or two photos is
/// refused; the daemon stays healthy and stores exactly the reports it
/// answered 201, each photo with them.
#[test]
fn hostile_multipart_bodies_get_a_reason_never_a_5xx() {
    let (dir, mut d, http) = start();
    let ct = "multipart/form-data; boundary=XyZ";
    let jpeg = jpeg_with_gps();
    let report = REPORT.as_bytes();
    let other = REPORT.replace("水仓渗水", "另一条").into_bytes();
    let mut cases: Vec<(&str, String, Vec<u8>)> = vec![
        (
            "no closing boundary",
            ct.into(),
            parts("XyZ", &[("report", "", report)], false),
        ),
        (
            "cut inside a part",
            ct.into(),
            parts("XyZ", &[("report", "", report)], true)[..40].to_vec(),
        ),
        (
            "no boundary parameter",
            "multipart/form-data".into(),
            parts("XyZ", &[("report", "", report)], true),
        ),
        (
            "another boundary",
            ct.into(),
            parts("AbC", &[("report", "", report)], true),
        ),
        (
            "two reports",
            ct.into(),
            parts(
                "XyZ",
                &[("report", "", report), ("report", "", &other)],
                true,
            ),
        ),
        (
            "two photos",
            ct.into(),
            parts(
                "XyZ",
                &[
                    ("report", "", report),
                    ("photo", "; filename=\"a.jpg\"", &jpeg),
                    ("photo", "; filename=\"b.jpg\"", &jpeg),
                ],
                true,
            ),
        ),
        (
            "report not UTF-8",
            ct.into(),
            parts(
                "XyZ",
                &[("report", "", b"{\"category\": \"\xff\xfe\"}")],
                true,
            ),
        ),
        (
            "a 100 KB header",
            ct.into(),
            parts(
                "XyZ",
                &[(
                    "report",
                    &format!("\r\nX-Junk: {}", "j".repeat(100_000)),
                    report,
                )],
                true,
            ),
        ),
        ("10 000 empty parts", ct.into(), {
            let empties: Vec<(&str, &str, &[u8])> =
                (0..10_000).map(|_| ("junk", "", &b""[..])).collect();
            parts("XyZ", &empties, true)
        }),
        (
            "a nested multipart",
            ct.into(),
            parts(
                "XyZ",
                &[(
                    "report",
                    "\r\nContent-Type: multipart/mixed; boundary=in",
                    b"--in\r\n\r\nx\r\n--in--",
                )],
                true,
            ),
        ),
        (
            "the photo as the report",
            ct.into(),
            parts(
                "XyZ",
                &[(
                    "report",
                    "; filename=\"r.jpg\"\r\nContent-Type: image/jpeg",
                    &jpeg,
                )],
                true,
            ),
        ),
        (
            "a photo without a report",
            ct.into(),
            parts("XyZ", &[("photo", "; filename=\"a.jpg\"", &jpeg)], true),
        ),
        (
            "a quote in the name",
            ct.into(),
            parts("XyZ", &[("report\"; name=\"photo", "", report)], true),
        ),
        (
            "well-formed, with unknown parts",
            ct.into(),
            parts(
                "XyZ",
                &[
                    ("junk", "", b"x"),
                    ("report", "", report),
                    ("photo", "; filename=\"a.jpg\"", &jpeg),
                ],
                true,
            ),
        ),
    ];
    // And mutations of a well-formed body, from a printed seed.
    let good = parts(
        "XyZ",
        &[
            ("report", "", report),
            ("photo", "; filename=\"a.jpg\"", &jpeg),
        ],
        true,
    );
    let mut rng = pithead_e2e::rng();
    let mut next = move |n: usize| usize::try_from(rng(n as u64)).unwrap_or(0);
    for _ in 0..16 {
        let mut b = good.clone();
        for _ in 0..1 + next(4) {
            let i = next(b.len());
            match next(3) {
                0 => b.truncate(i),
                1 => {
                    let end = (i + 1 + next(40)).min(b.len());
                    b.drain(i..end);
                }
                _ => {
                    let (at, bit) = (i.min(b.len().saturating_sub(1)), next(8));
                    if let Some(x) = b.get_mut(at) {
                        *x ^= 1 << bit;
                    }
                }
            }
        }
        cases.push(("a mutated body", ct.into(), b));
    }
    let (mut created, mut with_photo) = (0i64, 0i64);
    for (i, (what, content_type, body)) in cases.iter().enumerate() {
        if i >= 18 {
            // Stay under the public rate limit (a burst of 20, then 2/s).
            std::thread::sleep(Duration::from_millis(550));
        }
        let (s, b) = pithead_e2e::http_send(
            http,
            "POST",
            "/api/v1/hazards",
            &[],
            Some(content_type),
            body,
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        let v: Value = serde_json::from_str(&b).unwrap_or_else(|e| panic!("{what}: {s} {e}: {b}"));
        match s {
            201 => {
                created += 1;
                with_photo += i64::from(v["photo"] == true);
            }
            400..=499 => assert!(
                v["message_zh"].as_str().is_some_and(|m| !m.is_empty())
                    && v["message_en"].as_str().is_some_and(|m| !m.is_empty()),
                "{what}: {s} without a reason: {b}"
            ),
            _ => panic!("{what}: answered {s}: {b}"),
        }
        if matches!(
            *what,
            "two reports" | "two photos" | "no closing boundary" | "cut inside a part"
        ) {
            assert_eq!(s, 400, "{what}: {b}");
        }
        if *what == "well-formed, with unknown parts" {
            assert_eq!(s, 201, "{what}: {b}");
        }
    }
    d.wait_healthy(Duration::from_secs(5));
    drop(d);
    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    let (n, photos): (i64, i64) = db
        .query_row("SELECT count(*), count(photo) FROM hazards", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap_or((-1, -1));
    assert_eq!((n, photos), (created, with_photo), "stored vs answered 201");
    eprintln!(
        "{} bodies: {created} taken ({with_photo} with a photo), the rest refused with a reason",
        cases.len()
    );
}

#[test]
fn a_passed_deadline_is_recorded_once_told_to_the_county_and_leads_the_public_board() {
    let (dir, d, http) = start();
    let report = |grade: &str, place: &str| -> String {
        let (s, v) = post(
            http,
            "/api/v1/hazards",
            &format!(
                "{{\"category\": \"water\", \"location\": \"{place}\", \"grade\": \"{grade}\", \"description\": \"张三说渗水\", \"anonymous\": false, \"badge\": \"0042\"}}"
            ),
            false,
        );
        assert_eq!(s, 201, "{v}");
        v["ticket"].as_str().unwrap().to_owned()
    };
    let later = report("general", "1202 运输巷");
    let late = report("major", "1201 工作面");
    let closed = report("general", "井口");
    let assign = |ticket: &str, deadline: std::time::SystemTime| {
        let d = pithead_core::time::rfc3339(deadline);
        let (s, v) = post(
            http,
            &format!("/api/v1/hazards/{ticket}/steps"),
            &format!(
                "{{\"status\": \"assigned\", \"by\": \"王班长\", \"owner\": \"李四\", \"measures\": \"排水\", \"deadline\": \"{d}\", \"funds\": \"2 万元\", \"plan\": \"透水撤人预案\", \"major_category\": \"water_hazard\"}}"
            ),
            true,
        );
        assert_eq!(s, 200, "{v}");
    };
    let now = std::time::SystemTime::now();
    assign(&later, now + Duration::from_secs(86_400));
    assign(&late, now + Duration::from_secs(2));
    assert_eq!(
        post(
            http,
            &format!("/api/v1/hazards/{closed}/steps"),
            "{\"status\": \"rejected\", \"by\": \"王班长\", \"note\": \"重复\"}",
            true
        )
        .0,
        200
    );
    // The overdue step, within the watch's period after the deadline.
    let steps_of = |t: &str| -> Vec<String> {
        let (_, b) = http_request(
            http,
            "GET",
            "/api/v1/hazards",
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            "",
        )
        .unwrap();
        let list: Value = serde_json::from_str(&b).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .find(|h| h["ticket"] == t)
            .map(|h| {
                h["steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["status"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let end = std::time::Instant::now() + Duration::from_secs(15);
    while !steps_of(&late).contains(&"overdue".to_owned()) {
        assert!(
            std::time::Instant::now() < end,
            "no overdue step: {:?}",
            steps_of(&late)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Once, not at every pass of the watch.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(steps_of(&late), ["reported", "assigned", "overdue"]);
    assert_eq!(steps_of(&later), ["reported", "assigned"]);

    // The board: open hazards only, the overdue one first, no names.
    let (s, b) = http_get(http, "/api/v1/board").unwrap();
    assert_eq!(s, 200, "{b}");
    let board: Value = serde_json::from_str(&b).unwrap();
    let order: Vec<&str> = board
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["ticket"].as_str().unwrap())
        .collect();
    assert_eq!(order, [late.as_str(), later.as_str()], "{board:#}");
    assert_eq!(board[0]["overdue"], true);
    assert_eq!(board[0]["status"], "assigned");
    for secret in ["0042", "李四", "王班长", "张三", "排水"] {
        assert!(!b.contains(secret), "{secret} on the public board: {b}");
    }
    drop(d);
    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    let told: i64 = db
        .query_row(
            "SELECT count(*) FROM outbox WHERE kind = 'hazard' AND json_extract(payload, '$.event') = 'overdue' \
             AND json_extract(payload, '$.ticket') = ?1 AND json_extract(payload, '$.overdue')",
            [&late],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(told, 1, "the county told once, on the hazard lane");
}
