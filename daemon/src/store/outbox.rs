//! Messages waiting for the county.
//!
//! A row is written in the same transaction as the record it carries, so a
//! crash never leaves one without the other. Each row gets a globally unique
//! message id (UUID v7, time-ordered) and the next sequence number of its
//! lane, so the receiver can drop duplicates and see gaps.

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use super::StoreError;

pub use pithead_core::protocol::Lane;
use pithead_core::protocol::{GapBody, GapReason};

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
    let e = insert(conn, lane, kind, created_at, payload)?;
    // Summaries are the only messages dropped for room: check the cap as
    // they come, not only in the hourly retention pass.
    if lane == Lane::Summary {
        enforce_recorded_cap(conn)?;
    }
    Ok(e)
}

fn insert(
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
            // A gap record is not counted against the cap: it is what the
            // cap's own drops leave, and must never make room for itself.
            if kind == "gap" {
                0
            } else {
                i64::try_from(body.len() + msg_id.len() + kind.len()).unwrap_or(i64::MAX)
            },
        ),
    )?;
    let id = conn.last_insert_rowid();
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
    // one whose predecessors alone do not. Gap records stay: they are what
    // tells the county the others were dropped.
    let mut st = conn.prepare(
        "DELETE FROM outbox WHERE id IN (
             SELECT id FROM (
                 SELECT id, bytes, sum(bytes) OVER (ORDER BY id) AS upto
                 FROM outbox WHERE sent_at IS NULL AND lane = ?1 AND kind != 'gap')
             WHERE upto - bytes < ?2)
         RETURNING seq",
    )?;
    let mut seqs: Vec<i64> = st
        .query_map((Lane::Summary.code(), bytes - cap_bytes), |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    drop(st);
    let dropped = seqs.len();
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
        // A receiver must tell "dropped by the station" from "lost": each
        // range of numbers dropped is announced in the lane itself.
        seqs.sort_unstable();
        let at = crate::time::now_rfc3339();
        let (county, station) = station_ids(conn)?;
        for (from, to) in ranges(&seqs) {
            let body = serde_json::to_value(GapBody {
                county: county.clone(),
                station: station.clone(),
                lane: Lane::Summary,
                from_seq: from,
                to_seq: to,
                count: to - from + 1,
                reason: GapReason::OutboxCap,
                detail: None,
                kind: None,
                bytes: None,
                at: at.clone(),
            })
            .unwrap_or_default();
            insert(conn, Lane::Summary, "gap", &at, &body)?;
        }
        // Every few minutes in a long outage: counted, and logged at info.
        tracing::info!(
            dropped,
            "outbox cap reached: oldest summaries dropped, the gap announced"
        );
    }
    Ok(dropped)
}

/// The county and station ids the outbox writes into its own records
/// (gaps), as the configuration last recorded them in `meta`.
/// The station's ids as [`set_station`] recorded them (empty before the
/// daemon first started on this database: the envelope carries them too).
fn station_ids(conn: &Connection) -> Result<(String, String), StoreError> {
    let get = |k: &str| -> Result<String, StoreError> {
        Ok(conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
            .optional()?
            .unwrap_or_default())
    };
    Ok((get("station.county")?, get("station.id")?))
}

/// Records the station's ids for the records the outbox makes itself.
pub fn set_station(conn: &Connection, county: &str, station: &str) -> Result<(), StoreError> {
    super::set_meta(conn, "station.county", county)?;
    super::set_meta(conn, "station.id", station)
}

/// Sorted numbers as inclusive ranges: [1, 2, 3, 7, 8] → (1, 3), (7, 8).
pub fn ranges(sorted: &[i64]) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for &s in sorted {
        match out.last_mut() {
            Some((_, to)) if *to + 1 == s => *to = s,
            _ => out.push((s, s)),
        }
    }
    out
}

/// Sets a row aside: kept, never sent, counted (a message the broker will
/// not take must not block those behind it), with an event saying why.
pub fn set_aside(conn: &Connection, id: i64, reason: &str) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE outbox SET set_aside = ?2 WHERE id = ?1 AND set_aside IS NULL AND sent_at IS NULL",
        (id, reason),
    )?;
    if n > 0 {
        let (lane, seq, kind, bytes): (i64, i64, String, i64) = conn.query_row(
            "SELECT lane, seq, kind, bytes FROM outbox WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        super::events::insert(
            conn,
            &crate::time::now_rfc3339(),
            &super::events::NewEvent {
                kind: "outbox.set_aside".into(),
                actor: None,
                subject: Some(kind.clone()),
                detail: serde_json::json!({
                    "row": id, "lane": Lane::from_code(lane).map(Lane::name), "seq": seq,
                    "kind": kind, "bytes": bytes, "reason": reason,
                }),
            },
        )?;
        // The receiver is told the number will not come, and why.
        if let Some(l) = Lane::from_code(lane) {
            let (county, station) = station_ids(conn)?;
            let at = crate::time::now_rfc3339();
            let body = serde_json::to_value(GapBody {
                county,
                station,
                lane: l,
                from_seq: seq,
                to_seq: seq,
                count: 1,
                reason: GapReason::SetAside,
                detail: Some(reason.to_owned()),
                kind: Some(kind.clone()),
                bytes: usize::try_from(bytes).ok(),
                at: at.clone(),
            })
            .unwrap_or_default();
            // In the lane of the row it stands for, except that a gap
            // record is a summary-lane kind: alarms and check-ins are never
            // set aside in practice (they are small), and the receiver
            // reads `lane` from the body.
            insert(conn, Lane::Summary, "gap", &at, &body)?;
        }
        tracing::error!(
            row = id,
            lane,
            seq,
            kind,
            bytes,
            reason,
            "outbox row set aside: it will not be sent"
        );
    }
    Ok(n > 0)
}

/// The largest message the broker takes, as this station has learned it
/// for the configured `configured` (a smaller one may have been learned
/// from the broker dropping the connection: `learn_message_limit`).
pub fn message_limit(conn: &Connection, configured: usize) -> Result<usize, StoreError> {
    let learned: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'mqtt.learned_max'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(learned
        .and_then(|v| {
            let (c, l) = v.split_once(' ')?;
            (c.parse::<usize>().ok()? == configured).then(|| l.parse::<usize>().ok())?
        })
        .map_or(configured, |l| l.min(configured)))
}

/// Notes that the broker takes messages of at most `limit` bytes, for the
/// configured `configured`: summaries and head-counts are split to fit it
/// from now on.
pub fn learn_message_limit(
    conn: &Connection,
    configured: usize,
    limit: usize,
) -> Result<(), StoreError> {
    super::set_meta(conn, "mqtt.learned_max", &format!("{configured} {limit}"))
}

/// Tries a row had at the broker: after the third, it is set aside.
pub const TRIES: i64 = 3;

/// The broker dropped the connection while this (large) row was in
/// flight: one more try counted; at [`TRIES`] it is set aside. Whether it
/// was.
pub fn strike(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    let tries: Option<i64> = conn
        .query_row(
            "UPDATE outbox SET tries = tries + 1 WHERE id = ?1 AND sent_at IS NULL RETURNING tries",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    match tries {
        Some(t) if t >= TRIES => set_aside(
            conn,
            id,
            &format!(
                "the broker dropped the connection {t} times while it was in flight (too big for it?)"
            ),
        ),
        _ => Ok(false),
    }
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
    /// Rows set aside (the broker would not take them), kept, never sent.
    pub set_aside: i64,
}

/// The current backlog.
pub fn backlog(conn: &Connection) -> Result<Backlog, StoreError> {
    let (pending, bytes) = conn.query_row(
        "SELECT count(*), coalesce(sum(bytes), 0) FROM outbox WHERE sent_at IS NULL AND set_aside IS NULL",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let set_aside = conn.query_row(
        "SELECT count(*) FROM outbox WHERE set_aside IS NOT NULL",
        [],
        |r| r.get(0),
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
        set_aside,
    })
}

/// A row waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Row id.
    pub id: i64,
    /// Message id.
    pub msg_id: String,
    /// Lane; `Err(code)` for a code no lane has (a damaged or newer
    /// database: set aside, never sent as another lane).
    pub lane: Result<Lane, i64>,
    /// Sequence number within the lane.
    pub seq: i64,
    /// Message kind (topic suffix).
    pub kind: String,
    /// When the record was made.
    pub created_at: String,
    /// JSON body.
    pub payload: String,
}

/// The next unsent rows up to row `durable` (rows above it may still be
/// lost to a power cut: `Store::durable_outbox`), most urgent lane first
/// and oldest first within it, skipping `exclude` (rows already in flight).
pub fn pending(
    conn: &Connection,
    exclude: &[i64],
    limit: usize,
    durable: i64,
) -> Result<Vec<Pending>, StoreError> {
    // The rows to skip go in as one JSON array: SQLite builds a lookup of
    // them once, and skipped rows are passed over in the partial index
    // without reading their payloads.
    let mut st = conn.prepare_cached(
        "SELECT id, msg_id, lane, seq, kind, created_at, payload FROM outbox
         WHERE sent_at IS NULL AND set_aside IS NULL AND id <= ?3
           AND id NOT IN (SELECT value FROM json_each(?2))
         ORDER BY lane, id LIMIT ?1",
    )?;
    let skip = serde_json::to_string(exclude).unwrap_or_else(|_| "[]".into());
    let want = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = st.query_map((want, skip, durable), |r| {
        Ok(Pending {
            id: r.get(0)?,
            msg_id: r.get(1)?,
            lane: {
                let code: i64 = r.get(2)?;
                Lane::from_code(code).ok_or(code)
            },
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

/// Marks the rows of `lane` numbered `from..=to` to be sent again, with
/// their original message ids and numbers (a county's `resend`). Returns
/// how many, and the ranges of numbers no longer here (pruned after being
/// sent, or dropped at the cap).
pub fn resend(
    conn: &Connection,
    lane: Lane,
    from: i64,
    to: i64,
) -> Result<(usize, Vec<(i64, i64)>), StoreError> {
    let resent = conn.execute(
        "UPDATE outbox SET sent_at = NULL WHERE lane = ?1 AND seq BETWEEN ?2 AND ?3 AND set_aside IS NULL",
        (lane.code(), from, to),
    )?;
    let mut st = conn.prepare(
        "SELECT seq FROM outbox WHERE lane = ?1 AND seq BETWEEN ?2 AND ?3 AND set_aside IS NULL ORDER BY seq",
    )?;
    let have: Vec<i64> = st
        .query_map((lane.code(), from, to), |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut gone = Vec::new();
    let mut next = from;
    for s in have.into_iter().chain(std::iter::once(to + 1)) {
        if s > next {
            gone.push((next, s - 1));
        }
        next = s + 1;
    }
    Ok((resent, gone))
}

/// The database's epoch (changes only when the database is made anew).
pub fn epoch(conn: &Connection) -> Result<String, StoreError> {
    Ok(
        conn.query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
            r.get(0)
        })?,
    )
}
