//! Hardware abstraction for Pithead.
//!
//! The daemon drives three kinds of output — the siren, the three-colour
//! beacon and the power-cut relay — and feeds a watchdog. This crate hides how:
//! the `sim` backend records every change with its time (for development,
//! tests and the demo's virtual beacon); a Linux backend on the GPIO character
//! device drives real lines. One input is read back: the power relay's
//! feedback contact (馈电), simulated as a contactor that follows the relay.
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
    /// The input line could not be requested or read.
    #[error("input {name}: {reason}")]
    Input {
        /// Which input.
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

/// A digital input with a meaning: `read()` is true when the thing it
/// watches is on ("the contactor carries power"), whatever the wiring.
pub trait Input: Send + std::fmt::Debug {
    /// Reads the input now.
    fn read(&mut self) -> Result<bool, HalError>;
    /// The input's name, for logs.
    fn name(&self) -> &str;
}
