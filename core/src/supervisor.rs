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

/// How long the supervisor may sleep after a step: until the engine's
/// silence would pass its limit (so a stall is seen as it happens, not up
/// to a step later) or the next feed is due, whichever comes first, and
/// never longer than a second. `step` while the outputs are forced
/// fail-safe, and when a feed is due but withheld (acquisition stalled, an
/// output not following), so those are looked at again every step and
/// never in a spin. At least 10 ms.
///
/// `since_feed` is the time since the last feed, counted after this step.
pub fn sleep_for(
    engine_age: Duration,
    since_feed: Duration,
    fail_safe: bool,
    l: &Limits,
    step: Duration,
) -> Duration {
    if fail_safe {
        return step;
    }
    // Just past the limit: at the limit itself the engine still counts as
    // alive.
    let stall_in = (l.engine + Duration::from_millis(1)).saturating_sub(engine_age);
    let feed_in = match l.feed_every.saturating_sub(since_feed) {
        Duration::ZERO => step,
        d => d,
    };
    stall_in
        .min(feed_in)
        .min(Duration::from_secs(1))
        .max(Duration::from_millis(10))
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
    fn sleeps_until_a_stall_could_begin_or_the_next_feed_is_due() {
        let ms = Duration::from_millis;
        let step = ms(100);
        // Healthy, just fed: until the next feed (the engine's limit is
        // further away).
        assert_eq!(sleep_for(ms(100), ms(0), false, &L, step), ms(1000));
        assert_eq!(sleep_for(ms(100), ms(400), false, &L, step), ms(600));
        // The engine quiet for 1.8 s: just past its 2 s limit, before the
        // feed.
        assert_eq!(sleep_for(ms(1800), ms(0), false, &L, step), ms(201));
        // At the limit: a few ms, never zero.
        assert_eq!(sleep_for(ms(2000), ms(0), false, &L, step), ms(10));
        // A feed due but withheld: every step, not a spin.
        assert_eq!(sleep_for(ms(0), ms(1500), false, &L, step), step);
        // Forced fail-safe: every step.
        assert_eq!(sleep_for(ms(3000), ms(0), true, &L, step), step);
        // Never more than a second, whatever the limits.
        let slow = Limits {
            engine: Duration::from_secs(60),
            acquisition: Duration::from_secs(60),
            feed_every: Duration::from_secs(30),
        };
        assert_eq!(sleep_for(ms(0), ms(0), false, &slow, step), ms(1000));
    }

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
