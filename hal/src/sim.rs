//! Simulated outputs that record every change with its time.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use crate::{HalError, Output, Watchdog};

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

/// The shared record of the changes of every simulated output (the last
/// [`TIMELINE_CAP`]).
#[derive(Debug, Clone, Default)]
pub struct Timeline(Arc<Mutex<Vec<Change>>>);

impl Timeline {
    /// An empty timeline.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every change so far, in order.
    pub fn changes(&self) -> Vec<Change> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The changes of one output.
    pub fn of(&self, output: &str) -> Vec<Change> {
        self.changes()
            .into_iter()
            .filter(|c| c.output == output)
            .collect()
    }

    fn push(&self, change: Change) {
        if let Ok(mut v) = self.0.lock() {
            // A ring: a box on simulated outputs may run for months.
            if v.len() >= TIMELINE_CAP {
                v.drain(..TIMELINE_CAP / 10);
            }
            v.push(change);
        }
    }
}

/// A simulated output; changes go to its [`Timeline`].
#[derive(Debug)]
pub struct SimOutput {
    name: String,
    state: bool,
    timeline: Timeline,
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
        }
    }
}

impl Output for SimOutput {
    fn set(&mut self, on: bool) -> Result<(), HalError> {
        if on != self.state {
            self.state = on;
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
            output: "watchdog".into(),
            on: true,
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
}
