//! Calibration (标校, AQ 1029 fake-data marking): a supervisor puts a
//! channel into calibration for a bounded time, with who and why.
//!
//! Meanwhile its readings are shown as `calibrating` (标校) on every
//! screen, kept out of the per-minute statistics (counted apart), and the
//! alarms raised on it are marked as calibration alarms in the event log
//! and to the county. The engine still judges every reading: a power-cut
//! channel in calibration still cuts power at its threshold (fail-safe
//! first; the test gas is real gas to the relay). A calibration ends by
//! itself at its time, or from the console. The date of each sensor's last
//! calibration is kept, and a sensor with alarm levels whose last one is
//! older than `[acquisition] calibration_days` is flagged.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use rusqlite::Connection;
use serde::Serialize;

use crate::store::StoreError;
use crate::time::rfc3339;

/// The longest calibration a supervisor may set.
pub const MAX: Duration = Duration::from_secs(120 * 60);
/// The calibration time when none is given.
pub const DEFAULT: Duration = Duration::from_secs(30 * 60);

/// One channel's calibration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Calibration {
    /// The supervisor.
    pub by: String,
    /// Why.
    pub reason: String,
    /// When it began.
    #[serde(serialize_with = "wall")]
    pub started: SystemTime,
    /// When it ends by itself.
    #[serde(serialize_with = "wall")]
    pub until: SystemTime,
}

fn wall<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

#[derive(Debug, Default, Clone)]
struct Slot {
    active: Option<Calibration>,
    /// The last calibration that ended: `[from, to)`, so that an alarm
    /// event recorded a moment later is still marked.
    ended: Option<(SystemTime, SystemTime)>,
    /// When the sensor was last calibrated (began).
    last: Option<SystemTime>,
}

/// Every channel's calibration, by channel index.
#[derive(Debug, Default)]
pub struct Calibrations {
    slots: Mutex<Vec<Slot>>,
    /// How many are active: the poll and record paths look no further
    /// while it is 0.
    active: AtomicUsize,
    /// Wakes the expiry watch when one starts (it sleeps while none runs).
    started: tokio::sync::Notify,
}

impl Calibrations {
    /// For `n` channels, none in calibration.
    pub fn new(n: usize) -> Self {
        Calibrations {
            slots: Mutex::new(vec![Slot::default(); n]),
            active: AtomicUsize::new(0),
            started: tokio::sync::Notify::new(),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether any channel is in calibration (no lock).
    pub fn any(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }

    /// Channel `ch`'s calibration now, if any.
    pub fn current(&self, ch: usize) -> Option<Calibration> {
        if !self.any() {
            return None;
        }
        self.slots().get(ch).and_then(|s| s.active.clone())
    }

    /// Whether channel `ch` was in calibration at `at` (its current one, or
    /// the one that ended last).
    pub fn at(&self, ch: usize, at: SystemTime) -> bool {
        let slots = self.slots();
        let Some(s) = slots.get(ch) else {
            return false;
        };
        s.active.as_ref().is_some_and(|c| at >= c.started)
            || s.ended.is_some_and(|(from, to)| at >= from && at < to)
    }

    /// Starts (or replaces) channel `ch`'s calibration.
    pub fn start(&self, ch: usize, c: Calibration) {
        let mut slots = self.slots();
        if let Some(s) = slots.get_mut(ch) {
            if s.active.is_none() {
                self.active.fetch_add(1, Ordering::AcqRel);
            }
            s.last = Some(c.started);
            s.active = Some(c);
        }
        drop(slots);
        self.started.notify_one();
    }

    /// When the first active calibration ends.
    pub fn next_end(&self) -> Option<SystemTime> {
        if !self.any() {
            return None;
        }
        self.slots()
            .iter()
            .filter_map(|s| s.active.as_ref().map(|c| c.until))
            .min()
    }

    /// Ends channel `ch`'s calibration at `at`; what it was.
    pub fn end(&self, ch: usize, at: SystemTime) -> Option<Calibration> {
        let mut slots = self.slots();
        let s = slots.get_mut(ch)?;
        let c = s.active.take()?;
        self.active.fetch_sub(1, Ordering::AcqRel);
        s.ended = Some((c.started, at));
        Some(c)
    }

    /// The channels whose calibration time is up at `now`.
    pub fn expired(&self, now: SystemTime) -> Vec<usize> {
        if !self.any() {
            return Vec::new();
        }
        self.slots()
            .iter()
            .enumerate()
            .filter(|(_, s)| s.active.as_ref().is_some_and(|c| c.until <= now))
            .map(|(i, _)| i)
            .collect()
    }

    /// When channel `ch` was last calibrated.
    pub fn last(&self, ch: usize) -> Option<SystemTime> {
        self.slots().get(ch).and_then(|s| s.last)
    }

    /// Sets when channel `ch` was last calibrated (from the store at start).
    pub fn set_last(&self, ch: usize, at: SystemTime) {
        if let Some(s) = self.slots().get_mut(ch) {
            s.last = Some(s.last.map_or(at, |l| l.max(at)));
        }
    }
}

/// Records a calibration's start, with who and why.
pub fn record_start(conn: &Connection, channel: &str, c: &Calibration) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO calibrations(channel, started_at, until, by, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
        (channel, rfc3339(c.started), rfc3339(c.until), &c.by, &c.reason),
    )?;
    event(
        conn,
        "calibration.started",
        channel,
        Some(&c.by),
        serde_json::json!({ "channel": channel, "until": rfc3339(c.until), "reason": c.reason }),
    )?;
    Ok(())
}

/// Records a calibration's end (`by`: the supervisor, or `None` when its
/// time was up).
pub fn record_end(
    conn: &Connection,
    channel: &str,
    at: SystemTime,
    by: Option<&str>,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE calibrations SET ended_at = ?2 WHERE id = (SELECT max(id) FROM calibrations WHERE channel = ?1) AND ended_at IS NULL",
        (channel, rfc3339(at)),
    )?;
    event(
        conn,
        "calibration.ended",
        channel,
        by,
        serde_json::json!({ "channel": channel, "at": rfc3339(at), "by_itself": by.is_none() }),
    )?;
    Ok(())
}

fn event(
    conn: &Connection,
    kind: &str,
    channel: &str,
    by: Option<&str>,
    detail: serde_json::Value,
) -> Result<(), StoreError> {
    crate::store::events::insert(
        conn,
        &crate::time::now_rfc3339(),
        &crate::store::events::NewEvent {
            kind: kind.to_owned(),
            actor: by.map(str::to_owned),
            subject: Some(channel.to_owned()),
            detail,
        },
    )?;
    Ok(())
}

/// Each channel's last calibration start, from the store.
pub fn last_dates(conn: &Connection) -> Result<Vec<(String, SystemTime)>, StoreError> {
    let mut st =
        conn.prepare("SELECT channel, max(started_at) FROM calibrations GROUP BY channel")?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(c, t)| humantime::parse_rfc3339_weak(&t).ok().map(|t| (c, t)))
        .collect())
}

/// Whether a sensor last calibrated at `last` is overdue at `now`.
pub fn overdue(last: Option<SystemTime>, now: SystemTime, days: u32) -> bool {
    last.is_none_or(|l| {
        now.duration_since(l)
            .is_ok_and(|d| d > Duration::from_secs(u64::from(days) * 86_400))
    })
}

/// Loads the last calibration dates, closes calibrations a stop left open
/// (a restart ends them), then every second ends those whose time is up:
/// in memory at once, then in the store.
pub async fn watch(
    store: crate::store::Store,
    ids: Vec<String>,
    cal: std::sync::Arc<Calibrations>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    match store
        .write(crate::store::Durability::Acknowledged, |c| {
            let now = rfc3339(SystemTime::now());
            c.execute(
                "UPDATE calibrations SET ended_at = ?1 WHERE ended_at IS NULL",
                [&now],
            )?;
            last_dates(c)
        })
        .await
    {
        Ok(dates) => {
            for (channel, at) in dates {
                if let Some(i) = ids.iter().position(|c| *c == channel) {
                    cal.set_last(i, at);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the calibration dates"),
    }
    loop {
        // Asleep while no calibration runs (no wake-up a second on a box
        // that calibrates twice a month); else until the first one ends,
        // looked at again at least every second.
        let wait = cal.next_end().map(|end| {
            end.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(Duration::from_secs(1))
        });
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = cal.started.notified() => {}
            () = async {
                match wait {
                    Some(w) => tokio::time::sleep(w).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        let now = SystemTime::now();
        for ch in cal.expired(now) {
            if cal.end(ch, now).is_none() {
                continue;
            }
            let Some(channel) = ids.get(ch).cloned() else {
                continue;
            };
            tracing::info!(%channel, "calibration time is up: ended");
            let c = channel.clone();
            if let Err(e) = store
                .write(crate::store::Durability::Acknowledged, move |conn| {
                    record_end(conn, &c, now, None)
                })
                .await
            {
                tracing::warn!(%channel, error = %e, "calibration ended, but its end is not recorded");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calibration_marks_its_time_ends_and_is_remembered() {
        let cal = Calibrations::new(2);
        assert!(!cal.any() && cal.current(0).is_none());
        let t0 = SystemTime::now();
        cal.start(
            1,
            Calibration {
                by: "王".into(),
                reason: "标准气样".into(),
                started: t0,
                until: t0 + DEFAULT,
            },
        );
        assert!(cal.any() && cal.current(1).is_some() && cal.current(0).is_none());
        assert!(cal.at(1, t0 + Duration::from_secs(1)) && !cal.at(0, t0));
        assert!(cal.expired(t0 + Duration::from_secs(60)).is_empty());
        assert_eq!(cal.expired(t0 + DEFAULT), [1]);
        let end = t0 + Duration::from_secs(600);
        assert!(cal.end(1, end).is_some());
        assert!(!cal.any() && cal.current(1).is_none());
        assert!(
            cal.at(1, end - Duration::from_secs(1)),
            "an event of just before stays marked"
        );
        assert!(!cal.at(1, end + Duration::from_secs(1)));
        assert_eq!(cal.last(1), Some(t0));
        assert!(!overdue(
            cal.last(1),
            t0 + Duration::from_secs(14 * 86_400),
            15
        ));
        assert!(overdue(
            cal.last(1),
            t0 + Duration::from_secs(16 * 86_400),
            15
        ));
        assert!(overdue(cal.last(0), t0, 15), "never calibrated");
    }
}
