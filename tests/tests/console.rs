//! The supervisor console in a real headless Chromium: log in, acknowledge
//! an alarm raised by the simulator, triage a hazard to closed, see the
//! people underground; hostile text stays text.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use pithead_e2e::webdriver::Browser;
use pithead_e2e::{Daemon, Simulator, free_port, http_request, pithead_bin};

#[test]
fn a_supervisor_acknowledges_an_alarm_and_closes_a_hazard() {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = pithead_e2e::face_station(dir.path(), http, &sim, "");
    let file = dir.path().join("pithead.toml");
    std::fs::write(&file, &cfg).unwrap_or_else(|e| panic!("{e}"));
    let mut add = Command::new(pithead_bin())
        .args(["user", "add", "王班长", "--config"])
        .arg(&file)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut i) = add.stdin.take() {
        let _ = writeln!(i, "井口安全第一 2026");
    }
    assert!(add.wait().map(|s| s.success()).unwrap_or(false));

    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    let post = |path: &str, body: &str| {
        http_request(http, "POST", path, &[], body).unwrap_or_else(|e| panic!("{e}"))
    };
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
    let button = b.find("#alarm-rows button[data-alarm]", wait);
    b.click(&button);
    b.wait_text("#alarm-result", wait, "acknowledged", |t| t == "已确认");
    b.wait_text("#alarm-rows", wait, "who acknowledged", |t| {
        t.contains("王班长")
    });
    b.execute("window.scrollTo(0, 0)");
    b.screenshot(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/screenshots/console.png"),
    );

    // The people underground, for the evacuation roll.
    b.click(&b.find(".tabs button[data-tab='people']", wait));
    b.wait_text("#people-rows", wait, "the miner", |t| {
        t.contains("张伟") && t.contains("0001")
    });
    assert_eq!(b.find_all("#print").len(), 1);

    // The hazard through its lifecycle; its hostile text stays text.
    b.click(&b.find(".tabs button[data-tab='hazards']", wait));
    let card = format!(".hazard[data-ticket='{ticket}']");
    b.wait_text(&card, wait, "the report", |t| t.contains("<img src=x"));
    assert!(
        b.find_all("#hazard-list img").is_empty(),
        "no element was made from the description"
    );
    let step = |status: &str, extra: &str| {
        b.click(&b.find(
            &format!("{card} select[name=status] option[value='{status}']"),
            wait,
        ));
        if !extra.is_empty() {
            b.execute(extra);
        }
        b.click(&b.find(&format!("{card} form button[type=submit]"), wait));
        b.wait_text("#hazard-result", wait, status, |t| {
            t.contains(&ticket) && t.contains('→')
        });
    };
    step("acknowledged", "");
    b.wait_text(&card, wait, "acknowledged", |t| {
        t.contains("已受理") || t.contains("acknowledged")
    });
    let fill = format!(
        "const f = document.querySelector(\"{card} form\"); f.elements.owner.value = '李工'; \
         f.elements.measures.value = '加强支护'; f.elements.deadline.value = '2030-12-31T12:00';"
    );
    step("assigned", &fill);
    b.wait_text(&card, wait, "assigned", |t| t.contains("整改中"));
    step("rectified", "");
    b.wait_text(&card, wait, "rectified", |t| t.contains("已整改"));
    step("closed", "");
    b.wait_text(&card, wait, "closed", |t| t.contains("已销号"));
    b.screenshot(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/screenshots/console-hazards.png"),
    );

    // The steps were recorded under the supervisor's name.
    let (s, body) = http_request(http, "GET", &format!("/api/v1/hazards/{ticket}"), &[], "")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s, 200);
    let h: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(h["status"], "closed");
    assert!(
        h["steps"]
            .as_array()
            .is_some_and(|v| v.iter().skip(1).all(|s| s["by"] == "王班长")),
        "{h}"
    );
    d.signal(libc::SIGTERM);
}
