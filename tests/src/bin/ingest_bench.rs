//! Benchmark helper: store ingest of readings, batched as the recorder
//! writes them against the same store one reading per transaction.
//!
//! `pithead-ingest-bench DATA_DIR CHANNELS SECONDS` opens a fresh store in
//! DATA_DIR and, for SECONDS each, writes polls of CHANNELS readings through
//! `recorder::flush` (one bulk transaction per poll, as the recorder does),
//! then single readings through the same call (one transaction each: the
//! naive way). It checks the database holds every reading written and
//! prints the figures as JSON.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pithead::acquisition::recorder::flush;
use pithead::acquisition::{Reading, ReadingState};
use pithead::store::Store;

fn reading(i: usize) -> Reading {
    Reading {
        value: Some(0.3 + (i % 10) as f64 * 0.01),
        state: ReadingState::Ok,
        at: Instant::now(),
        wall: SystemTime::now(),
        detail: None,
    }
}

/// Writes batches of `batch` readings for `secs`; returns readings written.
async fn run(store: &Store, ids: &Arc<Vec<String>>, batch: usize, secs: f64) -> (usize, f64) {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs_f64(secs) {
        let raw: Vec<(usize, Reading)> = (0..batch)
            .map(|k| ((n + k) % ids.len(), reading(n + k)))
            .collect();
        flush(store, ids, raw, Vec::new()).await;
        n += batch;
    }
    (n, start.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || anyhow::anyhow!("usage: pithead-ingest-bench DATA_DIR CHANNELS SECONDS");
    let dir = args.next().ok_or_else(usage)?;
    let channels: usize = args.next().ok_or_else(usage)?.parse()?;
    let secs: f64 = args.next().ok_or_else(usage)?.parse()?;
    let store = Store::open(std::path::Path::new(&dir))?;
    let ids: Arc<Vec<String>> = Arc::new((0..channels).map(|i| format!("ch{i:05}")).collect());
    let (batched, t_batched) = run(&store, &ids, channels, secs).await;
    let (single, t_single) = run(&store, &ids, 1, secs).await;
    let stored: i64 = store
        .read(|c| Ok(c.query_row("SELECT count(*) FROM readings", [], |r| r.get(0))?))
        .await?;
    store.close().await;
    let written = i64::try_from(batched + single)?;
    anyhow::ensure!(
        stored == written,
        "{written} readings written, {stored} stored"
    );
    let (b, s) = (batched as f64 / t_batched, single as f64 / t_single);
    println!(
        "{}",
        serde_json::json!({
            "channels": channels,
            "batched_per_s": b.round(),
            "unbatched_per_s": s.round(),
            "ratio": (b / s * 10.0).round() / 10.0,
            "readings": written,
        })
    );
    Ok(())
}
