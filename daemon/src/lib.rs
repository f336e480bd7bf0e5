//! Pithead: the daemon of a mine's shaft-head safety station.
//!
//! See `docs/ARCHITECTURE.md` for the map. In short: acquisition reads
//! Modbus sensors, the alarm engine decides outputs, the store keeps records
//! and the outbox, sync sends the outbox to the county, web serves the kiosk
//! and console. `main` only parses the command line and calls [`cli::run`].

pub mod acquisition;
pub mod alarm;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod hazards;
pub mod heartbeat;
pub mod kiosk_keys;
#[cfg(test)]
mod layers;
pub mod lifecycle;
pub mod logging;
pub mod photos;
pub mod reports;
pub mod roster;
pub mod simulator;
pub mod store;
pub mod sync;
#[cfg(test)]
mod testing;
pub mod time;
pub mod tls;
pub mod web;
