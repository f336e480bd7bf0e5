//! Alarms: the engine (pure), the panel it drives, the supervisor that
//! watches it, and the task that joins them.
//!
//! The alarm path is: a reading lands in the acquisition snapshot → this
//! task wakes, feeds the engine, and drives the panel at once → only then
//! are the events handed (without waiting) to the recorder task that writes
//! them to the store with their outbox rows. Nothing on that path awaits
//! the disk, the network or the browser.

pub mod engine;
pub mod panel;
pub mod supervisor;

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::acquisition::metrics::{FAST_BUCKETS, Histogram};
use crate::acquisition::{Changes, Snapshot};
use crate::config::Config;
use crate::store::outbox::{self, Lane};
use crate::store::{self, Durability, Store, StoreError, events};
use engine::{AckError, Alarm, AlarmEvent, ChannelRules, Engine, LevelRule, Outputs};
use panel::Panel;
use supervisor::Heartbeats;

/// The engine's rules from the configuration.
pub fn rules(cfg: &Config) -> Vec<ChannelRules> {
    cfg.channels
        .iter()
        .map(|c| ChannelRules {
            id: c.id.clone(),
            levels: c
                .levels
                .iter()
                .map(|l| LevelRule {
                    name: l.name,
                    threshold: l.threshold,
                    direction: l.direction.unwrap_or_else(|| c.kind.default_direction()),
                    deadband: l.deadband,
                    on_delay: l.on_delay,
                    off_delay: l.off_delay,
                    latching: l.latches(),
                })
                .collect(),
        })
        .collect()
}

/// An active alarm as the API and console show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlarmView {
    /// Alarm id, for acknowledging.
    pub id: u64,
    /// Channel id.
    pub channel: String,
    /// `fault`, `warning`, `alarm` or `power_cut`.
    pub level: &'static str,
    /// `active` (condition holds, not acknowledged), `acknowledged`
    /// (condition holds), `returned` (condition gone, waiting for an
    /// acknowledgement), or `cleared` (history only).
    pub state: &'static str,
    /// Value when raised, if there was one.
    pub value: Option<f64>,
    /// Reading state when raised.
    pub reading_state: &'static str,
    /// RFC 3339.
    pub raised_at: String,
    /// Supervisor who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// RFC 3339.
    pub acknowledged_at: Option<String>,
    /// RFC 3339, history only.
    pub cleared_at: Option<String>,
}

fn rfc3339(t: SystemTime) -> String {
    crate::store::rfc3339(t)
}

impl AlarmView {
    fn of(a: &Alarm, rules: &[ChannelRules]) -> Self {
        AlarmView {
            id: a.id,
            channel: a
                .subject
                .clone()
                .or_else(|| rules.get(a.channel).map(|r| r.id.clone()))
                .unwrap_or_default(),
            level: a.kind.as_str(),
            state: match (a.condition, &a.acked) {
                (true, None) => "active",
                (true, Some(_)) => "acknowledged",
                (false, _) => "returned",
            },
            value: a.value,
            reading_state: a.state.as_str(),
            raised_at: rfc3339(a.raised_wall),
            acknowledged_by: a.acked.as_ref().map(|k| k.by.clone()),
            acknowledged_at: a.acked.as_ref().map(|k| rfc3339(k.at)),
            cleared_at: None,
        }
    }
}

/// What the alarm task publishes after every change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlarmState {
    /// Active alarms, by channel then level.
    pub alarms: Vec<AlarmView>,
    /// What the outputs show.
    pub outputs: Outputs,
}

/// Requests to the alarm task.
#[derive(Debug)]
pub enum Command {
    /// The miners overdue now, as `worker:BADGE` (from the roster task).
    Overdue(Vec<String>),
    /// Alarms unfinished when the daemon last stopped, and the highest alarm
    /// id ever recorded (from the event log, once the store is open).
    Restore(Vec<engine::Restored>, Option<u64>),
    /// A supervisor acknowledges an alarm. The reply comes once the outputs
    /// changed; its receiver resolves once the acknowledgement is recorded.
    Ack {
        /// Alarm id.
        id: u64,
        /// Supervisor name.
        by: String,
        /// The answer.
        reply: oneshot::Sender<Result<oneshot::Receiver<Result<(), String>>, AckError>>,
    },
}

/// What the rest of the daemon holds of the alarms.
#[derive(Debug, Clone)]
pub struct Handle {
    /// Latest alarms and outputs.
    pub state: watch::Receiver<AlarmState>,
    /// Requests.
    pub commands: mpsc::Sender<Command>,
    /// The panel (for its timeline and current state).
    pub panel: Arc<Mutex<Panel>>,
    /// From a reading taken to the outputs set, when the reading changed
    /// them.
    pub reading_to_output: Arc<Histogram>,
}

/// The alarm task tells the supervisor it is alive at least this often
/// when nothing else wakes it (the supervisor's stall limit is 2 s).
const BEAT: Duration = Duration::from_millis(500);

/// Alarm events held in memory while the store cannot take them.
const MAX_QUEUED: usize = 100_000;

/// Told once an event is recorded (or why not).
type Recorded = oneshot::Sender<Result<(), String>>;

/// An event on its way to the store, with whoever waits for it.
#[derive(Debug)]
struct Pending {
    event: AlarmEvent,
    done: Option<Recorded>,
}

/// Alarm events waiting for [`record`].
#[derive(Debug)]
pub struct EventQueue(mpsc::UnboundedReceiver<Pending>);

/// Starts the alarm task and the supervisor thread. They need no disk: the
/// events wait in the returned queue until [`record`] runs.
pub fn start(
    cfg: &Arc<Config>,
    snapshot: watch::Receiver<Snapshot>,
    changes: Arc<Changes>,
    beats: Arc<Heartbeats>,
    tracker: &tokio_util::task::TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(Handle, SupervisorGuard, EventQueue), pithead_hal::HalError> {
    let panel = Arc::new(Mutex::new(Panel::open(&cfg.outputs)?));
    let mut watchdogs: Vec<Box<dyn pithead_hal::Watchdog>> = Vec::new();
    if std::env::var_os("WATCHDOG_USEC").is_some() && std::env::var_os("NOTIFY_SOCKET").is_some() {
        watchdogs.push(Box::new(supervisor::SystemdWatchdog));
    }
    if let Some(dev) = &cfg.watchdog.device {
        watchdogs.push(Box::new(pithead_hal::watchdog::DevWatchdog::open(dev)?));
    }
    if let Some(t) = panel.lock().ok().and_then(|p| p.timeline().cloned()) {
        watchdogs.push(Box::new(pithead_hal::sim::SimWatchdog::new(&t)));
    }
    // Acquisition's progress is judged on the channels that guard something
    // (at most 30 s polls); others may poll hourly.
    let guarded: Vec<Duration> = cfg
        .channels
        .iter()
        .filter(|c| !c.levels.is_empty())
        .map(|c| c.poll)
        .collect();
    let slowest = guarded
        .iter()
        .max()
        .copied()
        .or_else(|| cfg.channels.iter().map(|c| c.poll).min())
        .unwrap_or(Duration::from_secs(1))
        .min(Duration::from_secs(30));
    let feed_every = sd_notify::watchdog_enabled().map_or(Duration::from_secs(1), |d| {
        (d / 3).max(Duration::from_millis(100))
    });
    let limits = supervisor::Limits {
        engine: Duration::from_secs(2),
        acquisition: if cfg.channels.is_empty() {
            Duration::MAX
        } else {
            (slowest * 3).max(Duration::from_secs(10))
        },
        feed_every: feed_every.min(Duration::from_secs(1)),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::new(AtomicBool::new(false));
    let thread = supervisor::spawn(
        Arc::clone(&panel),
        Arc::clone(&beats),
        watchdogs,
        limits,
        Arc::clone(&stop),
        Arc::clone(&stopping),
    )
    .map_err(|e| pithead_hal::HalError::Watchdog {
        name: "supervisor".into(),
        reason: e.to_string(),
    })?;

    let rules = rules(cfg);
    let first_id = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
    )
    .unwrap_or(0)
    .saturating_mul(1000);
    let engine = Engine::new(rules, first_id);
    let initial = AlarmState {
        alarms: Vec::new(),
        outputs: engine.outputs(),
    };
    let (state_tx, state_rx) = watch::channel(initial);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let latency = Arc::new(Histogram::new(&FAST_BUCKETS));
    tracker.spawn(run(
        Arc::clone(&latency),
        engine,
        Arc::clone(&panel),
        cfg.outputs.self_test,
        snapshot,
        changes,
        beats,
        cmd_rx,
        state_tx,
        ev_tx,
        shutdown.clone(),
    ));
    Ok((
        Handle {
            state: state_rx,
            commands: cmd_tx,
            panel,
            reading_to_output: latency,
        },
        SupervisorGuard {
            stop,
            stopping,
            thread: Some(thread),
        },
        EventQueue(ev_rx),
    ))
}

/// Stops the supervisor thread (disarming the watchdogs) when dropped.
#[derive(Debug)]
pub struct SupervisorGuard {
    stop: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SupervisorGuard {
    /// A clean shutdown begins: the engine will stop beating on purpose.
    pub fn stopping(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for SupervisorGuard {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "the task's whole wiring, spelled out once"
)]
async fn run(
    latency: Arc<Histogram>,
    mut engine: Engine,
    panel: Arc<Mutex<Panel>>,
    self_test: bool,
    mut snapshot: watch::Receiver<Snapshot>,
    changes: Arc<Changes>,
    beats: Arc<Heartbeats>,
    mut commands: mpsc::Receiver<Command>,
    state: watch::Sender<AlarmState>,
    events: mpsc::UnboundedSender<Pending>,
    shutdown: CancellationToken,
) {
    if self_test {
        // The supervisor must not take the self-test for a stall.
        let beating = {
            let beats = Arc::clone(&beats);
            tokio::spawn(async move {
                loop {
                    beats.engine_beat();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        Panel::self_test(&panel).await;
        beating.abort();
    }
    let mut seen: Vec<Option<Instant>> = vec![None; engine.rules().len()];
    let mut changed: Vec<usize> = Vec::new();
    // Woken by a reading, a command, the end of a running delay, or else
    // every BEAT to tell the supervisor the engine is alive; never on a
    // fixed fast tick, and each wake costs the channels that changed.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut last_published: Option<AlarmState> = None;
    loop {
        let mut acks = Vec::new();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = snapshot.changed() => if r.is_err() { break },
            () = &mut timer => {}
            Some(cmd) = commands.recv() => acks.push(cmd),
        }
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut out: Vec<(AlarmEvent, Option<Recorded>)> = Vec::new();
        let mut earliest: Option<Instant> = None;
        {
            let snap = snapshot.borrow_and_update();
            // Taken under the borrow: exactly the channels changed in it.
            changes.take(&mut changed);
            for &ch in &changed {
                let (Some(r), Some(s)) = (snap.readings.get(ch), seen.get_mut(ch)) else {
                    continue;
                };
                if *s != Some(r.at) {
                    *s = Some(r.at);
                    earliest = Some(earliest.map_or(r.at, |e| e.min(r.at)));
                    out.extend(
                        engine
                            .update(ch, r, now, wall)
                            .into_iter()
                            .map(|e| (e, None)),
                    );
                }
            }
        }
        out.extend(engine.tick(now, wall).into_iter().map(|e| (e, None)));
        let had_commands = !acks.is_empty();
        for cmd in acks {
            let (id, by, reply) = match cmd {
                Command::Overdue(list) => {
                    out.extend(
                        engine
                            .set_overdue(&list, now, wall)
                            .into_iter()
                            .map(|e| (e, None)),
                    );
                    continue;
                }
                Command::Restore(restored, max_id) => {
                    if let Some(id) = max_id {
                        engine.ids_above(id);
                    }
                    if !restored.is_empty() {
                        tracing::warn!(
                            count = restored.len(),
                            "alarms unfinished before the restart are active again"
                        );
                    }
                    engine.restore(&restored, now);
                    continue;
                }
                Command::Ack { id, by, reply } => (id, by, reply),
            };
            match engine.ack(id, &by, wall) {
                Ok(evs) => {
                    // The caller waits for the last of its events: the
                    // recorder writes a queue in one transaction.
                    let (done_tx, done_rx) = oneshot::channel();
                    let mut evs: Vec<_> = evs.into_iter().map(|e| (e, None)).collect();
                    if let Some(last) = evs.last_mut() {
                        last.1 = Some(done_tx);
                    }
                    out.extend(evs);
                    let _ = reply.send(Ok(done_rx));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        // Outputs first, before anything else is done with the events.
        let outputs = engine.outputs();
        panel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .apply(&outputs);
        if let (Some(t), Some(prev)) = (earliest, &last_published)
            && prev.outputs != outputs
        {
            latency.observe(t.elapsed());
        }
        beats.engine_beat();
        for (e, done) in out.iter_mut().map(|(e, d)| (e.clone(), d.take())) {
            tracing::info!(
                event = e.kind.as_str(),
                channel = %e.channel,
                level = e.level.as_str(),
                value = ?e.value,
                state = e.state.as_str(),
                by = ?e.by,
                "alarm"
            );
            let _ = events.send(Pending { event: e, done });
        }
        // Alarms change only with events or commands; the list is built
        // only then, not on every reading.
        let outputs_changed = last_published.as_ref().map(|p| &p.outputs) != Some(&outputs);
        if !out.is_empty() || had_commands || outputs_changed {
            let rules = engine.rules();
            let current = AlarmState {
                alarms: engine.active().map(|a| AlarmView::of(a, rules)).collect(),
                outputs,
            };
            if last_published.as_ref() != Some(&current) {
                state.send_replace(current.clone());
                last_published = Some(current);
            }
        }
        let beat = Instant::now() + BEAT;
        let next = engine.next_deadline(now).map_or(beat, |d| d.min(beat));
        timer.as_mut().reset(next.into());
    }
    // A daemon that stops no longer guards: power cut, red lamp.
    if let Ok(mut p) = panel.lock() {
        p.apply(&Outputs {
            siren: false,
            beacon: engine::Beacon::Red,
            power_allowed: false,
        });
    }
}

/// The payload of an alarm event in the event log and the outbox.
fn payload(cfg: &Config, e: &AlarmEvent) -> serde_json::Value {
    serde_json::json!({
        "county": cfg.station.county,
        "station": cfg.station.id,
        "alarm_id": e.alarm_id,
        "event": e.kind.as_str(),
        "channel": e.channel,
        "level": e.level.as_str(),
        "value": e.value,
        "state": e.state.as_str(),
        "by": e.by,
        "at": rfc3339(e.at),
    })
}

/// Writes alarm events to the store, each with its outbox row, durably. A
/// write that fails (full disk) is kept in memory and retried: alarm events
/// are never dropped while the process lives.
pub async fn record(store: Store, cfg: Arc<Config>, queue: EventQueue) {
    let EventQueue(mut rx) = queue;
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut retry = Duration::from_millis(500);
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(p) => queue.push_back(p),
                None => return,
            }
        }
        while let Ok(p) = rx.try_recv() {
            queue.push_back(p);
        }
        // Bounded: with the disk gone for good, the oldest events go first
        // (they are in the log, with a count), never the process.
        if queue.len() > MAX_QUEUED {
            let dropped = queue.len() - MAX_QUEUED;
            queue.drain(..dropped);
            tracing::error!(
                dropped,
                "alarm events dropped: the store has not taken any for too long"
            );
        }
        let batch: Vec<(serde_json::Value, String, Option<String>, String)> = queue
            .iter()
            .map(|p| {
                (
                    payload(&cfg, &p.event),
                    format!("alarm.{}", p.event.kind.as_str()),
                    p.event.by.clone(),
                    p.event.channel.clone(),
                )
            })
            .collect();
        let n = batch.len();
        let r = store
            .write(Durability::Acknowledged, move |c| {
                let at = store::now_rfc3339();
                for (detail, kind, actor, subject) in batch {
                    events::insert(
                        c,
                        &at,
                        &events::NewEvent {
                            kind,
                            actor,
                            subject: Some(subject),
                            detail: detail.clone(),
                        },
                    )?;
                    outbox::enqueue(c, Lane::Alarm, "alarm", &at, &detail)?;
                }
                Ok(())
            })
            .await;
        match r {
            Ok(()) => {
                for p in queue.drain(..n) {
                    if let Some(done) = p.done {
                        let _ = done.send(Ok(()));
                    }
                }
                retry = Duration::from_millis(500);
            }
            Err(e) => {
                tracing::error!(error = %e, events = n, "alarm events not recorded yet; will retry");
                for p in queue.iter_mut() {
                    if let Some(done) = p.done.take() {
                        let _ = done.send(Err(e.to_string()));
                    }
                }
                if matches!(e, StoreError::Unavailable(_) | StoreError::Closed) && rx.is_closed() {
                    return;
                }
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// The alarms that were raised and never cleared, as the event log tells,
/// and the highest alarm id in it.
pub fn unfinished(
    conn: &rusqlite::Connection,
) -> Result<(Vec<engine::Restored>, Option<u64>), StoreError> {
    use crate::config::LevelName;
    use engine::{Ack, AlarmKind, Restored};
    let mut st = conn
        .prepare("SELECT kind, actor, detail FROM events WHERE kind LIKE 'alarm.%' ORDER BY id")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut open: std::collections::BTreeMap<u64, Restored> = std::collections::BTreeMap::new();
    let mut max_id = None;
    for row in rows {
        let (kind, actor, detail) = row?;
        let Ok(d) = serde_json::from_str::<serde_json::Value>(&detail) else {
            continue;
        };
        let Some(id) = d["alarm_id"].as_u64() else {
            continue;
        };
        max_id = Some(max_id.map_or(id, |m: u64| m.max(id)));
        let at = d["at"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .unwrap_or_else(SystemTime::now);
        match kind.as_str() {
            "alarm.raised" | "alarm.escalated" => {
                let kind = match d["level"].as_str() {
                    Some("fault") => AlarmKind::Fault,
                    Some("warning") => AlarmKind::Level(LevelName::Warning),
                    Some("alarm") => AlarmKind::Level(LevelName::Alarm),
                    Some("power_cut") => AlarmKind::Level(LevelName::PowerCut),
                    _ => continue,
                };
                open.insert(
                    id,
                    Restored {
                        id,
                        channel: d["channel"].as_str().unwrap_or_default().to_owned(),
                        kind,
                        value: d["value"].as_f64(),
                        raised_wall: at,
                        acked: None,
                    },
                );
            }
            "alarm.acknowledged" => {
                if let Some(r) = open.get_mut(&id) {
                    r.acked = Some(Ack {
                        by: actor.unwrap_or_default(),
                        at,
                    });
                }
            }
            "alarm.cleared" => {
                open.remove(&id);
            }
            _ => {}
        }
    }
    Ok((open.into_values().collect(), max_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acquisition::Reading;
    use crate::config::{Direction, LevelName, OutputBackend, OutputsConfig};
    use engine::{AlarmKind, EventKind, Restored};

    struct Rig {
        beats: Arc<Heartbeats>,
        commands: mpsc::Sender<Command>,
        state: watch::Receiver<AlarmState>,
        events: mpsc::UnboundedReceiver<Pending>,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
        // Kept so the task does not see the acquisition side go away.
        _snapshot: watch::Sender<Snapshot>,
    }

    /// The alarm task on one methane channel (alarm 1.0 latching, power
    /// cut 1.5) whose one reading is `value`, and that never changes.
    fn rig(value: f64) -> Rig {
        let level = |name, threshold| LevelRule {
            name,
            threshold,
            direction: Direction::Rising,
            deadband: 0.1,
            on_delay: Duration::ZERO,
            off_delay: Duration::ZERO,
            latching: true,
        };
        let engine = Engine::new(
            vec![ChannelRules {
                id: "ch4".into(),
                levels: vec![
                    level(LevelName::Alarm, 1.0),
                    level(LevelName::PowerCut, 1.5),
                ],
            }],
            1_000,
        );
        let snapshot = crate::testing::one_channel_snapshot(
            Duration::from_secs(30),
            Reading::ok(value, Instant::now(), SystemTime::now()),
        );
        let (snap_tx, snap_rx) = watch::channel(snapshot);
        let panel = Panel::open(&OutputsConfig {
            backend: OutputBackend::Sim,
            ..OutputsConfig::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let beats = Heartbeats::new();
        let (cmd_tx, cmd_rx) = mpsc::channel(8);
        let (state_tx, state_rx) = watch::channel(AlarmState {
            alarms: Vec::new(),
            outputs: Outputs::FAIL_SAFE,
        });
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            Arc::new(Histogram::new(&FAST_BUCKETS)),
            engine,
            Arc::new(Mutex::new(panel)),
            false,
            snap_rx,
            Arc::new(Changes::new(1)),
            Arc::clone(&beats),
            cmd_rx,
            state_tx,
            ev_tx,
            stop.clone(),
        ));
        Rig {
            beats,
            commands: cmd_tx,
            state: state_rx,
            events: ev_rx,
            stop,
            task,
            _snapshot: snap_tx,
        }
    }

    #[tokio::test]
    async fn with_no_reading_and_no_delay_running_the_engine_still_beats() {
        let mut r = rig(0.5);
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            r.state.wait_for(|s| s.outputs.power_allowed),
        )
        .await;
        assert!(
            r.state.borrow().outputs.power_allowed,
            "the first pass judges the reading there is"
        );
        let mut oldest = Duration::ZERO;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            oldest = oldest.max(r.beats.engine_age());
        }
        assert!(
            oldest < Duration::from_millis(1000),
            "{oldest:?} without a beat; the supervisor cuts power after 2 s"
        );
        r.stop.cancel();
        let _ = r.task.await;
    }

    #[tokio::test]
    async fn a_restored_alarm_is_judged_at_once_without_waiting_for_a_reading() {
        let mut r = rig(0.5);
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            r.state.wait_for(|s| s.outputs.power_allowed),
        )
        .await;
        let restored = Restored {
            id: 5_000,
            channel: "ch4".into(),
            kind: AlarmKind::Level(LevelName::Alarm),
            value: Some(1.2),
            raised_wall: SystemTime::now(),
            acked: None,
        };
        r.commands
            .send(Command::Restore(vec![restored], Some(5_000)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // The reading (0.5) no longer holds the condition: the alarm has
        // returned and waits for its acknowledgement. No new reading comes
        // for 30 s; the engine must not wait for one.
        let returned = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(p) = r.events.recv().await {
                if p.event.alarm_id == 5_000 {
                    return Some(p.event.kind);
                }
            }
            None
        })
        .await;
        assert_eq!(returned.ok().flatten(), Some(EventKind::Returned));
        let state = r.state.borrow().clone();
        assert_eq!(
            state
                .alarms
                .iter()
                .map(|a| (a.id, a.state))
                .collect::<Vec<_>>(),
            [(5_000, "returned")]
        );
        r.stop.cancel();
        let _ = r.task.await;
    }
}
