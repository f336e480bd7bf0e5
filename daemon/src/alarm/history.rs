//! The alarm history in the store: one row per alarm in `alarms`, kept in
//! step with the event log by the recorder (same transaction), so that the
//! restore at start reads only the open alarms (a partial index) however
//! long the log has grown, and the console's history is one indexed query.

use rusqlite::Connection;

use super::AlarmView;
use super::engine::{Ack, AlarmEvent, AlarmKind, EventKind, Restored};
use crate::store::StoreError;

/// Applies one event to the `alarms` table, inside the recorder's
/// transaction.
pub fn apply(conn: &Connection, e: &AlarmEvent, at: &str) -> Result<(), StoreError> {
    match e.kind {
        EventKind::Raised | EventKind::Escalated => {
            conn.execute(
                "INSERT OR IGNORE INTO alarms(id, subject, level, value, state, raised_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                (
                    i64::try_from(e.alarm_id).unwrap_or(i64::MAX),
                    &e.channel,
                    e.level.as_str(),
                    e.value,
                    e.state.as_str(),
                    at,
                ),
            )?;
        }
        EventKind::Acknowledged => {
            conn.execute(
                "UPDATE alarms SET acked_by = ?2, acked_at = ?3 WHERE id = ?1",
                (
                    i64::try_from(e.alarm_id).unwrap_or(i64::MAX),
                    e.by.as_deref(),
                    at,
                ),
            )?;
        }
        EventKind::Cleared => {
            conn.execute(
                "UPDATE alarms SET cleared_at = ?2 WHERE id = ?1",
                (i64::try_from(e.alarm_id).unwrap_or(i64::MAX), at),
            )?;
        }
        EventKind::Returned | EventKind::Recurred => {}
    }
    Ok(())
}

/// The alarms raised and never cleared, and the highest alarm id ever
/// recorded: what a restart brings back. Reads the open alarms only.
pub fn unfinished(conn: &Connection) -> Result<(Vec<Restored>, Option<u64>), StoreError> {
    let max_id: Option<i64> = conn.query_row("SELECT max(id) FROM alarms", [], |r| r.get(0))?;
    let mut st = conn.prepare(
        "SELECT id, subject, level, value, raised_at, acked_by, acked_at \
         FROM alarms WHERE cleared_at IS NULL ORDER BY id",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<f64>>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, Option<String>>(6)?,
        ))
    })?;
    let time =
        |t: &str| humantime::parse_rfc3339(t).unwrap_or_else(|_| std::time::SystemTime::now());
    let mut out = Vec::new();
    for row in rows {
        let (id, channel, level, value, raised_at, acked_by, acked_at) = row?;
        // An active alarm this version cannot read is not skipped: the
        // history counts as unreadable, and the engine then keeps the power
        // cut until a supervisor acknowledges (`system:alarm_history`).
        let Some(kind) = AlarmKind::parse(&level) else {
            return Err(StoreError::Rejected(format!(
                "active alarm {id} has a level this version does not know ({level:?})"
            )));
        };
        out.push(Restored {
            id: u64::try_from(id).unwrap_or(0),
            channel,
            kind,
            value,
            raised_wall: time(&raised_at),
            acked: acked_by.map(|by| Ack {
                by,
                at: acked_at
                    .as_deref()
                    .map_or_else(std::time::SystemTime::now, time),
            }),
        });
    }
    Ok((out, max_id.and_then(|m| u64::try_from(m).ok())))
}

/// The `limit` alarms that ended last, newest first, for the console.
pub fn ended(conn: &Connection, limit: u32) -> Result<Vec<AlarmView>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT id, subject, level, value, state, raised_at, acked_by, acked_at, cleared_at \
         FROM alarms WHERE cleared_at IS NOT NULL ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = st.query_map([limit], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<f64>>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, Option<String>>(6)?,
            r.get::<_, Option<String>>(7)?,
            r.get::<_, Option<String>>(8)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, channel, level, value, state, raised_at, by, acked_at, cleared_at) = row?;
        let (Some(kind), Some(state)) = (
            AlarmKind::parse(&level),
            pithead_core::ReadingState::parse(&state),
        ) else {
            continue;
        };
        out.push(AlarmView {
            id: u64::try_from(id).unwrap_or(0),
            channel,
            level: kind.as_str(),
            state: "cleared",
            value,
            reading_state: state.as_str(),
            raised_at,
            acknowledged_by: by,
            acknowledged_at: acked_at,
            cleared_at,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, SystemTime};

    use super::*;
    use crate::config::LevelName;
    use pithead_core::ReadingState;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::schema::migrate(&mut c, None).unwrap();
        c
    }

    fn ev(kind: EventKind, id: u64, level: AlarmKind) -> AlarmEvent {
        AlarmEvent {
            kind,
            alarm_id: id,
            channel: "ch4".into(),
            level,
            value: Some(1.62),
            state: ReadingState::Ok,
            by: (kind == EventKind::Acknowledged).then(|| "王班长".to_owned()),
            at: SystemTime::now(),
        }
    }

    #[test]
    fn open_alarms_come_back_with_their_acknowledgements_and_ended_ones_are_history() {
        let c = db();
        let cut = AlarmKind::Level(LevelName::PowerCut);
        let warn = AlarmKind::Level(LevelName::Warning);
        for (e, at) in [
            (ev(EventKind::Raised, 10, warn), "2026-12-01T08:00:00.000Z"),
            (
                ev(EventKind::Escalated, 11, cut),
                "2026-12-01T08:00:01.000Z",
            ),
            (ev(EventKind::Cleared, 10, warn), "2026-12-01T08:01:00.000Z"),
            (
                ev(EventKind::Acknowledged, 11, cut),
                "2026-12-01T08:02:00.000Z",
            ),
            (ev(EventKind::Returned, 11, cut), "2026-12-01T08:03:00.000Z"),
        ] {
            apply(&c, &e, at).unwrap();
        }
        let (open, max) = unfinished(&c).unwrap();
        assert_eq!(max, Some(11));
        assert_eq!(
            open.iter()
                .map(|r| (r.id, r.kind, r.acked.as_ref().map(|a| a.by.as_str())))
                .collect::<Vec<_>>(),
            [(11, cut, Some("王班长"))]
        );
        let past = ended(&c, 10).unwrap();
        assert_eq!(past.len(), 1);
        assert_eq!(
            (past[0].id, past[0].level, past[0].cleared_at.as_deref()),
            (10, "warning", Some("2026-12-01T08:01:00.000Z"))
        );
    }

    #[test]
    fn an_open_alarm_of_an_unknown_level_makes_the_history_unreadable_not_shorter() {
        let c = db();
        c.execute_batch(
            "INSERT INTO alarms(id, subject, level, value, state, raised_at)
             VALUES (7, 'ch4', 'power_cut', 1.7, 'ok', '2026-01-01T00:00:00Z'),
                    (8, 'ch4', 'evacuate', 2.1, 'ok', '2026-01-01T00:00:01Z');",
        )
        .unwrap();
        // Skipping alarm 8 would restore a station that forgot an alarm;
        // an error makes the engine hold the power until acknowledged.
        let e = unfinished(&c)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("alarm 8") && e.contains("evacuate"), "{e}");
    }

    #[test]
    fn the_restore_reads_only_open_alarms_however_long_the_log() {
        let c = db();
        // 200 000 alarms that came and went, and one still open.
        c.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
             INSERT INTO alarms(id, subject, level, value, state, raised_at, cleared_at)
             SELECT i, 'ch4', 'warning', 0.9, 'ok', '2026-01-01T00:00:00Z', '2026-01-01T00:01:00Z' FROM n;
             INSERT INTO alarms(id, subject, level, value, state, raised_at)
             VALUES (200001, 'ch4', 'power_cut', 1.7, 'ok', '2026-01-01T00:00:00Z');",
        )
        .unwrap();
        let plan: String = c
            .query_row(
                "EXPLAIN QUERY PLAN SELECT id FROM alarms WHERE cleared_at IS NULL ORDER BY id",
                [],
                |r| r.get(3),
            )
            .unwrap_or_default();
        assert!(plan.contains("alarms_open"), "an index, not a scan: {plan}");
        let t = Instant::now();
        let (open, max) = unfinished(&c).unwrap();
        assert_eq!((open.len(), max), (1, Some(200_001)));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn an_old_event_log_is_carried_into_the_table_by_the_migration() {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::schema::migrate(&mut c, Some(7)).unwrap();
        for (kind, actor, detail) in [
            (
                "alarm.raised",
                None,
                r#"{"alarm_id":5,"channel":"ch4","level":"power_cut","value":1.7,"state":"ok","at":"2026-01-01T00:00:00.000Z"}"#,
            ),
            (
                "alarm.raised",
                None,
                r#"{"alarm_id":6,"channel":"co","level":"alarm","value":30.0,"state":"ok","at":"2026-01-01T00:00:01.000Z"}"#,
            ),
            (
                "alarm.acknowledged",
                Some("李"),
                r#"{"alarm_id":5,"channel":"ch4","level":"power_cut","at":"2026-01-01T00:00:02.000Z"}"#,
            ),
            (
                "alarm.cleared",
                None,
                r#"{"alarm_id":6,"channel":"co","level":"alarm","at":"2026-01-01T00:00:03.000Z"}"#,
            ),
        ] {
            c.execute(
                "INSERT INTO events(at, kind, actor, subject, detail) VALUES ('2026-01-01T00:00:00Z', ?1, ?2, 'x', ?3)",
                (kind, actor, detail),
            )
            .unwrap();
        }
        crate::store::schema::migrate(&mut c, None).unwrap();
        let (open, max) = unfinished(&c).unwrap();
        assert_eq!(max, Some(6));
        assert_eq!(
            open.iter()
                .map(|r| (
                    r.id,
                    r.channel.as_str(),
                    r.acked.as_ref().map(|a| a.by.as_str())
                ))
                .collect::<Vec<_>>(),
            [(5, "ch4", Some("李"))]
        );
    }
}
