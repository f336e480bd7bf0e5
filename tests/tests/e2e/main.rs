//! The end-to-end suite, one test binary: each module was a test binary
//! of its own, and each linked tokio, rumqttc, SQLite and the daemon
//! again. Run one part with `cargo test -p pithead-e2e --test e2e faults::`.
//! The tests run two at a time on two cores, as before across binaries.

mod acquisition;
mod alarms;
mod auth;
mod checkins;
mod cli;
mod console;
mod county;
mod county_dashboard;
mod county_demo;
mod daemon;
mod faults;
mod hazards;
mod http_abuse;
mod kiosk;
mod packaging;
mod store_crash;
mod sync;
mod sync_stress;
mod sync_tls;
