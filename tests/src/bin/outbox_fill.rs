//! Test and benchmark helper: queues records for the county in a station's
//! store, as if the uplink had been down while they were made.
//!
//! `pithead-outbox-fill DATA_DIR N [KIND]` writes N check-in records
//! (`KIND` = `checkin`, the default) or N per-minute summaries (`summary`)
//! through the store's own outbox code, 1000 to a transaction, and prints
//! the number of unsent rows afterwards. Run it while no daemon holds the
//! store.
//!
//! `pithead-outbox-fill DATA_DIR HOURS station CONFIG CHANNELS` plays HOURS
//! of a station's uplink outage at its real rate, ending now, through the
//! daemon's own code and with CONFIG's outbox cap: every 5 minutes the
//! minute aggregates of CHANNELS channels and the report tick as
//! `reports::run` does it (head-count, summary, cap), 300 check-ins in and out
//! at each 8-hour shift change, an alarm raised and cleared every 6 hours, a
//! hazard report every 12 hours. It prints the backlog as JSON.

use pithead::store::{Durability, Store, outbox};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || {
        anyhow::anyhow!(
            "usage: pithead-outbox-fill DATA_DIR N [checkin|summary] | DATA_DIR HOURS station CONFIG CHANNELS"
        )
    };
    let dir = args.next().ok_or_else(usage)?;
    let n: usize = args.next().ok_or_else(usage)?.parse()?;
    let kind = args.next().unwrap_or_else(|| "checkin".into());
    if kind == "station" {
        let config = args.next().ok_or_else(usage)?;
        let channels: usize = args.next().ok_or_else(usage)?.parse()?;
        return station(&dir, n, &config, channels).await;
    }
    let (lane, kind): (outbox::Lane, &'static str) = match kind.as_str() {
        "checkin" => (outbox::Lane::Checkin, "checkin"),
        "summary" => (outbox::Lane::Summary, "summary"),
        _ => return Err(usage()),
    };
    let store = Store::open(std::path::Path::new(&dir))?;
    let mut done = 0;
    while done < n {
        let chunk = (n - done).min(1000);
        let first = done;
        store
            .write(Durability::Acknowledged, move |c| {
                for i in first..first + chunk {
                    let at = pithead::time::now_rfc3339();
                    let body = if kind == "checkin" {
                        serde_json::json!({
                            "county": "test-county", "station": "test-station",
                            "badge": format!("{:04}", i % 10_000), "name": "张三",
                            "team": "综采一队", "direction": if i % 2 == 0 { "in" } else { "out" },
                            "outcome": "ok", "at": at,
                        })
                    } else {
                        serde_json::json!({
                            "county": "test-county", "station": "test-station",
                            "minute": at, "channels": [
                                { "id": "ch4", "min": 0.31, "max": 0.35, "mean": 0.33, "samples": 60, "faults": 0 },
                                { "id": "co", "min": 3.0, "max": 4.0, "mean": 3.4, "samples": 60, "faults": 0 },
                            ],
                        })
                    };
                    outbox::enqueue(c, lane, kind, &at, &body)?;
                }
                Ok(())
            })
            .await?;
        done += chunk;
    }
    let unsent = store.read(outbox::backlog).await?;
    println!("{unsent:?}");
    store.close().await;
    Ok(())
}

/// Plays `hours` of a station's outage at its real rate (see the top).
async fn station(dir: &str, hours: usize, config: &str, channels: usize) -> anyhow::Result<()> {
    use pithead::reports;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    let cfg = std::sync::Arc::new(
        pithead::config::load_file(std::path::Path::new(config))
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let store = Store::open(std::path::Path::new(dir))?;
    let cap = i64::from(cfg.storage.outbox_cap_mb) * 1024 * 1024;
    store
        .write(Durability::Bulk, move |c| outbox::set_cap(c, cap))
        .await?;
    let now_ms = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    let step_ms = i64::try_from(reports::EVERY.as_millis())?;
    let steps = i64::try_from(hours)? * 3_600_000 / step_ms;
    let start_ms = now_ms - steps * step_ms;
    let ms_time = |ms: i64| UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    for k in 0..steps {
        let t = start_ms + (k + 1) * step_ms;
        let cfg = std::sync::Arc::clone(&cfg);
        store
            .write(Durability::Acknowledged, move |c| {
                // The recorder's minute aggregates of the last 5 minutes.
                let first_minute = (t - step_ms) / 60_000 * 60_000;
                for m in 0..step_ms / 60_000 {
                    let minute = first_minute + m * 60_000;
                    for ch in 0..channels {
                        let wobble = (minute / 60_000).wrapping_add(ch as i64).rem_euclid(7) as f64;
                        let mean = 0.3 + wobble * 0.01;
                        c.execute(
                            "INSERT OR REPLACE INTO aggregates(channel, minute_ms, min, max, mean, count, faults) VALUES (?1, ?2, ?3, ?4, ?5, 60, 0)",
                            (format!("ch{ch:02}-sensor"), minute, mean - 0.02, mean + 0.02, mean),
                        )?;
                    }
                }
                let at = pithead::time::rfc3339(ms_time(t));
                let hour = (t - start_ms) / 3_600_000;
                let minute_of_hour = (t - start_ms) % 3_600_000;
                if minute_of_hour < step_ms {
                    if hour % 8 == 0 {
                        for i in 0..300 {
                            for direction in ["out", "in"] {
                                outbox::enqueue(c, outbox::Lane::Checkin, "checkin", &at, &serde_json::json!({
                                    "county": cfg.station.county, "station": cfg.station.id,
                                    "badge": format!("{i:04}"), "name": "张三", "team": "综采一队",
                                    "direction": direction, "outcome": "ok", "at": at,
                                }))?;
                            }
                        }
                    }
                    if hour % 6 == 0 {
                        for event in ["raised", "cleared"] {
                            outbox::enqueue(c, outbox::Lane::Alarm, "alarm", &at, &serde_json::json!({
                                "county": cfg.station.county, "station": cfg.station.id,
                                "event": event, "channel": "ch00-sensor", "level": "warning",
                                "value": 0.8, "at": at,
                            }))?;
                        }
                    }
                    if hour % 12 == 0 {
                        outbox::enqueue(c, outbox::Lane::Hazard, "hazard", &at, &serde_json::json!({
                            "county": cfg.station.county, "station": cfg.station.id,
                            "ticket": format!("T{hour}"), "category": "roof", "location": "1201",
                            "grade": "general", "description": "顶板掉渣", "status": "reported", "at": at,
                        }))?;
                    }
                }
                // The report tick, as reports::run does it.
                reports::headcount(c, &cfg, ms_time(t))?;
                reports::summarize(c, &cfg, t - reports::SETTLE_MS)?;
                outbox::enforce_recorded_cap(c)?;
                Ok(())
            })
            .await?;
    }
    let backlog = store.read(outbox::backlog).await?;
    println!(
        "{}",
        serde_json::json!({
            "steps": steps, "pending": backlog.pending, "bytes": backlog.bytes,
            "dropped_summaries": backlog.dropped_summaries, "cap_bytes": cap,
        })
    );
    store.close().await;
    Ok(())
}
