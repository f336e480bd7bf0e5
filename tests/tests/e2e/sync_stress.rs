//! The county uplink under stress, against a real Mosquitto: a burst of
//! 10 000 records while the broker is down, a broker that dies without
//! persistence while messages are in flight, and the station killed with
//! SIGKILL twenty times in the middle of a drain. Each ends with the same
//! check: after de-duplication by message id the county holds exactly the
//! set of records the store holds, every lane's sequence runs 1…N without a
//! gap, and every row is marked sent.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of the tests: a failed unwrap is a failed test"
)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pithead_e2e::{
    Daemon, Mosquitto, Subscriber, assert_county_has_exactly_the_store,
    assert_county_has_the_store_after_drops, check_in, count, free_port, metric, outbox_messages,
    rss_kib, store_rows, uplink_config, wait_connected,
};

/// Queues `n` check-in records in the store under `dir`, as an outage
/// would have (the daemon must not be running).
fn fill(dir: &Path, n: usize) {
    let out = Command::new(env!("CARGO_BIN_EXE_pithead-outbox-fill"))
        .arg(dir.join("data"))
        .arg(n.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_burst_of_10000_during_an_outage_arrives_complete_and_in_order() {
    let mut broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut d = Daemon::start(
        dir.path(),
        &uplink_config(dir.path(), http, &broker.url(), 10_000),
        http,
    );
    d.wait_healthy(Duration::from_secs(30));
    wait_connected(http, true, Duration::from_secs(15));
    broker.stop();
    wait_connected(http, false, Duration::from_secs(15));

    // 10 000 check-ins from 8 clients while the county is unreachable.
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..8 {
            s.spawn(move || {
                for badge in (t..10_000).step_by(8) {
                    check_in(http, badge);
                }
            });
        }
    });
    eprintln!(
        "10000 check-ins recorded offline in {:?}",
        started.elapsed()
    );
    assert!(metric(http, "pithead_uplink_connected") == 0.0);

    broker.restart();
    assert_county_has_exactly_the_store(dir.path(), &sub, Duration::from_secs(120), true);
    let checkins = outbox_messages(&sub)
        .iter()
        .filter(|m| m.0 == "checkin")
        .count();
    assert!(checkins >= 10_000, "{checkins}");
    d.signal(libc::SIGTERM);
}

#[test]
fn a_broker_that_dies_without_persistence_mid_drain_loses_nothing() {
    let port = free_port();
    let mut broker = Mosquitto::start_with(port, false, "");
    // QoS 0 to the county: the dying broker then closes its connection
    // cleanly and everything it wrote before still arrives. The station's
    // side is QoS 1 as always: that is what is under test.
    let sub = Subscriber::start_with(port, rumqttc::QoS::AtMostOnce);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = uplink_config(dir.path(), http, &broker.url(), 1);
    fill(dir.path(), 30_000);
    let d = Daemon::start(dir.path(), &config, http);

    // Mid-drain: freeze the station with messages in flight, kill the
    // broker (its sessions and anything unacknowledged die with it), start
    // it afresh, let the county subscribe again, and let the station go on.
    let end = Instant::now() + Duration::from_secs(60);
    while count(&sub) < 5_000 {
        assert!(
            Instant::now() < end,
            "the drain never started:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let published = metric(http, "pithead_uplink_published_total");
    d.signal(libc::SIGSTOP);
    broker.kill();
    broker.restart();
    let end = Instant::now() + Duration::from_secs(15);
    while sub.subscribed.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(Instant::now() < end, "the county never subscribed again");
        std::thread::sleep(Duration::from_millis(20));
    }
    d.signal(libc::SIGCONT);
    assert_county_has_exactly_the_store(dir.path(), &sub, Duration::from_secs(120), false);
    assert!(metric(http, "pithead_uplink_failures_total") >= 1.0);
    assert!(metric(http, "pithead_uplink_connects_total") >= 2.0);
    eprintln!(
        "published {published} before the broker died; {} in all for {} rows",
        metric(http, "pithead_uplink_published_total"),
        store_rows(dir.path()).len()
    );
    d.signal(libc::SIGTERM);
}

#[test]
fn the_station_killed_20_times_mid_drain_delivers_exactly_the_store() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = uplink_config(dir.path(), http, &broker.url(), 1);
    fill(dir.path(), 40_000);
    // A small xorshift: random kill points, reproducible from the seed.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64 | 1)
        .unwrap_or(88_172_645_463_325_252);
    eprintln!("kill points seed {seed}");
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut before = 0;
    for cycle in 0..20 {
        let mut d = Daemon::start(dir.path(), &config, http);
        // Wait for the drain to be under way, then kill at a random point.
        let end = Instant::now() + Duration::from_secs(30);
        while count(&sub) <= before {
            assert!(
                Instant::now() < end,
                "cycle {cycle}: nothing sent:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(next(300)));
        d.signal(libc::SIGKILL);
        let _ = d.wait_exit(Duration::from_secs(10));
        before = count(&sub);
    }
    let unsent = store_rows(dir.path()).values().filter(|s| !**s).count();
    eprintln!("after 20 kills: {before} messages received, {unsent} rows still unsent");
    assert!(
        unsent > 0,
        "the backlog was drained before the last kill: the test proves less than it says"
    );
    let d = Daemon::start(dir.path(), &config, http);
    assert_county_has_exactly_the_store(dir.path(), &sub, Duration::from_secs(120), false);
    d.signal(libc::SIGTERM);
}

/// RELIABILITY.md item 4: 96 hours without the broker at a station's real
/// rate (12 channels summarised every 5 minutes, head-counts, 300 miners a
/// shift, alarms and hazard reports; played through the daemon's own report
/// and outbox code by `pithead-outbox-fill … station`) against a 4 MiB cap.
/// The outbox stays within the cap by dropping only the oldest summaries;
/// the daemon then starts with the broker still down (RSS sampled), the
/// broker returns, and the county receives exactly the store's records,
/// the summaries' sequence running without a gap from the first kept one.
#[test]
fn ninety_six_hours_offline_keep_the_cap_drop_only_old_summaries_and_drain() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let url = format!("mqtt://127.0.0.1:{port}");
    let config = uplink_config(dir.path(), http, &url, 300).replacen(
        "[storage]\n",
        "[storage]\noutbox_cap_mb = 4\n",
        1,
    );
    let cfg_file = dir.path().join("pithead.toml");
    std::fs::write(&cfg_file, &config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pithead-outbox-fill"))
        .arg(dir.path().join("data"))
        .args(["96", "station"])
        .arg(&cfg_file)
        .arg("12")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let played: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("96 h played: {played}");
    let cap = played["cap_bytes"].as_i64().unwrap_or(0);
    assert_eq!(played["steps"], 1152, "96 h of 5-minute reports");
    assert!(
        played["bytes"].as_i64().unwrap_or(i64::MAX) <= cap,
        "over the cap: {played}"
    );
    let dropped = played["dropped_summaries"].as_i64().unwrap_or(0);
    assert!(dropped > 0, "the cap was never reached: {played}");
    // Only summaries were dropped, the oldest first: every other lane is
    // whole, and the summaries kept are the newest.
    {
        let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
        let lanes: Vec<(i64, i64, i64, i64)> = db
            .prepare(
                "SELECT lane, count(*), min(seq), max(seq) FROM outbox GROUP BY lane ORDER BY lane",
            )
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect::<Result<_, _>>()
            })
            .unwrap();
        for (lane, n, lo, hi) in &lanes {
            if *lane != 3 {
                assert_eq!((*lo, *hi), (1, *n), "lane {lane} lost records: {lanes:?}");
            }
        }
        // The summary lane: what was dropped is announced by gap records
        // (numbered in the lane themselves), the oldest went, and every
        // number is either here or announced.
        let rows: Vec<(i64, String, String)> = db
            .prepare("SELECT seq, kind, payload FROM outbox WHERE lane = 3 ORDER BY seq")
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()
            })
            .unwrap();
        let mut announced = std::collections::BTreeSet::new();
        for (_, kind, payload) in rows.iter().filter(|r| r.1 == "gap") {
            let v: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
            assert_eq!(
                (kind.as_str(), v["reason"].as_str()),
                ("gap", Some("outbox_cap"))
            );
            announced
                .extend(v["from_seq"].as_i64().unwrap_or(0)..=v["to_seq"].as_i64().unwrap_or(-1));
        }
        let kept: Vec<i64> = rows
            .iter()
            .filter(|r| r.1 == "summary")
            .map(|r| r.0)
            .collect();
        assert_eq!(
            i64::try_from(announced.len()).unwrap_or(0),
            dropped,
            "every drop announced"
        );
        assert_eq!(
            kept.len() + announced.len(),
            1152,
            "every summary kept or announced"
        );
        assert!(
            announced.iter().max() < kept.iter().min(),
            "the oldest summaries went first"
        );
        let numbers: std::collections::BTreeSet<i64> = rows
            .iter()
            .map(|r| r.0)
            .chain(announced.iter().copied())
            .collect();
        let max = numbers.iter().max().copied().unwrap_or(0);
        assert_eq!(numbers, (1..=max).collect(), "no unexplained gap");
        let expected = [(0, 32), (1, 8), (2, 12 * 600 + 1152)];
        for (lane, n) in expected {
            assert!(
                lanes.iter().any(|l| l.0 == lane && l.1 == n),
                "lane {lane}: {lanes:?}"
            );
        }
    }

    // The county subscribed before the outage; the daemon starts with the
    // broker still down.
    let (mut broker, sub) = Mosquitto::down_with_county(port);
    let mut d = Daemon::start(dir.path(), &config, http);
    d.wait_healthy(Duration::from_secs(20));
    let pid = d.child.id();
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        metric(http, "pithead_outbox_dropped_summaries_total"),
        dropped as f64
    );
    broker.restart();
    wait_connected(http, true, Duration::from_secs(60));
    let start = Instant::now();
    let mut draining = Vec::new();
    while metric(http, "pithead_outbox_pending") > 0.0 && start.elapsed() < Duration::from_secs(120)
    {
        draining.push(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    let drain = start.elapsed();
    assert_county_has_the_store_after_drops(
        dir.path(),
        &sub,
        Duration::from_secs(60),
        false,
        dropped,
    );
    let idle_max = idle.iter().copied().max().unwrap_or(0);
    let drain_max = draining.iter().copied().max().unwrap_or(idle_max);
    eprintln!(
        "96 h offline: {} messages, {} bytes (cap {cap}), {dropped} oldest summaries dropped; \
         RSS offline {}..{idle_max} KiB, while draining max {drain_max} KiB; drained in {:.1} s",
        played["pending"],
        played["bytes"],
        idle.iter().copied().min().unwrap_or(0),
        drain.as_secs_f64()
    );
    assert!(
        idle_max <= idle.iter().copied().min().unwrap_or(0) + 2 * 1024,
        "RSS grew while offline: {idle:?}"
    );
    assert!(
        drain_max < idle_max + 16 * 1024,
        "RSS grew by {} KiB while draining",
        drain_max - idle_max
    );
}

/// Issue 14, item 3: a station with 2 000 channels after an hour offline,
/// against a broker that takes at most 64 KiB a packet. Summaries are split
/// to fit `[mqtt] max_message_bytes` as they are queued; with it set above
/// the broker's limit, a row the broker drops the connection at is set
/// aside after three tries (kept, counted, announced as a gap), the limit
/// is learned, and nothing behind it waits: every other record arrives.
#[test]
fn oversized_messages_are_split_or_set_aside_and_never_wedge_a_lane() {
    for max_message in [Some(48 * 1024), None] {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let url = format!("mqtt://127.0.0.1:{port}");
        let mut config = uplink_config(dir.path(), http, &url, 50);
        if let Some(m) = max_message {
            config.push_str(&format!("max_message_bytes = {m}\n"));
        }
        let cfg_file = dir.path().join("pithead.toml");
        std::fs::write(&cfg_file, &config).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_pithead-outbox-fill"))
            .arg(dir.path().join("data"))
            .args(["1", "station"])
            .arg(&cfg_file)
            .arg("2000")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let broker = Mosquitto::start_with(port, true, "max_packet_size 65536\n");
        let sub = Subscriber::start(broker.port);
        let mut d = Daemon::start(dir.path(), &config, http);
        d.wait_healthy(Duration::from_secs(20));
        let end = Instant::now() + Duration::from_secs(120);
        while metric(http, "pithead_outbox_pending") > 0.0 {
            assert!(
                Instant::now() < end,
                "the outbox never drained:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_county_has_exactly_the_store(dir.path(), &sub, Duration::from_secs(60), false);
        let biggest = sub.all().iter().map(|m| m.payload.len()).max().unwrap_or(0);
        let aside = metric(http, "pithead_outbox_set_aside");
        match max_message {
            Some(m) => {
                assert_eq!(aside, 0.0, "{}", d.log_text());
                assert!(biggest <= m, "a message of {biggest} bytes over {m}");
                let parts = sub
                    .all()
                    .iter()
                    .filter(|m| m.topic.ends_with("/summary") && m.payload.contains("\"parts\""))
                    .count();
                assert!(
                    parts > 10,
                    "2 000 channels' summaries come in parts: {parts}"
                );
                eprintln!(
                    "max_message_bytes {m}: {parts} summary parts, the biggest message {biggest} bytes"
                );
            }
            None => {
                assert!(aside > 0.0, "nothing set aside:\n{}", d.log_text());
                let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
                let events: i64 = db
                    .query_row(
                        "SELECT count(*) FROM events WHERE kind = 'outbox.set_aside'",
                        [],
                        |r| r.get(0),
                    )
                    .unwrap();
                assert_eq!(events as f64, aside);
                let announced = sub
                    .all()
                    .iter()
                    .filter(|m| m.topic.ends_with("/gap") && m.payload.contains("\"set_aside\""))
                    .count();
                assert_eq!(announced as f64, aside, "every row set aside is announced");
                assert!(
                    d.log_text().contains("lower [mqtt] max_message_bytes"),
                    "{}",
                    d.log_text()
                );
                eprintln!(
                    "default max_message_bytes against a 64 KiB broker: {aside} rows set aside, the biggest message sent {biggest} bytes"
                );
            }
        }
        d.signal(libc::SIGTERM);
        let _ = d.wait_exit(Duration::from_secs(15));
    }
}
