//! Hazard reports (隐患随手拍) and their closed loop: reported →
//! acknowledged → assigned (owner, deadline, measures) → rectified →
//! closed (销号), or rejected with a reason. Every step records who, when
//! and a note, and goes to the county with its outbox row in the same
//! transaction.

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::store::outbox::{self, Lane};
use crate::store::{StoreError, rfc3339};

/// Longest description, in characters.
pub const MAX_DESCRIPTION: usize = 2000;
/// Longest location, owner, measures or note, in characters.
pub const MAX_FIELD: usize = 200;

/// What kind of hazard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Gas.
    Gas,
    /// Water.
    Water,
    /// Roof or rib.
    Roof,
    /// Ventilation.
    Ventilation,
    /// Electrical.
    Electrical,
    /// Machinery.
    Machinery,
    /// Fire.
    Fire,
    /// Transport.
    Transport,
    /// Anything else.
    Other,
}

/// How serious: general (一般) or major (重大).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grade {
    /// 一般隐患.
    General,
    /// 重大隐患: goes to the county at once.
    Major,
}

/// Where a hazard is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Just reported.
    Reported,
    /// A supervisor has seen it.
    Acknowledged,
    /// Someone owns the rectification, with a deadline and measures.
    Assigned,
    /// The owner says it is fixed.
    Rectified,
    /// Verified and closed (销号).
    Closed,
    /// Not a hazard, with a reason.
    Rejected,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Reported => "reported",
            Status::Acknowledged => "acknowledged",
            Status::Assigned => "assigned",
            Status::Rectified => "rectified",
            Status::Closed => "closed",
            Status::Rejected => "rejected",
        }
    }

    fn parse(s: &str) -> Status {
        match s {
            "acknowledged" => Status::Acknowledged,
            "assigned" => Status::Assigned,
            "rectified" => Status::Rectified,
            "closed" => Status::Closed,
            "rejected" => Status::Rejected,
            _ => Status::Reported,
        }
    }

    /// Whether the lifecycle allows going from `self` to `next`.
    pub fn can_go_to(self, next: Status) -> bool {
        use Status::*;
        matches!(
            (self, next),
            (Reported, Acknowledged)
                | (Reported | Acknowledged, Assigned)
                | (Assigned, Assigned)
                | (Assigned, Rectified)
                | (Rectified, Closed)
                | (Rectified, Assigned)
                | (Reported | Acknowledged | Assigned | Rectified, Rejected)
        )
    }
}

/// A new report, as the kiosk sends it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewHazard {
    /// Category.
    pub category: Category,
    /// Location, from the site's list or free text.
    pub location: String,
    /// General or major.
    pub grade: Grade,
    /// What the miner saw.
    pub description: String,
    /// Report without a name.
    #[serde(default)]
    pub anonymous: bool,
    /// The reporter's badge, unless anonymous.
    #[serde(default)]
    pub badge: Option<String>,
}

/// A problem with a request, in both languages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Chinese.
    pub zh: String,
    /// English.
    pub en: String,
}

fn invalid(zh: impl Into<String>, en: impl Into<String>) -> Invalid {
    Invalid {
        zh: zh.into(),
        en: en.into(),
    }
}

fn text(v: &str, max: usize, zh: &str, en: &str) -> Result<String, Invalid> {
    let t = v.trim();
    if t.is_empty() || t.chars().count() > max {
        return Err(invalid(
            format!("{zh}不能为空，且不超过{max}字"),
            format!("{en} must be 1 to {max} characters"),
        ));
    }
    if t.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(invalid(
            format!("{zh}含有不可见的控制字符"),
            format!("{en} contains control characters"),
        ));
    }
    Ok(t.to_owned())
}

impl NewHazard {
    /// Checks and normalises the report.
    pub fn validate(mut self) -> Result<NewHazard, Invalid> {
        self.location = text(&self.location, MAX_FIELD, "地点", "location")?;
        self.description = text(
            &self.description,
            MAX_DESCRIPTION,
            "隐患描述",
            "description",
        )?;
        self.badge = match (self.anonymous, self.badge.as_deref()) {
            (true, _) => None,
            (false, Some(b)) => {
                Some(crate::roster::normalize_badge(b).map_err(|e| invalid("卡号格式不正确", e))?)
            }
            (false, None) => {
                return Err(invalid(
                    "请刷卡或选择匿名举报",
                    "give a badge, or report anonymously",
                ));
            }
        };
        Ok(self)
    }
}

/// A step a supervisor takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The status it moves to.
    pub status: Status,
    /// Who takes it (a console session fills it in).
    #[serde(default)]
    pub by: String,
    /// A note (required to reject).
    #[serde(default)]
    pub note: Option<String>,
    /// For `assigned`: who rectifies.
    #[serde(default)]
    pub owner: Option<String>,
    /// For `assigned`: by when, RFC 3339.
    #[serde(default)]
    pub deadline: Option<String>,
    /// For `assigned`: the measures.
    #[serde(default)]
    pub measures: Option<String>,
}

/// A hazard as shown to supervisors.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hazard {
    /// Short code for the reporter.
    pub ticket: String,
    /// Category.
    pub category: Category,
    /// Location.
    pub location: String,
    /// Grade.
    pub grade: Grade,
    /// Description.
    pub description: String,
    /// Whether a photo is attached.
    pub photo: Option<String>,
    /// Reporter badge; `None` when anonymous (never shown publicly).
    pub reporter: Option<String>,
    /// Where it is in its lifecycle.
    pub status: Status,
    /// Who rectifies.
    pub owner: Option<String>,
    /// Rectification deadline.
    pub deadline: Option<String>,
    /// Measures.
    pub measures: Option<String>,
    /// Past its deadline and not yet rectified.
    pub overdue: bool,
    /// RFC 3339.
    pub reported_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Every step, oldest first.
    pub steps: Vec<StepRecord>,
}

/// What anyone may see of a hazard by its ticket (the kiosk's lookup): its
/// state and dates and the notes of its steps — never who reported it, the
/// owner, the supervisors' names, the measures or the photo's name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublicHazard {
    /// Short code for the reporter.
    pub ticket: String,
    /// Category.
    pub category: Category,
    /// Location.
    pub location: String,
    /// Grade.
    pub grade: Grade,
    /// Whether a photo is attached (served by ticket, stripped).
    pub photo: bool,
    /// Where it is in its lifecycle.
    pub status: Status,
    /// Rectification deadline.
    pub deadline: Option<String>,
    /// Past its deadline and not yet rectified.
    pub overdue: bool,
    /// RFC 3339.
    pub reported_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Every step: status, time and note, oldest first.
    pub steps: Vec<PublicStep>,
}

/// A step as anyone may see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublicStep {
    /// Status reached.
    pub status: Status,
    /// What was said.
    pub note: Option<String>,
    /// RFC 3339.
    pub at: String,
}

impl From<Hazard> for PublicHazard {
    fn from(h: Hazard) -> Self {
        PublicHazard {
            ticket: h.ticket,
            category: h.category,
            location: h.location,
            grade: h.grade,
            photo: h.photo.is_some(),
            status: h.status,
            deadline: h.deadline,
            overdue: h.overdue,
            reported_at: h.reported_at,
            updated_at: h.updated_at,
            steps: h
                .steps
                .into_iter()
                .map(|s| PublicStep {
                    status: s.status,
                    note: s.note,
                    at: s.at,
                })
                .collect(),
        }
    }
}

/// One recorded step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    /// Status reached.
    pub status: Status,
    /// Who.
    pub by: Option<String>,
    /// What they said.
    pub note: Option<String>,
    /// When, RFC 3339.
    pub at: String,
}

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
    enqueue(conn, cfg, &hazard, "reported", &at_s)?;
    Ok(hazard)
}

fn enqueue(
    conn: &Connection,
    cfg: &Config,
    h: &Hazard,
    event: &str,
    at: &str,
) -> Result<(), StoreError> {
    let mut payload = serde_json::to_value(h).unwrap_or_default();
    payload["county"] = cfg.station.county.clone().into();
    payload["station"] = cfg.station.id.clone().into();
    payload["event"] = event.into();
    // Major hazards go to the county at once: the sync task sends this
    // lane before check-ins and summaries.
    payload["urgent"] = (h.grade == Grade::Major).into();
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
    let checked = (|| -> Result<Step, Invalid> {
        let mut s = s.clone();
        s.by = text(&s.by, 64, "处理人", "by")?;
        if !current.status.can_go_to(s.status) {
            return Err(invalid(
                format!(
                    "隐患当前为“{}”，不能改为“{}”",
                    current.status.as_str(),
                    s.status.as_str()
                ),
                format!(
                    "a hazard that is {} cannot become {}",
                    current.status.as_str(),
                    s.status.as_str()
                ),
            ));
        }
        s.note = s
            .note
            .as_deref()
            .map(|n| text(n, MAX_FIELD, "备注", "note"))
            .transpose()?;
        if s.status == Status::Rejected && s.note.is_none() {
            return Err(invalid(
                "驳回必须说明理由",
                "rejecting needs a reason (note)",
            ));
        }
        if s.status != Status::Assigned
            && (s.owner.is_some() || s.deadline.is_some() || s.measures.is_some())
        {
            return Err(invalid(
                "负责人、整改期限和整改措施只在“指派整改”时填写",
                "owner, deadline and measures go with status `assigned` only",
            ));
        }
        if s.status == Status::Assigned {
            s.owner = Some(text(
                s.owner.as_deref().unwrap_or(""),
                64,
                "整改负责人",
                "owner",
            )?);
            s.measures = Some(text(
                s.measures.as_deref().unwrap_or(""),
                MAX_FIELD,
                "整改措施",
                "measures",
            )?);
            let d = s.deadline.as_deref().unwrap_or("");
            let parsed = humantime::parse_rfc3339_weak(d).map_err(|_| {
                invalid(
                    "整改期限格式不正确",
                    "deadline must be an RFC 3339 time, e.g. 2026-12-01T18:00:00Z",
                )
            })?;
            s.deadline = Some(rfc3339(parsed));
        }
        Ok(s)
    })();
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
    enqueue(conn, cfg, &hazard, s.status.as_str(), &at_s)?;
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
                status: Status::parse(&r.get::<_, String>(0)?),
                by: r.get(1)?,
                note: r.get(2)?,
                at: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let status = Status::parse(&status);
    let overdue = status == Status::Assigned
        && deadline
            .as_deref()
            .and_then(|d| humantime::parse_rfc3339_weak(d).ok())
            .is_some_and(|d| d < now);
    Ok(Some(Hazard {
        ticket,
        category: serde_json::from_value(category.into()).unwrap_or(Category::Other),
        location,
        grade: serde_json::from_value(grade.into()).unwrap_or(Grade::General),
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
