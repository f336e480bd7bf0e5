//! The county's dashboard: every station at a glance, a station's page,
//! notices sent and their answers; county accounts with roles. Live: a
//! write by any receiver instance is a PostgreSQL `NOTIFY`, which reaches
//! every dashboard through its server-sent event stream.
//!
//! The pages are built in (no external assets), put every server text in
//! with `textContent`, and are served with a Content-Security-Policy that
//! allows nothing but this origin. Sessions live in PostgreSQL, so any
//! instance serves any logged-in user; every change needs the session's
//! CSRF token.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use deadpool_postgres::Pool;
use pithead_core::protocol;
use serde::Deserialize;
use sha2::Digest as _;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::ingest::Stats;

const HTML: &str = include_str!("../assets/dashboard.html");
const JS: &str = include_str!("../assets/dashboard.js");
const CSS: &str = include_str!("../assets/dashboard.css");

/// Changes are told to a page at most this often.
const CHANGED_EVERY: Duration = Duration::from_millis(250);
/// A session lasts this long without a new login.
const SESSION: Duration = Duration::from_secs(12 * 3600);
/// The cookie.
const COOKIE: &str = "pithead_county_session";
/// Shortest password.
pub const MIN_PASSWORD: usize = 10;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct Web {
    pool: Pool,
    rule: Arc<crate::light::Rule>,
    stats: Arc<Stats>,
    commands: rumqttc::AsyncClient,
    signing: Option<Arc<ed25519_dalek::SigningKey>>,
    changed: broadcast::Sender<()>,
    hosts: Arc<Vec<String>>,
    /// Failed logins per (address, name) in the current window.
    failures: Arc<std::sync::Mutex<Failures>>,
}

/// Failed logins by (address, name): how many, since when.
type Failures = std::collections::HashMap<(std::net::IpAddr, String), (u32, std::time::Instant)>;

/// Failed logins allowed per address and name in [`FAIL_WINDOW`]; beyond,
/// 429 until the window has passed (this instance's count).
const MAX_FAILURES: u32 = 5;
/// See [`MAX_FAILURES`].
const FAIL_WINDOW: Duration = Duration::from_secs(300);

/// An error answer: a status and a reason in both languages.
#[derive(Debug)]
pub struct ApiError(StatusCode, &'static str, String, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let ApiError(status, error, zh, en) = self;
        (
            status,
            Json(serde_json::json!({ "error": error, "message_zh": zh, "message_en": en })),
        )
            .into_response()
    }
}

fn db_error(e: impl std::fmt::Display) -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "database",
        format!("数据库暂时不可用：{e}"),
        format!("the database is unavailable: {e}"),
    )
}

/// argon2id with the station's costs (12 MiB, 3 passes).
fn argon2() -> Argon2<'static> {
    let params = argon2::Params::new(12 * 1024, 3, 1, None).unwrap_or_default();
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// An argon2id hash of `password` (at least [`MIN_PASSWORD`] characters).
pub fn hash(password: &str) -> Result<String, String> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(format!("a password has at least {MIN_PASSWORD} characters"));
    }
    argon2()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn verify(hash: &str, password: &str) -> bool {
    argon2::PasswordHash::new(hash)
        .is_ok_and(|h| argon2().verify_password(password.as_bytes(), &h).is_ok())
}

fn sha256_hex(s: &str) -> String {
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn with_headers(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// Who is logged in.
#[derive(Debug, Clone)]
struct Account {
    name: String,
    role: String,
    csrf: String,
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

impl Web {
    async fn account(&self, headers: &HeaderMap) -> Result<Account, ApiError> {
        let unauthorized = || {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "请先登录".into(),
                "log in first".into(),
            )
        };
        let token = cookie_token(headers).ok_or_else(unauthorized)?;
        let db = self.pool.get().await.map_err(db_error)?;
        let row = db
            .query_opt(
                "SELECT s.name, u.role, s.csrf FROM sessions s JOIN users u USING (name)
                 WHERE s.token_hash = $1 AND s.expires_at > now()",
                &[&sha256_hex(&token)],
            )
            .await
            .map_err(db_error)?
            .ok_or_else(unauthorized)?;
        Ok(Account {
            name: row.get(0),
            role: row.get(1),
            csrf: row.get(2),
        })
    }

    /// A logged-in operator whose request carries the session's CSRF token.
    async fn operator(&self, headers: &HeaderMap) -> Result<Account, ApiError> {
        let a = self.account(headers).await?;
        let sent = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        // Digests compared: the time taken says nothing of the token.
        if sent.is_empty() || sha256_hex(sent) != sha256_hex(&a.csrf) {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "csrf",
                "请求缺少有效的令牌，请刷新页面".into(),
                "the request lacks this session's token; reload the page".into(),
            ));
        }
        if a.role != "operator" {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "not_an_operator",
                "只有操作员可以发送指令".into(),
                "only operators send commands".into(),
            ));
        }
        Ok(a)
    }
}

impl Web {
    /// Sends command `cmd` (`notice`, `hazard`) to a station: recorded in
    /// `commands` first, so a command that went out is never unaccounted
    /// for, then published on `…/cmd/{cmd}`, signed when the county has a
    /// key.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call per command kind, each field named"
    )]
    async fn send(
        &self,
        db: &tokio_postgres::Client,
        county: &str,
        station: &str,
        cmd: &str,
        msg_id: &str,
        command: &impl serde::Serialize,
        by: &str,
    ) -> Result<(), ApiError> {
        let payload = serde_json::to_value(command).unwrap_or_default();
        db.execute(
            "INSERT INTO commands (msg_id, county, station, cmd, payload, sent_by) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&msg_id, &county, &station, &cmd, &payload, &by],
        )
        .await
        .map_err(db_error)?;
        let topic = protocol::topic(county, station, &format!("cmd/{cmd}"));
        let bytes = crate::commands::seal(
            self.signing.as_deref(),
            &topic,
            serde_json::to_vec(command).unwrap_or_default(),
        );
        self.commands
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, bytes)
            .await
            .map_err(|e| {
                ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "broker",
                    format!("已记录，但无法交给消息服务器：{e}"),
                    format!("recorded, but the broker cannot take it: {e}"),
                )
            })
    }
}

/// Starts the dashboard on `listen` until `shutdown`.
pub async fn serve(
    cfg: Arc<Config>,
    pool: Pool,
    stats: Arc<Stats>,
    listen: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (changed, _) = broadcast::channel(16);
    tokio::spawn(listen_for_changes(
        crate::db::pg_config(&cfg)?,
        changed.clone(),
        shutdown.clone(),
    ));
    let commands = crate::commands::publisher(&cfg, shutdown.clone());
    let mut hosts = vec![listen.to_string(), format!("localhost:{}", listen.port())];
    for n in cfg.http.iter().flat_map(|h| &h.names) {
        hosts.extend([n.clone(), format!("{n}:{}", listen.port())]);
    }
    let signing = match &cfg.commands.signing_key_file {
        Some(f) => Some(Arc::new(
            crate::commands::signing_key(f).map_err(anyhow::Error::msg)?,
        )),
        None => None,
    };
    let web = Web {
        pool,
        rule: Arc::new(cfg.light.clone()),
        stats,
        commands,
        signing,
        changed,
        hosts: Arc::new(hosts),
        failures: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(http = %listener.local_addr()?, "dashboard serving");
    axum::serve(
        listener,
        router(web).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await?;
    Ok(())
}

fn router(web: Web) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { with_headers("text/html; charset=utf-8", HTML) }),
        )
        .route(
            "/assets/dashboard.js",
            get(|| async { with_headers("text/javascript; charset=utf-8", JS) }),
        )
        .route(
            "/assets/dashboard.css",
            get(|| async { with_headers("text/css; charset=utf-8", CSS) }),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/session", get(session).post(login).delete(logout))
        .route("/api/v1/stations", get(stations))
        .route("/api/v1/stations/{county}/{station}", get(station))
        .route(
            "/api/v1/stations/{county}/{station}/hazards/{ticket}",
            axum::routing::post(hazard_update),
        )
        .route("/api/v1/notices", get(notices).post(send_notice))
        .route("/api/v1/stream", get(stream))
        .route("/api/v1/lights", get(lights))
        .route(
            "/api/v1/lights/{county}/{station}",
            axum::routing::post(override_light),
        )
        .layer(axum::middleware::from_fn_with_state(web.clone(), guard))
        .with_state(web)
}

/// Before any handler: the `Host` must be one of this dashboard's names
/// (a page elsewhere cannot reach it through DNS rebinding), and a change
/// must come from this origin.
async fn guard(
    State(web): State<Web>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !web.hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
        return ApiError(
            StatusCode::MISDIRECTED_REQUEST,
            "unknown_host",
            format!("主机名 {host:?} 不属于本系统"),
            format!("host {host:?} is not one of this dashboard's names (http.names)"),
        )
        .into_response();
    }
    if req.method() != axum::http::Method::GET
        && let Some(origin) = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
        && !origin
            .split_once("://")
            .is_some_and(|(_, o)| o.eq_ignore_ascii_case(&host))
    {
        return ApiError(
            StatusCode::FORBIDDEN,
            "cross_site",
            "不接受来自其他网站的请求".into(),
            "requests from other sites are refused".into(),
        )
        .into_response();
    }
    next.run(req).await
}

async fn healthz(State(web): State<Web>) -> Response {
    let db = match web.pool.get().await {
        Ok(c) => c.query_one("SELECT 1", &[]).await.is_ok(),
        Err(_) => false,
    };
    let mqtt = web.stats.connected.load(Ordering::Relaxed);
    let status = if db && mqtt {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({ "postgres": db, "mqtt": mqtt })),
    )
        .into_response()
}

async fn metrics(State(web): State<Web>) -> Response {
    let s = &web.stats;
    let mut out = String::new();
    for (name, help, v) in [
        (
            "pithead_county_messages_inserted_total",
            "Station messages stored for the first time.",
            s.inserted.load(Ordering::Relaxed),
        ),
        (
            "pithead_county_messages_duplicate_total",
            "Messages that were stored already (redeliveries).",
            s.duplicates.load(Ordering::Relaxed),
        ),
        (
            "pithead_county_messages_rejected_total",
            "Messages kept in `rejected`.",
            s.rejected.load(Ordering::Relaxed),
        ),
        (
            "pithead_county_batches_total",
            "Batches committed.",
            s.batches.load(Ordering::Relaxed),
        ),
        (
            "pithead_county_resend_requests_total",
            "cmd/resend asked of stations.",
            s.resends.load(Ordering::Relaxed),
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        ));
    }
    out.push_str(&format!(
        "# HELP pithead_county_mqtt_connected Subscribed at the broker.\n# TYPE pithead_county_mqtt_connected gauge\npithead_county_mqtt_connected {}\n",
        u8::from(s.connected.load(Ordering::Relaxed))
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[derive(Debug, Deserialize)]
struct Login {
    user: String,
    password: String,
}

async fn login(
    State(web): State<Web>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    body: Result<Json<Login>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Ok(Json(l)) = body else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "请求格式错误".into(),
            "expected {\"user\": …, \"password\": …}".into(),
        ));
    };
    let key = (peer.ip(), l.user.clone());
    let limited = web.failures.lock().ok().and_then(|mut m| {
        m.retain(|_, (_, since)| since.elapsed() < FAIL_WINDOW);
        m.get(&key)
            .filter(|(n, _)| *n >= MAX_FAILURES)
            .map(|(_, since)| FAIL_WINDOW.saturating_sub(since.elapsed()).as_secs() + 1)
    });
    if let Some(wait) = limited {
        return Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failures",
            format!("登录失败次数过多，请 {wait} 秒后再试"),
            format!("too many failed logins; try again in {wait} s"),
        ));
    }
    let db = web.pool.get().await.map_err(db_error)?;
    let row = db
        .query_opt("SELECT hash, role FROM users WHERE name = $1", &[&l.user])
        .await
        .map_err(db_error)?;
    let stored: Option<(String, String)> = row.map(|r| (r.get(0), r.get(1)));
    // The same work for an unknown name as for a wrong password.
    let hash_to_check = stored.as_ref().map_or_else(
        || "$argon2id$v=19$m=12288,t=3,p=1$c2FsdHNhbHRzYWx0$2s1XvOxGoeKSo0JeLmAsL8bX6m2IMyYVZ3n+R7Jb1gc".to_owned(),
        |(h, _)| h.clone(),
    );
    let password = l.password.clone();
    let ok = tokio::task::spawn_blocking(move || verify(&hash_to_check, &password))
        .await
        .unwrap_or(false);
    let Some((_, role)) = stored.filter(|_| ok) else {
        if let Ok(mut m) = web.failures.lock() {
            let e = m.entry(key).or_insert((0, std::time::Instant::now()));
            e.0 += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "wrong",
            "用户名或密码错误".into(),
            "wrong user or password".into(),
        ));
    };
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let csrf = uuid::Uuid::new_v4().simple().to_string();
    let secs = i64::try_from(SESSION.as_secs()).unwrap_or(43_200);
    db.execute(
        "INSERT INTO sessions (token_hash, name, csrf, expires_at) VALUES ($1, $2, $3, now() + make_interval(secs => $4::bigint))",
        &[&sha256_hex(&token), &l.user, &csrf, &secs],
    )
    .await
    .map_err(db_error)?;
    let _ = db
        .execute("DELETE FROM sessions WHERE expires_at < now()", &[])
        .await;
    let mut r =
        Json(serde_json::json!({ "user": l.user, "role": role, "csrf": csrf })).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={secs}"
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

async fn session(State(web): State<Web>, headers: HeaderMap) -> Result<Response, ApiError> {
    let a = web.account(&headers).await?;
    Ok(Json(serde_json::json!({ "user": a.name, "role": a.role, "csrf": a.csrf })).into_response())
}

async fn logout(State(web): State<Web>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(token) = cookie_token(&headers) {
        let db = web.pool.get().await.map_err(db_error)?;
        db.execute(
            "DELETE FROM sessions WHERE token_hash = $1",
            &[&sha256_hex(&token)],
        )
        .await
        .map_err(db_error)?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v1/stations`: every station at a glance.
async fn stations(State(web): State<Web>, headers: HeaderMap) -> Result<Response, ApiError> {
    web.account(&headers).await?;
    let db = web.pool.get().await.map_err(db_error)?;
    let rows = db
        .query(
            "SELECT s.county, s.station, s.name, s.mine, s.registered, s.presence,
                    to_char(s.presence_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    to_char(s.last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    h.underground, h.overdue,
                    (SELECT count(*) FROM alarm_current a WHERE a.county = s.county AND a.station = s.station AND a.event <> 'cleared'),
                    (SELECT count(*) FROM alarm_current a WHERE a.county = s.county AND a.station = s.station AND a.event <> 'cleared' AND a.level = 'power_cut'),
                    (SELECT count(*) FROM hazard_current z WHERE z.county = s.county AND z.station = s.station AND z.status NOT IN ('closed', 'rejected')),
                    (SELECT count(*) FROM hazard_current z WHERE z.county = s.county AND z.station = s.station AND z.status NOT IN ('closed', 'rejected') AND z.grade = 'major'),
                    (SELECT count(*) FROM hazard_current z WHERE z.county = s.county AND z.station = s.station AND z.status NOT IN ('closed', 'rejected') AND (z.record->>'overdue')::boolean),
                    s.backlog,
                    to_char(s.backlog_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
             FROM stations s LEFT JOIN headcount_current h USING (county, station)
             ORDER BY 12 DESC, 11 DESC, s.county, s.station",
            &[],
        )
        .await
        .map_err(db_error)?;
    let list: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "county": r.get::<_, String>(0), "station": r.get::<_, String>(1),
                "name": r.get::<_, Option<String>>(2), "mine": r.get::<_, Option<String>>(3),
                "registered": r.get::<_, bool>(4), "presence": r.get::<_, Option<String>>(5),
                "presence_at": r.get::<_, Option<String>>(6), "last_seen": r.get::<_, Option<String>>(7),
                "underground": r.get::<_, Option<i64>>(8), "overdue": r.get::<_, Option<i64>>(9),
                "alarms": r.get::<_, i64>(10), "power_cuts": r.get::<_, i64>(11),
                "hazards_open": r.get::<_, i64>(12), "hazards_major": r.get::<_, i64>(13),
                "hazards_overdue": r.get::<_, i64>(14),
                "backlog": r.get::<_, Option<serde_json::Value>>(15),
                "backlog_at": r.get::<_, Option<String>>(16),
            })
        })
        .collect();
    Ok(Json(list).into_response())
}

/// Query of a station's page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StationQuery {
    /// Hours of trends (default 24, at most a week).
    hours: Option<u32>,
}

/// `GET /api/v1/stations/{county}/{station}[?hours=24]`: one station's alarms,
/// hazards, people and the commands sent to it.
async fn station(
    State(web): State<Web>,
    headers: HeaderMap,
    Path((county, id)): Path<(String, String)>,
    q: Result<axum::extract::Query<StationQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let axum::extract::Query(q) = q.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "查询参数错误（hours 为 1–168）".into(),
            format!("hours is a whole number of hours, 1 to 168: {e}"),
        )
    })?;
    web.account(&headers).await?;
    let db = web.pool.get().await.map_err(db_error)?;
    let json_rows = |rows: Vec<tokio_postgres::Row>| -> Vec<serde_json::Value> {
        rows.iter()
            .map(|r| r.get::<_, serde_json::Value>(0))
            .collect()
    };
    let alarms = db
        .query(
            "SELECT to_jsonb(a) FROM alarm_current a WHERE county = $1 AND station = $2 ORDER BY at DESC LIMIT 200",
            &[&county, &id],
        )
        .await
        .map_err(db_error)?;
    let hazards = db
        .query(
            "SELECT record FROM hazard_current WHERE county = $1 AND station = $2 ORDER BY record->>'reported_at' DESC LIMIT 200",
            &[&county, &id],
        )
        .await
        .map_err(db_error)?;
    let headcount = db
        .query_opt(
            "SELECT record FROM headcount_current WHERE county = $1 AND station = $2",
            &[&county, &id],
        )
        .await
        .map_err(db_error)?
        .map(|r| r.get::<_, serde_json::Value>(0));
    let checkins = db
        .query(
            "SELECT body FROM messages WHERE county = $1 AND station = $2 AND kind = 'checkin' ORDER BY created_at DESC LIMIT 50",
            &[&county, &id],
        )
        .await
        .map_err(db_error)?;
    // Each channel's minutes of the last `hours`, from the summaries:
    // [minute (Unix ms), min, max, mean, faults], oldest first; a minute
    // without a good reading has null min/max/mean.
    let hours = q.hours.unwrap_or(24).clamp(1, 24 * 7);
    let trends = db
        .query(
            "SELECT jsonb_build_object('channel', channel, 'minutes', jsonb_agg(jsonb_build_array(
                        (extract(epoch FROM minute) * 1000)::bigint, min, max, mean, faults) ORDER BY minute))
             FROM channel_minutes
             WHERE county = $1 AND station = $2 AND minute > now() - make_interval(hours => $3::int)
             GROUP BY channel ORDER BY channel",
            &[&county, &id, &(hours as i32)],
        )
        .await
        .map_err(db_error)?;
    // The steps the lifecycle allows from each hazard's status, as the
    // station's console offers them.
    let hazards: Vec<serde_json::Value> = json_rows(hazards)
        .into_iter()
        .map(|mut h| {
            let next: Vec<&str> = h["status"]
                .as_str()
                .and_then(pithead_core::hazard::Status::parse)
                .map(|s| {
                    s.next()
                        .into_iter()
                        .map(pithead_core::hazard::Status::as_str)
                        .collect()
                })
                .unwrap_or_default();
            h["next"] = serde_json::json!(next);
            h
        })
        .collect();
    Ok(Json(serde_json::json!({
        "county": county, "station": id,
        "alarms": json_rows(alarms), "hazards": hazards,
        "headcount": headcount, "checkins": json_rows(checkins),
        "trends": json_rows(trends), "trend_hours": hours,
    }))
    .into_response())
}

/// `GET /api/v1/notices`: the notices sent, newest first, with each
/// station's answer and who read it there at check-in (`read`: the
/// stations' `notice_read` records).
async fn notices(State(web): State<Web>, headers: HeaderMap) -> Result<Response, ApiError> {
    web.account(&headers).await?;
    let db = web.pool.get().await.map_err(db_error)?;
    let rows = db
        .query(
            "SELECT jsonb_build_object(
                 'msg_id', c.msg_id, 'county', c.county, 'station', c.station,
                 'title', c.payload->>'title', 'body', c.payload->>'body', 'priority', c.payload->>'priority',
                 'sent_by', c.sent_by, 'sent_at', c.sent_at,
                 'outcome', a.body->>'outcome', 'reason', a.body->>'reason', 'applied_at', a.body->>'at',
                 'read', coalesce((SELECT jsonb_agg(DISTINCT jsonb_build_object('badge', r.body->>'badge',
                                       'name', r.body->>'name', 'team', r.body->>'team', 'at', r.body->>'at'))
                                   FROM messages r WHERE r.kind = 'notice_read' AND r.body->>'notice' = c.msg_id
                                     AND r.county = c.county AND r.station = c.station), '[]'::jsonb))
             FROM commands c
             LEFT JOIN LATERAL (SELECT body FROM messages m WHERE m.kind = 'cmd_ack'
                                AND m.body->>'cmd_msg_id' = c.msg_id AND m.county = c.county AND m.station = c.station
                                LIMIT 1) a ON true
             WHERE c.cmd = 'notice' ORDER BY c.sent_at DESC, c.station LIMIT 500",
            &[],
        )
        .await
        .map_err(db_error)?;
    Ok(Json(
        rows.iter()
            .map(|r| r.get::<_, serde_json::Value>(0))
            .collect::<Vec<_>>(),
    )
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNotice {
    /// `county/station` each, or `*` for every registered station.
    stations: Vec<String>,
    title: String,
    body: String,
    #[serde(default)]
    urgent: bool,
    /// Hours it stays valid (1 to 720).
    valid_hours: u32,
}

/// `POST /api/v1/notices` (operators): a notice to one station, several,
/// or all; recorded, then published to each (`cmd/notice`).
async fn send_notice(
    State(web): State<Web>,
    headers: HeaderMap,
    body: Result<Json<NewNotice>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let who = web.operator(&headers).await?;
    let n = match body {
        Ok(Json(n)) => n,
        Err(e) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "请求格式错误".into(),
                format!(
                    "expected {{\"stations\", \"title\", \"body\", \"urgent\", \"valid_hours\"}}: {e}"
                ),
            ));
        }
    };
    let title_n = n.title.trim().chars().count();
    let body_n = n.body.trim().chars().count();
    if !(1..=100).contains(&title_n)
        || !(1..=2000).contains(&body_n)
        || !(1..=720).contains(&n.valid_hours)
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "bad_notice",
            "标题 1–100 字，正文 1–2000 字，有效期 1–720 小时".into(),
            "title 1 to 100 characters, text 1 to 2000, valid 1 to 720 hours".into(),
        ));
    }
    let db = web.pool.get().await.map_err(db_error)?;
    let targets: Vec<(String, String)> = if n.stations.iter().any(|s| s == "*") {
        db.query(
            "SELECT county, station FROM stations WHERE registered ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(db_error)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    } else {
        let mut t = Vec::new();
        for s in &n.stations {
            let Some((c, id)) = s.split_once('/') else {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    "bad_station",
                    format!("站点 {s:?} 应写作 县/站"),
                    format!("station {s:?} is not county/station"),
                ));
            };
            let known = db
                .query_opt(
                    "SELECT 1 FROM stations WHERE county = $1 AND station = $2",
                    &[&c, &id],
                )
                .await
                .map_err(db_error)?;
            if known.is_none() {
                return Err(ApiError(
                    StatusCode::NOT_FOUND,
                    "no_such_station",
                    format!("没有站点 {s}"),
                    format!("no station {s}"),
                ));
            }
            t.push((c.to_owned(), id.to_owned()));
        }
        t
    };
    if targets.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "no_station",
            "请选择至少一个站点".into(),
            "choose at least one station".into(),
        ));
    }
    let now = std::time::SystemTime::now();
    let until =
        pithead_core::time::rfc3339(now + Duration::from_secs(u64::from(n.valid_hours) * 3600));
    let mut sent = Vec::new();
    for (county, station) in targets {
        let notice = protocol::Notice {
            schema: protocol::SCHEMA.to_owned(),
            msg_id: format!("county-notice-{}", uuid::Uuid::now_v7()),
            title: n.title.trim().to_owned(),
            body: n.body.trim().to_owned(),
            priority: if n.urgent { "urgent" } else { "normal" }.to_owned(),
            valid_from: Some(pithead_core::time::rfc3339(now)),
            valid_until: until.clone(),
        };
        web.send(
            &db,
            &county,
            &station,
            "notice",
            &notice.msg_id,
            &notice,
            &who.name,
        )
        .await?;
        sent.push(
            serde_json::json!({ "county": county, "station": station, "msg_id": notice.msg_id }),
        );
    }
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "sent": sent })),
    )
        .into_response())
}

/// `GET /api/v1/stream`: `changed` whenever any instance wrote (at most
/// four a second), and a `beat` every second, so a page knows within
/// seconds that it lost the dashboard.
async fn stream(State(web): State<Web>, headers: HeaderMap) -> Result<Response, ApiError> {
    web.account(&headers).await?;
    let rx = web.changed.subscribe();
    // A change is told at once; changes that follow within
    // CHANGED_EVERY of the last one told are told together when it has
    // passed, so a busy county refreshes a page at most four times a
    // second and an alarm after a quiet spell shows without waiting.
    let last = tokio::time::Instant::now() - CHANGED_EVERY;
    let events = futures_util::stream::unfold((rx, last), |(mut rx, mut last)| async move {
        let ev = tokio::select! {
            r = rx.recv() => match r {
                Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    tokio::time::sleep_until(last + CHANGED_EVERY).await;
                    while rx.try_recv().is_ok() {}
                    last = tokio::time::Instant::now();
                    Event::default().event("changed").data("1")
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            () = tokio::time::sleep(Duration::from_secs(1)) => Event::default().event("beat").data("1"),
        };
        Some((Ok::<_, Infallible>(ev), (rx, last)))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Follows `NOTIFY pithead_changed` on a connection of its own, and tells
/// every stream.
async fn listen_for_changes(
    pg: tokio_postgres::Config,
    changed: broadcast::Sender<()>,
    shutdown: CancellationToken,
) {
    loop {
        match pg.connect(tokio_postgres::NoTls).await {
            Ok((client, mut conn)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                            Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => {
                                let _ = tx.send(());
                            }
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => return,
                        }
                    }
                });
                if client.batch_execute("LISTEN pithead_changed").await.is_ok() {
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            m = rx.recv() => match m {
                                Some(()) => { let _ = changed.send(()); }
                                None => break,
                            },
                        }
                    }
                }
                driver.abort();
            }
            Err(e) => tracing::warn!(error = %e, "dashboard cannot follow changes"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

#[derive(Debug, Deserialize)]
struct LightQuery {
    /// `YYYY-Qn`; the current quarter if absent.
    quarter: Option<String>,
}

/// The quarter `now` is in, as `YYYY-Qn`.
fn current_quarter() -> String {
    let now = pithead_core::time::rfc3339(std::time::SystemTime::now());
    let year = now.get(..4).unwrap_or("2026");
    let month: u32 = now.get(5..7).and_then(|m| m.parse().ok()).unwrap_or(1);
    format!("{year}-Q{}", (month - 1) / 3 + 1)
}

/// `GET /api/v1/lights[?quarter=2026-Q4]`: every registered station's
/// light for the quarter, computed from its data, with the reasons.
async fn lights(
    State(web): State<Web>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<LightQuery>,
) -> Result<Response, ApiError> {
    web.account(&headers).await?;
    let quarter = q.quarter.unwrap_or_else(current_quarter);
    let Some((start, end)) = crate::light::quarter(&quarter) else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "bad_quarter",
            format!("季度 {quarter:?} 应写作 2026-Q4"),
            format!("quarter {quarter:?} is not like 2026-Q4"),
        ));
    };
    let db = web.pool.get().await.map_err(db_error)?;
    let facts = crate::light::facts(&db, &web.rule, &start, &end)
        .await
        .map_err(db_error)?;
    // The union's latest assessment of each station's quarter.
    let overrides: std::collections::HashMap<(String, String), serde_json::Value> = db
        .query(
            "SELECT DISTINCT ON (county, station) county, station,
                    jsonb_build_object('light', light, 'note', note, 'by', by_name,
                        'at', to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))
             FROM light_overrides WHERE quarter = $1 ORDER BY county, station, at DESC, id DESC",
            &[&quarter],
        )
        .await
        .map_err(db_error)?
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    let list: Vec<serde_json::Value> = facts
        .into_iter()
        .map(|(county, station, f)| {
            let l = crate::light::judge(&web.rule, &f);
            let union = overrides.get(&(county.clone(), station.clone())).cloned();
            serde_json::json!({
                "county": county, "station": station, "quarter": quarter,
                "light": l.light, "computed_from": "station data",
                "reasons": l.reasons.iter().map(|(zh, en)| serde_json::json!({ "zh": zh, "en": en })).collect::<Vec<_>>(),
                "facts": f,
                "union": union,
            })
        })
        .collect();
    Ok(Json(list).into_response())
}

/// Body of `POST /api/v1/lights/{county}/{station}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LightOverride {
    quarter: String,
    light: String,
    note: String,
}

/// `POST /api/v1/lights/{county}/{station}` (operators): the union's own
/// assessment of a station's quarter, with a note; kept beside the
/// computed light, never in its place.
async fn override_light(
    State(web): State<Web>,
    headers: HeaderMap,
    Path((county, id)): Path<(String, String)>,
    body: Result<Json<LightOverride>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let who = web.operator(&headers).await?;
    let o = body.map(|Json(o)| o).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "请求格式错误".into(),
            format!("expected {{\"quarter\", \"light\", \"note\"}}: {e}"),
        )
    })?;
    if crate::light::quarter(&o.quarter).is_none() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "bad_quarter",
            format!("季度 {:?} 应写作 2026-Q4", o.quarter),
            format!("quarter {:?} is not like 2026-Q4", o.quarter),
        ));
    }
    if !["green", "yellow", "red"].contains(&o.light.as_str()) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "bad_light",
            "评定只能是 green、yellow 或 red".into(),
            format!("light {:?} is not green, yellow or red", o.light),
        ));
    }
    let note = o.note.trim();
    if !(1..=2000).contains(&note.chars().count()) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "bad_note",
            "评定必须写明理由（1–2000 字）".into(),
            "an assessment needs a note of 1 to 2000 characters".into(),
        ));
    }
    let db = web.pool.get().await.map_err(db_error)?;
    let registered: Option<bool> = db
        .query_opt(
            "SELECT registered FROM stations WHERE county = $1 AND station = $2",
            &[&county, &id],
        )
        .await
        .map_err(db_error)?
        .map(|r| r.get(0));
    if registered != Some(true) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "no_such_station",
            format!("没有登记的站点 {county}/{id}"),
            format!("no registered station {county}/{id}"),
        ));
    }
    db.execute(
        "INSERT INTO light_overrides (county, station, quarter, light, note, by_name) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&county, &id, &o.quarter, &o.light, &note, &who.name],
    )
    .await
    .map_err(db_error)?;
    tracing::info!(%county, station = %id, quarter = %o.quarter, light = %o.light, by = %who.name, "the union's assessment recorded");
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "county": county, "station": id, "quarter": o.quarter, "light": o.light, "note": note, "by": who.name })),
    )
        .into_response())
}

/// Body of `POST /api/v1/stations/{county}/{station}/hazards/{ticket}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HazardAction {
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    status: Option<pithead_core::hazard::Status>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    deadline: Option<String>,
    #[serde(default)]
    measures: Option<String>,
    #[serde(default)]
    funds: Option<String>,
    #[serde(default)]
    plan: Option<String>,
    #[serde(default)]
    major_category: Option<pithead_core::hazard::MajorCategory>,
}

/// `POST /api/v1/stations/{county}/{station}/hazards/{ticket}`
/// (operators): a comment, a step along the lifecycle, or both, checked by
/// the station's own rules, recorded, and sent as `cmd/hazard`.
async fn hazard_update(
    State(web): State<Web>,
    headers: HeaderMap,
    Path((county, id, ticket)): Path<(String, String, String)>,
    body: Result<Json<HazardAction>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let who = web.operator(&headers).await?;
    let a = match body {
        Ok(Json(a)) => a,
        Err(e) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "请求格式错误".into(),
                format!(
                    "expected {{\"comment\", \"status\", \"owner\", \"deadline\", \"measures\"}}: {e}"
                ),
            ));
        }
    };
    let db = web.pool.get().await.map_err(db_error)?;
    let current: Option<(String, Option<String>, Option<String>)> = db
        .query_opt(
            "SELECT status, record->>'grade', record->>'major_category' FROM hazard_current
             WHERE county = $1 AND station = $2 AND ticket = $3",
            &[&county, &id, &ticket],
        )
        .await
        .map_err(db_error)?
        .map(|r| (r.get(0), r.get(1), r.get(2)));
    let grade = current
        .as_ref()
        .and_then(|c| c.1.clone())
        .and_then(|g| serde_json::from_value(g.into()).ok())
        .unwrap_or(pithead_core::hazard::Grade::General);
    let known = current
        .as_ref()
        .and_then(|c| c.2.clone())
        .and_then(|g| serde_json::from_value(g.into()).ok());
    let Some(from) = current
        .as_ref()
        .and_then(|c| pithead_core::hazard::Status::parse(&c.0))
    else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "no_such_hazard",
            format!("没有隐患 {ticket}"),
            format!("no hazard {ticket} at {county}/{id}"),
        ));
    };
    let comment = a
        .comment
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    let mut update = protocol::HazardUpdate {
        schema: protocol::SCHEMA.to_owned(),
        msg_id: format!("county-hazard-{}", uuid::Uuid::now_v7()),
        ticket: ticket.clone(),
        comment: comment.clone(),
        status: None,
        owner: None,
        deadline: None,
        measures: None,
        funds: None,
        plan: None,
        major_category: None,
    };
    if let Some(status) = a.status {
        // The station's own rules, so the county cannot ask what it would
        // refuse.
        let step = pithead_core::hazard::Step {
            status,
            by: protocol::COUNTY.to_owned(),
            note: comment.clone(),
            owner: a.owner,
            deadline: a.deadline,
            measures: a.measures,
            funds: a.funds,
            plan: a.plan,
            major_category: a.major_category,
        }
        .check(from)
        .and_then(|s| s.five_in_place(grade, known).map(|()| s))
        .map_err(|e| ApiError(StatusCode::CONFLICT, "bad_step", e.zh, e.en))?;
        update.status = Some(step.status);
        update.owner = step.owner;
        update.deadline = step.deadline;
        update.measures = step.measures;
        update.funds = step.funds;
        update.plan = step.plan;
        update.major_category = step.major_category;
    } else if comment.as_ref().is_none_or(|c| c.chars().count() > 2000) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "nothing_to_send",
            "请填写意见（不超过2000字）或选择下一步".into(),
            "give a comment (up to 2000 characters) or a next step".into(),
        ));
    }
    web.send(
        &db,
        &county,
        &id,
        "hazard",
        &update.msg_id,
        &update,
        &who.name,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "msg_id": update.msg_id })),
    )
        .into_response())
}
