//! Versioned, forward-only schema migrations.
//!
//! The schema version is SQLite's `user_version`. Each entry of [`MIGRATIONS`]
//! takes the database from version `i` to `i + 1` and runs in one transaction
//! with the version bump, so a crash half-way leaves the old version intact.
//! Never edit a released migration; add a new one.

use rusqlite::Connection;

/// Migration `i` moves the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // v1: the event log, the outbox and its per-lane sequence numbers.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;

    -- Everything that happened and must be kept: alarm transitions,
    -- acknowledgements, daemon starts, configuration changes.
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY,
        at      TEXT    NOT NULL,          -- RFC 3339, UTC, wall clock
        kind    TEXT    NOT NULL,          -- e.g. 'alarm.raised'
        actor   TEXT,                      -- who, for human actions
        subject TEXT,                      -- what, e.g. a channel id
        detail  TEXT    NOT NULL DEFAULT '{}' -- JSON
    );
    CREATE INDEX events_at ON events(at);

    -- Messages for the county, written in the same transaction as the
    -- record they carry (transactional outbox).
    CREATE TABLE outbox (
        id         INTEGER PRIMARY KEY,
        msg_id     TEXT    NOT NULL UNIQUE, -- globally unique, for de-duplication
        lane       INTEGER NOT NULL,        -- priority lane, 0 is most urgent
        seq        INTEGER NOT NULL,        -- per-lane sequence, gap detection
        kind       TEXT    NOT NULL,        -- message kind, e.g. 'alarm'
        created_at TEXT    NOT NULL,        -- RFC 3339, UTC
        payload    TEXT    NOT NULL,        -- JSON body of the message
        bytes      INTEGER NOT NULL,        -- size accounted against the cap
        sent_at    TEXT,                    -- set when the broker acknowledged
        UNIQUE (lane, seq)
    );
    CREATE INDEX outbox_pending ON outbox(lane, id) WHERE sent_at IS NULL;

    CREATE TABLE lane_seq (
        lane INTEGER PRIMARY KEY,
        next INTEGER NOT NULL
    );

    -- Monotonic counters that must survive restarts (e.g. dropped summaries).
    CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // v2: sensor data.
    r#"
    -- Raw readings, stored at the configured rate. value is NULL exactly
    -- when state is not 'ok': a reading the box does not have is never 0.
    CREATE TABLE readings (
        channel TEXT    NOT NULL,
        at_ms   INTEGER NOT NULL,           -- Unix milliseconds, UTC
        value   REAL,
        state   TEXT    NOT NULL,
        CHECK ((state = 'ok') = (value IS NOT NULL))
    );
    CREATE INDEX readings_channel_at ON readings(channel, at_ms);
    CREATE INDEX readings_at ON readings(at_ms);

    -- Per-channel, per-minute statistics for summaries and trend charts.
    CREATE TABLE aggregates (
        channel   TEXT    NOT NULL,
        minute_ms INTEGER NOT NULL,         -- start of the minute, Unix ms
        min       REAL,
        max       REAL,
        mean      REAL,
        count     INTEGER NOT NULL,         -- good readings
        faults    INTEGER NOT NULL,         -- readings in a special state
        PRIMARY KEY (channel, minute_ms)
    ) WITHOUT ROWID;
    CREATE INDEX aggregates_minute ON aggregates(minute_ms);
    "#,
    // v3: people at the shaft head.
    r#"
    -- The roster, from the CSV import. Workers missing from a later import
    -- are kept, inactive, for the history of their check-ins.
    CREATE TABLE workers (
        badge      TEXT PRIMARY KEY,
        name       TEXT    NOT NULL,
        team       TEXT    NOT NULL DEFAULT '',
        role       TEXT    NOT NULL DEFAULT '',
        active     INTEGER NOT NULL DEFAULT 1,
        updated_at TEXT    NOT NULL
    ) WITHOUT ROWID;

    -- Every check-in and check-out attempt, including the refused ones.
    CREATE TABLE checkins (
        id        INTEGER PRIMARY KEY,
        badge     TEXT    NOT NULL,
        name      TEXT,                      -- from the roster, if known
        direction TEXT    NOT NULL CHECK (direction IN ('in', 'out')),
        outcome   TEXT    NOT NULL CHECK (outcome IN ('ok', 'unknown_badge', 'already_in', 'not_in')),
        at        TEXT    NOT NULL,          -- RFC 3339 UTC
        at_ms     INTEGER NOT NULL
    );
    CREATE INDEX checkins_badge ON checkins(badge, id);
    CREATE INDEX checkins_at ON checkins(at_ms);

    -- Who is underground now.
    CREATE TABLE underground (
        badge      TEXT PRIMARY KEY,
        checkin_id INTEGER NOT NULL REFERENCES checkins(id),
        since      TEXT    NOT NULL,
        since_ms   INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // v4: hazard reports and their lifecycle.
    r#"
    CREATE TABLE hazards (
        id          INTEGER PRIMARY KEY,
        ticket      TEXT    NOT NULL UNIQUE,  -- short code the reporter looks up
        category    TEXT    NOT NULL CHECK (category IN
                      ('gas', 'water', 'roof', 'ventilation', 'electrical', 'machinery', 'fire', 'transport', 'other')),
        location    TEXT    NOT NULL,
        grade       TEXT    NOT NULL CHECK (grade IN ('general', 'major')),
        description TEXT    NOT NULL,
        photo       TEXT,                     -- SHA-256 of the stored photo
        reporter    TEXT,                     -- badge; NULL when anonymous
        status      TEXT    NOT NULL CHECK (status IN
                      ('reported', 'acknowledged', 'assigned', 'rectified', 'closed', 'rejected')),
        owner       TEXT,
        deadline    TEXT,                     -- RFC 3339, for rectification
        measures    TEXT,
        reported_at TEXT    NOT NULL,
        updated_at  TEXT    NOT NULL
    );
    CREATE INDEX hazards_status ON hazards(status, id);

    -- Every step of a hazard's lifecycle: who, when, what they said.
    CREATE TABLE hazard_steps (
        id        INTEGER PRIMARY KEY,
        hazard_id INTEGER NOT NULL REFERENCES hazards(id),
        status    TEXT    NOT NULL,
        by        TEXT,
        note      TEXT,
        at        TEXT    NOT NULL
    );
    CREATE INDEX hazard_steps_hazard ON hazard_steps(hazard_id, id);
    "#,
    // v5: supervisors who log in to the console.
    r#"
    CREATE TABLE users (
        name          TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,         -- argon2id PHC string
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL
    ) WITHOUT ROWID;
    "#,
    // v6: notices from the county, shown on the kiosk.
    r#"
    CREATE TABLE notices (
        msg_id      TEXT PRIMARY KEY,         -- the county's message id: a replay is ignored
        title       TEXT NOT NULL,
        body        TEXT NOT NULL,
        priority    TEXT NOT NULL CHECK (priority IN ('normal', 'urgent')),
        valid_from  TEXT NOT NULL,
        valid_until TEXT NOT NULL,
        received_at TEXT NOT NULL
    ) WITHOUT ROWID;
    "#,
    // v7: the county's hazard updates are checked for replays by message
    // id; without an index that was a scan of the whole event log.
    r#"
    CREATE INDEX events_county_hazard ON events(subject) WHERE kind = 'county.hazard';
    "#,
    // v8: one row per alarm, kept with the event log by the recorder, so
    // the restore at start reads the open alarms only (not the whole log)
    // and the console's history is one indexed query. Filled once from the
    // log of older versions.
    r#"
    CREATE TABLE alarms (
        id         INTEGER PRIMARY KEY,     -- the alarm id
        subject    TEXT NOT NULL,           -- channel id, or output:/system:/worker: subject
        level      TEXT NOT NULL,           -- fault, warning, alarm, power_cut, overdue
        value      REAL,                    -- when raised, if there was one
        state      TEXT NOT NULL,           -- the reading's state when raised
        raised_at  TEXT NOT NULL,
        acked_by   TEXT,
        acked_at   TEXT,
        cleared_at TEXT
    );
    CREATE INDEX alarms_open ON alarms(id) WHERE cleared_at IS NULL;
    CREATE INDEX alarms_ended ON alarms(id) WHERE cleared_at IS NOT NULL;
    INSERT OR IGNORE INTO alarms(id, subject, level, value, state, raised_at)
        SELECT json_extract(detail, '$.alarm_id'), coalesce(json_extract(detail, '$.channel'), ''),
               json_extract(detail, '$.level'), json_extract(detail, '$.value'),
               coalesce(json_extract(detail, '$.state'), 'ok'), coalesce(json_extract(detail, '$.at'), at)
        FROM events
        WHERE kind IN ('alarm.raised', 'alarm.escalated')
          AND json_valid(detail) AND json_extract(detail, '$.alarm_id') IS NOT NULL
          AND json_extract(detail, '$.level') IS NOT NULL
        ORDER BY id;
    UPDATE alarms SET acked_by = a.actor, acked_at = a.at
        FROM (SELECT json_extract(detail, '$.alarm_id') AS alarm, actor, coalesce(json_extract(detail, '$.at'), at) AS at
              FROM events WHERE kind = 'alarm.acknowledged' AND json_valid(detail)) AS a
        WHERE alarms.id = a.alarm;
    UPDATE alarms SET cleared_at = c.at
        FROM (SELECT json_extract(detail, '$.alarm_id') AS alarm, max(coalesce(json_extract(detail, '$.at'), at)) AS at
              FROM events WHERE kind = 'alarm.cleared' AND json_valid(detail) GROUP BY 1) AS c
        WHERE alarms.id = c.alarm;
    "#,
    // v9: a supervisor may check a person out by hand (a badge lost, a
    // miner who left by another way), with a reason.
    r#"
    ALTER TABLE checkins ADD COLUMN by TEXT;      -- the supervisor, for a check-out by hand
    ALTER TABLE checkins ADD COLUMN reason TEXT;  -- why, for a check-out by hand
    CREATE INDEX checkins_by_hand ON checkins(at_ms) WHERE by IS NOT NULL;
    "#,
    // v10: a row the broker will not take (too big) is set aside after a
    // few tries instead of going first again for ever.
    r#"
    ALTER TABLE outbox ADD COLUMN tries INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE outbox ADD COLUMN set_aside TEXT;   -- why, once set aside; never sent then
    CREATE INDEX outbox_set_aside ON outbox(id) WHERE set_aside IS NOT NULL;
    "#,
    // v11: which kiosk a check-in came from ('local' for the box's own
    // screen, else the name in [kiosk] keys_file).
    r#"
    ALTER TABLE checkins ADD COLUMN kiosk TEXT;
    "#,
    // v12: who read which urgent county notice at check-in (已阅).
    r#"
    CREATE TABLE notice_reads (
        notice  TEXT NOT NULL,               -- the notice's msg_id
        badge   TEXT NOT NULL,
        read_at TEXT NOT NULL,
        kiosk   TEXT NOT NULL,
        PRIMARY KEY (notice, badge)
    ) WITHOUT ROWID;
    "#,
    // v13: calibration (标校): who calibrated which sensor, when and why;
    // readings taken meanwhile are counted apart in the aggregates.
    r#"
    ALTER TABLE aggregates ADD COLUMN calibrating INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE calibrations (
        id         INTEGER PRIMARY KEY,
        channel    TEXT NOT NULL,
        started_at TEXT NOT NULL,
        until      TEXT NOT NULL,
        ended_at   TEXT,
        by         TEXT NOT NULL,
        reason     TEXT NOT NULL
    );
    CREATE INDEX calibrations_channel ON calibrations(channel, id);
    "#,
    // v14: a major hazard's category of the fifteen, and the rest of the
    // "five in place" of its assignment (funds, plan).
    r#"
    ALTER TABLE hazards ADD COLUMN major_category TEXT;
    ALTER TABLE hazards ADD COLUMN funds TEXT;
    ALTER TABLE hazards ADD COLUMN plan TEXT;
    "#,
];

/// The version a database has after every migration.
pub fn latest() -> u32 {
    u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX)
}

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The file is from a newer Pithead; running would risk it.
    #[error(
        "schema version {found} is newer than this build knows ({known}); install the newer Pithead again"
    )]
    TooNew {
        /// Version in the file.
        found: u32,
        /// Newest this build knows.
        known: u32,
    },
    /// SQLite refused.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// Brings `conn` up to [`latest`], applying at most `upto` migrations in
/// total (tests use it to build every older version). Returns the version
/// the file had before.
pub fn migrate(conn: &mut Connection, upto: Option<u32>) -> Result<u32, MigrateError> {
    let found: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let target = upto.unwrap_or_else(latest).min(latest());
    if found > latest() {
        return Err(MigrateError::TooNew {
            found,
            known: latest(),
        });
    }
    for v in found..target {
        let tx = conn.transaction()?;
        tx.execute_batch(MIGRATIONS[v as usize])?;
        tx.pragma_update(None, "user_version", v + 1)?;
        tx.commit()?;
        tracing::info!(from = v, to = v + 1, "migrated database schema");
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(conn: &Connection) -> Vec<String> {
        let mut st = conn
            .prepare("SELECT type || ' ' || name || ' ' || coalesce(sql, '') FROM sqlite_master ORDER BY name")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn every_older_version_reaches_the_same_schema_as_a_fresh_file() -> Result<(), MigrateError> {
        let mut fresh = Connection::open_in_memory()?;
        assert_eq!(migrate(&mut fresh, None)?, 0);
        let want = schema(&fresh);
        for start in 0..=latest() {
            let mut conn = Connection::open_in_memory()?;
            migrate(&mut conn, Some(start))?;
            let v: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            assert_eq!(v, start);
            assert_eq!(migrate(&mut conn, None)?, start);
            assert_eq!(schema(&conn), want, "from version {start}");
        }
        Ok(())
    }

    #[test]
    fn data_written_at_v1_survives_migration() -> Result<(), MigrateError> {
        let mut conn = Connection::open_in_memory()?;
        migrate(&mut conn, Some(1))?;
        conn.execute(
            "INSERT INTO events(at, kind, detail) VALUES ('2026-01-01T00:00:00Z', 'daemon.started', '{}')",
            [],
        )?;
        migrate(&mut conn, None)?;
        let n: i64 = conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
        assert_eq!(n, 1);
        Ok(())
    }

    #[test]
    fn newer_file_is_refused() -> Result<(), MigrateError> {
        let mut conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "user_version", latest() + 1)?;
        assert!(matches!(
            migrate(&mut conn, None),
            Err(MigrateError::TooNew { .. })
        ));
        Ok(())
    }

    #[test]
    fn readings_never_store_a_value_with_a_fault() -> Result<(), MigrateError> {
        let mut conn = Connection::open_in_memory()?;
        migrate(&mut conn, None)?;
        let bad = conn.execute(
            "INSERT INTO readings(channel, at_ms, value, state) VALUES ('c', 1, 0.0, 'comm_fault')",
            [],
        );
        assert!(bad.is_err());
        let bad = conn.execute(
            "INSERT INTO readings(channel, at_ms, value, state) VALUES ('c', 1, NULL, 'ok')",
            [],
        );
        assert!(bad.is_err());
        Ok(())
    }
}
