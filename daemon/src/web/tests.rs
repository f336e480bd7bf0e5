//! The router in process: every request goes through `router(state)` with
//! `tower::ServiceExt::oneshot`, over a real store in a temporary
//! directory and the real acquisition and alarm tasks (simulated outputs,
//! no devices). What needs a process — signals, systemd, a browser, real
//! brokers and devices — stays in `tests/`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use super::{AppState, router};
use crate::store::Store;

const TOKEN: &str = "test-api-token-0123456789";

/// A running core of the daemon (acquisition, alarms, a store) and the
/// web state over it. Dropping it stops the tasks.
struct Station {
    state: AppState,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Station {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn config(dir: &Path) -> crate::config::Config {
    let src = format!(
        "[station]\ncounty = \"c1\"\nid = \"s1\"\nname = \"测试站\"\n\
         [storage]\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:8080\"\n\
         [outputs]\nbackend = \"sim\"\nself_test = false\n",
        dir.join("data").display()
    );
    crate::config::load_str(&src, &dir.join("pithead.toml")).unwrap()
}

/// A station whose store is `store` (a real one, or one that cannot be
/// opened), with the roster imported unless `loading`.
async fn station_with(store: impl FnOnce(&Path) -> Store, loading: bool) -> Station {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Arc::new(config(dir.path()));
    let tracker = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let beats = crate::heartbeat::Heartbeats::new();
    let (acquisition, _minutes) =
        crate::acquisition::start(&cfg, Instant::now(), &beats, &tracker, &shutdown);
    let (alarms, _supervisor, events) = crate::alarm::start(
        &cfg,
        acquisition.snapshot.clone(),
        Arc::clone(&acquisition.changes),
        beats,
        &tracker,
        &shutdown,
    )
    .unwrap();
    let store = store(&cfg.storage.data_dir);
    // Alarm events are recorded as in the daemon (acknowledgements answer
    // once recorded).
    tracker.spawn(crate::alarm::record(
        store.clone(),
        Arc::clone(&cfg),
        events,
        Arc::default(),
    ));
    let state = AppState {
        sessions: Arc::new(crate::auth::Sessions::default()),
        limiter: Arc::new(super::limit::Limiter::default()),
        uplink: Arc::new(crate::sync::SyncStats::default()),
        api_token: Some(Arc::from(TOKEN)),
        config: Arc::clone(&cfg),
        store,
        started: Instant::now(),
        acquisition,
        alarms,
        overdue: Arc::default(),
        roster_changed: Arc::default(),
        hazards_overdue: Arc::default(),
        light: Arc::default(),
        reader: Arc::default(),
        http: Arc::default(),
        kiosk_keys: Arc::new(
            crate::kiosk_keys::parse("gate-2 k3y-for-the-gate-two-kiosk-000000\n").unwrap(),
        ),
        hosts: Arc::new(super::guard::allowed_hosts(&cfg.http)),
        roster_ready: Arc::new(AtomicBool::new(!loading)),
        zone: Some("Asia/Shanghai".into()),
    };
    Station {
        state,
        shutdown,
        _dir: dir,
    }
}

async fn station() -> Station {
    station_with(|d| Store::open(d).unwrap(), false).await
}

const LOOPBACK: [u8; 4] = [127, 0, 0, 1];
const LAN: [u8; 4] = [192, 168, 1, 50];

/// One request from `peer`: (status, JSON body, headers).
async fn send(
    st: &Station,
    peer: [u8; 4],
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, serde_json::Value, axum::http::HeaderMap) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if !body.is_empty() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let mut req = req.body(Body::from(body.to_owned())).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((peer, 40_000))));
    let res = router(st.state.clone())
        .oneshot(req)
        .await
        .unwrap_or_else(|e| match e {});
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json, headers)
}

/// Every refusal names itself and says why, in both languages.
fn refusal(json: &serde_json::Value, code: &str) {
    assert_eq!(json["error"], code, "{json}");
    assert!(
        json["message_zh"].as_str().is_some_and(|m| !m.is_empty())
            && json["message_en"].as_str().is_some_and(|m| !m.is_empty()),
        "{json}"
    );
}

#[tokio::test]
async fn supervisor_endpoints_need_a_session_or_the_token() {
    let st = station().await;
    for path in [
        "/api/v1/roster",
        "/api/v1/underground",
        "/api/v1/hazards",
        "/api/v1/devices",
        "/api/v1/uplink",
    ] {
        let (s, j, _) = send(&st, LOOPBACK, "GET", path, &[], "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
        refusal(&j, "unauthorized");
        let (s, _, _) = send(
            &st,
            LOOPBACK,
            "GET",
            path,
            &[("authorization", "Bearer wrong-token-00000000000")],
            "",
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}: a wrong token");
        let bearer = format!("Bearer {TOKEN}");
        let (s, _, _) = send(
            &st,
            LOOPBACK,
            "GET",
            path,
            &[("authorization", &bearer)],
            "",
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{path} with the token");
    }
}

#[tokio::test]
async fn a_session_changes_things_only_with_its_csrf_token() {
    let st = station().await;
    let (token, session) = st.state.sessions.create("王班长");
    let cookie = format!("{}={token}", super::api::COOKIE);
    // Reading needs no CSRF token.
    let (s, _, _) = send(
        &st,
        LOOPBACK,
        "GET",
        "/api/v1/roster",
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let csv = "badge,name,team,role\n0001,张伟,综采一队,采煤工\n";
    // A change without it, or with another, is refused and changes nothing.
    for csrf in ["", "not-the-token"] {
        let (s, j, _) = send(
            &st,
            LOOPBACK,
            "POST",
            "/api/v1/roster",
            &[("cookie", &cookie), ("x-csrf-token", csrf)],
            csv,
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "csrf {csrf:?}");
        refusal(&j, "csrf");
    }
    let roster = st.state.store.read(crate::roster::roster).await.unwrap();
    assert!(roster.is_empty(), "{roster:?}");
    let (s, j, _) = send(
        &st,
        LOOPBACK,
        "POST",
        "/api/v1/roster",
        &[("cookie", &cookie), ("x-csrf-token", &session.csrf)],
        csv,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{j}");
    let roster = st.state.store.read(crate::roster::roster).await.unwrap();
    assert_eq!(roster.len(), 1);
    // A bad file: 422 with every bad line, nothing imported.
    let (s, j, _) = send(
        &st,
        LOOPBACK,
        "POST",
        "/api/v1/roster",
        &[("cookie", &cookie), ("x-csrf-token", &session.csrf)],
        "badge,name,team,role\n00 01,张伟,,\n0002,,,\n",
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(j["lines"].as_array().map(Vec::len), Some(2), "{j}");
}

#[tokio::test]
async fn check_ins_come_from_a_kiosk_and_bad_bodies_are_answered() {
    let st = station().await;
    let body = r#"{"badge": "0005", "direction": "out"}"#;
    // A phone on the station LAN: refused, nothing recorded.
    let (s, j, _) = send(&st, LAN, "POST", "/api/v1/checkins", &[], body).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    refusal(&j, "not_a_kiosk");
    // A LAN kiosk with its key: recorded under its name, and an unknown
    // badge is told so without a name.
    let (s, j, _) = send(
        &st,
        LAN,
        "POST",
        "/api/v1/checkins",
        &[("x-kiosk-key", "k3y-for-the-gate-two-kiosk-000000")],
        body,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{j}");
    assert_eq!(j["record"]["outcome"], "unknown_badge");
    assert_eq!(j["record"]["kiosk"], "gate-2");
    for bad in [
        "",
        "{",
        r#"{"badge": "0005"}"#,
        r#"{"badge": "0005", "direction": "sideways"}"#,
    ] {
        let (s, j, _) = send(&st, LOOPBACK, "POST", "/api/v1/checkins", &[], bad).await;
        assert!(s.is_client_error(), "{bad:?}: {s}");
        assert!(j["error"].is_string(), "{bad:?}: {j}");
    }
    let n: i64 = st
        .state
        .store
        .read(|c| Ok(c.query_row("SELECT count(*) FROM checkins", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(n, 1, "only the kiosk's attempt is recorded");
}

#[tokio::test]
async fn check_ins_wait_for_the_roster_and_a_store_that_cannot_record_says_so() {
    let st = station_with(|d| Store::open(d).unwrap(), true).await;
    let body = r#"{"badge": "0001", "direction": "in"}"#;
    let (s, j, _) = send(&st, LOOPBACK, "POST", "/api/v1/checkins", &[], body).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    refusal(&j, "starting");
    let (s, j, _) = send(&st, LOOPBACK, "GET", "/healthz", &[], "").await;
    assert_eq!(
        (s, &j["roster"]),
        (StatusCode::SERVICE_UNAVAILABLE, &"loading".into())
    );
    st.state.roster_ready.store(true, Ordering::Release);
    let (s, _, _) = send(&st, LOOPBACK, "GET", "/healthz", &[], "").await;
    assert_eq!(s, StatusCode::OK);

    // No database: the check-in is refused with the reason, not lost
    // silently, and the health check says why.
    let broken = station_with(
        |d| Store::unavailable(d.join("pithead.db"), "disk unplugged".into()),
        false,
    )
    .await;
    let (s, j, _) = send(&broken, LOOPBACK, "POST", "/api/v1/checkins", &[], body).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{j}");
    refusal(&j, "not_recorded");
    assert!(
        j["message_en"]
            .as_str()
            .is_some_and(|m| m.contains("disk unplugged")),
        "{j}"
    );
    let (s, j, _) = send(&broken, LOOPBACK, "GET", "/healthz", &[], "").await;
    assert_eq!(
        (s, &j["status"]),
        (StatusCode::SERVICE_UNAVAILABLE, &"degraded".into())
    );
}

#[tokio::test]
async fn the_lan_is_rate_limited_other_hosts_and_sites_refused_and_unknowns_named() {
    let st = station().await;
    // Public endpoints: a burst, then 429, per address; loopback is the
    // station's own screen and is not limited.
    let mut codes = Vec::new();
    for _ in 0..(super::limit::BURST as usize + 5) {
        codes.push(send(&st, LAN, "GET", "/api/v1/outputs", &[], "").await.0);
    }
    assert!(
        codes[..20].iter().all(|c| *c == StatusCode::OK),
        "{codes:?}"
    );
    assert_eq!(codes.last(), Some(&StatusCode::TOO_MANY_REQUESTS));
    let (_, j, _) = send(&st, LAN, "GET", "/api/v1/outputs", &[], "").await;
    refusal(&j, "too_many_requests");
    for _ in 0..40 {
        assert_eq!(
            send(&st, LOOPBACK, "GET", "/api/v1/outputs", &[], "")
                .await
                .0,
            StatusCode::OK
        );
    }
    // A request naming another host (DNS rebinding) is refused.
    let mut req = Request::builder()
        .uri("/api/v1/channels")
        .header(header::HOST, "evil.example")
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((LOOPBACK, 1))));
    let res = router(st.state.clone())
        .oneshot(req)
        .await
        .unwrap_or_else(|e| match e {});
    assert_eq!(res.status(), StatusCode::MISDIRECTED_REQUEST);
    // A cross-site form post is refused before it is read.
    let (s, j, _) = send(
        &st,
        LOOPBACK,
        "POST",
        "/api/v1/checkins",
        &[
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ],
        r#"{"badge": "0001", "direction": "in"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{j}");
    // Unknown paths and ids are named, in both languages.
    let (s, j, _) = send(&st, LOOPBACK, "GET", "/api/v1/nothing", &[], "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    refusal(&j, "not_found");
    let bearer = format!("Bearer {TOKEN}");
    let (s, j, _) = send(
        &st,
        LOOPBACK,
        "POST",
        "/api/v1/alarms/not-a-number/ack",
        &[("authorization", &bearer)],
        r#"{"by": "王班长"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    refusal(&j, "bad_id");
    let (s, j, _) = send(
        &st,
        LOOPBACK,
        "POST",
        "/api/v1/alarms/12345/ack",
        &[("authorization", &bearer)],
        r#"{"by": "王班长"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    refusal(&j, "no_such_alarm");
    let (s, j, _) = send(&st, LOOPBACK, "GET", "/api/v1/hazards/%2E%2E", &[], "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{j}");
    refusal(&j, "bad_ticket");
}

#[tokio::test]
async fn acknowledge_all_records_each_alarm_nobody_acknowledged_and_names_who() {
    let st = station().await;
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("authorization", bearer.as_str())];
    // Nothing to acknowledge: an empty answer, not an error.
    let (s, j, _) = send(
        &st,
        LOOPBACK,
        "POST",
        "/api/v1/alarms/ack-all",
        &auth,
        r#"{"by":"李主管"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["acknowledged"], serde_json::json!([]));
    // Two overdue miners: two alarms nobody acknowledged.
    st.state
        .alarms
        .commands
        .send(crate::alarm::Command::Overdue(vec![
            "worker:0001".into(),
            "worker:0002".into(),
        ]))
        .await
        .unwrap();
    let mut rx = st.state.alarms.state.clone();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        rx.wait_for(|a| {
            a.alarms
                .iter()
                .filter(|a| a.acknowledged_by.is_none())
                .count()
                == 2
        }),
    )
    .await
    .unwrap()
    .unwrap();
    // Without a supervisor, refused; with the token but no name, refused.
    let (s, j, _) = send(&st, LOOPBACK, "POST", "/api/v1/alarms/ack-all", &[], "{}").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    refusal(&j, "unauthorized");
    let (s, j, _) = send(&st, LOOPBACK, "POST", "/api/v1/alarms/ack-all", &auth, "{}").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    refusal(&j, "bad_name");
    let (s, j, _) = send(
        &st,
        LOOPBACK,
        "POST",
        "/api/v1/alarms/ack-all",
        &auth,
        r#"{"by":"李主管"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["acknowledged"].as_array().map(Vec::len), Some(2), "{j}");
    assert_eq!(j["failed"], serde_json::json!([]));
    let now = st.state.alarms.state.borrow().clone();
    assert!(
        now.alarms
            .iter()
            .all(|a| a.acknowledged_by.as_deref() == Some("李主管")),
        "{:?}",
        now.alarms
    );
    // Recorded: the store holds both acknowledgements.
    let acked: i64 = st
        .state
        .store
        .read(|c| {
            c.query_row(
                "SELECT count(*) FROM alarms WHERE acked_by = '李主管' AND acked_at IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .map_err(Into::into)
        })
        .await
        .unwrap();
    assert_eq!(acked, 2);
}

#[test]
fn a_tile_says_its_state_in_words_worst_alarm_first() {
    use super::kiosk::status;
    assert_eq!(status("ok", "ok"), "ok");
    assert_eq!(status("fault", "comm_fault"), "comm_fault");
    assert_eq!(status("fault", "stale"), "comm_fault");
    assert_eq!(status("fault", "out_of_range"), "fault");
    assert_eq!(status("fault", "warming_up"), "warming_up");
    assert_eq!(status("warning", "ok"), "warning");
    assert_eq!(status("alarm", "ok"), "alarm");
    // A power channel that cannot be read cuts power: 断电 is what matters.
    assert_eq!(status("power_cut", "comm_fault"), "power_cut");
}
