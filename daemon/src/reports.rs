//! Periodic reports for the county: `summary` (per-minute channel
//! statistics, batched) and `headcount` (who is underground). Each is an
//! outbox row; the summary records how far it has reported in the same
//! transaction, so a restart neither skips nor repeats a minute.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::outbox::{self, Lane};
use crate::store::{Durability, Store, StoreError};
use crate::time::rfc3339;
use crate::time::unix_ms;
use pithead_core::protocol::{ChannelMinutes, HeadcountBody, MinuteStats, Person, SummaryBody};

/// How often reports are made.
pub const EVERY: Duration = Duration::from_secs(300);
/// Minutes younger than this may not be stored yet (the recorder writes a
/// minute once it is over, at its raw rate): they wait for the next report.
pub const SETTLE_MS: i64 = 2 * 60_000;
/// Most minutes in one summary message (a long outage is reported in
/// several).
pub const MAX_MINUTES: i64 = 60;

const KEY: &str = "summary.reported_until_ms";

/// Room the envelope (ids, lane, epoch, topic) and MQTT's own header take
/// beside the body.
const ENVELOPE_ROOM: usize = 1024;

/// `base` with `items` under `key`, in as many parts as it takes for each
/// to serialize within `max` bytes (at least one item a part); each part
/// says which it is (`part`, from 1) of how many (`parts`) when there is
/// more than one. The receiver puts a summary or head-count back together
/// from the parts of the same `from`/`to` or `at`.
pub fn split_to_fit(
    base: &serde_json::Value,
    key: &str,
    items: Vec<serde_json::Value>,
    max: usize,
) -> Vec<serde_json::Value> {
    let budget = max.saturating_sub(ENVELOPE_ROOM);
    let fixed = base.to_string().len() + key.len() + 40;
    let mut parts: Vec<Vec<serde_json::Value>> = vec![Vec::new()];
    let mut size = fixed;
    for item in items {
        let n = item.to_string().len() + 1;
        if size + n > budget && parts.last().is_some_and(|p| !p.is_empty()) {
            parts.push(Vec::new());
            size = fixed;
        }
        size += n;
        if let Some(p) = parts.last_mut() {
            p.push(item);
        }
    }
    let count = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, items)| {
            let mut body = base.clone();
            body[key] = serde_json::Value::Array(items);
            if count > 1 {
                body["part"] = (i + 1).into();
                body["parts"] = count.into();
            }
            body
        })
        .collect()
}

/// Makes one summary of the stored minutes after the last one reported and
/// before `until_ms` (at most [`MAX_MINUTES`]); `None` when there is
/// nothing to report.
pub fn summarize(
    conn: &Connection,
    cfg: &Config,
    until_ms: i64,
) -> Result<Option<outbox::Enqueued>, StoreError> {
    let from: i64 = match conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [KEY], |r| {
            r.get::<_, String>(0)
        })
        .optional()?
    {
        Some(v) => v.parse().unwrap_or(0),
        // First report: start with what the recorder has.
        None => conn.query_row(
            "SELECT coalesce(min(minute_ms), ?1) FROM aggregates",
            [until_ms],
            |r| r.get(0),
        )?,
    };
    let until = until_ms.min(from + MAX_MINUTES * 60_000);
    if until <= from {
        return Ok(None);
    }
    let mut st = conn.prepare_cached(
        "SELECT channel, minute_ms, min, max, mean, count, faults, calibrating FROM aggregates
         WHERE minute_ms >= ?1 AND minute_ms < ?2 ORDER BY channel, minute_ms",
    )?;
    let mut channels: Vec<serde_json::Value> = Vec::new();
    let mut current: Option<(String, Vec<MinuteStats>)> = None;
    let rows = st.query_map((from, until), |r| {
        Ok((
            r.get::<_, String>(0)?,
            MinuteStats {
                minute: rfc3339(crate::time::from_unix_ms(r.get(1)?)),
                min: r.get(2)?,
                max: r.get(3)?,
                mean: r
                    .get::<_, Option<f64>>(4)?
                    .map(|m| pithead_core::decode::round_significant(m, 6)),
                count: r.get(5)?,
                faults: r.get(6)?,
                calibrating: r.get(7)?,
            },
        ))
    })?;
    let channel = |channel: String, minutes: Vec<MinuteStats>| {
        serde_json::to_value(ChannelMinutes { channel, minutes }).unwrap_or_default()
    };
    for row in rows {
        let (ch, minute) = row?;
        match &mut current {
            Some((c, mins)) if *c == ch => mins.push(minute),
            _ => {
                if let Some((c, mins)) = current.take() {
                    channels.push(channel(c, mins));
                }
                current = Some((ch, vec![minute]));
            }
        }
    }
    if let Some((c, mins)) = current {
        channels.push(channel(c, mins));
    }
    crate::store::set_meta(conn, KEY, &until.to_string())?;
    if channels.is_empty() {
        return Ok(None);
    }
    let at = crate::time::now_rfc3339();
    let base = serde_json::to_value(SummaryBody {
        county: cfg.station.county.clone(),
        station: cfg.station.id.clone(),
        from: rfc3339(crate::time::from_unix_ms(from)),
        to: rfc3339(crate::time::from_unix_ms(until)),
        channels: Vec::new(),
        part: None,
        parts: None,
    })
    .unwrap_or_default();
    let mut last = None;
    let max = outbox::message_limit(conn, cfg.mqtt.max_message_bytes)?;
    for body in split_to_fit(&base, "channels", channels, max) {
        last = Some(outbox::enqueue(conn, Lane::Summary, "summary", &at, &body)?);
    }
    Ok(last)
}

/// Records a head-count message: how many are underground and who.
pub fn headcount(
    conn: &Connection,
    cfg: &Config,
    now: SystemTime,
) -> Result<outbox::Enqueued, StoreError> {
    let limit = cfg
        .roster
        .shift_length
        .saturating_add(cfg.roster.overdue_grace);
    let people = crate::roster::underground(conn, now, limit)?;
    let at = rfc3339(now);
    let base = serde_json::to_value(HeadcountBody {
        county: cfg.station.county.clone(),
        station: cfg.station.id.clone(),
        at: at.clone(),
        underground: people.len(),
        overdue: people.iter().filter(|p| p.overdue).count(),
        people: Vec::new(),
        part: None,
        parts: None,
    })
    .unwrap_or_default();
    let people: Vec<serde_json::Value> = people
        .into_iter()
        .map(|p| {
            serde_json::to_value(Person {
                badge: p.badge,
                name: p.name,
                team: p.team,
                since: p.since,
                overdue: p.overdue,
            })
            .unwrap_or_default()
        })
        .collect();
    let mut last = None;
    let max = outbox::message_limit(conn, cfg.mqtt.max_message_bytes)?;
    for body in split_to_fit(&base, "people", people, max) {
        last = Some(outbox::enqueue(
            conn,
            Lane::Checkin,
            "headcount",
            &at,
            &body,
        )?);
    }
    last.ok_or_else(|| StoreError::Rejected("no head-count part".into()))
}

/// Every [`EVERY`], a head-count and the summaries of settled minutes; then
/// the outbox is brought back within its cap.
pub async fn run(store: Store, cfg: Arc<Config>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let c = Arc::clone(&cfg);
        if let Err(e) = store
            .write(Durability::Bulk, move |conn| {
                headcount(conn, &c, SystemTime::now())
            })
            .await
        {
            tracing::warn!(error = %e, "head-count not recorded");
        }
        // Catch up on a backlog in messages of at most an hour each.
        for _ in 0..48 {
            let c = Arc::clone(&cfg);
            let until = unix_ms(SystemTime::now()) - SETTLE_MS;
            let until = until - until.rem_euclid(60_000);
            match store
                .write(Durability::Bulk, move |conn| summarize(conn, &c, until))
                .await
            {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "summary not recorded");
                    break;
                }
            }
        }
        // Check-ins, alarms and hazard reports queued since the last tick
        // take the place of the oldest summaries.
        if let Err(e) = store
            .write(Durability::Bulk, outbox::enforce_recorded_cap)
            .await
        {
            tracing::warn!(error = %e, "outbox cap not enforced");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn big_reports_are_split_into_parts_that_fit_and_lose_nothing() {
        let base = serde_json::json!({ "county": "c1", "station": "s1", "from": "f", "to": "t" });
        let channels: Vec<serde_json::Value> = (0..2000)
            .map(|i| serde_json::json!({ "channel": format!("ch4-{i:04}"), "minutes": [{ "minute": "2026-12-02T06:00:00.000Z", "min": 0.29, "max": 0.33, "mean": 0.31, "count": 60, "faults": 0 }] }))
            .collect();
        let max = 48 * 1024;
        let parts = split_to_fit(&base, "channels", channels.clone(), max);
        assert!(parts.len() > 1);
        for (i, p) in parts.iter().enumerate() {
            assert!(
                p.to_string().len() + ENVELOPE_ROOM <= max,
                "part {i}: {}",
                p.to_string().len()
            );
            assert_eq!(
                (p["part"].as_u64(), p["parts"].as_u64()),
                (Some(i as u64 + 1), Some(parts.len() as u64))
            );
            assert_eq!(p["from"], "f");
        }
        let back: Vec<serde_json::Value> = parts
            .iter()
            .flat_map(|p| p["channels"].as_array().cloned().unwrap_or_default())
            .collect();
        assert_eq!(back, channels, "every channel once, in order");
        // Small: one message, without part numbers.
        let one = split_to_fit(&base, "channels", channels[..3].to_vec(), max);
        assert_eq!(one.len(), 1);
        assert!(one[0].get("part").is_none());
    }

    fn cfg() -> Config {
        let src = format!(
            "[station]\ncounty = \"c1\"\nid = \"s1\"\nname = \"n\"\n[outputs]\nbackend = \"sim\"\n[storage]\ndata_dir = \"{}\"\n",
            std::env::temp_dir().display()
        );
        crate::config::load_str(&src, Path::new("t.toml")).unwrap()
    }

    #[tokio::test]
    async fn summaries_cover_every_minute_once_across_calls() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Rejected(e.to_string()))?;
        let store = Store::open(dir.path())?;
        let cfg = Arc::new(cfg());
        let base = 1_800_000_000_000i64; // a minute boundary
        store
            .write(Durability::Bulk, move |c| {
                for m in 0..90 {
                    for ch in ["ch4", "co"] {
                        c.execute(
                            "INSERT INTO aggregates(channel, minute_ms, min, max, mean, count, faults) VALUES (?1, ?2, 0.1, 0.3, 0.2, 60, 0)",
                            (ch, base + m * 60_000),
                        )?;
                    }
                }
                Ok(())
            })
            .await?;
        let c = Arc::clone(&cfg);
        let first = store
            .write(Durability::Bulk, move |conn| {
                summarize(conn, &c, base + 90 * 60_000)
            })
            .await?;
        assert!(first.is_some());
        let c = Arc::clone(&cfg);
        let second = store
            .write(Durability::Bulk, move |conn| {
                summarize(conn, &c, base + 90 * 60_000)
            })
            .await?;
        assert!(
            second.is_some(),
            "the rest of a long backlog in a second message"
        );
        let c = Arc::clone(&cfg);
        let third = store
            .write(Durability::Bulk, move |conn| {
                summarize(conn, &c, base + 90 * 60_000)
            })
            .await?;
        assert!(third.is_none(), "nothing twice");
        let minutes: i64 = store
            .read(|c| {
                let mut st = c.prepare("SELECT payload FROM outbox WHERE kind = 'summary'")?;
                let mut n = 0i64;
                for p in st.query_map([], |r| r.get::<_, String>(0))? {
                    let v: serde_json::Value = serde_json::from_str(&p?).unwrap_or_default();
                    for ch in v["channels"].as_array().cloned().unwrap_or_default() {
                        n += i64::try_from(ch["minutes"].as_array().map_or(0, Vec::len))
                            .unwrap_or(0);
                    }
                }
                Ok(n)
            })
            .await?;
        assert_eq!(minutes, 180, "90 minutes of 2 channels, each once");
        store.close().await;
        Ok(())
    }

    #[tokio::test]
    async fn headcounts_list_who_is_underground() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Rejected(e.to_string()))?;
        let store = Store::open(dir.path())?;
        let cfg = Arc::new(cfg());
        let c = Arc::clone(&cfg);
        let body = store
            .write(Durability::Bulk, move |conn| {
                crate::roster::import(
                    conn,
                    &[crate::roster::Worker {
                        badge: "0042".into(),
                        name: "张伟".into(),
                        team: "一队".into(),
                        role: "工".into(),
                    }],
                    "x",
                )?;
                crate::roster::check(
                    conn,
                    &c,
                    "0042",
                    crate::roster::Passage::In,
                    SystemTime::now(),
                    "local",
                )?;
                headcount(conn, &c, SystemTime::now())?;
                Ok(conn.query_row(
                    "SELECT payload FROM outbox WHERE kind = 'headcount'",
                    [],
                    |r| r.get::<_, String>(0),
                )?)
            })
            .await?;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v["underground"], 1);
        assert_eq!(v["people"][0]["name"], "张伟");
        store.close().await;
        Ok(())
    }
}
