//! One receiver instance: the county's shared subscription to every
//! station, into PostgreSQL, acknowledged to the broker only once stored.
//!
//! The MQTT task keeps the connection (a persistent session, QoS 1,
//! manual acknowledgements) and hands every publish to the writer; the
//! writer takes whatever has come meanwhile as one batch, commits it, and
//! only then acknowledges each of its messages on the connection it came
//! on. A message whose commit did not happen (a crash, PostgreSQL away, a
//! lost connection) is not acknowledged, and the broker delivers it again,
//! to this instance or another: a duplicate `msg_id` is harmless.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use pithead_core::protocol::{self, Message, StatusMessage};
use rumqttc::{AsyncClient, Event, Packet, Publish, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::{self, Batch, Presence, Row};

/// Largest message read; a station's are at most 128 KiB by default.
const MAX_PACKET: usize = 1024 * 1024;

/// Counters of one instance (Prometheus later; the log now).
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages stored for the first time.
    pub inserted: AtomicU64,
    /// Messages that were stored already (redeliveries, duplicates).
    pub duplicates: AtomicU64,
    /// Messages kept in `rejected`.
    pub rejected: AtomicU64,
    /// Batches committed.
    pub batches: AtomicU64,
    /// Connected to the broker and subscribed.
    pub connected: AtomicBool,
    /// `cmd/resend` asked of stations.
    pub resends: AtomicU64,
}

/// The shared subscription's filter.
pub fn filter(group: &str) -> String {
    format!("$share/{group}/{}", protocol::ALL_STATIONS)
}

/// The topic a stored row came on.
pub fn topic_of(row: &Row) -> String {
    protocol::topic(&row.county, &row.station, &row.kind)
}

/// What one publish is, for the batch.
#[derive(Debug)]
enum Parsed {
    Row(Row),
    Presence(Presence),
    Rejected(String),
}

/// Reads one publish: a station's message, a status, or why neither.
fn parse(p: &Publish) -> Parsed {
    let Some((county, station, kind)) = protocol::parse_topic(&p.topic) else {
        return Parsed::Rejected(format!(
            "topic {:?} is not pithead/v1/COUNTY/STATION/KIND",
            p.topic
        ));
    };
    if kind == "status" {
        return match serde_json::from_slice::<StatusMessage>(&p.payload) {
            Ok(s) if s.county == county && s.station == station => Parsed::Presence(Presence {
                county: s.county,
                station: s.station,
                state: match s.state {
                    protocol::Presence::Online => "online".into(),
                    protocol::Presence::Offline => "offline".into(),
                },
                at: s.at,
                version: s.version,
                backlog: s.backlog.map(|b| {
                    let at = b.at.clone();
                    (serde_json::to_value(b).unwrap_or_default(), at)
                }),
            }),
            Ok(s) => Parsed::Rejected(format!(
                "status names {}/{} on the topic of {county}/{station}",
                s.county, s.station
            )),
            Err(e) => Parsed::Rejected(format!("status: {e}")),
        };
    }
    let m = match Message::parse(&p.payload) {
        Ok(m) => m,
        Err(e) => return Parsed::Rejected(e.to_string()),
    };
    if m.county != county || m.station != station || m.kind != kind {
        return Parsed::Rejected(format!(
            "the envelope says {}/{}/{} on the topic {}",
            m.county, m.station, m.kind, p.topic
        ));
    }
    if m.seq < 1 {
        return Parsed::Rejected(format!("seq {} is not a number from 1", m.seq));
    }
    if m.msg_id.is_empty() || m.msg_id.len() > 64 {
        return Parsed::Rejected("msg_id is empty or longer than 64 characters".into());
    }
    // The body must be its kind's record.
    if let Err(e) = m.body() {
        return Parsed::Rejected(format!("body of the {}: {e}", m.kind));
    }
    Parsed::Row(Row {
        msg_id: m.msg_id,
        county: m.county,
        station: m.station,
        epoch: m.epoch,
        lane: m.lane.name().to_owned(),
        seq: m.seq,
        kind: m.kind,
        created_at: m.created_at,
        body: m.body,
    })
}

/// A publish waiting to be stored, with the connection to acknowledge it on.
#[derive(Debug)]
struct Incoming {
    publish: Publish,
    client: AsyncClient,
}

/// Runs the instance until `shutdown`.
pub async fn run(
    cfg: Arc<Config>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pg = db::pg_config(&cfg)?;
    // The writer's own connection, made (and the schema brought up to
    // date) before anything is taken from the broker.
    let mut client = connect(&pg, &shutdown).await?;
    let applied = db::migrate(&mut client).await?;
    if !applied.is_empty() {
        tracing::info!(?applied, "database migrated");
    }
    db::register(&client, &cfg).await?;
    let (tx, rx) = mpsc::channel::<Incoming>(cfg.ingest.max_batch * 2);
    let writer = tokio::spawn(write_loop(
        client,
        pg.clone(),
        cfg.ingest.max_batch,
        rx,
        Arc::clone(&stats),
        shutdown.clone(),
    ));
    let (current, watching) = tokio::sync::watch::channel(None);
    let signing = match &cfg.commands.signing_key_file {
        Some(f) => Some(crate::commands::signing_key(f).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let resender = tokio::spawn(resend_loop(
        pg,
        signing,
        cfg.ingest.resend_after,
        watching,
        Arc::clone(&stats),
        shutdown.clone(),
    ));
    mqtt_loop(&cfg, tx, &stats, &current, &shutdown).await;
    let _ = writer.await;
    let _ = resender.await;
    Ok(())
}

async fn connect(
    pg: &tokio_postgres::Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<tokio_postgres::Client> {
    let mut wait = Duration::from_millis(250);
    loop {
        match pg.connect(tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::warn!(error = %e, "PostgreSQL connection ended");
                    }
                });
                return Ok(client);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?wait, "cannot reach PostgreSQL");
                tokio::select! {
                    () = shutdown.cancelled() => anyhow::bail!("stopped before PostgreSQL could be reached: {e}"),
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn write_loop(
    mut client: tokio_postgres::Client,
    pg: tokio_postgres::Config,
    max_batch: usize,
    mut rx: mpsc::Receiver<Incoming>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    while let Some(first) = rx.recv().await {
        let mut items = vec![first];
        while items.len() < max_batch {
            match rx.try_recv() {
                Ok(i) => items.push(i),
                Err(_) => break,
            }
        }
        let mut batch = Batch::default();
        for i in &items {
            match parse(&i.publish) {
                Parsed::Row(r) => batch.rows.push(r),
                Parsed::Presence(p) => batch.presence.push(p),
                Parsed::Rejected(reason) => {
                    tracing::warn!(topic = %i.publish.topic, %reason, "message rejected (kept in `rejected`)");
                    batch.rejected.push((
                        i.publish.topic.clone(),
                        reason,
                        i.publish.payload.to_vec(),
                    ));
                }
            }
        }
        // Until it is committed nothing is acknowledged; PostgreSQL away
        // means waiting (the broker keeps the rest).
        let mut wait = Duration::from_millis(250);
        let written = loop {
            if client.is_closed() {
                match connect(&pg, &shutdown).await {
                    Ok(c) => client = c,
                    Err(_) => return,
                }
            }
            let attempt = Batch {
                rows: batch.rows.clone(),
                presence: batch.presence.clone(),
                rejected: batch.rejected.clone(),
            };
            match db::write_batch(&mut client, attempt).await {
                Ok(w) => break w,
                Err(e) => {
                    tracing::warn!(error = %e, messages = items.len(), retry_in = ?wait, "cannot store a batch; it waits, unacknowledged");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        };
        stats
            .inserted
            .fetch_add(written.inserted, Ordering::Relaxed);
        stats
            .duplicates
            .fetch_add(written.duplicates, Ordering::Relaxed);
        stats
            .rejected
            .fetch_add(written.rejected, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(?written, "batch stored");
        for i in items {
            // On a connection that has gone, the ack goes nowhere: the
            // broker delivers the message again, and it is a duplicate.
            let _ = i.client.ack(&i.publish).await;
        }
    }
}

async fn mqtt_loop(
    cfg: &Config,
    tx: mpsc::Sender<Incoming>,
    stats: &Stats,
    current: &tokio::sync::watch::Sender<Option<AsyncClient>>,
    shutdown: &CancellationToken,
) {
    // `validate` checked the address.
    let mut opts = crate::commands::options(cfg, cfg.mqtt.client_id.clone());
    opts.set_clean_session(false);
    opts.set_manual_acks(true);
    opts.set_max_packet_size(MAX_PACKET, 64 * 1024);
    let topic = filter(&cfg.mqtt.group);
    let mut backoff = Duration::from_millis(250);
    'connections: loop {
        let (client, mut events) = AsyncClient::new(opts.clone(), cfg.ingest.max_batch.max(64));
        // Publishes not yet handed to the writer. The event loop is polled
        // all the while: it is what carries the writer's acknowledgements
        // to the broker, so waiting on a full writer queue here instead
        // would wait for ever (the writer waits for its acks to go out).
        // The broker's in-flight window bounds what piles up here.
        let mut pending: std::collections::VecDeque<Incoming> = std::collections::VecDeque::new();
        loop {
            let ev = tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = client.try_disconnect();
                    break 'connections;
                }
                permit = tx.reserve(), if !pending.is_empty() => {
                    match (permit, pending.pop_front()) {
                        (Ok(permit), Some(item)) => permit.send(item),
                        (Err(_), _) => break 'connections,
                        (Ok(_), None) => {}
                    }
                    continue;
                }
                ev = events.poll() => ev,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = Duration::from_millis(250);
                    tracing::info!(session_present = ack.session_present, %topic, "connected to the broker");
                    // Subscribed again also when the broker kept the
                    // session: a broker restarted from its persistence may
                    // keep the session but not its shared subscription
                    // (Mosquitto 2.0 does so), and then every message would
                    // go nowhere. Again is harmless. The stations' retained
                    // status is not given to a shared subscription, so
                    // every instance follows it on its own.
                    let status = protocol::topic("+", "+", "status");
                    if let Err(e) = client.try_subscribe_many([
                        rumqttc::SubscribeFilter::new(topic.clone(), QoS::AtLeastOnce),
                        rumqttc::SubscribeFilter::new(status, QoS::AtLeastOnce),
                    ]) {
                        tracing::warn!(error = %e, "cannot subscribe");
                    }
                    let _ = current.send(Some(client.clone()));
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    stats.connected.store(true, Ordering::Relaxed);
                    tracing::info!(%topic, "subscribed");
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    pending.push_back(Incoming {
                        publish: p,
                        client: client.clone(),
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    stats.connected.store(false, Ordering::Relaxed);
                    let _ = current.send(None);
                    tracing::warn!(error = %e, retry_in = ?backoff, "broker connection lost");
                    tokio::select! {
                        () = shutdown.cancelled() => break 'connections,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue 'connections;
                }
            }
        }
    }
    stats.connected.store(false, Ordering::Relaxed);
}

/// A missing range: (county, station, epoch, lane, from, to).
type Hole = (String, String, String, String, i64, i64);

/// Asks stations again for numbers nobody explains: a range missing for
/// `after` (a gap no `gap` record covers) is asked for with `cmd/resend`,
/// and again every four times `after` while it stays open. Only one
/// instance asks in each round (an advisory lock), so N instances do not
/// ask N times.
async fn resend_loop(
    pg: tokio_postgres::Config,
    signing: Option<ed25519_dalek::SigningKey>,
    after: Duration,
    current: tokio::sync::watch::Receiver<Option<AsyncClient>>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    let mut seen: std::collections::HashMap<
        Hole,
        (tokio::time::Instant, Option<tokio::time::Instant>),
    > = std::collections::HashMap::new();
    let mut client: Option<tokio_postgres::Client> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(after / 2) => {}
        }
        if client
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
        {
            client = pg
                .connect(tokio_postgres::NoTls)
                .await
                .ok()
                .map(|(c, conn)| {
                    tokio::spawn(conn);
                    c
                });
        }
        let Some(db) = client.as_mut() else { continue };
        let holes = async {
            let tx = db.transaction().await?;
            let leader: bool = tx
                .query_one("SELECT pg_try_advisory_xact_lock(7041963)", &[])
                .await?
                .get(0);
            if !leader {
                return Ok::<_, tokio_postgres::Error>(None);
            }
            let rows = tx
                .query(
                    "SELECT county, station, epoch, lane, from_seq, to_seq FROM lane_gaps
                     WHERE explained_by IS NULL ORDER BY county, station, lane, from_seq LIMIT 1000",
                    &[],
                )
                .await?;
            tx.commit().await?;
            Ok(Some(rows))
        }
        .await;
        let rows = match holes {
            Ok(Some(rows)) => rows,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for gaps");
                client = None;
                continue;
            }
        };
        let now = tokio::time::Instant::now();
        let open: std::collections::HashSet<Hole> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
            .collect();
        seen.retain(|h, _| open.contains(h));
        let Some(mqtt) = current.borrow().clone() else {
            continue;
        };
        for hole in open {
            let (first, asked) = *seen.entry(hole.clone()).or_insert((now, None));
            let due = match asked {
                None => now.duration_since(first) >= after,
                Some(at) => now.duration_since(at) >= after * 4,
            };
            if !due {
                continue;
            }
            let (county, station, epoch, lane, from_seq, to_seq) = &hole;
            let cmd = protocol::Resend {
                schema: protocol::SCHEMA.to_owned(),
                msg_id: format!("county-resend-{}", uuid::Uuid::now_v7()),
                epoch: epoch.clone(),
                lane: lane.clone(),
                from_seq: *from_seq,
                to_seq: (*to_seq).min(from_seq + protocol::MAX_RESEND - 1),
            };
            let Ok(payload) = serde_json::to_vec(&cmd) else {
                continue;
            };
            // Recorded first, like every command: the station's `gone`
            // answer explains the gap through it (the `lane_gaps` view).
            let recorded = db
                .execute(
                    "INSERT INTO commands (msg_id, county, station, cmd, payload, sent_by)
                     VALUES ($1, $2, $3, 'resend', $4, 'pithead-county')",
                    &[
                        &cmd.msg_id,
                        county,
                        station,
                        &serde_json::to_value(&cmd).unwrap_or_default(),
                    ],
                )
                .await;
            if let Err(e) = recorded {
                tracing::warn!(error = %e, "cannot record a resend; asked later");
                break;
            }
            let topic = protocol::topic(county, station, "cmd/resend");
            let payload = crate::commands::seal(signing.as_ref(), &topic, payload);
            if mqtt
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
                .is_ok()
            {
                tracing::info!(%county, %station, %epoch, %lane, from_seq, to_seq, "asked the station to send a gap again");
                stats.resends.fetch_add(1, Ordering::Relaxed);
                seen.insert(hole, (first, Some(now)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(topic: &str, payload: &str) -> Publish {
        Publish::new(topic, QoS::AtLeastOnce, payload.as_bytes().to_vec())
    }

    #[test]
    fn what_is_not_a_station_message_is_rejected_with_its_reason() {
        let cases = [
            ("pithead/v1/c/s", "{}", "topic"),
            ("pithead/v1/c/s/alarm", "not json", "expected"),
            (
                "pithead/v1/c/s/alarm",
                r#"{"schema":"other/v9"}"#,
                "missing field",
            ),
            ("pithead/v1/c/s/status", r#"{"state":"online"}"#, "status"),
        ];
        for (topic, payload, want) in cases {
            match parse(&publish(topic, payload)) {
                Parsed::Rejected(r) => assert!(r.contains(want), "{topic} {payload}: {r}"),
                other => panic!("{topic} {payload}: {other:?}"),
            }
        }
        // An envelope for another station than its topic says.
        let m = r#"{"schema":"pithead/v1","msg_id":"m1","county":"c","station":"other","epoch":"e","lane":"alarm","seq":1,"kind":"alarm","created_at":"2026-01-01T00:00:00Z","body":{}}"#;
        match parse(&publish("pithead/v1/c/s/alarm", m)) {
            Parsed::Rejected(r) => assert!(r.contains("envelope"), "{r}"),
            other => panic!("{other:?}"),
        }
        // The right envelope with a body that is not an alarm.
        let m = m.replace("\"other\"", "\"s\"");
        match parse(&publish("pithead/v1/c/s/alarm", &m)) {
            Parsed::Rejected(r) => assert!(r.contains("body of the alarm"), "{r}"),
            other => panic!("{other:?}"),
        }
    }
}
