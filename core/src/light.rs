//! The light (亮灯): green, yellow or red, computed from a station's data
//! with the reasons — one rule for the station's own live self-assessment
//! (预评) and the county's quarterly light, so the two agree when their
//! facts do.
//!
//! - **red** when a major hazard is open, a rectification is past its
//!   deadline, the quarter had at least `red_power_cuts` power cuts, or an
//!   alarm has waited longer than `ack_minutes` for an acknowledgement;
//! - **yellow** when a general hazard is open longer than
//!   `yellow_open_days`, the quarter had a power cut, the uplink was down
//!   for more than `offline_hours` in the quarter, or a channel had no good
//!   reading for more than `sensor_down_hours` of the quarter's minutes, or
//!   (the station's own light) a sensor is past its calibration date;
//! - **green** otherwise.

use serde::{Deserialize, Serialize};

/// The rule's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rule {
    /// Power cuts in a quarter that make it red.
    pub red_power_cuts: i64,
    /// An alarm unacknowledged longer than this makes it red.
    pub ack_minutes: i64,
    /// A general hazard open longer than this makes it yellow.
    pub yellow_open_days: i64,
    /// Uplink down longer than this in the quarter makes it yellow.
    pub offline_hours: i64,
    /// A channel without a good reading longer than this in the quarter
    /// makes it yellow.
    pub sensor_down_hours: i64,
}

impl Default for Rule {
    fn default() -> Self {
        Self {
            red_power_cuts: 3,
            ack_minutes: 30,
            yellow_open_days: 30,
            offline_hours: 24,
            sensor_down_hours: 24,
        }
    }
}

/// The facts of one station in one quarter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// Major hazards open at the end.
    pub major_open: i64,
    /// Hazards past their rectification deadline at the end.
    pub overdue: i64,
    /// Power cuts raised in the quarter.
    pub power_cuts: i64,
    /// Alarms waiting longer than `ack_minutes` at the end.
    pub unacknowledged: i64,
    /// General hazards open longer than `yellow_open_days`.
    pub general_stale: i64,
    /// Hours the uplink was down in the quarter (so far).
    pub offline_hours: i64,
    /// Hours of the quarter's minutes the worst channel had no good
    /// reading, and which channel.
    pub sensor_down_hours: i64,
    /// That channel.
    pub sensor_down_channel: Option<String>,
    /// Sensors with alarm levels whose last calibration (标校) is older
    /// than the station's `calibration_days` (the station's own light; the
    /// county does not see calibrations and counts 0).
    #[serde(default)]
    pub calibration_overdue: i64,
}

/// A light and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Light {
    /// `green`, `yellow` or `red`.
    pub light: &'static str,
    /// Each reason, in both languages.
    pub reasons: Vec<(String, String)>,
}

/// The light `facts` earn under `rule`.
pub fn judge(rule: &Rule, f: &Facts) -> Light {
    let mut red = Vec::new();
    let mut yellow = Vec::new();
    if f.major_open > 0 {
        red.push((
            format!("重大隐患未销号 {} 项", f.major_open),
            format!("{} major hazard(s) not closed", f.major_open),
        ));
    }
    if f.overdue > 0 {
        red.push((
            format!("隐患整改超期 {} 项", f.overdue),
            format!("{} rectification(s) past the deadline", f.overdue),
        ));
    }
    if f.power_cuts >= rule.red_power_cuts {
        red.push((
            format!("本季度断电 {} 次", f.power_cuts),
            format!("{} power cuts this quarter", f.power_cuts),
        ));
    } else if f.power_cuts > 0 {
        yellow.push((
            format!("本季度断电 {} 次", f.power_cuts),
            format!("{} power cut(s) this quarter", f.power_cuts),
        ));
    }
    if f.unacknowledged > 0 {
        red.push((
            format!(
                "报警超过 {} 分钟未确认 {} 条",
                rule.ack_minutes, f.unacknowledged
            ),
            format!(
                "{} alarm(s) unacknowledged for over {} minutes",
                f.unacknowledged, rule.ack_minutes
            ),
        ));
    }
    if f.general_stale > 0 {
        yellow.push((
            format!(
                "一般隐患超过 {} 天未销号 {} 项",
                rule.yellow_open_days, f.general_stale
            ),
            format!(
                "{} general hazard(s) open over {} days",
                f.general_stale, rule.yellow_open_days
            ),
        ));
    }
    if f.offline_hours > rule.offline_hours {
        yellow.push((
            format!("本季度上传中断 {} 小时", f.offline_hours),
            format!("uplink down {} hours this quarter", f.offline_hours),
        ));
    }
    if f.sensor_down_hours > rule.sensor_down_hours {
        let ch = f.sensor_down_channel.as_deref().unwrap_or("?");
        yellow.push((
            format!("测点 {ch} 本季度无有效读数 {} 小时", f.sensor_down_hours),
            format!(
                "channel {ch} without a good reading {} hours this quarter",
                f.sensor_down_hours
            ),
        ));
    }
    if f.calibration_overdue > 0 {
        yellow.push((
            format!("传感器标校超期 {} 个", f.calibration_overdue),
            format!(
                "{} sensor(s) past their calibration date",
                f.calibration_overdue
            ),
        ));
    }
    if !red.is_empty() {
        red.extend(yellow);
        Light {
            light: "red",
            reasons: red,
        }
    } else if !yellow.is_empty() {
        Light {
            light: "yellow",
            reasons: yellow,
        }
    } else {
        Light {
            light: "green",
            reasons: Vec::new(),
        }
    }
}
