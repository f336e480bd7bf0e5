//! The county dashboard in a real headless Chromium: accounts from the
//! command line, every station at a glance updated live (PostgreSQL
//! NOTIFY), a notice sent from the dashboard shown on a real station's
//! kiosk and its `cmd_ack` back on the dashboard; viewers and other sites
//! cannot send.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of the tests: a failed unwrap is a failed test"
)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use pithead_e2e::webdriver::Browser;
use pithead_e2e::{
    County, Daemon, Mosquitto, Postgres, county_bin, free_port, http_request, uplink_config,
};

fn add_account(config: &std::path::Path, name: &str, role: &str, password: &str) {
    let mut add = Command::new(county_bin())
        .args(["user", "add", name, "--role", role, "--config"])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    if let Some(mut i) = add.stdin.take() {
        let _ = writeln!(i, "{password}");
    }
    assert!(add.wait().unwrap().success(), "user add {name}");
}

/// Logs in over the API; the session cookie and CSRF token.
fn login(http: SocketAddr, user: &str, password: &str) -> (String, String) {
    let body = serde_json::json!({ "user": user, "password": password }).to_string();
    let (s, head, b) =
        pithead_e2e::http_request_head(http, "POST", "/api/v1/session", &[], &body).unwrap();
    assert_eq!(s, 200, "{b}");
    let cookie = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        })
        .map(|(_, v)| v.trim().split(';').next().unwrap_or_default().to_owned())
        .unwrap();
    assert!(
        head.contains("HttpOnly") && head.contains("SameSite=Strict"),
        "{head}"
    );
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    (cookie, v["csrf"].as_str().unwrap().to_owned())
}

#[test]
fn a_notice_from_the_dashboard_reaches_the_kiosk_and_its_answer_comes_back() {
    let pg = Postgres::start();
    let broker = Mosquitto::start_with(free_port(), true, "");
    let dir = tempfile::tempdir().unwrap();
    let web = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // The county's signing key; the station trusts only its public key.
    let out = Command::new(county_bin())
        .args(["keys", "generate", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(public.len(), 44, "{public}");
    let again = Command::new(county_bin())
        .args(["keys", "generate", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "an existing key is never overwritten"
    );
    let cfg = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"county-a\"\nkeep_alive = \"5s\"\n\
         [postgres]\nurl = \"{}\"\n[http]\nlisten = \"{web}\"\n\
         [commands]\nsigning_key_file = \"{}\"\n\
         [[station]]\ncounty = \"test-county\"\nid = \"s1\"\nname = \"一号井\"\nmine = \"一矿\"\n\
         [[station]]\ncounty = \"test-county\"\nid = \"s2\"\nname = \"二号井\"\nmine = \"二矿\"\n",
        broker.url(),
        pg.url(),
        dir.path().join("county-signing.key").display()
    );
    let county = County::start(dir.path(), "county-a", &cfg);
    county.wait_log("subscribed", 1, Duration::from_secs(60));
    county.wait_log("dashboard serving", 1, Duration::from_secs(10));
    add_account(
        &county.config,
        "县工会操作员",
        "operator",
        "县总工会安全第一2026",
    );
    add_account(&county.config, "县工会查看", "viewer", "只看不改的密码2026");

    let sdir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let scfg = pithead_e2e::with_token(
        sdir.path(),
        http,
        &uplink_config(sdir.path(), http, &broker.url(), 5),
    )
    .replacen("id = \"test-station\"", "id = \"s1\"", 1)
    .replacen(
        "[mqtt]\nenabled = true\n",
        &format!("[mqtt]\nenabled = true\ncounty_public_key = \"{public}\"\n"),
        1,
    );
    assert!(scfg.contains(&public));
    // A supervisor for the station's console.
    let sfile = sdir.path().join("pithead.toml");
    std::fs::write(&sfile, &scfg).unwrap();
    pithead_e2e::add_supervisor(&sfile);
    let mut station = Daemon::start(sdir.path(), &scfg, http);
    station.wait_healthy(Duration::from_secs(20));

    // Nobody without an account; a viewer cannot send; another site or
    // host name is refused.
    let (s, _) = http_request(web, "GET", "/api/v1/stations", &[], "").unwrap();
    assert_eq!(s, 401);
    let (vcookie, vcsrf) = login(web, "县工会查看", "只看不改的密码2026");
    let notice = r#"{"stations":["test-county/s1"],"title":"t","body":"b","valid_hours":1}"#;
    let (s, b) = http_request(
        web,
        "POST",
        "/api/v1/notices",
        &[("Cookie", &vcookie), ("X-CSRF-Token", &vcsrf)],
        notice,
    )
    .unwrap();
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("not_an_operator"), "{b}");
    let (cookie, csrf) = login(web, "县工会操作员", "县总工会安全第一2026");
    let (s, b) = http_request(
        web,
        "POST",
        "/api/v1/notices",
        &[("Cookie", &cookie)],
        notice,
    )
    .unwrap();
    assert_eq!(s, 403, "no CSRF token: {b}");
    let (s, b) = http_request(
        web,
        "POST",
        "/api/v1/notices",
        &[
            ("Cookie", &cookie),
            ("X-CSRF-Token", &csrf),
            ("Origin", "http://evil.example"),
        ],
        notice,
    )
    .unwrap();
    assert_eq!(s, 403, "another site: {b}");
    let (s, _) = http_request(
        web,
        "GET",
        "/api/v1/session",
        &[("Host", "evil.example")],
        "",
    )
    .unwrap();
    assert_eq!(s, 421, "another host name");

    // Guessing a password: after five failures for a name from one
    // address, refused for a while, even with the right one.
    for _ in 0..5 {
        let (s, _) = http_request(
            web,
            "POST",
            "/api/v1/session",
            &[],
            r#"{"user":"县工会查看","password":"guess-guess-guess"}"#,
        )
        .unwrap();
        assert_eq!(s, 401);
    }
    let (s, b) = http_request(
        web,
        "POST",
        "/api/v1/session",
        &[],
        r#"{"user":"县工会查看","password":"只看不改的密码2026"}"#,
    )
    .unwrap();
    assert_eq!(s, 429, "{b}");
    assert!(b.contains("too_many_failures"), "{b}");

    // The operator, in Chromium.
    let b = Browser::start(1280, 1000);
    let wait = Duration::from_secs(20);
    b.open(&format!("http://{web}/"));
    b.type_into(&b.find("#user", wait), "县工会操作员");
    b.type_into(&b.find("#password", wait), "wrong password 2026\u{E007}");
    b.wait_text("#login-result", wait, "refused", |t| t.contains("错误"));
    b.type_into(&b.find("#password", wait), "县总工会安全第一2026\u{E007}");
    b.wait_text("#who", wait, "logged in", |t| t.contains("县工会操作员"));
    b.wait_text(
        "#station-rows tr[data-station='test-county/s1']",
        wait,
        "the station, online",
        |t| t.contains("一号井") && t.contains("在线"),
    );

    // A hazard reported at the station shows on the dashboard without a
    // reload: the receiver's write is a NOTIFY, the page's stream says so.
    let (s, body) = http_request(
        http,
        "POST",
        "/api/v1/hazards",
        &[],
        r#"{"category":"roof","location":"1201 回风巷","grade":"major","description":"顶板离层","anonymous":true}"#,
    )
    .unwrap();
    assert_eq!(s, 201, "{body}");
    b.wait_text(
        "#station-rows tr[data-station='test-county/s1']",
        wait,
        "the hazard, live",
        |t| t.contains("1 / 1 / 0"),
    );

    // The station makes it an assigned rectification whose deadline has
    // passed: the quarterly light turns red, saying why.
    let ticket = serde_json::from_str::<serde_json::Value>(&body).unwrap()["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let bearer = format!("Bearer {}", pithead_e2e::TEST_TOKEN);
    for step in [
        r#"{"status":"acknowledged","by":"王班长"}"#,
        r#"{"status":"assigned","by":"王班长","owner":"李工","measures":"加强支护","deadline":"2026-01-05T00:00:00Z","funds":"5 万元","plan":"撤人预案 A","major_category":"water_hazard"}"#,
    ] {
        let (s, b) = http_request(
            http,
            "POST",
            &format!("/api/v1/hazards/{ticket}/steps"),
            &[("Authorization", &bearer)],
            step,
        )
        .unwrap();
        assert_eq!(s, 200, "{step}: {b}");
    }
    b.wait_attribute(
        "#station-rows tr[data-station='test-county/s1']",
        "data-light",
        wait,
        "the red light",
        |v| v == "red",
    );
    b.wait_text(
        "#station-rows tr[data-station='test-county/s1']",
        wait,
        "the light's reasons",
        |t| {
            t.contains("红灯")
                && t.contains("重大隐患未销号 1 项")
                && t.contains("隐患整改超期 1 项")
        },
    );

    // The county moves the hazard along from the station's page, with a
    // comment: the station records the step as the county's, and the
    // dashboard shows it back in the hazard's timeline.
    b.click(&b.find("#station-rows a[data-station='test-county/s1']", wait));
    let row = format!("#hazard-rows tr[data-ticket='{ticket}']");
    b.wait_text(&row, wait, "the hazard on the station's page", |t| {
        t.contains("整改中")
    });
    b.click_live(
        &format!("{row} select[name=status] option[value='rectified']"),
        wait,
    );
    b.execute(&format!(
        "document.querySelector(\"{row} form\").elements.comment.value = '县总工会督办：已现场核查';"
    ));
    b.click_live(&format!("{row} form button[type=submit]"), wait);
    b.wait_text("#hazard-result", wait, "sent to the station", |t| {
        t.contains("已发送")
    });
    let end = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = http_request(
            http,
            "GET",
            "/api/v1/hazards",
            &[("Authorization", &bearer)],
            "",
        )
        .unwrap();
        let list: serde_json::Value = serde_json::from_str(&list).unwrap();
        let h = list
            .as_array()
            .and_then(|l| l.iter().find(|h| h["ticket"] == ticket.as_str()))
            .cloned()
            .unwrap();
        let by_county = h["steps"].as_array().is_some_and(|st| {
            st.iter().any(|s| {
                s["by"] == "县总工会"
                    && s["status"] == "rectified"
                    && s["note"] == "县总工会督办：已现场核查"
            })
        });
        if h["status"] == "rectified" && by_county {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "the station's console shows the county's step: {h}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    b.wait_text(&row, wait, "the county's step in the timeline", |t| {
        t.contains("已整改") && t.contains("县总工会") && t.contains("已现场核查")
    });
    // And the station's supervisors see it on their console, in Chromium.
    let c = Browser::start(1280, 1000);
    c.open(&format!("http://{http}/console"));
    c.type_into(&c.find("#user", wait), "王班长");
    c.type_into(&c.find("#password", wait), "井口安全第一 2026\u{E007}");
    c.wait_text("#who", wait, "the supervisor logged in", |t| t == "王班长");
    c.click_live(".tabs button[data-tab='hazards']", wait);
    c.wait_text(
        &format!(".hazard[data-ticket='{ticket}']"),
        wait,
        "the county's step on the station's console",
        |t| {
            t.contains("已整改") && t.contains("县总工会") && t.contains("县总工会督办：已现场核查")
        },
    );
    drop(c);

    // A notice to the station, urgent.
    b.click(&b.find("#notice-stations input[value='test-county/s1']", wait));
    b.type_into(&b.find("#notice-title", wait), "主井停电检修");
    b.type_into(
        &b.find("#notice-body", wait),
        "明天 8:00-10:00 主井停电检修，请提前升井",
    );
    b.click(&b.find("#notice-urgent", wait));
    b.click(&b.find("#notice-form button[type=submit]", wait));
    b.wait_text("#notice-result", wait, "sent", |t| t.contains("已发送"));
    // The station applied it: its cmd_ack, stored by the receiver, is on
    // the dashboard.
    b.wait_attribute(
        "#notice-rows tr",
        "data-outcome",
        Duration::from_secs(30),
        "the station's answer",
        |v| v == "applied",
    );
    b.wait_text("#notice-rows tr", wait, "applied, shown", |t| {
        t.contains("已生效") && t.contains("县工会操作员")
    });

    // Every station's uplink backlog, as it reports it with its status:
    // the real station's, and a second one's with records waiting.
    b.wait_attribute(
        "#station-rows tr[data-station='test-county/s1']",
        "data-backlog",
        wait,
        "the real station's backlog",
        |v| !v.is_empty(),
    );
    second_station(&pg, broker.port);
    b.wait_attribute(
        "#station-rows tr[data-station='test-county/s2']",
        "data-backlog",
        wait,
        "s2's backlog",
        |v| v == "1234",
    );
    b.wait_text(
        "#station-rows tr[data-station='test-county/s2']",
        wait,
        "the backlog in words",
        |t| t.contains("1234 条待上传"),
    );
    // Its channel had no good reading for 25 hours of this quarter: the
    // light says so (fewer hours if the quarter began less than 27 hours
    // ago).
    let down: i64 = pg
        .query("SELECT count(*) / 60 FROM channel_minutes WHERE station = 's2' AND mean IS NULL AND minute >= date_trunc('quarter', now())")
        .parse()
        .unwrap();
    if down > 24 {
        b.wait_text(
            "#station-rows tr[data-station='test-county/s2']",
            wait,
            "sensor downtime in the light",
            |t| {
                t.contains(&format!("测点 ch4-1201-face 本季度无有效读数 {down} 小时"))
                    && t.contains("黄灯")
            },
        );
    }
    // Its page charts each channel's minutes, the ones without a reading
    // marked, never drawn as values.
    b.click_live("#station-rows a[data-station='test-county/s2']", wait);
    let fig = "#trends figure[data-channel='ch4-1201-face']";
    b.wait_attribute(fig, "data-points", wait, "60 good minutes", |v| v == "60");
    // The last 24 hours' minutes without a reading (one fewer when a
    // minute turns meanwhile).
    let marked = b.wait_attribute(
        fig,
        "data-down",
        wait,
        "the minutes without a reading",
        |v| v == "1319" || v == "1318",
    );
    b.wait_text(fig, wait, "the caption", |t| {
        t.contains("无有效读数") && t.contains("均值")
    });
    let drawn = b.execute(&format!(
        "return [document.querySelectorAll(\"{fig} polyline.mean\").length, document.querySelectorAll(\"{fig} rect.down\").length]"
    ));
    assert_eq!(
        drawn,
        serde_json::json!([1, marked.parse::<i64>().unwrap()]),
        "one line of good minutes, every other minute marked"
    );
    b.wait_text("#checkin-rows", wait, "no check-ins at s2", str::is_empty);
    b.screenshot(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/screenshots/county-dashboard.png"),
    );

    // The union's own assessment of s1's quarter, with its note: shown
    // first, the computed light beside it. A viewer cannot make one, and
    // one without a note is refused.
    let quarter = pg.query("SELECT to_char(now(), 'YYYY') || '-Q' || to_char(now(), 'Q')");
    let assess = |cookie: &str, csrf: &str, body: &str| {
        http_request(
            web,
            "POST",
            "/api/v1/lights/test-county/s1",
            &[("Cookie", cookie), ("X-CSRF-Token", csrf)],
            body,
        )
        .unwrap()
    };
    let (s, b2) = assess(
        &vcookie,
        &vcsrf,
        &format!(r#"{{"quarter":"{quarter}","light":"green","note":"x"}}"#),
    );
    assert_eq!(s, 403, "{b2}");
    let (s, b2) = assess(
        &cookie,
        &csrf,
        &format!(r#"{{"quarter":"{quarter}","light":"green","note":"  "}}"#),
    );
    assert_eq!((s, b2.contains("bad_note")), (400, true), "{b2}");
    let (s, b2) = assess(
        &cookie,
        &csrf,
        &format!(r#"{{"quarter":"{quarter}","light":"blue","note":"x"}}"#),
    );
    assert_eq!((s, b2.contains("bad_light")), (400, true), "{b2}");
    let row1 = "#station-rows tr[data-station='test-county/s1']";
    b.click_live(
        &format!("{row1} form.light-action select option[value='yellow']"),
        wait,
    );
    b.execute(&format!(
        "document.querySelector(\"{row1} form.light-action\").elements.note.value = '县工会现场核查：隐患已在整改，评为黄灯';"
    ));
    b.click_live(
        &format!("{row1} form.light-action button[type=submit]"),
        wait,
    );
    b.wait_text("#light-result", wait, "recorded", |t| t.contains("已记录"));
    b.wait_attribute(row1, "data-light", wait, "the union's light", |v| {
        v == "yellow"
    });
    b.wait_attribute(
        row1,
        "data-computed",
        wait,
        "the computed light beside it",
        |v| v == "red",
    );
    b.wait_text(
        row1,
        wait,
        "the union's light with its note, the computed one beside",
        |t| {
            t.contains("县工会评定 黄灯")
                && t.contains("县工会现场核查：隐患已在整改，评为黄灯")
                && t.contains("县工会操作员")
                && t.contains("按数据计算 红灯")
        },
    );

    // And the kiosk shows it, in the banner's place.
    let k = Browser::start(1024, 600);
    k.open(&format!("http://{http}/"));
    k.wait_text("#alert", wait, "the urgent notice on the kiosk", |t| {
        t.contains("主井停电检修") && t.contains("请提前升井")
    });
    // A miner checking in reads it first (已阅), and the union sees who
    // was told: the station's notice_read, stored by the receiver.
    k.type_into(&k.find("#badge", wait), "0001\u{E007}");
    k.wait_text(
        "#must-read-title",
        wait,
        "the notice before the answer",
        |t| t == "主井停电检修",
    );
    k.click_live("#read-ok", wait);
    k.wait_text("#checkin-result", wait, "then the answer", |t| {
        t.contains("工人1") && t.contains("下井登记成功")
    });
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (s, body) =
            http_request(web, "GET", "/api/v1/notices", &[("Cookie", &cookie)], "").unwrap();
        assert_eq!(s, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let read = &v[0]["read"];
        if read.as_array().is_some_and(|r| !r.is_empty()) {
            assert_eq!(read[0]["badge"], "0001", "{v:#}");
            assert_eq!(read[0]["name"], "工人1", "{v:#}");
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "no read on the dashboard: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    b.execute("notices()");
    b.wait_attribute(
        "#notice-rows tr",
        "data-read",
        wait,
        "who read it, on the page",
        |v| v == "1",
    );
    b.wait_text("#notice-rows tr", wait, "their name", |t| {
        t.contains("1 人：工人1（一队）")
    });

    // Someone with a broker account but not the county's key: an unsigned
    // notice and one with a forged signature are refused, with reasons the
    // county sees, and never reach the kiosk.
    let unsigned = r#"{"schema":"pithead/v1","msg_id":"forged-1","title":"假通知","body":"立即下井","priority":"urgent","valid_until":"2030-01-01T00:00:00Z"}"#;
    let wrapped = format!(
        "{{\"schema\":\"pithead/v1\",\"signed\":\"{}\",\"sig\":\"{}\"}}",
        b64(unsigned.replace("forged-1", "forged-2").as_bytes()),
        b64(&[0u8; 64])
    );
    let topic = "pithead/v1/test-county/s1/cmd/notice".to_owned();
    let mut o = rumqttc::MqttOptions::new("intruder", "127.0.0.1", broker.port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = rumqttc::Client::new(o, 10);
    client
        .publish(
            topic.as_str(),
            rumqttc::QoS::AtLeastOnce,
            false,
            unsigned.as_bytes().to_vec(),
        )
        .unwrap();
    client
        .publish(
            topic.as_str(),
            rumqttc::QoS::AtLeastOnce,
            false,
            wrapped.into_bytes(),
        )
        .unwrap();
    let mut acked = 0;
    for ev in conn.iter() {
        if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) = ev {
            acked += 1;
            if acked == 2 {
                break;
            }
        }
    }
    let end = std::time::Instant::now() + Duration::from_secs(30);
    let reasons = loop {
        let r = pg.query("SELECT body->>'reason' FROM messages WHERE kind = 'cmd_ack' AND body->>'outcome' = 'refused' ORDER BY created_at");
        if r.lines().count() >= 2 || std::time::Instant::now() > end {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        reasons.contains("unsigned") && reasons.contains("does not verify"),
        "{reasons}"
    );
    let (_, shown) = http_request(http, "GET", "/api/v1/notices", &[], "").unwrap();
    assert!(
        shown.contains("主井停电检修") && !shown.contains("假通知"),
        "{shown}"
    );
    station.signal(libc::SIGTERM);
}

/// A second station, by hand: its retained status with a backlog, and a
/// summary of 26 hours of one channel, the first 25 without a good
/// reading.
fn second_station(pg: &Postgres, port: u16) {
    let now_ms: i64 = pg
        .query("SELECT (extract(epoch FROM now()) * 1000)::bigint")
        .parse()
        .unwrap();
    let base = now_ms - now_ms.rem_euclid(60_000);
    let iso = |ms: i64| {
        pithead_core::time::rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(ms as u64))
    };
    let mut minutes: Vec<serde_json::Value> = (0..1500)
        .map(|i| {
            let m = base - 27 * 3_600_000 + i * 60_000;
            serde_json::json!({ "minute": iso(m), "min": null, "max": null, "mean": null, "count": 0, "faults": 60 })
        })
        .collect();
    minutes.extend((0..60).map(|i| {
        let m = base - 2 * 3_600_000 + i * 60_000;
        let v = 0.3 + f64::from(u8::try_from(i % 7).unwrap_or(0)) * 0.01;
        serde_json::json!({ "minute": iso(m), "min": v - 0.01, "max": v + 0.01, "mean": v, "count": 60, "faults": 0 })
    }));
    let summary = serde_json::json!({
        "schema": "pithead/v1", "msg_id": "s2-sum-1", "county": "test-county", "station": "s2",
        "epoch": "s2-e1", "lane": "summary", "seq": 1, "kind": "summary", "created_at": iso(base - 3_600_000),
        "body": { "county": "test-county", "station": "s2", "from": iso(base - 27 * 3_600_000),
                  "to": iso(base - 3_600_000), "channels": [ { "channel": "ch4-1201-face", "minutes": minutes } ] }
    });
    let status = serde_json::json!({
        "schema": "pithead/v1", "county": "test-county", "station": "s2", "state": "online",
        "version": "0.1.0", "at": iso(base),
        "backlog": { "pending": 1234, "bytes": 567_890, "dropped_summaries": 0, "set_aside": 0, "at": iso(now_ms) }
    });
    let mut o = rumqttc::MqttOptions::new("second-station", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(1024 * 1024, 1024 * 1024);
    let (client, mut conn) = rumqttc::Client::new(o, 10);
    for (topic, payload, retain) in [
        ("pithead/v1/test-county/s2/summary", summary, false),
        ("pithead/v1/test-county/s2/status", status, true),
    ] {
        client
            .publish(
                topic,
                rumqttc::QoS::AtLeastOnce,
                retain,
                payload.to_string().into_bytes(),
            )
            .unwrap();
    }
    let mut acked = 0;
    for ev in conn.iter() {
        if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) = ev {
            acked += 1;
            if acked == 2 {
                break;
            }
        }
        ev.unwrap();
    }
    let _ = client.disconnect();
}

/// Standard base64, padded.
fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
