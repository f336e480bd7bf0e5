//! Stores readings: every channel's current reading at the raw rate, and
//! per-channel per-minute aggregates of every poll result.
//!
//! It runs apart from the bus tasks: they add every poll to a shared
//! per-minute table ([`MinuteBook`]) whose lock is never held across the
//! disk, and the recorder takes what is finished every raw interval, so a
//! slow or full disk slows the recorder, never the polling or the alarms.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use rusqlite::Connection;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Batch, Reading, ReadingState, Snapshot};
use crate::store::{Durability, Store, StoreError};
use crate::time::unix_ms;

/// One channel-minute of statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aggregate {
    /// Smallest good value.
    pub min: f64,
    /// Largest good value.
    pub max: f64,
    /// Sum of good values.
    pub sum: f64,
    /// Good readings.
    pub count: u32,
    /// Readings in a special state.
    pub faults: u32,
    /// Readings taken while the channel was in calibration (标校): counted
    /// apart, never in min, max or mean.
    pub calibrating: u32,
}

impl Aggregate {
    fn empty() -> Self {
        Aggregate {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            count: 0,
            faults: 0,
            calibrating: 0,
        }
    }

    fn add(&mut self, r: &Reading) {
        match (r.state, r.value) {
            (ReadingState::Ok, Some(v)) => {
                self.min = self.min.min(v);
                self.max = self.max.max(v);
                self.sum += v;
                self.count += 1;
            }
            _ => self.faults += 1,
        }
    }

    /// Adds another count of the same channel-minute.
    fn merge(&mut self, o: &Aggregate) {
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
        self.count += o.count;
        self.faults += o.faults;
        self.calibrating += o.calibrating;
    }

    /// Readings counted, of any state.
    fn readings(&self) -> u64 {
        u64::from(self.count) + u64::from(self.faults) + u64::from(self.calibrating)
    }
}

/// One minute of a channel's trend, as the console draws it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrendPoint {
    /// The minute's start, Unix ms.
    pub t: i64,
    /// Over good readings; `None` for a minute with none.
    pub min: Option<f64>,
    /// Over good readings.
    pub max: Option<f64>,
    /// Over good readings, to six significant digits.
    pub mean: Option<f64>,
    /// Readings.
    pub count: i64,
    /// Readings in a special state.
    pub faults: i64,
}

/// Channel `channel`'s stored minutes from `since_ms` on, oldest first.
pub fn trend(
    conn: &Connection,
    channel: &str,
    since_ms: i64,
) -> Result<Vec<TrendPoint>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT minute_ms, min, max, mean, count, faults FROM aggregates
         WHERE channel = ?1 AND minute_ms >= ?2 ORDER BY minute_ms",
    )?;
    let rows = st.query_map((channel, since_ms), |r| {
        Ok(TrendPoint {
            t: r.get(0)?,
            min: r.get(1)?,
            max: r.get(2)?,
            mean: r
                .get::<_, Option<f64>>(3)?
                .map(|m| pithead_core::decode::round_significant(m, 6)),
            count: r.get(4)?,
            faults: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn minute_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(60_000)
}

/// Per-minute accumulation. The minute the newest readings belong to is a
/// flat table, one slot per channel, so a reading costs an index, not a
/// search; when a reading of a later minute comes, the table is set aside
/// whole (a swap, not a copy: the bus task that does it has just woken the
/// alarm task, which waits for it). Readings of an earlier minute (a late
/// request, a clock stepped back) are kept by (minute start ms, channel
/// index). Taking what is finished is a swap too; the rows are made after,
/// by [`Finished::rows`], outside any lock.
#[derive(Debug, Default)]
pub struct Minutes {
    /// The minute `current` holds (its start, Unix ms).
    minute: Option<i64>,
    /// One slot per channel for `minute`; untouched slots are empty.
    current: Vec<Aggregate>,
    /// Flat tables set aside, oldest first.
    closed: Vec<(i64, Vec<Aggregate>)>,
    /// Readings of minutes before the flat table's.
    other: BTreeMap<(i64, usize), Aggregate>,
}

/// Finished minutes taken from a [`Minutes`], not yet made into rows.
#[derive(Debug, Default)]
pub struct Finished {
    closed: Vec<(i64, Vec<Aggregate>)>,
    other: BTreeMap<(i64, usize), Aggregate>,
}

impl Finished {
    /// The channel-minutes with readings, by minute then channel; a
    /// channel-minute counted in two places is one row.
    pub fn rows(self) -> Vec<((i64, usize), Aggregate)> {
        let mut rows: Vec<((i64, usize), Aggregate)> = self.other.into_iter().collect();
        for (minute, table) in self.closed {
            rows.extend(
                table
                    .into_iter()
                    .enumerate()
                    .filter(|(_, a)| a.readings() > 0)
                    .map(|(ci, a)| ((minute, ci), a)),
            );
        }
        rows.sort_by_key(|(k, _)| *k);
        let mut out: Vec<((i64, usize), Aggregate)> = Vec::with_capacity(rows.len());
        for (k, a) in rows {
            match out.last_mut() {
                Some((last, b)) if *last == k => b.merge(&a),
                _ => out.push((k, a)),
            }
        }
        out
    }
}

impl Minutes {
    /// Adds one poll's readings; those of channels in calibration are
    /// only counted.
    pub fn add(&mut self, batch: &Batch, cal: &super::calibration::Calibrations) {
        let any = cal.any();
        for (ci, r) in batch {
            let m = minute_of(unix_ms(r.wall));
            let a = match self.minute {
                Some(cur) if cur == m => self.slot(*ci),
                Some(cur) if m < cur => self.other.entry((m, *ci)).or_insert_with(Aggregate::empty),
                _ => {
                    self.close_current();
                    self.minute = Some(m);
                    self.slot(*ci)
                }
            };
            if any && cal.at(*ci, r.wall) {
                a.calibrating += 1;
            } else {
                a.add(r);
            }
        }
    }

    fn slot(&mut self, ci: usize) -> &mut Aggregate {
        if ci >= self.current.len() {
            self.current.resize(ci + 1, Aggregate::empty());
        }
        &mut self.current[ci]
    }

    /// Sets the flat table aside with its minute and starts an empty one.
    fn close_current(&mut self) {
        let Some(m) = self.minute.take() else {
            return;
        };
        let fresh = vec![Aggregate::empty(); self.current.len()];
        self.closed
            .push((m, std::mem::replace(&mut self.current, fresh)));
    }

    /// Removes and returns the minutes that ended before `now` (all of them
    /// with `all`).
    pub fn take_finished(&mut self, now: SystemTime, all: bool) -> Finished {
        let current = minute_of(unix_ms(now));
        if all || self.minute.is_some_and(|m| m < current) {
            self.close_current();
        }
        let (closed, keep) = std::mem::take(&mut self.closed)
            .into_iter()
            .partition(|(m, _)| all || *m < current);
        self.closed = keep;
        let other = if all {
            std::mem::take(&mut self.other)
        } else {
            let keep = self.other.split_off(&(current, 0));
            std::mem::replace(&mut self.other, keep)
        };
        Finished { closed, other }
    }

    /// Drops the oldest minutes not yet taken beyond `max` channel-minutes
    /// (a recorder stalled by its disk); returns the readings they counted.
    fn shed(&mut self, max: usize) -> u64 {
        let held =
            |m: &Minutes| m.closed.iter().map(|(_, t)| t.len()).sum::<usize>() + m.other.len();
        let mut dropped = 0;
        while held(self) > max {
            let oldest_closed = self.closed.first().map(|(m, _)| *m);
            let oldest_other = self.other.first_key_value().map(|((m, _), _)| *m);
            let closed_first = match (oldest_closed, oldest_other) {
                (None, None) => break,
                (Some(c), Some(o)) => c <= o,
                (c, _) => c.is_some(),
            };
            if closed_first {
                let (_, table) = self.closed.remove(0);
                dropped += table.iter().map(Aggregate::readings).sum::<u64>();
            } else if let Some((_, a)) = self.other.pop_first() {
                dropped += a.readings();
            }
        }
        dropped
    }
}

/// The per-minute statistics of every poll result, shared by the bus
/// tasks, which add each poll as they publish it, and the recorder, which
/// takes the finished minutes every raw interval. The lock is held to add
/// one poll or to take what is finished, never across the disk, so polling
/// never waits for the store; and a poll wakes nobody.
#[derive(Debug)]
pub struct MinuteBook {
    minutes: std::sync::Mutex<Minutes>,
    /// Channel-minutes kept for a recorder that cannot write: beyond, the
    /// oldest are dropped and counted.
    max_held: usize,
}

/// Minutes of every channel a recorder that cannot write keeps before it
/// drops the oldest.
const HELD_MINUTES: usize = 15;

impl MinuteBook {
    /// A book for `channels` channels.
    pub fn new(channels: usize) -> Self {
        MinuteBook {
            minutes: std::sync::Mutex::new(Minutes {
                current: vec![Aggregate::empty(); channels],
                ..Minutes::default()
            }),
            max_held: channels.max(1) * HELD_MINUTES,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Minutes> {
        // A poisoned lock still holds usable counts.
        self.minutes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds one poll; returns the readings dropped to keep the book
    /// bounded (none while the recorder keeps up).
    pub fn add(&self, batch: &Batch, cal: &super::calibration::Calibrations) -> u64 {
        let mut m = self.lock();
        m.add(batch, cal);
        m.shed(self.max_held)
    }

    /// See [`Minutes::take_finished`]: under the lock only the swap, the
    /// rows made after it.
    pub fn take_finished(&self, now: SystemTime, all: bool) -> Vec<((i64, usize), Aggregate)> {
        let finished = self.lock().take_finished(now, all);
        finished.rows()
    }
}

fn write_aggregates(
    c: &Connection,
    ids: &[String],
    rows: &[((i64, usize), Aggregate)],
) -> Result<(), StoreError> {
    // A minute written partly before a restart is merged, not replaced.
    let mut st = c.prepare_cached(
        "INSERT INTO aggregates(channel, minute_ms, min, max, mean, count, faults, calibrating)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(channel, minute_ms) DO UPDATE SET
           min = CASE WHEN excluded.count = 0 THEN min WHEN count = 0 THEN excluded.min ELSE min(min, excluded.min) END,
           max = CASE WHEN excluded.count = 0 THEN max WHEN count = 0 THEN excluded.max ELSE max(max, excluded.max) END,
           mean = CASE WHEN count + excluded.count = 0 THEN NULL
                  ELSE (coalesce(mean, 0) * count + coalesce(excluded.mean, 0) * excluded.count) / (count + excluded.count) END,
           count = count + excluded.count,
           faults = faults + excluded.faults,
           calibrating = calibrating + excluded.calibrating",
    )?;
    for ((minute, ci), a) in rows {
        let good = a.count > 0;
        st.execute((
            &ids[*ci],
            minute,
            good.then_some(a.min),
            good.then_some(a.max),
            good.then(|| a.sum / f64::from(a.count)),
            a.count,
            a.faults,
            a.calibrating,
        ))?;
    }
    Ok(())
}

fn write_raw(c: &Connection, ids: &[String], rows: &[(usize, Reading)]) -> Result<(), StoreError> {
    let mut st = c.prepare_cached(
        "INSERT INTO readings(channel, at_ms, value, state) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (ci, r) in rows {
        st.execute((&ids[*ci], unix_ms(r.wall), r.value, r.state.as_str()))?;
    }
    Ok(())
}

/// Runs until `shutdown`, then stores what it holds.
pub async fn run(
    store: Store,
    book: std::sync::Arc<MinuteBook>,
    snapshot: watch::Receiver<Snapshot>,
    raw_interval: Duration,
    shutdown: CancellationToken,
) {
    let ids: std::sync::Arc<Vec<String>> = std::sync::Arc::new(
        snapshot
            .borrow()
            .info
            .iter()
            .map(|i| i.id.clone())
            .collect(),
    );
    let mut tick = tokio::time::interval(raw_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The monotonic time of the last reading stored per channel: a reading
    // is stored once, whatever the wall clock does.
    let mut last_raw: Vec<Option<std::time::Instant>> = vec![None; ids.len()];
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                // Raw rows: each channel's current reading, once per reading.
                let raw: Vec<(usize, Reading)> = snapshot
                    .borrow()
                    .readings
                    .iter()
                    .enumerate()
                    .filter(|(ci, r)| last_raw[*ci] != Some(r.at))
                    .map(|(ci, r)| (ci, r.clone()))
                    .collect();
                for (ci, r) in &raw {
                    last_raw[*ci] = Some(r.at);
                }
                let aggs = book.take_finished(SystemTime::now(), false);
                flush(&store, &ids, raw, aggs).await;
            }
        }
    }
    flush(
        &store,
        &ids,
        Vec::new(),
        book.take_finished(SystemTime::now(), true),
    )
    .await;
}

/// Writes one batch of raw readings (`(channel index into ids, reading)`)
/// and finished minute aggregates in one bulk transaction, as the recorder
/// does every `raw_interval`; failures are logged, not returned (the
/// readings of a full disk are dropped, never the daemon). Public for the
/// ingest benchmark.
pub async fn flush(
    store: &Store,
    ids: &std::sync::Arc<Vec<String>>,
    raw: Vec<(usize, Reading)>,
    aggs: Vec<((i64, usize), Aggregate)>,
) {
    if raw.is_empty() && aggs.is_empty() {
        return;
    }
    let ids = std::sync::Arc::clone(ids);
    let n = (raw.len(), aggs.len());
    let r = store
        .write(Durability::Bulk, move |c| {
            write_raw(c, &ids, &raw)?;
            write_aggregates(c, &ids, &aggs)
        })
        .await;
    match r {
        Ok(()) => {}
        // The store logs a full disk once, not every poll.
        Err(StoreError::DiskFull) => {
            tracing::debug!(
                raw = n.0,
                aggregates = n.1,
                "readings not stored: disk full"
            );
        }
        Err(e) => tracing::warn!(error = %e, raw = n.0, aggregates = n.1, "readings not stored"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Instant, UNIX_EPOCH};

    use super::*;

    #[test]
    fn minutes_split_and_count_faults() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000); // a minute boundary
        let at = Instant::now();
        let mut m = Minutes::default();
        let cal = crate::acquisition::calibration::Calibrations::new(2);
        m.add(
            &vec![(0, Reading::ok(1.0, at, t0)), (1, Reading::ok(5.0, at, t0))],
            &cal,
        );
        m.add(
            &vec![(0, Reading::ok(3.0, at, t0 + Duration::from_secs(30)))],
            &cal,
        );
        m.add(
            &vec![(
                0,
                Reading::fault(
                    ReadingState::CommFault,
                    "x",
                    at,
                    t0 + Duration::from_secs(59),
                ),
            )],
            &cal,
        );
        m.add(
            &vec![(0, Reading::ok(9.0, at, t0 + Duration::from_secs(61)))],
            &cal,
        );
        // Channel 1 in calibration from t0 + 10 s: its readings are counted
        // apart, not averaged with the air's.
        cal.start(
            1,
            crate::acquisition::calibration::Calibration {
                by: "王".into(),
                reason: "标校".into(),
                started: t0 + Duration::from_secs(10),
                until: t0 + Duration::from_secs(600),
            },
        );
        m.add(
            &vec![(1, Reading::ok(2.0, at, t0 + Duration::from_secs(20)))],
            &cal,
        );
        let done = m.take_finished(t0 + Duration::from_secs(70), false).rows();
        assert_eq!(done.len(), 2);
        let ((minute, ch), a) = done[0];
        assert_eq!((minute, ch), (1_800_000_000_000, 0));
        assert_eq!(
            (a.min, a.max, a.sum, a.count, a.faults),
            (1.0, 3.0, 4.0, 2, 1)
        );
        let ((_, ch), b) = done[1];
        assert_eq!((ch, b.count, b.calibrating, b.sum), (1, 1, 1, 5.0));
        assert_eq!(
            m.take_finished(t0 + Duration::from_secs(70), true)
                .rows()
                .len(),
            1
        );
    }

    #[test]
    fn a_book_whose_recorder_cannot_write_keeps_the_newest_minutes_and_counts_the_rest() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = Instant::now();
        let cal = crate::acquisition::calibration::Calibrations::new(2);
        let book = MinuteBook::new(2);
        let mut dropped = 0;
        // Twenty minutes of two channels, twice a minute, nobody taking.
        for minute in 0..20u64 {
            for half in 0..2u64 {
                let wall = t0 + Duration::from_secs(minute * 60 + half * 30);
                dropped += book.add(
                    &vec![
                        (0, Reading::ok(1.0, at, wall)),
                        (1, Reading::ok(2.0, at, wall)),
                    ],
                    &cal,
                );
            }
        }
        // Held: fifteen finished minutes of both channels (the twentieth is
        // still running); the four oldest went, two readings each channel.
        assert_eq!(dropped, 4 * 2 * 2);
        let done = book.take_finished(t0 + Duration::from_secs(20 * 60), false);
        assert_eq!(done.len(), 2 * 16);
        assert_eq!(done[0].0, (1_800_000_000_000 + 4 * 60_000, 0));
        assert!(done.windows(2).all(|w| w[0].0 < w[1].0), "in order");
        assert!(done.iter().all(|(_, a)| a.count == 2));
    }

    #[test]
    fn a_late_reading_of_a_minute_already_left_is_kept_apart_not_lost() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = Instant::now();
        let cal = crate::acquisition::calibration::Calibrations::new(1);
        let mut m = Minutes::default();
        let ok = |v, s| vec![(0, Reading::ok(v, at, t0 + Duration::from_secs(s)))];
        m.add(&ok(3.0, 30), &cal);
        m.add(&ok(5.0, 61), &cal);
        // A request that started before the minute turned answers after:
        // counted with its minute, one row with the reading before.
        m.add(&ok(1.0, 59), &cal);
        m.add(&ok(7.0, 62), &cal);
        let done = m.take_finished(t0 + Duration::from_secs(125), false).rows();
        let got: Vec<_> = done
            .iter()
            .map(|((t, _), a)| (*t, a.count, a.min, a.max))
            .collect();
        assert_eq!(
            got,
            [
                (1_800_000_000_000, 2, 1.0, 3.0),
                (1_800_000_060_000, 2, 5.0, 7.0)
            ]
        );
        assert!(
            m.take_finished(t0 + Duration::from_secs(125), true)
                .rows()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn aggregates_merge_across_restarts() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Rejected(e.to_string()))?;
        let store = Store::open(dir.path())?;
        let ids = vec!["ch4".to_owned()];
        let a = |min, max, sum, count, faults| Aggregate {
            min,
            max,
            sum,
            count,
            faults,
            calibrating: 0,
        };
        let first = vec![((60_000, 0), a(1.0, 2.0, 3.0, 2, 0))];
        let second = vec![((60_000, 0), a(0.5, 1.0, 1.0, 2, 1))];
        let only_faults = vec![((60_000, 0), a(f64::INFINITY, f64::NEG_INFINITY, 0.0, 0, 3))];
        for rows in [first, second, only_faults] {
            let ids = ids.clone();
            store
                .write(Durability::Bulk, move |c| write_aggregates(c, &ids, &rows))
                .await?;
        }
        let row = store
            .read(|c| {
                Ok(c.query_row(
                    "SELECT min, max, mean, count, faults FROM aggregates",
                    [],
                    |r| {
                        Ok((
                            r.get::<_, f64>(0)?,
                            r.get::<_, f64>(1)?,
                            r.get::<_, f64>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    },
                )?)
            })
            .await?;
        assert_eq!(row, (0.5, 2.0, 1.0, 4, 4));
        store.close().await;
        Ok(())
    }
}
