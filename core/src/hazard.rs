//! The hazard lifecycle (隐患闭环): reported → acknowledged → assigned
//! (owner, deadline, measures) → rectified → closed (销号), or rejected
//! with a reason; the report's validation; what a supervisor and what
//! anyone may see. Storage is the daemon's.

use serde::{Deserialize, Serialize};

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
    /// Not a status a hazard is ever in: the step recorded once when an
    /// assigned hazard's deadline passed without rectification (it stays
    /// `assigned`, and `overdue` is true). No step may move a hazard here.
    Overdue,
}

impl Status {
    /// The name used in the database, the API and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Reported => "reported",
            Status::Acknowledged => "acknowledged",
            Status::Assigned => "assigned",
            Status::Rectified => "rectified",
            Status::Closed => "closed",
            Status::Rejected => "rejected",
            Status::Overdue => "overdue",
        }
    }

    /// Every status, in lifecycle order (and the `overdue` step).
    pub const ALL: [Status; 7] = [
        Status::Reported,
        Status::Acknowledged,
        Status::Assigned,
        Status::Rectified,
        Status::Closed,
        Status::Rejected,
        Status::Overdue,
    ];

    /// The status named `s` (as [`Status::as_str`] writes it); `None` for
    /// a name no status has (never read as something else).
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The statuses the lifecycle allows from `self`, as the console offers
    /// them: the usual next step first (it is selected by default), then
    /// (re)assigning, then rejecting.
    pub fn next(self) -> Vec<Status> {
        use Status::*;
        [Acknowledged, Closed, Assigned, Rectified, Rejected]
            .into_iter()
            .filter(|n| self.can_go_to(*n))
            .collect()
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

impl Step {
    /// Checks and normalises a step from status `from`: the lifecycle
    /// allows it, the texts are within bounds, a rejection has a reason,
    /// `assigned` has an owner, measures and an RFC 3339 deadline (written
    /// back normalised), and nothing but `assigned` carries them.
    pub fn check(self, from: Status) -> Result<Step, Invalid> {
        let mut s = self;
        s.by = text(&s.by, 64, "处理人", "by")?;
        if !from.can_go_to(s.status) {
            return Err(invalid(
                format!(
                    "隐患当前为“{}”，不能改为“{}”",
                    from.as_str(),
                    s.status.as_str()
                ),
                format!(
                    "a hazard that is {} cannot become {}",
                    from.as_str(),
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
            s.deadline = Some(crate::time::rfc3339(parsed));
        }
        Ok(s)
    }
}

/// A hazard as shown to supervisors (and, with the step's event, the
/// body of a `hazard` message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

#[cfg(test)]
mod tests {
    use super::Status::{self, *};

    #[test]
    fn the_next_steps_follow_the_lifecycle_usual_one_first() {
        assert_eq!(Reported.next(), [Acknowledged, Assigned, Rejected]);
        assert_eq!(Acknowledged.next(), [Assigned, Rejected]);
        assert_eq!(Assigned.next(), [Assigned, Rectified, Rejected]);
        assert_eq!(Rectified.next(), [Closed, Assigned, Rejected]);
        assert!(Closed.next().is_empty() && Rejected.next().is_empty());
        assert!(Overdue.next().is_empty());
        assert!(
            Status::ALL.iter().all(|s| !s.can_go_to(Overdue)),
            "nobody steps to overdue"
        );
        for from in Status::ALL {
            for to in Status::ALL {
                assert_eq!(
                    from.next().contains(&to),
                    from.can_go_to(to),
                    "{from:?} → {to:?}"
                );
            }
            assert_eq!(Status::parse(from.as_str()), Some(from));
        }
        assert_eq!(Status::parse("Reported"), None);
    }
}
