//! The kiosk in a real headless Chromium: a miner checks in with a badge
//! typed as a reader types it, reports a hazard and follows its ticket; a
//! sensor that stops answering shows as a fault, never a number; text from
//! a report stays text.

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
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = pithead_e2e::face_station(
        dir.path(),
        http,
        &sim,
        "\
         [[device]]\nid = \"sump\"\nbus = \"sim\"\nunit = 3\n\
         [[channel]]\nid = \"water-sump\"\ndevice = \"sump\"\nkind = \"water_level\"\nunit = \"m\"\nlocation = \"中央水仓\"\n\
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

    // A badge reader types the number and Enter into the focused field.
    let badge = b.find("#badge", wait);
    b.type_into(&badge, "0001\u{E007}");
    b.wait_text("#checkin-result", wait, "check-in confirmed", |t| {
        t.contains("张伟") && t.contains("下井登记成功")
    });
    // Again: already underground, told so.
    b.type_into(&b.find("#badge", wait), "0001\u{E007}");
    b.wait_text("#checkin-result", wait, "already in", |t| {
        t.contains("已于")
    });
    // Unknown badge.
    b.type_into(&b.find("#badge", wait), "9999\u{E007}");
    b.wait_text("#checkin-result", wait, "unknown badge", |t| {
        t.contains("不在花名册")
    });

    // A hazard report with a hostile description.
    let xss = "<img src=x onerror=\"document.title='pwned'\">顶板掉渣";
    b.click(&b.find("#category option[value='roof']", wait));
    b.type_into(&b.find("#location", wait), "1201 回风巷");
    b.type_into(&b.find("#description", wait), xss);
    let photo = dir.path().join("photo.jpg");
    let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
    jpeg.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
    jpeg.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x02, 0x11, 0x22, 0x33, 0xFF, 0xD9]);
    std::fs::write(&photo, jpeg).unwrap_or_else(|e| panic!("{e}"));
    b.type_into(&b.find("#photo", wait), &photo.display().to_string());
    b.click(&b.find("#anonymous", wait));
    b.click(&b.find("#report-form button[type=submit]", wait));
    let ticket = b.wait_text("#new-ticket", wait, "a ticket", |t| t.len() == 6);
    b.type_into(&b.find("#ticket", wait), &format!("{ticket}\u{E007}"));
    let shown = b.wait_text("#lookup-result", wait, "the report", |t| {
        t.contains(&ticket)
    });
    assert!(
        shown.contains("<img src=x"),
        "the description is shown as text: {shown}"
    );
    assert!(
        b.find_all("#lookup-result img:not(#lookup-photo)")
            .is_empty(),
        "no element was made from the description: {}",
        b.execute("return document.getElementById('lookup-result').innerHTML")
    );
    assert_eq!(b.find_all("#lookup-photo").len(), 1, "the photo is shown");

    // The face sensor stops answering: a fault, never a number.
    sim.control("fault 1 silent");
    let v = b.wait_text(
        "[data-channel='ch4-1201-face'] .value",
        wait,
        "断线",
        |t| t == "断线",
    );
    assert!(!v.chars().any(|c| c.is_ascii_digit()));
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
