//! The kiosk in a real headless Chromium: a miner checks in with a badge
//! typed as a reader types it, reports a hazard and follows its ticket; a
//! sensor that stops answering shows as a fault, never a number; text from
//! a report stays text.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of the tests: a failed unwrap is a failed test"
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use pithead_e2e::webdriver::Browser;
use pithead_e2e::{Daemon, Simulator, free_port};

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots")
}

#[test]
fn a_miner_checks_in_reports_a_hazard_and_sees_faults_as_faults() {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = pithead_e2e::face_station(
        dir.path(),
        http,
        &sim,
        "\
         [[device]]\nid = \"sump\"\nbus = \"sim\"\nunit = 3\n\
         [[channel]]\nid = \"water-sump\"\ndevice = \"sump\"\nkind = \"water_level\"\nunit = \"m\"\nlocation = \"中央水仓\"\nname = \"水仓水位\"\n\
         table = \"input\"\naddress = 0\ndata_type = \"u32\"\nword_order = \"little\"\nscale = 0.001\nrange = [0.0, 20.0]\n",
    );
    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    sim.control("set 1 input 0 31");

    let b = Browser::start(1280, 1100);
    b.open(&format!("http://{http}/"));
    let wait = Duration::from_secs(15);
    b.wait_text(
        "[data-channel='ch4-1201-face'] .value",
        wait,
        "0.31 %vol",
        |t| t.starts_with("0.31"),
    );
    b.wait_text("#station", wait, "the station name", |t| t == "测试站");
    // Tiles say what a miner reads: the kind's name in Chinese (or the
    // channel's configured name) and the place; the id only small.
    b.wait_text(
        "[data-channel='ch4-1201-face'] .name",
        wait,
        "甲烷",
        |t| t == "甲烷",
    );
    b.wait_text(
        "[data-channel='ch4-1201-face'] .loc",
        wait,
        "1201 工作面",
        |t| t == "1201 工作面",
    );
    b.wait_text(
        "[data-channel='water-sump'] .name",
        wait,
        "the configured name",
        |t| t == "水仓水位",
    );
    let names: String = b
        .execute("return [...document.querySelectorAll('#tiles .tile .name')].map(e => e.textContent).join('|')")
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        !names.contains("CH4") && !names.contains("WATER_LEVEL") && !names.contains("ch4-1201"),
        "no ids or raw kinds as titles: {names}"
    );

    // A badge reader types the number and Enter into the focused field.
    let badge = b.find("#badge", wait);
    b.type_into(&badge, "0001\u{E007}");
    b.wait_text("#checkin-result", wait, "check-in confirmed", |t| {
        t.contains("张伟") && t.contains("下井登记成功")
    });
    // Again, once the answer is gone: already underground, told so, with
    // the time he went down.
    b.click(&b.find("#confirm", wait));
    b.type_into(&b.find("#badge", wait), "0001\u{E007}");
    b.wait_text("#checkin-result", wait, "already in", |t| {
        t.contains("已在井下")
    });
    b.wait_text("#confirm-when", wait, "since when", |t| {
        t.starts_with("下井时间 ")
    });
    // Unknown badge, typed while the last answer is still up: the next
    // badge takes its place.
    b.type_into(&b.find("#badge", wait), "9999\u{E007}");
    b.wait_text("#checkin-result", wait, "unknown badge", |t| {
        t.contains("不在花名册")
    });
    b.click(&b.find("#confirm", wait));

    // A hazard report with a hostile description, one touch away.
    b.click(&b.find(".rail [data-screen='report']", wait));
    let xss = "<img src=x onerror=\"document.title='pwned'\">顶板掉渣";
    b.click(&b.find("#category option[value='roof']", wait));
    b.type_into(&b.find("#location", wait), &format!("1201 回风巷 {xss}"));
    b.type_into(&b.find("#description", wait), "顶板掉渣，有一块松动");
    let photo = dir.path().join("photo.jpg");
    std::fs::write(&photo, pithead_e2e::jpeg_with_gps()).unwrap();
    b.type_into(&b.find("#photo", wait), &photo.display().to_string());
    b.click(&b.find("#anonymous", wait));
    b.click(&b.find("#report-form button[type=submit]", wait));
    let ticket = b.wait_text("#new-ticket", wait, "a ticket", |t| t.len() == 6);
    b.click(&b.find(".rail [data-screen='lookup']", wait));
    b.type_into(&b.find("#ticket", wait), &format!("{ticket}\u{E007}"));
    let shown = b.wait_text("#lookup-result", wait, "the report", |t| {
        t.contains(&ticket)
    });
    assert!(
        shown.contains("<img src=x"),
        "the location is shown as text: {shown}"
    );
    assert!(
        !shown.contains("松动"),
        "the public lookup shows status, dates and notes, not the description: {shown}"
    );
    assert!(
        b.find_all("#lookup-result img:not(#lookup-photo)")
            .is_empty(),
        "no element was made from the description: {}",
        b.execute("return document.getElementById('lookup-result').innerHTML")
    );
    assert_eq!(b.find_all("#lookup-photo").len(), 1, "the photo is shown");

    // The face sensor stops answering: a fault, never a number.
    b.click(&b.find(".rail [data-screen='home']", wait));
    sim.control("fault 1 silent");
    let v = b.wait_text(
        "[data-channel='ch4-1201-face'] .value",
        wait,
        "断线",
        |t| t == "断线",
    );
    assert!(!v.chars().any(|c| c.is_ascii_digit()));
    // The banner tells a fail-safe cut from a gas reading over the limit.
    let banner = b.wait_text("#alert", wait, "the fail-safe cut's banner", |t| {
        t.contains("监测中断")
    });
    assert!(
        banner.contains("断电") && banner.contains("断线") && !banner.contains("超限"),
        "{banner}"
    );
    b.wait_attribute(
        "[data-channel='ch4-1201-face']",
        "class",
        wait,
        "power_cut colour",
        |c| c.contains("power_cut"),
    );
    b.execute("window.scrollTo(0, 0)");
    b.screenshot(&screenshots().join("kiosk.png"));

    // English on the switch.
    b.click(&b.find("#lang", wait));
    b.wait_text(
        "[data-channel='ch4-1201-face'] .value",
        wait,
        "COMM FAULT",
        |t| t == "COMM FAULT",
    );
    b.wait_text("#checkin-title", wait, "English", |t| t == "Check in / out");
    b.execute("window.scrollTo(0, 0)");
    b.screenshot(&screenshots().join("kiosk-en.png"));
    d.signal(libc::SIGTERM);
}

/// No tile shows a digit: the page's readings, as text.
fn tile_values(b: &Browser) -> String {
    b.execute(
        "return [...document.querySelectorAll('#tiles .tile .value')].map(e => e.textContent).join('|')",
    )
    .as_str()
    .unwrap_or_default()
    .to_owned()
}

fn wait_no_digits(b: &Browser, within: Duration, what: &str) {
    let end = std::time::Instant::now() + within;
    loop {
        let v = tile_values(b);
        if !v.is_empty() && !v.chars().any(|c| c.is_ascii_digit()) {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "{what}: still numbers on the kiosk: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    b.wait_text("#link-lost", Duration::from_secs(2), "the banner", |t| {
        t == "与主机连接中断 — 读数不可用"
    });
    assert_eq!(
        b.attribute(&b.find("#beacon", Duration::from_secs(2)), "class")
            .unwrap_or_default(),
        "beacon unknown"
    );
    assert!(
        b.find_all("#tiles .tile:not(.nodata)").is_empty(),
        "every tile in the no-data colour"
    );
}

fn wait_live(b: &Browser, within: Duration, what: &str) {
    b.wait_text("[data-channel='ch4-1201-face'] .value", within, what, |t| {
        t.starts_with("0.31")
    });
    assert!(b.execute("return document.getElementById('link-lost').hidden") == true);
}

/// Takes every live-stream slot of the daemon at `http`, from addresses
/// of their own (the per-address cap would stop one address first).
fn hog_streams(rt: &tokio::runtime::Runtime, http: SocketAddr) -> Vec<tokio::net::TcpStream> {
    rt.block_on(async {
        let mut v = Vec::new();
        for i in 0..70u8 {
            let from = std::net::Ipv4Addr::new(127, 0, 1 + i / 30, 1 + i % 30);
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(SocketAddr::from((from, 0))).unwrap();
            let mut s = sock.connect(http).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(
                &mut s,
                format!("GET /api/v1/stream HTTP/1.1\r\nHost: {http}\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            v.push(s);
        }
        // Until the server has answered them all.
        tokio::time::sleep(Duration::from_millis(500)).await;
        v
    })
}

/// Item 1 of the fail-safe issue: the kiosk that loses the daemon — refused
/// a stream (503), frozen (SIGSTOP), killed and restarted — shows no
/// reading within seconds, says why across the page, and goes live again
/// by itself without a reload.
#[test]
fn the_kiosk_shows_no_reading_once_it_loses_the_daemon_and_recovers_by_itself() {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = pithead_e2e::face_station(dir.path(), http, &sim, "");
    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    sim.control("set 1 input 0 31");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Every stream slot taken: the page's stream is answered 503, which
    // closes an EventSource for good; the page must say so and try again.
    let hogs = hog_streams(&rt, http);
    let b = Browser::start(1280, 900);
    b.open(&format!("http://{http}/"));
    b.wait_text("#link-lost", Duration::from_secs(6), "the banner", |t| {
        t == "与主机连接中断 — 读数不可用"
    });
    assert!(!tile_values(&b).chars().any(|c| c.is_ascii_digit()));
    b.execute("window.__not_reloaded = true");
    drop(hogs);
    wait_live(&b, Duration::from_secs(25), "live once a slot is free");

    d.signal(libc::SIGSTOP);
    wait_no_digits(&b, Duration::from_secs(5), "frozen daemon");
    b.screenshot(&screenshots().join("kiosk-link-lost.png"));
    d.signal(libc::SIGCONT);
    wait_live(&b, Duration::from_secs(20), "live after SIGCONT");

    d.signal(libc::SIGKILL);
    let _ = d.wait_exit(Duration::from_secs(10));
    wait_no_digits(&b, Duration::from_secs(5), "dead daemon");
    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    wait_live(&b, Duration::from_secs(25), "live after a restart");
    assert!(
        b.execute("return window.__not_reloaded === true") == true,
        "the page was reloaded"
    );
    d.signal(libc::SIGTERM);
}

/// Issue 15: a kiosk on the LAN is set up by opening the page once with
/// its key in the fragment (`/#kiosk=KEY`). The key leaves the address bar
/// at once, stays in the browser, and goes with every check-in; the same
/// page on a browser without it is told it is no kiosk.
#[test]
fn a_lan_kiosk_set_up_with_its_key_checks_miners_in_and_a_stranger_cannot() {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let lan = pithead_e2e::lan_ip();
    let port = free_port();
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    let on_lan = SocketAddr::new(lan, port);
    let keys = dir.path().join("kiosk-keys");
    let key = "lamp-room-key-5f1c9a0e77d2";
    pithead_e2e::write_secret(&keys, &format!("lamp-room {key}\n"));
    let cfg = pithead_e2e::with_token(
        dir.path(),
        local,
        &pithead_e2e::face_station(dir.path(), local, &sim, ""),
    )
    .replacen(
        &format!("listen = \"{local}\"\n"),
        &format!("listen = \"{on_lan}\"\nallow_plain_http = true\n"),
        1,
    ) + &format!("[kiosk]\nkeys_file = \"{}\"\n", keys.display());
    let mut d = Daemon::start(dir.path(), &cfg, on_lan);
    d.wait_healthy(Duration::from_secs(20));
    let wait = Duration::from_secs(15);

    // A phone on the Wi-Fi opens the kiosk page: no check-in.
    let b = Browser::start(1280, 1100);
    b.open(&format!("http://{on_lan}/"));
    b.wait_text("#station", wait, "the station name", |t| t == "测试站");
    b.type_into(&b.find("#badge", wait), "0001\u{E007}");
    let refused = b.wait_text("#checkin-result", wait, "refused", |t| {
        t.contains("登记终端")
    });
    assert!(!refused.contains("张伟"), "{refused}");
    b.click(&b.find("#confirm", wait));

    // The lamp room's tablet is set up once with its key.
    b.open(&format!("http://{on_lan}/#kiosk={key}"));
    b.wait_text("#station", wait, "the station name", |t| t == "测试站");
    let href = b.execute("return location.href");
    assert!(
        !href.as_str().unwrap_or_default().contains(key),
        "the key left the address bar: {href}"
    );
    b.type_into(&b.find("#badge", wait), "0001\u{E007}");
    b.wait_text("#checkin-result", wait, "checked in", |t| {
        t.contains("张伟") && t.contains("下井登记成功")
    });
    // After a restart of the browser page, still a kiosk.
    b.open(&format!("http://{on_lan}/"));
    b.type_into(&b.find("#badge", wait), "0001\u{E007}");
    b.wait_text("#checkin-result", wait, "already in", |t| {
        t.contains("已在井下")
    });
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(20)).success());
    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    let kiosks: Vec<(String, Option<String>)> = db
        .prepare("SELECT outcome, kiosk FROM checkins ORDER BY id")
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()
        })
        .unwrap();
    assert!(
        kiosks
            .iter()
            .all(|(_, k)| k.as_deref() == Some("lamp-room"))
            && kiosks.len() == 2,
        "the stranger's attempt left no record; the kiosk's say which: {kiosks:?}"
    );
}

/// Fails unless every element matching `css` lies wholly inside the
/// viewport; returns how many there are.
fn assert_in_view(b: &Browser, css: &str, what: &str) -> usize {
    let out = b.execute(&format!(
        "const els = [...document.querySelectorAll({css:?})].filter(e => e.offsetParent !== null || getComputedStyle(e).position === 'fixed');
         return els.map(e => {{ const r = e.getBoundingClientRect();
           return [r.left >= -0.5 && r.top >= -0.5 && r.right <= innerWidth + 0.5 && r.bottom <= innerHeight + 0.5 && r.width > 0 && r.height > 0,
                   `${{e.id || e.className}} ${{Math.round(r.left)}},${{Math.round(r.top)}} ${{Math.round(r.width)}}x${{Math.round(r.height)}}`]; }});"
    ));
    let list = out.as_array().cloned().unwrap_or_default();
    assert!(!list.is_empty(), "{what}: nothing shown matches {css}");
    for e in &list {
        assert!(
            e[0] == true,
            "{what}: {} is not wholly inside the viewport {}",
            e[1],
            b.execute("return innerWidth + 'x' + innerHeight")
        );
    }
    list.len()
}

/// Fails unless every shown element matching `css` is at least `px` wide
/// and high.
fn assert_targets(b: &Browser, css: &str, px: f64, what: &str) {
    let out = b.execute(&format!(
        "return [...document.querySelectorAll({css:?})].filter(e => e.offsetParent !== null)
           .map(e => {{ const r = e.getBoundingClientRect(); return [r.width, r.height, e.id || e.textContent.trim().slice(0, 12)]; }});"
    ));
    let list = out.as_array().cloned().unwrap_or_default();
    assert!(!list.is_empty(), "{what}: no touch targets match {css}");
    for e in &list {
        let (w, h) = (e[0].as_f64().unwrap(), e[1].as_f64().unwrap());
        assert!(
            w >= px - 0.5 && h >= px - 0.5,
            "{what}: {} is {w:.0}x{h:.0} px, under 15 mm ({px:.0} px) on this screen",
            e[2]
        );
    }
}

/// The last tone the page sounded (`Common.tones`), with the audio state.
fn last_tone(b: &Browser) -> String {
    b.execute(
        "const t = Common.tones[Common.tones.length - 1]; return t ? t.kind + ' ' + t.state : ''",
    )
    .as_str()
    .unwrap_or_default()
    .to_owned()
}

#[test]
fn on_the_pi_screens_a_miner_sees_air_alarm_and_check_in_at_once_and_cannot_miss_the_answer() {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = pithead_e2e::demo_station(dir.path(), http, &sim, "");
    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    let wait = Duration::from_secs(15);
    // The face methane over the power-cut level, the return CO2 sensor
    // silent: an alarm banner, and states in words.
    sim.control("set 1 input 0 172");
    for (w, h, name) in [(800, 480, "800x480"), (1024, 600, "1024x600")] {
        let b = Browser::start(w, h);
        b.open(&format!("http://{http}/"));
        let banner = b.wait_text("#alert", wait, "the alarm banner", |t| t.contains("断电"));
        for part in [
            "甲烷",
            "1201 工作面",
            "1.72",
            "%vol",
            "超限已断电，人员立即撤离",
        ] {
            assert!(
                banner.contains(part),
                "{name}: the banner names {part}: {banner}"
            );
        }
        assert_eq!(
            b.attribute_of("#alert-icon svg", "data-icon", wait)
                .as_deref(),
            Some("power_cut"),
            "{name}: the banner's shape says the level too"
        );
        // Every tile says its state in words, with the shape of that state.
        b.wait_text(
            "[data-channel='ch4-1201-face'] .status",
            wait,
            "断电 on the tile",
            |t| t == "断电",
        );
        let words = b.execute(
            "return [...document.querySelectorAll('#tiles .tile')].map(t => [t.dataset.status, t.querySelector('.status').textContent, t.querySelector('.status svg').dataset.icon])",
        );
        let words = words.as_array().unwrap();
        assert_eq!(
            words.len(),
            10,
            "{name}: the demo's ten channels: {words:?}"
        );
        for t in words {
            assert_eq!(t[0], t[2], "{name}: each state has its own shape: {t:?}");
            let word = t[1].as_str().unwrap();
            assert!(
                [
                    "正常", "预警", "报警", "断电", "断线", "故障", "预热", "标校"
                ]
                .contains(&word),
                "{name}: a state in words: {t:?}"
            );
        }
        // All at once, without scrolling: the banner, every tile, and
        // check-in with its field and buttons.
        assert_in_view(&b, "#alert", name);
        assert_eq!(assert_in_view(&b, "#tiles .tile", name), 10);
        for css in [
            "#badge",
            "#mode-in",
            "#mode-out",
            "#checkin-form button[type=submit]",
            ".rail button",
        ] {
            assert_in_view(&b, css, name);
        }
        // 15 mm on the 7-inch display (154 mm wide) the page is sized for.
        let px = (f64::from(w) / 154.0 * 15.0).ceil();
        assert_targets(
            &b,
            "#mode-in, #mode-out, #badge, #checkin-form button, .rail button",
            px,
            name,
        );
        b.screenshot(&screenshots().join(format!("kiosk-{name}.png")));

        // One touch to the hazard report, whose controls are as large; and
        // back.
        b.click(&b.find(".rail [data-screen='report']", wait));
        assert_in_view(&b, "#category", name);
        assert_targets(
            &b,
            "#screen-report select, #screen-report input:not([type=radio]):not([type=checkbox]):not([type=file]), #screen-report label.choice, #screen-report button",
            px,
            name,
        );
        assert!(b.execute("return document.getElementById('badge').offsetParent === null") == true);
        b.click(&b.find(".rail [data-screen='lookup']", wait));
        assert_in_view(&b, "#ticket", name);
        b.click(&b.find(".rail [data-screen='home']", wait));
        assert_in_view(&b, "#badge", name);

        // A check-in: the whole screen says who, which way and when, with
        // a tone, then the kiosk is back and ready for the next badge.
        let badge = if w == 800 { "0001" } else { "0002" };
        b.type_into(&b.find("#badge", wait), &format!("{badge}\u{E007}"));
        let answer = b.wait_text("#confirm", wait, "the confirmation", |t| {
            t.contains("下井登记成功")
        });
        let rect = b.execute("const r = document.getElementById('confirm').getBoundingClientRect(); return [r.width, r.height, innerWidth, innerHeight]");
        assert_eq!(rect[0], rect[2], "{name}: the answer is full width: {rect}");
        assert_eq!(rect[1], rect[3], "{name}: and full height: {rect}");
        let miner = if w == 800 { "张伟" } else { "王芳" };
        assert_eq!(
            b.text(&b.find("#confirm-name", wait)),
            miner,
            "{name}: the miner's name: {answer}"
        );
        let hhmm = b.text(&b.find("#confirm-when", wait));
        assert!(
            hhmm.starts_with("下井 · ") && hhmm.len() >= "下井 · 00:00".len(),
            "{name}: direction and time: {hhmm}"
        );
        assert!(
            last_tone(&b).starts_with("ok "),
            "{name}: the tone for a check-in: {}",
            last_tone(&b)
        );
        assert_eq!(
            b.attribute(&b.find("#confirm", wait), "data-outcome")
                .as_deref(),
            Some("ok")
        );
        // Back by itself within a few seconds, the field ready.
        b.wait_attribute(
            "#confirm",
            "hidden",
            Duration::from_secs(8),
            "the answer goes by itself",
            |v| v == "true",
        );
        assert_eq!(
            b.execute("return document.activeElement.id"),
            "badge",
            "{name}: ready for the next badge"
        );

        // A badge not on the roster: another colour, another tone, the
        // reason.
        b.type_into(&b.find("#badge", wait), "9999\u{E007}");
        let refused = b.wait_text("#confirm", wait, "the refusal", |t| {
            t.contains("卡号未登记")
        });
        assert!(
            refused.contains("不在花名册"),
            "{name}: the reason: {refused}"
        );
        assert!(
            last_tone(&b).starts_with("refused "),
            "{name}: {}",
            last_tone(&b)
        );
        assert_eq!(
            b.attribute(&b.find("#confirm", wait), "data-outcome")
                .as_deref(),
            Some("unknown_badge")
        );
        b.screenshot(&screenshots().join(format!("kiosk-{name}-refused.png")));
        // A touch takes it away at once.
        b.click(&b.find("#confirm", wait));
        b.wait_attribute(
            "#confirm",
            "hidden",
            Duration::from_secs(2),
            "gone at a touch",
            |v| v == "true",
        );
    }
    d.signal(libc::SIGTERM);
}

#[test]
fn an_urgent_notice_is_read_before_the_answer_the_board_leads_with_overdue_and_overcrowding_shows()
{
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = pithead_e2e::face_station(dir.path(), http, &sim, "")
        .replace("[roster]\nfile", "[roster]\nmax_underground = 1\nfile");
    std::fs::write(
        dir.path().join("roster.csv"),
        "badge,name,team,role\n0001,张伟,综采一队,采煤机司机\n0002,王芳,综采一队,支架工\n",
    )
    .unwrap();
    let cfg = pithead_e2e::with_token(dir.path(), http, &cfg);
    {
        // A first run makes the database; the county's urgent notice is put
        // in it as the downlink stores one (tested over MQTT in `sync`).
        let mut d = Daemon::start(dir.path(), &cfg, http);
        d.wait_healthy(Duration::from_secs(20));
        d.signal(libc::SIGTERM);
        assert!(d.wait_exit(Duration::from_secs(15)).success());
        let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
        db.execute(
            "INSERT INTO notices(msg_id, title, body, priority, valid_from, valid_until, received_at) \
             VALUES ('n-urgent', '透水预警', '今天 1201 工作面暂停作业，听从调度指挥', 'urgent', \
             '2000-01-01T00:00:00Z', '2999-01-01T00:00:00Z', '2000-01-01T00:00:00Z')",
            [],
        )
        .unwrap();
    }
    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    // A hazard past its deadline, and one on time, for the board.
    let auth = format!("Bearer {}", pithead_e2e::TEST_TOKEN);
    let mut tickets = Vec::new();
    for (place, deadline) in [
        ("1202 运输巷", "2999-01-01T00:00:00Z"),
        ("1201 回风巷", "2000-01-01T00:00:00Z"),
    ] {
        let (s, b) = pithead_e2e::http_request(
            http,
            "POST",
            "/api/v1/hazards",
            &[],
            &format!("{{\"category\": \"roof\", \"location\": \"{place}\", \"grade\": \"general\", \"description\": \"掉渣\", \"anonymous\": true}}"),
        )
        .unwrap();
        assert_eq!(s, 201, "{b}");
        let t = serde_json::from_str::<serde_json::Value>(&b).unwrap()["ticket"]
            .as_str()
            .unwrap()
            .to_owned();
        let (s, b) = pithead_e2e::http_request(
            http,
            "POST",
            &format!("/api/v1/hazards/{t}/steps"),
            &[("Authorization", &auth)],
            &format!("{{\"status\": \"assigned\", \"by\": \"王班长\", \"owner\": \"李四\", \"measures\": \"支护\", \"deadline\": \"{deadline}\"}}"),
        )
        .unwrap();
        assert_eq!(s, 200, "{b}");
        tickets.push(t);
    }

    let b = Browser::start(1280, 1100);
    b.open(&format!("http://{http}/"));
    let wait = Duration::from_secs(15);
    b.type_into(&b.find("#badge", wait), "0001\u{E007}");
    // The notice comes first, and the answer waits for 已阅.
    b.wait_text("#must-read-title", wait, "the urgent notice", |t| {
        t == "透水预警"
    });
    assert_eq!(
        b.execute("return document.getElementById('confirm').hidden"),
        true,
        "no answer before 已阅"
    );
    b.click_live("#read-ok", wait);
    b.wait_text("#checkin-result", wait, "then the answer", |t| {
        t.contains("张伟") && t.contains("下井登记成功")
    });
    // One miner allowed: the second is recorded all the same, and told;
    // the kiosk says so under the form until the count falls.
    b.click(&b.find("#confirm", wait));
    b.type_into(&b.find("#badge", wait), "0002\u{E007}");
    b.wait_text("#must-read-title", wait, "the notice for her too", |t| {
        t == "透水预警"
    });
    b.click_live("#read-ok", wait);
    b.wait_text("#checkin-result", wait, "recorded and told", |t| {
        t.contains("王芳")
            && t.contains("下井登记成功")
            && t.contains("井下已超员（2 人，限 1 人）")
    });
    b.click(&b.find("#confirm", wait));
    b.wait_text("#crowded", wait, "over the limit", |t| {
        t.contains("井下已超员：2 人（核定 1 人）")
    });
    // The board, in one touch: the overdue hazard first, marked.
    b.click_live(".rail [data-screen='lookup']", wait);
    b.wait_text("#board-rows tr:first-child", wait, "overdue first", |t| {
        t.contains(&tickets[1]) && t.contains("已超期")
    });
    b.wait_text("#board-rows tr:nth-child(2)", wait, "then the other", |t| {
        t.contains(&tickets[0]) && !t.contains("已超期")
    });
    let board = b
        .execute("return document.getElementById('screen-board').textContent")
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        !board.contains("李四") && !board.contains("王班长"),
        "{board}"
    );
    b.wait_text("#board-count", wait, "the overdue count on the tab", |t| {
        t == "1"
    });
    // The station's own light in the header: red for the overdue
    // rectification, with the reason.
    b.wait_text(
        "#light",
        Duration::from_secs(25),
        "the self-assessment",
        |t| t == "本站预评 红灯",
    );
    let why = b
        .execute("return document.getElementById('light').title")
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(why.contains("隐患整改超期 1 项"), "{why}");
    let _ = std::fs::create_dir_all(screenshots());
    b.screenshot(&screenshots().join("kiosk-board.png"));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(15)).success());
    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    let mut st = db
        .prepare("SELECT notice, badge FROM notice_reads ORDER BY badge")
        .unwrap();
    let read: Vec<(String, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        read,
        [
            ("n-urgent".into(), "0001".into()),
            ("n-urgent".into(), "0002".into())
        ]
    );
    let sent: String = db
        .query_row(
            "SELECT payload FROM outbox WHERE kind = 'notice_read' ORDER BY id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        sent.contains("\"notice\":\"n-urgent\"") && sent.contains("张伟"),
        "{sent}"
    );
}

/// Raw `struct input_event` records (this machine's layout) of `keys`
/// pressed and released, as a keyboard-style badge reader sends them.
fn input_events(keys: &[u16]) -> Vec<u8> {
    let size = std::mem::size_of::<libc::input_event>();
    let mut out = Vec::new();
    // A zero timestamp (timeval: size - 8 bytes), then type, code, value.
    let mut push = |ty: u16, code: u16, value: i32| {
        out.extend(std::iter::repeat_n(0u8, size - 8));
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(&code.to_ne_bytes());
        out.extend_from_slice(&value.to_ne_bytes());
    };
    for &k in keys {
        push(1, k, 1);
        push(0, 0, 0);
        push(1, k, 0);
        push(0, 0, 0);
    }
    out
}

#[test]
fn the_badge_reader_checks_in_for_the_kiosks_direction_and_the_kiosk_shows_it() {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // The reader: a FIFO the test writes a recorded event stream into.
    let fifo = dir.path().join("reader");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let cfg = pithead_e2e::face_station(
        dir.path(),
        http,
        &sim,
        &format!("[kiosk]\nbadge_reader = \"{}\"\n", fifo.display()),
    );
    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    let b = Browser::start(1024, 600);
    b.open(&format!("http://{http}/"));
    let wait = Duration::from_secs(15);
    b.wait_text("#station", wait, "the kiosk", |t| t == "测试站");
    let write = |keys: &[u16]| {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        f.write_all(&input_events(keys)).unwrap();
    };
    // "0001" + Enter (KEY_0 = 11, KEY_1 = 2, KEY_ENTER = 28).
    write(&[11, 11, 11, 2, 28]);
    b.wait_text("#checkin-result", wait, "checked in by the reader", |t| {
        t.contains("张伟") && t.contains("下井登记成功")
    });
    assert_eq!(
        b.execute("return document.getElementById('badge').value"),
        "",
        "nothing typed into the field"
    );
    b.click(&b.find("#confirm", wait));
    // The kiosk switched to 升井: the reader's next badge is a check-out.
    b.click(&b.find("#mode-out", wait));
    let until = std::time::Instant::now() + wait;
    loop {
        let (_, body) = pithead_e2e::http_get(http, "/api/v1/reader").unwrap();
        if body.contains("\"direction\":\"out\"") {
            break;
        }
        assert!(std::time::Instant::now() < until, "{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    write(&[11, 11, 11, 2, 28]);
    b.wait_text("#checkin-result", wait, "checked out by the reader", |t| {
        t.contains("张伟") && t.contains("升井登记成功")
    });
    // Keys typed slowly (a person at the reader's keyboard) are no badge.
    for k in [11u16, 11, 11, 2] {
        write(&[k]);
        std::thread::sleep(Duration::from_millis(400));
    }
    write(&[28]);
    std::thread::sleep(Duration::from_millis(800));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(15)).success());
    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    let dirs: Vec<String> = db
        .prepare("SELECT direction FROM checkins WHERE badge = '0001' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        dirs,
        ["in", "out"],
        "one in, one out, nothing from the slow keys"
    );
}
