//! Simulated outputs that record every change with its time, optionally
//! mirrored to a file that outlives the process (as a GPIO line keeps its
//! level when the process that drove it dies), and faults to inject.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::{HalError, Input, Output, Watchdog};

/// One recorded change of an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The output's name.
    pub output: String,
    /// Its new state.
    pub on: bool,
    /// When it changed (monotonic).
    pub at: Instant,
    /// When it changed (wall clock), to compare with other processes.
    pub wall: SystemTime,
}

/// Changes a timeline keeps; the oldest tenth goes when it is full.
pub const TIMELINE_CAP: usize = 10_000;

/// The name under which watchdog feeds (on) and its disarming (off) are
/// recorded.
pub const WATCHDOG: &str = "watchdog";

/// The shared record of the changes of every simulated output (the last
/// [`TIMELINE_CAP`]).
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    changes: Arc<Mutex<Vec<Change>>>,
    mirror: Option<Arc<Mirror>>,
}

impl Timeline {
    /// An empty timeline.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty timeline whose outputs' states are also written to `path`
    /// (one `name=0|1` line each), by a thread of its own so that no output
    /// ever waits for the disk. The file is what a simulated output "is"
    /// once the process is gone: another process (a test, `pithead outputs
    /// safe`) reads or sets it.
    pub fn mirrored(path: &Path) -> std::io::Result<Self> {
        Ok(Timeline {
            changes: Arc::default(),
            mirror: Some(Mirror::start(path.to_owned())?),
        })
    }

    /// Waits (up to `within`) until the mirror file holds every change so
    /// far; false when it could not be written.
    pub fn flush(&self, within: Duration) -> bool {
        self.mirror.as_ref().is_none_or(|m| m.flush(within))
    }

    /// A copy of every change so far, in order.
    pub fn changes(&self) -> Vec<Change> {
        self.changes.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The changes of one output.
    pub fn of(&self, output: &str) -> Vec<Change> {
        self.changes()
            .into_iter()
            .filter(|c| c.output == output)
            .collect()
    }

    fn push(&self, change: Change) {
        if let Some(m) = &self.mirror
            && change.output != WATCHDOG
        {
            m.set(&change.output, change.on);
        }
        if let Ok(mut v) = self.changes.lock() {
            // A ring: a box on simulated outputs may run for months.
            if v.len() >= TIMELINE_CAP {
                v.drain(..TIMELINE_CAP / 10);
            }
            v.push(change);
        }
    }
}

/// Reads a mirror file written by [`Timeline::mirrored`]: output → on.
pub fn read_mirror(path: &Path) -> std::io::Result<BTreeMap<String, bool>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim() == "1"))
        .collect())
}

/// The latest states, written to a file by a thread of its own.
#[derive(Debug)]
struct Mirror {
    state: Mutex<MirrorState>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct MirrorState {
    outputs: BTreeMap<String, bool>,
    /// Bumped by every change; `written` catches up.
    version: u64,
    written: u64,
    failed: bool,
}

impl Mirror {
    fn start(path: PathBuf) -> std::io::Result<Arc<Mirror>> {
        let m = Arc::new(Mirror {
            state: Mutex::new(MirrorState::default()),
            wake: Condvar::new(),
        });
        let weak = Arc::downgrade(&m);
        std::thread::Builder::new()
            .name("sim-outputs".into())
            .spawn(move || Mirror::run(&weak, &path))?;
        Ok(m)
    }

    fn set(&self, output: &str, on: bool) {
        if let Ok(mut s) = self.state.lock() {
            s.outputs.insert(output.to_owned(), on);
            s.version += 1;
            self.wake.notify_all();
        }
    }

    fn flush(&self, within: Duration) -> bool {
        let Ok(s) = self.state.lock() else {
            return false;
        };
        let target = s.version;
        match self
            .wake
            .wait_timeout_while(s, within, |s| s.written < target && !s.failed)
        {
            Ok((s, _)) => s.written >= target,
            Err(_) => false,
        }
    }

    fn run(this: &std::sync::Weak<Mirror>, path: &Path) {
        let tmp = path.with_extension("tmp");
        loop {
            let Some(m) = this.upgrade() else {
                return;
            };
            let (text, version) = {
                let Ok(s) = m.state.lock() else {
                    return;
                };
                let Ok(mut s) = m
                    .wake
                    .wait_timeout_while(s, Duration::from_millis(500), |s| s.written >= s.version)
                    .map(|(s, _)| s)
                else {
                    return;
                };
                if s.written >= s.version {
                    continue;
                }
                s.failed = false;
                let text: String = s
                    .outputs
                    .iter()
                    .map(|(k, v)| format!("{k}={}\n", u8::from(*v)))
                    .collect();
                (text, s.version)
            };
            let ok = std::fs::write(&tmp, text)
                .and_then(|()| std::fs::rename(&tmp, path))
                .is_ok();
            if let Ok(mut s) = m.state.lock() {
                if ok {
                    s.written = s.written.max(version);
                } else {
                    s.failed = true;
                }
                m.wake.notify_all();
            }
        }
    }
}

/// A fault to inject into a simulated output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimFault {
    /// It cannot be switched off (a welded contact, a driver stuck on):
    /// `set(false)` fails.
    StuckOn,
    /// It cannot be switched at all: every change fails.
    Dead,
}

/// What can go wrong with the simulated contactor the power relay switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactFault {
    /// The contacts welded the first time they closed: power stays on
    /// whatever the relay is told (馈电异常: cut commanded, power present).
    Welded,
    /// The contacts never carry power (a blown fuse, a broken wire): power
    /// is absent while it is allowed.
    NoPower,
}

/// The contactor behind the simulated power relay, whose auxiliary contact
/// is the feedback input: it follows the relay's coil after `travel`,
/// unless a [`ContactFault`] is injected.
#[derive(Debug, Clone)]
pub struct Contactor {
    inner: Arc<Mutex<ContactState>>,
    travel: Duration,
}

#[derive(Debug)]
struct ContactState {
    coil: bool,
    before: bool,
    changed: Instant,
    fault: Option<ContactFault>,
    welded_closed: bool,
}

impl Contactor {
    /// A contactor whose contacts follow the coil `travel` after it changes.
    pub fn new(travel: Duration, fault: Option<ContactFault>) -> Self {
        Contactor {
            inner: Arc::new(Mutex::new(ContactState {
                coil: false,
                before: false,
                changed: Instant::now(),
                fault,
                welded_closed: false,
            })),
            travel,
        }
    }

    /// Injects (or clears) a fault from now on.
    pub fn set_fault(&self, fault: Option<ContactFault>) {
        if let Ok(mut s) = self.inner.lock() {
            s.fault = fault;
            s.welded_closed = fault == Some(ContactFault::Welded) && s.coil;
        }
    }

    fn coil(&self, on: bool) {
        if let Ok(mut s) = self.inner.lock()
            && s.coil != on
        {
            s.before = s.coil;
            s.coil = on;
            s.changed = Instant::now();
            if on && s.fault == Some(ContactFault::Welded) {
                s.welded_closed = true;
            }
        }
    }

    /// Whether the contacts carry power now.
    pub fn power_present(&self) -> bool {
        let Ok(s) = self.inner.lock() else {
            return false;
        };
        let settled = if s.changed.elapsed() < self.travel {
            s.before
        } else {
            s.coil
        };
        match s.fault {
            Some(ContactFault::NoPower) => false,
            Some(ContactFault::Welded) => s.welded_closed || settled,
            None => settled,
        }
    }

    /// Its auxiliary contact as an input named `name`.
    pub fn feedback(&self, name: impl Into<String>) -> SimFeedback {
        SimFeedback {
            name: name.into(),
            contactor: self.clone(),
        }
    }
}

/// The simulated contactor's auxiliary contact: on while it carries power.
#[derive(Debug)]
pub struct SimFeedback {
    name: String,
    contactor: Contactor,
}

impl Input for SimFeedback {
    fn read(&mut self) -> Result<bool, HalError> {
        Ok(self.contactor.power_present())
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// A simulated output; changes go to its [`Timeline`].
#[derive(Debug)]
pub struct SimOutput {
    name: String,
    state: bool,
    timeline: Timeline,
    fault: Option<SimFault>,
    contactor: Option<Contactor>,
}

impl SimOutput {
    /// A new output in state `initial`; the initial state is recorded too.
    pub fn new(name: impl Into<String>, initial: bool, timeline: &Timeline) -> Self {
        let name = name.into();
        timeline.push(Change {
            output: name.clone(),
            on: initial,
            at: Instant::now(),
            wall: SystemTime::now(),
        });
        Self {
            name,
            state: initial,
            timeline: timeline.clone(),
            fault: None,
            contactor: None,
        }
    }

    /// The same output as the coil of `contactor`.
    #[must_use]
    pub fn driving(self, contactor: &Contactor) -> Self {
        contactor.coil(self.state);
        Self {
            contactor: Some(contactor.clone()),
            ..self
        }
    }

    /// The same output with `fault` injected from now on.
    #[must_use]
    pub fn with_fault(mut self, fault: Option<SimFault>) -> Self {
        self.fault = fault;
        self
    }
}

impl Output for SimOutput {
    fn set(&mut self, on: bool) -> Result<(), HalError> {
        if on != self.state {
            let refused = match self.fault {
                Some(SimFault::Dead) => true,
                Some(SimFault::StuckOn) => !on,
                None => false,
            };
            if refused {
                return Err(HalError::Output {
                    name: self.name.clone(),
                    reason: format!("simulated fault {:?}: the line did not change", self.fault),
                });
            }
            self.state = on;
            if let Some(c) = &self.contactor {
                c.coil(on);
            }
            self.timeline.push(Change {
                output: self.name.clone(),
                on,
                at: Instant::now(),
                wall: SystemTime::now(),
            });
        }
        Ok(())
    }

    fn get(&self) -> bool {
        self.state
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// A simulated watchdog: each feed is a change of output `watchdog` to on.
#[derive(Debug)]
pub struct SimWatchdog {
    timeline: Timeline,
}

impl SimWatchdog {
    /// A watchdog recording into `timeline`.
    pub fn new(timeline: &Timeline) -> Self {
        SimWatchdog {
            timeline: timeline.clone(),
        }
    }
}

impl Watchdog for SimWatchdog {
    fn feed(&mut self) -> Result<(), HalError> {
        self.timeline.push(Change {
            output: WATCHDOG.into(),
            on: true,
            at: Instant::now(),
            wall: SystemTime::now(),
        });
        Ok(())
    }

    fn disarm(&mut self) -> Result<(), HalError> {
        self.timeline.push(Change {
            output: WATCHDOG.into(),
            on: false,
            at: Instant::now(),
            wall: SystemTime::now(),
        });
        Ok(())
    }

    fn name(&self) -> &str {
        "sim"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_changes_only() -> Result<(), HalError> {
        let t = Timeline::new();
        let mut siren = SimOutput::new("siren", false, &t);
        let mut relay = SimOutput::new("relay", false, &t);
        siren.set(true)?;
        siren.set(true)?;
        relay.set(true)?;
        siren.set(false)?;
        let siren_states: Vec<bool> = t.of("siren").iter().map(|c| c.on).collect();
        assert_eq!(siren_states, [false, true, false]);
        assert_eq!(t.changes().len(), 5);
        assert!(relay.get());
        assert!(t.changes().windows(2).all(|w| w[0].at <= w[1].at));
        Ok(())
    }

    #[test]
    fn a_stuck_output_refuses_to_go_off_and_keeps_its_state() -> Result<(), HalError> {
        let t = Timeline::new();
        let mut relay = SimOutput::new("relay", false, &t).with_fault(Some(SimFault::StuckOn));
        relay.set(true)?;
        assert!(relay.set(false).is_err());
        assert!(
            relay.get(),
            "get() is what the line does, not what was asked"
        );
        let mut dead = SimOutput::new("siren", false, &t).with_fault(Some(SimFault::Dead));
        assert!(dead.set(true).is_err());
        assert!(!dead.get());
        Ok(())
    }

    #[test]
    fn the_contactor_follows_the_relay_unless_it_welded() -> Result<(), HalError> {
        let t = Timeline::new();
        let c = Contactor::new(Duration::from_millis(20), None);
        let mut relay = SimOutput::new("power_relay", false, &t).driving(&c);
        let mut fb = c.feedback("power_feedback");
        assert!(!fb.read()?);
        relay.set(true)?;
        assert!(!fb.read()?, "the contacts take their travel time");
        std::thread::sleep(Duration::from_millis(30));
        assert!(fb.read()?);
        relay.set(false)?;
        std::thread::sleep(Duration::from_millis(30));
        assert!(!fb.read()?);

        c.set_fault(Some(ContactFault::Welded));
        relay.set(true)?;
        relay.set(false)?;
        std::thread::sleep(Duration::from_millis(30));
        assert!(fb.read()?, "welded: power stays after the cut");
        c.set_fault(Some(ContactFault::NoPower));
        relay.set(true)?;
        std::thread::sleep(Duration::from_millis(30));
        assert!(!fb.read()?, "no power although allowed");
        Ok(())
    }

    #[test]
    fn the_mirror_file_holds_the_latest_states() -> Result<(), HalError> {
        let dir = std::env::temp_dir().join(format!("pithead-mirror-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("outputs");
        let t = Timeline::mirrored(&path).map_err(|e| HalError::Output {
            name: "mirror".into(),
            reason: e.to_string(),
        })?;
        let mut relay = SimOutput::new("power_relay", false, &t);
        let mut siren = SimOutput::new("siren", false, &t);
        relay.set(true)?;
        siren.set(true)?;
        siren.set(false)?;
        SimWatchdog::new(&t).feed()?;
        assert!(t.flush(Duration::from_secs(5)));
        let m = read_mirror(&path).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            m.into_iter().collect::<Vec<_>>(),
            [
                ("power_relay".to_owned(), true),
                ("siren".to_owned(), false)
            ]
        );
        Ok(())
    }
}
