//! Fault injection against the real daemon (see RELIABILITY.md). The short
//! form runs in the test command; `PITHEAD_SOAK=1` runs the long form.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of the tests: a failed unwrap is a failed test"
)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pithead_e2e::webdriver::Browser;
use pithead_e2e::{
    Daemon, Mosquitto, Simulator, Subscriber, TEST_TOKEN, assert_county_has_exactly_the_store,
    check_in, check_in_answer, face_station, free_port, http_get, http_request, http_send,
    jpeg_with_gps, metric, multipart, rng, with_token,
};
use serde_json::Value;

/// Kill cycles: a few in the test command, 50 with `PITHEAD_SOAK=1`.
fn cycles() -> usize {
    if std::env::var_os("PITHEAD_SOAK").is_some() {
        50
    } else {
        5
    }
}

/// libfaketime, which the test command installs (Debian package faketime).
fn libfaketime() -> String {
    [
        "x86_64-linux-gnu",
        "aarch64-linux-gnu",
        "arm-linux-gnueabihf",
    ]
    .iter()
    .map(|t| format!("/usr/lib/{t}/faketime/libfaketimeMT.so.1"))
    .find(|p| Path::new(p).exists())
    .unwrap_or_else(|| panic!("libfaketime missing: apt-get install faketime"))
}

/// Alarm events in the station's event log (`dir/data/pithead.db`), in order.
fn alarm_events(dir: &Path) -> Vec<(String, String)> {
    alarm_events_in(&dir.join("data/pithead.db"))
}

fn alarm_events_in(db: &Path) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open(db).unwrap();
    let mut st = db
        .prepare(
            "SELECT kind, coalesce(subject, '') FROM events WHERE kind LIKE 'alarm.%' ORDER BY id",
        )
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn get_json(http: SocketAddr, path: &str) -> Value {
    let auth = format!("Bearer {TEST_TOKEN}");
    let (status, body) = http_request(http, "GET", path, &[("Authorization", &auth)], "").unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn wait_until(within: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < end, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Item 8: the wall clock steps an hour forward, then two hours back (NTP
/// on a Pi without a real-time clock does this), with a miner underground
/// for a 21-minute limit and a latched power-cut alarm waiting for its
/// acknowledgement. Neither may raise, clear or repeat anything.
#[test]
fn clock_jumps_of_an_hour_raise_clear_or_repeat_nothing() {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = with_token(
        dir.path(),
        http,
        &face_station(dir.path(), http, &sim, "").replacen(
            "[roster]\n",
            "[roster]\nshift_length = \"20m\"\noverdue_grace = \"1m\"\n",
            1,
        ),
    );
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let lib = libfaketime();
    let offset_path = offset.display().to_string();
    let mut d = Daemon::start_with_env(
        dir.path(),
        &config,
        http,
        &[
            ("LD_PRELOAD", lib.as_str()),
            ("FAKETIME_TIMESTAMP_FILE", offset_path.as_str()),
            // Only the wall clock moves; CLOCK_MONOTONIC is the real one.
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ("FAKETIME_CACHE_DURATION", "1"),
        ],
    );
    d.wait_healthy(Duration::from_secs(20));
    check_in(http, 1);
    // A power-cut alarm that latches: methane over 1.5 %, then back.
    sim.control("set 1 input 0 160");
    wait_until(Duration::from_secs(10), "power cut", || {
        http_get(http, "/api/v1/outputs")
            .map(|r| r.1.contains("\"power_allowed\":false"))
            .unwrap_or(false)
    });
    sim.control("set 1 input 0 30");
    wait_until(
        Duration::from_secs(10),
        "the alarm returned, latched",
        || {
            get_json(http, "/api/v1/alarms?active=true")
                .as_array()
                .is_some_and(|a| {
                    a.iter()
                        .any(|x| x["level"] == "power_cut" && x["state"] == "returned")
                })
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let before = alarm_events(dir.path());
    let power = |http| {
        let o: Value = serde_json::from_str(
            &http_get(http, "/api/v1/outputs")
                .map(|r| r.1)
                .unwrap_or_default(),
        )
        .unwrap_or_default();
        (o["power_allowed"].clone(), o["siren"].clone())
    };
    let outputs_before = power(http);

    // The overdue watch looks every 15 s here; each step is held 17 s.
    for (step, shown) in [("+1h", 60..=62), ("-1h", 0..=0)] {
        std::fs::write(&offset, format!("{step}\n")).unwrap();
        // The daemon's wall clock did move: the display (by the wall
        // clock) shows the jump.
        wait_until(Duration::from_secs(10), "the jump to show", || {
            let u = get_json(http, "/api/v1/underground");
            u["people"][0]["minutes"]
                .as_i64()
                .is_some_and(|m| shown.contains(&m))
        });
        std::thread::sleep(Duration::from_secs(17));
        let after = alarm_events(dir.path());
        assert_eq!(after, before, "after the {step} jump the alarms changed");
        let active = get_json(http, "/api/v1/alarms?active=true");
        let levels: Vec<&str> = active
            .as_array()
            .map(|a| a.iter().filter_map(|x| x["level"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            !levels.contains(&"overdue"),
            "an overdue alarm after {step}: {active}"
        );
        assert!(
            levels.contains(&"power_cut"),
            "the latched alarm went after {step}: {active}"
        );
        assert_eq!(
            power(http),
            outputs_before,
            "the outputs changed after {step}"
        );
    }
    d.signal(libc::SIGTERM);
}

/// Item 1: SIGKILL at random points under a mixed load: polling, alarms
/// raised and cleared, check-ins from four clients, hazard reports with
/// photos, and the uplink draining to a real Mosquitto. Every record that
/// was answered "ok" survives, the database passes `integrity_check`, and
/// the county ends up with exactly the store's records.
#[test]
fn kill_9_under_mixed_load_loses_nothing_that_was_answered() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port);
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = face_station(
        dir.path(),
        http,
        &sim,
        &pithead_e2e::mqtt_section(&broker.url()),
    );
    // 300 miners instead of the one face_station writes.
    let roster: String = std::iter::once("badge,name,team,role\n".to_owned())
        .chain((0..300).map(|i| format!("{i:04},工人{i},一队,工\n")))
        .collect();
    std::fs::write(dir.path().join("roster.csv"), roster).unwrap();

    let checkins: Arc<Mutex<Vec<i64>>> = Arc::default();
    let hazards: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let mut next = rng();
    let n = cycles();
    for cycle in 0..n {
        let mut d = Daemon::start(dir.path(), &config, http);
        d.wait_healthy(Duration::from_secs(30));
        let stop = AtomicBool::new(false);
        let kill_after = Duration::from_millis(300 + next(1500));
        let seeds: Vec<u64> = (0..4).map(|_| next(u64::MAX)).collect();
        std::thread::scope(|s| {
            for (t, seed) in seeds.iter().enumerate() {
                let (stop, checkins) = (&stop, Arc::clone(&checkins));
                let mut x = *seed | 1;
                s.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let badge = (x % 75) * 4 + t as u64;
                        let dir = if x.is_multiple_of(2) { "in" } else { "out" };
                        let body =
                            format!("{{\"badge\": \"{badge:04}\", \"direction\": \"{dir}\"}}");
                        match http_request(http, "POST", "/api/v1/checkins", &[], &body) {
                            Ok((201, b)) => {
                                let v: Value = serde_json::from_str(&b).unwrap_or_default();
                                let id = v["record"]["id"]
                                    .as_i64()
                                    .unwrap_or_else(|| panic!("no id: {b}"));
                                checkins.lock().map(|mut c| c.push(id)).unwrap_or(());
                            }
                            Ok(_) => {}
                            Err(_) => std::thread::sleep(Duration::from_millis(20)),
                        }
                    }
                });
            }
            let (stop2, hazards) = (&stop, Arc::clone(&hazards));
            s.spawn(move || {
                let mut i = 0u32;
                while !stop2.load(Ordering::Relaxed) {
                    i += 1;
                    let with_photo = i.is_multiple_of(2);
                    let report = format!(
                        "{{\"category\": \"water\", \"location\": \"中央水仓\", \"grade\": \"general\", \"description\": \"第{cycle}轮第{i}条\", \"anonymous\": true}}"
                    );
                    let mut jpeg = jpeg_with_gps();
                    jpeg.extend_from_slice(&i.to_be_bytes()); // a different photo each time
                    let (ct, body) = multipart(&report, with_photo.then_some(jpeg.as_slice()));
                    match http_send(http, "POST", "/api/v1/hazards", &[], Some(&ct), &body) {
                        Ok((201, b)) => {
                            let v: Value = serde_json::from_str(&b).unwrap_or_default();
                            let ticket = v["ticket"].as_str().unwrap_or_else(|| panic!("no ticket: {b}")).to_owned();
                            hazards.lock().map(|mut h| h.push((ticket, with_photo))).unwrap_or(());
                        }
                        Ok(_) => {}
                        Err(_) => {}
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            let stop3 = &stop;
            let sim = &sim;
            s.spawn(move || {
                let mut high = false;
                while !stop3.load(Ordering::Relaxed) {
                    high = !high;
                    sim.control(if high {
                        "set 1 input 0 160"
                    } else {
                        "set 1 input 0 30"
                    });
                    // A 650 ms cycle, not a divisor of the 1 s poll: a
                    // 500 ms one locked in phase with the polls, so a run
                    // could see the register low at every poll (seed
                    // 1795497391685593655 did: no alarm in 5 cycles).
                    std::thread::sleep(Duration::from_millis(if high { 350 } else { 300 }));
                }
            });
            std::thread::sleep(kill_after);
            d.signal(libc::SIGKILL);
            let _ = d.wait_exit(Duration::from_secs(10));
            stop.store(true, Ordering::Relaxed);
        });
    }
    sim.control("set 1 input 0 30");
    let mut d = Daemon::start(dir.path(), &config, http);
    d.wait_healthy(Duration::from_secs(30));
    assert_county_has_exactly_the_store(dir.path(), &sub, Duration::from_secs(120), false);
    d.signal(libc::SIGTERM);
    let _ = d.wait_exit(Duration::from_secs(20));

    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let checkins = checkins.lock().map(|c| c.clone()).unwrap_or_default();
    let hazards = hazards.lock().map(|h| h.clone()).unwrap_or_default();
    for id in &checkins {
        let found: i64 = db
            .query_row("SELECT count(*) FROM checkins WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap_or(0);
        assert_eq!(found, 1, "check-in {id} was answered ok and is gone");
    }
    for (ticket, with_photo) in &hazards {
        let photo: Option<String> = db
            .query_row(
                "SELECT photo FROM hazards WHERE ticket = ?1",
                [ticket],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("hazard {ticket} was answered ok and is gone: {e}"));
        if *with_photo {
            let name = photo.unwrap_or_else(|| panic!("hazard {ticket} lost its photo"));
            assert!(
                dir.path().join("data/photos").join(&name).exists(),
                "photo {name} of {ticket} is gone"
            );
        }
    }
    let alarms: i64 = db
        .query_row(
            "SELECT count(*) FROM events WHERE kind LIKE 'alarm.%'",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0);
    eprintln!(
        "{n} kills: {} check-ins and {} hazard reports answered ok, all stored; {alarms} alarm events; integrity ok; county == store",
        checkins.len(),
        hazards.len()
    );
    assert!(
        !checkins.is_empty() && !hazards.is_empty() && alarms > 0,
        "the load did not run"
    );
}

/// A wrapper for [`Daemon::start_under`] that gives the daemon a mount
/// namespace of its own with a `size_mib` tmpfs on `data`: a small disk
/// that fills up, gone with the process. Without root it maps the user to
/// root in a user namespace first.
fn on_small_tmpfs(data: &Path, size_mib: u32) -> Vec<String> {
    // SAFETY: geteuid(2) has no preconditions and touches no memory.
    #[expect(unsafe_code, reason = "geteuid(2) has no safe wrapper in std")]
    let root = unsafe { libc::geteuid() } == 0;
    let mut w: Vec<String> = vec!["unshare".into()];
    if !root {
        w.extend(["--user".into(), "--map-root-user".into()]);
    }
    w.extend(
        [
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs -o size=\"$1\"m pithead-small-disk \"$0\" && shift && exec \"$@\"",
        ]
        .map(String::from),
    );
    w.push(data.display().to_string());
    w.push(size_mib.to_string());
    w
}

/// Fills the filesystem holding `path` with one file until it says ENOSPC.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let chunk = vec![0x5au8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Whatever the page cache still holds must hit the limit now.
    let _ = f.sync_all();
    written
}

/// A copy of the daemon's database as a crash would leave it: the daemon
/// is stopped (SIGSTOP) while `pithead.db` and its WAL are copied out of
/// `inside` into a new directory under `to`. (SQLite cannot open the file
/// through `/proc/<pid>/root`: it resolves that link to `/`.)
fn crash_copy(d: &Daemon, inside: &Path, to: &Path) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dest = to.join(format!("copy-{}", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dest).unwrap();
    d.signal(libc::SIGSTOP);
    for f in ["pithead.db", "pithead.db-wal"] {
        if inside.join(f).exists() {
            std::fs::copy(inside.join(f), dest.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }
    d.signal(libc::SIGCONT);
    dest.join("pithead.db")
}

/// Item 2: the data disk fills up under a running station. Check-ins and
/// hazard reports are refused with the reason (API, kiosk and console in
/// a real browser), a methane alarm still cuts the power at once, and when
/// space returns the station saves again by itself: the refused miner can
/// check in, the alarm events held in memory reach the log, and the
/// database is intact.
#[test]
fn a_full_disk_refuses_records_with_a_reason_keeps_alarms_and_recovers() {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let broker = Mosquitto::start();
    let sender = pithead_e2e::CountySender::start(broker.port);
    let config = with_token(
        dir.path(),
        http,
        &(face_station(dir.path(), http, &sim, "") + &pithead_e2e::mqtt_section(&broker.url())),
    );
    let roster: String = std::iter::once("badge,name,team,role\n".to_owned())
        .chain((0..300).map(|i| format!("{i:04},工人{i},一队,工\n")))
        .collect();
    std::fs::write(dir.path().join("roster.csv"), roster).unwrap();
    let mut d = Daemon::start_under(dir.path(), &config, http, &[], &on_small_tmpfs(&data, 16));
    d.wait_healthy(Duration::from_secs(30));
    // The daemon's view of its data directory: the tmpfs in its namespace.
    let inside = Path::new("/proc")
        .join(d.child.id().to_string())
        .join("root")
        .join(data.strip_prefix("/").unwrap_or(&data));
    let mounts = std::fs::read_to_string(format!("/proc/{}/mounts", d.child.id())).unwrap();
    assert!(
        mounts.contains("pithead-small-disk"),
        "the daemon is not on the small disk:\n{mounts}"
    );
    assert!(
        inside.join("pithead.db").exists(),
        "no database in {}",
        inside.display()
    );

    let mut saved = 0usize;
    for badge in 1..=5 {
        check_in(http, badge);
        saved += 1;
    }
    let filled = fill(&inside.join("filler"));
    eprintln!("filled the small disk with {filled} bytes");

    // Check-ins: the first that needs a new page of the database is
    // refused (one that fits in space SQLite already holds is saved, and
    // must then really be saved).
    let mut refused = None;
    for badge in 6..=200 {
        match check_in_answer(http, badge) {
            (201, _) => saved += 1,
            (507, v) => {
                refused = Some((badge, v));
                break;
            }
            (s, v) => panic!("check-in on a full disk answered {s}: {v}"),
        }
    }
    let (refused_badge, answer) = refused.unwrap_or_else(|| panic!("no check-in was refused"));
    assert_eq!(answer["error"], "disk_full", "{answer}");
    assert!(
        answer["message_zh"]
            .as_str()
            .is_some_and(|m| m.contains("存储空间已满")),
        "{answer}"
    );
    eprintln!("{saved} check-ins saved, badge {refused_badge} refused for a full disk");

    // A hazard report with a photo, and one without.
    let report = r#"{"category": "water", "location": "中央水仓", "grade": "general", "description": "磁盘满时的报告", "anonymous": true}"#;
    let jpeg = jpeg_with_gps();
    for photo in [Some(jpeg.as_slice()), None] {
        let (ct, body) = multipart(report, photo);
        let (status, body) =
            http_send(http, "POST", "/api/v1/hazards", &[], Some(&ct), &body).unwrap();
        assert_eq!(
            status,
            507,
            "hazard report (photo: {}): {body}",
            photo.is_some()
        );
        assert!(body.contains("message_zh"), "{body}");
    }
    let (status, health) = http_get(http, "/healthz").unwrap();
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("\"storage\":\"full\""), "{health}");
    assert_eq!(metric(http, "pithead_store_disk_full"), 1.0);

    // The alarm path does not need the disk: methane over 1.5 % cuts power.
    sim.control("set 1 input 0 160");
    wait_until(Duration::from_secs(10), "power cut on a full disk", || {
        http_get(http, "/api/v1/outputs")
            .map(|r| r.1.contains("\"power_allowed\":false"))
            .unwrap_or(false)
    });
    assert!(
        alarm_events_in(&crash_copy(&d, &inside, dir.path())).is_empty(),
        "an alarm event was written to a full disk?"
    );

    // A county notice on a full disk: not stored, so not acknowledged to
    // the broker; it is applied once there is space (below).
    wait_until(Duration::from_secs(20), "the downlink subscribed", || {
        metric(http, "pithead_downlink_connected") == 1.0
    });
    sender.send("notice", &pithead_e2e::notice("n-full", "磁盘满时的通知"));
    wait_until(
        Duration::from_secs(10),
        "the command refused by the disk",
        || {
            d.log_text()
                .contains("command from the county not stored yet: not acknowledged")
        },
    );
    assert!(
        !http_get(http, "/api/v1/notices")
            .map(|r| r.1)
            .unwrap_or_default()
            .contains("n-full"),
        "a notice on a full disk?"
    );

    // The kiosk and the console say why, in a real browser.
    let b = Browser::start(1280, 1000);
    let wait = Duration::from_secs(15);
    b.open(&format!("http://{http}/"));
    b.wait_text("#storage", wait, "the kiosk's full-disk banner", |t| {
        t.contains("存储空间已满")
    });
    b.type_into(
        &b.find("#badge", wait),
        &format!("{refused_badge:04}\u{E007}"),
    );
    b.wait_text("#checkin-result", wait, "the refusal's reason", |t| {
        t.contains("存储空间已满")
    });
    b.open(&format!("http://{http}/console"));
    b.wait_text("#storage", wait, "the console's full-disk banner", |t| {
        t.contains("存储空间已满") && t.contains("报警输出不受影响")
    });

    // Space returns: the station saves again without a restart.
    std::fs::remove_file(inside.join("filler")).unwrap();
    wait_until(
        Duration::from_secs(20),
        "healthz ok again",
        || matches!(http_get(http, "/healthz"), Ok((200, ref b)) if b.contains("\"storage\":\"ok\"")),
    );
    let (status, v) = check_in_answer(http, refused_badge);
    assert_eq!(status, 201, "the refused miner after recovery: {v}");
    wait_until(
        Duration::from_secs(15),
        "the county's notice applied",
        || {
            http_get(http, "/api/v1/notices")
                .map(|r| r.1.contains("n-full"))
                .unwrap_or(false)
        },
    );
    saved += 1;
    b.wait_text("#storage", wait, "the console's banner gone", str::is_empty);
    // The alarm events held in memory (retried with a backoff of at most
    // 30 s) reach the log.
    wait_until(Duration::from_secs(45), "the alarm events recorded", || {
        alarm_events_in(&crash_copy(&d, &inside, dir.path()))
            .iter()
            .any(|(kind, subject)| kind == "alarm.raised" && subject == "ch4-1201-face")
    });
    let underground = get_json(http, "/api/v1/underground");
    assert_eq!(
        underground["people"].as_array().map(Vec::len),
        Some(saved),
        "every check-in answered 201 is underground: {underground}"
    );
    let db = rusqlite::Connection::open(crash_copy(&d, &inside, dir.path())).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    assert!(
        metric(http, "pithead_store_refused_disk_full_total") >= 1.0,
        "refusals not counted"
    );
    let log = d.log_text();
    assert_eq!(
        log.matches("new records are refused until space is freed")
            .count(),
        1,
        "the full disk should be logged once:\n{log}"
    );
    assert!(log.contains("disk space is back"), "{log}");
    d.signal(libc::SIGTERM);
}

/// A JPEG whose picture is `scan` bytes drawn from `seed` (never 0xFF, so
/// it is one scan): as large a photo as a test needs, each one different.
fn big_jpeg(scan: usize, seed: u64) -> Vec<u8> {
    let mut b = jpeg_with_gps();
    let at = b
        .windows(3)
        .position(|w| w == [0x11, 0x22, 0x33])
        .unwrap_or_else(|| panic!("the fixture has no scan"));
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let picture: Vec<u8> = (0..scan)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            u8::try_from(x % 255).unwrap_or(0)
        })
        .collect();
    b.splice(at..at + 3, picture);
    b
}

/// Issue 15: photos give way first. The data disk keeps `reserve_mb` free
/// for check-ins and alarm events, and photos take at most
/// `photos_max_mb`: past either, a hazard report is kept without its photo
/// and the miner told so, while check-ins go on.
#[test]
fn photos_give_way_to_check_ins_when_space_runs_short() {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = face_station(dir.path(), http, &sim, "").replacen(
        "[storage]\n",
        "[storage]\nreserve_mb = 12\nphotos_max_mb = 1\n",
        1,
    );
    let mut d = Daemon::start_under(dir.path(), &config, http, &[], &on_small_tmpfs(&data, 40));
    d.wait_healthy(Duration::from_secs(30));
    let inside = Path::new("/proc")
        .join(d.child.id().to_string())
        .join("root")
        .join(data.strip_prefix("/").unwrap_or(&data));
    let report = |photo: &[u8]| -> Value {
        let r = r#"{"category": "roof", "location": "1201 回风巷", "grade": "general", "description": "顶板掉渣", "anonymous": true}"#;
        let (ct, body) = multipart(r, Some(photo));
        let (s, b) = http_send(http, "POST", "/api/v1/hazards", &[], Some(&ct), &body).unwrap();
        assert_eq!(s, 201, "the report is always kept: {b}");
        serde_json::from_str(&b).unwrap_or_default()
    };
    let free_mib = || -> u64 {
        let out = std::process::Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(&inside)
            .output()
            .unwrap_or_else(|e| panic!("stat: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut n = text
            .split_whitespace()
            .map(|x| x.parse::<u64>().unwrap_or(0));
        n.next().unwrap_or(0) * n.next().unwrap_or(0) / (1024 * 1024)
    };

    // Room: the photo is kept.
    let v = report(&jpeg_with_gps());
    assert_eq!(v["photo"], true, "{v}");
    assert!(v["photo_refused"].is_null(), "{v}");

    // The disk down to 8 MiB free, under the 12 kept: the next photo is
    // refused, the report kept, and miners still check in.
    let free = free_mib();
    assert!(free > 20, "the small disk has {free} MiB free");
    let filler = inside.join("filler");
    std::fs::write(
        &filler,
        vec![0u8; usize::try_from((free - 8) * 1024 * 1024).unwrap_or(0)],
    )
    .unwrap();
    let v = report(&big_jpeg(1000, 1));
    assert_eq!(v["photo"], false, "{v}");
    assert!(
        v["photo_refused"]["message_zh"]
            .as_str()
            .is_some_and(|m| m.contains("照片未保存")),
        "{v}"
    );
    assert!(
        v["photo_refused"]["message_en"]
            .as_str()
            .is_some_and(|m| m.contains("MiB free")),
        "{v}"
    );
    let (s, b) = check_in_answer(http, 1);
    assert_eq!(s, 201, "a check-in under the photo reserve: {b}");
    let (s, health) = http_get(http, "/healthz").unwrap();
    assert_eq!(s, 200, "the reserve is not a full disk: {health}");

    // Space back; now the photos' own limit (1 MiB): two of 400 KiB fit,
    // the third does not.
    std::fs::remove_file(&filler).unwrap();
    for seed in [2, 3] {
        let v = report(&big_jpeg(400 * 1024, seed));
        assert_eq!(v["photo"], true, "{v}");
    }
    let v = report(&big_jpeg(400 * 1024, 4));
    assert_eq!(v["photo"], false, "{v}");
    assert!(
        v["photo_refused"]["message_en"]
            .as_str()
            .is_some_and(|m| m.contains("the most kept is 1 MiB")),
        "{v}"
    );
    assert!(
        d.log_text().contains("hazard photo refused for space"),
        "{}",
        d.log_text()
    );
    d.signal(libc::SIGTERM);
}
