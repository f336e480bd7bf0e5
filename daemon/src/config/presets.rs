//! Regulatory threshold presets, shipped in `config/presets/` and built into
//! the binary. A channel names one (`preset = "cn-coal/ch4-face"`); its own
//! `[[channel.level]]` blocks override the preset's levels of the same name
//! and add others.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use super::{ChannelKind, Level};

/// The preset files: (set name, TOML text).
pub const FILES: [(&str, &str); 2] = [
    (
        "cn-coal",
        include_str!("../../../config/presets/cn-coal.toml"),
    ),
    (
        "us-msha",
        include_str!("../../../config/presets/us-msha.toml"),
    ),
];

/// One preset.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// What it is for, with the figures, for people.
    pub description: String,
    /// The channel kind it applies to.
    pub kind: ChannelKind,
    /// Its levels, mildest first.
    #[serde(rename = "level")]
    pub levels: Vec<Level>,
}

/// Every preset by full name (`set/name`). The files are part of the
/// binary and checked by tests; a file that does not parse yields no
/// presets from it, never a panic.
pub fn all() -> &'static BTreeMap<String, Preset> {
    static ALL: OnceLock<BTreeMap<String, Preset>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut out = BTreeMap::new();
        for (set, text) in FILES {
            match toml::from_str::<BTreeMap<String, Preset>>(text) {
                Ok(map) => out.extend(map.into_iter().map(|(k, v)| (format!("{set}/{k}"), v))),
                Err(e) => tracing::error!(set, error = %e, "preset file does not parse"),
            }
        }
        out
    })
}

/// The channel's levels with the preset applied: the preset's levels, each
/// replaced by the channel's own level of the same name, plus the channel's
/// other levels, mildest first.
pub fn merge(preset: &Preset, own: &[Level]) -> Vec<Level> {
    let mut levels: Vec<Level> = preset.levels.clone();
    for l in own {
        match levels.iter_mut().find(|p| p.name == l.name) {
            Some(p) => *p = l.clone(),
            None => levels.push(l.clone()),
        }
    }
    levels.sort_by_key(|l| l.name);
    levels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Direction, LevelName};

    #[test]
    fn every_shipped_preset_parses_and_is_ordered() {
        for (set, text) in FILES {
            let parsed: Result<BTreeMap<String, Preset>, _> = toml::from_str(text);
            assert!(parsed.is_ok(), "{set}: {parsed:?}");
        }
        let all = all();
        assert_eq!(all.len(), 16);
        for (name, p) in all {
            let mut sorted = p.levels.clone();
            sorted.sort_by_key(|l| l.name);
            assert_eq!(sorted, p.levels, "{name} levels out of order");
        }
        let face = &all["cn-coal/ch4-face"];
        assert_eq!(
            face.levels
                .iter()
                .map(|l| (l.name, l.threshold, l.deadband))
                .collect::<Vec<_>>(),
            [
                (LevelName::Alarm, 1.0, 0.0),
                (LevelName::PowerCut, 1.5, 0.5)
            ]
        );
        assert_eq!(
            all["us-msha/o2"].levels[0].direction,
            Some(Direction::Falling)
        );
    }

    #[test]
    fn own_levels_override_by_name_and_add() {
        let preset = &all()["cn-coal/ch4-face"];
        let own: Vec<Level> = toml::from_str::<BTreeMap<String, Vec<Level>>>(
            "l = [{ name = \"power_cut\", threshold = 1.2, deadband = 0.3 }, { name = \"warning\", threshold = 0.8 }]",
        )
        .map(|mut m| m.remove("l").unwrap_or_default())
        .unwrap_or_default();
        let merged = merge(preset, &own);
        assert_eq!(
            merged
                .iter()
                .map(|l| (l.name, l.threshold))
                .collect::<Vec<_>>(),
            [
                (LevelName::Warning, 0.8),
                (LevelName::Alarm, 1.0),
                (LevelName::PowerCut, 1.2)
            ]
        );
    }
}
