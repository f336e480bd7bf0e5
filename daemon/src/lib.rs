//! Pithead: the daemon of a mine's shaft-head safety station.
//!
//! See `docs/ARCHITECTURE.md` for the map. In short: acquisition reads
//! Modbus sensors, the alarm engine decides outputs, the store keeps records
//! and the outbox, sync sends the outbox to the county, web serves the kiosk
//! and console. `main` only parses the command line and calls [`cli::run`].
//!
//! Public modules are the narrow API the helper binaries and benches in
//! `tests/` use (the configuration, the store and outbox, acquisition's
//! recorder, reports, time); everything else is private to the daemon.
//! The pure logic is in `pithead-core`.

pub mod acquisition;
mod alarm;
mod app;
mod auth;
pub mod cli;
pub mod config;
mod hazards;
mod heartbeat;
mod kiosk_keys;
#[cfg(test)]
mod layers;
mod lifecycle;
mod light;
mod logging;
mod photos;
pub mod reports;
mod roster;
mod signing;
mod simulator;
pub mod store;
mod sync;
#[cfg(test)]
mod testing;
pub mod time;
mod tls;
mod web;
