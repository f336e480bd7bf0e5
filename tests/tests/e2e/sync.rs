//! The county uplink against a real Mosquitto: every record reaches the
//! receiver, in sequence, exactly once after de-duplication by message id,
//! across an outage at start and a broker restart mid-stream; the retained
//! status goes online, and offline by the last will when the box dies.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of the tests: a failed unwrap is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pithead_e2e::{
    Daemon, Mosquitto, Subscriber, check_in, free_port, http_request, wait_connected,
};
use serde_json::Value;

/// Waits until the station's downlink is subscribed to its commands.
fn wait_downlink(http: SocketAddr) {
    let end = Instant::now() + Duration::from_secs(20);
    while pithead_e2e::metric(http, "pithead_downlink_connected") != 1.0 {
        assert!(Instant::now() < end, "the downlink never subscribed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn notices(http: SocketAddr) -> Vec<Value> {
    let (_, body) = pithead_e2e::http_get(http, "/api/v1/notices").unwrap();
    serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn wait_notice(http: SocketAddr, id: &str, within: Duration) {
    let end = Instant::now() + within;
    while !notices(http).iter().any(|n| n["msg_id"] == id) {
        assert!(
            Instant::now() < end,
            "notice {id} never shown: {:?}",
            notices(http)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn config(dir: &std::path::Path, http: SocketAddr, url: &str, miners: usize) -> String {
    pithead_e2e::uplink_config(dir, http, url, miners)
}

/// Check-in messages by message id (duplicates folded), with their count.
fn checkins(sub: &Subscriber) -> (BTreeMap<String, Value>, usize) {
    let mut by_id = BTreeMap::new();
    let mut total = 0;
    for m in sub
        .all()
        .into_iter()
        .filter(|m| m.topic == "pithead/v1/test-county/test-station/checkin")
    {
        let v: Value = serde_json::from_str(&m.payload).unwrap_or_default();
        total += 1;
        by_id.insert(v["msg_id"].as_str().unwrap_or_default().to_owned(), v);
    }
    (by_id, total)
}

fn wait_for(sub: &Subscriber, n: usize, within: Duration) -> BTreeMap<String, Value> {
    let end = Instant::now() + within;
    loop {
        let (by_id, _) = checkins(sub);
        if by_id.len() >= n {
            return by_id;
        }
        assert!(
            Instant::now() < end,
            "only {} of {n} check-ins arrived",
            by_id.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_record_arrives_once_in_sequence_across_outages() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // The uplink is down when the box starts: records queue on disk.
    let (mut broker, sub) = Mosquitto::down_with_county(port);
    let mut d = Daemon::start(
        dir.path(),
        &config(dir.path(), http, &format!("mqtt://127.0.0.1:{port}"), 60),
        http,
    );
    d.wait_healthy(Duration::from_secs(20));
    for i in 0..30 {
        check_in(http, i);
    }
    broker.restart();
    let got = wait_for(&sub, 30, Duration::from_secs(30));
    // The status is retained online.
    let status = sub
        .all()
        .into_iter()
        .rfind(|m| m.topic.ends_with("/status"))
        .unwrap_or_else(|| panic!("no status"));
    assert!(status.payload.contains("\"online\""), "{}", status.payload);

    // The broker goes away mid-stream and comes back.
    broker.stop();
    for i in 30..50 {
        check_in(http, i);
    }
    broker.restart();
    let got2 = wait_for(&sub, 50, Duration::from_secs(60));
    assert!(got.keys().all(|k| got2.contains_key(k)));
    // The check-in lane also carries head-counts: its sequence, over both
    // kinds, runs without a gap.
    let lane: BTreeMap<String, i64> = sub
        .all()
        .into_iter()
        .filter_map(|m| serde_json::from_str::<Value>(&m.payload).ok())
        .filter(|v| v["lane"] == "checkin")
        .filter_map(|v| Some((v["msg_id"].as_str()?.to_owned(), v["seq"].as_i64()?)))
        .collect();
    let seqs: BTreeSet<i64> = lane.values().copied().collect();
    let max = seqs.iter().max().copied().unwrap_or(0);
    assert!(max >= 50, "{max}");
    assert_eq!(
        seqs,
        (1..=max).collect::<BTreeSet<_>>(),
        "every sequence number, no gap"
    );
    for v in got2.values() {
        assert_eq!(v["schema"], "pithead/v1");
        assert_eq!(v["lane"], "checkin");
        assert!(v["epoch"].as_str().is_some_and(|e| e.len() == 36), "{v}");
        assert_eq!(v["body"]["outcome"], "ok");
    }
    let badges: BTreeSet<String> = got2
        .values()
        .filter_map(|v| v["body"]["badge"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        badges.len(),
        50,
        "each check-in exactly once after de-duplication"
    );

    // Every row is marked sent once the broker acknowledged it.
    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let unsent: i64 = db
            .query_row(
                "SELECT count(*) FROM outbox WHERE sent_at IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap_or(-1);
        if unsent == 0 {
            break;
        }
        assert!(Instant::now() < end, "{unsent} rows never marked sent");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The box dies: the broker tells the county by the last will.
    d.signal(libc::SIGKILL);
    let _ = d.wait_exit(Duration::from_secs(5));
    wait_offline(
        &sub,
        Duration::from_secs(20),
        "no offline status after the box died",
    );
}

#[test]
fn a_clean_stop_says_offline_and_metrics_show_the_uplink() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut d = Daemon::start(
        dir.path(),
        &config(dir.path(), http, &broker.url(), 3),
        http,
    );
    d.wait_healthy(Duration::from_secs(20));
    check_in(http, 1);
    wait_for(&sub, 1, Duration::from_secs(15));
    let (_, metrics) = pithead_e2e::http_get(http, "/metrics").unwrap();
    assert!(metrics.contains("pithead_uplink_connected 1"), "{metrics}");
    assert!(
        metrics.contains("pithead_uplink_acknowledged_total"),
        "{metrics}"
    );
    // The console's view of the uplink, with the API token.
    let (s, body) = http_request(http, "GET", "/api/v1/uplink", &[], "").unwrap();
    assert_eq!(s, 401, "{body}");
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(15)).success());
    wait_offline(
        &sub,
        Duration::from_secs(5),
        "no offline status after a clean stop",
    );
}

#[test]
fn county_notices_and_hazard_updates_arrive_and_bad_ones_are_counted() {
    let broker = Mosquitto::start();
    let county = Subscriber::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut d = Daemon::start(
        dir.path(),
        &config(dir.path(), http, &broker.url(), 1),
        http,
    );
    d.wait_healthy(Duration::from_secs(20));
    // A hazard the county will comment on.
    let (s, b) = http_request(
        http,
        "POST",
        "/api/v1/hazards",
        &[],
        "{\"category\": \"water\", \"location\": \"水仓\", \"grade\": \"major\", \"description\": \"渗水\", \"anonymous\": true}",
    )
    .unwrap();
    assert_eq!(s, 201, "{b}");
    let ticket = serde_json::from_str::<Value>(&b).unwrap_or_default()["ticket"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // Wait until the station is connected (and subscribed).
    wait_connected(http, true, Duration::from_secs(15));
    wait_downlink(http);
    let mut o = rumqttc::MqttOptions::new("county-test-sender", "127.0.0.1", broker.port);
    o.set_keep_alive(Duration::from_secs(5));
    // Large enough for the oversized notice to leave the sender.
    o.set_max_packet_size(1024 * 1024, 1024 * 1024);
    let (client, mut conn) = rumqttc::Client::new(o, 10);
    std::thread::spawn(move || for _ in conn.iter() {});
    let cmd = "pithead/v1/test-county/test-station/cmd";
    let notice = "{\"schema\":\"pithead/v1\",\"msg_id\":\"n-1\",\"title\":\"停电检修\",\"body\":\"明天 8:00 主井停电\",\"priority\":\"urgent\",\"valid_until\":\"2999-01-01T00:00:00Z\"}";
    let comment = format!(
        "{{\"schema\":\"pithead/v1\",\"msg_id\":\"h-1\",\"ticket\":\"{ticket}\",\"comment\":\"县总工会已督办\"}}"
    );
    let status = format!(
        "{{\"schema\":\"pithead/v1\",\"msg_id\":\"h-2\",\"ticket\":\"{ticket}\",\"status\":\"acknowledged\",\"comment\":\"县里已知悉\"}}"
    );
    let against_lifecycle = format!(
        "{{\"schema\":\"pithead/v1\",\"msg_id\":\"h-3\",\"ticket\":\"{ticket}\",\"status\":\"closed\"}}"
    );
    let oversized = notice.replace("明天 8:00 主井停电", &"很长".repeat(9000));
    for (topic, body) in [
        (format!("{cmd}/notice"), notice.to_owned()),
        (format!("{cmd}/notice"), notice.to_owned()), // a replay
        (format!("{cmd}/hazard"), comment),
        (format!("{cmd}/hazard"), status),
        (format!("{cmd}/hazard"), against_lifecycle),
        (format!("{cmd}/notice"), oversized),
        (format!("{cmd}/reboot"), "{}".to_owned()),
        (
            format!("{cmd}/notice"),
            "{\"schema\":\"pithead/v1\",\"oops\":1}".to_owned(),
        ),
        (
            "pithead/v1/test-county/other-station/cmd/notice".to_owned(),
            notice.replace("n-1", "n-2"),
        ),
    ] {
        client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, body)
            .unwrap();
    }
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = pithead_e2e::http_get(http, "/api/v1/notices").unwrap();
        let metrics = pithead_e2e::http_get(http, "/metrics")
            .map(|r| r.1)
            .unwrap_or_default();
        let n: Value = serde_json::from_str(&body).unwrap_or_default();
        if n.as_array().is_some_and(|v| v.len() == 1)
            && metrics.contains("pithead_downlink_accepted_total 3")
            && metrics.contains("pithead_downlink_refused_total 4")
        {
            assert_eq!(n[0]["title"], "停电检修");
            break;
        }
        assert!(Instant::now() < end, "notices {body}\n{metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, body) = pithead_e2e::http_get(http, &format!("/api/v1/hazards/{ticket}")).unwrap();
    assert!(body.contains("县总工会已督办"), "{body}");
    let h: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(h["status"], "acknowledged", "{body}");
    // The county's own step comes back to it on the hazard lane.
    let end = Instant::now() + Duration::from_secs(15);
    while !county.all().iter().any(|m| {
        m.topic.ends_with("/hazard")
            && serde_json::from_str::<Value>(&m.payload).is_ok_and(|v| {
                v["body"]["event"] == "acknowledged" && v["body"]["ticket"] == ticket.as_str()
            })
    }) {
        assert!(
            Instant::now() < end,
            "the county never saw its step: {:?}",
            county.all()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // And the station kept syncing: it is still connected.
    let metrics = pithead_e2e::http_get(http, "/metrics")
        .map(|r| r.1)
        .unwrap_or_default();
    assert!(metrics.contains("pithead_uplink_connected 1"), "{metrics}");
    d.signal(libc::SIGTERM);
}

/// Waits until the last retained status the subscriber saw is offline.
fn wait_offline(sub: &Subscriber, within: Duration, what: &str) {
    let end = Instant::now() + within;
    loop {
        let last = sub
            .all()
            .into_iter()
            .rfind(|m| m.topic.ends_with("/status"));
        if last
            .as_ref()
            .is_some_and(|m| m.payload.contains("\"offline\""))
        {
            return;
        }
        assert!(Instant::now() < end, "{what}: {last:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_record_kind_arrives_with_the_documented_payload() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port);
    let sim = pithead_e2e::Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // Ten settled minutes of statistics, as the recorder would have left
    // them before a restart: the first report at start sends them.
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_pithead-outbox-fill"))
        .arg(dir.path().join("data"))
        .arg("0")
        .output()
        .unwrap();
    assert!(made.status.success());
    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0);
    let start = now_ms - now_ms.rem_euclid(60_000) - 15 * 60_000;
    for m in 0..10 {
        db.execute(
            "INSERT INTO aggregates(channel, minute_ms, min, max, mean, count, faults) VALUES ('ch4-1201-face', ?1, 0.29, 0.33, 0.31, 60, 0)",
            [start + m * 60_000],
        )
        .unwrap();
    }
    drop(db);
    let config = pithead_e2e::face_station(
        dir.path(),
        http,
        &sim,
        &pithead_e2e::mqtt_section(&broker.url()),
    );
    let mut d = Daemon::start(dir.path(), &config, http);
    d.wait_healthy(Duration::from_secs(20));
    let (s, b) = http_request(
        http,
        "POST",
        "/api/v1/checkins",
        &[],
        "{\"badge\": \"0001\", \"direction\": \"in\"}",
    )
    .unwrap();
    assert_eq!(s, 201, "{b}");
    let (s, b) = http_request(
        http,
        "POST",
        "/api/v1/hazards",
        &[],
        "{\"category\": \"roof\", \"location\": \"1201 回风巷\", \"grade\": \"major\", \"description\": \"顶板掉渣\", \"anonymous\": true}",
    )
    .unwrap();
    assert_eq!(s, 201, "{b}");
    // Methane over the face's power-cut level.
    sim.control("set 1 input 0 160");

    let want = [
        "status",
        "alarm",
        "checkin",
        "headcount",
        "hazard",
        "summary",
    ];
    let end = Instant::now() + Duration::from_secs(30);
    let by_kind = loop {
        let mut by_kind: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for m in sub.all() {
            let kind = m.topic.rsplit('/').next().unwrap_or_default().to_owned();
            assert_eq!(
                m.topic,
                format!("pithead/v1/test-county/test-station/{kind}")
            );
            let v: Value =
                serde_json::from_str(&m.payload).unwrap_or_else(|e| panic!("{e}: {}", m.payload));
            by_kind.entry(kind).or_default().push(v);
        }
        let alarm_raised = by_kind
            .get("alarm")
            .is_some_and(|v| v.iter().any(|a| a["body"]["event"] == "raised"));
        if want.iter().all(|k| by_kind.contains_key(*k)) && alarm_raised {
            break by_kind;
        }
        assert!(
            Instant::now() < end,
            "missing kinds: {:?}\n{}",
            want.iter()
                .filter(|k| !by_kind.contains_key(**k))
                .collect::<Vec<_>>(),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    // Status: online, retained, with the station and version.
    let st = &by_kind["status"][0];
    assert_eq!(
        (&st["schema"], &st["state"], &st["county"], &st["station"]),
        (
            &Value::from("pithead/v1"),
            &Value::from("online"),
            &Value::from("test-county"),
            &Value::from("test-station")
        )
    );
    assert!(st["version"].is_string() && st["at"].is_string(), "{st}");
    // Every message reads as the protocol's own types, the ones the county
    // receiver uses (pithead-core): a field the station renames or drops
    // fails here.
    for m in sub.all() {
        if m.topic.ends_with("/status") {
            let st: pithead_core::protocol::StatusMessage =
                serde_json::from_str(&m.payload).unwrap_or_else(|e| panic!("{e}: {}", m.payload));
            assert_eq!(st.state, pithead_core::protocol::Presence::Online);
            continue;
        }
        let msg = pithead_core::protocol::Message::parse(m.payload.as_bytes())
            .unwrap_or_else(|e| panic!("{e}: {}", m.payload));
        let body = msg
            .body()
            .unwrap_or_else(|e| panic!("{} body: {e}: {}", msg.kind, m.payload));
        use pithead_core::protocol::Body;
        let matches = matches!(
            (msg.kind.as_str(), &body),
            ("alarm", Body::Alarm(_))
                | ("checkin", Body::Checkin(_))
                | ("headcount", Body::Headcount(_))
                | ("hazard", Body::Hazard(_))
                | ("summary", Body::Summary(_))
                | ("gap", Body::Gap(_))
                | ("cmd_ack", Body::CmdAck(_))
                | ("notice_read", Body::NoticeRead(_))
                | ("light", Body::Light(_))
        );
        assert!(matches, "{} read as {body:?}", msg.kind);
    }
    // Every envelope has every documented field.
    for (kind, lane) in [
        ("alarm", "alarm"),
        ("checkin", "checkin"),
        ("headcount", "checkin"),
        ("hazard", "hazard"),
        ("summary", "summary"),
        ("light", "summary"),
    ] {
        for v in &by_kind[kind] {
            assert_eq!(v["schema"], "pithead/v1", "{v}");
            assert_eq!(v["kind"], kind, "{v}");
            assert_eq!(v["lane"], lane, "{v}");
            assert_eq!(
                (&v["county"], &v["station"]),
                (&Value::from("test-county"), &Value::from("test-station"))
            );
            assert!(v["msg_id"].as_str().is_some_and(|s| s.len() == 36), "{v}");
            assert!(v["epoch"].as_str().is_some_and(|s| s.len() == 36), "{v}");
            assert!(v["seq"].as_i64().is_some_and(|s| s >= 1), "{v}");
            assert!(
                v["created_at"].as_str().is_some_and(|s| s.ends_with('Z')),
                "{v}"
            );
            assert!(v["body"].is_object(), "{v}");
        }
    }
    let alarm = by_kind["alarm"]
        .iter()
        .find(|a| a["body"]["event"] == "raised")
        .map(|a| &a["body"])
        .unwrap_or_else(|| panic!("no raised alarm"));
    assert_eq!(alarm["channel"], "ch4-1201-face");
    assert_eq!(alarm["state"], "ok");
    assert!(alarm["value"].as_f64().is_some_and(|v| v >= 1.0), "{alarm}");
    assert!(
        alarm["alarm_id"].is_u64() && alarm["at"].is_string(),
        "{alarm}"
    );
    assert!(
        ["warning", "alarm", "power_cut"].contains(&alarm["level"].as_str().unwrap_or_default()),
        "{alarm}"
    );
    let checkin = &by_kind["checkin"][0]["body"];
    assert_eq!(
        (
            &checkin["badge"],
            &checkin["name"],
            &checkin["direction"],
            &checkin["outcome"]
        ),
        (
            &Value::from("0001"),
            &Value::from("张伟"),
            &Value::from("in"),
            &Value::from("ok")
        )
    );
    let hazard = &by_kind["hazard"][0]["body"];
    assert_eq!(
        (
            &hazard["event"],
            &hazard["urgent"],
            &hazard["grade"],
            &hazard["status"]
        ),
        (
            &Value::from("reported"),
            &Value::from(true),
            &Value::from("major"),
            &Value::from("reported")
        )
    );
    assert!(
        hazard["ticket"].as_str().is_some_and(|t| t.len() == 6),
        "{hazard}"
    );
    assert!(
        hazard["steps"].is_array() && hazard["reporter"].is_null(),
        "{hazard}"
    );
    let head = &by_kind["headcount"][0]["body"];
    assert!(
        head["underground"].is_u64() && head["people"].is_array(),
        "{head}"
    );
    let summary = &by_kind["summary"][0]["body"];
    let minutes = &summary["channels"][0]["minutes"];
    assert_eq!(
        summary["channels"][0]["channel"], "ch4-1201-face",
        "{summary}"
    );
    assert_eq!(minutes.as_array().map(Vec::len), Some(10), "{summary}");
    assert_eq!(
        (
            &minutes[0]["mean"],
            &minutes[0]["count"],
            &minutes[0]["faults"]
        ),
        (&Value::from(0.31), &Value::from(60), &Value::from(0))
    );
    assert!(
        summary["from"].is_string() && summary["to"].is_string(),
        "{summary}"
    );
    d.signal(libc::SIGTERM);
}

/// Issue 14, item 2: a county command is acknowledged to the broker only
/// once it is stored; one published while the station is down waits at the
/// broker (a persistent session) and is applied when it returns; one the
/// station received but could not commit before it died comes again and is
/// applied once; every command is answered with a `cmd_ack`.
#[test]
fn county_commands_are_stored_before_they_are_acknowledged_and_wait_for_the_station() {
    let broker = Mosquitto::start();
    let county = Subscriber::start(broker.port);
    let sender = pithead_e2e::CountySender::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = config(dir.path(), http, &broker.url(), 1);
    // A retained command (the county never sends one) is delivered, marked
    // retained, to every new subscription: refused, answered.
    sender.send_to(
        "pithead/v1/test-county/test-station/cmd/notice",
        &pithead_e2e::notice("n-retained", "保留消息"),
        true,
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    wait_downlink(http);
    let ack = pithead_e2e::wait_cmd_ack(&county, "n-retained", Duration::from_secs(10));
    assert_eq!(ack["outcome"], "refused");
    assert!(
        ack["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("retained"),
        "{ack}"
    );
    assert!(!notices(http).iter().any(|n| n["msg_id"] == "n-retained"));
    sender.send_to("pithead/v1/test-county/test-station/cmd/notice", "", true);
    sender.send("notice", &pithead_e2e::notice("n-live", "在线通知"));
    wait_notice(http, "n-live", Duration::from_secs(10));
    let ack = pithead_e2e::wait_cmd_ack(&county, "n-live", Duration::from_secs(10));
    assert_eq!(
        (ack["outcome"].as_str(), ack["cmd"].as_str()),
        (Some("applied"), Some("notice"))
    );

    // Down: the notice waits at the broker.
    d.signal(libc::SIGTERM);
    let _ = d.wait_exit(Duration::from_secs(15));
    sender.send("notice", &pithead_e2e::notice("n-offline", "离线时的通知"));
    std::thread::sleep(Duration::from_millis(300));
    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    wait_notice(http, "n-offline", Duration::from_secs(15));
    pithead_e2e::wait_cmd_ack(&county, "n-offline", Duration::from_secs(10));

    // Received, not yet stored (the database is locked by another
    // process), and the station dies: the broker delivers it again.
    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    sender.send(
        "notice",
        &pithead_e2e::notice("n-crash", "崩溃前收到的通知"),
    );
    let end = Instant::now() + Duration::from_secs(10);
    while !d.log_text().contains("cmd/notice") {
        assert!(
            Instant::now() < end,
            "the command never arrived:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d.signal(libc::SIGKILL);
    let _ = d.wait_exit(Duration::from_secs(10));
    db.execute_batch("ROLLBACK").unwrap();
    drop(db);
    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    wait_notice(http, "n-crash", Duration::from_secs(15));
    pithead_e2e::wait_cmd_ack(&county, "n-crash", Duration::from_secs(10));
    // Applied once: one row, one answer.
    std::thread::sleep(Duration::from_millis(500));
    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    let acks: i64 = db
        .query_row(
            "SELECT count(*) FROM outbox WHERE kind = 'cmd_ack' AND payload LIKE '%n-crash%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(acks, 1);

    // Too big: refused, answered, and the connection stays.
    let huge = pithead_e2e::notice("n-huge", &"很长".repeat(60_000));
    sender.send("notice", &huge);
    let ack = pithead_e2e::wait_cmd_ack(&county, "n-huge", Duration::from_secs(10));
    assert_eq!(ack["outcome"], "refused");
    assert_eq!(pithead_e2e::metric(http, "pithead_downlink_connected"), 1.0);
    sender.send("notice", &pithead_e2e::notice("n-after", "之后的通知"));
    wait_notice(http, "n-after", Duration::from_secs(10));

    // A resend: rows still here go again with their numbers; pruned or
    // never made ones are `gone`.
    let epoch = county
        .all()
        .iter()
        .find_map(|m| {
            serde_json::from_str::<Value>(&m.payload).ok()?["epoch"]
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let before = county.all().len();
    sender.send(
        "resend",
        &format!(
            "{{\"schema\":\"pithead/v1\",\"msg_id\":\"r-1\",\"epoch\":\"{epoch}\",\"lane\":\"hazard\",\"from_seq\":1,\"to_seq\":1000}}"
        ),
    );
    let ack = pithead_e2e::wait_cmd_ack(&county, "r-1", Duration::from_secs(10));
    let resent = ack["resent"].as_u64().unwrap_or(0);
    assert!(resent >= 6, "{ack}");
    assert_eq!(ack["gone"][0][1], 1000, "{ack}");
    let end = Instant::now() + Duration::from_secs(10);
    while county.all()[before..]
        .iter()
        .filter(|m| m.topic.ends_with("/cmd_ack"))
        .count()
        < 6
    {
        assert!(Instant::now() < end, "the resent rows never came");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.signal(libc::SIGTERM);
    let _ = d.wait_exit(Duration::from_secs(15));
}

/// The packet-id tracker (`daemon/src/sync/tracker.rs`) relies on rumqttc
/// writing publishes in the order they were handed to the client, one
/// `Outgoing::Publish(pkid)` each, and never reusing a packet id before its
/// PUBACK (rumqttc 0.25 counts ids round 1..=inflight); rumqttc is pinned
/// to the version this was checked with (`=0.25.1` in Cargo.toml). Checked
/// here against the real event loop and a real broker, with the station's
/// window of 64.
#[test]
fn rumqttc_reports_publishes_in_the_order_they_were_handed_over() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port);
    let mut o = rumqttc::MqttOptions::new("pkid-order-test", "127.0.0.1", broker.port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_clean_session(true);
    o.set_inflight(64);
    let (client, mut conn) = rumqttc::Client::new(o, 80);
    let n: u32 = 2000;
    let publisher = std::thread::spawn(move || {
        for i in 0..n {
            client
                .publish(
                    "pithead/v1/test/order/x",
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    i.to_string().into_bytes(),
                )
                .unwrap();
        }
        client
    });
    let mut in_flight = std::collections::BTreeSet::new();
    let (mut written, mut acked) = (0u32, 0u32);
    let end = Instant::now() + Duration::from_secs(30);
    for ev in conn.iter() {
        match ev {
            Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                assert!(
                    in_flight.insert(pkid),
                    "packet id {pkid} reused before its PUBACK"
                );
                written += 1;
            }
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(a))) => {
                assert!(
                    in_flight.remove(&a.pkid),
                    "PUBACK {} for nothing in flight",
                    a.pkid
                );
                acked += 1;
            }
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
        if acked == n {
            break;
        }
        assert!(
            Instant::now() < end,
            "only {written} of {n} written, {acked} acknowledged"
        );
    }
    assert_eq!(written, n, "one Outgoing::Publish per publish");
    let _ = publisher.join();
    // Written in handing-over order: the broker has them in that order.
    let end = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let got: Vec<u32> = sub
            .all()
            .iter()
            .filter(|m| m.topic == "pithead/v1/test/order/x")
            .filter_map(|m| m.payload.parse().ok())
            .collect();
        if got.len() >= n as usize || Instant::now() > end {
            break got;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        got,
        (0..n).collect::<Vec<_>>(),
        "not written in handing-over order"
    );
}
