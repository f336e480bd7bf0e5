//! The JSON API (`/api/v1`) and `/metrics`. See `docs/API.md`.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Json, Response};
use serde::Serialize;

use super::AppState;

/// One channel as the API shows it: the stable contract of `docs/API.md`.
#[derive(Debug, Serialize)]
pub struct ChannelView {
    pub(super) id: String,
    kind: crate::config::ChannelKind,
    unit: String,
    location: String,
    /// A number only when `state` is `ok`; never 0 for a missing reading.
    value: Option<f64>,
    pub(super) state: &'static str,
    /// Why there is no value, for people.
    detail: Option<String>,
    /// When the reading was taken, RFC 3339 UTC.
    updated_at: String,
}

/// Every channel's latest reading, as the API and the kiosk show it.
pub fn channel_views(snap: &crate::acquisition::Snapshot) -> Vec<ChannelView> {
    snap.info
        .iter()
        .zip(&snap.readings)
        .map(|(i, r)| ChannelView {
            id: i.id.clone(),
            kind: i.kind,
            unit: i.unit.clone(),
            location: i.location.clone(),
            value: r.value,
            state: r.state.as_str(),
            detail: r.detail.as_deref().map(str::to_owned),
            updated_at: crate::time::rfc3339(r.wall),
        })
        .collect()
}

/// `GET /api/v1/channels`
pub async fn channels(State(s): State<AppState>) -> Json<Vec<ChannelView>> {
    Json(channel_views(&s.acquisition.snapshot.borrow()))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(s): State<AppState>) -> Response {
    let mut out = String::with_capacity(4096);
    s.acquisition.metrics.render(&mut out);
    out.push_str("# HELP pithead_alarm_reading_to_output_seconds From a reading taken to the outputs it changed.\n");
    out.push_str("# TYPE pithead_alarm_reading_to_output_seconds histogram\n");
    s.alarms
        .reading_to_output
        .render(&mut out, "pithead_alarm_reading_to_output_seconds", "");
    out.push_str("# HELP pithead_alarm_events_queued Alarm events waiting for the store.\n# TYPE pithead_alarm_events_queued gauge\n");
    out.push_str(&format!(
        "pithead_alarm_events_queued {}\n",
        s.alarms.queue.len()
    ));
    out.push_str("# HELP pithead_alarm_events_dropped_total Alarm events dropped to keep the queue bounded while the store took none.\n# TYPE pithead_alarm_events_dropped_total counter\n");
    out.push_str(&format!(
        "pithead_alarm_events_dropped_total {}\n",
        s.alarms.queue.dropped()
    ));
    s.uplink.render(&mut out);
    {
        let snap = s.acquisition.snapshot.borrow();
        out.push_str("# HELP pithead_device_online Whether a device answered its last request.\n");
        out.push_str("# TYPE pithead_device_online gauge\n");
        for d in &snap.devices {
            out.push_str(&format!(
                "pithead_device_online{{device=\"{}\"}} {}\n",
                d.id,
                u8::from(d.online)
            ));
        }
        out.push_str("# HELP pithead_channel_ok Whether a channel has a good value (1) or a special state (0).\n");
        out.push_str("# TYPE pithead_channel_ok gauge\n");
        for (i, r) in snap.info.iter().zip(&snap.readings) {
            let ok = u8::from(r.state == pithead_core::ReadingState::Ok);
            out.push_str(&format!(
                "pithead_channel_ok{{channel=\"{}\",state=\"{}\"}} {ok}\n",
                i.id,
                r.state.as_str()
            ));
        }
    }
    out.push_str("# HELP pithead_http_connections_open HTTP connections open now.\n# TYPE pithead_http_connections_open gauge\n");
    out.push_str(&format!(
        "pithead_http_connections_open {}\n",
        s.http.open()
    ));
    out.push_str("# HELP pithead_http_connections_refused_total Connections closed at once for being over a limit.\n# TYPE pithead_http_connections_refused_total counter\n");
    out.push_str(&format!(
        "pithead_http_connections_refused_total {}\n",
        s.http.refused()
    ));
    out.push_str("# HELP pithead_store_disk_full Whether the disk is full and records are refused.\n# TYPE pithead_store_disk_full gauge\n");
    out.push_str(&format!(
        "pithead_store_disk_full {}\n",
        u8::from(s.store.disk_full())
    ));
    out.push_str("# HELP pithead_store_refused_disk_full_total Writes refused because the disk was full.\n# TYPE pithead_store_refused_disk_full_total counter\n");
    out.push_str(&format!(
        "pithead_store_refused_disk_full_total {}\n",
        s.store.refused_for_full_disk()
    ));
    if let Ok(b) = s.store.read(crate::store::outbox::backlog).await {
        out.push_str("# HELP pithead_outbox_pending Messages waiting for the county.\n# TYPE pithead_outbox_pending gauge\n");
        out.push_str(&format!("pithead_outbox_pending {}\n", b.pending));
        out.push_str("# HELP pithead_outbox_bytes Bytes waiting for the county.\n# TYPE pithead_outbox_bytes gauge\n");
        out.push_str(&format!("pithead_outbox_bytes {}\n", b.bytes));
        out.push_str("# HELP pithead_outbox_set_aside Outbox rows set aside: the broker would not take them (kept, announced to the county as a gap).\n# TYPE pithead_outbox_set_aside gauge\n");
        out.push_str(&format!("pithead_outbox_set_aside {}\n", b.set_aside));
        out.push_str("# HELP pithead_outbox_dropped_summaries_total Summaries dropped at the outbox cap.\n# TYPE pithead_outbox_dropped_summaries_total counter\n");
        out.push_str(&format!(
            "pithead_outbox_dropped_summaries_total {}\n",
            b.dropped_summaries
        ));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};

use std::sync::Arc;

use super::ApiError;
use crate::alarm::{AlarmView, Command};

/// Query of `GET /api/v1/alarms`.
#[derive(Debug, serde::Deserialize)]
pub struct AlarmQuery {
    /// Only the active ones.
    #[serde(default)]
    active: bool,
}

/// `GET /api/v1/alarms[?active=true]`: active alarms; without `active=true`,
/// also the 100 alarms that ended last. Without a supervisor (a session or
/// the API token) nothing personal is in it: an overdue miner is
/// `worker` without his badge, and nobody's name says who acknowledged.
pub async fn alarms(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<AlarmQuery>,
) -> Response {
    let supervisor = authorize(&s, &headers, false).is_ok();
    let mut list: Vec<AlarmView> = s.alarms.state.borrow().alarms.clone();
    if !q.active {
        match s.store.read(|c| crate::alarm::history::ended(c, 100)).await {
            Ok(ended) => list.extend(ended),
            Err(e) => {
                return ApiError::respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "history_unavailable",
                    format!("报警记录暂时无法读取：{e}"),
                    format!("alarm history cannot be read: {e}"),
                );
            }
        }
    }
    if !supervisor {
        for a in &mut list {
            if a.channel.starts_with("worker:") {
                a.channel = "worker".into();
            }
            a.acknowledged_by = None;
        }
    }
    Json(list).into_response()
}

/// Body of `POST /api/v1/alarms/{id}/ack`.
#[derive(Debug, serde::Deserialize)]
pub struct AckBody {
    /// The supervisor's name (with the API token; a console session names
    /// its supervisor itself).
    #[serde(default)]
    by: String,
}

/// `POST /api/v1/alarms/{id}/ack` with `{"by": "name"}`: silences the siren
/// for that alarm at once; answers once the acknowledgement is recorded.
pub async fn ack(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<AckBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let who = match authorize(&s, &headers, true) {
        Ok(w) => w,
        Err(refused) => return *refused,
    };
    let Ok(id) = id.parse::<u64>() else {
        return ApiError::respond(
            StatusCode::BAD_REQUEST,
            "bad_id",
            "报警编号无效",
            format!("`{id}` is not an alarm id"),
        );
    };
    let by = match (&who, body) {
        (Who::Supervisor(user), _) => user.clone(),
        (Who::Token, Ok(Json(b))) if !b.by.trim().is_empty() && b.by.chars().count() <= 64 => {
            b.by.trim().to_owned()
        }
        (Who::Token, Ok(_)) => {
            return ApiError::respond(
                StatusCode::BAD_REQUEST,
                "bad_name",
                "请填写确认人姓名（不超过64个字）",
                "give the name of who acknowledges (`by`, 1 to 64 characters)",
            );
        }
        (Who::Token, Err(e)) => {
            return ApiError::respond(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "请求格式错误，应为 {\"by\": \"姓名\"}",
                format!("expected a JSON body {{\"by\": \"name\"}}: {e}"),
            );
        }
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if s.alarms
        .commands
        .send(Command::Ack { id, by, reply })
        .await
        .is_err()
    {
        return ApiError::respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "系统正在停止",
            "the daemon is stopping",
        );
    }
    let recorded = match answer.await {
        Ok(Ok(recorded)) => recorded,
        Ok(Err(crate::alarm::engine::AckError::NotFound(_))) => {
            return ApiError::respond(
                StatusCode::NOT_FOUND,
                "no_such_alarm",
                "没有这个正在报警的编号",
                format!("no active alarm {id}"),
            );
        }
        Ok(Err(e @ crate::alarm::engine::AckError::AlreadyAcknowledged { .. })) => {
            return ApiError::respond(
                StatusCode::CONFLICT,
                "already_acknowledged",
                "该报警已被确认",
                e.to_string(),
            );
        }
        Err(_) => {
            return ApiError::respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "stopping",
                "系统正在停止",
                "the daemon is stopping",
            );
        }
    };
    match tokio::time::timeout(std::time::Duration::from_secs(10), recorded).await {
        Ok(Ok(Ok(()))) => {
            let view = s
                .alarms
                .state
                .borrow()
                .alarms
                .iter()
                .find(|a| a.id == id)
                .cloned();
            Json(serde_json::json!({ "id": id, "acknowledged": true, "recorded": true, "alarm": view })).into_response()
        }
        Ok(Ok(Err(e))) => ApiError::respond(
            StatusCode::INSUFFICIENT_STORAGE,
            "not_recorded",
            format!("已确认，警笛已消音，但记录未能保存（将自动重试）：{e}"),
            format!("acknowledged and silenced, but not yet recorded (it will be retried): {e}"),
        ),
        _ => ApiError::respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_recorded",
            "已确认，警笛已消音，但记录尚未保存",
            "acknowledged and silenced, but not yet recorded",
        ),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /api/v1/outputs`: what the siren, beacon and relay show, and for
/// simulated outputs their recent changes.
pub async fn outputs(State(s): State<AppState>) -> Response {
    // Copy out of the panel's lock before the work: the engine and the
    // supervisor take the same lock.
    let (current, timeline, errors) = match s.alarms.panel.lock() {
        Ok(p) => (p.current(), p.timeline().cloned(), p.errors()),
        Err(_) => {
            return ApiError::respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "panel",
                "输出状态不可读",
                "outputs unreadable",
            );
        }
    };
    Json(serde_json::json!({
        "siren": current.siren,
        "beacon": current.beacon,
        "power_allowed": current.power_allowed,
        "output_errors": errors,
        "simulated": timeline.is_some(),
        "changes": timeline.map(|t| crate::alarm::panel::recent_changes(&t, 500)),
    }))
    .into_response()
}

/// Who is acting, as authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// The API token (tools, scripts); the name comes with the request.
    Token,
    /// A supervisor logged in to the console.
    Supervisor(String),
}

/// The console session cookie.
pub const COOKIE: &str = "pithead_session";

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            kv.trim()
                .strip_prefix(COOKIE)
                .and_then(|r| r.strip_prefix('='))
                .map(str::to_owned)
        })
}

/// Supervisor actions need a console session (and, for a change, its CSRF
/// token in `X-CSRF-Token`) or the API token.
fn authorize(s: &AppState, headers: &HeaderMap, change: bool) -> Result<Who, Box<Response>> {
    if let Some(session) = cookie_token(headers).and_then(|t| s.sessions.get(&t)) {
        let csrf = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if change && !constant_time_eq(csrf.as_bytes(), session.csrf.as_bytes()) {
            return Err(Box::new(ApiError::respond(
                StatusCode::FORBIDDEN,
                "csrf",
                "请求缺少有效的防伪令牌，请刷新页面后重试",
                "missing or wrong X-CSRF-Token; reload the page",
            )));
        }
        return Ok(Who::Supervisor(session.user));
    }
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (&s.api_token, given) {
        (Some(token), Some(g)) if constant_time_eq(g.as_bytes(), token.as_bytes()) => {
            Ok(Who::Token)
        }
        (None, Some(_)) => Err(Box::new(ApiError::respond(
            StatusCode::FORBIDDEN,
            "ack_disabled",
            "本站未配置接口令牌，请登录主管控制台操作",
            "no API token is configured on this station (http.api_token_file); log in to the console",
        ))),
        _ => Err(Box::new(ApiError::respond(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "请先登录主管控制台",
            "log in to the console, or give the API token",
        ))),
    }
}

/// Body of `POST /api/v1/session`.
#[derive(Debug, serde::Deserialize)]
pub struct LoginBody {
    user: String,
    password: String,
}

/// `POST /api/v1/session`: logs a supervisor in; sets the session cookie
/// and answers the CSRF token for changes. Failed logins are limited per
/// client address.
pub async fn login(
    State(s): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    secure: Option<axum::Extension<super::serve::Secure>>,
    body: Result<Json<LoginBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let ip = peer.ip();
    // The slot is taken before the password is checked, so that a burst of
    // attempts at once cannot all get past the limit.
    if !s.sessions.begin(ip) {
        return ApiError::respond(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "登录失败次数过多，请一分钟后再试",
            "too many failed logins; try again in a minute",
        );
    }
    let Ok(Json(b)) = body else {
        return ApiError::respond(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "请求格式错误：需要用户名和密码",
            "expected {\"user\", \"password\"}",
        );
    };
    let user = b.user.trim().to_owned();
    // For the log: a name as given, but short and escaped.
    let shown: String = user.chars().take(64).collect();
    let lookup = user.clone();
    let stored = s
        .store
        .read(move |c| crate::auth::stored_hash(c, &lookup))
        .await;
    let stored = match stored {
        Ok(h) => h,
        Err(e) => return store_refused(&e),
    };
    let Some(turn) = s.sessions.verify_turn().await else {
        return ApiError::respond(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            "登录请求过多，请稍后再试",
            "too many logins at once; try again in a moment",
        );
    };
    let password = b.password;
    // Verify even without such a user, so timing does not tell names.
    let hash = stored.clone().unwrap_or_else(|| "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2ruCiRC1mr8Et0Tb0Bvx1H7Yp2Z6V+mD1LAuyg2pKbI".into());
    let ok = s.sessions.verifier().verify(password.clone(), hash).await;
    drop(turn);
    // An old hash's costs are brought up to date once it has been seen to
    // be right.
    if ok
        && stored.as_deref().is_some_and(crate::auth::needs_rehash)
        && let Ok(new) = tokio::task::spawn_blocking(move || crate::auth::hash(&password)).await
        && let Ok(new) = new
    {
        let who = user.clone();
        let _ = s
            .store
            .write(crate::store::Durability::Acknowledged, move |c| {
                crate::auth::set_user(c, &who, &new, true)
            })
            .await;
    }
    if !ok || stored.is_none() {
        tracing::warn!(user = ?shown, client = %ip, "failed console login");
        return ApiError::respond(
            StatusCode::UNAUTHORIZED,
            "bad_login",
            "用户名或密码错误",
            "wrong user or password",
        );
    }
    s.sessions.succeeded(ip);
    let (token, session) = s.sessions.create(&user);
    tracing::info!(user = ?shown, client = %ip, "console login");
    let secure = secure.is_some_and(|axum::Extension(super::serve::Secure(s))| s);
    let cookie = format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        crate::auth::SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    (
        [(axum::http::header::SET_COOKIE, cookie)],
        Json(serde_json::json!({ "user": session.user, "csrf": session.csrf })),
    )
        .into_response()
}

/// `GET /api/v1/session`: who is logged in (with the CSRF token), or 401.
pub async fn whoami(State(s): State<AppState>, headers: HeaderMap) -> Response {
    match cookie_token(&headers).and_then(|t| s.sessions.get(&t)) {
        Some(session) => {
            Json(serde_json::json!({ "user": session.user, "csrf": session.csrf })).into_response()
        }
        None => ApiError::respond(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "未登录",
            "not logged in",
        ),
    }
}

/// `DELETE /api/v1/session`: logs out.
pub async fn logout(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(t) = cookie_token(&headers) {
        s.sessions.remove(&t);
    }
    (
        [(
            axum::http::header::SET_COOKIE,
            format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        )],
        StatusCode::NO_CONTENT,
    )
        .into_response()
}

/// Body of `POST /api/v1/checkins`.
#[derive(Debug, serde::Deserialize)]
pub struct CheckinBody {
    badge: String,
    direction: crate::roster::Direction,
}

/// `POST /api/v1/checkins` `{badge, direction: "in"|"out"}`: recorded
/// durably (with its outbox row) before the answer, refused ones included.
pub async fn checkin(
    State(s): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<CheckinBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    use crate::roster::{Direction, Outcome};
    // Who goes underground is told by the kiosk, not by any phone on the
    // Wi-Fi: a check-out from elsewhere would take a miner off the roll.
    let Some(kiosk) = super::guard::kiosk(&s, peer, &headers) else {
        tracing::warn!(client = %peer.ip(), "check-in refused: not a kiosk");
        return ApiError::respond(
            StatusCode::FORBIDDEN,
            "not_a_kiosk",
            "只能在井口登记终端上登记下井和升井",
            "check-ins and check-outs are made at a kiosk (the station's screen, or one with a key from [kiosk] keys_file)",
        );
    };
    if !s.roster_ready.load(std::sync::atomic::Ordering::Acquire) {
        return ApiError::respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "本站正在启动，花名册尚未载入，请稍后再试",
            "the station is starting and its roster is not loaded yet; try again in a moment",
        );
    }
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => {
            return ApiError::respond(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "请求格式错误，应为 {\"badge\": \"卡号\", \"direction\": \"in\" 或 \"out\"}",
                format!("expected {{\"badge\": \"…\", \"direction\": \"in\"|\"out\"}}: {e}"),
            );
        }
    };
    let badge = match crate::roster::normalize_badge(&body.badge) {
        Ok(b) => b,
        Err(why) => {
            return ApiError::respond(
                StatusCode::BAD_REQUEST,
                "bad_badge",
                "卡号格式不正确，请重新刷卡或输入",
                why,
            );
        }
    };
    let cfg = Arc::clone(&s.config);
    let direction = body.direction;
    let at = std::time::SystemTime::now();
    let b = badge.clone();
    let result = s
        .store
        .write(crate::store::Durability::Acknowledged, move |c| {
            crate::roster::check(c, &cfg, &b, direction, at, &kiosk)
        })
        .await;
    let record = match result {
        Ok(r) => r,
        Err(e) => return store_refused(&e),
    };
    if record.outcome == Outcome::Ok
        && direction == Direction::In
        && let Ok(mut clock) = s.overdue.lock()
    {
        clock.anchor(&badge, crate::time::unix_ms(at), std::time::Instant::now());
    }
    let name = record.name.clone().unwrap_or_default();
    let (status, zh, en) = match (record.outcome, direction) {
        (Outcome::Ok, Direction::In) => (StatusCode::CREATED, format!("{name}，下井登记成功。注意安全！"), format!("{name}: checked in. Stay safe!")),
        (Outcome::Ok, Direction::Out) => (
            StatusCode::CREATED,
            format!("{name}，升井登记成功，本班井下 {} 分钟。", record.minutes_underground.unwrap_or(0)),
            format!("{name}: checked out after {} minutes underground.", record.minutes_underground.unwrap_or(0)),
        ),
        (Outcome::UnknownBadge, _) => (
            StatusCode::NOT_FOUND,
            "卡号不在花名册中，已记录。请联系群监员。".to_owned(),
            "this badge is not on the roster; the attempt was recorded. See the station supervisor.".to_owned(),
        ),
        (Outcome::AlreadyIn, _) => (
            StatusCode::CONFLICT,
            format!("{name} 已于 {} 下井登记，未重复登记（已记录）。", record.underground_since.clone().unwrap_or_default()),
            format!("{name} is already checked in since {}; recorded, not repeated.", record.underground_since.clone().unwrap_or_default()),
        ),
        (Outcome::NotIn, _) => (
            StatusCode::CONFLICT,
            format!("{name} 没有下井登记记录，升井已记录，请告知群监员。"),
            format!("{name} has no check-in; the check-out was recorded. Tell the station supervisor."),
        ),
    };
    (
        status,
        Json(serde_json::json!({ "record": record, "message_zh": zh, "message_en": en })),
    )
        .into_response()
}

/// A store error as an answer: the record was not kept, and why.
fn store_refused(e: &crate::store::StoreError) -> Response {
    match e {
        crate::store::StoreError::DiskFull => ApiError::respond(
            StatusCode::INSUFFICIENT_STORAGE,
            "disk_full",
            "存储空间已满，本次未能记录，请向群监员报告",
            "the disk is full; this was not recorded. Tell the station supervisor.",
        ),
        e => ApiError::respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_recorded",
            "暂时无法记录，请稍后再试或向群监员报告",
            format!("not recorded: {e}"),
        ),
    }
}

/// `GET /api/v1/underground`: everyone underground now, longest first.
pub async fn underground(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&s, &headers, false) {
        return *refused;
    }
    let limit = s
        .config
        .roster
        .shift_length
        .saturating_add(s.config.roster.overdue_grace);
    match s
        .store
        .read(move |c| {
            let now = std::time::SystemTime::now();
            let people = crate::roster::underground(c, now, limit)?;
            let by_hand = crate::roster::checked_out_by_hand(c, now - limit)?;
            Ok((people, by_hand))
        })
        .await
    {
        Ok((people, by_hand)) => Json(serde_json::json!({
            "station": s.config.station.name,
            "count": people.len(),
            "overdue_after_minutes": limit.as_secs() / 60,
            "people": people,
            "checked_out_by_hand": by_hand,
        }))
        .into_response(),
        Err(e) => store_refused(&e),
    }
}

/// Body of `POST /api/v1/underground/{badge}/checkout`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutBody {
    /// Why (a lost badge, left by another way, confirmed on the surface).
    pub reason: String,
    /// Who, when the API token is used (a console login names itself).
    #[serde(default)]
    pub by: String,
}

/// `POST /api/v1/underground/{badge}/checkout` `{"reason": "…"}`: a
/// supervisor checks someone out by hand; recorded with who and why, sent
/// to the county, listed with the roll.
pub async fn checkout_by_hand(
    State(s): State<AppState>,
    Path(badge): Path<String>,
    headers: HeaderMap,
    body: Result<Json<CheckoutBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let who = match authorize(&s, &headers, true) {
        Ok(w) => w,
        Err(refused) => return *refused,
    };
    let Ok(Json(body)) = body else {
        return ApiError::respond(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "请求格式错误，应为 {\"reason\": \"原因\"}",
            "expected {\"reason\": \"…\"}",
        );
    };
    let reason = body.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 200 {
        return ApiError::respond(
            StatusCode::BAD_REQUEST,
            "bad_reason",
            "请填写人工升井的原因（不超过200字）",
            "give the reason for the check-out (1 to 200 characters)",
        );
    }
    let by = match who {
        Who::Supervisor(user) => user,
        Who::Token if !body.by.trim().is_empty() && body.by.chars().count() <= 64 => {
            body.by.trim().to_owned()
        }
        Who::Token => {
            return ApiError::respond(
                StatusCode::BAD_REQUEST,
                "bad_name",
                "请填写操作人姓名（不超过64个字）",
                "give the name of who checks out (`by`, 1 to 64 characters)",
            );
        }
    };
    let badge = match crate::roster::normalize_badge(&badge) {
        Ok(b) => b,
        Err(why) => {
            return ApiError::respond(StatusCode::BAD_REQUEST, "bad_badge", "卡号格式不正确", why);
        }
    };
    let cfg = Arc::clone(&s.config);
    let b = badge.clone();
    let by_hand = crate::roster::ByHand { by, reason };
    let result = s
        .store
        .write(crate::store::Durability::Acknowledged, move |c| {
            crate::roster::check_out_by_hand(c, &cfg, &b, &by_hand, std::time::SystemTime::now())
        })
        .await;
    match result {
        Ok(record) => (StatusCode::CREATED, Json(record)).into_response(),
        Err(crate::store::StoreError::Rejected(_)) => ApiError::respond(
            StatusCode::CONFLICT,
            "not_underground",
            format!("{badge} 不在井下"),
            format!("{badge} is not underground"),
        ),
        Err(e) => store_refused(&e),
    }
}

/// `GET /api/v1/roster`: the active roster.
pub async fn roster(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&s, &headers, false) {
        return *refused;
    }
    match s.store.read(crate::roster::roster).await {
        Ok(w) => Json(w).into_response(),
        Err(e) => store_refused(&e),
    }
}

/// `POST /api/v1/roster` with a CSV body: replaces the roster, or answers
/// 422 with every bad line and imports nothing.
pub async fn roster_upload(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Err(refused) = authorize(&s, &headers, true) {
        return *refused;
    }
    let workers = match crate::roster::parse_csv(&body) {
        Ok(w) => w,
        Err(errors) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(serde_json::json!({
                    "error": "bad_roster",
                    "message_zh": format!("花名册有 {} 处错误，未导入任何记录", errors.len()),
                    "message_en": format!("{} problems in the roster; nothing was imported", errors.len()),
                    "lines": errors,
                })),
            )
                .into_response();
        }
    };
    let at = crate::time::now_rfc3339();
    match s
        .store
        .write(crate::store::Durability::Acknowledged, move |c| {
            crate::roster::import(c, &workers, &at)
        })
        .await
    {
        Ok(summary) => Json(summary).into_response(),
        Err(e) => store_refused(&e),
    }
}

fn invalid_response(
    status: StatusCode,
    code: &'static str,
    e: crate::hazards::Invalid,
) -> Response {
    ApiError::respond(status, code, e.zh, e.en)
}

/// Largest JSON report body.
const MAX_REPORT_JSON: usize = 64 * 1024;

/// `POST /api/v1/hazards` (public): a miner's report, as JSON, or as
/// multipart with a `report` part (the JSON) and an optional `photo` part;
/// 201 with the ticket.
pub async fn hazard_report(State(s): State<AppState>, req: axum::extract::Request) -> Response {
    use axum::extract::FromRequest as _;
    let multipart = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let too_large = || {
        ApiError::respond(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "照片太大（最大 {} MB）",
                crate::photos::MAX_BYTES / 1024 / 1024
            ),
            format!(
                "the photo is too large (at most {} MB)",
                crate::photos::MAX_BYTES / 1024 / 1024
            ),
        )
    };
    let bad_body = |e: String| {
        ApiError::respond(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "请求格式错误：需要类别、地点、等级（general/major）、描述，以及卡号或匿名",
            format!(
                "expected {{category, location, grade: general|major, description, anonymous, badge?}}: {e}"
            ),
        )
    };
    let (json, photo) = if multipart {
        let mut mp = match axum::extract::Multipart::from_request(req, &s).await {
            Ok(m) => m,
            Err(e) => return bad_body(e.to_string()),
        };
        let (mut json, mut photo) = (None, None);
        loop {
            match mp.next_field().await {
                Ok(None) => break,
                // Two reports or two photos in one request: which one the
                // miner meant cannot be told, so neither is taken.
                Ok(Some(field)) if field.name() == Some("report") && json.is_some() => {
                    return bad_body("more than one `report` part".into());
                }
                Ok(Some(field)) => match field.name() {
                    Some("report") => match field.text().await {
                        Ok(t) if t.len() <= MAX_REPORT_JSON => json = Some(t),
                        Ok(_) => return bad_body("the report part is too large".into()),
                        Err(e) => return bad_body(e.to_string()),
                    },
                    Some("photo") => match field.bytes().await {
                        Ok(b) if b.len() > crate::photos::MAX_BYTES => return too_large(),
                        // An empty part is a form whose file field was left
                        // empty, wherever it comes.
                        Ok(b) if b.is_empty() => {}
                        Ok(_) if photo.is_some() => {
                            return bad_body("more than one `photo` part".into());
                        }
                        Ok(b) => photo = Some(b),
                        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                            return too_large();
                        }
                        Err(e) => return bad_body(e.to_string()),
                    },
                    _ => {}
                },
                Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return too_large(),
                Err(e) => return bad_body(e.to_string()),
            }
        }
        match json {
            Some(j) => (j, photo),
            None => return bad_body("no `report` part".into()),
        }
    } else {
        match axum::body::to_bytes(req.into_body(), MAX_REPORT_JSON).await {
            Ok(b) => (String::from_utf8_lossy(&b).into_owned(), None),
            Err(_) => return bad_body("the body is too large".into()),
        }
    };
    let report: crate::hazards::NewHazard = match serde_json::from_str(&json) {
        Ok(r) => r,
        Err(e) => return bad_body(e.to_string()),
    };
    let report = match report.validate() {
        Ok(r) => r,
        Err(e) => return invalid_response(StatusCode::BAD_REQUEST, "bad_report", e),
    };
    // The photo is stripped and stored (synced) before the report naming
    // it is committed.
    // Photos go first when space runs short: the report is kept without
    // its photo, and the miner told.
    let mut photo_refused: Option<String> = None;
    let photo = match photo {
        Some(bytes) => {
            let (dir, st) = (s.config.storage.data_dir.clone(), s.config.storage.clone());
            let n = bytes.len();
            let room = tokio::task::spawn_blocking(move || {
                crate::photos::room(&dir, n, st.reserve_mb, st.photos_max_mb)
            })
            .await
            .unwrap_or_else(|_| Err("stopping".into()));
            match room {
                Ok(()) => Some(bytes),
                Err(why) => {
                    tracing::warn!(reason = %why, "hazard photo refused for space; the report is kept");
                    photo_refused = Some(why);
                    None
                }
            }
        }
        None => None,
    };
    let photo_name = match photo {
        None => None,
        Some(bytes) => {
            let (kind, clean) = match crate::photos::strip(&bytes) {
                Ok(x) => x,
                Err(crate::photos::Refused::NotAnImage) => {
                    return ApiError::respond(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "not_an_image",
                        "只能上传 JPEG、PNG 或 WebP 照片",
                        "the photo must be JPEG, PNG or WebP",
                    );
                }
                Err(crate::photos::Refused::Malformed) => {
                    return ApiError::respond(
                        StatusCode::BAD_REQUEST,
                        "bad_image",
                        "照片文件已损坏",
                        "the photo file is damaged",
                    );
                }
            };
            let dir = s.config.storage.data_dir.clone();
            match tokio::task::spawn_blocking(move || crate::photos::store(&dir, kind, &clean))
                .await
            {
                Ok(Ok((name, _))) => Some(name),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot store a hazard photo");
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                    ) {
                        s.store.note_disk_full();
                    }
                    return ApiError::respond(
                        StatusCode::INSUFFICIENT_STORAGE,
                        "photo_not_stored",
                        "照片未能保存（存储空间不足？），报告未提交，请重试或不带照片提交",
                        format!("the photo could not be stored ({e}); the report was not taken"),
                    );
                }
                Err(_) => {
                    return ApiError::respond(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "stopping",
                        "系统正在停止",
                        "stopping",
                    );
                }
            }
        }
    };
    let cfg = Arc::clone(&s.config);
    let result = s
        .store
        .write(crate::store::Durability::Acknowledged, move |c| {
            crate::hazards::create(
                c,
                &cfg,
                &report,
                photo_name.as_deref(),
                std::time::SystemTime::now(),
            )
        })
        .await;
    match result {
        Ok(h) => (
            StatusCode::CREATED,
            Json(serde_json::json!({
                "ticket": h.ticket,
                "status": h.status,
                "photo": h.photo.is_some(),
                "photo_refused": photo_refused.as_ref().map(|why| serde_json::json!({
                    "message_zh": "存储空间需留给下井登记和报警记录，照片未保存；报告已提交。",
                    "message_en": format!("the photo was not kept ({why}); the report is in"),
                })),
                "reported_at": h.reported_at,
                "message_zh": format!("隐患已上报，编号 {}。可凭编号在本机查询处理进度。", h.ticket),
                "message_en": format!("Reported. Your ticket is {}; look it up here to follow it.", h.ticket),
            })),
        )
            .into_response(),
        Err(e) => store_refused(&e),
    }
}

/// `GET /api/v1/hazards/{ticket}/photo` (public): the stripped photo.
pub async fn hazard_photo(State(s): State<AppState>, Path(ticket): Path<String>) -> Response {
    let ticket = match ticket_of(&ticket) {
        Ok(t) => t,
        Err(refused) => return *refused,
    };
    let name = match s
        .store
        .read(move |c| crate::hazards::get(c, &ticket, std::time::SystemTime::now()))
        .await
    {
        Ok(Some(h)) => h.photo,
        Ok(None) => None,
        Err(e) => return store_refused(&e),
    };
    let Some((path, kind)) = name
        .as_deref()
        .and_then(|n| crate::photos::path_of(&s.config.storage.data_dir, n))
    else {
        return ApiError::respond(StatusCode::NOT_FOUND, "no_photo", "没有照片", "no photo");
    };
    match tokio::task::spawn_blocking(move || std::fs::read(&path))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    {
        Ok(bytes) => (
            [
                (axum::http::header::CONTENT_TYPE, kind.mime()),
                (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (axum::http::header::CACHE_CONTROL, "private, max-age=3600"),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => ApiError::respond(
            StatusCode::NOT_FOUND,
            "no_photo",
            "照片文件已丢失",
            "the photo file is missing",
        ),
    }
}

/// `GET /api/v1/hazards/{ticket}` (public): where a report stands, without
/// who reported it.
pub async fn hazard_lookup(State(s): State<AppState>, Path(ticket): Path<String>) -> Response {
    let ticket = match ticket_of(&ticket) {
        Ok(t) => t,
        Err(refused) => return *refused,
    };
    match s
        .store
        .read(move |c| crate::hazards::get(c, &ticket, std::time::SystemTime::now()))
        .await
    {
        Ok(Some(h)) => Json(crate::hazards::PublicHazard::from(h)).into_response(),
        Ok(None) => ApiError::respond(
            StatusCode::NOT_FOUND,
            "no_such_ticket",
            "没有这个编号的隐患",
            "no hazard with that ticket",
        ),
        Err(e) => store_refused(&e),
    }
}

/// `GET /api/v1/hazards` (supervisor): the newest 500, open ones first.
pub async fn hazard_list(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&s, &headers, false) {
        return *refused;
    }
    match s
        .store
        .read(|c| crate::hazards::list(c, 500, std::time::SystemTime::now()))
        .await
    {
        Ok(list) => Json(list).into_response(),
        Err(e) => store_refused(&e),
    }
}

/// `POST /api/v1/hazards/{ticket}/steps` (supervisor): a lifecycle step.
pub async fn hazard_step(
    State(s): State<AppState>,
    Path(ticket): Path<String>,
    headers: HeaderMap,
    body: Result<Json<crate::hazards::Step>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let who = match authorize(&s, &headers, true) {
        Ok(w) => w,
        Err(refused) => return *refused,
    };
    let step = match body {
        Ok(Json(mut b)) => {
            if let Who::Supervisor(user) = &who {
                b.by.clone_from(user);
            }
            b
        }
        Err(e) => {
            return ApiError::respond(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "请求格式错误：需要 status 与 by",
                format!("expected {{status, by, note?, owner?, deadline?, measures?}}: {e}"),
            );
        }
    };
    let cfg = Arc::clone(&s.config);
    let result = s
        .store
        .write(crate::store::Durability::Acknowledged, move |c| {
            crate::hazards::step(c, &cfg, &ticket, &step, std::time::SystemTime::now())
        })
        .await;
    match result {
        Ok(Ok(h)) => Json(h).into_response(),
        Ok(Err(crate::hazards::StepError::NotFound)) => ApiError::respond(
            StatusCode::NOT_FOUND,
            "no_such_ticket",
            "没有这个编号的隐患",
            "no hazard with that ticket",
        ),
        Ok(Err(crate::hazards::StepError::Invalid(e))) => {
            invalid_response(StatusCode::CONFLICT, "bad_step", e)
        }
        Err(e) => store_refused(&e),
    }
}

/// A ticket from a path: trimmed, upper case, letters and digits only.
fn ticket_of(raw: &str) -> Result<String, Box<Response>> {
    let ticket = raw.trim().to_ascii_uppercase();
    if ticket.is_empty() || ticket.len() > 16 || !ticket.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(Box::new(ApiError::respond(
            StatusCode::BAD_REQUEST,
            "bad_ticket",
            "编号格式不正确",
            "not a ticket",
        )));
    }
    Ok(ticket)
}

/// `GET /api/v1/devices` (supervisor): each device's health.
pub async fn devices(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&s, &headers, false) {
        return *refused;
    }
    let devices = s.acquisition.snapshot.borrow().devices.clone();
    let list: Vec<serde_json::Value> = devices
        .iter()
        .map(|d| {
            serde_json::json!({
                "id": d.id,
                "online": d.online,
                "consecutive_failures": d.consecutive_failures,
                "last_error": d.last_error,
                "last_ok": d.last_ok.map(crate::time::rfc3339),
            })
        })
        .collect();
    Json(list).into_response()
}

/// Query of the trend endpoint.
#[derive(Debug, serde::Deserialize)]
pub struct TrendQuery {
    /// How far back, in hours (1 to 48; 8 by default).
    #[serde(default)]
    hours: Option<u32>,
}

/// `GET /api/v1/channels/{id}/trend?hours=8` (supervisor): per-minute
/// statistics from the stored aggregates, with the channel's alarm levels.
pub async fn trend(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TrendQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = authorize(&s, &headers, false) {
        return *refused;
    }
    let hours = q.hours.unwrap_or(8);
    if !(1..=48).contains(&hours) {
        return ApiError::respond(
            StatusCode::BAD_REQUEST,
            "bad_hours",
            "时间范围为 1 到 48 小时",
            "hours must be 1 to 48",
        );
    }
    let Some(channel) = s.config.channel(&id).cloned() else {
        return ApiError::respond(
            StatusCode::NOT_FOUND,
            "no_such_channel",
            "没有这个测点",
            "no such channel",
        );
    };
    let since = crate::time::unix_ms(std::time::SystemTime::now()) - i64::from(hours) * 3_600_000;
    let cid = channel.id.clone();
    let points = s
        .store
        .read(move |c| {
            let mut st = c.prepare(
                "SELECT minute_ms, min, max, mean, count, faults FROM aggregates
                 WHERE channel = ?1 AND minute_ms >= ?2 ORDER BY minute_ms",
            )?;
            let rows = st.query_map((&cid, since), |r| {
                Ok(serde_json::json!({
                    "t": r.get::<_, i64>(0)?,
                    "min": r.get::<_, Option<f64>>(1)?,
                    "max": r.get::<_, Option<f64>>(2)?,
                    "mean": r.get::<_, Option<f64>>(3)?.map(|m| crate::acquisition::decode::round_significant(m, 6)),
                    "count": r.get::<_, i64>(4)?,
                    "faults": r.get::<_, i64>(5)?,
                }))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await;
    match points {
        Ok(points) => Json(serde_json::json!({
            "channel": channel.id,
            "unit": channel.unit,
            "range": channel.range,
            "levels": channel.levels.iter().map(|l| serde_json::json!({
                "name": l.name,
                "threshold": l.threshold,
                "direction": l.direction.unwrap_or_else(|| channel.kind.default_direction()),
            })).collect::<Vec<_>>(),
            "points": points,
        }))
        .into_response(),
        Err(e) => store_refused(&e),
    }
}

/// `GET /api/v1/notices` (public): the county's notices valid now.
pub async fn notices(State(s): State<AppState>) -> Response {
    match s
        .store
        .read(|c| crate::sync::downlink::current_notices(c, std::time::SystemTime::now()))
        .await
    {
        Ok(n) => Json(n).into_response(),
        Err(e) => store_refused(&e),
    }
}

/// `GET /api/v1/uplink` (supervisor): the county uplink and its backlog.
pub async fn uplink(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&s, &headers, false) {
        return *refused;
    }
    let backlog = match s.store.read(crate::store::outbox::backlog).await {
        Ok(b) => b,
        Err(e) => return store_refused(&e),
    };
    let u = &s.uplink;
    let g = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    Json(serde_json::json!({
        "enabled": s.config.mqtt.enabled,
        "connected": u.connected.load(std::sync::atomic::Ordering::Relaxed),
        "pending": backlog.pending,
        "bytes": backlog.bytes,
        "dropped_summaries": backlog.dropped_summaries,
        "set_aside": backlog.set_aside,
        "downlink_connected": u.downlink_connected.load(std::sync::atomic::Ordering::Relaxed),
        "published": g(&u.published),
        "acknowledged": g(&u.acknowledged),
    }))
    .into_response()
}
