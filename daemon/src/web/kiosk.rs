//! The kiosk page at `/` and its live air status (`/api/v1/stream`).
//!
//! All assets are built into the binary: no fonts, CDNs or frameworks are
//! fetched, so the kiosk works with the uplink down. The page puts every
//! server text in with `textContent`, and the Content-Security-Policy
//! forbids inline scripts and other origins.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::Semaphore;

use super::{ApiError, AppState};
use crate::alarm::engine::Beacon;
use crate::config::Language;

const HTML: &str = include_str!("assets/kiosk.html");
const JS: &str = include_str!("assets/kiosk.js");
const CSS: &str = include_str!("assets/kiosk.css");
const CONSOLE_HTML: &str = include_str!("assets/console.html");
const CONSOLE_JS: &str = include_str!("assets/console.js");
const COMMON_JS: &str = include_str!("assets/common.js");

/// Most kiosks and consoles following the live stream at once.
pub const MAX_STREAMS: usize = 64;
/// Of those, kept for the box's own screen (loopback): a flood from the LAN
/// never takes its place.
pub const LOCAL_STREAMS: usize = 8;
/// Most streams one address of the LAN may hold.
pub const STREAMS_PER_ADDRESS: usize = 4;

fn with_headers(content_type: &'static str, body: String) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'"),
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

/// `GET /`: the kiosk, in the configured language.
pub async fn page(State(s): State<AppState>) -> Response {
    let lang = match s.config.kiosk.language {
        Language::ZhCn => "zh-CN",
        Language::En => "en",
    };
    let html = HTML
        .replace("@LANG@", lang)
        .replace("@SCREEN_MM@", &s.config.kiosk.screen_width_mm.to_string())
        .replace("@READER@", if s.reader.configured { "1" } else { "" });
    with_headers("text/html; charset=utf-8", html)
}

/// `GET /assets/kiosk.js`.
pub async fn script() -> Response {
    with_headers("text/javascript; charset=utf-8", JS.to_owned())
}

/// `GET /console`: the supervisor console (it logs in over the API).
pub async fn console(State(s): State<AppState>) -> Response {
    let lang = match s.config.kiosk.language {
        Language::ZhCn => "zh-CN",
        Language::En => "en",
    };
    with_headers(
        "text/html; charset=utf-8",
        CONSOLE_HTML.replace("@LANG@", lang),
    )
}

/// `GET /assets/console.js`.
pub async fn console_script() -> Response {
    with_headers("text/javascript; charset=utf-8", CONSOLE_JS.to_owned())
}

/// `GET /assets/common.js`: what the kiosk and the console share.
pub async fn common_script() -> Response {
    with_headers("text/javascript; charset=utf-8", COMMON_JS.to_owned())
}

/// `GET /assets/kiosk.css`.
pub async fn style() -> Response {
    with_headers("text/css; charset=utf-8", CSS.to_owned())
}

/// One channel on the kiosk: the API's view, its worst alarm level and the
/// state the tile says in words.
#[derive(Debug, Serialize)]
struct Tile {
    #[serde(flatten)]
    view: super::api::ChannelView,
    /// `ok`, `fault`, `warning`, `alarm` or `power_cut`: the worst alarm on
    /// the channel (`fault` for a reading it does not have).
    level: &'static str,
    /// What the tile says in words ([`status`]).
    status: &'static str,
}

/// The tile's word: the worst alarm if there is one, else what the reading
/// is. One of `ok`, `warning`, `alarm`, `power_cut`, `comm_fault`, `fault`,
/// `warming_up`, `calibrating` (正常 预警 报警 断电 断线 故障 预热 标校), each
/// with its own shape on the page.
pub(super) fn status(level: &str, reading: &str) -> &'static str {
    match level {
        "power_cut" => "power_cut",
        "alarm" => "alarm",
        "warning" => "warning",
        _ => match reading {
            "ok" => "ok",
            "comm_fault" | "stale" => "comm_fault",
            "warming_up" => "warming_up",
            "calibrating" => "calibrating",
            _ => "fault",
        },
    }
}

/// The banner across the kiosk while any channel alarm is active: the
/// worst one, and what to do.
#[derive(Debug, Serialize)]
struct Banner {
    /// The channel (its tile has the name, place and value).
    channel: String,
    /// `fault`, `warning`, `alarm` or `power_cut`.
    level: &'static str,
    /// The site's instruction for that level (`[kiosk.advice]`).
    advice: crate::config::Said,
    /// How many other channels have an alarm.
    more: usize,
}

/// What the kiosk and the console follow live.
#[derive(Debug, Serialize)]
struct KioskState {
    station: String,
    /// IANA time zone the pages show times in (`null`: the browser's).
    timezone: Option<String>,
    beacon: Beacon,
    /// Siren, beacon and relay as driven now.
    outputs: crate::alarm::engine::Outputs,
    /// The power relay's feedback (馈电), when one is wired.
    feedback: Option<crate::alarm::FeedbackView>,
    /// Where more are underground than allowed (超员), from the alarms.
    crowded: Vec<crate::roster::Crowded>,
    /// Assigned hazards past their deadline (the console's banner).
    hazards_overdue: usize,
    /// The station's own light (预评), `None` until judged.
    light: Option<crate::light::LightView>,
    /// Alarms nobody has acknowledged yet (the console sounds while any).
    unacknowledged: usize,
    banner: Option<Banner>,
    channels: Vec<Tile>,
    /// The disk is full: check-ins and reports are refused until space is
    /// freed (alarms are not affected).
    storage_full: bool,
}

fn severity(level: &str) -> u8 {
    match level {
        "power_cut" => 4,
        "alarm" => 3,
        "warning" => 2,
        "fault" => 1,
        _ => 0,
    }
}

fn state_of(s: &AppState) -> KioskState {
    let alarms = s.alarms.state.borrow().clone();
    let views = super::api::channel_views(
        &s.acquisition.snapshot.borrow(),
        &s.acquisition.calibrations,
    );
    // The worst channel alarm: by level, then unacknowledged first, then
    // the latest.
    let mut worst: Option<&crate::alarm::AlarmView> = None;
    let mut alarmed = std::collections::BTreeSet::new();
    for a in &alarms.alarms {
        if severity(a.level) == 0 || !views.iter().any(|v| v.id == a.channel) {
            continue;
        }
        alarmed.insert(a.channel.as_str());
        let key = |a: &crate::alarm::AlarmView| {
            (
                severity(a.level),
                a.acknowledged_by.is_none(),
                a.raised_at.clone(),
            )
        };
        if worst.is_none_or(|w| key(a) > key(w)) {
            worst = Some(a);
        }
    }
    let banner = worst.and_then(|a| {
        Some(Banner {
            channel: a.channel.clone(),
            level: a.level,
            // A cut because the sensor is lost is not a gas reading.
            advice: if a.level == "power_cut" && a.reading_state != "ok" {
                s.config.kiosk.advice.power_cut_fault.clone()
            } else {
                s.config.kiosk.advice.for_level(a.level)?.clone()
            },
            more: alarmed.len() - 1,
        })
    });
    let channels = views
        .into_iter()
        .map(|view| {
            let mut level = if view.state == "ok" { "ok" } else { "fault" };
            for a in alarms.alarms.iter().filter(|a| a.channel == view.id) {
                if severity(a.level) > severity(level) {
                    level = a.level;
                }
            }
            let status = status(level, view.state);
            Tile {
                view,
                level,
                status,
            }
        })
        .collect();
    KioskState {
        station: s.config.station.name.clone(),
        timezone: s.zone.clone(),
        beacon: alarms.outputs.beacon,
        outputs: alarms.outputs,
        feedback: alarms.feedback,
        hazards_overdue: s.hazards_overdue.load(std::sync::atomic::Ordering::Relaxed),
        light: s.light.lock().ok().and_then(|l| l.clone()),
        crowded: alarms
            .alarms
            .iter()
            .filter(|a| a.level == "overcrowded")
            .map(|a| {
                crate::roster::Crowded::new(
                    &s.config.roster,
                    a.channel.clone(),
                    a.value.unwrap_or(0.0),
                )
            })
            .collect(),
        unacknowledged: alarms
            .alarms
            .iter()
            .filter(|a| a.acknowledged_by.is_none())
            .count(),
        banner,
        channels,
        storage_full: s.store.disk_full(),
    }
}

/// Stream slots: some only for loopback, the rest shared, and a count per
/// LAN address.
#[derive(Debug)]
struct Streams {
    local: Arc<Semaphore>,
    shared: Arc<Semaphore>,
    per_address: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

fn streams() -> &'static Arc<Streams> {
    static S: OnceLock<Arc<Streams>> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Streams {
            local: Arc::new(Semaphore::new(LOCAL_STREAMS)),
            shared: Arc::new(Semaphore::new(MAX_STREAMS - LOCAL_STREAMS)),
            per_address: std::sync::Mutex::default(),
        })
    })
}

/// A stream's slot, given back when the stream ends.
#[derive(Debug)]
struct StreamSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    address: Option<std::net::IpAddr>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Some(ip) = self.address
            && let Ok(mut m) = streams().per_address.lock()
            && let Some(n) = m.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }
}

fn take_stream(ip: std::net::IpAddr) -> Option<StreamSlot> {
    let st = streams();
    if ip.is_loopback() {
        let permit = Arc::clone(&st.local)
            .try_acquire_owned()
            .or_else(|_| Arc::clone(&st.shared).try_acquire_owned())
            .ok()?;
        return Some(StreamSlot {
            _permit: permit,
            address: None,
        });
    }
    let mut m = st.per_address.lock().ok()?;
    let n = m.entry(ip).or_insert(0);
    if *n >= STREAMS_PER_ADDRESS {
        return None;
    }
    let permit = Arc::clone(&st.shared).try_acquire_owned().ok()?;
    *n += 1;
    Some(StreamSlot {
        _permit: permit,
        address: Some(ip),
    })
}

/// How often the live stream says it is alive when nothing changed: a page
/// that has heard nothing for three of these shows no readings.
pub const BEAT: Duration = Duration::from_secs(1);

/// `GET /api/v1/stream`: server-sent events named `state`, each the whole
/// kiosk state, at most four a second and at least every 5 s; between
/// them a `beat` every [`BEAT`] (its data: the milliseconds since the
/// daemon started), so a page knows within seconds that it lost the daemon
/// (frozen, dead, or the network) and stops showing numbers.
pub async fn stream(
    State(s): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
) -> Response {
    let Some(permit) = take_stream(peer.ip()) else {
        return ApiError::respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            "连接的显示屏过多，请稍后再试",
            "too many live streams open; try again later",
        );
    };
    let snapshot = s.acquisition.snapshot.clone();
    let alarms = s.alarms.state.clone();
    /// What comes next on the stream.
    enum Next {
        State,
        Beat,
    }
    let init = (
        s,
        snapshot,
        alarms,
        Next::State,
        tokio::time::Instant::now(),
        permit,
    );
    let events = futures_util::stream::unfold(
        init,
        |(s, mut snap, mut alarms, next, mut last_state, permit)| async move {
            let next = match next {
                Next::State => Next::State,
                Next::Beat => {
                    // At most four states a second: a change soon after a
                    // state waits out the rest of 250 ms.
                    let paced = last_state + Duration::from_millis(250);
                    tokio::select! {
                        r = snap.changed() => {
                            r.ok()?;
                            tokio::time::sleep_until(paced).await;
                            Next::State
                        }
                        r = alarms.changed() => {
                            r.ok()?;
                            tokio::time::sleep_until(paced).await;
                            Next::State
                        }
                        () = tokio::time::sleep(BEAT) => {
                            if last_state.elapsed() >= Duration::from_secs(5) { Next::State } else { Next::Beat }
                        }
                    }
                }
            };
            let event = match next {
                Next::State => {
                    snap.mark_unchanged();
                    alarms.mark_unchanged();
                    last_state = tokio::time::Instant::now();
                    let data = serde_json::to_string(&state_of(&s)).unwrap_or_default();
                    Event::default().event("state").data(data)
                }
                Next::Beat => Event::default()
                    .event("beat")
                    .data(s.started.elapsed().as_millis().to_string()),
            };
            Some((
                Ok::<_, Infallible>(event),
                (s, snap, alarms, Next::Beat, last_state, permit),
            ))
        },
    );
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `GET /api/v1/reader` (the box's own kiosk, loopback): the answer to the
/// last badge the reader read, and the direction it takes badges for.
pub async fn reader_state(
    State(s): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
) -> Result<Response, ApiError> {
    if !peer.ip().is_loopback() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_the_box",
            "读卡器的结果只在本机登记屏上显示",
            "the badge reader's answers are shown on the box's own kiosk only",
        ));
    }
    Ok(axum::Json(serde_json::json!({
        "configured": s.reader.configured,
        "direction": s.reader.direction(),
        "last": s.reader.last(),
    }))
    .into_response())
}

/// Body of `POST /api/v1/kiosk/direction`.
#[derive(Debug, serde::Deserialize)]
pub struct DirectionBody {
    direction: crate::roster::Passage,
}

/// `POST /api/v1/kiosk/direction` `{"direction": "in"|"out"}` (the box's own
/// kiosk, loopback): the direction the badge reader takes badges for, as
/// the kiosk shows it.
pub async fn reader_direction(
    State(s): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    body: Result<axum::Json<DirectionBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    if !peer.ip().is_loopback() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_the_box",
            "只有本机登记屏能设置读卡方向",
            "only the box's own kiosk sets the reader's direction",
        ));
    }
    let Ok(axum::Json(b)) = body else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "请求格式错误，应为 {\"direction\": \"in\" 或 \"out\"}",
            "expected {\"direction\": \"in\"|\"out\"}",
        ));
    };
    s.reader.set_direction(b.direction);
    Ok(axum::Json(serde_json::json!({ "direction": b.direction })).into_response())
}
