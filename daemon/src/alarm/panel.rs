//! The alarm panel: siren, three-lamp beacon and power-cut relay, driven
//! from the engine's [`Outputs`].

use std::path::Path;
use std::time::{Duration, SystemTime};

use pithead_hal::sim::{ContactFault, Contactor, SimFault, SimOutput, Timeline};
use pithead_hal::{HalError, Input, Output};

use super::engine::{Beacon, Outputs};
use crate::config::{OutputBackend, OutputsConfig, SimFaultSpec};

/// Every physical output.
#[derive(Debug)]
pub struct Panel {
    siren: Box<dyn Output>,
    red: Box<dyn Output>,
    yellow: Box<dyn Output>,
    green: Box<dyn Output>,
    relay: Box<dyn Output>,
    /// The relay's feedback contact, when it is an input line.
    feedback: Option<Box<dyn Input>>,
    /// The record of changes, for simulated outputs.
    timeline: Option<Timeline>,
    /// What the outputs were last told to show.
    wanted: Outputs,
    errors: u64,
}

/// The state at start, before the engine has decided anything, and when
/// the daemon stops: power cut, red lamp, siren quiet.
pub const STOPPED: Outputs = Outputs {
    siren: false,
    beacon: Beacon::Red,
    power_allowed: false,
};
const START: Outputs = STOPPED;

/// The environment variable that injects faults into simulated outputs:
/// `power_relay=stuck_on,siren=dead` (see `docs/SIMULATOR.md`).
pub const SIM_FAULT_ENV: &str = "PITHEAD_SIM_OUTPUT_FAULT";

/// The file, in the data directory, where simulated outputs keep their
/// states for other processes (and after this one is gone).
pub const SIM_STATE_FILE: &str = "sim-outputs";

/// The fault simulated output `name` has: from `outputs.sim_fault`, else
/// from [`SIM_FAULT_ENV`].
fn sim_fault(cfg: &OutputsConfig, name: &str) -> Option<SimFaultSpec> {
    let from = |spec: &str| {
        spec.split(',')
            .filter_map(|item| crate::config::parse_sim_fault(item).ok())
            .find(|(output, _)| *output == name)
            .map(|(_, f)| f)
    };
    cfg.sim_fault
        .as_deref()
        .and_then(from)
        .or_else(|| std::env::var(SIM_FAULT_ENV).ok().as_deref().and_then(from))
}

/// How long the simulated contactor takes to open or close.
const CONTACTOR_TRAVEL: Duration = Duration::from_millis(80);

impl Panel {
    /// Opens the outputs of `cfg`, each driven at once to the start state
    /// (power cut, red lamp, siren quiet). Simulated outputs keep their
    /// states in `sim_state` too, when given.
    pub fn open(cfg: &OutputsConfig, sim_state: Option<&Path>) -> Result<Panel, HalError> {
        let (siren, red, yellow, green, relay) = (
            START.siren,
            START.beacon == Beacon::Red,
            false,
            false,
            START.power_allowed,
        );
        match cfg.backend {
            OutputBackend::Sim => {
                let t = match sim_state {
                    Some(path) => Timeline::mirrored(path).map_err(|e| HalError::Output {
                        name: "sim".into(),
                        reason: format!("cannot keep states in {}: {e}", path.display()),
                    })?,
                    None => Timeline::new(),
                };
                let line_fault = |name: &str| match sim_fault(cfg, name) {
                    Some(SimFaultSpec::StuckOn) => Some(SimFault::StuckOn),
                    Some(SimFaultSpec::Dead) => Some(SimFault::Dead),
                    _ => None,
                };
                let contact_fault = match sim_fault(cfg, "power_relay") {
                    Some(SimFaultSpec::Welded) => Some(ContactFault::Welded),
                    Some(SimFaultSpec::NoPower) => Some(ContactFault::NoPower),
                    _ => None,
                };
                let sim = |name: &str, on: bool| {
                    SimOutput::new(name, on, &t).with_fault(line_fault(name))
                };
                let contactor = Contactor::new(CONTACTOR_TRAVEL, contact_fault);
                let feedback = cfg
                    .power_feedback
                    .as_ref()
                    .and_then(|f| f.line)
                    .map(|_| -> Box<dyn Input> { Box::new(contactor.feedback("power_feedback")) });
                Ok(Panel {
                    siren: Box::new(sim("siren", siren)),
                    red: Box::new(sim("beacon_red", red)),
                    yellow: Box::new(sim("beacon_yellow", yellow)),
                    green: Box::new(sim("beacon_green", green)),
                    relay: Box::new(sim("power_relay", relay).driving(&contactor)),
                    feedback,
                    timeline: Some(t),
                    wanted: START,
                    errors: 0,
                })
            }
            OutputBackend::Gpio => {
                let open = |name: &str,
                            l: crate::config::Line,
                            on: bool|
                 -> Result<Box<dyn Output>, HalError> {
                    Ok(Box::new(pithead_hal::gpio::open(
                        &cfg.chip,
                        l.line,
                        l.active_low,
                        name,
                        on,
                    )?))
                };
                let feedback = match cfg
                    .power_feedback
                    .as_ref()
                    .and_then(|f| f.line.map(|l| (l, f.active_low)))
                {
                    Some((line, active_low)) => Some(Box::new(pithead_hal::gpio::open_input(
                        &cfg.chip,
                        line,
                        active_low,
                        "power_feedback",
                    )?) as Box<dyn Input>),
                    None => None,
                };
                Ok(Panel {
                    feedback,
                    siren: open("siren", cfg.siren, siren)?,
                    red: open("beacon_red", cfg.beacon_red, red)?,
                    yellow: open("beacon_yellow", cfg.beacon_yellow, yellow)?,
                    green: open("beacon_green", cfg.beacon_green, green)?,
                    relay: open("power_relay", cfg.power_relay, relay)?,
                    timeline: None,
                    wanted: START,
                    errors: 0,
                })
            }
        }
    }

    /// A panel over given outputs (tests: failing ones), in the start state.
    #[cfg(test)]
    pub(crate) fn with_outputs(outputs: [Box<dyn Output>; 5], timeline: Option<Timeline>) -> Panel {
        let [siren, red, yellow, green, relay] = outputs;
        Panel {
            siren,
            red,
            yellow,
            green,
            relay,
            feedback: None,
            timeline,
            wanted: START,
            errors: 0,
        }
    }

    /// The outputs whose state is not what they were last told to show
    /// (a line that could not be set): while any is, the box cannot be
    /// trusted to guard, so the supervisor stops feeding the watchdogs.
    /// Every [`Panel::apply`] tries them again.
    pub fn failing(&self) -> Vec<&str> {
        let w = &self.wanted;
        [
            (&self.relay, w.power_allowed),
            (&self.red, w.beacon == Beacon::Red),
            (&self.yellow, w.beacon == Beacon::Yellow),
            (&self.green, w.beacon == Beacon::Green),
            (&self.siren, w.siren),
        ]
        .into_iter()
        .filter(|(out, want)| out.get() != *want)
        .map(|(out, _)| out.name())
        .collect()
    }

    /// Whether the relay's feedback line shows power (`Some(None)`: it
    /// cannot be read); `None` without a feedback line.
    pub fn read_feedback(&mut self) -> Option<Option<bool>> {
        let f = self.feedback.as_mut()?;
        Some(match f.read() {
            Ok(on) => Some(on),
            Err(e) => {
                tracing::warn!(input = f.name(), error = %e, "cannot read the power feedback");
                None
            }
        })
    }

    /// The change record of simulated outputs.
    pub fn timeline(&self) -> Option<&Timeline> {
        self.timeline.as_ref()
    }

    /// Output errors so far (a line that could not be set).
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Drives every output to `o`. The relay is set first when power must
    /// be cut and last when it may return, so no other failure delays a cut.
    pub fn apply(&mut self, o: &Outputs) {
        self.wanted = *o;
        if !o.power_allowed {
            self.set_relay(false);
        }
        let (r, y, g) = match o.beacon {
            Beacon::Red => (true, false, false),
            Beacon::Yellow => (false, true, false),
            Beacon::Green => (false, false, true),
        };
        // Light the new lamp before putting out the old one: never dark.
        for (out, on) in [
            (&mut self.red, r),
            (&mut self.yellow, y),
            (&mut self.green, g),
        ] {
            if on {
                Self::drive(out.as_mut(), true, &mut self.errors);
            }
        }
        for (out, on) in [
            (&mut self.red, r),
            (&mut self.yellow, y),
            (&mut self.green, g),
        ] {
            if !on {
                Self::drive(out.as_mut(), false, &mut self.errors);
            }
        }
        Self::drive(self.siren.as_mut(), o.siren, &mut self.errors);
        if o.power_allowed {
            self.set_relay(true);
        }
    }

    /// Waits (briefly) until simulated outputs' states are in their file:
    /// before the process exits, so that the file tells what the outputs
    /// were left at. Real lines are set at once; nothing to wait for.
    pub fn settle(&self) {
        if let Some(t) = &self.timeline {
            let _ = t.flush(Duration::from_millis(500));
        }
    }

    /// Power cut, red lamp, siren: what a stalled daemon must show.
    pub fn fail_safe(&mut self) {
        self.apply(&Outputs::FAIL_SAFE);
    }

    /// What the outputs show now.
    pub fn current(&self) -> Outputs {
        Outputs {
            siren: self.siren.get(),
            beacon: if self.red.get() {
                Beacon::Red
            } else if self.yellow.get() {
                Beacon::Yellow
            } else {
                Beacon::Green
            },
            power_allowed: self.relay.get(),
        }
    }

    /// Chirps the siren and cycles the beacon, with power cut: the
    /// supervisor sees and hears that every output works.
    pub async fn self_test(panel: &std::sync::Mutex<Panel>) {
        let step = Duration::from_millis(300);
        let show = |o: Outputs| {
            if let Ok(mut p) = panel.lock() {
                p.apply(&o);
            }
        };
        let cut = |siren, beacon| Outputs {
            siren,
            beacon,
            power_allowed: false,
        };
        tracing::info!("output self-test: siren chirp, beacon red-yellow-green");
        show(cut(true, Beacon::Red));
        tokio::time::sleep(step).await;
        show(cut(false, Beacon::Red));
        tokio::time::sleep(step).await;
        show(cut(false, Beacon::Yellow));
        tokio::time::sleep(step).await;
        show(cut(false, Beacon::Green));
        tokio::time::sleep(step).await;
    }

    fn set_relay(&mut self, on: bool) {
        Self::drive(self.relay.as_mut(), on, &mut self.errors);
    }

    fn drive(out: &mut dyn Output, on: bool, errors: &mut u64) {
        if out.get() == on {
            return;
        }
        if let Err(e) = out.set(on) {
            *errors += 1;
            tracing::error!(output = out.name(), error = %e, "cannot drive output");
        }
    }
}

/// One change, for the API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChangeView {
    /// Output name.
    pub output: String,
    /// New state.
    pub on: bool,
    /// RFC 3339 wall-clock time.
    pub at: String,
    /// Unix time in nanoseconds, for latency measurements.
    pub at_unix_ns: u128,
}

/// The last `n` changes of a timeline.
pub fn recent_changes(t: &Timeline, n: usize) -> Vec<ChangeView> {
    let all = t.changes();
    let skip = all.len().saturating_sub(n);
    all.into_iter()
        .skip(skip)
        .map(|c| ChangeView {
            at: crate::time::rfc3339(c.wall),
            at_unix_ns: c
                .wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            output: c.output,
            on: c.on,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim() -> Panel {
        let cfg = OutputsConfig {
            backend: OutputBackend::Sim,
            ..OutputsConfig::default()
        };
        Panel::open(&cfg, None).unwrap()
    }

    #[test]
    fn starts_with_power_cut_and_red() {
        let p = sim();
        assert_eq!(p.current(), START);
    }

    #[test]
    fn the_relay_drops_first_and_returns_last_and_the_beacon_is_never_dark() {
        let mut p = sim();
        p.apply(&Outputs {
            siren: false,
            beacon: Beacon::Green,
            power_allowed: true,
        });
        let t = p.timeline().cloned().unwrap_or_default();
        let names: Vec<(String, bool)> = t
            .changes()
            .into_iter()
            .skip(5)
            .map(|c| (c.output, c.on))
            .collect();
        assert_eq!(
            names,
            [
                ("beacon_green".into(), true),
                ("beacon_red".into(), false),
                ("power_relay".into(), true)
            ]
        );
        p.apply(&Outputs {
            siren: true,
            beacon: Beacon::Red,
            power_allowed: false,
        });
        let names: Vec<(String, bool)> = t
            .changes()
            .into_iter()
            .skip(8)
            .map(|c| (c.output, c.on))
            .collect();
        assert_eq!(
            names,
            [
                ("power_relay".into(), false),
                ("beacon_red".into(), true),
                ("beacon_green".into(), false),
                ("siren".into(), true)
            ]
        );
        p.apply(&Outputs {
            siren: false,
            beacon: Beacon::Green,
            power_allowed: true,
        });
        p.fail_safe();
        assert_eq!(p.current(), Outputs::FAIL_SAFE);
    }
}
