//! Progress marks of the engine and of acquisition, read by the output
//! supervisor (`alarm::supervisor`). A leaf module: acquisition beats
//! without depending on the alarm side.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Progress marks, in milliseconds since `base`.
#[derive(Debug)]
pub struct Heartbeats {
    base: Instant,
    engine: AtomicU64,
    acquisition: AtomicU64,
}

impl Heartbeats {
    /// Both marks set to now.
    pub fn new() -> Arc<Self> {
        Arc::new(Heartbeats {
            base: Instant::now(),
            engine: AtomicU64::new(0),
            acquisition: AtomicU64::new(0),
        })
    }

    fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    /// The engine completed a loop.
    pub fn engine_beat(&self) {
        self.engine
            .store(self.ms(Instant::now()), Ordering::Relaxed);
    }

    /// Acquisition published a poll result.
    pub fn acquisition_beat(&self) {
        self.acquisition
            .store(self.ms(Instant::now()), Ordering::Relaxed);
    }

    /// Since the engine last completed a loop.
    #[cfg(test)]
    pub(crate) fn engine_age(&self) -> Duration {
        self.ages(Instant::now()).0
    }

    /// (engine, acquisition): since each last made progress.
    pub fn ages(&self, now: Instant) -> (Duration, Duration) {
        let now = self.ms(now);
        (
            Duration::from_millis(now.saturating_sub(self.engine.load(Ordering::Relaxed))),
            Duration::from_millis(now.saturating_sub(self.acquisition.load(Ordering::Relaxed))),
        )
    }
}
