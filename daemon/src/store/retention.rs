//! Keeping the database within its bounds: old readings and aggregates go
//! after their retention period, acknowledged outbox rows after a week, and
//! when the unsent outbox passes its cap the oldest summaries are dropped
//! (and counted), never alarms, hazards or check-ins.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;
use serde::Serialize;

use super::{Durability, Store, StoreError};
use crate::config::Storage;

/// How long acknowledged outbox rows are kept, for the console's history.
const SENT_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// Limits, from `[storage]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Raw readings older than this go.
    pub raw_readings: Duration,
    /// Aggregates older than this go.
    pub aggregates: Duration,
    /// Unsent outbox bytes above this drop the oldest summaries.
    pub outbox_cap_bytes: i64,
    /// Photos of hazards closed or rejected longer ago than this go.
    pub photos: Duration,
}

impl From<&Storage> for Policy {
    fn from(s: &Storage) -> Self {
        let day = 24 * 3600;
        Policy {
            raw_readings: Duration::from_secs(u64::from(s.raw_readings_days) * day),
            aggregates: Duration::from_secs(u64::from(s.aggregates_days) * day),
            outbox_cap_bytes: i64::from(s.outbox_cap_mb) * 1024 * 1024,
            photos: Duration::from_secs(u64::from(s.photos_days) * day),
        }
    }
}

/// What one pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// Raw readings removed.
    pub readings: usize,
    /// Aggregate rows removed.
    pub aggregates: usize,
    /// Acknowledged outbox rows removed.
    pub sent: usize,
    /// Unsent summaries dropped to keep under the cap.
    pub dropped_summaries: usize,
}

fn ms_before(now: SystemTime, age: Duration) -> i64 {
    let t = now.checked_sub(age).unwrap_or(UNIX_EPOCH);
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Rows one pass deletes from each table at most: a pass is one writer job,
/// and check-ins must not queue behind a long delete.
pub const CHUNK: i64 = 5000;

/// One pass, inside the caller's transaction, deleting at most `chunk` old
/// rows of each table; call again while it removes anything.
pub fn prune(
    conn: &Connection,
    policy: &Policy,
    now: SystemTime,
    chunk: i64,
) -> Result<Pruned, StoreError> {
    let mut out = Pruned {
        readings: conn.execute(
            "DELETE FROM readings WHERE rowid IN
               (SELECT rowid FROM readings WHERE at_ms < ?1 LIMIT ?2)",
            (ms_before(now, policy.raw_readings), chunk),
        )?,
        aggregates: conn.execute(
            "DELETE FROM aggregates WHERE (channel, minute_ms) IN
               (SELECT channel, minute_ms FROM aggregates WHERE minute_ms < ?1 LIMIT ?2)",
            (ms_before(now, policy.aggregates), chunk),
        )?,
        ..Pruned::default()
    };
    let sent_before = crate::time::rfc3339(now.checked_sub(SENT_KEEP).unwrap_or(UNIX_EPOCH));
    out.sent = conn.execute(
        "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?1",
        [sent_before],
    )?;
    out.dropped_summaries = super::outbox::enforce_cap(conn, policy.outbox_cap_bytes)?;
    Ok(out)
}

/// Removes the photos of hazards closed or rejected before the policy's
/// age (the hazards keep their record); returns how many files went.
pub async fn prune_photos(store: &Store, data_dir: &std::path::Path, keep: Duration) -> usize {
    let before = crate::time::rfc3339(SystemTime::now().checked_sub(keep).unwrap_or(UNIX_EPOCH));
    let expired = match store.read(move |c| expired_photos(c, &before)).await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for old photos");
            return 0;
        }
    };
    let mut removed = 0;
    let mut ids = Vec::new();
    for (id, name, shared) in expired {
        if !shared && let Some((path, _)) = crate::photos::path_of(data_dir, &name) {
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(error = %e, file = %path.display(), "cannot remove an old photo");
                    continue;
                }
            }
        }
        ids.push(id);
    }
    if !ids.is_empty()
        && let Err(e) = store
            .write(Durability::Bulk, move |c| {
                let mut st = c.prepare_cached("UPDATE hazards SET photo = NULL WHERE id = ?1")?;
                for id in &ids {
                    st.execute([id])?;
                }
                Ok(())
            })
            .await
    {
        tracing::warn!(error = %e, "cannot note the photos removed");
    }
    removed
}

/// Prunes once an hour (and once at start) until `shutdown`.
pub async fn run(
    store: Store,
    policy: Policy,
    data_dir: std::path::PathBuf,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut total = Pruned::default();
        loop {
            match store
                .write(Durability::Bulk, move |c| {
                    prune(c, &policy, SystemTime::now(), CHUNK)
                })
                .await
            {
                Ok(p) => {
                    total.readings += p.readings;
                    total.aggregates += p.aggregates;
                    total.sent += p.sent;
                    total.dropped_summaries += p.dropped_summaries;
                    let full = usize::try_from(CHUNK).unwrap_or(usize::MAX);
                    if (p.readings < full && p.aggregates < full) || shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention pass failed; will try again");
                    break;
                }
            }
        }
        if total != Pruned::default() {
            tracing::info!(?total, "retention pass");
        }
        let photos = prune_photos(&store, &data_dir, policy.photos).await;
        if photos > 0 {
            tracing::info!(photos, "photos of hazards closed long ago removed");
        }
    }
}

/// The photos of hazards closed or rejected before `before` (RFC 3339):
/// (hazard id, photo name), and whether another hazard still needs the same
/// file (photos are stored by content).
fn expired_photos(
    conn: &rusqlite::Connection,
    before: &str,
) -> Result<Vec<(i64, String, bool)>, StoreError> {
    let mut st = conn.prepare(
        "SELECT h.id, h.photo, EXISTS (SELECT 1 FROM hazards o WHERE o.photo = h.photo AND o.id != h.id
                 AND NOT (o.status IN ('closed', 'rejected') AND o.updated_at < ?1))
         FROM hazards h WHERE h.photo IS NOT NULL AND h.status IN ('closed', 'rejected') AND h.updated_at < ?1",
    )?;
    let rows = st.query_map([before], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
