//! Outputs on GPIO lines through the Linux character device, by way of
//! linux-embedded-hal's `CdevPin` (an `embedded_hal::digital::OutputPin`).
//!
//! Active-low wiring is handled here, not by the kernel, so that
//! `set(true)` always means "the load is on".

use std::path::Path;

use embedded_hal::digital::{InputPin, OutputPin, PinState};
use linux_embedded_hal::CdevPin;
use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};

use crate::{HalError, Input, Output};

/// An output on any `OutputPin`.
pub struct PinOutput<P> {
    name: String,
    pin: P,
    active_low: bool,
    state: bool,
}

impl<P> std::fmt::Debug for PinOutput<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinOutput")
            .field("name", &self.name)
            .field("active_low", &self.active_low)
            .field("state", &self.state)
            .finish()
    }
}

impl<P: OutputPin> PinOutput<P> {
    /// Wraps a pin already driven to `initial`.
    pub fn new(name: impl Into<String>, pin: P, active_low: bool, initial: bool) -> Self {
        PinOutput {
            name: name.into(),
            pin,
            active_low,
            state: initial,
        }
    }
}

/// The line level that puts a load in state `on`.
pub fn level(on: bool, active_low: bool) -> PinState {
    PinState::from(on != active_low)
}

impl<P: OutputPin + Send> Output for PinOutput<P> {
    fn set(&mut self, on: bool) -> Result<(), HalError> {
        self.pin
            .set_state(level(on, self.active_low))
            .map_err(|e| HalError::Output {
                name: self.name.clone(),
                reason: format!("{e:?}"),
            })?;
        self.state = on;
        Ok(())
    }

    fn get(&self) -> bool {
        self.state
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Requests `line` of `chip` as an output, driven to `initial` at once.
pub fn open(
    chip: &Path,
    line: u32,
    active_low: bool,
    name: &str,
    initial: bool,
) -> Result<PinOutput<CdevPin>, HalError> {
    let err = |what: &str, e: &dyn std::fmt::Display| HalError::Output {
        name: name.to_owned(),
        reason: format!("{what} {} line {line}: {e}", chip.display()),
    };
    let mut c = Chip::new(chip).map_err(|e| err("cannot open", &e))?;
    let l = c.get_line(line).map_err(|e| err("no", &e))?;
    let initial_level = u8::from(level(initial, active_low) == PinState::High);
    let handle = l
        .request(LineRequestFlags::OUTPUT, initial_level, "pithead")
        .map_err(|e| err("cannot request", &e))?;
    let pin = CdevPin::new(handle).map_err(|e| err("cannot use", &e))?;
    Ok(PinOutput::new(name, pin, active_low, initial))
}

/// An input on any `InputPin`.
pub struct PinInput<P> {
    name: String,
    pin: P,
    active_low: bool,
}

impl<P> std::fmt::Debug for PinInput<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinInput")
            .field("name", &self.name)
            .field("active_low", &self.active_low)
            .finish()
    }
}

impl<P: InputPin> PinInput<P> {
    /// Wraps a pin requested as an input.
    pub fn new(name: impl Into<String>, pin: P, active_low: bool) -> Self {
        PinInput {
            name: name.into(),
            pin,
            active_low,
        }
    }
}

impl<P: InputPin + Send> Input for PinInput<P> {
    fn read(&mut self) -> Result<bool, HalError> {
        let high = self.pin.is_high().map_err(|e| HalError::Input {
            name: self.name.clone(),
            reason: format!("{e:?}"),
        })?;
        Ok(high != self.active_low)
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Requests `line` of `chip` as an input.
pub fn open_input(
    chip: &Path,
    line: u32,
    active_low: bool,
    name: &str,
) -> Result<PinInput<CdevPin>, HalError> {
    let err = |what: &str, e: &dyn std::fmt::Display| HalError::Input {
        name: name.to_owned(),
        reason: format!("{what} {} line {line}: {e}", chip.display()),
    };
    let mut c = Chip::new(chip).map_err(|e| err("cannot open", &e))?;
    let l = c.get_line(line).map_err(|e| err("no", &e))?;
    let handle = l
        .request(LineRequestFlags::INPUT, 0, "pithead")
        .map_err(|e| err("cannot request", &e))?;
    let pin = CdevPin::new(handle).map_err(|e| err("cannot use", &e))?;
    Ok(PinInput::new(name, pin, active_low))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    /// A pin that remembers its level (unit tests only; the real pin is the
    /// kernel's).
    #[derive(Default)]
    struct Recorder(Vec<bool>);

    impl embedded_hal::digital::ErrorType for Recorder {
        type Error = Infallible;
    }

    impl OutputPin for Recorder {
        fn set_low(&mut self) -> Result<(), Infallible> {
            self.0.push(false);
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Infallible> {
            self.0.push(true);
            Ok(())
        }
    }

    #[test]
    fn active_low_inverts_the_line_not_the_meaning() -> Result<(), HalError> {
        let mut relay = PinOutput::new("relay", Recorder::default(), true, false);
        relay.set(true)?;
        relay.set(false)?;
        assert!(!relay.get());
        assert_eq!(relay.pin.0, [false, true], "on = low, off = high");
        let mut siren = PinOutput::new("siren", Recorder::default(), false, false);
        siren.set(true)?;
        assert_eq!(siren.pin.0, [true]);
        Ok(())
    }

    /// An input pin at a fixed level.
    struct Level(bool);

    impl embedded_hal::digital::ErrorType for Level {
        type Error = Infallible;
    }

    impl InputPin for Level {
        fn is_high(&mut self) -> Result<bool, Infallible> {
            Ok(self.0)
        }
        fn is_low(&mut self) -> Result<bool, Infallible> {
            Ok(!self.0)
        }
    }

    #[test]
    fn an_active_low_input_reads_by_meaning() -> Result<(), HalError> {
        assert!(PinInput::new("fb", Level(false), true).read()?);
        assert!(!PinInput::new("fb", Level(true), true).read()?);
        assert!(PinInput::new("fb", Level(true), false).read()?);
        Ok(())
    }

    #[test]
    fn a_missing_chip_is_a_clear_error() {
        let e = open(
            Path::new("/dev/no-such-gpiochip"),
            17,
            false,
            "siren",
            false,
        )
        .err();
        let msg = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("siren") && msg.contains("/dev/no-such-gpiochip line 17"),
            "{msg}"
        );
    }
}
