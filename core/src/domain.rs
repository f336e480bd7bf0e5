//! The station's domain vocabulary: what a channel measures, how its
//! registers are laid out, and its alarm levels. Plain data, shared by the
//! configuration, the engine, the protocol and the county.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a channel measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// Methane.
    Ch4,
    /// Carbon monoxide.
    Co,
    /// Oxygen (alarms on the falling side).
    O2,
    /// Carbon dioxide.
    Co2,
    /// Hydrogen sulphide.
    H2s,
    /// Nitrogen dioxide.
    No2,
    /// Sulphur dioxide.
    So2,
    /// Ammonia.
    Nh3,
    /// Water level in a sump or shaft.
    WaterLevel,
    /// Temperature.
    Temperature,
    /// Flow (water inflow, air).
    Flow,
    /// Anything else.
    Generic,
}

impl ChannelKind {
    /// The side on which this kind of channel is dangerous.
    pub fn default_direction(self) -> Direction {
        match self {
            ChannelKind::O2 => Direction::Falling,
            _ => Direction::Rising,
        }
    }
}

/// Modbus data table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// Holding registers (function 3).
    Holding,
    /// Input registers (function 4).
    Input,
    /// Coils (function 1).
    Coil,
    /// Discrete inputs (function 2).
    Discrete,
}

impl Table {
    /// Whether the table holds single bits rather than 16-bit registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }
}

/// Encoding of a register value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// Unsigned 16-bit, one register.
    #[default]
    U16,
    /// Signed 16-bit, one register.
    I16,
    /// Unsigned 32-bit, two registers.
    U32,
    /// Signed 32-bit, two registers.
    I32,
    /// IEEE-754 single precision, two registers.
    F32,
}

impl DataType {
    /// Registers the value occupies.
    pub fn registers(self) -> u16 {
        match self {
            DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
        }
    }
}

/// Byte or word order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Most significant first (the Modbus standard).
    #[default]
    Big,
    /// Least significant first.
    Little,
}

/// One alarm level of a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// Which level this is.
    pub name: LevelName,
    /// Value at which the level becomes active.
    pub threshold: f64,
    /// `rising` (danger above, e.g. CH4) or `falling` (danger below, e.g. O2).
    /// Defaults to the channel kind's dangerous side.
    #[serde(default)]
    pub direction: Option<Direction>,
    /// The value must move this far back past the threshold to restore.
    #[serde(default)]
    pub deadband: f64,
    /// The condition must hold this long before the level is raised.
    #[serde(default, with = "humantime_serde")]
    pub on_delay: Duration,
    /// The condition must be clear this long before the level restores.
    #[serde(default, with = "humantime_serde")]
    pub off_delay: Duration,
    /// A latching level stays active until cleared and acknowledged.
    /// Defaults to yes for `alarm` and `power_cut`, no for `warning`.
    #[serde(default)]
    pub latching: Option<bool>,
}

/// The name, and so the severity, of an alarm level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LevelName {
    /// Yellow beacon; investigate.
    Warning,
    /// Red beacon and siren.
    Alarm,
    /// Red beacon, siren, and the power-cut relay drops.
    PowerCut,
}

/// Side of the threshold that is dangerous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Danger at or above the threshold.
    Rising,
    /// Danger at or below the threshold.
    Falling,
}

impl Level {
    /// Whether the level latches: as configured, else yes for `alarm` and
    /// `power_cut`, no for `warning`.
    pub fn latches(&self) -> bool {
        self.latching.unwrap_or(self.name != LevelName::Warning)
    }
}
