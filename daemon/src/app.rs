//! Wiring: starts every task of the daemon and stops them on shutdown.
//!
//! The order is the order of what matters: acquisition, the alarms and the
//! outputs first, needing neither the disk nor the network; then the
//! store (retried in the background when it cannot be opened); then
//! everything that needs it; the web server last, retried when its port or
//! token cannot be had. Nothing after the outputs are up ends the process:
//! a daemon that exits on a busy port would leave the mine without gas
//! alarms in a restart loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::store::{self, Durability, Store, events};

/// How long tasks get to finish after a shutdown request.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Longest pause between attempts to start the web server.
const WEB_RETRY_MAX: Duration = Duration::from_secs(30);

/// Runs the daemon until `shutdown` is cancelled; `started` is when the
/// process started (the first poll's delay is measured from it). `on_force` receives the
/// function that cuts the power, for the signal handler's hard exit.
pub async fn run(
    config: Config,
    started: std::time::Instant,
    shutdown: CancellationToken,
    on_force: &crate::lifecycle::ForceExit,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        county = %config.station.county,
        station = %config.station.id,
        data_dir = %config.storage.data_dir.display(),
        "starting"
    );
    let tracker = TaskTracker::new();
    // Acquisition and the alarms on it start first and need no disk.
    let beats = crate::heartbeat::Heartbeats::new();
    let (acquisition, minutes) =
        crate::acquisition::start(&config, started, &beats, &tracker, &shutdown);
    let (alarms, supervisor, alarm_events) = crate::alarm::start(
        &config,
        acquisition.snapshot.clone(),
        Arc::clone(&acquisition.changes),
        beats,
        &tracker,
        &shutdown,
    )
    .context("cannot drive the alarm outputs ([outputs])")?;
    on_force.set(supervisor.cutter());
    // The guard is up: from here on nothing ends the process but a signal.
    crate::lifecycle::notify_ready("guarding: acquisition, alarms and outputs running");

    let data_dir = config.storage.data_dir.clone();
    let (store, first_error) =
        match tokio::task::spawn_blocking(move || Store::open_retrying(&data_dir)).await {
            Ok(opened) => opened,
            Err(e) => {
                let path = config.storage.data_dir.join(store::DB_FILE);
                let e = format!("store open task failed: {e}");
                (
                    Store::unavailable(path, e.clone()),
                    Some(store::StoreError::Rejected(e)),
                )
            }
        };
    if let Some(e) = &first_error {
        // Keep guarding the mine without a database: alarms and outputs
        // work, records are refused with this reason, /healthz says so, and
        // the store keeps trying to open it.
        tracing::error!(error = %e, "running WITHOUT a database: nothing is recorded until it can be opened");
        crate::lifecycle::notify_status(&format!("no database: {e}"));
    }
    tracker.spawn(crate::alarm::record(
        store.clone(),
        Arc::clone(&config),
        alarm_events,
        Arc::clone(&acquisition.calibrations),
    ));
    let roster_ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tracker.spawn(store_up(
        store.clone(),
        Arc::clone(&config),
        alarms.commands.clone(),
        first_error.map(|e| e.to_string()),
        Arc::clone(&roster_ready),
        shutdown.clone(),
    ));
    tracker.spawn(crate::reports::run(
        store.clone(),
        Arc::clone(&config),
        shutdown.clone(),
    ));
    let uplink = Arc::new(crate::sync::SyncStats::default());
    tracker.spawn(crate::sync::run(
        Arc::clone(&config),
        store.clone(),
        Arc::clone(&uplink),
        shutdown.clone(),
    ));
    tracker.spawn(crate::sync::downlink::run(
        Arc::clone(&config),
        store.clone(),
        Arc::clone(&uplink),
        shutdown.clone(),
    ));
    let overdue_clock = Arc::new(std::sync::Mutex::new(crate::roster::OverdueClock::default()));
    let roster_changed = Arc::new(tokio::sync::Notify::new());
    let hazards_overdue = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let light = crate::light::Current::default();
    tracker.spawn(crate::light::run(
        store.clone(),
        Arc::clone(&config),
        Arc::clone(&uplink),
        Arc::clone(&light),
        Arc::clone(&acquisition.calibrations),
        shutdown.clone(),
    ));
    tracker.spawn(crate::hazards::watch_deadlines(
        store.clone(),
        Arc::clone(&config),
        Arc::clone(&hazards_overdue),
        shutdown.clone(),
    ));
    tracker.spawn(crate::roster::watch_overdue(
        store.clone(),
        Arc::clone(&config),
        Arc::clone(&overdue_clock),
        Arc::clone(&roster_changed),
        alarms.commands.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(store::retention::run(
        store.clone(),
        store::retention::Policy::from(&config.storage),
        config.storage.data_dir.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(crate::acquisition::calibration::watch(
        store.clone(),
        config.channels.iter().map(|c| c.id.clone()).collect(),
        Arc::clone(&acquisition.calibrations),
        shutdown.clone(),
    ));
    tracker.spawn(crate::acquisition::recorder::run(
        store.clone(),
        minutes,
        acquisition.snapshot.clone(),
        config.acquisition.raw_interval,
        shutdown.clone(),
    ));
    let http_stats = Arc::new(crate::web::serve::ConnStats::default());
    let state = crate::web::AppState {
        sessions: Arc::new(crate::auth::Sessions::default()),
        limiter: Arc::new(crate::web::limit::Limiter::default()),
        uplink,
        api_token: None,
        config: Arc::clone(&config),
        store: store.clone(),
        started: Instant::now(),
        acquisition,
        alarms,
        overdue: overdue_clock,
        roster_changed,
        hazards_overdue,
        light,
        reader: Arc::new(crate::web::reader::Reader::new(
            config.kiosk.badge_reader.is_some(),
        )),
        http: Arc::clone(&http_stats),
        kiosk_keys: Arc::default(),
        hosts: Arc::new(crate::web::guard::allowed_hosts(&config.http)),
        roster_ready,
        zone: config.station.zone(),
    };
    if let Some(path) = config.kiosk.badge_reader.clone() {
        tracker.spawn(crate::web::reader::run(
            state.clone(),
            path,
            shutdown.clone(),
        ));
    }
    tracker.spawn(web(state, http_stats, shutdown.clone()));

    shutdown.cancelled().await;
    supervisor.stopping();
    crate::lifecycle::notify_stopping();
    tracker.close();
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        tracing::warn!(limit = ?DRAIN, "tasks did not stop in time; stopping anyway");
    }
    // The guard cuts the power (again: the alarm task did if it stopped in
    // time) and only then disarms the watchdogs.
    drop(supervisor);
    if tokio::time::timeout(DRAIN, store.close()).await.is_err() {
        tracing::warn!(limit = ?DRAIN, "store writer did not finish in time");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Once the database is open (at start, or later when it could not be
/// opened then): records the start, brings the alarms of before the last
/// stop back to the engine, imports the configured roster (check-ins wait
/// for it: `roster_ready`) and sets the outbox cap. Until then, and for good if the history cannot be read, the
/// engine keeps the power cut behind a fault alarm a supervisor must
/// acknowledge.
async fn store_up(
    store: Store,
    config: Arc<Config>,
    alarms: tokio::sync::mpsc::Sender<crate::alarm::Command>,
    first_error: Option<String>,
    roster_ready: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
) {
    use crate::alarm::Command;
    if let Some(e) = first_error {
        let _ = alarms.send(Command::HistoryUnavailable(e)).await;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = store.opened() => {}
        }
    }
    let started_detail = serde_json::json!({ "version": env!("CARGO_PKG_VERSION") });
    if let Err(e) = store
        .write(Durability::Bulk, move |c| {
            events::insert(
                c,
                &crate::time::now_rfc3339(),
                &events::NewEvent {
                    kind: "daemon.started".into(),
                    actor: None,
                    subject: None,
                    detail: started_detail,
                },
            )
        })
        .await
    {
        // A full disk must not keep the alarms from running.
        tracing::error!(error = %e, "cannot record the start event");
    }
    // Alarms that were active when the daemon stopped come back latched.
    let started = Instant::now();
    match store.read(crate::alarm::history::unfinished).await {
        Ok((restored, max_id)) => {
            tracing::info!(
                open = restored.len(),
                took_ms = started.elapsed().as_millis(),
                "alarm history read"
            );
            let _ = alarms.send(Command::Restore(restored, max_id)).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read unfinished alarms");
            let _ = alarms
                .send(Command::HistoryUnavailable(e.to_string()))
                .await;
        }
    }
    crate::roster::import_configured(&store, &config).await;
    // Check-ins are taken from now on: before, a miner on the new roster
    // would be told (and recorded) unknown.
    roster_ready.store(true, std::sync::atomic::Ordering::Release);
    let cap = i64::from(config.storage.outbox_cap_mb) * 1024 * 1024;
    let (county, station) = (config.station.county.clone(), config.station.id.clone());
    if let Err(e) = store
        .write(Durability::Bulk, move |c| {
            store::outbox::set_cap(c, cap)?;
            store::outbox::set_station(c, &county, &station)
        })
        .await
    {
        tracing::warn!(error = %e, "cannot record the outbox cap");
    }
    match store.read(crate::auth::count).await {
        Ok(0) => tracing::warn!(
            "no supervisor account yet: nobody can log in to the console; create one with `pithead user add NAME`"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot count supervisor accounts"),
    }
}

/// The kiosk, console and API: plain HTTP on `[http] listen` (the box's own
/// screen), HTTPS on `tls_listen` when set. A port that is taken, or a
/// token, key or certificate file that cannot be read, is reported and
/// tried again, with a growing pause, while everything else keeps running.
async fn web(
    mut state: crate::web::AppState,
    stats: Arc<crate::web::serve::ConnStats>,
    shutdown: CancellationToken,
) {
    let mut wait = Duration::from_secs(1);
    let mut last_error = String::new();
    let (plain, secure) = loop {
        match bind(&state.config).await {
            Ok(b) => {
                state.api_token = b.token;
                state.kiosk_keys = Arc::new(b.kiosk_keys);
                break (b.plain, b.tls);
            }
            Err(e) => {
                let text = format!("{e:#}");
                if text != last_error {
                    tracing::error!(error = %text, retry_in = ?wait, "web server not started: kiosk and console unavailable; alarms and outputs are not affected");
                    crate::lifecycle::notify_status(&format!(
                        "guarding, web server not started: {text}"
                    ));
                    last_error = text;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(WEB_RETRY_MAX);
            }
        }
    };
    if !last_error.is_empty() {
        tracing::warn!("web server started after all");
    }
    let local = plain
        .local_addr()
        .map_or_else(|_| state.config.http.listen.clone(), |a| a.to_string());
    if state.config.http.allow_plain_http && !plain.local_addr().is_ok_and(|a| a.ip().is_loopback())
    {
        tracing::warn!(http = %local, "serving plain HTTP beyond this box (allow_plain_http): passwords and sessions cross the LAN in clear");
    }
    let state_dir = state.config.storage.data_dir.clone();
    let secure_addr = secure.as_ref().and_then(|(l, _)| l.local_addr().ok());
    let app = crate::web::router(state);
    let tasks = TaskTracker::new();
    if let Some((listener, acceptor)) = secure {
        let https = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(https = %https, "serving HTTPS");
        tasks.spawn(crate::web::serve::serve(
            listener,
            Some(Arc::new(acceptor)),
            app.clone(),
            Arc::clone(&stats),
            shutdown.clone(),
        ));
    }
    tracing::info!(http = %local, "serving");
    crate::lifecycle::notify_status(&format!("serving on {local}"));
    let https = secure_addr.map(|a| a.to_string());
    if let Err(e) = write_listening(&state_dir, &local, https.as_deref()) {
        tracing::warn!(error = %e, "cannot write the listening file");
    }
    tasks.spawn(crate::web::serve::serve(plain, None, app, stats, shutdown));
    tasks.close();
    tasks.wait().await;
}

/// The file in the data directory that says where the web server listens
/// once it does: `http ADDRESS` and, with HTTPS, `https ADDRESS`, one per
/// line. With `listen = "127.0.0.1:0"` the system picks a free port and
/// this file is how a tool (or a test) learns it.
pub const LISTENING_FILE: &str = "listening";

fn write_listening(dir: &std::path::Path, http: &str, https: Option<&str>) -> std::io::Result<()> {
    let mut text = format!("http {http}\n");
    if let Some(h) = https {
        text.push_str(&format!("https {h}\n"));
    }
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{LISTENING_FILE}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(LISTENING_FILE))
}

/// What the web server needs from the disk and the network before it can
/// serve.
struct Bound {
    plain: tokio::net::TcpListener,
    tls: Option<(tokio::net::TcpListener, tokio_rustls::TlsAcceptor)>,
    token: Option<Arc<str>>,
    kiosk_keys: crate::kiosk_keys::KioskKeys,
}

/// The listening sockets, the API token and the kiosk keys, or why not.
async fn bind(cfg: &Config) -> anyhow::Result<Bound> {
    let addr: SocketAddr = cfg
        .http
        .listen
        .parse()
        .with_context(|| format!("http.listen `{}` is not an address", cfg.http.listen))?;
    let token: Option<Arc<str>> = match &cfg.http.api_token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read http.api_token_file {}", f.display()))?
                .trim()
                .into(),
        ),
        None => None,
    };
    let kiosk_keys = match &cfg.kiosk.keys_file {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read kiosk.keys_file {}", f.display()))?;
            crate::kiosk_keys::parse(&text)
                .map_err(|e| anyhow::anyhow!("kiosk.keys_file {}: {e}", f.display()))?
        }
        None => crate::kiosk_keys::KioskKeys::default(),
    };
    let tls = match (&cfg.http.tls_listen, &cfg.http.tls_cert, &cfg.http.tls_key) {
        (Some(a), Some(c), Some(k)) => {
            let addr: SocketAddr = a
                .parse()
                .with_context(|| format!("http.tls_listen `{a}` is not an address"))?;
            let server = crate::tls::http_server(c, k).map_err(|e| anyhow::anyhow!(e))?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (http.tls_listen)"))?;
            Some((listener, tokio_rustls::TlsAcceptor::from(Arc::new(server))))
        }
        _ => None,
    };
    let plain = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (http.listen)"))?;
    Ok(Bound {
        plain,
        tls,
        token,
        kiosk_keys,
    })
}
