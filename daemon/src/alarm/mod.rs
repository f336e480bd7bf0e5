//! Alarms: the engine (pure), and the task that feeds it readings, drives
//! the outputs and records its events.

pub mod engine;
