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

/// The category of a major hazard, one of the fifteen of 煤矿重大事故隐患
/// 判定标准 (应急管理部令第 4 号, 2020, in force 2021-01-01), article 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MajorCategory {
    /// 超能力、超强度或者超定员组织生产.
    OverCapacity,
    /// 瓦斯超限作业.
    GasOverLimit,
    /// 煤与瓦斯突出矿井，未依照规定实施防突出措施.
    OutburstPrevention,
    /// 高瓦斯矿井未建立瓦斯抽采系统和监控系统，或者系统不能正常运行.
    GasDrainageMonitoring,
    /// 通风系统不完善、不可靠.
    Ventilation,
    /// 有严重水患，未采取有效措施.
    WaterHazard,
    /// 超层越界开采.
    OutOfBounds,
    /// 有冲击地压危险，未采取有效措施.
    RockBurst,
    /// 自然发火严重，未采取有效措施.
    SpontaneousCombustion,
    /// 使用明令禁止使用或者淘汰的设备、工艺.
    BannedEquipment,
    /// 煤矿没有双回路供电系统.
    NoDualPower,
    /// 新建煤矿边建设边生产；改扩建期间在改扩建区域生产，或其他区域超出安全设计.
    BuildingWhileProducing,
    /// 整体承包后未重新取得或变更安全生产许可证而生产，承包方再次转包，或井下采掘、井巷维修劳务承包.
    IllegalContracting,
    /// 改制期间未明确安全生产责任人和安全管理机构，或改制后未重新取得或变更采矿许可证、安全生产许可证和营业执照.
    Restructuring,
    /// 其他重大事故隐患.
    Other,
}

impl MajorCategory {
    /// Every category, in the standard's order.
    pub const ALL: [MajorCategory; 15] = [
        MajorCategory::OverCapacity,
        MajorCategory::GasOverLimit,
        MajorCategory::OutburstPrevention,
        MajorCategory::GasDrainageMonitoring,
        MajorCategory::Ventilation,
        MajorCategory::WaterHazard,
        MajorCategory::OutOfBounds,
        MajorCategory::RockBurst,
        MajorCategory::SpontaneousCombustion,
        MajorCategory::BannedEquipment,
        MajorCategory::NoDualPower,
        MajorCategory::BuildingWhileProducing,
        MajorCategory::IllegalContracting,
        MajorCategory::Restructuring,
        MajorCategory::Other,
    ];

    /// The standard's words for it.
    pub fn zh(self) -> &'static str {
        match self {
            MajorCategory::OverCapacity => "超能力、超强度或者超定员组织生产",
            MajorCategory::GasOverLimit => "瓦斯超限作业",
            MajorCategory::OutburstPrevention => "煤与瓦斯突出矿井未依照规定实施防突出措施",
            MajorCategory::GasDrainageMonitoring => {
                "高瓦斯矿井未建立瓦斯抽采系统和监控系统，或者系统不能正常运行"
            }
            MajorCategory::Ventilation => "通风系统不完善、不可靠",
            MajorCategory::WaterHazard => "有严重水患，未采取有效措施",
            MajorCategory::OutOfBounds => "超层越界开采",
            MajorCategory::RockBurst => "有冲击地压危险，未采取有效措施",
            MajorCategory::SpontaneousCombustion => "自然发火严重，未采取有效措施",
            MajorCategory::BannedEquipment => "使用明令禁止使用或者淘汰的设备、工艺",
            MajorCategory::NoDualPower => "煤矿没有双回路供电系统",
            MajorCategory::BuildingWhileProducing => "边建设边生产，或改扩建期间违规生产",
            MajorCategory::IllegalContracting => "违规承包、转包或劳务承包",
            MajorCategory::Restructuring => {
                "改制期间未明确安全生产责任人和安全管理机构，或证照未重新取得、变更"
            }
            MajorCategory::Other => "其他重大事故隐患",
        }
    }
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
    /// For `assigned`: the funds set aside (资金), e.g. `5 万元`.
    #[serde(default)]
    pub funds: Option<String>,
    /// For `assigned`: the emergency plan while it is rectified (预案).
    #[serde(default)]
    pub plan: Option<String>,
    /// For `assigned` of a major hazard: which of the fifteen categories.
    #[serde(default)]
    pub major_category: Option<MajorCategory>,
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
            && (s.owner.is_some()
                || s.deadline.is_some()
                || s.measures.is_some()
                || s.funds.is_some()
                || s.plan.is_some()
                || s.major_category.is_some())
        {
            return Err(invalid(
                "负责人、整改期限、措施、资金、预案和重大隐患类别只在“指派整改”时填写",
                "owner, deadline, measures, funds, plan and major_category go with status `assigned` only",
            ));
        }
        for (v, zh, en) in [
            (&mut s.funds, "整改资金", "funds"),
            (&mut s.plan, "应急预案", "plan"),
        ] {
            if let Some(t) = v.as_deref() {
                *v = Some(text(t, MAX_FIELD, zh, en)?);
            }
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

impl Step {
    /// A major hazard's assignment must have the "five in place" (五落实:
    /// 责任、措施、资金、时限、预案 — owner, measures, funds, deadline,
    /// plan) and its category of the fifteen (given now, or before). Checked
    /// after [`Step::check`], which has the owner, measures and deadline.
    pub fn five_in_place(&self, grade: Grade, known: Option<MajorCategory>) -> Result<(), Invalid> {
        if self.status != Status::Assigned || grade != Grade::Major {
            return Ok(());
        }
        if self.funds.is_none() || self.plan.is_none() {
            return Err(invalid(
                "重大隐患指派整改须“五落实”：责任人、措施、资金、时限、预案均须填写",
                "a major hazard is assigned with the five in place: owner, measures, funds, deadline and plan",
            ));
        }
        if self.major_category.or(known).is_none() {
            return Err(invalid(
                "重大隐患须选择《煤矿重大事故隐患判定标准》中的类别",
                "a major hazard needs its category of the fifteen of the national standard (major_category)",
            ));
        }
        Ok(())
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
    /// Funds set aside (资金).
    #[serde(default)]
    pub funds: Option<String>,
    /// Emergency plan while rectified (预案).
    #[serde(default)]
    pub plan: Option<String>,
    /// A major hazard's category of the fifteen.
    #[serde(default)]
    pub major_category: Option<MajorCategory>,
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
    /// A major hazard's category of the fifteen.
    pub major_category: Option<MajorCategory>,
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
            major_category: h.major_category,
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
    fn the_fifteen_major_categories_have_their_names_and_words() {
        use super::MajorCategory;
        let names: std::collections::BTreeSet<String> = MajorCategory::ALL
            .iter()
            .map(|c| {
                serde_json::to_value(c)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(names.len(), 15);
        assert!(names.contains("water_hazard") && names.contains("no_dual_power"));
        assert!(MajorCategory::ALL.iter().all(|c| !c.zh().is_empty()));
        assert_eq!(
            serde_json::from_str::<MajorCategory>("\"gas_over_limit\"").unwrap(),
            MajorCategory::GasOverLimit
        );
    }

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
