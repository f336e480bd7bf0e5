//! The station's own light (预评): green, yellow or red, judged every
//! 10 s from the station's own data by the county's rule
//! (`pithead_core::light::judge`, figures in `[light]`), shown on the
//! console and the kiosk header, and sent to the county (`light`, the
//! summary lane) whenever it changes and at least daily.
//!
//! The facts are this quarter's so far, in the box's local time: open major
//! hazards, rectifications past their deadline, power cuts raised,
//! alarms unacknowledged for longer than `ack_minutes`, general hazards
//! open longer than `yellow_open_days`, the time the uplink was down (counted
//! by this task while the uplink is enabled, kept in `meta`), and the
//! channel with the most minutes without a good reading (the per-minute
//! aggregates).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use pithead_core::light::{Facts, Rule, judge};
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::outbox::{self, Lane};
use crate::store::{Durability, Store, StoreError};
use crate::time::{rfc3339, unix_ms};

/// The light as the pages show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LightView {
    /// `green`, `yellow` or `red`.
    pub light: &'static str,
    /// Each reason, `[zh, en]`.
    pub reasons: Vec<(String, String)>,
    /// The quarter, e.g. `2026-Q4`.
    pub quarter: String,
    /// When it was judged (RFC 3339).
    pub at: String,
}

/// The light now, for the pages (`None` until first judged).
pub type Current = Arc<Mutex<Option<LightView>>>;

/// How often the light is judged (a handful of counts).
const EVERY: Duration = Duration::from_secs(10);
/// A light unchanged for this long is sent again.
const RESEND: Duration = Duration::from_secs(24 * 3600);

const OFFLINE_KEY: &str = "light.offline_seconds";
const SENT_KEY: &str = "light.sent";

/// The quarter `now` falls in (local time) and its start (Unix ms).
fn quarter(conn: &Connection, now: SystemTime) -> Result<(String, i64), StoreError> {
    let secs = unix_ms(now) / 1000;
    Ok(conn.query_row(
        "WITH l AS (SELECT datetime(?1, 'unixepoch', 'localtime') AS t),
              q AS (SELECT t, (cast(strftime('%m', t) AS integer) - 1) / 3 AS n FROM l)
         SELECT strftime('%Y', t) || '-Q' || (n + 1),
                cast(strftime('%s', date(t, 'start of year', printf('+%d months', n * 3)), 'utc') AS integer) * 1000
         FROM q",
        [secs],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

fn count(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<i64, StoreError> {
    // Cached: judged every 10 s, never parsed again.
    Ok(conn.prepare_cached(sql)?.query_row(p, |r| r.get(0))?)
}

/// This quarter's facts so far.
pub fn facts(
    conn: &Connection,
    rule: &Rule,
    now: SystemTime,
) -> Result<(String, Facts), StoreError> {
    let (q, start_ms) = quarter(conn, now)?;
    let start = rfc3339(
        SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(start_ms).unwrap_or(0)),
    );
    let before = |minutes: i64| {
        rfc3339(
            now.checked_sub(Duration::from_secs(
                u64::try_from(minutes.max(0)).unwrap_or(0) * 60,
            ))
            .unwrap_or(now),
        )
    };
    let open = "status NOT IN ('closed', 'rejected')";
    let down: Option<(String, i64)> = conn
        .query_row(
            "SELECT channel, count(*) FROM aggregates WHERE minute_ms >= ?1 AND count = 0 AND calibrating = 0
             GROUP BY channel ORDER BY 2 DESC, 1 LIMIT 1",
            [start_ms],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let offline = offline_seconds(conn, &q)? / 60;
    let f = Facts {
        major_open: count(
            conn,
            &format!("SELECT count(*) FROM hazards WHERE grade = 'major' AND {open}"),
            [],
        )?,
        overdue: i64::try_from(crate::hazards::overdue_count(conn, now)?).unwrap_or(i64::MAX),
        power_cuts: count(
            conn,
            "SELECT count(*) FROM alarms WHERE level = 'power_cut' AND raised_at >= ?1",
            [&start],
        )?,
        unacknowledged: count(
            conn,
            "SELECT count(*) FROM alarms WHERE acked_at IS NULL AND cleared_at IS NULL AND raised_at < ?1",
            [before(rule.ack_minutes)],
        )?,
        general_stale: count(
            conn,
            &format!(
                "SELECT count(*) FROM hazards WHERE grade = 'general' AND {open} AND reported_at < ?1"
            ),
            [before(rule.yellow_open_days.saturating_mul(24 * 60))],
        )?,
        offline_hours: offline / 60,
        sensor_down_hours: down.as_ref().map_or(0, |(_, m)| m / 60),
        sensor_down_channel: down.filter(|(_, m)| *m >= 60).map(|(c, _)| c),
        calibration_overdue: 0,
    };
    Ok((q, f))
}

/// Seconds the uplink was down in quarter `q`, as this task counted them.
fn offline_seconds(conn: &Connection, q: &str) -> Result<i64, StoreError> {
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [OFFLINE_KEY],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.and_then(|v| {
        let (vq, n) = v.split_once(':')?;
        (vq == q).then(|| n.parse().ok()).flatten()
    })
    .unwrap_or(0))
}

/// `secs` more of downtime in quarter `q`.
fn add_offline(conn: &Connection, q: &str, secs: i64) -> Result<(), StoreError> {
    let n = offline_seconds(conn, q)? + secs;
    crate::store::set_meta(conn, OFFLINE_KEY, &format!("{q}:{n}"))
}

/// What was last sent: `(light, reasons)` and when (Unix ms).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
struct Sent {
    light: String,
    reasons: Vec<(String, String)>,
    at_ms: i64,
}

/// Judges the light now; sends it when it changed or a day has passed.
/// Returns what the pages show.
pub fn judge_and_send(
    conn: &Connection,
    cfg: &Config,
    calibration_overdue: i64,
    now: SystemTime,
) -> Result<LightView, StoreError> {
    let (q, mut f) = facts(conn, &cfg.light, now)?;
    f.calibration_overdue = calibration_overdue;
    let l = judge(&cfg.light, &f);
    let at = rfc3339(now);
    let sent: Option<Sent> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [SENT_KEY], |r| {
            r.get::<_, String>(0)
        })
        .optional()?
        .and_then(|v| serde_json::from_str(&v).ok());
    let now_ms = unix_ms(now);
    let due = sent.as_ref().is_none_or(|s| {
        s.light != l.light
            || s.reasons != l.reasons
            || now_ms.saturating_sub(s.at_ms)
                >= i64::try_from(RESEND.as_millis()).unwrap_or(i64::MAX)
    });
    if due {
        let body = serde_json::to_value(pithead_core::protocol::LightBody {
            county: cfg.station.county.clone(),
            station: cfg.station.id.clone(),
            light: l.light.to_owned(),
            reasons: l.reasons.clone(),
            facts: f,
            rule: cfg.light.clone(),
            quarter: q.clone(),
            at: at.clone(),
        })
        .unwrap_or_default();
        outbox::enqueue(conn, Lane::Summary, "light", &at, &body)?;
        let s = Sent {
            light: l.light.to_owned(),
            reasons: l.reasons.clone(),
            at_ms: now_ms,
        };
        crate::store::set_meta(
            conn,
            SENT_KEY,
            &serde_json::to_string(&s).unwrap_or_default(),
        )?;
        if sent.is_some_and(|s| s.light != l.light) {
            tracing::warn!(light = l.light, reasons = ?l.reasons, "the station's own light changed");
        }
    }
    Ok(LightView {
        light: l.light,
        reasons: l.reasons,
        quarter: q,
        at,
    })
}

/// Every 10 s: counts the time of uplink downtime (while the uplink is
/// enabled and not connected), judges the light, sends it when due, and
/// keeps `current` for the pages.
pub async fn run(
    store: Store,
    cfg: Arc<Config>,
    uplink: Arc<crate::sync::SyncStats>,
    current: Current,
    calibrations: Arc<crate::acquisition::calibration::Calibrations>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Not on the first pass: the uplink may still be connecting.
        let offline = !first
            && cfg.mqtt.enabled
            && !uplink.connected.load(std::sync::atomic::Ordering::Relaxed);
        first = false;
        let now = SystemTime::now();
        let late = cfg
            .channels
            .iter()
            .enumerate()
            .filter(|(i, ch)| {
                !ch.levels.is_empty()
                    && crate::acquisition::calibration::overdue(
                        calibrations.last(*i),
                        now,
                        cfg.acquisition.calibration_days,
                    )
            })
            .count();
        let late = i64::try_from(late).unwrap_or(i64::MAX);
        let c = Arc::clone(&cfg);
        let r = store
            .write(Durability::Bulk, move |conn| {
                if offline {
                    let (q, _) = quarter(conn, now)?;
                    add_offline(conn, &q, i64::try_from(EVERY.as_secs()).unwrap_or(10))?;
                }
                judge_and_send(conn, &c, late, now)
            })
            .await;
        match r {
            Ok(view) => {
                if let Ok(mut g) = current.lock() {
                    *g = Some(view);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot judge the station's own light now");
                // Never yesterday's light shown as today's.
                if let Ok(mut g) = current.lock() {
                    *g = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::schema::migrate(&mut c, None).unwrap();
        c
    }

    fn cfg() -> Config {
        let src = format!(
            "[station]\ncounty = \"c1\"\nid = \"s1\"\nname = \"n\"\n[outputs]\nbackend = \"sim\"\n[storage]\ndata_dir = \"{}\"\n",
            std::env::temp_dir().display()
        );
        crate::config::load_str(&src, std::path::Path::new("t.toml")).unwrap()
    }

    fn sent(c: &Connection) -> i64 {
        c.query_row(
            "SELECT count(*) FROM outbox WHERE kind = 'light'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn the_light_follows_the_stations_data_and_is_sent_on_change_and_daily() {
        let c = db();
        let cfg = cfg();
        let now = SystemTime::now();
        let v = judge_and_send(&c, &cfg, 0, now).unwrap();
        assert_eq!((v.light, v.reasons.len()), ("green", 0));
        assert!(v.quarter.contains("-Q"), "{}", v.quarter);
        assert_eq!(sent(&c), 1, "the first judgement is sent");
        judge_and_send(&c, &cfg, 0, now + Duration::from_secs(60)).unwrap();
        assert_eq!(sent(&c), 1, "unchanged: not again");

        // A power cut this quarter: yellow; an open major hazard: red.
        let at = rfc3339(now);
        c.execute(
            "INSERT INTO alarms(id, subject, level, value, state, raised_at, acked_by, acked_at, cleared_at)
             VALUES (1, 'ch4', 'power_cut', 1.6, 'ok', ?1, '王', ?1, ?1)",
            [&at],
        )
        .unwrap();
        let v = judge_and_send(&c, &cfg, 0, now + Duration::from_secs(120)).unwrap();
        assert_eq!(v.light, "yellow", "{v:?}");
        assert_eq!(sent(&c), 2, "a change is sent");
        let report = crate::hazards::NewHazard {
            category: pithead_core::hazard::Category::Water,
            location: "水仓".into(),
            grade: crate::hazards::Grade::Major,
            description: "渗水".into(),
            anonymous: true,
            badge: None,
        }
        .validate()
        .unwrap();
        crate::hazards::create(&c, &cfg, &report, None, now).unwrap();
        let v = judge_and_send(&c, &cfg, 0, now + Duration::from_secs(180)).unwrap();
        assert_eq!(v.light, "red");
        assert!(
            v.reasons.iter().any(|r| r.0 == "重大隐患未销号 1 项"),
            "{v:?}"
        );
        // An alarm waiting longer than ack_minutes is red too.
        c.execute(
            "INSERT INTO alarms(id, subject, level, value, state, raised_at) VALUES (2, 'co', 'alarm', 30, 'ok', ?1)",
            [rfc3339(now - Duration::from_secs(31 * 60))],
        )
        .unwrap();
        let (_, f) = facts(&c, &cfg.light, now).unwrap();
        assert_eq!((f.unacknowledged, f.power_cuts, f.major_open), (1, 1, 1));
        // Unchanged for a day: sent again.
        let before = sent(&c);
        judge_and_send(&c, &cfg, 0, now + Duration::from_secs(200)).unwrap();
        let before = before.max(sent(&c));
        judge_and_send(&c, &cfg, 0, now + Duration::from_secs(200) + RESEND).unwrap();
        assert_eq!(sent(&c), before + 1, "daily");
        let body: String = c
            .query_row(
                "SELECT payload FROM outbox WHERE kind = 'light' ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let b: pithead_core::protocol::LightBody = serde_json::from_str(&body).unwrap();
        assert_eq!((b.light.as_str(), b.station.as_str()), ("red", "s1"));
    }

    #[test]
    fn uplink_downtime_counts_for_the_quarter_it_is_in() {
        let c = db();
        let now = SystemTime::now();
        let (q, _) = quarter(&c, now).unwrap();
        for _ in 0..9 {
            add_offline(&c, &q, 600).unwrap();
        }
        let (_, f) = facts(&c, &Rule::default(), now).unwrap();
        assert_eq!(f.offline_hours, 1);
        assert_eq!(
            offline_seconds(&c, "1999-Q1").unwrap(),
            0,
            "another quarter starts at 0"
        );
    }
}
