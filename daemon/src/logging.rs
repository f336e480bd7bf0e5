//! Structured logging to standard error (journald picks it up).

use tracing_subscriber::EnvFilter;

use crate::config::{Log, LogFormat};

/// Keeps the background log writer alive; logs written before it is
/// dropped are flushed.
pub type Guard = Option<tracing_appender::non_blocking::WorkerGuard>;

/// Starts logging. `RUST_LOG`, when set and valid, overrides the configured
/// filter; an invalid filter falls back to `info` rather than to silence.
///
/// Lines go to standard error through a background thread with a bounded,
/// lossy buffer: if journald or the disk stalls, log lines are dropped —
/// the alarm path never blocks on a log write.
pub fn init(cfg: &Log) -> Guard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(16_384)
        .thread_name("log-writer")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    // Ignore "already set": tests and `demo` may call this twice.
    let set = match cfg.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    set.ok().map(|()| guard)
}
