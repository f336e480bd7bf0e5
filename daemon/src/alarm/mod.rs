//! Alarms: the engine (pure), the panel it drives, the supervisor that
//! watches it, and the task that joins them.
//!
//! The alarm path is: a reading lands in the acquisition snapshot → this
//! task wakes, feeds the engine, and drives the panel at once → only then
//! are the events handed (without waiting) to the bounded [`queue`] the
//! recorder task writes to the store with their outbox rows. Nothing on
//! that path awaits the disk, the network or the browser.

pub use pithead_core::engine;
pub mod history;
pub mod panel;
pub mod queue;
pub mod supervisor;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::acquisition::calibration::Calibrations;
use crate::acquisition::metrics::{FAST_BUCKETS, Histogram};
use crate::acquisition::{Changes, Snapshot};
use crate::config::Config;
use crate::heartbeat::Heartbeats;
use crate::store::outbox::{self, Lane};
use crate::store::{Durability, Store, StoreError, events};
use engine::{AckError, Alarm, AlarmEvent, ChannelRules, Engine, LevelRule, Outputs};
use panel::Panel;
use queue::{EventQueue, Pending, Recorded};

impl From<crate::roster::OverdueNews> for Command {
    fn from(n: crate::roster::OverdueNews) -> Self {
        match n {
            crate::roster::OverdueNews::Overdue(list) => Command::Overdue(list),
            crate::roster::OverdueNews::Overcrowded(list) => Command::Overcrowded(list),
            crate::roster::OverdueNews::Blind(active) => Command::Fault {
                subject: crate::roster::OVERDUE_WATCH,
                active,
            },
        }
    }
}

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
    /// Channel id, or what else the alarm is about: `worker:BADGE` (an
    /// overdue miner), `output:NAME` (an output that cannot be driven),
    /// `system:alarm_history`, `system:overdue_watch`.
    pub channel: String,
    /// `fault`, `warning`, `alarm`, `power_cut` or `overdue`.
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
    crate::time::rfc3339(t)
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
    /// Whether the alarms of before the last stop are back (until then the
    /// power stays cut).
    pub restored: bool,
    /// The power relay's feedback, when one is configured.
    pub feedback: Option<FeedbackView>,
}

/// What the power relay's feedback (馈电) shows, for the API and console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FeedbackView {
    /// Whether power is present (`None`: the feedback cannot be read).
    pub present: Option<bool>,
    /// The disagreement with the relay that has lasted the delay:
    /// `still_powered`, `no_power` or `unreadable`.
    pub mismatch: Option<&'static str>,
}

/// The feedback's watch in the alarm task.
struct Feedback {
    watch: pithead_core::feedback::FeedbackWatch,
    /// The channel it is read from (else the panel's input line).
    channel: Option<usize>,
    /// What the engine was last told (`None`: tell it at the next pass).
    reported: Option<bool>,
    view: FeedbackView,
}

/// Requests to the alarm task.
#[derive(Debug)]
pub enum Command {
    /// The miners overdue now, as `worker:BADGE` (from the roster task).
    Overdue(Vec<String>),
    /// Where too many are underground now, with the counts.
    Overcrowded(Vec<(String, f64)>),
    /// Alarms unfinished when the daemon last stopped, and the highest alarm
    /// id ever recorded (from the store, once it is open).
    Restore(Vec<engine::Restored>, Option<u64>),
    /// The alarms of before the last stop cannot be read: a latching fault
    /// keeps the power cut until a supervisor acknowledges it.
    HistoryUnavailable(String),
    /// A fault of the station itself (`system:…`) holds or not.
    Fault {
        /// `system:…`.
        subject: &'static str,
        /// Whether it holds now.
        active: bool,
    },
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
    /// Events on their way to the store.
    pub queue: Arc<EventQueue>,
}

/// The alarm task tells the supervisor it is alive at least this often
/// when nothing else wakes it (the supervisor's stall limit is 2 s).
const BEAT: Duration = Duration::from_millis(500);

/// Most alarm events written in one transaction.
const RECORD_BATCH: usize = 512;

/// Starts the alarm task and the supervisor thread. They need no disk: the
/// events wait in the returned queue until [`record`] runs.
pub fn start(
    cfg: &Arc<Config>,
    snapshot: watch::Receiver<Snapshot>,
    changes: Arc<Changes>,
    beats: Arc<Heartbeats>,
    tracker: &tokio_util::task::TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(Handle, SupervisorGuard, Arc<EventQueue>), pithead_hal::HalError> {
    let sim_state = (cfg.outputs.backend == crate::config::OutputBackend::Sim).then(|| {
        // Best effort: without the directory the mirror file is not
        // written, and the simulated outputs work as before.
        let _ = std::fs::create_dir_all(&cfg.storage.data_dir);
        cfg.storage.data_dir.join(panel::SIM_STATE_FILE)
    });
    let panel = Arc::new(Mutex::new(Panel::open(&cfg.outputs, sim_state.as_deref())?));
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
    let first_id = first_alarm_id(&cfg.storage.data_dir);
    // Power stays cut until the alarm history is back (or known lost).
    let engine = Engine::awaiting_history(rules, first_id);
    let initial = AlarmState {
        alarms: Vec::new(),
        outputs: engine.outputs(),
        restored: false,
        feedback: None,
    };
    let feedback = cfg.outputs.power_feedback.as_ref().map(|f| Feedback {
        watch: pithead_core::feedback::FeedbackWatch::new(cfg.outputs.feedback_delay),
        channel: f
            .channel
            .as_ref()
            .and_then(|id| cfg.channels.iter().position(|c| &c.id == id)),
        reported: None,
        view: FeedbackView {
            present: None,
            mismatch: None,
        },
    });
    let (state_tx, state_rx) = watch::channel(initial);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let queue = Arc::new(EventQueue::default());
    let latency = Arc::new(Histogram::new(&FAST_BUCKETS));
    tracker.spawn(run(
        Arc::clone(&latency),
        engine,
        feedback,
        Arc::clone(&panel),
        cfg.outputs.self_test,
        snapshot,
        changes,
        beats,
        cmd_rx,
        state_tx,
        Arc::clone(&queue),
        shutdown.clone(),
    ));
    Ok((
        Handle {
            state: state_rx,
            commands: cmd_tx,
            panel: Arc::clone(&panel),
            reading_to_output: latency,
            queue: Arc::clone(&queue),
        },
        SupervisorGuard {
            stop,
            stopping,
            panel,
            thread: Some(thread),
        },
        queue,
    ))
}

/// The file in the data directory that keeps alarm ids growing across
/// restarts when the wall clock does not (a Pi without a real-time clock
/// boots in 1970 until NTP answers).
pub const ID_FLOOR_FILE: &str = "alarm-id-floor";

/// Ids a run may use before the next one starts above them.
const IDS_PER_RUN: u64 = 1_000_000_000;

/// The first alarm id of this run: Unix milliseconds × 1000, or the floor
/// the last run left if that is higher; the next run's floor is written
/// above the ids this one may use. New ids also continue above every id in
/// the history once it is read (`Engine::ids_above`), but alarms raised
/// before that must not collide either. Reading the file waits 200 ms at
/// most: the alarms never wait for a stalled disk.
fn first_alarm_id(data_dir: &std::path::Path) -> u64 {
    let wall = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
    )
    .unwrap_or(0)
    .saturating_mul(1000);
    let path = data_dir.join(ID_FLOOR_FILE);
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("alarm-id-floor".into())
        .spawn(move || {
            let floor = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .unwrap_or(0);
            let first = wall.max(floor);
            let _ = tx.send(first);
            let next = first.saturating_add(IDS_PER_RUN).to_string();
            let tmp = path.with_extension("tmp");
            if let Err(e) = std::fs::write(&tmp, next).and_then(|()| std::fs::rename(&tmp, &path)) {
                tracing::warn!(error = %e, file = %path.display(), "cannot keep the alarm id floor");
            }
        });
    match spawned {
        Ok(_) => rx.recv_timeout(Duration::from_millis(200)).unwrap_or(wall),
        Err(_) => wall,
    }
}

/// Stops the supervisor thread when dropped: power cut first, then the
/// watchdogs disarmed.
#[derive(Debug)]
pub struct SupervisorGuard {
    stop: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
    panel: Arc<Mutex<Panel>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SupervisorGuard {
    /// A clean shutdown begins: the engine will stop beating on purpose.
    pub fn stopping(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Puts the outputs in their stopped state (power cut, red lamp) now,
    /// from any thread: the last thing done before the process exits on a
    /// path that skips the orderly stop (a second signal).
    pub fn cut_now(&self) {
        let mut p = self
            .panel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        p.apply(&panel::STOPPED);
        p.settle();
    }

    /// A function that does [`SupervisorGuard::cut_now`], for the signal
    /// handler.
    pub fn cutter(&self) -> impl Fn() + Send + Sync + 'static {
        let panel = Arc::clone(&self.panel);
        move || {
            let mut p = panel
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            p.apply(&panel::STOPPED);
            p.settle();
        }
    }
}

impl Drop for SupervisorGuard {
    fn drop(&mut self) {
        // Whatever happened before: power cut before anything is disarmed.
        self.cut_now();
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// What the alarm task works with besides the engine.
struct Io {
    panel: Arc<Mutex<Panel>>,
    state: watch::Sender<AlarmState>,
    queue: Arc<EventQueue>,
    /// The outputs that could not be driven, as last told to the engine
    /// (`None`: tell it at the next pass).
    failing: Option<Vec<String>>,
    last_published: Option<AlarmState>,
}

impl Io {
    /// Drives the panel to what the engine says; tells the engine about
    /// outputs that cannot be driven (a latching fault each, which sounds
    /// the siren) and drives the panel again if that changed the outputs.
    fn drive(
        &mut self,
        engine: &mut Engine,
        now: Instant,
        wall: SystemTime,
    ) -> (Outputs, Vec<AlarmEvent>) {
        let mut events = Vec::new();
        let mut outputs = engine.outputs();
        let mut p = self
            .panel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        p.apply(&outputs);
        let failing: Vec<String> = p
            .failing()
            .into_iter()
            .map(|n| format!("output:{n}"))
            .collect();
        if self.failing.as_ref() != Some(&failing) {
            let known = self.failing.take().unwrap_or_default();
            for name in known.iter().filter(|n| !failing.contains(n)) {
                events.extend(engine.set_fault(name, false, now, wall));
            }
            for name in &failing {
                events.extend(engine.set_fault(name, true, now, wall));
            }
            self.failing = Some(failing);
            let again = engine.outputs();
            if again != outputs {
                outputs = again;
                p.apply(&outputs);
            }
        }
        (outputs, events)
    }
}

impl Io {
    /// Compares the relay with its feedback (the channel's reading, else the
    /// panel's input line) and tells the engine when a disagreement has
    /// lasted the delay, or no longer holds.
    fn check_feedback(
        &mut self,
        f: &mut Feedback,
        channel: Option<Option<bool>>,
        engine: &mut Engine,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<AlarmEvent> {
        let (commanded, line) = {
            let mut p = self
                .panel
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (p.current().power_allowed, p.read_feedback())
        };
        let present = channel.or(line).flatten();
        let mismatch = f.watch.observe(commanded, present, now);
        f.view = FeedbackView {
            present,
            mismatch: mismatch.map(pithead_core::feedback::Mismatch::as_str),
        };
        let active = mismatch.is_some();
        if f.reported == Some(active) {
            return Vec::new();
        }
        if let Some(m) = mismatch {
            tracing::error!(
                mismatch = m.as_str(),
                power_allowed = commanded,
                "馈电异常: the power relay's feedback disagrees with its command"
            );
        }
        f.reported = Some(active);
        engine.set_feedback_fault(active, now, wall)
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "the task's whole wiring, spelled out once"
)]
async fn run(
    latency: Arc<Histogram>,
    mut engine: Engine,
    mut feedback: Option<Feedback>,
    panel: Arc<Mutex<Panel>>,
    self_test: bool,
    mut snapshot: watch::Receiver<Snapshot>,
    changes: Arc<Changes>,
    beats: Arc<Heartbeats>,
    mut commands: mpsc::Receiver<Command>,
    state: watch::Sender<AlarmState>,
    queue: Arc<EventQueue>,
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
    let mut io = Io {
        panel,
        state,
        queue,
        failing: None,
        last_published: None,
    };
    let mut seen: Vec<Option<Instant>> = vec![None; engine.rules().len()];
    let mut changed: Vec<usize> = Vec::new();
    // Woken by a reading, a command, the end of a running delay, or else
    // every BEAT to tell the supervisor the engine is alive; never on a
    // fixed fast tick, and each wake costs the channels that changed.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
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
        let mut fb_channel: Option<Option<bool>> = None;
        {
            let snap = snapshot.borrow_and_update();
            if let Some(ch) = feedback.as_ref().and_then(|f| f.channel) {
                fb_channel = Some(
                    snap.readings
                        .get(ch)
                        .and_then(|r| r.value)
                        .map(|v| v != 0.0),
                );
            }
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
                Command::Overcrowded(list) => {
                    out.extend(
                        engine
                            .set_overcrowded(&list, now, wall)
                            .into_iter()
                            .map(|e| (e, None)),
                    );
                    continue;
                }
                Command::Overdue(list) => {
                    out.extend(
                        engine
                            .set_overdue(&list, now, wall)
                            .into_iter()
                            .map(|e| (e, None)),
                    );
                    continue;
                }
                Command::Fault { subject, active } => {
                    out.extend(
                        engine
                            .set_fault(subject, active, now, wall)
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
                    // Restored output faults are judged again now.
                    io.failing = None;
                    if let Some(f) = &mut feedback {
                        f.reported = None;
                    }
                    continue;
                }
                Command::HistoryUnavailable(reason) => {
                    if !engine.is_restored() {
                        tracing::error!(
                            %reason,
                            "the alarm history cannot be read: power stays cut until a supervisor acknowledges the fault alarm"
                        );
                    }
                    out.extend(
                        engine
                            .history_unavailable(now, wall)
                            .into_iter()
                            .map(|e| (e, None)),
                    );
                    continue;
                }
                Command::Ack { id, by, reply } => (id, by, reply),
            };
            match engine.ack(id, &by, wall) {
                Ok(evs) => {
                    // The caller waits for the last of its events: the
                    // recorder writes a queue in order, in transactions.
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
        let (mut outputs, output_events) = io.drive(&mut engine, now, wall);
        out.extend(output_events.into_iter().map(|e| (e, None)));
        if let Some(f) = &mut feedback {
            let evs = io.check_feedback(f, fb_channel, &mut engine, now, wall);
            if !evs.is_empty() {
                out.extend(evs.into_iter().map(|e| (e, None)));
                let (again, evs) = io.drive(&mut engine, now, wall);
                outputs = again;
                out.extend(evs.into_iter().map(|e| (e, None)));
            }
        }
        if let (Some(t), Some(prev)) = (earliest, &io.last_published)
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
            io.queue.push(Pending { event: e, done });
        }
        // Alarms change only with events or commands; the list is built
        // only then, not on every reading.
        let fb_view = feedback.as_ref().map(|f| f.view);
        let outputs_changed = io.last_published.as_ref().map(|p| (&p.outputs, p.feedback))
            != Some((&outputs, fb_view));
        if !out.is_empty() || had_commands || outputs_changed {
            let rules = engine.rules();
            let current = AlarmState {
                alarms: engine.active().map(|a| AlarmView::of(a, rules)).collect(),
                outputs,
                restored: engine.is_restored(),
                feedback: fb_view,
            };
            if io.last_published.as_ref() != Some(&current) {
                io.state.send_replace(current.clone());
                io.last_published = Some(current);
            }
        }
        let beat = Instant::now() + BEAT;
        let mut next = engine.next_deadline(now).map_or(beat, |d| d.min(beat));
        if let Some(d) = feedback.as_ref().and_then(|f| f.watch.deadline()) {
            next = next.min(d.max(now));
        }
        timer.as_mut().reset(next.into());
    }
    io.queue.close();
    // A daemon that stops no longer guards: power cut, red lamp.
    io.panel
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .apply(&panel::STOPPED);
}

/// The payload of an alarm event in the event log and the outbox: the
/// protocol's `alarm` body.
fn payload(cfg: &Config, cal: &Calibrations, e: &AlarmEvent) -> serde_json::Value {
    // Raised (or changed) while its channel was in calibration.
    let calibration = cfg
        .channels
        .iter()
        .position(|c| c.id == e.channel)
        .is_some_and(|ch| cal.at(ch, e.at));
    serde_json::to_value(pithead_core::protocol::AlarmBody {
        county: cfg.station.county.clone(),
        station: cfg.station.id.clone(),
        alarm_id: e.alarm_id,
        event: e.kind,
        channel: e.channel.clone(),
        level: e.level.into(),
        value: e.value,
        state: e.state,
        by: e.by.clone(),
        at: rfc3339(e.at),
        calibration,
    })
    .unwrap_or_default()
}

/// Writes alarm events to the store, each with its outbox row and its
/// alarm's row in the history, durably. A batch that cannot be written
/// (full disk, no database yet) is kept and retried with a backoff; new
/// events wait in the bounded queue meanwhile (see [`queue`]): what the
/// queue had to drop is counted and, once the store takes events again,
/// recorded as an event of its own.
pub async fn record(
    store: Store,
    cfg: Arc<Config>,
    queue: Arc<EventQueue>,
    calibrations: Arc<Calibrations>,
) {
    let mut retry = Duration::from_millis(500);
    let mut dropped_recorded = 0;
    loop {
        let Some(mut batch) = queue.take(RECORD_BATCH).await else {
            return;
        };
        loop {
            let dropped = queue.dropped();
            let rows: Vec<(AlarmEvent, serde_json::Value)> = batch
                .iter()
                .map(|p| (p.event.clone(), payload(&cfg, &calibrations, &p.event)))
                .collect();
            let n = rows.len();
            let r = store
                .write(Durability::Acknowledged, move |c| {
                    let now = crate::time::now_rfc3339();
                    for (event, detail) in rows {
                        // The event's own time, not the write's: after a
                        // stall the write may come hours later.
                        let at = rfc3339(event.at);
                        events::insert(
                            c,
                            &at,
                            &events::NewEvent {
                                kind: format!("alarm.{}", event.kind.as_str()),
                                actor: event.by.clone(),
                                subject: Some(event.channel.clone()),
                                detail: detail.clone(),
                            },
                        )?;
                        history::apply(c, &event, &at)?;
                        outbox::enqueue(c, Lane::Alarm, "alarm", &at, &detail)?;
                    }
                    if dropped > dropped_recorded {
                        events::insert(
                            c,
                            &now,
                            &events::NewEvent {
                                kind: "alarm.events_dropped".into(),
                                actor: None,
                                subject: None,
                                detail: serde_json::json!({
                                    "dropped": dropped - dropped_recorded,
                                    "since_start": dropped,
                                }),
                            },
                        )?;
                    }
                    Ok(())
                })
                .await;
            match r {
                Ok(()) => {
                    if dropped > dropped_recorded {
                        tracing::warn!(
                            dropped = dropped - dropped_recorded,
                            "alarm events were dropped while the store took none; recorded"
                        );
                        dropped_recorded = dropped;
                    }
                    for p in batch.drain(..) {
                        if let Some(done) = p.done {
                            let _ = done.send(Ok(()));
                        }
                    }
                    retry = Duration::from_millis(500);
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, events = n, waiting = queue.len(), "alarm events not recorded yet; will retry");
                    for p in &mut batch {
                        if let Some(done) = p.done.take() {
                            let _ = done.send(Err(e.to_string()));
                        }
                    }
                    // Stopping, and the store will not come: what is left
                    // is in the log, with a count.
                    if matches!(e, StoreError::Closed)
                        || (queue.is_closed() && matches!(e, StoreError::Unavailable(_)))
                    {
                        return;
                    }
                    // Wait out the failure, but try again at once when a
                    // supervisor waits for an acknowledgement to be
                    // recorded (in order: behind what is already here).
                    tokio::select! {
                        () = tokio::time::sleep(retry) => {
                            retry = (retry * 2).min(Duration::from_secs(30));
                        }
                        () = queue.urgent() => {}
                    }
                    let room = RECORD_BATCH.saturating_sub(batch.len());
                    batch.extend(queue.take_now(room));
                }
            }
        }
    }
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
        events: Arc<EventQueue>,
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
        let engine = Engine::awaiting_history(
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
        let panel = Panel::open(
            &OutputsConfig {
                backend: OutputBackend::Sim,
                ..OutputsConfig::default()
            },
            None,
        )
        .unwrap();
        let beats = Heartbeats::new();
        let (cmd_tx, cmd_rx) = mpsc::channel(8);
        let (state_tx, state_rx) = watch::channel(AlarmState {
            alarms: Vec::new(),
            outputs: Outputs::FAIL_SAFE,
            restored: false,
            feedback: None,
        });
        let queue = Arc::new(EventQueue::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            Arc::new(Histogram::new(&FAST_BUCKETS)),
            engine,
            None,
            Arc::new(Mutex::new(panel)),
            false,
            snap_rx,
            Arc::new(Changes::new(1)),
            Arc::clone(&beats),
            cmd_rx,
            state_tx,
            Arc::clone(&queue),
            stop.clone(),
        ));
        Rig {
            beats,
            commands: cmd_tx,
            state: state_rx,
            events: queue,
            stop,
            task,
            _snapshot: snap_tx,
        }
    }

    #[test]
    fn alarm_ids_grow_across_restarts_even_when_the_clock_went_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = first_alarm_id(dir.path());
        // Its floor is written in the background.
        std::thread::sleep(Duration::from_millis(50));
        // The box restarts with its clock far in the past (no RTC, no NTP
        // yet): the floor the last run left still puts ids above its own.
        std::fs::write(
            dir.path().join(ID_FLOOR_FILE),
            (first + 5 * IDS_PER_RUN).to_string(),
        )
        .unwrap();
        let second = first_alarm_id(dir.path());
        assert_eq!(second, first + 5 * IDS_PER_RUN);
        std::thread::sleep(Duration::from_millis(50));
        let third = first_alarm_id(dir.path());
        assert!(third >= second + IDS_PER_RUN, "{third} vs {second}");
    }

    async fn next_event(r: &mut Rig, id: Option<u64>) -> Option<AlarmEvent> {
        tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                for p in r.events.take(100).await? {
                    if id.is_none_or(|id| p.event.alarm_id == id) {
                        return Some(p.event);
                    }
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    #[tokio::test]
    async fn power_stays_cut_until_the_history_is_back_and_the_engine_beats_meanwhile() {
        let mut r = rig(0.5);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            !r.state.borrow().outputs.power_allowed,
            "a good reading alone must not return power before the history is read"
        );
        assert!(r.beats.engine_age() < Duration::from_millis(1000));
        r.commands
            .send(Command::Restore(Vec::new(), None))
            .await
            .unwrap();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            r.state.wait_for(|s| s.outputs.power_allowed),
        )
        .await;
        assert!(
            r.state.borrow().outputs.power_allowed,
            "nothing was active before: the reading there is decides"
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
            .unwrap();
        // The reading (0.5) no longer holds the condition: the alarm has
        // returned and waits for its acknowledgement. No new reading comes
        // for 30 s; the engine must not wait for one.
        let returned = next_event(&mut r, Some(5_000)).await.map(|e| e.kind);
        assert_eq!(returned, Some(EventKind::Returned));
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

    #[tokio::test]
    async fn without_a_history_a_fault_keeps_the_power_cut_until_it_is_acknowledged() {
        let mut r = rig(0.5);
        r.commands
            .send(Command::HistoryUnavailable("damaged".into()))
            .await
            .unwrap();
        let raised = next_event(&mut r, None).await;
        assert_eq!(
            raised.as_ref().map(|e| (e.kind, e.channel.as_str())),
            Some((EventKind::Raised, engine::HISTORY_SUBJECT))
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        let s = r.state.borrow().clone();
        assert!(!s.outputs.power_allowed && s.outputs.siren, "{s:?}");
        let id = s
            .alarms
            .iter()
            .find(|a| a.channel == engine::HISTORY_SUBJECT)
            .map(|a| a.id);
        let (reply, answer) = oneshot::channel();
        r.commands
            .send(Command::Ack {
                id: id.unwrap_or_default(),
                by: "王班长".into(),
                reply,
            })
            .await
            .unwrap();
        assert!(matches!(answer.await, Ok(Ok(_))));
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            r.state.wait_for(|s| s.outputs.power_allowed),
        )
        .await;
        let s = r.state.borrow().clone();
        assert!(s.outputs.power_allowed && s.alarms.is_empty(), "{s:?}");
        r.stop.cancel();
        let _ = r.task.await;
    }
}
