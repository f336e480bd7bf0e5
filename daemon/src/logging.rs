//! Structured logging to standard error (journald picks it up).

use tracing_subscriber::EnvFilter;

use crate::config::{Log, LogFormat};

/// Starts logging. `RUST_LOG`, when set and valid, overrides the configured
/// filter; an invalid filter falls back to `info` rather than to silence.
pub fn init(cfg: &Log) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Ignore "already set": tests and `demo` may call this twice.
    let _ = match cfg.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
