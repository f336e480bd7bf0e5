//! Watchdogs: something that resets the box (or restarts the service) when
//! it is no longer fed.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use crate::HalError;

/// A watchdog that must be fed regularly, and only while the daemon makes
/// progress.
pub trait Watchdog: Send + std::fmt::Debug {
    /// Feeds it.
    fn feed(&mut self) -> Result<(), HalError>;
    /// Disarms it on a clean stop, where the hardware allows.
    fn disarm(&mut self) -> Result<(), HalError> {
        Ok(())
    }
    /// Its name, for logs.
    fn name(&self) -> &str;
}

/// The kernel's watchdog device (`/dev/watchdog`): opening it arms it.
#[derive(Debug)]
pub struct DevWatchdog {
    file: Option<File>,
    name: String,
}

impl DevWatchdog {
    /// Opens and so arms the device.
    pub fn open(path: &Path) -> Result<Self, HalError> {
        let name = path.display().to_string();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| HalError::Watchdog {
                name: name.clone(),
                reason: format!("cannot open: {e}"),
            })?;
        Ok(DevWatchdog {
            file: Some(file),
            name,
        })
    }
}

impl Watchdog for DevWatchdog {
    fn feed(&mut self) -> Result<(), HalError> {
        let name = &self.name;
        match &mut self.file {
            Some(f) => {
                f.write_all(b"\0")
                    .and_then(|()| f.flush())
                    .map_err(|e| HalError::Watchdog {
                        name: name.clone(),
                        reason: format!("cannot feed: {e}"),
                    })
            }
            None => Ok(()),
        }
    }

    fn disarm(&mut self) -> Result<(), HalError> {
        // The "magic close": a 'V' before closing stops the timer on
        // drivers that support it; on others the board resets, as it should
        // when its guard stops.
        if let Some(mut f) = self.file.take() {
            f.write_all(b"V").map_err(|e| HalError::Watchdog {
                name: self.name.clone(),
                reason: format!("cannot disarm: {e}"),
            })?;
        }
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeding_writes_and_disarming_writes_the_magic_v() -> Result<(), HalError> {
        let dir = std::env::temp_dir().join(format!("pithead-wd-{}", std::process::id()));
        let _ = std::fs::write(&dir, b"");
        let mut w = DevWatchdog::open(&dir)?;
        w.feed()?;
        w.feed()?;
        w.disarm()?;
        w.feed()?;
        let written = std::fs::read(&dir).unwrap_or_default();
        let _ = std::fs::remove_file(&dir);
        assert_eq!(written, b"\0\0V");
        Ok(())
    }
}
