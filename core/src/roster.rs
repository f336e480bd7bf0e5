//! People at the shaft head, without storage: the roster file's format,
//! badges, check-in outcomes, and the overdue clock.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One worker of the roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worker {
    /// Badge number, as the reader types it.
    pub badge: String,
    /// Full name.
    pub name: String,
    /// Team (班组).
    pub team: String,
    /// Role.
    pub role: String,
}

/// A problem on one line of a roster file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineError {
    /// Line number in the file, counting from 1 (the header is line 1).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// The header a roster file must start with.
pub const HEADER: &str = "badge,name,team,role";

/// A badge as typed by a reader or a person: trimmed; 1 to 32 letters,
/// digits, `-` or `_`.
pub fn normalize_badge(raw: &str) -> Result<String, &'static str> {
    let b = raw.trim();
    if b.is_empty() {
        return Err("the badge is empty");
    }
    if b.chars().count() > 32 {
        return Err("the badge is longer than 32 characters");
    }
    if !b
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err("a badge has only letters, digits, '-' and '_'");
    }
    Ok(b.to_owned())
}

/// Parses a roster CSV (UTF-8, header `badge,name,team,role`). Either every
/// line is good, or every bad line is reported and nothing is taken.
pub fn parse_csv(text: &str) -> Result<Vec<Worker>, Vec<LineError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut errors = Vec::new();
    match reader.headers() {
        Ok(h) if h.iter().collect::<Vec<_>>().join(",") == HEADER => {}
        Ok(h) => errors.push(LineError {
            line: 1,
            message: format!(
                "the header must be `{HEADER}`, found `{}`",
                h.iter().collect::<Vec<_>>().join(",")
            ),
        }),
        Err(e) => errors.push(LineError {
            line: 1,
            message: format!("cannot read the header: {e}"),
        }),
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut workers = Vec::new();
    let mut seen = HashSet::new();
    for (i, record) in reader.records().enumerate() {
        let line = record
            .as_ref()
            .ok()
            .and_then(|r| r.position())
            .map_or(i + 2, |p| usize::try_from(p.line()).unwrap_or(i + 2));
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                errors.push(LineError {
                    line,
                    message: format!("not a CSV line: {e}"),
                });
                continue;
            }
        };
        if record.iter().all(str::is_empty) {
            continue;
        }
        if record.len() != 4 {
            errors.push(LineError {
                line,
                message: format!(
                    "expected 4 fields (badge,name,team,role), found {}",
                    record.len()
                ),
            });
            continue;
        }
        let field = |k: usize| record.get(k).unwrap_or("").to_owned();
        let badge = match normalize_badge(&field(0)) {
            Ok(b) => b,
            Err(m) => {
                errors.push(LineError {
                    line,
                    message: format!("{m} (`{}`)", field(0)),
                });
                continue;
            }
        };
        let name = field(1);
        if name.is_empty() || name.chars().count() > 64 {
            errors.push(LineError {
                line,
                message: "the name must be 1 to 64 characters".into(),
            });
            continue;
        }
        if field(2).chars().count() > 64 || field(3).chars().count() > 64 {
            errors.push(LineError {
                line,
                message: "team and role are at most 64 characters".into(),
            });
            continue;
        }
        if !seen.insert(badge.clone()) {
            errors.push(LineError {
                line,
                message: format!("badge {badge} is listed twice"),
            });
            continue;
        }
        workers.push(Worker {
            badge,
            name,
            team: field(2),
            role: field(3),
        });
    }
    if errors.is_empty() {
        Ok(workers)
    } else {
        Err(errors)
    }
}

/// Going down or coming up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Passage {
    /// Checking in, going underground.
    In,
    /// Checking out, back on the surface.
    Out,
}

impl Passage {
    /// The name used in the database and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Passage::In => "in",
            Passage::Out => "out",
        }
    }
}

/// What became of a check-in attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckinOutcome {
    /// Done.
    Ok,
    /// The badge is not on the roster.
    UnknownBadge,
    /// Checking in while already underground.
    AlreadyIn,
    /// Checking out while not underground.
    NotIn,
}

impl CheckinOutcome {
    /// The name used in the database and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckinOutcome::Ok => "ok",
            CheckinOutcome::UnknownBadge => "unknown_badge",
            CheckinOutcome::AlreadyIn => "already_in",
            CheckinOutcome::NotIn => "not_in",
        }
    }
}

/// A recorded check-in attempt (and, with the station, the body of a
/// `checkin` message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkin {
    /// Record id.
    pub id: i64,
    /// Badge.
    pub badge: String,
    /// From the roster, if known.
    pub name: Option<String>,
    /// From the roster, if known.
    pub team: Option<String>,
    /// In or out.
    pub direction: Passage,
    /// What became of it.
    pub outcome: CheckinOutcome,
    /// When, RFC 3339.
    pub at: String,
    /// For `already_in` and a check-out: when the miner went down.
    pub underground_since: Option<String>,
    /// For a check-out: minutes spent underground.
    pub minutes_underground: Option<i64>,
    /// For a check-out by hand: the supervisor who made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// For a check-out by hand: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The kiosk it was made at (`local`: the box's own screen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kiosk: Option<String>,
}

/// Judges who is overdue on the monotonic clock, so that a wall-clock jump
/// (NTP stepping a Pi that booted without a real-time clock, a hand-set
/// date) never raises or clears an overdue alarm. Each check-in is anchored
/// when first seen: how long ago it was by the wall clock then, plus the
/// monotonic time since. Check-ins from before a restart are anchored at
/// start, by the wall clock of that moment.
#[derive(Debug, Default)]
pub struct OverdueClock {
    /// Badge → (check-in time, Unix ms; when first seen; underground then).
    anchors: HashMap<String, (i64, Instant, Duration)>,
}

impl OverdueClock {
    /// A check-in just recorded: anchored now, so a jump of the wall clock
    /// before the next look changes nothing either.
    pub fn anchor(&mut self, badge: &str, since_ms: i64, now: Instant) {
        self.anchors
            .insert(badge.to_owned(), (since_ms, now, Duration::ZERO));
    }

    /// Badges of `underground` (badge, check-in Unix ms) underground longer
    /// than `limit`, given the wall clock `wall_ms` and the monotonic `now`.
    pub fn overdue(
        &mut self,
        underground: &[(String, i64)],
        wall_ms: i64,
        now: Instant,
        limit: Duration,
    ) -> Vec<String> {
        let current: HashMap<&str, i64> =
            underground.iter().map(|(b, s)| (b.as_str(), *s)).collect();
        // Gone, or checked out and in again: anchored anew.
        self.anchors
            .retain(|b, (since, _, _)| current.get(b.as_str()) == Some(since));
        let mut out = Vec::new();
        for (badge, since) in underground {
            let (_, seen, ago) = self.anchors.entry(badge.clone()).or_insert_with(|| {
                let ago = u64::try_from(wall_ms.saturating_sub(*since)).unwrap_or(0);
                (*since, now, Duration::from_millis(ago))
            });
            if *ago + now.saturating_duration_since(*seen) > limit {
                out.push(badge.clone());
            }
        }
        out
    }
}
