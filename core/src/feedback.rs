//! Power feedback (馈电): whether the power the relay was told to allow or
//! cut is what the feeder shows.
//!
//! AQ 6201 systems record 馈电异常 when a cut was commanded and power is
//! still present after the contactor's time, or when power is absent while
//! it is allowed. [`FeedbackWatch`] tells that from two samples per pass:
//! what the relay is commanded to do and what the feedback input reads
//! (`None`: it cannot be read, which is a mismatch too). A mismatch must
//! hold for `delay` (the contactor's travel and the feedback's own poll)
//! before it counts; a change of command starts the delay again.

use std::time::{Duration, Instant};

/// What the feedback shows against the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// A cut was commanded and power is still there: the contactor stuck
    /// (welded contacts, a bridged relay) — the dangerous one.
    StillPowered,
    /// Power is allowed and absent: tripped upstream, a blown fuse, a
    /// broken feedback wire.
    NoPower,
    /// The feedback input cannot be read.
    Unreadable,
}

impl Mismatch {
    /// The name used in logs and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Mismatch::StillPowered => "still_powered",
            Mismatch::NoPower => "no_power",
            Mismatch::Unreadable => "unreadable",
        }
    }
}

/// Watches one relay's feedback.
#[derive(Debug, Clone)]
pub struct FeedbackWatch {
    delay: Duration,
    commanded: Option<bool>,
    since: Option<(Mismatch, Instant)>,
}

impl FeedbackWatch {
    /// A watch that lets a mismatch last `delay` before it counts.
    pub fn new(delay: Duration) -> Self {
        FeedbackWatch {
            delay,
            commanded: None,
            since: None,
        }
    }

    /// Takes one sample: `power_allowed` as commanded now, `present` as the
    /// feedback reads. Returns the mismatch that has held for the delay.
    pub fn observe(
        &mut self,
        power_allowed: bool,
        present: Option<bool>,
        now: Instant,
    ) -> Option<Mismatch> {
        if self.commanded != Some(power_allowed) {
            self.commanded = Some(power_allowed);
            self.since = None;
        }
        let m = match present {
            None => Some(Mismatch::Unreadable),
            Some(p) if p == power_allowed => None,
            Some(true) => Some(Mismatch::StillPowered),
            Some(false) => Some(Mismatch::NoPower),
        };
        match (m, self.since) {
            (None, _) => {
                self.since = None;
                None
            }
            (Some(m), Some((was, t))) if was == m => {
                (now.saturating_duration_since(t) >= self.delay).then_some(m)
            }
            (Some(m), _) => {
                self.since = Some((m, now));
                self.delay.is_zero().then_some(m)
            }
        }
    }

    /// When a mismatch seen now would count, to wake up for it.
    pub fn deadline(&self) -> Option<Instant> {
        self.since.map(|(_, t)| t + self.delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(2);

    #[test]
    fn a_healthy_cut_is_no_mismatch() {
        let t0 = Instant::now();
        let mut w = FeedbackWatch::new(D);
        assert_eq!(w.observe(true, Some(true), t0), None);
        // Cut commanded; the contactor takes 100 ms.
        assert_eq!(w.observe(false, Some(true), t0), None);
        assert_eq!(w.deadline(), Some(t0 + D));
        assert_eq!(
            w.observe(false, Some(false), t0 + Duration::from_millis(100)),
            None
        );
        assert_eq!(w.observe(false, Some(false), t0 + D * 3), None);
        assert_eq!(w.deadline(), None);
    }

    #[test]
    fn a_stuck_contactor_counts_after_the_delay_only() {
        let t0 = Instant::now();
        let mut w = FeedbackWatch::new(D);
        w.observe(true, Some(true), t0);
        assert_eq!(w.observe(false, Some(true), t0), None);
        assert_eq!(
            w.observe(false, Some(true), t0 + D - Duration::from_millis(1)),
            None
        );
        assert_eq!(
            w.observe(false, Some(true), t0 + D),
            Some(Mismatch::StillPowered)
        );
    }

    #[test]
    fn lost_power_and_an_unreadable_input_count_and_a_new_command_restarts() {
        let t0 = Instant::now();
        let mut w = FeedbackWatch::new(D);
        w.observe(true, Some(false), t0);
        assert_eq!(
            w.observe(true, Some(false), t0 + D),
            Some(Mismatch::NoPower)
        );
        // The command changes: the delay starts again.
        assert_eq!(w.observe(false, None, t0 + D), None);
        assert_eq!(
            w.observe(false, None, t0 + D * 2),
            Some(Mismatch::Unreadable)
        );
        // A mismatch of another kind starts its own delay.
        assert_eq!(w.observe(false, Some(true), t0 + D * 2), None);
    }
}
