//! The badge reader on the box (`[kiosk] badge_reader`): read through
//! evdev with an exclusive grab, so no digit goes to a focused field or an
//! input method; a burst of keys ending in Enter
//! (`pithead_core::badge_reader`) is a check-in or check-out for the
//! direction the box's own kiosk shows, recorded as the kiosk's would be,
//! and its answer shown on that kiosk (`GET /api/v1/reader`, loopback).
//!
//! The path is an input device (`/dev/input/by-id/…-event-kbd`), or a FIFO
//! of raw `input_event` records (a recorded stream, for tests and replay).
//! A reader unplugged is looked for again every 2 s; it never stops the
//! daemon.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use pithead_core::badge_reader::{Burst, EV_KEY, Outcome};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::roster::Passage;

/// The reader's state, for the box's own kiosk.
#[derive(Debug)]
pub struct Reader {
    /// The kiosk shows 下井 (true) or 升井.
    going_in: AtomicBool,
    seq: AtomicU64,
    last: Mutex<Option<ReadResult>>,
    /// Whether a reader is configured.
    pub configured: bool,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            going_in: AtomicBool::new(true),
            seq: AtomicU64::new(0),
            last: Mutex::new(None),
            configured: false,
        }
    }
}

/// The answer to the last badge read.
#[derive(Debug, Clone, Serialize)]
pub struct ReadResult {
    /// Counts up with each badge.
    pub seq: u64,
    /// The direction it was taken for.
    pub direction: Passage,
    /// The HTTP status the kiosk's own check-in would have had.
    pub status: u16,
    /// The check-in's answer (or the reason it was refused).
    pub answer: serde_json::Value,
}

impl Reader {
    /// A reader for `[kiosk] badge_reader`, if set.
    pub fn new(configured: bool) -> Self {
        Reader {
            configured,
            ..Reader::default()
        }
    }

    /// The kiosk's current direction.
    pub fn direction(&self) -> Passage {
        if self.going_in.load(Ordering::Relaxed) {
            Passage::In
        } else {
            Passage::Out
        }
    }

    /// Sets the kiosk's current direction.
    pub fn set_direction(&self, d: Passage) {
        self.going_in.store(d == Passage::In, Ordering::Relaxed);
    }

    /// The last answer, if any.
    pub fn last(&self) -> Option<ReadResult> {
        self.last.lock().ok().and_then(|l| l.clone())
    }

    fn record(&self, direction: Passage, status: StatusCode, answer: serde_json::Value) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut l) = self.last.lock() {
            *l = Some(ReadResult {
                seq,
                direction,
                status: status.as_u16(),
                answer,
            });
        }
    }
}

/// Reads `path` until `shutdown`, checking badges in or out.
pub async fn run(s: AppState, path: PathBuf, shutdown: CancellationToken) {
    let (tx, mut rx) = mpsc::channel::<(u16, i32)>(256);
    let p = path.clone();
    if let Err(e) = std::thread::Builder::new()
        .name("badge-reader".into())
        .spawn(move || read_forever(&p, &tx))
    {
        tracing::error!(error = %e, "cannot start the badge reader's thread");
        return;
    }
    let mut burst = Burst::default();
    loop {
        let (code, value) = tokio::select! {
            () = shutdown.cancelled() => return,
            k = rx.recv() => match k { Some(k) => k, None => return },
        };
        match burst.key(code, value, Instant::now()) {
            Outcome::Nothing => {}
            Outcome::Refused(why) => {
                tracing::warn!(reader = %path.display(), why, "badge reader: keys thrown away")
            }
            Outcome::Badge(badge) => {
                let direction = s.reader.direction();
                let (status, answer) = match super::api::check_in_or_out(
                    &s,
                    crate::kiosk_keys::LOCAL.to_owned(),
                    &badge,
                    direction,
                )
                .await
                {
                    Ok(r) => r,
                    Err(e) => (e.status, serde_json::to_value(&e).unwrap_or_default()),
                };
                tracing::info!(?direction, status = status.as_u16(), "badge read");
                s.reader.record(direction, status, answer);
            }
        }
    }
}

/// The reading thread: opens the device (or FIFO), sends key events, and
/// opens it again when it goes away, until the receiver is gone.
fn read_forever(path: &Path, tx: &mpsc::Sender<(u16, i32)>) {
    let mut told = false;
    while !tx.is_closed() {
        match pump(path, tx) {
            Ok(()) => told = false,
            Err(e) => {
                if !told {
                    tracing::error!(reader = %path.display(), error = %e, "badge reader unavailable: badges are typed on the kiosk meanwhile; looking again every 2 s");
                    told = true;
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
}

fn pump(path: &Path, tx: &mpsc::Sender<(u16, i32)>) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt as _;
    let kind = std::fs::metadata(path)?.file_type();
    if kind.is_char_device() {
        let mut dev = evdev::Device::open(path)?;
        // Exclusive: nothing of the reader reaches the desktop, a focused
        // field or an input method.
        dev.grab()?;
        tracing::info!(reader = %path.display(), name = dev.name().unwrap_or("?"), "badge reader grabbed");
        loop {
            for ev in dev.fetch_events()? {
                if ev.event_type() == evdev::EventType::KEY
                    && tx.blocking_send((ev.code(), ev.value())).is_err()
                {
                    return Ok(());
                }
            }
        }
    } else if kind.is_fifo() {
        use std::io::Read as _;
        let mut f = std::fs::File::open(path)?;
        let record = std::mem::size_of::<libc::input_event>();
        let mut buf = Vec::with_capacity(record * 64);
        let mut chunk = vec![0u8; record * 64];
        loop {
            let n = f.read(&mut chunk)?;
            if n == 0 {
                // The writer is gone: open again for the next.
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            let whole = buf.len() / record * record;
            for (ty, code, value) in pithead_core::badge_reader::records(&buf[..whole], record) {
                if ty == EV_KEY && tx.blocking_send((code, value)).is_err() {
                    return Ok(());
                }
            }
            buf.drain(..whole);
        }
    } else {
        Err(std::io::Error::other(
            "neither an input device nor a FIFO of input events",
        ))
    }
}
