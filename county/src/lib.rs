//! `pithead-county`: the county union's side of Pithead.
//!
//! Receivers that run as N identical instances on one MQTT shared
//! subscription and store every station's messages in PostgreSQL once
//! each, acknowledged to the broker only after the commit (`ingest`), with
//! the schema in `migrations/` (`db`) and a configuration checked like the
//! station's (`config`). The dashboard, signed commands and the quarterly
//! light build on these (`docs/COUNTY.md`).

pub mod commands;
pub mod config;
pub mod db;
pub mod demo;
pub mod ingest;
pub mod light;
pub mod web;
