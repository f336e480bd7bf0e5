//! The daemon's one place for wall-clock times: the formats come from
//! `pithead_core::time`; reading the clock is here.

use std::time::SystemTime;

pub use pithead_core::time::{from_unix_ms, rfc3339, unix_ms};

/// The current wall-clock time as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}
