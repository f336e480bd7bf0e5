//! The event log: everything that happened that someone may ask about later.

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use super::StoreError;

/// An event to record.
#[derive(Debug, Clone, Serialize)]
pub struct NewEvent {
    /// What happened, dotted: `daemon.started`, `alarm.raised`, ...
    pub kind: String,
    /// Who did it, for human actions (supervisor name, badge).
    pub actor: Option<String>,
    /// What it concerns, e.g. a channel id.
    pub subject: Option<String>,
    /// Everything else, as JSON.
    pub detail: serde_json::Value,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Row id, increasing.
    pub id: i64,
    /// RFC 3339 UTC wall-clock time.
    pub at: String,
    /// See [`NewEvent::kind`].
    pub kind: String,
    /// See [`NewEvent::actor`].
    pub actor: Option<String>,
    /// See [`NewEvent::subject`].
    pub subject: Option<String>,
    /// See [`NewEvent::detail`].
    pub detail: serde_json::Value,
}

/// Inserts an event inside the caller's transaction; returns its id.
pub fn insert(conn: &Connection, at: &str, ev: &NewEvent) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO events(at, kind, actor, subject, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        (at, &ev.kind, &ev.actor, &ev.subject, ev.detail.to_string()),
    )?;
    Ok(conn.last_insert_rowid())
}

/// One event by id.
pub fn get(conn: &Connection, id: i64) -> Result<Option<Event>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT id, at, kind, actor, subject, detail FROM events WHERE id = ?1",
            [id],
            row,
        )
        .optional()?)
}

/// The newest `limit` events, newest first.
pub fn recent(conn: &Connection, limit: u32) -> Result<Vec<Event>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT id, at, kind, actor, subject, detail FROM events ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = st.query_map([limit], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let detail: String = r.get(5)?;
    Ok(Event {
        id: r.get(0)?,
        at: r.get(1)?,
        kind: r.get(2)?,
        actor: r.get(3)?,
        subject: r.get(4)?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
    })
}
