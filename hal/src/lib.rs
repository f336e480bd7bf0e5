//! Hardware abstraction for Pithead.
//!
//! The daemon drives three kinds of output — the siren, the three-colour
//! beacon and the power-cut relay — and feeds a watchdog. This crate hides how:
//! the `sim` backend records every change with its time (for development,
//! tests and the demo's virtual beacon); a Linux backend on the GPIO character
//! device drives real lines.
//!
//! Outputs are described by what they mean, not by pin levels: `set(true)`
//! means "siren sounding", "relay energised (power allowed)". Whether that
//! is a high or a low line is the backend's business (active-low wiring).

#[cfg(target_os = "linux")]
pub mod gpio;
pub mod sim;
pub mod watchdog;

/// Why an output or a watchdog could not be driven.
#[derive(Debug, thiserror::Error)]
pub enum HalError {
    /// The line could not be requested or set.
    #[error("output {name}: {reason}")]
    Output {
        /// Which output.
        name: String,
        /// What failed.
        reason: String,
    },
    /// The watchdog could not be opened or fed.
    #[error("watchdog {name}: {reason}")]
    Watchdog {
        /// Which watchdog.
        name: String,
        /// What failed.
        reason: String,
    },
}

pub use watchdog::Watchdog;

/// A digital output with a meaning ("siren on", "power allowed").
pub trait Output: Send + std::fmt::Debug {
    /// Drives the output to `on`. Idempotent.
    fn set(&mut self, on: bool) -> Result<(), HalError>;
    /// The last state successfully set.
    fn get(&self) -> bool;
    /// The output's name, for logs.
    fn name(&self) -> &str;
}
