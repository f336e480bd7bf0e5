//! The county's receivers, for real: a private PostgreSQL (initdb/pg_ctl
//! on a free port) and Mosquitto, real `pithead` stations, and
//! `pithead-county` instances on one shared subscription, killed with
//! SIGKILL mid-stream.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of the tests: a failed unwrap is a failed test"
)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pithead_e2e::{
    County, Daemon, Mosquitto, Postgres, free_port, http_request, store_rows, uplink_config,
};

/// A receiver instance's configuration: `client` on `broker`, into `pg`,
/// with stations s1 and s2 registered (s3 is not).
fn county_config(broker: &Mosquitto, pg: &Postgres, client: &str) -> String {
    format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"{client}\"\nkeep_alive = \"5s\"\n\
         [postgres]\nurl = \"{}\"\n[ingest]\nmax_batch = 500\nresend_after = \"2s\"\n\
         [[station]]\ncounty = \"test-county\"\nid = \"s1\"\nname = \"一号井\"\nmine = \"一矿\"\n\
         [[station]]\ncounty = \"test-county\"\nid = \"s2\"\nname = \"二号井\"\nmine = \"一矿\"\n",
        broker.url(),
        pg.url()
    )
}

fn check_in(http: SocketAddr, badge: usize, direction: &str) {
    let body = format!("{{\"badge\": \"{badge:04}\", \"direction\": \"{direction}\"}}");
    let (s, b) = http_request(http, "POST", "/api/v1/checkins", &[], &body).unwrap();
    assert!(s == 201 || s == 409, "{s} {b}");
}

fn wait_until(within: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < end, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn three_stations_two_receivers_one_killed_ten_times_store_every_record_once() {
    let pg = Postgres::start();
    let mut broker = Mosquitto::start_with(free_port(), true, "max_inflight_messages 100\n");
    let dir = tempfile::tempdir().unwrap();
    let mut a = County::start(
        dir.path(),
        "county-a",
        &county_config(&broker, &pg, "county-a"),
    );
    a.wait_log("subscribed", 1, Duration::from_secs(60));
    let b = County::start(
        dir.path(),
        "county-b",
        &county_config(&broker, &pg, "county-b"),
    );
    b.wait_log("subscribed", 1, Duration::from_secs(30));

    // Three stations: s1 and s2 registered, s3 not.
    let mut stations = Vec::new();
    for id in ["s1", "s2", "s3"] {
        let sdir = tempfile::tempdir().unwrap();
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let cfg = uplink_config(sdir.path(), http, &broker.url(), 30).replacen(
            "id = \"test-station\"",
            &format!("id = \"{id}\""),
            1,
        );
        let mut d = Daemon::start(sdir.path(), &cfg, http);
        d.wait_healthy(Duration::from_secs(20));
        stations.push((sdir, http, d, cfg));
    }

    // Miners go down and up at every station while receiver a is killed
    // ten times, a station is killed and restarted, and the broker goes
    // away for a moment.
    let mut subscribed_before = 0;
    for round in 0..10 {
        for (i, (_, http, _, _)) in stations.iter().enumerate() {
            for m in 0..10 {
                check_in(*http, m + i, if round % 2 == 0 { "in" } else { "out" });
            }
        }
        a.kill();
        std::thread::sleep(Duration::from_millis(150));
        subscribed_before = a.log_text().matches("subscribed").count();
        a.restart();
        if round == 4 {
            let (sdir, http, d, cfg) = &mut stations[1];
            let _ = d.child.kill();
            let _ = d.child.wait();
            *d = Daemon::start(sdir.path(), cfg, *http);
            d.wait_healthy(Duration::from_secs(20));
        }
        if round == 6 {
            broker.stop();
            std::thread::sleep(Duration::from_secs(1));
            broker.restart();
        }
    }
    // The last instance of a is up again.
    a.wait_log("subscribed", subscribed_before + 1, Duration::from_secs(60));

    // The database ends with exactly what the stations' stores hold, once.
    let mut want = BTreeSet::new();
    for (sdir, _, _, _) in &stations {
        let dir = sdir.path().to_owned();
        wait_until(
            Duration::from_secs(60),
            "every station's outbox sent",
            || store_rows(&dir).values().all(|sent| *sent),
        );
        want.extend(store_rows(&dir).into_keys());
    }
    assert!(want.len() > 300, "a real stream: {} records", want.len());
    let have = || -> BTreeSet<String> {
        pg.query("SELECT msg_id FROM messages")
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let end = Instant::now() + Duration::from_secs(60);
    while have().len() < want.len() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = have();
    let missing: Vec<String> = want
        .difference(&got)
        .map(|id| {
            stations
                .iter()
                .find_map(|(sdir, _, _, _)| {
                    let db = rusqlite::Connection::open(sdir.path().join("data/pithead.db")).ok()?;
                    db.query_row(
                        "SELECT kind || ' lane ' || lane || ' seq ' || seq || ' at ' || created_at || ' sent ' || coalesce(sent_at, '-') FROM outbox WHERE msg_id = ?1",
                        [id],
                        |r| r.get::<_, String>(0),
                    )
                    .ok()
                })
                .unwrap_or_default()
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} records missing in PostgreSQL: {missing:#?}",
        missing.len(),
        want.len()
    );
    // Nothing else either: what PostgreSQL holds beyond the first look
    // at the stores was made by the stations since (a head-count).
    let mut now_held = BTreeSet::new();
    for (sdir, _, _, _) in &stations {
        now_held.extend(store_rows(sdir.path()).into_keys());
    }
    let foreign: Vec<&String> = got.difference(&now_held).collect();
    assert!(foreign.is_empty(), "records no station holds: {foreign:?}");
    assert_eq!(
        pg.query("SELECT count(*) FROM lane_gaps WHERE explained_by IS NULL"),
        "0",
        "no unexplained gap: {}",
        pg.query("SELECT * FROM lane_gaps")
    );
    // Registered or not, every station is kept; s3 is flagged.
    assert_eq!(
        pg.query("SELECT station, registered, presence FROM stations ORDER BY station"),
        "s1\tt\tonline\ns2\tt\tonline\ns3\tf\tonline"
    );
    assert_eq!(
        pg.query("SELECT DISTINCT registered FROM messages WHERE station = 's3'"),
        "f"
    );
    // Who is underground, from the latest head-count of each station.
    let counts = pg.query("SELECT station, underground FROM headcount_current ORDER BY station");
    assert_eq!(counts.lines().count(), 3, "{counts}");
    drop(b);
}

/// A station's messages, published by hand in the order given.
fn publish_all(broker: &Mosquitto, messages: &[(String, String)]) {
    let mut o = rumqttc::MqttOptions::new("test-publisher", "127.0.0.1", broker.port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = rumqttc::Client::new(o, 100);
    for (topic, payload) in messages {
        client
            .publish(
                topic.as_str(),
                rumqttc::QoS::AtLeastOnce,
                false,
                payload.as_bytes().to_vec(),
            )
            .unwrap();
    }
    let mut acked = 0;
    for ev in conn.iter() {
        if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) = ev {
            acked += 1;
            if acked == messages.len() {
                break;
            }
        }
        ev.unwrap();
    }
    let _ = client.disconnect();
}

fn alarm(station: &str, seq: i64, event: &str, by: Option<&str>) -> (String, String) {
    let by = by.map_or("null".to_owned(), |b| format!("\"{b}\""));
    (
        format!("pithead/v1/test-county/{station}/alarm"),
        format!(
            "{{\"schema\":\"pithead/v1\",\"msg_id\":\"{station}-a{seq}\",\"county\":\"test-county\",\"station\":\"{station}\",\
             \"epoch\":\"e1\",\"lane\":\"alarm\",\"seq\":{seq},\"kind\":\"alarm\",\"created_at\":\"2026-12-01T06:00:0{seq}Z\",\
             \"body\":{{\"county\":\"test-county\",\"station\":\"{station}\",\"alarm_id\":7,\"event\":\"{event}\",\
             \"channel\":\"ch4-1201-face\",\"level\":\"power_cut\",\"value\":1.52,\"state\":\"ok\",\"by\":{by},\
             \"at\":\"2026-12-01T06:00:0{seq}Z\"}}}}"
        ),
    )
}

#[test]
fn any_arrival_order_gives_the_same_state_and_bad_messages_are_kept_with_reasons() {
    let pg = Postgres::start();
    let broker = Mosquitto::start_with(free_port(), true, "");
    let dir = tempfile::tempdir().unwrap();
    let a = County::start(
        dir.path(),
        "county-a",
        &county_config(&broker, &pg, "county-a"),
    );
    a.wait_log("subscribed", 1, Duration::from_secs(60));
    let b = County::start(
        dir.path(),
        "county-b",
        &county_config(&broker, &pg, "county-b"),
    );
    b.wait_log("subscribed", 1, Duration::from_secs(30));

    // One alarm's life at s1 in order, at s2 backwards and twice over, the
    // two receivers sharing the messages between them.
    let life = |s: &str| {
        vec![
            alarm(s, 1, "raised", None),
            alarm(s, 2, "acknowledged", Some("王班长")),
            alarm(s, 3, "cleared", None),
        ]
    };
    let mut backwards = life("s2");
    backwards.reverse();
    backwards.extend(life("s2"));
    let mut all = life("s1");
    all.extend(backwards);
    // What cannot be read: not JSON, another schema, an envelope that is
    // not its topic's, a body that is not its kind's, a topic that is not
    // a station's.
    let bad = [
        ("pithead/v1/test-county/s1/alarm", "not json".to_owned()),
        (
            "pithead/v1/test-county/s1/alarm",
            alarm("s1", 9, "raised", None)
                .1
                .replace("pithead/v1\",\"msg", "other/v9\",\"msg"),
        ),
        (
            "pithead/v1/test-county/s1/alarm",
            alarm("s2", 9, "raised", None).1,
        ),
        (
            "pithead/v1/test-county/s1/alarm",
            alarm("s1", 9, "exploded", None).1,
        ),
        ("pithead/v1/test-county/s1/nonsense", "{}".to_owned()),
    ];
    all.extend(bad.iter().map(|(t, p)| ((*t).to_owned(), p.clone())));
    // A station the registry does not know: kept, and flagged.
    all.push(alarm("s9", 1, "raised", None));
    publish_all(&broker, &all);

    wait_until(
        Duration::from_secs(30),
        "every message stored or rejected",
        || {
            pg.query(
                "SELECT (SELECT count(*) FROM messages) || ' ' || (SELECT count(*) FROM rejected)",
            ) == "7 5"
        },
    );
    assert_eq!(
        pg.query("SELECT station, event, by, seq FROM alarm_current ORDER BY station"),
        "s1\tcleared\t\t3\ns2\tcleared\t\t3\ns9\traised\t\t1",
        "the latest by number, whatever the arrival order"
    );
    let reasons = pg.query("SELECT reason FROM rejected ORDER BY id");
    for want in [
        "expected ident",
        "is not pithead/v1",
        "envelope",
        "body of the alarm",
        "missing field",
    ] {
        assert!(reasons.contains(want), "a reason with {want:?}:\n{reasons}");
    }
    assert_eq!(
        pg.query("SELECT registered FROM stations WHERE station = 's9'"),
        "f"
    );
    // Nothing is missing: s1 and s2 each hold 1..3.
    assert_eq!(pg.query("SELECT count(*) FROM lane_gaps"), "0");
    // Both instances did a share of the work, and neither crashed.
    assert!(a.log_text().contains("message rejected") || b.log_text().contains("message rejected"));
}

fn headcount(station: &str, seq: i64) -> (String, String) {
    (
        format!("pithead/v1/test-county/{station}/headcount"),
        format!(
            "{{\"schema\":\"pithead/v1\",\"msg_id\":\"{station}-h{seq}\",\"county\":\"test-county\",\"station\":\"{station}\",\
             \"epoch\":\"e1\",\"lane\":\"checkin\",\"seq\":{seq},\"kind\":\"headcount\",\"created_at\":\"2026-12-01T06:00:0{seq}Z\",\
             \"body\":{{\"county\":\"test-county\",\"station\":\"{station}\",\"at\":\"2026-12-01T06:00:0{seq}Z\",\
             \"underground\":0,\"overdue\":0,\"people\":[]}}}}"
        ),
    )
}

#[test]
fn a_gap_the_station_no_longer_has_is_asked_for_once_answered_gone_and_marked_so() {
    let pg = Postgres::start();
    let broker = Mosquitto::start_with(free_port(), true, "");
    let dir = tempfile::tempdir().unwrap();
    let county = County::start(
        dir.path(),
        "county-a",
        &county_config(&broker, &pg, "county-a"),
    );
    county.wait_log("subscribed", 1, Duration::from_secs(60));
    // The station's side of the downlink, by hand: what the county asks.
    let asked = pithead_e2e::Subscriber::start(broker.port);

    // Numbers 1 and 3 of s1's check-in lane; 2 never comes.
    publish_all(&broker, &[headcount("s1", 1), headcount("s1", 3)]);
    wait_until(Duration::from_secs(20), "the gap seen", || {
        pg.query("SELECT from_seq || '-' || to_seq || ' ' || coalesce(explained_by, 'open') FROM lane_gaps")
            == "2-2 open"
    });
    // Asked for with cmd/resend, recorded as a command of the county.
    let mut resend = None;
    wait_until(Duration::from_secs(20), "a cmd/resend", || {
        resend = asked
            .all()
            .into_iter()
            .find(|m| m.topic == "pithead/v1/test-county/s1/cmd/resend");
        resend.is_some()
    });
    let cmd: serde_json::Value = serde_json::from_str(&resend.unwrap().payload).unwrap();
    assert_eq!(
        (
            cmd["epoch"].as_str(),
            cmd["lane"].as_str(),
            cmd["from_seq"].as_i64(),
            cmd["to_seq"].as_i64()
        ),
        (Some("e1"), Some("checkin"), Some(2), Some(2)),
        "{cmd}"
    );
    let id = cmd["msg_id"].as_str().unwrap().to_owned();
    assert_eq!(
        pg.query(&format!(
            "SELECT cmd || ' ' || sent_by FROM commands WHERE msg_id = '{id}'"
        )),
        "resend pithead-county"
    );

    // The station answers that it no longer has number 2.
    let ack = format!(
        "{{\"schema\":\"pithead/v1\",\"msg_id\":\"s1-ack1\",\"county\":\"test-county\",\"station\":\"s1\",\
         \"epoch\":\"e1\",\"lane\":\"hazard\",\"seq\":1,\"kind\":\"cmd_ack\",\"created_at\":\"2026-12-01T06:01:00Z\",\
         \"body\":{{\"county\":\"test-county\",\"station\":\"s1\",\"cmd_msg_id\":\"{id}\",\"cmd\":\"resend\",\
         \"outcome\":\"applied\",\"resent\":0,\"gone\":[[2,2]],\"at\":\"2026-12-01T06:01:00Z\"}}}}"
    );
    publish_all(
        &broker,
        &[("pithead/v1/test-county/s1/cmd_ack".to_owned(), ack)],
    );
    wait_until(Duration::from_secs(20), "the gap marked gone", || {
        pg.query("SELECT from_seq || '-' || to_seq || ' ' || coalesce(reason, '') || ' ' || coalesce(explained_by, '') FROM lane_gaps WHERE lane = 'checkin'")
            == "2-2 gone s1-ack1"
    });
    // Marked, it is not asked for again (resend_after is 2 s; the next ask
    // would be due 8 s after the first).
    let before = pg.query("SELECT count(*) FROM commands WHERE cmd = 'resend'");
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(
        pg.query("SELECT count(*) FROM commands WHERE cmd = 'resend'"),
        before,
        "a gone range is not asked for again"
    );
    assert_eq!(
        pg.query("SELECT count(*) FROM lane_gaps WHERE explained_by IS NULL"),
        "0"
    );
}
