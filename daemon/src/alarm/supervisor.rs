//! The output supervisor: an OS thread apart from the async runtime that
//! feeds the watchdogs only while acquisition and the alarm engine make
//! progress, and forces the fail-safe outputs when the engine stalls.
//!
//! It shares nothing with the runtime but two atomic heartbeats and the
//! panel's mutex, so a runtime blocked by a bug still ends in the safe state:
//! power cut, red lamp, siren; and, the watchdogs unfed, a restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pithead_hal::Watchdog;

use super::panel::Panel;
use crate::heartbeat::Heartbeats;

/// How often the supervisor looks while something is wrong (outputs
/// forced fail-safe, a feed withheld). Half the feed interval when that is
/// shorter. While all is well it sleeps until the engine's silence would
/// pass its limit or the next feed is due ([`sleep_for`]): about once a
/// second, and a stall is seen as it begins.
const STEP: Duration = Duration::from_millis(100);

pub use pithead_core::supervisor::{Limits, decide, sleep_for};

/// Starts the supervisor thread. It stops when `stop` is set: it puts the
/// outputs in their stopped state (power cut) and only then disarms the
/// watchdogs, so no way out of the daemon leaves the power on with nothing
/// guarding it. While `stopping` is set (a clean shutdown draining) it no
/// longer takes the engine's silence for a stall.
pub fn spawn(
    panel: Arc<Mutex<Panel>>,
    beats: Arc<Heartbeats>,
    mut watchdogs: Vec<Box<dyn Watchdog>>,
    limits: Limits,
    stop: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("supervisor".into()).spawn(move || {
        let mut last_feed: Option<Instant> = None;
        let mut stalled = false;
        let mut starving = false;
        let mut failing_logged = false;
        let step = STEP.min(limits.feed_every / 2).max(Duration::from_millis(10));
        let mut wait = step;
        while !stop.load(Ordering::Relaxed) {
            // Unparked by the guard when the daemon stops.
            std::thread::park_timeout(wait);
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let now = Instant::now();
            let (engine_age, acquisition_age) = beats.ages(now);
            let since_feed = last_feed.map_or(Duration::MAX, |t| now.duration_since(t));
            let mut d = decide(engine_age, acquisition_age, since_feed, &limits);
            if stopping.load(Ordering::Relaxed) {
                d.fail_safe = false;
            }
            // Decided before the feed is known to happen: a feed withheld
            // below keeps `since_feed` due, which means every step.
            wait = sleep_for(
                engine_age,
                if d.feed { Duration::ZERO } else { since_feed },
                d.fail_safe,
                &limits,
                step,
            );
            // A poisoned lock still guards a usable panel: take it.
            let mut p = panel.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if d.fail_safe {
                // Act first, log after: a stalled log must not delay this.
                p.fail_safe();
            }
            // Sticky: as long as any output is not what it was told to be,
            // not only in the step its error was counted.
            let failing: Vec<String> = p.failing().into_iter().map(str::to_owned).collect();
            drop(p);
            if d.fail_safe && !stalled {
                tracing::error!(?engine_age, "alarm engine stalled: outputs forced to fail-safe, watchdog no longer fed");
            } else if !d.fail_safe && stalled {
                tracing::warn!("alarm engine running again");
            }
            stalled = d.fail_safe;
            let acquisition_ok = acquisition_age <= limits.acquisition;
            if !acquisition_ok && !starving {
                tracing::error!(?acquisition_age, "acquisition made no progress: watchdog no longer fed");
            }
            starving = !acquisition_ok;
            if !failing.is_empty() {
                // An output that cannot be set (the relay!) is a box that
                // cannot guard: let the watchdog reset it.
                if !failing_logged {
                    tracing::error!(outputs = ?failing, "outputs not in the state they were told: watchdog no longer fed");
                    failing_logged = true;
                }
                wait = wait.min(step);
                continue;
            }
            if failing_logged {
                tracing::warn!("every output follows again: watchdog fed again");
                failing_logged = false;
            }
            if d.feed {
                for w in &mut watchdogs {
                    if let Err(e) = w.feed() {
                        tracing::error!(watchdog = w.name(), error = %e, "cannot feed watchdog");
                    }
                }
                last_feed = Some(now);
            }
        }
        // Power first: a stop that went wrong (a drain that timed out, a
        // task that hung) still ends with the power cut before the
        // hardware watchdog is disarmed.
        panel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .apply(&super::panel::STOPPED);
        for w in &mut watchdogs {
            if let Err(e) = w.disarm() {
                tracing::warn!(watchdog = w.name(), error = %e, "cannot disarm watchdog");
            }
        }
    })
}

/// systemd's watchdog: `WATCHDOG=1` over `NOTIFY_SOCKET`.
#[derive(Debug)]
pub struct SystemdWatchdog;

impl Watchdog for SystemdWatchdog {
    fn feed(&mut self) -> Result<(), pithead_hal::HalError> {
        sd_notify::notify(&[sd_notify::NotifyState::Watchdog]).map_err(|e| {
            pithead_hal::HalError::Watchdog {
                name: "systemd".into(),
                reason: e.to_string(),
            }
        })
    }

    fn name(&self) -> &str {
        "systemd"
    }
}

#[cfg(test)]
mod tests {
    use pithead_hal::sim::SimWatchdog;

    use super::*;
    use crate::alarm::engine::{Beacon, Outputs};
    use crate::config::{OutputBackend, OutputsConfig};

    const L: Limits = Limits {
        engine: Duration::from_secs(2),
        acquisition: Duration::from_secs(10),
        feed_every: Duration::from_secs(1),
    };

    /// A simulated panel with power allowed, green, and its timeline.
    fn powered_sim_panel() -> (Arc<Mutex<Panel>>, pithead_hal::sim::Timeline) {
        let cfg = OutputsConfig {
            backend: OutputBackend::Sim,
            ..OutputsConfig::default()
        };
        let mut panel = Panel::open(&cfg, None).unwrap();
        let timeline = panel.timeline().cloned().unwrap_or_default();
        panel.apply(&Outputs {
            siren: false,
            beacon: Beacon::Green,
            power_allowed: true,
        });
        (Arc::new(Mutex::new(panel)), timeline)
    }

    #[test]
    fn a_stalled_engine_gets_fail_safe_outputs_and_starves_the_watchdog() {
        let (panel, timeline) = powered_sim_panel();
        let beats = Heartbeats::new();
        let stop = Arc::new(AtomicBool::new(false));
        let limits = Limits {
            engine: Duration::from_millis(300),
            acquisition: Duration::from_secs(5),
            feed_every: Duration::from_millis(100),
        };
        let handle = spawn(
            Arc::clone(&panel),
            Arc::clone(&beats),
            vec![Box::new(SimWatchdog::new(&timeline))],
            limits,
            Arc::clone(&stop),
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap();
        // Healthy for a while: fed, outputs untouched.
        for _ in 0..10 {
            beats.engine_beat();
            beats.acquisition_beat();
            std::thread::sleep(STEP);
        }
        let fed_while_healthy = timeline.of("watchdog").len();
        assert!(fed_while_healthy >= 2, "{fed_while_healthy}");
        assert!(
            panel
                .lock()
                .map(|p| p.current().power_allowed)
                .unwrap_or(false)
        );
        // The engine stops beating.
        let stalled_at = Instant::now();
        std::thread::sleep(Duration::from_millis(800));
        let feeds_after = timeline
            .of("watchdog")
            .into_iter()
            .filter(|c| c.at > stalled_at + Duration::from_millis(350))
            .count();
        assert_eq!(
            feeds_after, 0,
            "the watchdog must starve once the engine stalls"
        );
        assert_eq!(
            panel.lock().map(|p| p.current()).ok(),
            Some(Outputs::FAIL_SAFE)
        );
        let relay_dropped = timeline
            .of("power_relay")
            .last()
            .map(|c| (c.on, c.at >= stalled_at));
        assert_eq!(relay_dropped, Some((false, true)));
        stop.store(true, Ordering::Relaxed);
        let _ = handle.join();
    }

    /// An output that refuses to change, like a relay whose driver died.
    #[derive(Debug)]
    struct Stuck {
        name: &'static str,
        on: bool,
    }

    impl pithead_hal::Output for Stuck {
        fn set(&mut self, on: bool) -> Result<(), pithead_hal::HalError> {
            if on == self.on {
                return Ok(());
            }
            Err(pithead_hal::HalError::Output {
                name: self.name.into(),
                reason: "stuck".into(),
            })
        }
        fn get(&self) -> bool {
            self.on
        }
        fn name(&self) -> &str {
            self.name
        }
    }

    #[test]
    fn an_output_that_cannot_be_driven_starves_the_watchdog_for_as_long_as_it_lasts() {
        let timeline = pithead_hal::sim::Timeline::new();
        let sim = |name: &'static str, on| -> Box<dyn pithead_hal::Output> {
            Box::new(pithead_hal::sim::SimOutput::new(name, on, &timeline))
        };
        // The relay is energised and stays so whatever it is told.
        let panel = Arc::new(Mutex::new(Panel::with_outputs(
            [
                sim("siren", false),
                sim("beacon_red", true),
                sim("beacon_yellow", false),
                sim("beacon_green", false),
                Box::new(Stuck {
                    name: "power_relay",
                    on: true,
                }),
            ],
            Some(timeline.clone()),
        )));
        let beats = Heartbeats::new();
        let stop = Arc::new(AtomicBool::new(false));
        let limits = Limits {
            engine: Duration::from_secs(5),
            acquisition: Duration::from_secs(5),
            feed_every: Duration::from_millis(100),
        };
        let handle = spawn(
            Arc::clone(&panel),
            Arc::clone(&beats),
            vec![Box::new(SimWatchdog::new(&timeline))],
            limits,
            Arc::clone(&stop),
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap();
        let feeds = || {
            timeline
                .of(pithead_hal::sim::WATCHDOG)
                .into_iter()
                .filter(|c| c.on)
                .count()
        };
        // Power may flow: the stuck relay agrees, so all is well and fed.
        if let Ok(mut p) = panel.lock() {
            p.apply(&Outputs {
                siren: false,
                beacon: Beacon::Green,
                power_allowed: true,
            });
        }
        for _ in 0..8 {
            beats.engine_beat();
            beats.acquisition_beat();
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(feeds() >= 2, "fed while every output follows: {}", feeds());
        // Power must be cut; the relay does not follow. Everything else
        // makes progress for two seconds: the watchdog must stay unfed
        // throughout, not only in the step that saw the error.
        if let Ok(mut p) = panel.lock() {
            p.apply(&Outputs {
                siren: true,
                beacon: Beacon::Red,
                power_allowed: false,
            });
            assert_eq!(p.failing(), ["power_relay"]);
        }
        let before = feeds();
        for _ in 0..40 {
            beats.engine_beat();
            beats.acquisition_beat();
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            feeds(),
            before,
            "the watchdog was fed while the relay could not be driven"
        );
        stop.store(true, Ordering::Relaxed);
        let _ = handle.join();
    }

    #[test]
    fn stopping_cuts_the_power_before_the_watchdog_is_disarmed() {
        let (panel, timeline) = powered_sim_panel();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = spawn(
            Arc::clone(&panel),
            Heartbeats::new(),
            vec![Box::new(SimWatchdog::new(&timeline))],
            L,
            Arc::clone(&stop),
            Arc::new(AtomicBool::new(true)),
        )
        .unwrap();
        // Nothing else put the outputs in their stopped state (a drain that
        // timed out): the guard alone must.
        stop.store(true, Ordering::Relaxed);
        let _ = handle.join();
        let order: Vec<(String, bool)> = timeline
            .changes()
            .into_iter()
            .filter(|c| c.output == "power_relay" || c.output == pithead_hal::sim::WATCHDOG)
            .map(|c| (c.output, c.on))
            .collect();
        let cut = order
            .iter()
            .rposition(|c| *c == ("power_relay".into(), false));
        let disarmed = order
            .iter()
            .rposition(|c| *c == (pithead_hal::sim::WATCHDOG.into(), false));
        assert!(
            matches!((cut, disarmed), (Some(c), Some(d)) if c < d),
            "power cut, then the watchdog disarmed: {order:?}"
        );
        assert!(
            !panel
                .lock()
                .map(|p| p.current().power_allowed)
                .unwrap_or(true)
        );
    }
}
