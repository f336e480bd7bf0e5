//! PostgreSQL: the schema's migrations, and the batched writes of ingest.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::config::Config;

/// The migrations, in order; each runs once, in a transaction, and is
/// recorded in `schema_migrations`.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_messages.sql")),
    (2, include_str!("../migrations/0002_dashboard.sql")),
    (3, include_str!("../migrations/0003_oversight.sql")),
    (4, include_str!("../migrations/0004_notice_reads.sql")),
];

/// The connection settings of `cfg`, with the password from its file.
pub fn pg_config(cfg: &Config) -> anyhow::Result<tokio_postgres::Config> {
    let mut pg: tokio_postgres::Config = cfg.postgres.url.parse()?;
    if let Some(f) = &cfg.postgres.password_file {
        let pw = std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        pg.password(pw.trim_end_matches(['\r', '\n']));
    }
    if pg.get_application_name().is_none() {
        pg.application_name(format!("pithead-county {}", cfg.mqtt.client_id));
    }
    Ok(pg)
}

/// A pool of `size` connections.
pub fn pool(cfg: &Config, size: usize) -> anyhow::Result<Pool> {
    let mgr = Manager::from_config(
        pg_config(cfg)?,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(mgr).max_size(size.max(1)).build()?)
}

/// Applies the migrations not yet applied; several instances starting at
/// once take turns (an advisory lock).
pub async fn migrate(client: &mut tokio_postgres::Client) -> anyhow::Result<Vec<i32>> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(7041962)", &[])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let done: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(|e| anyhow::anyhow!("migration {version}: {e}"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await?;
        applied.push(*version);
    }
    tx.commit().await?;
    Ok(applied)
}

/// Puts the registry's stations in `stations` (names and mines updated,
/// marked registered); stations no longer listed stay, unregistered.
pub async fn register(client: &tokio_postgres::Client, cfg: &Config) -> anyhow::Result<()> {
    let county: Vec<&str> = cfg.stations.iter().map(|s| s.county.as_str()).collect();
    let id: Vec<&str> = cfg.stations.iter().map(|s| s.id.as_str()).collect();
    let name: Vec<&str> = cfg.stations.iter().map(|s| s.name.as_str()).collect();
    let mine: Vec<&str> = cfg.stations.iter().map(|s| s.mine.as_str()).collect();
    client
        .execute(
            "UPDATE stations SET registered = false
             WHERE (county, station) NOT IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            &[&county, &id],
        )
        .await?;
    client
        .execute(
            "INSERT INTO stations (county, station, name, mine, registered)
             SELECT c, s, n, m, true FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t(c, s, n, m)
             ON CONFLICT (county, station) DO UPDATE
                 SET name = EXCLUDED.name, mine = EXCLUDED.mine, registered = true",
            &[&county, &id, &name, &mine],
        )
        .await?;
    Ok(())
}

/// One message as it is stored.
#[derive(Debug, Clone)]
pub struct Row {
    /// Globally unique.
    pub msg_id: String,
    /// County id.
    pub county: String,
    /// Station id.
    pub station: String,
    /// The station database's id.
    pub epoch: String,
    /// Lane name.
    pub lane: String,
    /// Number in the lane.
    pub seq: i64,
    /// Message kind.
    pub kind: String,
    /// RFC 3339.
    pub created_at: String,
    /// The record.
    pub body: serde_json::Value,
}

/// A retained `status` of a station.
#[derive(Debug, Clone)]
pub struct Presence {
    /// County id.
    pub county: String,
    /// Station id.
    pub station: String,
    /// `online` or `offline`.
    pub state: String,
    /// RFC 3339.
    pub at: String,
    /// The station's version.
    pub version: String,
    /// The backlog it reported with an `online` status, and when.
    pub backlog: Option<(serde_json::Value, String)>,
}

/// What one batch holds.
#[derive(Debug, Default)]
pub struct Batch {
    /// Station messages.
    pub rows: Vec<Row>,
    /// Presence changes.
    pub presence: Vec<Presence>,
    /// What could not be read: topic, reason, payload.
    pub rejected: Vec<(String, String, Vec<u8>)>,
}

/// What a written batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// New messages.
    pub inserted: u64,
    /// Messages already stored (a redelivery, a duplicate).
    pub duplicates: u64,
    /// Rejected messages kept.
    pub rejected: u64,
}

/// Writes `batch` in one transaction: the messages (a duplicate `msg_id`
/// is harmless), the stations they came from, presence, and what was
/// rejected. Nothing of it is acknowledged to the broker before this
/// returns `Ok`.
pub async fn write(
    client: &mut tokio_postgres::Client,
    batch: &Batch,
) -> Result<Written, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let mut w = Written::default();
    if !batch.rows.is_empty() {
        let r = &batch.rows;
        let msg_id: Vec<&str> = r.iter().map(|x| x.msg_id.as_str()).collect();
        let county: Vec<&str> = r.iter().map(|x| x.county.as_str()).collect();
        let station: Vec<&str> = r.iter().map(|x| x.station.as_str()).collect();
        let epoch: Vec<&str> = r.iter().map(|x| x.epoch.as_str()).collect();
        let lane: Vec<&str> = r.iter().map(|x| x.lane.as_str()).collect();
        let seq: Vec<i64> = r.iter().map(|x| x.seq).collect();
        let kind: Vec<&str> = r.iter().map(|x| x.kind.as_str()).collect();
        let created: Vec<&str> = r.iter().map(|x| x.created_at.as_str()).collect();
        let body: Vec<&serde_json::Value> = r.iter().map(|x| &x.body).collect();
        // Stations heard from: known ones get their last-seen time, unknown
        // ones a row of their own, unregistered. Only rows not seen for 5 s
        // are touched, in one order: N instances writing the same
        // stations' messages at once would otherwise lock each station row
        // in every batch, in the order their batch happened to hold them,
        // and deadlock (1 s each, found by the ingest bench:
        // 27 deadlocks in a 300,000-message drain with three instances).
        tx.execute(
            "INSERT INTO stations (county, station, registered, first_seen, last_seen)
             SELECT c, s, false, now(), now()
             FROM (SELECT DISTINCT c, s FROM unnest($1::text[], $2::text[]) AS t(c, s)) t
             WHERE NOT EXISTS (SELECT 1 FROM stations st WHERE st.county = t.c AND st.station = t.s
                               AND st.last_seen > now() - interval '5 seconds')
             ORDER BY c, s
             ON CONFLICT (county, station) DO UPDATE
                 SET last_seen = now(), first_seen = coalesce(stations.first_seen, now())",
            &[&county, &station],
        )
        .await?;
        w.inserted = tx
            .execute(
                "INSERT INTO messages (msg_id, county, station, epoch, lane, seq, kind, created_at, body, registered)
                 SELECT t.*, coalesce(st.registered, false)
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                             $7::text[], $8::text[]::timestamptz[], $9::jsonb[])
                      AS t(msg_id, county, station, epoch, lane, seq, kind, created_at, body)
                 LEFT JOIN stations st ON st.county = t.county AND st.station = t.station
                 ON CONFLICT (msg_id) DO NOTHING",
                &[&msg_id, &county, &station, &epoch, &lane, &seq, &kind, &created, &body],
            )
            .await?;
        w.duplicates = r.len() as u64 - w.inserted;
    }
    for p in &batch.presence {
        // The newest status wins, whatever order they come in.
        tx.execute(
            "INSERT INTO stations (county, station, registered, first_seen, last_seen, presence, presence_at, version)
             VALUES ($1, $2, false, now(), now(), $3, $4::text::timestamptz, $5)
             ON CONFLICT (county, station) DO UPDATE
                 SET presence = EXCLUDED.presence, presence_at = EXCLUDED.presence_at,
                     version = EXCLUDED.version, last_seen = now()
                 WHERE stations.presence_at IS NULL OR stations.presence_at <= EXCLUDED.presence_at",
            &[&p.county, &p.station, &p.state, &p.at, &p.version],
        )
        .await?;
        // A change of state is logged (for the light's downtime); the
        // same state again (a retained status delivered again, the
        // minute's backlog report) is not.
        tx.execute(
            "INSERT INTO presence_log (county, station, state)
             SELECT $1, $2, $3
             WHERE coalesce((SELECT state FROM presence_log WHERE county = $1 AND station = $2
                             ORDER BY at DESC LIMIT 1), '') <> $3",
            &[&p.county, &p.station, &p.state],
        )
        .await?;
        if let Some((backlog, at)) = &p.backlog {
            tx.execute(
                "UPDATE stations SET backlog = $3, backlog_at = $4::text::timestamptz
                 WHERE county = $1 AND station = $2
                   AND (backlog_at IS NULL OR backlog_at <= $4::text::timestamptz)",
                &[&p.county, &p.station, backlog, at],
            )
            .await?;
        }
    }
    for (topic, reason, payload) in &batch.rejected {
        tx.execute(
            "INSERT INTO rejected (topic, reason, payload) VALUES ($1, $2, $3)",
            &[topic, reason, payload],
        )
        .await?;
        w.rejected += 1;
    }
    tx.commit().await?;
    Ok(w)
}

/// Whether `e` is about the data (a bad timestamp, a NUL in a text), not
/// the database: the batch is then written message by message, and what
/// PostgreSQL will not take is rejected with its reason.
fn about_the_data(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"))
}

/// Writes `batch`; when one of its messages cannot be stored as it is, the
/// others still are, and that one is kept in `rejected` with the reason.
pub async fn write_batch(
    client: &mut tokio_postgres::Client,
    batch: Batch,
) -> Result<Written, tokio_postgres::Error> {
    match write(client, &batch).await {
        Ok(w) => Ok(w),
        Err(e) if about_the_data(&e) => {
            tracing::warn!(error = %e, messages = batch.rows.len(), "a batch PostgreSQL will not take as it is: writing it one by one");
            let mut total = Written::default();
            let Batch {
                rows,
                presence,
                mut rejected,
            } = batch;
            for row in rows {
                let one = Batch {
                    rows: vec![row.clone()],
                    ..Batch::default()
                };
                match write(client, &one).await {
                    Ok(w) => {
                        total.inserted += w.inserted;
                        total.duplicates += w.duplicates;
                    }
                    Err(e) if about_the_data(&e) => {
                        let payload = serde_json::to_vec(&serde_json::json!({
                            "msg_id": row.msg_id, "county": row.county, "station": row.station,
                            "epoch": row.epoch, "lane": row.lane, "seq": row.seq, "kind": row.kind,
                            "created_at": row.created_at, "body": row.body,
                        }))
                        .unwrap_or_default();
                        rejected.push((
                            crate::ingest::topic_of(&row),
                            format!(
                                "not storable: {}",
                                e.as_db_error()
                                    .map_or_else(|| e.to_string(), |d| d.message().to_owned())
                            ),
                            payload,
                        ));
                    }
                    Err(e) => return Err(e),
                }
            }
            for p in presence {
                let one = Batch {
                    presence: vec![p.clone()],
                    ..Batch::default()
                };
                match write(client, &one).await {
                    Ok(_) => {}
                    Err(e) if about_the_data(&e) => rejected.push((
                        pithead_core::protocol::topic(&p.county, &p.station, "status"),
                        format!("not storable: {e}"),
                        Vec::new(),
                    )),
                    Err(e) => return Err(e),
                }
            }
            let rest = Batch {
                rejected,
                ..Batch::default()
            };
            let w = write(client, &rest).await?;
            total.rejected += w.rejected;
            Ok(total)
        }
        Err(e) => Err(e),
    }
}
