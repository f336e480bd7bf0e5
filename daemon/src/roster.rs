//! People at the shaft head: the roster (CSV import), check-ins and
//! check-outs, who is underground now, and who is overdue.
//!
//! Every check-in attempt is recorded — unknown badges, double check-ins,
//! check-outs without a check-in included — with its outbox row, durably,
//! before the answer. The rules are plain functions over a connection
//! inside the store's transaction.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::outbox::{self, Lane};
use crate::store::{Durability, Store, StoreError};
use crate::time::unix_ms;

pub use pithead_core::roster::{
    Checkin, CheckinOutcome, OverdueClock, Passage, Worker, normalize_badge, parse_csv,
};

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
    direction: Passage,
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
    let record = record(conn, cfg, badge, Passage::Out, at, Ok(by))?;
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
    direction: Passage,
    at: SystemTime,
    source: Result<&ByHand, &str>,
) -> Result<Checkin, StoreError> {
    let by_hand = source.ok();
    let kiosk = source.err();
    let at_s = crate::time::rfc3339(at);
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
        (Some((name, team, _)), Passage::Out, Some(_)) => Some((name.clone(), team.clone())),
        (Some((name, team, true)), _, _) => Some((name.clone(), team.clone())),
        _ => None,
    };
    let outcome = match (&worker, direction, &down) {
        (_, Passage::Out, Some(_)) => CheckinOutcome::Ok,
        (None, _, _) => CheckinOutcome::UnknownBadge,
        (Some(_), Passage::In, Some(_)) => CheckinOutcome::AlreadyIn,
        (Some(_), Passage::Out, None) => CheckinOutcome::NotIn,
        (Some(_), Passage::In, None) => CheckinOutcome::Ok,
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
    if outcome == CheckinOutcome::Ok {
        match direction {
            Passage::In => {
                conn.execute(
                    "INSERT INTO underground(badge, checkin_id, since, since_ms) VALUES (?1, ?2, ?3, ?4)",
                    (badge, id, &at_s, at_ms),
                )?;
            }
            Passage::Out => {
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
            (Passage::Out, Some((_, since))) => Some((at_ms - since) / 60_000),
            _ => None,
        },
        by: by_hand.map(|b| b.by.clone()),
        reason: by_hand.map(|b| b.reason.clone()),
        kiosk: kiosk.map(str::to_owned),
    };
    let payload = serde_json::to_value(pithead_core::protocol::CheckinBody {
        record: record.clone(),
        county: cfg.station.county.clone(),
        station: cfg.station.id.clone(),
    })
    .unwrap_or_default();
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
            let at = crate::time::now_rfc3339();
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

/// What the overdue watch tells the alarm task (which turns it into its
/// own command: the watch does not know the alarm side).
#[derive(Debug, Clone, PartialEq)]
pub enum OverdueNews {
    /// The subjects (`worker:BADGE`) overdue now; everyone else is not.
    Overdue(Vec<String>),
    /// The watch cannot read who is underground (`true`), or can again.
    Blind(bool),
    /// Where more are underground than allowed now (`underground`,
    /// `team:NAME`), with the count; everywhere else is within its limit.
    Overcrowded(Vec<(String, f64)>),
}

/// Subject of the overcrowding alarm for the whole mine.
pub const OVERCROWDED_ALL: &str = "underground";

/// One limit exceeded (超员), as a check-in's answer and the kiosk tell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Crowded {
    /// `underground` or `team:NAME`.
    pub subject: String,
    /// How many are there.
    pub count: u32,
    /// The limit.
    pub limit: u32,
}

impl Crowded {
    /// `count` at `subject`, with its limit from the roster's settings.
    pub fn new(cfg: &crate::config::Roster, subject: String, count: f64) -> Self {
        let limit = if subject == OVERCROWDED_ALL {
            cfg.max_underground.unwrap_or(0)
        } else {
            subject
                .strip_prefix("team:")
                .and_then(|t| cfg.max_per_team.get(t))
                .copied()
                .unwrap_or(0)
        };
        Crowded {
            subject,
            count: count.max(0.0).min(f64::from(u32::MAX)) as u32,
            limit,
        }
    }
}

/// Where more people are underground than the roster's limits allow:
/// (`underground` or `team:NAME`, how many).
pub fn overcrowded(cfg: &crate::config::Roster, list: &[Underground]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    if let Some(max) = cfg.max_underground
        && list.len() > max as usize
    {
        out.push((OVERCROWDED_ALL.to_owned(), list.len() as f64));
    }
    for (team, max) in &cfg.max_per_team {
        let n = list.iter().filter(|u| &u.team == team).count();
        if n > *max as usize {
            out.push((format!("team:{team}"), n as f64));
        }
    }
    out
}

/// Every 15 s (or a quarter of a short shift), and at once after every
/// check-in or check-out (`changed`), tells the alarm task who is overdue
/// and where too many are underground. Reads the store, so it runs apart
/// from the alarm path.
pub async fn watch_overdue<T: From<OverdueNews>>(
    store: Store,
    cfg: Arc<Config>,
    clock: Arc<std::sync::Mutex<OverdueClock>>,
    changed: Arc<tokio::sync::Notify>,
    alarms: mpsc::Sender<T>,
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
            () = changed.notified() => {}
        }
        let read = store
            .read(move |c| underground(c, SystemTime::now(), limit))
            .await;
        let failed = read.is_err();
        match read {
            Ok(list) => {
                let crowded = overcrowded(&cfg.roster, &list);
                if alarms
                    .send(OverdueNews::Overcrowded(crowded).into())
                    .await
                    .is_err()
                {
                    return;
                }
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
                if alarms
                    .send(OverdueNews::Overdue(overdue).into())
                    .await
                    .is_err()
                {
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
            if alarms
                .send(OverdueNews::Blind(failed).into())
                .await
                .is_err()
            {
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
