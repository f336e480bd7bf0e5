//! The web server: kiosk, console and API over the same services. It keeps
//! no state of its own beyond sessions.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Serialize;

mod api;
pub mod guard;
mod kiosk;
pub mod limit;
pub mod reader;
pub mod serve;
#[cfg(test)]
mod tests;

use crate::config::Config;
use crate::store::Store;

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The configuration the daemon runs with.
    pub config: Arc<Config>,
    /// The store.
    pub store: Store,
    /// When the daemon started (monotonic).
    pub started: Instant,
    /// Latest readings and acquisition metrics.
    pub acquisition: crate::acquisition::Handle,
    /// Alarms and outputs.
    pub alarms: crate::alarm::Handle,
    /// Token for supervisor actions over the API, if configured.
    pub api_token: Option<Arc<str>>,
    /// Console sessions and the failed-login limit.
    pub sessions: Arc<crate::auth::Sessions>,
    /// Request limits for the public endpoints.
    pub limiter: Arc<limit::Limiter>,
    /// The county uplink's figures.
    pub uplink: Arc<crate::sync::SyncStats>,
    /// Who is overdue, on the monotonic clock: check-ins are anchored here
    /// as they are recorded.
    pub overdue: Arc<std::sync::Mutex<crate::roster::OverdueClock>>,
    /// Poked after every check-in and check-out: the overdue watch looks
    /// again at once (overcrowding is judged then, not 15 s later).
    pub roster_changed: Arc<tokio::sync::Notify>,
    /// Assigned hazards past their deadline (the deadline watch keeps it):
    /// the console's banner.
    pub hazards_overdue: Arc<std::sync::atomic::AtomicUsize>,
    /// The badge reader on the box, and the kiosk's direction for it.
    pub reader: Arc<reader::Reader>,
    /// The station's own light (预评), judged every minute.
    pub light: crate::light::Current,
    /// Connection counts of the HTTP server.
    pub http: Arc<serve::ConnStats>,
    /// The kiosks besides the box's own screen (`[kiosk] keys_file`).
    pub kiosk_keys: Arc<crate::kiosk_keys::KioskKeys>,
    /// The host names a request may name (`guard::allowed_hosts`).
    pub hosts: Arc<Vec<String>>,
    /// The configured roster has been imported since the start: until
    /// then check-ins are refused (503, not recorded) and `/healthz` says
    /// `starting`.
    pub roster_ready: Arc<std::sync::atomic::AtomicBool>,
    /// The station's time zone ([`crate::config::Station::zone`]), found
    /// once at the start.
    pub zone: Option<String>,
}

/// The whole HTTP interface.
pub fn router(state: AppState) -> Router {
    // What anyone at the shaft head (or on its Wi-Fi) may send, limited per
    // client address.
    let public = Router::new()
        .route("/api/v1/checkins", post(api::checkin))
        .route("/api/v1/notices/{id}/read", post(api::notice_read))
        .route(
            "/api/v1/hazards",
            get(api::hazard_list)
                .post(api::hazard_report)
                .layer(DefaultBodyLimit::max(crate::photos::MAX_BYTES + 256 * 1024)),
        )
        .route("/api/v1/hazards/{ticket}", get(api::hazard_lookup))
        .route("/api/v1/board", get(api::hazard_board))
        .route("/api/v1/reader", get(kiosk::reader_state))
        .route("/api/v1/kiosk/direction", post(kiosk::reader_direction))
        .route("/api/v1/hazards/{ticket}/photo", get(api::hazard_photo))
        .route("/metrics", get(api::metrics))
        .route("/api/v1/outputs", get(api::outputs))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::same_origin,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit::limit,
        ));
    Router::new()
        .merge(public)
        .route("/", get(kiosk::page))
        .route("/assets/kiosk.js", get(kiosk::script))
        .route("/assets/common.js", get(kiosk::common_script))
        .route("/assets/kiosk.css", get(kiosk::style))
        .route("/console", get(kiosk::console))
        .route("/assets/console.js", get(kiosk::console_script))
        .route("/api/v1/stream", get(kiosk::stream))
        .route(
            "/api/v1/session",
            get(api::whoami).post(api::login).delete(api::logout),
        )
        .route("/healthz", get(healthz))
        .route("/api/v1/channels", get(api::channels))
        .route("/api/v1/channels/{id}/trend", get(api::trend))
        .route(
            "/api/v1/channels/{id}/calibration",
            post(api::calibration_start).delete(api::calibration_end),
        )
        .route("/api/v1/calibrations", get(api::calibrations))
        .route("/api/v1/devices", get(api::devices))
        .route("/api/v1/alarms", get(api::alarms))
        .route("/api/v1/alarms/{id}/ack", post(api::ack))
        .route("/api/v1/alarms/ack-all", post(api::ack_all))
        .route("/api/v1/notices", get(api::notices))
        .route("/api/v1/uplink", get(api::uplink))
        .route("/api/v1/underground", get(api::underground))
        .route(
            "/api/v1/underground/{badge}/checkout",
            post(api::checkout_by_hand),
        )
        .route("/api/v1/roster", get(api::roster).post(api::roster_upload))
        .route("/api/v1/hazards/{ticket}/steps", post(api::hazard_step))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::host,
        ))
        .with_state(state)
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    station: String,
    uptime_s: u64,
    database: String,
    /// `ok`, or `full`: the disk is full and new records are refused.
    storage: &'static str,
    /// `ok`, or `loading`: the configured roster is not imported yet, and
    /// check-ins wait for it.
    roster: &'static str,
}

async fn healthz(axum::extract::State(s): axum::extract::State<AppState>) -> Response {
    // The store answers a trivial read: the database is open and readable.
    let db = s
        .store
        .read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
        .await;
    let full = s.store.disk_full();
    let roster = s.roster_ready.load(std::sync::atomic::Ordering::Acquire);
    let healthy = db.is_ok() && !full && roster;
    let body = Health {
        status: if healthy { "ok" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        station: s.config.station.id.clone(),
        uptime_s: s.started.elapsed().as_secs(),
        database: match &db {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.to_string(),
        },
        storage: if full { "full" } else { "ok" },
        roster: if roster { "ok" } else { "loading" },
    };
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// An error answer: a status, and a reason in Chinese first, English
/// second, never internals. Handlers return `Result<_, ApiError>`.
#[derive(Debug, Serialize)]
pub struct ApiError {
    /// The HTTP status (not in the body).
    #[serde(skip)]
    pub status: StatusCode,
    /// Machine-readable code.
    pub error: &'static str,
    /// Reason in Simplified Chinese.
    pub message_zh: String,
    /// Reason in English.
    pub message_en: String,
}

impl ApiError {
    /// An error answer with a status.
    pub fn new(
        status: StatusCode,
        error: &'static str,
        zh: impl Into<String>,
        en: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            error,
            message_zh: zh.into(),
            message_en: en.into(),
        }
    }

    /// The same, as a response (for middleware, which answers responses).
    pub fn respond(
        status: StatusCode,
        error: &'static str,
        zh: impl Into<String>,
        en: impl Into<String>,
    ) -> Response {
        ApiError::new(status, error, zh, en).into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}

async fn not_found() -> Response {
    ApiError::respond(
        StatusCode::NOT_FOUND,
        "not_found",
        "没有这个页面",
        "no such page",
    )
}
