//! Hazard reports (隐患随手拍) and their closed loop: reported →
//! acknowledged → assigned (owner, deadline, measures) → rectified →
//! closed (销号), or rejected with a reason. Every step records who, when
//! and a note, and goes to the county with its outbox row in the same
//! transaction.

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

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
    let checked = s.clone().check(current.status).and_then(|s| {
        s.five_in_place(current.grade, current.major_category)
            .map(|()| s)
    });
    let s = match checked {
        Ok(s) => s,
        Err(e) => return Ok(Err(StepError::Invalid(e))),
    };
    let at_s = rfc3339(at);
    let major = s
        .major_category
        .and_then(|c| serde_json::to_value(c).ok())
        .and_then(|v| v.as_str().map(str::to_owned));
    conn.execute(
        "UPDATE hazards SET status = ?2, updated_at = ?3,
           owner = coalesce(?4, owner), deadline = coalesce(?5, deadline), measures = coalesce(?6, measures),
           funds = coalesce(?7, funds), plan = coalesce(?8, plan), major_category = coalesce(?9, major_category)
         WHERE ticket = ?1",
        (ticket, s.status.as_str(), &at_s, &s.owner, &s.deadline, &s.measures, &s.funds, &s.plan, &major),
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
                    measures, reported_at, updated_at, funds, plan, major_category FROM hazards WHERE ticket = ?1",
            [ticket],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    (r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get::<_, String>(4)?),
                    (r.get::<_, String>(5)?, r.get::<_, Option<String>>(6)?, r.get::<_, Option<String>>(7)?),
                    (r.get::<_, String>(8)?, r.get::<_, Option<String>>(9)?, r.get::<_, Option<String>>(10)?),
                    (r.get::<_, Option<String>>(11)?, r.get::<_, String>(12)?, r.get::<_, String>(13)?),
                    (r.get::<_, Option<String>>(14)?, r.get::<_, Option<String>>(15)?, r.get::<_, Option<String>>(16)?),
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
        (funds, plan, major_category),
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
    let overdue = status == Status::Assigned && deadline.as_deref().is_some_and(|d| past(d, now));
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
        funds,
        plan,
        major_category: major_category
            .as_deref()
            .map(|c| stored(c, |c| serde_json::from_value(c.into()).ok()))
            .transpose()?,
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

/// Records the `overdue` step, once, for every assigned hazard whose
/// deadline has passed since it was (last) assigned, with its outbox row
/// (the county is told on the hazard lane). Returns the tickets marked now.
pub fn mark_overdue(
    conn: &Connection,
    cfg: &Config,
    now: SystemTime,
) -> Result<Vec<String>, StoreError> {
    let due = due_overdue(conn, now)?;
    let at_s = rfc3339(now);
    for ticket in &due {
        conn.execute(
            "INSERT INTO hazard_steps(hazard_id, status, by, note, at)
             SELECT id, 'overdue', NULL, '整改期限已过，未整改 / deadline passed without rectification', ?2
             FROM hazards WHERE ticket = ?1",
            (ticket, &at_s),
        )?;
        conn.execute(
            "UPDATE hazards SET updated_at = ?2 WHERE ticket = ?1",
            (ticket, &at_s),
        )?;
        if let Some(h) = get(conn, ticket, now)? {
            enqueue(conn, cfg, &h, Status::Overdue, &at_s)?;
        }
    }
    Ok(due)
}

/// The assigned hazards past their deadline with no `overdue` step since
/// they were (last) assigned.
pub fn due_overdue(conn: &Connection, now: SystemTime) -> Result<Vec<String>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT h.ticket, h.deadline FROM hazards h
         WHERE h.status = 'assigned' AND h.deadline IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM hazard_steps o WHERE o.hazard_id = h.id AND o.status = 'overdue'
                AND o.id > (SELECT max(a.id) FROM hazard_steps a WHERE a.hazard_id = h.id AND a.status = 'assigned'))",
    )?;
    let due = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|(_, d)| past(d, now))
        .map(|(t, _)| t)
        .collect();
    Ok(due)
}

/// A hazard on the public board (隐患公示): what it is, where, how far
/// along and by when — never who reported it, who owns it or any name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BoardEntry {
    /// Ticket.
    pub ticket: String,
    /// Category.
    pub category: pithead_core::hazard::Category,
    /// Location.
    pub location: String,
    /// Grade.
    pub grade: Grade,
    /// A major hazard's category of the fifteen.
    pub major_category: Option<pithead_core::hazard::MajorCategory>,
    /// Where it is in its lifecycle.
    pub status: Status,
    /// Rectification deadline, RFC 3339.
    pub deadline: Option<String>,
    /// Past its deadline and not rectified.
    pub overdue: bool,
    /// RFC 3339.
    pub reported_at: String,
}

/// Every open hazard for the board: overdue ones first, then by deadline
/// (soonest first, none last), then the oldest report first.
pub fn board(conn: &Connection, now: SystemTime) -> Result<Vec<BoardEntry>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT ticket FROM hazards WHERE status NOT IN ('closed', 'rejected') ORDER BY id",
    )?;
    let tickets = st
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for t in tickets {
        if let Some(h) = get(conn, &t, now)? {
            out.push(BoardEntry {
                ticket: h.ticket,
                category: h.category,
                location: h.location,
                grade: h.grade,
                major_category: h.major_category,
                status: h.status,
                deadline: h.deadline,
                overdue: h.overdue,
                reported_at: h.reported_at,
            });
        }
    }
    let when = |d: &Option<String>| {
        d.as_deref()
            .and_then(|d| humantime::parse_rfc3339_weak(d).ok())
    };
    out.sort_by(|a, b| {
        b.overdue
            .cmp(&a.overdue)
            .then_with(|| match (when(&a.deadline), when(&b.deadline)) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            })
            .then_with(|| a.reported_at.cmp(&b.reported_at))
    });
    Ok(out)
}

/// How many assigned hazards are past their deadline now.
pub fn overdue_count(conn: &Connection, now: SystemTime) -> Result<usize, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT deadline FROM hazards WHERE status = 'assigned' AND deadline IS NOT NULL",
    )?;
    let deadlines = st
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(deadlines.iter().filter(|d| past(d, now)).count())
}

/// Whether RFC 3339 `deadline` is before `now` (an unreadable one is not).
fn past(deadline: &str, now: SystemTime) -> bool {
    humantime::parse_rfc3339_weak(deadline).is_ok_and(|d| d < now)
}

/// Every 5 s: records the `overdue` step of hazards whose deadline passed
/// (a read; a write only when there is one to record), and keeps
/// `overdue` (the console's banner) current.
pub async fn watch_deadlines(
    store: crate::store::Store,
    cfg: std::sync::Arc<Config>,
    overdue: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let due = store
            .read(|c| {
                let now = SystemTime::now();
                Ok((due_overdue(c, now)?, overdue_count(c, now)?))
            })
            .await;
        match due {
            Ok((due, n)) => {
                overdue.store(n, std::sync::atomic::Ordering::Relaxed);
                if due.is_empty() {
                    continue;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot check hazard deadlines now");
                continue;
            }
        }
        let c = std::sync::Arc::clone(&cfg);
        match store
            .write(crate::store::Durability::Acknowledged, move |conn| {
                mark_overdue(conn, &c, SystemTime::now())
            })
            .await
        {
            Ok(marked) => {
                for t in marked {
                    tracing::warn!(ticket = %t, "hazard past its rectification deadline: overdue recorded");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot record overdue hazards now"),
        }
    }
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
