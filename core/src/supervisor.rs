//! The output supervisor's rule, without I/O: when to feed the watchdogs
//! and when to force the fail-safe outputs, from the heartbeats' ages. The
//! thread that applies it is the daemon's.

use std::time::Duration;

/// When progress counts as stalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The engine loops at least every 500 ms (more often with readings);
    /// longer than this without a loop is a stall.
    pub engine: Duration,
    /// Acquisition publishes at least once per slowest poll or probe.
    pub acquisition: Duration,
    /// How often the watchdogs are fed while all is well.
    pub feed_every: Duration,
}

/// What one supervisor step decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Force the fail-safe outputs now.
    pub fail_safe: bool,
    /// Feed the watchdogs now.
    pub feed: bool,
}

/// The supervisor's rule, without I/O: given the heartbeat ages and the time
/// since the last feed.
pub fn decide(
    engine_age: Duration,
    acquisition_age: Duration,
    since_feed: Duration,
    l: &Limits,
) -> Decision {
    let engine_ok = engine_age <= l.engine;
    let acquisition_ok = acquisition_age <= l.acquisition;
    Decision {
        fail_safe: !engine_ok,
        feed: engine_ok && acquisition_ok && since_feed >= l.feed_every,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        engine: Duration::from_secs(2),
        acquisition: Duration::from_secs(10),
        feed_every: Duration::from_secs(1),
    };

    #[test]
    fn feeds_only_while_both_make_progress() {
        let s = Duration::from_secs;
        assert_eq!(
            decide(s(0), s(0), s(1), &L),
            Decision {
                fail_safe: false,
                feed: true
            }
        );
        assert!(!decide(s(0), s(0), Duration::from_millis(500), &L).feed);
        assert_eq!(
            decide(s(3), s(0), s(5), &L),
            Decision {
                fail_safe: true,
                feed: false
            }
        );
        assert_eq!(
            decide(s(0), s(11), s(5), &L),
            Decision {
                fail_safe: false,
                feed: false
            }
        );
    }
}
