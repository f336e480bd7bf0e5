//! Test and benchmark helper: queues records for the county in a station's
//! store, as if the uplink had been down while they were made.
//!
//! `pithead-outbox-fill DATA_DIR N [KIND]` writes N check-in records
//! (`KIND` = `checkin`, the default) or N per-minute summaries (`summary`)
//! through the store's own outbox code, 1000 to a transaction, and prints
//! the number of unsent rows afterwards. Run it while no daemon holds the
//! store.

use pithead::store::{self, Durability, Store, outbox};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || anyhow::anyhow!("usage: pithead-outbox-fill DATA_DIR N [checkin|summary]");
    let dir = args.next().ok_or_else(usage)?;
    let n: usize = args.next().ok_or_else(usage)?.parse()?;
    let kind = args.next().unwrap_or_else(|| "checkin".into());
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
                    let at = store::now_rfc3339();
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
