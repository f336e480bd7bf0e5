//! Test-only helpers: a snapshot of one channel for the acquisition and
//! alarm tasks, and (from `pithead_core::testing`) hostile inputs made by
//! mutating a valid one.

use std::sync::Arc;
use std::time::Duration;

use crate::acquisition::{ChannelInfo, DeviceHealth, Reading, Snapshot};
use crate::config::ChannelKind;

/// A snapshot of one methane channel `ch4` polled every `poll`, on an
/// online device `d`, holding `reading`.
pub(crate) fn one_channel_snapshot(poll: Duration, reading: Reading) -> Snapshot {
    Snapshot {
        info: Arc::new(vec![ChannelInfo {
            id: "ch4".into(),
            kind: ChannelKind::Ch4,
            unit: "%".into(),
            location: String::new(),
            name: None,
            device: "d".into(),
            poll,
        }]),
        readings: vec![reading],
        devices: vec![DeviceHealth {
            id: "d".into(),
            online: true,
            consecutive_failures: 0,
            last_error: None,
            last_ok: None,
        }],
    }
}

pub(crate) use pithead_core::testing::mutated;
