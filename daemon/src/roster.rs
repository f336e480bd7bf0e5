//! People at the shaft head: the roster (CSV import), check-ins and
//! check-outs, who is underground now, and who is overdue.
//!
//! Every check-in attempt is recorded — unknown badges, double check-ins,
//! check-outs without a check-in included — with its outbox row, durably,
//! before the answer. The rules are plain functions over a connection
//! inside the store's transaction.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::acquisition::recorder::unix_ms;
use crate::alarm::Command;
use crate::config::Config;
use crate::store::outbox::{self, Lane};
use crate::store::{Durability, Store, StoreError};

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

/// What an import changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    /// New workers.
    pub added: usize,
    /// Workers whose name, team or role changed, or who were inactive.
    pub updated: usize,
    /// Workers as before.
    pub unchanged: usize,
    /// Workers missing from the file, now inactive (kept for history).
    pub deactivated: usize,
}

/// Makes the roster what `workers` says, inside the caller's transaction.
pub fn import(
    conn: &Connection,
    workers: &[Worker],
    at: &str,
) -> Result<ImportSummary, StoreError> {
    let mut sum = ImportSummary::default();
    let mut existing: BTreeMap<String, (String, String, String, bool)> = BTreeMap::new();
    {
        let mut st = conn.prepare("SELECT badge, name, team, role, active FROM workers")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                (r.get(1)?, r.get(2)?, r.get(3)?, r.get::<_, bool>(4)?),
            ))
        })?;
        for row in rows {
            let (b, v) = row?;
            existing.insert(b, v);
        }
    }
    for w in workers {
        match existing.remove(&w.badge) {
            None => {
                conn.execute(
                    "INSERT INTO workers(badge, name, team, role, active, updated_at) VALUES (?1, ?2, ?3, ?4, 1, ?5)",
                    (&w.badge, &w.name, &w.team, &w.role, at),
                )?;
                sum.added += 1;
            }
            Some((n, t, r, active)) if n == w.name && t == w.team && r == w.role && active => {
                sum.unchanged += 1
            }
            Some(_) => {
                conn.execute(
                    "UPDATE workers SET name = ?2, team = ?3, role = ?4, active = 1, updated_at = ?5 WHERE badge = ?1",
                    (&w.badge, &w.name, &w.team, &w.role, at),
                )?;
                sum.updated += 1;
            }
        }
    }
    for (badge, (_, _, _, active)) in existing {
        if active {
            conn.execute(
                "UPDATE workers SET active = 0, updated_at = ?2 WHERE badge = ?1",
                (&badge, at),
            )?;
            sum.deactivated += 1;
        }
    }
    Ok(sum)
}

/// The active roster, by badge.
pub fn roster(conn: &Connection) -> Result<Vec<Worker>, StoreError> {
    let mut st = conn.prepare(
        "SELECT badge, name, team, role FROM workers WHERE active = 1 ORDER BY team, name, badge",
    )?;
    let rows = st.query_map([], |r| {
        Ok(Worker {
            badge: r.get(0)?,
            name: r.get(1)?,
            team: r.get(2)?,
            role: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Going down or coming up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Checking in, going underground.
    In,
    /// Checking out, back on the surface.
    Out,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// What became of a check-in attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done.
    Ok,
    /// The badge is not on the roster.
    UnknownBadge,
    /// Checking in while already underground.
    AlreadyIn,
    /// Checking out while not underground.
    NotIn,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::UnknownBadge => "unknown_badge",
            Outcome::AlreadyIn => "already_in",
            Outcome::NotIn => "not_in",
        }
    }
}

/// A recorded check-in attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    pub direction: Direction,
    /// What became of it.
    pub outcome: Outcome,
    /// When, RFC 3339.
    pub at: String,
    /// For `already_in` and a check-out: when the miner went down.
    pub underground_since: Option<String>,
    /// For a check-out: minutes spent underground.
    pub minutes_underground: Option<i64>,
    /// For a check-out by hand: the supervisor who made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// For a check-out by hand: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The kiosk it was made at (`local`: the box's own screen).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kiosk: Option<String>,
}

/// A check-out made by a supervisor rather than at the kiosk.
#[derive(Debug, Clone)]
pub struct ByHand {
    /// The supervisor.
    pub by: String,
    /// Why (1 to 200 characters).
    pub reason: String,
}

/// Records a check-in or check-out attempt with its outbox row, inside the
/// caller's transaction; refused attempts are recorded too. A check-out of
/// someone underground is always accepted, whatever the roster says now
/// (an import may have removed them meanwhile): nobody is stranded
/// underground on the list.
pub fn check(
    conn: &Connection,
    cfg: &Config,
    badge: &str,
    direction: Direction,
    at: SystemTime,
    kiosk: &str,
) -> Result<Checkin, StoreError> {
    record(conn, cfg, badge, direction, at, Err(kiosk))
}

/// A supervisor checks someone out by hand, with a reason: recorded as a
/// check-out (with who and why), sent to the county, and listed with the
/// evacuation roll. Refused unless the badge is underground.
pub fn check_out_by_hand(
    conn: &Connection,
    cfg: &Config,
    badge: &str,
    by: &ByHand,
    at: SystemTime,
) -> Result<Checkin, StoreError> {
    let down: Option<i64> = conn
        .query_row("SELECT 1 FROM underground WHERE badge = ?1", [badge], |r| {
            r.get(0)
        })
        .optional()?;
    if down.is_none() {
        return Err(StoreError::Rejected(format!("{badge} is not underground")));
    }
    let record = record(conn, cfg, badge, Direction::Out, at, Ok(by))?;
    crate::store::events::insert(
        conn,
        &record.at,
        &crate::store::events::NewEvent {
            kind: "checkin.by_hand".into(),
            actor: Some(by.by.clone()),
            subject: Some(badge.to_owned()),
            detail: serde_json::json!({ "checkin_id": record.id, "reason": by.reason }),
        },
    )?;
    Ok(record)
}

/// `source`: a supervisor's check-out by hand, or the kiosk it came from.
fn record(
    conn: &Connection,
    cfg: &Config,
    badge: &str,
    direction: Direction,
    at: SystemTime,
    source: Result<&ByHand, &str>,
) -> Result<Checkin, StoreError> {
    let by_hand = source.ok();
    let kiosk = source.err();
    let at_s = crate::store::rfc3339(at);
    let at_ms = unix_ms(at);
    let known: Option<(String, String, bool)> = conn
        .query_row(
            "SELECT name, team, active FROM workers WHERE badge = ?1",
            [badge],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let down: Option<(String, i64)> = conn
        .query_row(
            "SELECT since, since_ms FROM underground WHERE badge = ?1",
            [badge],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    // Whoever is underground can always come up; only the active roster
    // may go down.
    let worker = match (&known, direction, &down) {
        (Some((name, team, _)), Direction::Out, Some(_)) => Some((name.clone(), team.clone())),
        (Some((name, team, true)), _, _) => Some((name.clone(), team.clone())),
        _ => None,
    };
    let outcome = match (&worker, direction, &down) {
        (_, Direction::Out, Some(_)) => Outcome::Ok,
        (None, _, _) => Outcome::UnknownBadge,
        (Some(_), Direction::In, Some(_)) => Outcome::AlreadyIn,
        (Some(_), Direction::Out, None) => Outcome::NotIn,
        (Some(_), Direction::In, None) => Outcome::Ok,
    };
    conn.execute(
        "INSERT INTO checkins(badge, name, direction, outcome, at, at_ms, by, reason, kiosk) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        (
            badge,
            worker.as_ref().map(|w| &w.0),
            direction.as_str(),
            outcome.as_str(),
            &at_s,
            at_ms,
            by_hand.map(|b| &b.by),
            by_hand.map(|b| &b.reason),
            kiosk,
        ),
    )?;
    let id = conn.last_insert_rowid();
    if outcome == Outcome::Ok {
        match direction {
            Direction::In => {
                conn.execute(
                    "INSERT INTO underground(badge, checkin_id, since, since_ms) VALUES (?1, ?2, ?3, ?4)",
                    (badge, id, &at_s, at_ms),
                )?;
            }
            Direction::Out => {
                conn.execute("DELETE FROM underground WHERE badge = ?1", [badge])?;
            }
        }
    }
    let record = Checkin {
        id,
        badge: badge.to_owned(),
        name: worker.as_ref().map(|w| w.0.clone()),
        team: worker.as_ref().map(|w| w.1.clone()),
        direction,
        outcome,
        at: at_s.clone(),
        underground_since: down.as_ref().map(|d| d.0.clone()),
        minutes_underground: match (direction, &down) {
            (Direction::Out, Some((_, since))) => Some((at_ms - since) / 60_000),
            _ => None,
        },
        by: by_hand.map(|b| b.by.clone()),
        reason: by_hand.map(|b| b.reason.clone()),
        kiosk: kiosk.map(str::to_owned),
    };
    let mut payload = serde_json::to_value(&record).unwrap_or_default();
    payload["county"] = cfg.station.county.clone().into();
    payload["station"] = cfg.station.id.clone().into();
    outbox::enqueue(conn, Lane::Checkin, "checkin", &at_s, &payload)?;
    Ok(record)
}

/// Someone underground now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Underground {
    /// Badge.
    pub badge: String,
    /// Name, team and role from the roster.
    pub name: String,
    /// Team (班组).
    pub team: String,
    /// Role.
    pub role: String,
    /// Checked in at, RFC 3339.
    pub since: String,
    /// Minutes underground so far.
    pub minutes: i64,
    /// Past shift length and grace (by the wall clock, for display; the
    /// overdue alarm is judged by [`OverdueClock`]).
    pub overdue: bool,
    /// Checked in at, Unix ms.
    #[serde(skip)]
    pub since_ms: i64,
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

/// Everyone underground, longest first.
pub fn underground(
    conn: &Connection,
    now: SystemTime,
    limit: Duration,
) -> Result<Vec<Underground>, StoreError> {
    let now_ms = unix_ms(now);
    let limit_ms = i64::try_from(limit.as_millis()).unwrap_or(i64::MAX);
    let mut st = conn.prepare(
        "SELECT u.badge, coalesce(w.name, ''), coalesce(w.team, ''), coalesce(w.role, ''), u.since, u.since_ms
         FROM underground u LEFT JOIN workers w ON w.badge = u.badge ORDER BY u.since_ms, u.badge",
    )?;
    let rows = st.query_map([], |r| {
        let since_ms: i64 = r.get(5)?;
        Ok(Underground {
            badge: r.get(0)?,
            name: r.get(1)?,
            team: r.get(2)?,
            role: r.get(3)?,
            since: r.get(4)?,
            minutes: (now_ms - since_ms).max(0) / 60_000,
            overdue: now_ms - since_ms > limit_ms,
            since_ms,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A check-out made by hand, for the evacuation roll.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckedOutByHand {
    /// Badge.
    pub badge: String,
    /// Name, from the roster.
    pub name: String,
    /// Team, from the roster.
    pub team: String,
    /// When, RFC 3339.
    pub at: String,
    /// The supervisor.
    pub by: String,
    /// Why.
    pub reason: String,
}

/// Check-outs made by hand since `since` (newest first): the roll shows
/// them beside those underground, so nobody vanishes from it unexplained.
pub fn checked_out_by_hand(
    conn: &Connection,
    since: SystemTime,
) -> Result<Vec<CheckedOutByHand>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT c.badge, coalesce(c.name, w.name, ''), coalesce(w.team, ''), c.at, c.by, coalesce(c.reason, '')
         FROM checkins c LEFT JOIN workers w ON w.badge = c.badge
         WHERE c.by IS NOT NULL AND c.at_ms >= ?1 ORDER BY c.at_ms DESC",
    )?;
    let rows = st.query_map([unix_ms(since)], |r| {
        Ok(CheckedOutByHand {
            badge: r.get(0)?,
            name: r.get(1)?,
            team: r.get(2)?,
            at: r.get(3)?,
            by: r.get(4)?,
            reason: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Imports the roster file from the configuration, if any.
pub async fn import_configured(store: &Store, cfg: &Config) {
    let Some(path) = cfg.roster.file.clone() else {
        return;
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "cannot read the roster; keeping the one in the database");
            return;
        }
    };
    match parse_csv(&text) {
        Err(errors) => {
            for e in &errors {
                tracing::error!(file = %path.display(), line = e.line, error = %e.message, "roster line refused");
            }
            tracing::error!(file = %path.display(), problems = errors.len(), "roster not imported; keeping the one in the database");
        }
        Ok(workers) => {
            let at = crate::store::now_rfc3339();
            match store
                .write(Durability::Acknowledged, move |c| import(c, &workers, &at))
                .await
            {
                Ok(s) => tracing::info!(file = %path.display(), ?s, "roster imported"),
                Err(e) => tracing::error!(error = %e, "roster not imported"),
            }
        }
    }
}

/// Every 15 s (or a quarter of a short shift), tells the alarm task who is
/// overdue. Reads the store, so it
/// runs apart from the alarm path.
pub async fn watch_overdue(
    store: Store,
    cfg: Arc<Config>,
    clock: Arc<std::sync::Mutex<OverdueClock>>,
    alarms: mpsc::Sender<Command>,
    shutdown: CancellationToken,
) {
    let limit = cfg
        .roster
        .shift_length
        .saturating_add(cfg.roster.overdue_grace);
    // Every 15 s, or more often for short shifts (tests, drills).
    let every = (limit / 4).clamp(Duration::from_secs(1), Duration::from_secs(15));
    let mut tick = tokio::time::interval(every);
    // A watch that cannot read the check-ins does not go quiet: it says so
    // with a fault alarm, which it clears once it reads again.
    let mut blind = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let read = store
            .read(move |c| underground(c, SystemTime::now(), limit))
            .await;
        let failed = read.is_err();
        match read {
            Ok(list) => {
                let list: Vec<(String, i64)> =
                    list.into_iter().map(|u| (u.badge, u.since_ms)).collect();
                let overdue: Vec<String> = clock
                    .lock()
                    .map(|mut c| {
                        c.overdue(&list, unix_ms(SystemTime::now()), Instant::now(), limit)
                    })
                    .unwrap_or_default()
                    .into_iter()
                    .map(|b| format!("worker:{b}"))
                    .collect();
                if alarms.send(Command::Overdue(overdue)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                if !blind {
                    tracing::error!(error = %e, "cannot read who is underground: overdue miners cannot be told");
                }
            }
        }
        if failed != blind {
            blind = failed;
            let fault = Command::Fault {
                subject: OVERDUE_WATCH,
                active: failed,
            };
            if alarms.send(fault).await.is_err() {
                return;
            }
        }
    }
}

/// Subject of the fault alarm raised while the overdue watch cannot read
/// the check-ins.
pub const OVERDUE_WATCH: &str = "system:overdue_watch";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overdue_is_judged_on_the_monotonic_clock_not_the_wall() {
        let limit = Duration::from_secs(8 * 3600 + 1800);
        let hour = 3_600_000i64;
        let t0 = Instant::now();
        let wall0 = 1_800_000_000_000i64;
        let mut c = OverdueClock::default();
        // 张伟 checked in 8 h ago (before a restart), 李强 just now.
        let list = vec![
            ("0042".to_owned(), wall0 - 8 * hour),
            ("0043".to_owned(), wall0),
        ];
        assert!(c.overdue(&list, wall0, t0, limit).is_empty());
        // The wall clock jumps an hour forward, then back two: nothing.
        assert!(
            c.overdue(&list, wall0 + hour, t0 + Duration::from_secs(1), limit)
                .is_empty()
        );
        assert!(
            c.overdue(&list, wall0 - hour, t0 + Duration::from_secs(2), limit)
                .is_empty()
        );
        // Half an hour and a second really pass: 张伟 is overdue, 李强 not.
        let later = t0 + Duration::from_secs(1801);
        assert_eq!(
            c.overdue(&list, wall0 - hour, later, limit),
            vec!["0042".to_owned()]
        );
        // 张伟 checks out and in again: anchored anew, not overdue.
        let list = vec![
            ("0042".to_owned(), wall0 + 1801 * 1000),
            ("0043".to_owned(), wall0),
        ];
        assert!(
            c.overdue(&list, wall0 + 1801 * 1000, later, limit)
                .is_empty()
        );
        // A check-in time in the future (the wall clock was wrong then)
        // counts as just now, never as negative time.
        let mut c = OverdueClock::default();
        let list = vec![("0044".to_owned(), wall0 + 5 * hour)];
        assert!(c.overdue(&list, wall0, t0, limit).is_empty());
        assert_eq!(
            c.overdue(&list, wall0, t0 + limit + Duration::from_secs(1), limit),
            vec!["0044".to_owned()]
        );
    }

    #[test]
    fn a_good_file_parses_with_bom_quotes_and_blank_lines() {
        let text = "\u{feff}badge,name,team,role\n0042,张伟,综采一队,采煤工\n\n\"0043\",\"李, 强\",掘进二队,班长\n";
        let w = parse_csv(text).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(w.len(), 2);
        assert_eq!(
            w[1],
            Worker {
                badge: "0043".into(),
                name: "李, 强".into(),
                team: "掘进二队".into(),
                role: "班长".into()
            }
        );
    }

    #[test]
    fn every_bad_line_is_reported_and_nothing_taken() {
        let text = "badge,name,team,role\n0042,张伟,综采一队,采煤工\n,无卡号,队,工\n0042,重复,队,工\n00 44,空格,队,工\n0045,少一列,队\n0046,,队,工\n";
        let e = parse_csv(text).err().unwrap_or_default();
        let lines: Vec<usize> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4, 5, 6, 7], "{e:?}");
        assert!(e[1].message.contains("listed twice"));
        assert!(e[3].message.contains("expected 4 fields"));
    }

    #[test]
    fn a_wrong_header_is_line_one() {
        let e = parse_csv("card,name\n1,a\n").err().unwrap_or_default();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, 1);
        assert!(e[0].message.contains("badge,name,team,role"));
    }

    #[test]
    fn badges_are_trimmed_and_checked() {
        assert_eq!(normalize_badge("  0042\r"), Ok("0042".into()));
        assert!(normalize_badge("").is_err());
        assert!(normalize_badge("<script>").is_err());
        assert!(normalize_badge(&"9".repeat(33)).is_err());
    }

    const SAMPLE: &str = "badge,name,team,role\n0001,张伟,综采一队,采煤机司机\n\"0002\",\"李, 强\",掘进二队,\"班长 \"\"老李\"\"\"\n0003,王芳,通风队,瓦斯检查员\n";

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// A damaged roster file is imported whole or refused with
        /// numbered lines, never a panic; what is imported is valid.
        #[test]
        fn a_damaged_roster_is_all_or_nothing_never_a_panic(
            bytes in crate::testing::mutated(SAMPLE.as_bytes().to_vec())
        ) {
            let text = String::from_utf8_lossy(&bytes);
            let lines = text.lines().count().max(1);
            match parse_csv(&text) {
                Ok(workers) => {
                    let mut seen = std::collections::HashSet::new();
                    for w in &workers {
                        let normal = normalize_badge(&w.badge);
                        proptest::prop_assert_eq!(normal.as_deref(), Ok(w.badge.as_str()));
                        proptest::prop_assert!(seen.insert(w.badge.clone()), "badge {} twice", w.badge);
                        proptest::prop_assert!(!w.name.trim().is_empty());
                    }
                }
                Err(errors) => {
                    proptest::prop_assert!(!errors.is_empty());
                    for e in errors {
                        proptest::prop_assert!((1..=lines + 1).contains(&e.line), "line {} of {lines}: {e}", e.line);
                        proptest::prop_assert!(!e.message.is_empty());
                    }
                }
            }
        }
    }
}
