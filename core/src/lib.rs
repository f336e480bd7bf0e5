//! Pithead's pure core, shared by the station daemon and the county
//! receiver: what a reading is, the alarm engine, register decoding and
//! read planning, the output supervisor's rule, the uplink's packet-id
//! tracker, the county protocol's types, the hazard lifecycle, the roster
//! format and the overdue clock, photo stripping.
//!
//! Nothing here does I/O or reads a clock: every function takes the time it
//! needs. The crate cannot do otherwise — it depends on no runtime, no
//! database, no network crate — so its tests are quick and exact. See
//! `docs/ARCHITECTURE.md`, "Dependency rules".

pub mod badge_reader;
pub mod config_file;
pub mod decode;
pub mod domain;
pub mod engine;
pub mod feedback;
pub mod hazard;
pub mod light;
pub mod photo;
pub mod plan;
pub mod protocol;
pub mod reading;
pub mod roster;
pub mod supervisor;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod time;
pub mod tracker;

pub use reading::{Reading, ReadingState};

#[cfg(test)]
mod tests {
    /// The crate stays pure: its dependencies are data and parsing crates
    /// only. A runtime, a database, a network or crypto crate here would
    /// let I/O into the engine and the protocol.
    #[test]
    fn depends_on_nothing_that_does_io() {
        let manifest = include_str!("../Cargo.toml");
        let deps = manifest
            .split("\n[dependencies]\n")
            .nth(1)
            .and_then(|s| s.split("\n[").next())
            .unwrap_or_else(|| panic!("no [dependencies] in core/Cargo.toml"));
        let names: Vec<&str> = deps
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
            .filter_map(|l| l.split(['.', ' ', '=']).next())
            .collect();
        let allowed = [
            "serde",
            "serde_json",
            "thiserror",
            "humantime",
            "humantime-serde",
            "csv",
            "toml",
            "toml_parser",
            "proptest",
        ];
        for n in &names {
            assert!(
                allowed.contains(n),
                "pithead-core depends on `{n}`; it may depend only on {allowed:?}"
            );
        }
        assert!(names.contains(&"serde"), "{names:?}");
    }
}
