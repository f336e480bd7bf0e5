//! Store behaviour over a real SQLite file.

use std::time::{Duration, SystemTime};

use super::events::{self, NewEvent};
use super::outbox::{self, Lane};
use super::retention::{self, Policy};
use super::*;

fn event(kind: &str) -> NewEvent {
    NewEvent {
        kind: kind.into(),
        actor: Some("张三".into()),
        subject: Some("ch4-1".into()),
        detail: serde_json::json!({ "value": 1.6 }),
    }
}

/// An event and its outbox row, as every acknowledged record is written.
fn record_with_outbox(c: &Connection, kind: &str) -> Result<(i64, outbox::Enqueued), StoreError> {
    let at = now_rfc3339();
    let id = events::insert(c, &at, &event(kind))?;
    let o = outbox::enqueue(
        c,
        Lane::Alarm,
        "alarm",
        &at,
        &serde_json::json!({ "event": id }),
    )?;
    Ok((id, o))
}

fn count(c: &Connection, sql: &str) -> Result<i64, StoreError> {
    Ok(c.query_row(sql, [], |r| r.get(0))?)
}

#[tokio::test]
async fn record_and_outbox_row_commit_together() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::Rejected(e.to_string()))?;
    let store = Store::open(dir.path())?;
    let (id, o) = store
        .write(Durability::Acknowledged, |c| {
            record_with_outbox(c, "alarm.raised")
        })
        .await?;
    assert_eq!(o.seq, 1);
    let (events, rows) = store
        .read(|c| {
            Ok((
                count(c, "SELECT count(*) FROM events")?,
                count(c, "SELECT count(*) FROM outbox")?,
            ))
        })
        .await?;
    assert_eq!((events, rows), (1, 1));
    let got = store.read(move |c| events::get(c, id)).await?;
    assert_eq!(got.map(|e| e.actor), Some(Some("张三".to_owned())));
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn a_failing_job_rolls_back_record_and_outbox_alone() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::Rejected(e.to_string()))?;
    let store = Store::open(dir.path())?;
    // Queue three jobs at once so they share one batch; the middle one fails
    // after writing both its record and its outbox row.
    let a = store.write(Durability::Acknowledged, |c| record_with_outbox(c, "a"));
    let b = store.write(Durability::Acknowledged, |c| {
        record_with_outbox(c, "b")?;
        Err::<(), _>(StoreError::Rejected("refused after writing".into()))
    });
    let c = store.write(Durability::Acknowledged, |c| record_with_outbox(c, "c"));
    let (a, b, c) = tokio::join!(a, b, c);
    assert!(a.is_ok() && c.is_ok());
    assert!(matches!(b, Err(StoreError::Rejected(_))));
    let kinds = store
        .read(|c| {
            Ok(events::recent(c, 10)?
                .into_iter()
                .map(|e| e.kind)
                .collect::<Vec<_>>())
        })
        .await?;
    assert_eq!(kinds, ["c", "a"]);
    let (rows, seqs) = store
        .read(|c| {
            let mut st = c.prepare("SELECT seq FROM outbox ORDER BY seq")?;
            let seqs = st
                .query_map([], |r| r.get::<_, i64>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((seqs.len(), seqs))
        })
        .await?;
    assert_eq!(rows, 2);
    // The rolled-back job's sequence number was rolled back too: no gap.
    assert_eq!(seqs, [1, 2]);
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn sequence_numbers_are_per_lane() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::Rejected(e.to_string()))?;
    let store = Store::open(dir.path())?;
    let seqs = store
        .write(Durability::Bulk, |c| {
            let at = now_rfc3339();
            let j = serde_json::json!({});
            Ok([
                outbox::enqueue(c, Lane::Alarm, "alarm", &at, &j)?.seq,
                outbox::enqueue(c, Lane::Summary, "summary", &at, &j)?.seq,
                outbox::enqueue(c, Lane::Alarm, "alarm", &at, &j)?.seq,
                outbox::enqueue(c, Lane::Summary, "summary", &at, &j)?.seq,
            ])
        })
        .await?;
    assert_eq!(seqs, [1, 1, 2, 2]);
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn pending_rows_come_most_urgent_lane_first_skipping_the_excluded() -> Result<(), StoreError>
{
    let dir = tempfile::tempdir().map_err(|e| StoreError::Rejected(e.to_string()))?;
    let store = Store::open(dir.path())?;
    let ids = store
        .write(Durability::Bulk, |c| {
            let at = now_rfc3339();
            let j = serde_json::json!({});
            Ok([
                outbox::enqueue(c, Lane::Summary, "summary", &at, &j)?.id,
                outbox::enqueue(c, Lane::Checkin, "checkin", &at, &j)?.id,
                outbox::enqueue(c, Lane::Alarm, "alarm", &at, &j)?.id,
                outbox::enqueue(c, Lane::Hazard, "hazard", &at, &j)?.id,
                outbox::enqueue(c, Lane::Alarm, "alarm", &at, &j)?.id,
            ])
        })
        .await?;
    let [summary, checkin, alarm1, hazard, alarm2] = ids;
    let all = store
        .read(|c| outbox::pending(c, &[], 10, i64::MAX))
        .await?;
    assert_eq!(
        all.iter().map(|p| p.id).collect::<Vec<_>>(),
        [alarm1, alarm2, hazard, checkin, summary]
    );
    let some = store
        .read(move |c| outbox::pending(c, &[alarm1, checkin], 2, i64::MAX))
        .await?;
    assert_eq!(
        some.iter().map(|p| p.id).collect::<Vec<_>>(),
        [alarm2, hazard]
    );
    store
        .write(Durability::Bulk, move |c| {
            outbox::mark_sent(c, &[alarm2, hazard], &now_rfc3339())
        })
        .await?;
    let rest = store
        .read(|c| outbox::pending(c, &[], 10, i64::MAX))
        .await?;
    assert_eq!(
        rest.iter().map(|p| p.id).collect::<Vec<_>>(),
        [alarm1, checkin, summary]
    );
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn a_commit_that_adds_to_the_outbox_wakes_the_sync_task() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::Rejected(e.to_string()))?;
    let store = Store::open(dir.path())?;
    let woken = |store: &Store| {
        let s = store.clone();
        async move {
            tokio::time::timeout(Duration::from_millis(200), s.outbox_added())
                .await
                .is_ok()
        }
    };
    // Rows without outbox rows: no wake-up.
    store
        .write(Durability::Bulk, |c| {
            events::insert(c, &now_rfc3339(), &event("x"))
        })
        .await?;
    assert!(!woken(&store).await);
    // A job whose outbox row is rolled back: none either.
    let failed = store
        .write(Durability::Acknowledged, |c| {
            record_with_outbox(c, "x")?;
            Err::<(), _>(StoreError::Rejected("no".into()))
        })
        .await;
    assert!(failed.is_err());
    assert!(!woken(&store).await);
    // A committed outbox row: woken, once.
    store
        .write(Durability::Acknowledged, |c| record_with_outbox(c, "x"))
        .await?;
    assert!(woken(&store).await);
    assert!(!woken(&store).await);
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn full_disk_is_an_error_the_writer_survives() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::Rejected(e.to_string()))?;
    let store = Store::open(dir.path())?;
    // Cap the file at its current size: the next page allocation fails with
    // SQLITE_FULL, exactly as on a full disk.
    store
        .write(Durability::Bulk, |c| {
            let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            let _: i64 = c.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get(0)
            })?;
            Ok(())
        })
        .await?;
    let big = "x".repeat(64 * 1024);
    let r = store
        .write(Durability::Acknowledged, move |c| {
            let at = now_rfc3339();
            for _ in 0..8 {
                events::insert(
                    c,
                    &at,
                    &NewEvent {
                        detail: serde_json::json!(big),
                        ..event("big")
                    },
                )?;
            }
            Ok(())
        })
        .await;
    assert!(matches!(r, Err(StoreError::DiskFull)), "{r:?}");
    assert!(store.disk_full(), "the full disk is not reported");
    assert_eq!(store.refused_for_full_disk(), 1);
    // A write that changes nothing commits on a full disk too: it proves
    // nothing about space.
    store.write(Durability::Bulk, |_| Ok(())).await?;
    assert!(store.disk_full(), "an empty commit cleared the full disk");
    // A small record batched with a failing big one: whatever the answer,
    // it must match what is on disk ("ok" means saved, an error means not).
    let big = "x".repeat(512 * 1024);
    let small = store.write(Durability::Acknowledged, |c| record_with_outbox(c, "small"));
    let huge = store.write(Durability::Acknowledged, move |c| {
        events::insert(
            c,
            &now_rfc3339(),
            &NewEvent {
                detail: serde_json::json!(big),
                ..event("big")
            },
        )
    });
    let (small, huge) = tokio::join!(small, huge);
    assert!(huge.is_err());
    let saved = store
        .read(|c| count(c, "SELECT count(*) FROM events WHERE kind = 'small'"))
        .await?;
    assert_eq!(
        saved,
        i64::from(small.is_ok()),
        "answer {small:?} but {saved} rows on disk"
    );
    // Space returns: the same store takes writes again.
    store
        .write(Durability::Bulk, |c| {
            let _: i64 = c.query_row("PRAGMA max_page_count = 1073741823", [], |r| r.get(0))?;
            Ok(())
        })
        .await?;
    store
        .write(Durability::Acknowledged, |c| record_with_outbox(c, "after"))
        .await?;
    assert!(!store.disk_full(), "the full disk is still reported");
    let n = store
        .read(|c| count(c, "SELECT count(*) FROM events WHERE kind = 'big'"))
        .await?;
    assert_eq!(n, 0, "nothing of the failed record may remain");
    store.close().await;
    Ok(())
}

#[test]
fn a_file_that_is_not_a_database_is_named_in_the_error() -> Result<(), std::io::Error> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(DB_FILE);
    std::fs::write(&path, vec![0x5a; 8192])?;
    let err = Store::open(dir.path()).err();
    let msg = err.as_ref().map(ToString::to_string).unwrap_or_default();
    assert!(matches!(err, Some(StoreError::Corrupt { .. })), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("move the file aside"), "{msg}");
    Ok(())
}

#[test]
fn a_data_dir_that_cannot_be_made_is_named() -> Result<(), std::io::Error> {
    let file = tempfile::NamedTempFile::new()?;
    let dir = file.path().join("data");
    let err = Store::open(&dir).err();
    let msg = err.as_ref().map(ToString::to_string).unwrap_or_default();
    assert!(matches!(err, Some(StoreError::DataDir { .. })), "{msg}");
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    Ok(())
}

#[tokio::test]
async fn reopening_keeps_the_epoch_and_sequence() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::Rejected(e.to_string()))?;
    async fn epoch(s: &Store) -> Result<String, StoreError> {
        s.read(|c| {
            Ok(
                c.query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
    }
    let store = Store::open(dir.path())?;
    let first = epoch(&store).await?;
    store
        .write(Durability::Acknowledged, |c| record_with_outbox(c, "a"))
        .await?;
    store.close().await;
    let store = Store::open(dir.path())?;
    assert_eq!(epoch(&store).await?, first);
    let (_, o) = store
        .write(Durability::Acknowledged, |c| record_with_outbox(c, "b"))
        .await?;
    assert_eq!(o.seq, 2);
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn retention_drops_old_data_and_only_summaries_over_the_cap() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::Rejected(e.to_string()))?;
    let store = Store::open(dir.path())?;
    let now = SystemTime::now();
    let now_ms = i64::try_from(
        now.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
    )
    .unwrap_or(0);
    let day_ms = 24 * 3600 * 1000;
    let pruned = store
        .write(Durability::Bulk, move |c| {
            for age_days in [0, 5, 100] {
                c.execute(
                    "INSERT INTO readings(channel, at_ms, value, state) VALUES ('ch4', ?1, 0.3, 'ok')",
                    [now_ms - age_days * day_ms],
                )?;
            }
            let at = now_rfc3339();
            let body = serde_json::json!({ "pad": "y".repeat(1000) });
            for i in 0..30 {
                let lane = if i % 3 == 0 { Lane::Alarm } else { Lane::Summary };
                outbox::enqueue(c, lane, "x", &at, &body)?;
            }
            let policy = Policy {
                raw_readings: Duration::from_secs(92 * 24 * 3600),
                aggregates: Duration::from_secs(731 * 24 * 3600),
                outbox_cap_bytes: 15_000,
                photos: Duration::from_secs(365 * 24 * 3600),
            };
            retention::prune(c, &policy, now, retention::CHUNK)
        })
        .await?;
    assert_eq!(pruned.readings, 1);
    // 10 alarms and 20 summaries of ~1.1 KB against a 15 000-byte cap:
    // exactly the oldest 16 summaries make room, and no alarm goes.
    assert_eq!(
        pruned.dropped_summaries, 16,
        "only as many summaries as needed, and never an alarm"
    );
    let backlog = store.read(outbox::backlog).await?;
    assert_eq!(
        backlog.pending, 15,
        "14 kept and the gap record announcing the 16"
    );
    assert!(backlog.bytes <= 15_000, "{backlog:?}");
    assert_eq!(backlog.dropped_summaries, 16);
    let oldest_kept = store
        .read(|c| count(c, "SELECT min(seq) FROM outbox WHERE lane = 3"))
        .await?;
    assert_eq!(oldest_kept, 17, "the oldest went first");
    let alarms = store
        .read(|c| count(c, "SELECT count(*) FROM outbox WHERE lane = 0"))
        .await?;
    assert_eq!(alarms, 10, "alarms are never dropped, even over the cap");
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn readers_do_not_wait_for_a_stalled_writer() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::Rejected(e.to_string()))?;
    let store = Store::open(dir.path())?;
    store
        .write(Durability::Acknowledged, |c| record_with_outbox(c, "a"))
        .await?;
    // The writer is held inside an open transaction until we let it go.
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let stalled = store.clone();
    let stall = tokio::spawn(async move {
        stalled
            .write(Durability::Bulk, move |c| {
                events::insert(c, &now_rfc3339(), &event("slow"))?;
                let _ = started_tx.send(());
                let _ = release_rx.recv();
                Ok(())
            })
            .await
    });
    tokio::task::spawn_blocking(move || started_rx.recv())
        .await
        .map_err(|e| StoreError::Rejected(e.to_string()))?
        .map_err(|e| StoreError::Rejected(e.to_string()))?;
    let n = store
        .read(|c| count(c, "SELECT count(*) FROM events"))
        .await?;
    assert_eq!(n, 1, "the uncommitted event is invisible");
    assert!(
        !stall.is_finished(),
        "the read completed while the writer was held"
    );
    let _ = release_tx.send(());
    stall
        .await
        .map_err(|e| StoreError::Rejected(e.to_string()))??;
    let n = store
        .read(|c| count(c, "SELECT count(*) FROM events"))
        .await?;
    assert_eq!(n, 2);
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn summaries_over_the_cap_are_dropped_as_they_come() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::Rejected(e.to_string()))?;
    let store = Store::open(dir.path())?;
    let backlog = store
        .write(Durability::Bulk, |c| {
            outbox::set_cap(c, 20_000)?;
            let at = now_rfc3339();
            let body = serde_json::json!({ "pad": "z".repeat(1000) });
            for i in 0..60 {
                let lane = if i % 4 == 0 {
                    Lane::Checkin
                } else {
                    Lane::Summary
                };
                outbox::enqueue(c, lane, "x", &at, &body)?;
            }
            outbox::backlog(c)
        })
        .await?;
    assert!(backlog.bytes <= 20_000, "{backlog:?}");
    assert!(backlog.dropped_summaries > 0);
    let checkins = store
        .read(|c| count(c, "SELECT count(*) FROM outbox WHERE lane = 2"))
        .await?;
    assert_eq!(checkins, 15, "check-ins are never dropped");
    store.close().await;
    Ok(())
}

/// Issue 14, item 1: no outbox row is published before a durable commit
/// covers it, whoever wrote it and however. The writer makes every commit
/// that added outbox rows durable (a `NORMAL` one by syncing the WAL after
/// it), and only then moves the mark the sync task reads up to.
#[tokio::test]
async fn outbox_rows_are_durable_before_anyone_may_publish_them() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::Rejected(e.to_string()))?;
    let store = Store::open(dir.path())?;
    assert_eq!(store.durable_outbox(), 0);
    // A bulk write without outbox rows: no sync is needed, none is made.
    store
        .write(Durability::Bulk, |c| {
            crate::store::set_meta(c, "test", "1")?;
            Ok(())
        })
        .await?;
    assert_eq!(store.outbox_syncs_after_bulk(), 0);
    // Every writer of outbox rows does it through `outbox::enqueue` inside
    // `Store::write`; with bulk durability (head-counts, summaries) the
    // commit is made durable after all, before the mark moves.
    let j = serde_json::json!({});
    let bulk = store
        .write(Durability::Bulk, move |c| {
            Ok(outbox::enqueue(c, Lane::Summary, "summary", &now_rfc3339(), &j)?.id)
        })
        .await?;
    assert_eq!(store.outbox_syncs_after_bulk(), 1);
    assert_eq!(store.durable_outbox(), bulk);
    // An acknowledged write is durable by its own commit: no extra sync.
    let j = serde_json::json!({});
    let acked = store
        .write(Durability::Acknowledged, move |c| {
            Ok(outbox::enqueue(c, Lane::Alarm, "alarm", &now_rfc3339(), &j)?.id)
        })
        .await?;
    assert_eq!(store.outbox_syncs_after_bulk(), 1);
    assert_eq!(store.durable_outbox(), acked);
    // What the sync task reads stops at the mark.
    let upto = store
        .read(move |c| outbox::pending(c, &[], 10, bulk))
        .await?;
    assert_eq!(upto.iter().map(|p| p.id).collect::<Vec<_>>(), [bulk]);
    store.close().await;
    // Reopened, the mark covers what is on disk.
    let store = Store::open(dir.path())?;
    assert_eq!(store.durable_outbox(), acked);
    store.close().await;
    Ok(())
}

/// Issue 14, item 4: an older copy of the database put back (a backup
/// restored) would number records the county already has under new ids: it
/// gets a new epoch instead, with an event saying why.
#[tokio::test]
async fn a_restored_backup_gets_a_new_epoch_never_reused_numbers() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::Rejected(e.to_string()))?;
    let enqueue = |store: Store, n: usize| async move {
        for _ in 0..n {
            let j = serde_json::json!({});
            store
                .write(Durability::Acknowledged, move |c| {
                    outbox::enqueue(c, Lane::Checkin, "checkin", &now_rfc3339(), &j)
                })
                .await?;
        }
        Ok::<_, StoreError>(store)
    };
    let store = enqueue(Store::open(dir.path())?, 2).await?;
    let epoch = store.read(outbox::epoch).await?;
    store.close().await;
    // A backup as `sqlite3 .backup` makes it: one consistent file.
    let db = rusqlite::Connection::open(dir.path().join(super::DB_FILE))?;
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    drop(db);
    let backup = dir.path().join("backup.db");
    std::fs::copy(dir.path().join(super::DB_FILE), &backup)
        .map_err(|e| StoreError::Rejected(e.to_string()))?;
    let store = enqueue(Store::open(dir.path())?, 3).await?;
    assert_eq!(
        store.read(outbox::epoch).await?,
        epoch,
        "a restart keeps it"
    );
    store.close().await;
    // The backup is put back.
    std::fs::copy(&backup, dir.path().join(super::DB_FILE))
        .map_err(|e| StoreError::Rejected(e.to_string()))?;
    for ext in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("{}{ext}", super::DB_FILE)));
    }
    let store = Store::open(dir.path())?;
    let renewed = store.read(outbox::epoch).await?;
    assert_ne!(renewed, epoch, "numbers 3 on would be given twice");
    let events = store
        .read(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM events WHERE kind = 'store.epoch_renewed'",
                [],
                |r| r.get::<_, i64>(0),
            )?)
        })
        .await?;
    assert_eq!(events, 1);
    store.close().await;
    // And it stays: the next start is no restore.
    let store = Store::open(dir.path())?;
    assert_eq!(store.read(outbox::epoch).await?, renewed);
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn summaries_dropped_at_the_cap_are_announced_as_a_gap() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::Rejected(e.to_string()))?;
    let store = Store::open(dir.path())?;
    let gaps = store
        .write(Durability::Bulk, |c| {
            outbox::set_station(c, "c1", "s1")?;
            let big = serde_json::json!({ "pad": "x".repeat(1000) });
            for _ in 0..10 {
                outbox::enqueue(c, Lane::Summary, "summary", &now_rfc3339(), &big)?;
            }
            // Room for about five: the oldest five go.
            outbox::set_cap(c, 5 * 1100)?;
            outbox::enqueue(c, Lane::Summary, "summary", &now_rfc3339(), &big)?;
            let mut st =
                c.prepare("SELECT seq, payload FROM outbox WHERE kind = 'gap' ORDER BY seq")?;
            let rows: Vec<(i64, String)> = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await?;
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let (seq, body) = &gaps[0];
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    assert_eq!(
        (
            v["from_seq"].as_i64(),
            v["reason"].as_str(),
            v["station"].as_str()
        ),
        (Some(1), Some("outbox_cap"), Some("s1")),
        "{v}"
    );
    let to = v["to_seq"].as_i64().unwrap_or_default();
    assert!(
        to >= 5 && *seq > 11,
        "the gap 1..{to} is itself numbered after: {seq}"
    );
    assert_eq!(
        outbox::ranges(&[1, 2, 3, 7, 8, 10]),
        [(1, 3), (7, 8), (10, 10)]
    );
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn photos_of_hazards_closed_long_ago_are_removed_and_shared_ones_kept()
-> Result<(), StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::Rejected(e.to_string()))?;
    let store = Store::open(dir.path())?;
    let photo = |name: &str| {
        let (path, _) =
            crate::photos::path_of(dir.path(), name).unwrap_or_else(|| panic!("{name}"));
        let _ = std::fs::create_dir_all(path.parent().unwrap_or(dir.path()));
        std::fs::write(&path, b"x").unwrap();
        path
    };
    let (old, shared) = (
        format!("{}.jpg", "a".repeat(64)),
        format!("{}.jpg", "b".repeat(64)),
    );
    let (old_file, shared_file) = (photo(&old), photo(&shared));
    let (o, sh) = (old.clone(), shared.clone());
    store
        .write(Durability::Acknowledged, move |c| {
            for (ticket, photo, status, updated) in [
                ("AAAAAA", &o, "closed", "2020-01-01T00:00:00.000Z"),
                ("BBBBBB", &sh, "rejected", "2020-01-01T00:00:00.000Z"),
                ("CCCCCC", &sh, "assigned", "2020-01-01T00:00:00.000Z"),
            ] {
                c.execute(
                    "INSERT INTO hazards(ticket, category, location, grade, description, photo, status, reported_at, updated_at)
                     VALUES (?1, 'roof', 'x', 'general', 'x', ?2, ?3, ?4, ?4)",
                    (ticket, photo, status, updated),
                )?;
            }
            Ok(())
        })
        .await?;
    let removed =
        super::retention::prune_photos(&store, dir.path(), Duration::from_secs(365 * 24 * 3600))
            .await;
    assert_eq!(removed, 1);
    assert!(!old_file.exists(), "the closed hazard's photo went");
    assert!(shared_file.exists(), "an open hazard still shows it");
    let left = store
        .read(|c| count(c, "SELECT count(*) FROM hazards WHERE photo IS NOT NULL"))
        .await?;
    assert_eq!(left, 1, "only the open hazard still names a photo");
    store.close().await;
    Ok(())
}
