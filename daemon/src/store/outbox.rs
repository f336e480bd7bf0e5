//! Messages waiting for the county.
//!
//! A row is written in the same transaction as the record it carries, so a
//! crash never leaves one without the other. Each row gets a globally unique
//! message id (UUID v7, time-ordered) and the next sequence number of its
//! lane, so the receiver can drop duplicates and see gaps.

use rusqlite::Connection;
use serde::Serialize;

use super::StoreError;

/// Priority lanes, most urgent first. A lane's backlog never holds back a
/// more urgent lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// Alarm transitions and acknowledgements.
    Alarm = 0,
    /// Hazard reports and their lifecycle.
    Hazard = 1,
    /// Check-ins, check-outs and head-counts.
    Checkin = 2,
    /// Periodic summaries; the only lane ever dropped when the cap is hit.
    Summary = 3,
}

impl Lane {
    /// Every lane, most urgent first.
    pub const ALL: [Lane; 4] = [Lane::Alarm, Lane::Hazard, Lane::Checkin, Lane::Summary];

    /// The number stored in the `lane` column.
    pub fn code(self) -> i64 {
        self as i64
    }
}

/// A row as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    /// Row id.
    pub id: i64,
    /// Globally unique message id.
    pub msg_id: String,
    /// Sequence number within the lane, from 1, without gaps.
    pub seq: i64,
}

/// Adds a message to the outbox inside the caller's transaction.
pub fn enqueue(
    conn: &Connection,
    lane: Lane,
    kind: &str,
    created_at: &str,
    payload: &serde_json::Value,
) -> Result<Enqueued, StoreError> {
    let seq: i64 = conn.query_row(
        "INSERT INTO lane_seq(lane, next) VALUES (?1, 2)
         ON CONFLICT(lane) DO UPDATE SET next = next + 1
         RETURNING next - 1",
        [lane.code()],
        |r| r.get(0),
    )?;
    let msg_id = uuid::Uuid::now_v7().to_string();
    let body = payload.to_string();
    conn.execute(
        "INSERT INTO outbox(msg_id, lane, seq, kind, created_at, payload, bytes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        (
            &msg_id,
            lane.code(),
            seq,
            kind,
            created_at,
            &body,
            i64::try_from(body.len() + msg_id.len() + kind.len()).unwrap_or(i64::MAX),
        ),
    )?;
    let id = conn.last_insert_rowid();
    // Summaries are the only messages dropped for room: check the cap as
    // they come, not only in the hourly retention pass.
    if lane == Lane::Summary {
        enforce_recorded_cap(conn)?;
    }
    Ok(Enqueued { id, msg_id, seq })
}

/// [`enforce_cap`] with the cap recorded by [`set_cap`], if any. Run as
/// summaries are queued and at every report tick, so that records that are
/// never dropped (check-ins, alarms, hazards) take the place of the oldest
/// summaries within minutes.
pub fn enforce_recorded_cap(conn: &Connection) -> Result<usize, StoreError> {
    let cap = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'outbox.cap_bytes'",
            [],
            |r| r.get::<_, String>(0),
        )
        .ok()
        .and_then(|v| v.parse::<i64>().ok());
    match cap {
        Some(cap) => enforce_cap(conn, cap),
        None => Ok(0),
    }
}

/// Records the outbox cap for [`enqueue`] to enforce.
pub fn set_cap(conn: &Connection, cap_bytes: i64) -> Result<(), StoreError> {
    super::set_meta(conn, "outbox.cap_bytes", &cap_bytes.to_string())
}

/// While the unsent outbox is over `cap_bytes`, drops the oldest unsent
/// summaries (and counts them); alarms, hazards and check-ins are never
/// dropped. Returns how many were dropped.
pub fn enforce_cap(conn: &Connection, cap_bytes: i64) -> Result<usize, StoreError> {
    let bytes: i64 = conn.query_row(
        "SELECT coalesce(sum(bytes), 0) FROM outbox WHERE sent_at IS NULL",
        [],
        |r| r.get(0),
    )?;
    if bytes <= cap_bytes {
        return Ok(0);
    }
    // Exactly the oldest summaries whose bytes make up the excess: each
    // one whose predecessors alone do not.
    let dropped = conn.execute(
        "DELETE FROM outbox WHERE id IN (
             SELECT id FROM (
                 SELECT id, bytes, sum(bytes) OVER (ORDER BY id) AS upto
                 FROM outbox WHERE sent_at IS NULL AND lane = ?1)
             WHERE upto - bytes < ?2)",
        (Lane::Summary.code(), bytes - cap_bytes),
    )?;
    let left: i64 = conn.query_row(
        "SELECT coalesce(sum(bytes), 0) FROM outbox WHERE sent_at IS NULL",
        [],
        |r| r.get(0),
    )?;
    if left > cap_bytes {
        // Only records that must never be dropped are left: keep them all.
        tracing::warn!(
            bytes = left,
            cap = cap_bytes,
            "outbox over its cap with no summaries left to drop"
        );
    }
    if dropped > 0 {
        conn.execute(
            "INSERT INTO counters(name, value) VALUES ('outbox.dropped_summaries', ?1)
             ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            [i64::try_from(dropped).unwrap_or(i64::MAX)],
        )?;
        // Every few minutes in a long outage: counted, and logged at info.
        tracing::info!(dropped, "outbox cap reached: oldest summaries dropped");
    }
    Ok(dropped)
}

/// What is waiting, for the console and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Backlog {
    /// Messages not yet acknowledged by the broker.
    pub pending: i64,
    /// Their size in bytes, as counted against the cap.
    pub bytes: i64,
    /// Summaries dropped to keep under the cap, ever.
    pub dropped_summaries: i64,
}

/// The current backlog.
pub fn backlog(conn: &Connection) -> Result<Backlog, StoreError> {
    let (pending, bytes) = conn.query_row(
        "SELECT count(*), coalesce(sum(bytes), 0) FROM outbox WHERE sent_at IS NULL",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let dropped_summaries = conn
        .query_row(
            "SELECT value FROM counters WHERE name = 'outbox.dropped_summaries'",
            [],
            |r| r.get(0),
        )
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(0),
            e => Err(e),
        })?;
    Ok(Backlog {
        pending,
        bytes,
        dropped_summaries,
    })
}

/// A row waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Row id.
    pub id: i64,
    /// Message id.
    pub msg_id: String,
    /// Lane.
    pub lane: i64,
    /// Sequence number within the lane.
    pub seq: i64,
    /// Message kind (topic suffix).
    pub kind: String,
    /// When the record was made.
    pub created_at: String,
    /// JSON body.
    pub payload: String,
}

/// The next unsent rows, most urgent lane first and oldest first within
/// it, skipping `exclude` (rows already in flight).
pub fn pending(
    conn: &Connection,
    exclude: &[i64],
    limit: usize,
) -> Result<Vec<Pending>, StoreError> {
    // The rows to skip go in as one JSON array: SQLite builds a lookup of
    // them once, and skipped rows are passed over in the partial index
    // without reading their payloads.
    let mut st = conn.prepare_cached(
        "SELECT id, msg_id, lane, seq, kind, created_at, payload FROM outbox
         WHERE sent_at IS NULL AND id NOT IN (SELECT value FROM json_each(?2))
         ORDER BY lane, id LIMIT ?1",
    )?;
    let skip = serde_json::to_string(exclude).unwrap_or_else(|_| "[]".into());
    let want = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = st.query_map((want, skip), |r| {
        Ok(Pending {
            id: r.get(0)?,
            msg_id: r.get(1)?,
            lane: r.get(2)?,
            seq: r.get(3)?,
            kind: r.get(4)?,
            created_at: r.get(5)?,
            payload: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Marks rows as acknowledged by the broker.
pub fn mark_sent(conn: &Connection, ids: &[i64], at: &str) -> Result<usize, StoreError> {
    let mut st =
        conn.prepare_cached("UPDATE outbox SET sent_at = ?2 WHERE id = ?1 AND sent_at IS NULL")?;
    let mut n = 0;
    for id in ids {
        n += st.execute((id, at))?;
    }
    Ok(n)
}

/// The database's epoch (changes only when the database is made anew).
pub fn epoch(conn: &Connection) -> Result<String, StoreError> {
    Ok(
        conn.query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
            r.get(0)
        })?,
    )
}
