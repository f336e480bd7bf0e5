//! Wiring: starts every task of the daemon and stops them on shutdown.

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

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
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
    let beats = crate::alarm::supervisor::Heartbeats::new();
    let (acquisition, batches) = crate::acquisition::start(&config, &beats, &tracker, &shutdown);
    let (alarms, supervisor, alarm_events) = crate::alarm::start(
        &config,
        acquisition.snapshot.clone(),
        Arc::clone(&acquisition.changes),
        beats,
        &tracker,
        &shutdown,
    )
    .context("cannot drive the alarm outputs ([outputs])")?;

    let data_dir = config.storage.data_dir.clone();
    let db_path = data_dir.join(store::DB_FILE);
    let store = match tokio::task::spawn_blocking(move || Store::open(&data_dir)).await {
        Ok(Ok(store)) => store,
        Ok(Err(e)) => {
            // Keep guarding the mine without a database: alarms and outputs
            // work, records are refused with this reason, /healthz says so.
            tracing::error!(error = %e, "running WITHOUT a database: nothing will be recorded");
            crate::lifecycle::notify_status(&format!("no database: {e}"));
            Store::unavailable(db_path, e.to_string())
        }
        Err(e) => return Err(anyhow::anyhow!("store open task failed: {e}")),
    };
    let started_detail = serde_json::json!({ "version": env!("CARGO_PKG_VERSION") });
    if let Err(e) = store
        .write(Durability::Bulk, move |c| {
            events::insert(
                c,
                &store::now_rfc3339(),
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

    tracker.spawn(crate::alarm::record(
        store.clone(),
        Arc::clone(&config),
        alarm_events,
    ));
    // Alarms that were active when the daemon stopped come back latched.
    match store.read(crate::alarm::unfinished).await {
        Ok((restored, max_id)) => {
            let _ = alarms
                .commands
                .send(crate::alarm::Command::Restore(restored, max_id))
                .await;
        }
        Err(e) => tracing::error!(error = %e, "cannot read unfinished alarms"),
    }
    crate::roster::import_configured(&store, &config).await;
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
    let overdue_clock = Arc::new(std::sync::Mutex::new(crate::roster::OverdueClock::default()));
    tracker.spawn(crate::roster::watch_overdue(
        store.clone(),
        Arc::clone(&config),
        Arc::clone(&overdue_clock),
        alarms.commands.clone(),
        shutdown.clone(),
    ));
    let cap = i64::from(config.storage.outbox_cap_mb) * 1024 * 1024;
    if let Err(e) = store
        .write(Durability::Bulk, move |c| store::outbox::set_cap(c, cap))
        .await
    {
        tracing::warn!(error = %e, "cannot record the outbox cap");
    }
    tracker.spawn(store::retention::run(
        store.clone(),
        store::retention::Policy::from(&config.storage),
        shutdown.clone(),
    ));
    tracker.spawn(crate::acquisition::recorder::run(
        store.clone(),
        batches,
        acquisition.snapshot.clone(),
        config.acquisition.raw_interval,
        shutdown.clone(),
    ));

    let addr: SocketAddr = config
        .http
        .listen
        .parse()
        .with_context(|| format!("http.listen `{}` is not an address", config.http.listen))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (http.listen)"))?;
    let local = listener.local_addr().unwrap_or(addr);
    let api_token: Option<Arc<str>> = match &config.http.api_token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read http.api_token_file {}", f.display()))?
                .trim()
                .into(),
        ),
        None => None,
    };
    match store.read(crate::auth::count).await {
        Ok(0) => tracing::warn!(
            "no supervisor account yet: nobody can log in to the console; create one with `pithead user add NAME`"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot count supervisor accounts"),
    }
    let http_stats = Arc::new(crate::web::serve::ConnStats::default());
    let app = crate::web::router(crate::web::AppState {
        sessions: Arc::new(crate::auth::Sessions::default()),
        limiter: Arc::new(crate::web::limit::Limiter::default()),
        uplink,
        api_token,
        config: Arc::clone(&config),
        store: store.clone(),
        started: Instant::now(),
        acquisition,
        alarms,
        overdue: overdue_clock,
        http: Arc::clone(&http_stats),
    });
    let http_shutdown = shutdown.clone();
    tracker.spawn(crate::web::serve::serve(
        listener,
        app,
        http_stats,
        http_shutdown,
    ));
    tracing::info!(http = %local, "serving");
    crate::lifecycle::notify_ready(&format!("serving on {local}"));

    shutdown.cancelled().await;
    supervisor.stopping();
    crate::lifecycle::notify_stopping();
    tracker.close();
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        tracing::warn!(limit = ?DRAIN, "tasks did not stop in time; stopping anyway");
    }
    // The alarm task has put the outputs in their stopped state; stop
    // feeding the watchdogs.
    drop(supervisor);
    if tokio::time::timeout(DRAIN, store.close()).await.is_err() {
        tracing::warn!(limit = ?DRAIN, "store writer did not finish in time");
    }
    tracing::info!("stopped");
    Ok(())
}
