//! Acquisition: reads Modbus devices and turns registers into readings.
//!
//! It knows Modbus and nothing else. One task per bus polls its devices
//! (strictly one request at a time on a serial line), and publishes every
//! channel's latest [`Reading`] into a `watch` [`Snapshot`] for the alarm
//! engine and the web, and every poll result to the recorder for the store.
//!
//! A reading is a value with its unit, or a special [`ReadingState`]; a reading the
//! box does not have is a state, never a zero and never the last value.

pub use pithead_core::decode;
pub mod calibration;
pub mod metrics;
pub mod plan;
mod poller;
pub mod recorder;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tracing::Instrument as _;

use crate::config::{ChannelKind, Config, Transport};

pub use metrics::Metrics;

pub use pithead_core::reading::{Reading, ReadingState};

/// Fixed facts about a channel, shared by every snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelInfo {
    /// Channel id.
    pub id: String,
    /// What it measures.
    pub kind: ChannelKind,
    /// Engineering unit.
    pub unit: String,
    /// Where the sensor is.
    pub location: String,
    /// What miners read (`[[channel]] name`), if set.
    pub name: Option<String>,
    /// Device id.
    pub device: String,
    /// Poll interval.
    #[serde(skip)]
    pub poll: Duration,
}

/// Health of one device, as the console shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceHealth {
    /// Device id.
    pub id: String,
    /// Answered its last request.
    pub online: bool,
    /// Failed requests in a row.
    pub consecutive_failures: u32,
    /// The last failure, for people.
    pub last_error: Option<String>,
    /// When it last answered (wall clock).
    pub last_ok: Option<SystemTime>,
}

/// Every channel's latest reading and every device's health.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Fixed facts, by channel index.
    pub info: Arc<Vec<ChannelInfo>>,
    /// Latest reading, by channel index.
    pub readings: Vec<Reading>,
    /// Device health, by device index.
    pub devices: Vec<DeviceHealth>,
}

/// One poll's results for the recorder: (channel index, reading).
pub type Batch = Vec<(usize, Reading)>;

/// Which channels' readings changed since the alarm task last looked, so
/// that it does not walk every channel whenever one changes. Marked while
/// the snapshot is being modified (under its write lock) and taken while
/// the alarm task holds a borrow of it, so the two always agree.
#[derive(Debug)]
pub struct Changes(std::sync::Mutex<ChangeSet>);

#[derive(Debug)]
struct ChangeSet {
    marked: Vec<bool>,
    list: Vec<usize>,
}

impl Changes {
    /// Every one of `channels` marked changed: the first look sees all.
    pub fn new(channels: usize) -> Self {
        Changes(std::sync::Mutex::new(ChangeSet {
            marked: vec![true; channels],
            list: (0..channels).collect(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ChangeSet> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Channel `i` changed.
    pub(crate) fn mark(&self, i: usize) {
        self.mark_all([i]);
    }

    /// These channels changed (one lock for a poll's batch).
    pub(crate) fn mark_all(&self, channels: impl IntoIterator<Item = usize>) {
        let mut c = self.lock();
        let ChangeSet { marked, list } = &mut *c;
        for i in channels {
            if let Some(m) = marked.get_mut(i)
                && !*m
            {
                *m = true;
                list.push(i);
            }
        }
    }

    /// The channels changed since the last call, into `into` (cleared
    /// first). There is one taker, the alarm task: another would take the
    /// marks from it.
    pub(crate) fn take(&self, into: &mut Vec<usize>) {
        into.clear();
        let mut c = self.lock();
        let ChangeSet { marked, list } = &mut *c;
        for &i in list.iter() {
            marked[i] = false;
        }
        std::mem::swap(list, into);
    }
}

/// What acquisition hands to the rest of the daemon.
#[derive(Debug, Clone)]
pub struct Handle {
    /// Latest readings.
    pub snapshot: watch::Receiver<Snapshot>,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The channels changed since the alarm task last looked.
    pub changes: Arc<Changes>,
    /// Channels in calibration (标校), and their last calibration dates.
    pub calibrations: Arc<calibration::Calibrations>,
}

/// How readings leave the bus tasks.
#[derive(Debug, Clone)]
pub(crate) struct Sink {
    beats: Arc<crate::heartbeat::Heartbeats>,
    snapshot: Arc<watch::Sender<Snapshot>>,
    changes: Arc<Changes>,
    /// Every poll's per-minute statistics, taken by the recorder.
    minutes: Arc<recorder::MinuteBook>,
    calibrations: Arc<calibration::Calibrations>,
    metrics: Arc<Metrics>,
    warm_until: Instant,
    /// When the process started: the first poll's delay is measured from it.
    started: Instant,
}

impl Sink {
    /// Publishes a poll's readings and device health at once.
    fn publish(&self, device: usize, health: &DeviceHealth, batch: Batch) {
        let now = Instant::now();
        let batch: Batch = batch
            .into_iter()
            .map(|(i, r)| {
                // During warm-up nothing is a value yet; faults stay faults.
                if r.state == ReadingState::Ok && now < self.warm_until {
                    let wall = r.wall;
                    (
                        i,
                        Reading::fault(ReadingState::WarmingUp, "warming up", r.at, wall),
                    )
                } else {
                    (i, r)
                }
            })
            .collect();
        self.beats.acquisition_beat();
        self.snapshot.send_modify(|s| {
            for (i, r) in &batch {
                if let Some(slot) = s.readings.get_mut(*i) {
                    *slot = r.clone();
                }
            }
            self.changes.mark_all(batch.iter().map(|(i, _)| *i));
            if let Some(d) = s.devices.get_mut(device) {
                *d = health.clone();
            }
        });
        if self
            .metrics
            .first_poll_us
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            let since = self.started.elapsed();
            let us = u64::try_from(since.as_micros()).unwrap_or(u64::MAX).max(1);
            let _ = self.metrics.first_poll_us.compare_exchange(
                0,
                us,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        let dropped = self.minutes.add(&batch, &self.calibrations);
        if dropped > 0 {
            self.metrics.recorder_dropped.add(dropped);
        }
    }
}

/// Starts one task per bus plus the staleness sweeper; they stop on
/// `shutdown`. Returns the handle and the per-minute book the recorder
/// takes from.
pub fn start(
    cfg: &Arc<Config>,
    started: Instant,
    beats: &Arc<crate::heartbeat::Heartbeats>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> (Handle, Arc<recorder::MinuteBook>) {
    let now = Instant::now();
    let wall = SystemTime::now();
    let info: Arc<Vec<ChannelInfo>> = Arc::new(
        cfg.channels
            .iter()
            .map(|c| ChannelInfo {
                id: c.id.clone(),
                kind: c.kind,
                unit: c.unit.clone(),
                location: c.location.clone(),
                name: c.name.clone(),
                device: c.device.clone(),
                poll: c.poll,
            })
            .collect(),
    );
    // Before its first poll a channel has no reading: that is warming up
    // (power cut on guard channels, no alarm), and turns stale if no poll
    // result comes within two intervals.
    let initial_state = ReadingState::WarmingUp;
    let snapshot = Snapshot {
        info: Arc::clone(&info),
        readings: cfg
            .channels
            .iter()
            .map(|_| Reading::fault(initial_state, "no reading yet", now, wall))
            .collect(),
        devices: cfg
            .devices
            .iter()
            .map(|d| DeviceHealth {
                id: d.id.clone(),
                online: false,
                consecutive_failures: 0,
                last_error: Some("not polled yet".into()),
                last_ok: None,
            })
            .collect(),
    };
    let (tx, rx) = watch::channel(snapshot);
    let tx = Arc::new(tx);
    let changes = Arc::new(Changes::new(cfg.channels.len()));
    let metrics = Arc::new(Metrics::new(cfg.buses.iter().map(|b| b.id.clone())));
    // A recorder behind (stalled disk) loses its oldest minutes, counted;
    // polling never waits for it.
    let minutes = Arc::new(recorder::MinuteBook::new(cfg.channels.len()));
    let calibrations = Arc::new(calibration::Calibrations::new(cfg.channels.len()));
    let sink = Sink {
        beats: Arc::clone(beats),
        snapshot: Arc::clone(&tx),
        changes: Arc::clone(&changes),
        minutes: Arc::clone(&minutes),
        calibrations: Arc::clone(&calibrations),
        metrics: Arc::clone(&metrics),
        warm_until: now + cfg.acquisition.warm_up,
        started,
    };
    for (bi, bus) in cfg.buses.iter().enumerate() {
        let requests = plan::plan(cfg, &bus.id, cfg.acquisition.coalesce);
        if requests.is_empty() {
            tracing::warn!(bus = %bus.id, "bus has no channels; not polling it");
            continue;
        }
        // A serial line has one master: one task asks every device in turn.
        // So does a TCP gateway, unless the bus says its devices may be
        // polled at once: then one task and one connection per device.
        let groups: Vec<Vec<plan::Request>> = match (bus.transport, bus.concurrent) {
            (Transport::Rtu, _) | (Transport::Tcp, false) => vec![requests],
            (Transport::Tcp, true) => {
                let mut by_device: Vec<Vec<plan::Request>> = Vec::new();
                for r in requests {
                    match by_device.iter_mut().find(|g| g[0].device == r.device) {
                        Some(g) => g.push(r),
                        None => by_device.push(vec![r]),
                    }
                }
                by_device
            }
        };
        for group in groups {
            let task = poller::BusPoller::new(Arc::clone(cfg), bi, group, sink.clone());
            let span = tracing::info_span!("bus", id = %bus.id);
            tracker.spawn(task.run(shutdown.clone()).instrument(span));
        }
    }
    tracker.spawn(sweep_stale(tx, Arc::clone(&changes), shutdown.clone()));
    (
        Handle {
            snapshot: rx,
            metrics,
            changes,
            calibrations,
        },
        minutes,
    )
}

/// Marks readings stale that are older than two poll intervals. It runs
/// apart from the bus tasks so that a hung bus still shows as stale.
///
/// It sleeps until the first live reading would turn stale, but never
/// longer than the shortest poll interval: a reading that arrives while it
/// sleeps turns stale two of its intervals later at the earliest, so it is
/// always looked at in time. Readings turn stale on the millisecond, and
/// with every channel polled on time the sweep walks the channels once per
/// shortest interval, not ten times a second.
async fn sweep_stale(
    tx: Arc<watch::Sender<Snapshot>>,
    changes: Arc<Changes>,
    shutdown: CancellationToken,
) {
    let shortest = tx
        .borrow()
        .info
        .iter()
        .map(|c| c.poll)
        .min()
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_millis(100));
    loop {
        let now = Instant::now();
        let mut next = now + shortest;
        tx.send_if_modified(|s| {
            let mut changed = false;
            for (i, (r, info)) in s.readings.iter_mut().zip(s.info.iter()).enumerate() {
                if !matches!(r.state, ReadingState::Ok | ReadingState::WarmingUp) {
                    continue;
                }
                let limit = info.poll * 2;
                if now.duration_since(r.at) > limit {
                    tracing::warn!(channel = %info.id, "reading is stale");
                    // Stamped when detected, so history shows when it went stale.
                    *r = Reading::fault(
                        ReadingState::Stale,
                        "no fresh reading",
                        now,
                        SystemTime::now(),
                    );
                    changes.mark(i);
                    changed = true;
                } else {
                    // Stale once strictly older than the limit.
                    next = next.min(r.at + limit + Duration::from_millis(1));
                }
            }
            changed
        });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(next.into()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::one_channel_snapshot as snapshot;

    #[tokio::test]
    async fn a_reading_older_than_two_polls_turns_stale_not_zero() {
        let old = Instant::now() - Duration::from_millis(2500);
        let (tx, mut rx) = watch::channel(snapshot(
            Duration::from_secs(1),
            Reading::ok(0.42, old, SystemTime::now()),
        ));
        let stop = CancellationToken::new();
        let task = tokio::spawn(sweep_stale(
            Arc::new(tx),
            Arc::new(Changes::new(1)),
            stop.clone(),
        ));
        let _ = tokio::time::timeout(Duration::from_secs(2), rx.changed()).await;
        let r = rx.borrow().readings[0].clone();
        assert_eq!((r.state, r.value), (ReadingState::Stale, None));
        stop.cancel();
        let _ = task.await;
    }

    #[tokio::test]
    async fn fresh_readings_are_not_stale() {
        let (tx, rx) = watch::channel(snapshot(
            Duration::from_secs(1),
            Reading::ok(0.42, Instant::now(), SystemTime::now()),
        ));
        let stop = CancellationToken::new();
        let task = tokio::spawn(sweep_stale(
            Arc::new(tx),
            Arc::new(Changes::new(1)),
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(rx.borrow().readings[0].state, ReadingState::Ok);
        stop.cancel();
        let _ = task.await;
    }

    #[tokio::test]
    async fn a_reading_that_arrives_while_the_sweep_sleeps_turns_stale_in_time() {
        // Channel 0 polls hourly, so the sweep would sleep long; channel 1
        // polls every 200 ms and has no live reading yet.
        let mut snap = snapshot(
            Duration::from_secs(3600),
            Reading::ok(1.0, Instant::now(), SystemTime::now()),
        );
        let mut fast = snap.info[0].clone();
        fast.id = "co".into();
        fast.poll = Duration::from_millis(200);
        snap.info = Arc::new(vec![snap.info[0].clone(), fast]);
        snap.readings.push(Reading::fault(
            ReadingState::CommFault,
            "timeout",
            Instant::now(),
            SystemTime::now(),
        ));
        let (tx, mut rx) = watch::channel(snap);
        let tx = Arc::new(tx);
        let changes = Arc::new(Changes::new(2));
        let stop = CancellationToken::new();
        let task = tokio::spawn(sweep_stale(
            Arc::clone(&tx),
            Arc::clone(&changes),
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(150)).await;
        let mut seen = Vec::new();
        changes.take(&mut seen);
        let arrived = Instant::now();
        tx.send_modify(|s| s.readings[1] = Reading::ok(5.0, arrived, SystemTime::now()));
        rx.borrow_and_update();
        let stale = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                let _ = rx.changed().await;
                if rx.borrow_and_update().readings[1].state == ReadingState::Stale {
                    return Instant::now();
                }
            }
        })
        .await;
        let after = stale.map(|t| t.duration_since(arrived));
        assert!(
            after
                .as_ref()
                .is_ok_and(|d| *d > Duration::from_millis(400) && *d < Duration::from_millis(1500)),
            "stale {after:?} after its reading: two polls are 400 ms, and an hourly neighbour must not put the sweep to sleep"
        );
        assert_eq!(rx.borrow().readings[0].state, ReadingState::Ok);
        changes.take(&mut seen);
        assert_eq!(seen, [1], "the sweep tells the alarm task what it changed");
        stop.cancel();
        let _ = task.await;
    }

    #[test]
    fn changes_are_taken_once_each_and_in_order() {
        let c = Changes::new(4);
        let mut got = Vec::new();
        c.take(&mut got);
        assert_eq!(got, [0, 1, 2, 3], "the first look sees every channel");
        c.take(&mut got);
        assert!(got.is_empty());
        for i in [2, 0, 2, 9, 2] {
            c.mark(i);
        }
        c.take(&mut got);
        assert_eq!(got, [2, 0], "each once; unknown channels ignored");
        c.mark(2);
        c.take(&mut got);
        assert_eq!(got, [2]);
    }

    #[test]
    fn during_warm_up_good_values_are_withheld_and_faults_kept() {
        let now = Instant::now();
        let (tx, rx) = watch::channel(snapshot(
            Duration::from_secs(1),
            Reading::ok(0.1, now, SystemTime::now()),
        ));
        let sink = Sink {
            beats: crate::heartbeat::Heartbeats::new(),
            snapshot: Arc::new(tx),
            changes: Arc::new(Changes::new(1)),
            minutes: Arc::new(recorder::MinuteBook::new(1)),
            calibrations: Arc::new(calibration::Calibrations::new(1)),
            metrics: Arc::new(Metrics::new(std::iter::empty())),
            warm_until: now + Duration::from_secs(30),
            started: now,
        };
        let health = rx.borrow().devices[0].clone();
        sink.publish(
            0,
            &health,
            vec![(0, Reading::ok(0.5, now, SystemTime::now()))],
        );
        assert_eq!(rx.borrow().readings[0].state, ReadingState::WarmingUp);
        assert_eq!(rx.borrow().readings[0].value, None);
        sink.publish(
            0,
            &health,
            vec![(
                0,
                Reading::fault(ReadingState::CommFault, "timeout", now, SystemTime::now()),
            )],
        );
        assert_eq!(rx.borrow().readings[0].state, ReadingState::CommFault);
    }
}
