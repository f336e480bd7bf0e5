//! The supervisor console in a real headless Chromium: log in, acknowledge
//! an alarm raised by the simulator, triage a hazard to closed, see the
//! people underground; hostile text stays text.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of the tests: a failed unwrap is a failed test"
)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use pithead_e2e::webdriver::Browser;
use pithead_e2e::{Daemon, Simulator, free_port, http_request};

/// The text of a PDF (pdftotext, from poppler-utils).
fn pdf_text(pdf: &[u8], dir: &std::path::Path) -> String {
    let file = dir.join("roll.pdf");
    std::fs::write(&file, pdf).unwrap();
    let out = Command::new("pdftotext")
        .arg(&file)
        .arg("-")
        .output()
        .unwrap_or_else(|e| panic!("pdftotext (apt-get install poppler-utils): {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// When `badge` went down, as the console shows it (`YYYY-MM-DD HH:MM:SS`).
fn underground_since(http: SocketAddr, badge: &str) -> String {
    let token = format!("Bearer {}", pithead_e2e::TEST_TOKEN);
    let (s, body) = http_request(
        http,
        "GET",
        "/api/v1/underground",
        &[("Authorization", &token)],
        "",
    )
    .unwrap();
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["people"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["badge"] == badge))
        .and_then(|p| p["since"].as_str())
        .map(|t| t.replace('T', " ").chars().take(19).collect())
        .unwrap_or_else(|| panic!("{badge} not underground: {body}"))
}

/// `utc` (RFC 3339, or `YYYY-MM-DD HH:MM:SS` in UTC) as
/// `YYYY-MM-DD HH:MM:SS` in `zone`, by the system's time zone database.
fn in_zone(utc: &str, zone: &str) -> String {
    let utc = utc.replace('T', " ").chars().take(19).collect::<String>();
    let out = Command::new("date")
        .env("TZ", zone)
        .args(["-d", &format!("{utc} UTC"), "+%Y-%m-%d %H:%M:%S"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The active alarms, from the API.
fn api_alarms(http: SocketAddr) -> Vec<serde_json::Value> {
    let (s, body) = http_request(http, "GET", "/api/v1/alarms?active=true", &[], "").unwrap();
    assert_eq!(s, 200, "{body}");
    serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap()
}

/// How many `kind` tones the page sounded (`Common.tones`).
fn tone_count(b: &Browser, kind: &str) -> u64 {
    b.execute(&format!(
        "return Common.tones.filter(t => t.kind === {kind:?}).length"
    ))
    .as_u64()
    .unwrap_or(0)
}

/// Waits for a `kind` tone that the browser's audio really played.
fn wait_tone(b: &Browser, kind: &str, within: Duration) {
    let end = std::time::Instant::now() + within;
    loop {
        let t = b.execute(&format!(
            "return Common.tones.filter(t => t.kind === {kind:?}).map(t => t.state).pop() || ''"
        ));
        if t == "running" {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "no {kind} tone (last: {t})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_supervisor_acknowledges_an_alarm_and_closes_a_hazard() {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = pithead_e2e::with_token(
        dir.path(),
        http,
        &pithead_e2e::face_station(dir.path(), http, &sim, ""),
    )
    // Times on the console are the station's, not the browser's or UTC.
    .replacen(
        "name = \"测试站\"\n",
        "name = \"测试站\"\ntimezone = \"Asia/Shanghai\"\n",
        1,
    );
    let file = dir.path().join("pithead.toml");
    std::fs::write(&file, &cfg).unwrap();
    pithead_e2e::add_supervisor(&file);

    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    let post = |path: &str, body: &str| http_request(http, "POST", path, &[], body).unwrap();
    assert_eq!(
        post(
            "/api/v1/checkins",
            "{\"badge\": \"0001\", \"direction\": \"in\"}"
        )
        .0,
        201
    );
    let (s, b) = post(
        "/api/v1/hazards",
        "{\"category\": \"roof\", \"location\": \"1201 回风巷\", \"grade\": \"major\", \"description\": \"<img src=x onerror=\\\"document.title='pwned'\\\">顶板掉渣\", \"anonymous\": false, \"badge\": \"0001\"}",
    );
    assert_eq!(s, 201, "{b}");
    let ticket = serde_json::from_str::<serde_json::Value>(&b).unwrap_or_default()["ticket"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let b = Browser::start(1280, 1000);
    let wait = Duration::from_secs(15);
    b.open(&format!("http://{http}/console"));
    b.type_into(&b.find("#user", wait), "王班长");
    b.type_into(&b.find("#password", wait), "wrong password\u{E007}");
    b.wait_text("#login-result", wait, "refused", |t| t.contains("错误"));
    b.type_into(&b.find("#password", wait), "井口安全第一 2026\u{E007}");
    b.wait_text("#who", wait, "logged in", |t| t == "王班长");
    assert!(
        b.execute("return getComputedStyle(document.getElementById('login-view')).display")
            == "none",
        "the login form is gone once logged in"
    );

    // An alarm from the simulator, acknowledged on the console.
    sim.control("set 1 input 0 120");
    // Named as a miner would, with its place, and its value with the unit
    // at the channel's resolution (no float noise).
    b.wait_text(
        "#alarm-rows",
        wait,
        "the alarm's name, place and value",
        |t| {
            t.contains("甲烷 · 1201 工作面")
                && t.contains("1.20 %vol")
                && !t.contains("ch4-1201-face")
        },
    );
    // The outputs, always in view, say what the box drives; a tone calls
    // for the alarm nobody acknowledged.
    b.wait_text("#outputs", wait, "the outputs", |t| {
        t.contains("警报器 鸣响")
            && t.contains("信号灯 红")
            && t.contains("断电继电器 供电")
            && t.contains("未确认 1 条")
    });
    wait_tone(&b, "alarm", wait);
    b.click_live("#alarm-rows tr.alarm button[data-alarm]", wait);
    b.wait_text("#alarm-result", wait, "acknowledged", |t| t == "已确认");
    b.wait_text("#alarm-rows", wait, "who acknowledged", |t| {
        t.contains("王班长")
    });
    // Over the power-cut level, then back down: the relay cuts, and the
    // power-cut alarm shows its value at raise beside the value now.
    sim.control("set 1 input 0 160");
    b.wait_text("#outputs", wait, "power cut", |t| {
        t.contains("断电继电器 已断电") && t.contains("未确认 1 条")
    });
    sim.control("set 1 input 0 90");
    b.wait_text(
        "#alarm-rows",
        wait,
        "the value now beside the value at raise",
        |t| t.contains("1.60 %vol") && t.contains("0.90 %vol"),
    );
    // In the station's time zone.
    let raised = api_alarms(http)
        .into_iter()
        .find(|a| a["level"] == "power_cut")
        .and_then(|a| a["raised_at"].as_str().map(str::to_owned))
        .unwrap();
    let local = in_zone(&raised, "Asia/Shanghai");
    b.wait_text(
        "#alarm-rows",
        wait,
        "the raise time in Asia/Shanghai",
        |t| t.contains(&local),
    );
    b.execute("window.scrollTo(0, 0)");
    b.screenshot(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/screenshots/console.png"),
    );
    // All at once, after one question.
    b.click(&b.find("#ack-all", wait));
    b.wait_text("#ack-all-confirm", wait, "one question", |t| {
        t.contains("确认全部 1 条")
    });
    b.click(&b.find("#ack-all-yes", wait));
    b.wait_text("#alarm-result", wait, "all acknowledged", |t| {
        t == "已确认 1 条报警"
    });
    b.wait_text("#outputs", wait, "the siren silent, power back", |t| {
        t.contains("警报器 静音") && t.contains("断电继电器 供电") && !t.contains("未确认")
    });
    assert!(
        b.find_all("#alarm-rows button[data-alarm]").is_empty(),
        "nothing left to acknowledge"
    );
    // The tone stops with the last acknowledgement.
    let tones = tone_count(&b, "alarm");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        tone_count(&b, "alarm"),
        tones,
        "no tone once all are acknowledged"
    );

    // The people underground, for the evacuation roll: as Chromium prints
    // it, the station, when it was printed, and everyone underground with
    // team and time in.
    // One touch from the alarms to the evacuation roll.
    b.click(&b.find(".tabs button[data-tab='alarms']", wait));
    b.wait_text("#to-roll", wait, "the roll's count", |t| {
        t.contains("井下 1 人")
    });
    b.click(&b.find("#to-roll", wait));
    b.wait_text("#people-rows", wait, "the miner", |t| {
        t.contains("张伟") && t.contains("0001")
    });
    let roll = pdf_text(&b.print_pdf(), dir.path());
    let since = in_zone(&underground_since(http, "0001"), "Asia/Shanghai");
    for want in [
        "测试站",
        "撤离名单",
        "打印时间",
        "张伟",
        "0001",
        "综采一队",
        &since,
        "1 人",
        "超时",
    ] {
        assert!(
            roll.contains(want),
            "`{want}` not on the printed roll:\n{roll}"
        );
    }
    assert!(!roll.contains("人工升井</"), "no buttons on paper:\n{roll}");
    // Checked out by hand, with a reason: off the roll, listed beside it.
    let reason = b.find("#people-rows form.checkout input[name=reason]", wait);
    b.type_into(&reason, "已确认从副井升井");
    b.click(&b.find("#people-rows form.checkout button", wait));
    b.wait_text("#checkout-result", wait, "checked out", |t| {
        t.contains("张伟")
    });
    b.wait_text("#by-hand-rows", wait, "by hand", |t| {
        t.contains("张伟") && t.contains("王班长") && t.contains("已确认从副井升井")
    });
    assert!(
        b.find_all("#people-rows tr").is_empty(),
        "still on the roll"
    );

    // The hazard through its lifecycle; its hostile text stays text.
    b.click(&b.find(".tabs button[data-tab='hazards']", wait));
    let card = format!(".hazard[data-ticket='{ticket}']");
    b.wait_text(&card, wait, "the report", |t| t.contains("<img src=x"));
    assert!(
        b.find_all("#hazard-list img").is_empty(),
        "no element was made from the description"
    );
    // Each step waits for its own answer ("TICKET → 已销号"): the one of the
    // step before stays on the page until then.
    let step = |status: &str, label: &str, extra: &str| {
        b.click_live(
            &format!("{card} select[name=status] option[value='{status}']"),
            wait,
        );
        if extra.is_empty() {
            b.click_live(&format!("{card} form button[type=submit]"), wait);
        } else {
            // Filled and sent in one go: a re-render of the list in between
            // (the page refreshes it when its live link comes back) would
            // otherwise send an empty form.
            b.execute(&format!(
                "{extra}; const g = document.querySelector(\"{card} form\"); \
                 g.elements.status.value = '{status}'; g.querySelector('button[type=submit]').click();"
            ));
        }
        b.wait_text("#hazard-result", wait, status, |t| {
            t.contains(&ticket) && t.contains('→') && t.contains(label)
        });
    };
    step("acknowledged", "已受理", "");
    b.wait_text(&card, wait, "acknowledged", |t| {
        t.contains("已受理") || t.contains("acknowledged")
    });
    let fill = format!(
        "const f = document.querySelector(\"{card} form\"); f.elements.owner.value = '李工'; \
         f.elements.measures.value = '加强支护'; f.elements.deadline.value = '2030-12-31T12:00'; \
         if (f.elements.funds) {{ f.elements.funds.value = '3 万元'; f.elements.plan.value = '冒顶撤人预案'; }} \
         if (f.elements.major_category) f.elements.major_category.value = 'other';"
    );
    step("assigned", "整改中", &fill);
    b.wait_text(&card, wait, "assigned", |t| t.contains("整改中"));
    step("rectified", "已整改", "");
    b.wait_text(&card, wait, "rectified", |t| t.contains("已整改"));
    step("closed", "已销号", "");
    b.wait_text(&card, wait, "closed", |t| t.contains("已销号"));
    b.screenshot(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/screenshots/console-hazards.png"),
    );

    // The steps were recorded under the supervisor's name (which the
    // public lookup does not show).
    let (s, body) =
        http_request(http, "GET", &format!("/api/v1/hazards/{ticket}"), &[], "").unwrap();
    assert_eq!(s, 200);
    assert!(!body.contains("王班长"), "{body}");
    let (s, body) = http_request(
        http,
        "GET",
        "/api/v1/hazards",
        &[(
            "Authorization",
            &format!("Bearer {}", pithead_e2e::TEST_TOKEN),
        )],
        "",
    )
    .unwrap();
    assert_eq!(s, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let h = list
        .as_array()
        .and_then(|l| l.iter().find(|h| h["ticket"] == ticket.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(h["status"], "closed", "{list}");
    assert!(
        h["steps"]
            .as_array()
            .is_some_and(|v| v.iter().skip(1).all(|s| s["by"] == "王班长")),
        "{h}"
    );
    d.signal(libc::SIGTERM);
}

/// The console loses the daemon (frozen, then killed): the alarm list and
/// the readings give way to "connection lost — readings unavailable", no
/// number is left on screen, and it comes back by itself.
#[test]
fn the_console_shows_nothing_it_does_not_know_when_the_daemon_is_gone() {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = pithead_e2e::face_station(dir.path(), http, &sim, "");
    let file = dir.path().join("pithead.toml");
    std::fs::write(&file, &cfg).unwrap();
    pithead_e2e::add_supervisor(&file);
    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    sim.control("set 1 input 0 120");
    let b = Browser::start(1280, 1000);
    let wait = Duration::from_secs(15);
    b.open(&format!("http://{http}/console"));
    b.type_into(&b.find("#user", wait), "王班长");
    b.type_into(&b.find("#password", wait), "井口安全第一 2026\u{E007}");
    b.wait_text("#alarm-rows", wait, "the alarm, by name and place", |t| {
        t.contains("甲烷 · 1201 工作面")
    });
    b.click(&b.find(".tabs button[data-tab='sensors']", wait));
    b.wait_text("#sensor-tiles", wait, "a reading", |t| t.contains("1.20"));

    d.signal(libc::SIGSTOP);
    b.wait_text("#link-lost", Duration::from_secs(5), "the banner", |t| {
        t.contains("与主机连接中断") && t.contains("读数不可用")
    });
    let values = b.execute(
        "return [...document.querySelectorAll('#sensor-tiles .value')].map(e => e.textContent).join('|')",
    );
    let values = values.as_str().unwrap_or_default().to_owned();
    assert!(
        !values.is_empty() && !values.chars().any(|c| c.is_ascii_digit()),
        "a number on a console that lost the daemon: {values}"
    );
    b.click(&b.find(".tabs button[data-tab='alarms']", wait));
    b.wait_text("#alarm-rows", wait, "no alarm list", |t| {
        t.contains("与主机连接中断")
    });
    assert_eq!(
        b.attribute(&b.find("#beacon", wait), "class")
            .unwrap_or_default(),
        "beacon unknown"
    );
    d.signal(libc::SIGCONT);
    b.wait_text(
        "#alarm-rows",
        Duration::from_secs(20),
        "the alarm again",
        |t| t.contains("甲烷 · 1201 工作面"),
    );
    assert!(
        b.execute("return document.getElementById('link-lost').hidden") == true,
        "the banner goes once the daemon is back"
    );
    d.signal(libc::SIGTERM);
}
