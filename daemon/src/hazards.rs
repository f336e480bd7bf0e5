//! Hazard reports (隐患随手拍) and their closed loop: reported →
//! acknowledged → assigned (owner, deadline, measures) → rectified →
//! closed (销号), or rejected with a reason. Every step records who, when
//! and a note, and goes to the county with its outbox row in the same
//! transaction.

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension};

use crate::config::Config;
use crate::store::StoreError;
use crate::store::outbox::{self, Lane};
use crate::time::rfc3339;

pub use pithead_core::hazard::{
    Grade, Hazard, Invalid, NewHazard, PublicHazard, Status, Step, StepRecord,
};

/// Ticket alphabet: no 0/O, 1/I/L, easy to read out and type on a kiosk.
const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";

fn new_ticket() -> String {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..6]
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// Records a new report with its first step and its outbox row.
pub fn create(
    conn: &Connection,
    cfg: &Config,
    h: &NewHazard,
    photo: Option<&str>,
    at: SystemTime,
) -> Result<Hazard, StoreError> {
    let at_s = rfc3339(at);
    let mut ticket = new_ticket();
    while conn
        .query_row("SELECT 1 FROM hazards WHERE ticket = ?1", [&ticket], |_| {
            Ok(())
        })
        .optional()?
        .is_some()
    {
        ticket = new_ticket();
    }
    let category = serde_json::to_value(h.category).unwrap_or_default();
    let grade = serde_json::to_value(h.grade).unwrap_or_default();
    conn.execute(
        "INSERT INTO hazards(ticket, category, location, grade, description, photo, reporter, status, reported_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'reported', ?8, ?8)",
        (&ticket, category.as_str(), &h.location, grade.as_str(), &h.description, photo, &h.badge, &at_s),
    )?;
    let id = conn.last_insert_rowid();
    conn.execute(
        "INSERT INTO hazard_steps(hazard_id, status, by, at) VALUES (?1, 'reported', NULL, ?2)",
        (id, &at_s),
    )?;
    let hazard = get(conn, &ticket, at)?
        .ok_or_else(|| StoreError::Rejected("the report vanished".into()))?;
    enqueue(conn, cfg, &hazard, Status::Reported, &at_s)?;
    Ok(hazard)
}

fn enqueue(
    conn: &Connection,
    cfg: &Config,
    h: &Hazard,
    event: Status,
    at: &str,
) -> Result<(), StoreError> {
    let payload = serde_json::to_value(pithead_core::protocol::HazardBody {
        event,
        // Major hazards go to the county at once: the sync task sends this
        // lane before check-ins and summaries.
        urgent: h.grade == Grade::Major,
        hazard: h.clone(),
        county: cfg.station.county.clone(),
        station: cfg.station.id.clone(),
    })
    .unwrap_or_default();
    outbox::enqueue(conn, Lane::Hazard, "hazard", at, &payload)?;
    Ok(())
}

/// Why a step was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepError {
    /// No hazard has that ticket.
    NotFound,
    /// The request is malformed or breaks the lifecycle.
    Invalid(Invalid),
}

/// Takes a lifecycle step, recorded with its outbox row.
pub fn step(
    conn: &Connection,
    cfg: &Config,
    ticket: &str,
    s: &Step,
    at: SystemTime,
) -> Result<Result<Hazard, StepError>, StoreError> {
    let Some(current) = get(conn, ticket, at)? else {
        return Ok(Err(StepError::NotFound));
    };
    let checked = s.clone().check(current.status);
    let s = match checked {
        Ok(s) => s,
        Err(e) => return Ok(Err(StepError::Invalid(e))),
    };
    let at_s = rfc3339(at);
    conn.execute(
        "UPDATE hazards SET status = ?2, updated_at = ?3,
           owner = coalesce(?4, owner), deadline = coalesce(?5, deadline), measures = coalesce(?6, measures)
         WHERE ticket = ?1",
        (ticket, s.status.as_str(), &at_s, &s.owner, &s.deadline, &s.measures),
    )?;
    conn.execute(
        "INSERT INTO hazard_steps(hazard_id, status, by, note, at)
         SELECT id, ?2, ?3, ?4, ?5 FROM hazards WHERE ticket = ?1",
        (ticket, s.status.as_str(), &s.by, &s.note, &at_s),
    )?;
    let hazard =
        get(conn, ticket, at)?.ok_or_else(|| StoreError::Rejected("the report vanished".into()))?;
    enqueue(conn, cfg, &hazard, s.status, &at_s)?;
    Ok(Ok(hazard))
}

/// One hazard by ticket.
pub fn get(conn: &Connection, ticket: &str, now: SystemTime) -> Result<Option<Hazard>, StoreError> {
    let row = conn
        .query_row(
            "SELECT id, ticket, category, location, grade, description, photo, reporter, status, owner, deadline,
                    measures, reported_at, updated_at FROM hazards WHERE ticket = ?1",
            [ticket],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    (r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get::<_, String>(4)?),
                    (r.get::<_, String>(5)?, r.get::<_, Option<String>>(6)?, r.get::<_, Option<String>>(7)?),
                    (r.get::<_, String>(8)?, r.get::<_, Option<String>>(9)?, r.get::<_, Option<String>>(10)?),
                    (r.get::<_, Option<String>>(11)?, r.get::<_, String>(12)?, r.get::<_, String>(13)?),
                ))
            },
        )
        .optional()?;
    let Some((
        id,
        (ticket, category, location, grade),
        (description, photo, reporter),
        (status, owner, deadline),
        (measures, reported_at, updated_at),
    )) = row
    else {
        return Ok(None);
    };
    let mut st = conn.prepare_cached(
        "SELECT status, by, note, at FROM hazard_steps WHERE hazard_id = ?1 ORDER BY id",
    )?;
    let steps = st
        .query_map([id], |r| {
            Ok(StepRecord {
                status: stored(&r.get::<_, String>(0)?, Status::parse)?,
                by: r.get(1)?,
                note: r.get(2)?,
                at: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let status = stored(&status, Status::parse)?;
    let overdue = status == Status::Assigned
        && deadline
            .as_deref()
            .and_then(|d| humantime::parse_rfc3339_weak(d).ok())
            .is_some_and(|d| d < now);
    Ok(Some(Hazard {
        ticket,
        category: stored(&category, |c| serde_json::from_value(c.into()).ok())?,
        location,
        grade: stored(&grade, |g| serde_json::from_value(g.into()).ok())?,
        description,
        photo,
        reporter,
        status,
        owner,
        deadline,
        measures,
        overdue,
        reported_at,
        updated_at,
        steps,
    }))
}

/// A name read from the database as what it names; a name nothing has is
/// an error (a damaged or newer database), never read as something else.
fn stored<T>(name: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<T, rusqlite::Error> {
    parse(name).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("{name:?} names nothing this version knows").into(),
        )
    })
}

/// The newest `limit` hazards, open ones first.
pub fn list(conn: &Connection, limit: u32, now: SystemTime) -> Result<Vec<Hazard>, StoreError> {
    let mut st = conn.prepare(
        "SELECT ticket FROM hazards ORDER BY status IN ('closed', 'rejected'), id DESC LIMIT ?1",
    )?;
    let tickets = st
        .query_map([limit], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for t in tickets {
        if let Some(h) = get(conn, &t, now)? {
            out.push(h);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pithead_core::hazard::{Category, MAX_DESCRIPTION};

    fn report(desc: &str, anonymous: bool, badge: Option<&str>) -> NewHazard {
        NewHazard {
            category: Category::Roof,
            location: " 1201 回风巷 ".into(),
            grade: Grade::Major,
            description: desc.into(),
            anonymous,
            badge: badge.map(str::to_owned),
        }
    }

    #[test]
    fn reports_are_validated_and_trimmed() {
        let h = report("顶板掉渣", false, Some(" 0042 "))
            .validate()
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            (h.location.as_str(), h.badge.as_deref()),
            ("1201 回风巷", Some("0042"))
        );
        assert_eq!(
            report("x", true, Some("0042")).validate().map(|h| h.badge),
            Ok(None),
            "anonymous drops the badge"
        );
        assert!(report("", true, None).validate().is_err());
        assert!(
            report(&"长".repeat(MAX_DESCRIPTION + 1), true, None)
                .validate()
                .is_err()
        );
        assert!(
            report("x", false, None).validate().is_err(),
            "a badge or anonymous"
        );
        assert!(report("bell\u{7}", true, None).validate().is_err());
    }

    #[test]
    fn the_lifecycle_is_a_closed_loop() {
        use Status::*;
        assert!(Reported.can_go_to(Acknowledged));
        assert!(Acknowledged.can_go_to(Assigned));
        assert!(Assigned.can_go_to(Rectified));
        assert!(Rectified.can_go_to(Closed));
        assert!(
            Rectified.can_go_to(Assigned),
            "verification failed: assign again"
        );
        assert!(
            !Reported.can_go_to(Closed),
            "no closing without rectification"
        );
        assert!(!Closed.can_go_to(Rejected));
        assert!(!Rejected.can_go_to(Acknowledged));
    }

    #[test]
    fn tickets_are_short_and_readable() {
        for _ in 0..200 {
            let t = new_ticket();
            assert_eq!(t.len(), 6);
            assert!(t.bytes().all(|b| ALPHABET.contains(&b)), "{t}");
        }
    }
}
