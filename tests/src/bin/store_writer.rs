//! Test helper: writes acknowledged records (an event and its outbox row)
//! from several tasks at once, printing `ack <event id> <msg id>` only after
//! each durable commit returned, plus bulk readings, until it is killed.
//! The crash test kills it with SIGKILL and checks that every printed record
//! is in the database.

use std::io::Write as _;

use pithead::store::{Durability, Store, events, outbox};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: pithead-store-writer DATA_DIR"))?;
    let store = Store::open(std::path::Path::new(&dir))?;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            loop {
                let lane = if worker % 2 == 0 {
                    outbox::Lane::Alarm
                } else {
                    outbox::Lane::Checkin
                };
                let written = store
                    .write(Durability::Acknowledged, move |c| {
                        let at = pithead::time::now_rfc3339();
                        let id = events::insert(
                            c,
                            &at,
                            &events::NewEvent {
                                kind: "test.record".into(),
                                actor: Some(format!("worker-{worker}")),
                                subject: None,
                                detail: serde_json::json!({ "worker": worker }),
                            },
                        )?;
                        let o = outbox::enqueue(
                            c,
                            lane,
                            "test",
                            &at,
                            &serde_json::json!({ "event": id }),
                        )?;
                        Ok((id, o.msg_id))
                    })
                    .await;
                match written {
                    Ok((id, msg_id)) => {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "ack {id} {msg_id}");
                        let _ = out.flush();
                    }
                    Err(e) => eprintln!("write failed: {e}"),
                }
            }
        });
    }
    tasks.spawn(async move {
        let mut t: i64 = 0;
        loop {
            let _ = store
                .write(Durability::Bulk, move |c| {
                    for ch in 0..50 {
                        c.execute(
                            "INSERT INTO readings(channel, at_ms, value, state) VALUES (?1, ?2, 0.25, 'ok')",
                            (format!("ch{ch}"), t),
                        )?;
                    }
                    Ok(())
                })
                .await;
            t += 1;
        }
    });
    while tasks.join_next().await.is_some() {}
    Ok(())
}
