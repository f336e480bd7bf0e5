//! A reading: a channel's value, or the reason there is none. A reading
//! the box does not have is a state, never a number.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// What a reading is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadingState {
    /// A value in engineering units.
    Ok,
    /// The device did not answer properly (timeout, exception, garbage,
    /// connection lost): 断线.
    CommFault,
    /// The value is outside the sensor's range or not a number: 故障/超量程.
    OutOfRange,
    /// No fresh reading within two poll intervals.
    Stale,
    /// The box has just started; sensors and devices are settling.
    WarmingUp,
}

impl ReadingState {
    /// The name used in the API, the database and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadingState::Ok => "ok",
            ReadingState::CommFault => "comm_fault",
            ReadingState::OutOfRange => "out_of_range",
            ReadingState::Stale => "stale",
            ReadingState::WarmingUp => "warming_up",
        }
    }

    /// The state named `s` (as [`ReadingState::as_str`] writes it).
    pub fn parse(s: &str) -> Option<ReadingState> {
        [
            ReadingState::Ok,
            ReadingState::CommFault,
            ReadingState::OutOfRange,
            ReadingState::Stale,
            ReadingState::WarmingUp,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// The latest of one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The value; `Some` exactly when `state` is [`ReadingState::Ok`].
    pub value: Option<f64>,
    /// What the reading is.
    pub state: ReadingState,
    /// When it was taken (monotonic, for alarm timing and staleness).
    pub at: Instant,
    /// When it was taken (wall clock, for people and records).
    pub wall: SystemTime,
    /// Why there is no value, for people (e.g. "timeout", "exception 2").
    pub detail: Option<Arc<str>>,
}

impl Reading {
    /// A good value.
    pub fn ok(value: f64, at: Instant, wall: SystemTime) -> Self {
        Reading {
            value: Some(value),
            state: ReadingState::Ok,
            at,
            wall,
            detail: None,
        }
    }

    /// A special state, without a value.
    pub fn fault(
        state: ReadingState,
        detail: impl Into<Arc<str>>,
        at: Instant,
        wall: SystemTime,
    ) -> Self {
        Reading {
            value: None,
            state,
            at,
            wall,
            detail: Some(detail.into()),
        }
    }
}
