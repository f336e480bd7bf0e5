//! A writer process killed with SIGKILL at arbitrary points loses nothing it
//! acknowledged, and never leaves a record without its outbox row.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of the tests: a failed unwrap is a failed test"
)]

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

fn check_database(path: &std::path::Path, acked: &BTreeSet<(i64, String)>) {
    let db = rusqlite::Connection::open(path).unwrap_or_else(|e| panic!("reopen: {e}"));
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let count = |sql: &str| -> i64 {
        db.query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    for (id, msg_id) in acked {
        let n: i64 = db
            .query_row(
                "SELECT count(*) FROM events e JOIN outbox o ON json_extract(o.payload, '$.event') = e.id
                 WHERE e.id = ?1 AND o.msg_id = ?2",
                (id, msg_id),
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            n, 1,
            "acknowledged record {id} ({msg_id}) is missing after SIGKILL"
        );
    }
    // No record without its outbox row, no outbox row without its record.
    assert_eq!(
        count(
            "SELECT count(*) FROM events e WHERE kind = 'test.record' AND NOT EXISTS
               (SELECT 1 FROM outbox o WHERE json_extract(o.payload, '$.event') = e.id)"
        ),
        0
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM outbox o WHERE NOT EXISTS
               (SELECT 1 FROM events e WHERE e.id = json_extract(o.payload, '$.event'))"
        ),
        0
    );
    // Sequence numbers of each lane run from 1 without a gap.
    assert_eq!(
        count(
            "SELECT count(*) FROM (SELECT lane FROM outbox GROUP BY lane HAVING max(seq) != count(*) OR min(seq) != 1)"
        ),
        0
    );
}

#[test]
fn sigkill_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = BTreeSet::new();
    // Stop after different numbers of acknowledgements each cycle, so the
    // kill lands at different points of the writer's batches.
    for (cycle, stop_after) in [37usize, 151, 9, 263, 88, 420].into_iter().enumerate() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pithead-store-writer"))
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = 0;
        while seen < stop_after {
            match lines.next() {
                Some(Ok(line)) => {
                    acked.insert(parse(&line));
                    seen += 1;
                }
                other => panic!("writer ended early in cycle {cycle}: {other:?}"),
            }
        }
        child.kill().unwrap_or_else(|e| panic!("SIGKILL: {e}"));
        let status = child.wait().unwrap();
        assert!(!status.success());
        // Everything printed before the kill still counts as acknowledged.
        for line in lines {
            match line {
                Ok(l) if l.starts_with("ack ") => {
                    acked.insert(parse(&l));
                }
                _ => break,
            }
        }
        check_database(&dir.path().join("pithead.db"), &acked);
    }
    assert!(acked.len() >= 968);
}

fn parse(line: &str) -> (i64, String) {
    let mut parts = line.split(' ');
    assert_eq!(parts.next(), Some("ack"), "{line}");
    let id = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    let msg = parts.next().unwrap_or_else(|| panic!("{line}")).to_owned();
    (id, msg)
}
