//! Sync: the only code that speaks MQTT.
//!
//! Two connections: the uplink here (outbox → broker, a clean session: the
//! outbox is the session), and the downlink in [`downlink`] (the county's
//! commands, a persistent session with manual acknowledgements, so that
//! nothing the broker was told "received" is lost).
//!
//! It reads the outbox most urgent lane first, publishes with QoS 1, and
//! marks a row sent only when the broker's PUBACK for it arrives. Packet
//! ids are matched to rows through rumqttc's `Outgoing::Publish(pkid)`
//! events, which come in the order the publishes were handed over; the
//! task publishes only while connected, and on any disconnect it forgets
//! what was in flight (the rows are still unsent on disk), drops the whole
//! rumqttc client and event loop, and starts again from the outbox with a
//! fresh one after the next CONNACK. Nothing of an old connection (queued
//! requests, buffered events, packet-id state) can reach a new one and
//! shift the mapping, and sessions are clean, so rumqttc never replays an
//! old packet behind our back. A row may therefore be
//! sent twice around a reconnect, never lost: the receiver drops the
//! duplicate by its message id.
//!
//! Throughput: up to [`WINDOW`] messages are in flight; the window is
//! topped up from the outbox whenever half of it is free, and acknowledged
//! rows are marked sent in batches. Latency: a commit that adds an outbox
//! row wakes the task at once ([`Store::outbox_added`]), and the outbox is
//! read most urgent lane first, so a live alarm overtakes a backlog of
//! check-ins or summaries (`BENCHMARKS.md`).

pub mod downlink;
pub use pithead_core::protocol;
pub use pithead_core::tracker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, Transport};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::{Durability, Store, outbox};

/// Messages in flight at once (unacknowledged by the broker).
pub const WINDOW: usize = 64;

/// The window is topped up once this many are free, so each outbox read
/// fetches a batch rather than a row.
const REFILL_AT: usize = WINDOW / 2;

/// Acknowledged rows are marked sent in one write once this many wait, or
/// [`SOON`] after the first of them.
const FLUSH_AT: usize = 1024;

/// How soon the task looks again while acknowledged rows wait to be
/// marked, or after an outbox read, a hand-over or a set-aside that failed.
const SOON: Duration = Duration::from_millis(200);

/// How often it looks at the outbox when nothing is waiting: every new row
/// wakes it at once, acknowledgements refill the window, so this only
/// bounds what an unforeseen miss could cost. An idle station wakes for
/// nothing in between.
const IDLE_LOOK: Duration = Duration::from_secs(10);

/// A row in flight when the connection dropped counts a try only above
/// this size: every broker takes smaller packets, so a small row is never
/// the cause.
const SUSPECT_BYTES: usize = 16 * 1024;

/// Uplink figures for `/metrics` and the console.
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Connected to the broker now.
    pub connected: AtomicBool,
    /// Messages handed to the broker.
    pub published: AtomicU64,
    /// Messages the broker acknowledged.
    pub acknowledged: AtomicU64,
    /// Connections made.
    pub connects: AtomicU64,
    /// Connection failures and drops.
    pub failures: AtomicU64,
    /// The downlink is connected and subscribed to this station's commands.
    pub downlink_connected: AtomicBool,
    /// Downlink messages stored.
    pub downlink_accepted: AtomicU64,
    /// Downlink messages refused (malformed, over the cap, unknown).
    pub downlink_refused: AtomicU64,
}

impl SyncStats {
    /// Prometheus text.
    pub fn render(&self, out: &mut String) {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push_str("# HELP pithead_uplink_connected Whether the county broker is connected.\n# TYPE pithead_uplink_connected gauge\n");
        out.push_str(&format!(
            "pithead_uplink_connected {}\n",
            u8::from(self.connected.load(Ordering::Relaxed))
        ));
        out.push_str("# HELP pithead_downlink_connected Whether the downlink is connected and subscribed to this station's commands.\n# TYPE pithead_downlink_connected gauge\n");
        out.push_str(&format!(
            "pithead_downlink_connected {}\n",
            u8::from(self.downlink_connected.load(Ordering::Relaxed))
        ));
        for (name, help, v) in [
            (
                "pithead_uplink_published_total",
                "Messages handed to the broker.",
                g(&self.published),
            ),
            (
                "pithead_uplink_acknowledged_total",
                "Messages the broker acknowledged.",
                g(&self.acknowledged),
            ),
            (
                "pithead_uplink_connects_total",
                "Connections to the broker.",
                g(&self.connects),
            ),
            (
                "pithead_uplink_failures_total",
                "Failed or dropped connections.",
                g(&self.failures),
            ),
            (
                "pithead_downlink_accepted_total",
                "Messages from the county stored.",
                g(&self.downlink_accepted),
            ),
            (
                "pithead_downlink_refused_total",
                "Messages from the county refused.",
                g(&self.downlink_refused),
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            ));
        }
    }
}

/// The uplink's options: a clean session (the outbox is the session), the
/// window; the last will is set again at every connection, with its time.
fn options(cfg: &Config) -> Result<MqttOptions, String> {
    let mut o = base_options(
        cfg,
        format!("pithead-{}-{}", cfg.station.county, cfg.station.id),
    )?;
    o.set_clean_session(true);
    o.set_inflight(u16::try_from(WINDOW).unwrap_or(64));
    o.set_request_channel_capacity(WINDOW + 16);
    // Outgoing: what max_message_bytes lets through (checked before the
    // publish, so rumqttc never fails a connection over it).
    o.set_max_packet_size(256 * 1024, cfg.mqtt.max_message_bytes + 1024);
    Ok(o)
}

/// The last will: `offline`, retained, stamped with the time of the
/// connection it is left with.
fn last_will(cfg: &Config) -> LastWill {
    let status = protocol::topic(&cfg.station.county, &cfg.station.id, "status");
    let offline = protocol::status(
        &cfg.station.county,
        &cfg.station.id,
        protocol::Presence::Offline,
        env!("CARGO_PKG_VERSION"),
        &crate::time::now_rfc3339(),
        None,
    );
    LastWill::new(status, offline, QoS::AtLeastOnce, true)
}

/// Broker, credentials and TLS, shared by the uplink and the downlink.
fn base_options(cfg: &Config, client_id: String) -> Result<MqttOptions, String> {
    let m = &cfg.mqtt;
    let (host, port, tls) = protocol::parse_url(&m.url).ok_or_else(|| {
        format!(
            "mqtt.url `{}` is not mqtt://host:port or mqtts://host:port",
            m.url
        )
    })?;
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(m.keep_alive.max(Duration::from_secs(5)));
    if let Some(user) = &m.username {
        let password = match &m.password_file {
            Some(f) => std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?
                .trim()
                .to_owned(),
            None => String::new(),
        };
        o.set_credentials(user.clone(), password);
    }
    if tls {
        let config = crate::tls::mqtt_client(m.ca_file.as_deref(), m.client_identity())?;
        o.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
        ));
    }
    Ok(o)
}

/// Runs the uplink until `shutdown`. Does nothing when `[mqtt]` is off.
pub async fn run(
    cfg: Arc<Config>,
    store: Store,
    stats: Arc<SyncStats>,
    shutdown: CancellationToken,
) {
    if !cfg.mqtt.enabled {
        tracing::info!("uplink disabled: everything for the county stays in the outbox");
        return;
    }
    // A CA file or certificate that cannot be read now may be there later
    // (a mount, an operator): reported, and tried again.
    let mut wait = Duration::from_secs(1);
    let mut last_error = String::new();
    let opts = loop {
        match options(&cfg) {
            Ok(o) => break o,
            Err(e) => {
                let text = e.to_string();
                if text != last_error {
                    tracing::error!(error = %text, retry_in = ?wait, "uplink not started");
                    last_error = text;
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(60));
    };
    // Every message carries the database's epoch: nothing is published
    // without it (a receiver could not order what it gets).
    let epoch = loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = store.opened() => {}
        }
        match store.read(outbox::epoch).await {
            Ok(e) => break e,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the epoch yet; the uplink waits");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let (county, station) = (cfg.station.county.clone(), cfg.station.id.clone());
    let status_topic = protocol::topic(&county, &station, "status");
    let mut opts = opts;
    let mut link: Option<Link> = None;
    let mut reconnect_at = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(500);
    let mut tracker = tracker::Tracker::default();
    let mut connected = false;
    let mut last_error: Option<String> = None;
    // The retained `online` status is sent again every minute with the
    // outbox's backlog, so the county sees what waits on each station.
    let mut report = tokio::time::interval(BACKLOG_REPORT);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connected_at = String::new();
    let look = tokio::time::sleep(IDLE_LOOK);
    tokio::pin!(look);
    // Something needs another look soon (see SOON).
    let mut again = false;
    let configured = cfg.mqtt.max_message_bytes;
    let learned = store
        .read(move |c| outbox::message_limit(c, configured))
        .await
        .unwrap_or(configured);
    let out = Out {
        store: &store,
        county: &county,
        station: &station,
        epoch: &epoch,
        stats: &stats,
        max_bytes: std::sync::atomic::AtomicUsize::new(learned),
    };
    // The packet size of each row in flight, to find the one a broker
    // may have dropped the connection at.
    let mut sizes = Sizes::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            () = tokio::time::sleep_until(reconnect_at), if link.is_none() => {
                opts.set_last_will(last_will(&cfg));
                link = Some(Link::open(opts.clone()));
            }
            ev = recv(&mut link) => match ev {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    let Some(l) = &link else { continue };
                    connected = true;
                    last_error = None;
                    backoff = Duration::from_millis(500);
                    tracker.reset();
                    if ack.session_present {
                        tracing::warn!("broker kept a session we did not ask for; replaying from the outbox instead");
                    }
                    stats.connected.store(true, Ordering::Relaxed);
                    stats.connects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(url = %cfg.mqtt.url, "uplink connected");
                    connected_at = crate::time::now_rfc3339();
                    let online = online_status(&store, &county, &station, &connected_at).await;
                    if l.client.try_publish(status_topic.clone(), QoS::AtLeastOnce, true, online).is_ok() {
                        tracker.handed(None);
                    }
                    report.reset();
                    again |= refill(&out, &l.client, &mut tracker, &mut sizes).await;
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => tracker.written(pkid),
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(row) = tracker.acknowledged(ack.pkid) {
                        if let Some((packet, _)) = sizes.rows.remove(&row) {
                            sizes.largest_acked = sizes.largest_acked.max(packet);
                        }
                        stats.acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    if tracker.acked() >= FLUSH_AT {
                        flush(&store, &mut tracker).await;
                    }
                    if let (true, Some(l)) = (connected, &link)
                        && WINDOW - tracker.busy().min(WINDOW) >= REFILL_AT
                    {
                        again |= refill(&out, &l.client, &mut tracker, &mut sizes).await;
                    }
                }
                Ok(_) => {}
                Err(why) => {
                    if connected {
                        tracing::warn!(error = %why, in_flight = tracker.in_flight(), "uplink lost; unacknowledged messages will be sent again");
                    } else if last_error.as_deref() != Some(why.as_str()) {
                        // Said once per kind of failure (a refused TLS
                        // certificate must be visible), then quietly.
                        tracing::warn!(error = %why, url = %cfg.mqtt.url, "uplink not reachable; records wait in the outbox");
                    } else {
                        tracing::debug!(error = %why, "uplink not reachable");
                    }
                    last_error = Some(why);
                    connected = false;
                    stats.connected.store(false, Ordering::Relaxed);
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    // The whole client goes: its request queue, rumqttc's
                    // buffered events and packet-id state die with it, so
                    // nothing from this connection can reach the next one
                    // and shift the packet-id mapping. The rows not
                    // acknowledged are still unsent on disk.
                    link = None;
                    // A broker drops the connection at a packet over its
                    // limit: it reads them in order, so the first large
                    // row still in flight counts a try, and is set aside
                    // at the third, so one such row never blocks the lane
                    // behind it. The broker then takes less than that row:
                    // the limit is learned, and what is queued bigger than
                    // it is set aside at once, new reports split to fit.
                    let in_flight: std::collections::HashSet<i64> = tracker.in_flight_rows().into_iter().collect();
                    let floor = SUSPECT_BYTES.max(sizes.largest_acked);
                    let suspect = sizes
                        .rows
                        .iter()
                        .filter(|(r, (b, _))| in_flight.contains(r) && *b > floor)
                        .min_by_key(|(_, (_, order))| *order)
                        .map(|(&r, &(b, _))| (r, b));
                    sizes.rows.clear();
                    if let Some((row, bytes)) = suspect {
                        match store.write(Durability::Acknowledged, move |c| outbox::strike(c, row)).await {
                            Ok(true) => {
                                let limit = (bytes / 2).max(sizes.largest_acked).max(crate::config::MESSAGE_BYTES[0]);
                                if limit < out.max_bytes.load(Ordering::Relaxed) {
                                    out.max_bytes.store(limit, Ordering::Relaxed);
                                    let configured = cfg.mqtt.max_message_bytes;
                                    let _ = store
                                        .write(Durability::Bulk, move |c| outbox::learn_message_limit(c, configured, limit))
                                        .await;
                                }
                                tracing::error!(
                                    row, bytes, now_sending_at_most = out.max_bytes.load(Ordering::Relaxed),
                                    "the broker will not take a row of this size: set aside; lower [mqtt] max_message_bytes to the county broker's limit"
                                );
                            }
                            Ok(false) => tracing::warn!(row, bytes, "connection lost with a large row in flight: one try counted"),
                            Err(e) => tracing::warn!(error = %e, "cannot count the try"),
                        }
                    }
                    tracker.reset();
                    // Backoff with jitter, so a county's stations do not all
                    // come back in the same second.
                    let jitter = Duration::from_millis(u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * 4);
                    reconnect_at = tokio::time::Instant::now() + backoff + jitter;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            },
            // A commit added rows (a live alarm, say): send them now, ahead
            // of any backlog of a lower lane.
            () = store.outbox_added(), if connected => {
                if let Some(l) = &link {
                    again |= refill(&out, &l.client, &mut tracker, &mut sizes).await;
                }
            }
            _ = report.tick(), if connected => {
                if let Some(l) = &link {
                    let online = online_status(&store, &county, &station, &connected_at).await;
                    if l.client.try_publish(status_topic.clone(), QoS::AtLeastOnce, true, online).is_ok() {
                        tracker.handed(None);
                    }
                }
            }
            () = &mut look => {
                look.as_mut().reset(tokio::time::Instant::now() + IDLE_LOOK);
                again = false;
                flush(&store, &mut tracker).await;
                if let (true, Some(l)) = (connected, &link) {
                    again = refill(&out, &l.client, &mut tracker, &mut sizes).await;
                }
            }
        }
        // Soon while something waits, never later than already set: a
        // stream of events does not put the look off.
        if again || tracker.acked() > 0 {
            let soon = tokio::time::Instant::now() + SOON;
            if look.deadline() > soon {
                look.as_mut().reset(soon);
            }
        }
    }
    flush(&store, &mut tracker).await;
    if let (true, Some(mut l)) = (connected, link) {
        let offline = protocol::status(
            &county,
            &station,
            protocol::Presence::Offline,
            env!("CARGO_PKG_VERSION"),
            &crate::time::now_rfc3339(),
            None,
        );
        let _ = l
            .client
            .try_publish(status_topic, QoS::AtLeastOnce, true, offline);
        let _ = l.client.try_disconnect();
        // Let the event loop send both, briefly.
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Some(ev) = l.events.recv().await {
                if matches!(ev, Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_)) {
                    break;
                }
            }
        })
        .await;
    }
    stats.connected.store(false, Ordering::Relaxed);
}

/// How often a connected station reports its backlog.
const BACKLOG_REPORT: Duration = Duration::from_secs(60);

/// The retained `online` status of the connection made at `since`, with
/// the outbox's backlog as it is now (none when the store cannot say).
async fn online_status(store: &Store, county: &str, station: &str, since: &str) -> String {
    let backlog = store
        .read(outbox::backlog)
        .await
        .ok()
        .map(|b| protocol::UplinkBacklog {
            pending: b.pending,
            bytes: b.bytes,
            dropped_summaries: b.dropped_summaries,
            set_aside: b.set_aside,
            at: crate::time::now_rfc3339(),
        });
    protocol::status(
        county,
        station,
        protocol::Presence::Online,
        env!("CARGO_PKG_VERSION"),
        since,
        backlog,
    )
}

/// One connection attempt and, if it succeeds, the connection: a fresh
/// rumqttc client and event loop. rumqttc's poll is not cancel-safe while it
/// connects (a dropped poll drops the new connection, and the broker
/// publishes our last will), so the event loop is polled by a task of its
/// own that hands every event over in order, and ends at the first error.
struct Link {
    client: AsyncClient,
    events: tokio::sync::mpsc::Receiver<Result<Event, String>>,
    pump: tokio::task::JoinHandle<()>,
}

impl Link {
    pub(crate) fn open(opts: MqttOptions) -> Link {
        let (client, eventloop) = AsyncClient::new(opts, WINDOW + 16);
        let (tx, events) = tokio::sync::mpsc::channel(16 * WINDOW);
        let pump = tokio::spawn(pump(eventloop, tx));
        Link {
            client,
            events,
            pump,
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

/// The next event of the current connection; pending while there is none.
async fn recv(link: &mut Option<Link>) -> Result<Event, String> {
    match link {
        Some(l) => l
            .events
            .recv()
            .await
            .unwrap_or_else(|| Err("the MQTT event loop stopped".into())),
        None => std::future::pending().await,
    }
}

/// Polls one connection's event loop until its first error.
async fn pump(
    mut events: rumqttc::EventLoop,
    tx: tokio::sync::mpsc::Sender<Result<Event, String>>,
) {
    loop {
        match events.poll().await {
            Ok(ev) => {
                if let Event::Incoming(Packet::ConnAck(ack)) = &ev
                    && ack.session_present
                {
                    // We ask for clean sessions; a broker that keeps one
                    // anyway would have rumqttc replay publishes the tracker
                    // never saw. Drop them: the sync task publishes the rows
                    // again from the outbox.
                    events.pending.clear();
                }
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e.to_string())).await;
                return;
            }
        }
    }
}

/// Marks acknowledged rows sent. A crash before this only means they are
/// sent again, and dropped by the receiver as duplicates.
async fn flush(store: &Store, tracker: &mut tracker::Tracker) {
    let ids = tracker.take_acked();
    if ids.is_empty() {
        return;
    }
    let n = ids.len();
    let retry = ids.clone();
    let at = crate::time::now_rfc3339();
    if let Err(e) = store
        .write(Durability::Bulk, move |c| outbox::mark_sent(c, &ids, &at))
        .await
    {
        tracing::warn!(error = %e, rows = n, "cannot mark sent rows; will try again");
        tracker.return_acked(retry);
    }
}

/// What a refill needs besides the client and the tracker.
struct Out<'a> {
    store: &'a Store,
    county: &'a str,
    station: &'a str,
    epoch: &'a str,
    stats: &'a SyncStats,
    /// The largest message sent: `[mqtt] max_message_bytes`, or less once
    /// the broker showed it takes less.
    max_bytes: std::sync::atomic::AtomicUsize,
}

/// The rows in flight: packet size and the order they were handed in (the
/// broker reads them in that order).
#[derive(Debug, Default)]
struct Sizes {
    rows: std::collections::HashMap<i64, (usize, u64)>,
    next: u64,
    /// The largest packet the broker has acknowledged: it takes at least
    /// that.
    largest_acked: usize,
}

/// Tops the window up from the outbox. Returns whether something failed
/// that needs another look soon (the read, a hand-over, a set-aside).
async fn refill(
    out: &Out<'_>,
    client: &AsyncClient,
    tracker: &mut tracker::Tracker,
    sizes: &mut Sizes,
) -> bool {
    let Out {
        store,
        county,
        station,
        epoch,
        stats,
        ..
    } = *out;
    let max_bytes = out.max_bytes.load(Ordering::Relaxed);
    let mut aside: Vec<(i64, String)> = Vec::new();
    let busy = tracker.busy();
    if busy >= WINDOW {
        return false;
    }
    let exclude = tracker.exclude();
    let room = WINDOW - busy;
    // Only what is on the disk for good: a row acknowledged by the broker
    // and then lost to a power cut would see its sequence number reused.
    let durable = store.durable_outbox();
    let rows = match store
        .read(move |c| outbox::pending(c, &exclude, room, durable))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the outbox");
            return true;
        }
    };
    let mut again = false;
    for row in rows {
        let topic = protocol::topic(county, station, &row.kind);
        let lane = match row.lane {
            Ok(lane) => lane,
            Err(code) => {
                aside.push((row.id, format!("lane {code} is no lane this station knows")));
                continue;
            }
        };
        let Some(body) = protocol::envelope(
            &row.msg_id,
            county,
            station,
            epoch,
            lane,
            row.seq,
            &row.kind,
            &row.created_at,
            &row.payload,
        ) else {
            aside.push((row.id, "the record cannot be written as a message".into()));
            continue;
        };
        // MQTT's own header: the topic, a packet id, a few length bytes.
        let packet = body.len() + topic.len() + 16;
        if packet > max_bytes {
            aside.push((
                row.id,
                format!("{packet} bytes, more than the {max_bytes} the broker takes ([mqtt] max_message_bytes, or less as learned)"),
            ));
            continue;
        }
        if client
            .try_publish(topic, QoS::AtLeastOnce, false, body)
            .is_err()
        {
            again = true;
            break;
        }
        sizes.rows.insert(row.id, (packet, sizes.next));
        sizes.next += 1;
        tracker.handed(Some(row.id));
        stats.published.fetch_add(1, Ordering::Relaxed);
    }
    if !aside.is_empty()
        && let Err(e) = store
            .write(Durability::Acknowledged, move |c| {
                for (id, why) in &aside {
                    outbox::set_aside(c, *id, why)?;
                }
                Ok(())
            })
            .await
    {
        tracing::warn!(error = %e, "cannot set rows aside; will try again");
        again = true;
    }
    again
}
