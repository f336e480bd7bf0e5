//! Messages from the county: notices for the kiosk, hazard updates, and
//! requests to send outbox rows again.
//!
//! A connection of its own, with a persistent session: commands published
//! while the station is offline wait at the broker. Each is acknowledged
//! to the broker only once it is stored — applied, or refused with the
//! refusal recorded — in one transaction with a `cmd_ack` row for the
//! county; a crash, a full disk or a missing database before that leaves
//! it unacknowledged, and the broker delivers it again. Only this station's
//! `cmd` topics are subscribed; a payload is capped, must parse as the
//! schema says, must not be retained, and is ignored when its message id
//! was seen. Anything else is logged and counted, never a crash.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use rumqttc::{Event, Packet, QoS};
use rusqlite::{Connection, OptionalExtension};
use tokio_util::sync::CancellationToken;

use super::protocol::{AckOutcome, CmdAckBody, SCHEMA};
use super::{Link, SyncStats};
use crate::config::Config;
use crate::hazards::{self, StepError};
use crate::store::outbox::{self, Lane};
use crate::store::{Durability, Store, StoreError};
use crate::time::rfc3339;

/// Largest downlink payload accepted.
pub const MAX_PAYLOAD: usize = pithead_core::protocol::MAX_COMMAND;

pub use pithead_core::protocol::{COUNTY, HazardUpdate, MAX_RESEND, Notice, Resend};

/// What became of a downlink message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    /// Stored.
    Accepted,
    /// Rows of a `resend` marked to go again (`resent`); the ranges no
    /// longer on the station (`gone`: pruned after being sent, or dropped
    /// at the outbox cap).
    Resent {
        /// Rows that will be sent again, with their original ids and numbers.
        resent: usize,
        /// Inclusive ranges of sequence numbers the station no longer has.
        gone: Vec<(i64, i64)>,
    },
    /// Its message id was seen before.
    Replay,
    /// Refused, with the reason.
    Refused(String),
}

fn check_text(v: &str, max: usize, what: &str) -> Result<String, String> {
    let t = v.trim();
    if t.is_empty() || t.chars().count() > max || t.chars().any(|c| c.is_control() && c != '\n') {
        return Err(format!(
            "{what} must be 1 to {max} characters without control characters"
        ));
    }
    Ok(t.to_owned())
}

fn time(v: &str, what: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(v).map_err(|_| format!("{what} is not an RFC 3339 time"))
}

/// Handles one message on `…/cmd/{kind}` inside the caller's transaction.
pub fn handle(
    conn: &Connection,
    cfg: &Config,
    kind: &str,
    payload: &[u8],
    now: SystemTime,
) -> Result<CommandOutcome, StoreError> {
    if payload.len() > MAX_PAYLOAD {
        return Ok(CommandOutcome::Refused(format!(
            "payload of {} bytes is over the {MAX_PAYLOAD}-byte cap",
            payload.len()
        )));
    }
    match kind {
        "notice" => {
            let n: Notice = match serde_json::from_slice(payload) {
                Ok(n) => n,
                Err(e) => return Ok(CommandOutcome::Refused(format!("not a notice: {e}"))),
            };
            let checked =
                (|| -> Result<(String, String, String, SystemTime, SystemTime), String> {
                    if n.schema != SCHEMA {
                        return Err(format!("schema `{}` is not {SCHEMA}", n.schema));
                    }
                    check_text(&n.msg_id, 64, "msg_id")?;
                    let from = match &n.valid_from {
                        Some(f) => time(f, "valid_from")?,
                        None => now,
                    };
                    let until = time(&n.valid_until, "valid_until")?;
                    if until <= from {
                        return Err("valid_until is not after valid_from".into());
                    }
                    if !matches!(n.priority.as_str(), "normal" | "urgent") {
                        return Err("priority is normal or urgent".into());
                    }
                    Ok((
                        check_text(&n.title, 100, "title")?,
                        check_text(&n.body, 2000, "body")?,
                        n.priority.clone(),
                        from,
                        until,
                    ))
                })();
            let (title, body, priority, from, until) = match checked {
                Ok(x) => x,
                Err(e) => return Ok(CommandOutcome::Refused(e)),
            };
            let added = conn.execute(
                "INSERT OR IGNORE INTO notices(msg_id, title, body, priority, valid_from, valid_until, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                (&n.msg_id, &title, &body, &priority, rfc3339(from), rfc3339(until), rfc3339(now)),
            )?;
            Ok(if added == 1 {
                CommandOutcome::Accepted
            } else {
                CommandOutcome::Replay
            })
        }
        "hazard" => {
            let u: HazardUpdate = match serde_json::from_slice(payload) {
                Ok(u) => u,
                Err(e) => return Ok(CommandOutcome::Refused(format!("not a hazard update: {e}"))),
            };
            if u.schema != SCHEMA {
                return Ok(CommandOutcome::Refused(format!(
                    "schema `{}` is not {SCHEMA}",
                    u.schema
                )));
            }
            if let Err(e) = check_text(&u.msg_id, 64, "msg_id") {
                return Ok(CommandOutcome::Refused(e));
            }
            let comment = match u.comment.as_deref().map(|c| check_text(c, 200, "comment")) {
                Some(Err(e)) => return Ok(CommandOutcome::Refused(e)),
                Some(Ok(c)) => Some(c),
                None => None,
            };
            if comment.is_none() && u.status.is_none() {
                return Ok(CommandOutcome::Refused(
                    "a hazard update needs a comment, a status or both".into(),
                ));
            }
            let seen = conn
                .query_row(
                    "SELECT 1 FROM events WHERE kind = 'county.hazard' AND subject = ?1",
                    [&u.msg_id],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if seen {
                return Ok(CommandOutcome::Replay);
            }
            let at = rfc3339(now);
            match u.status {
                Some(status) => {
                    // A status change is a step like a supervisor's, checked
                    // by the same lifecycle, and goes back to the county on
                    // the hazard lane so it sees the result.
                    let step = hazards::Step {
                        status,
                        by: COUNTY.into(),
                        note: comment.clone(),
                        owner: u.owner.clone(),
                        deadline: u.deadline.clone(),
                        measures: u.measures.clone(),
                        funds: u.funds.clone(),
                        plan: u.plan.clone(),
                        major_category: u.major_category,
                    };
                    match hazards::step(conn, cfg, &u.ticket, &step, now)? {
                        Ok(_) => {}
                        Err(StepError::NotFound) => {
                            return Ok(CommandOutcome::Refused(format!(
                                "no hazard with ticket {}",
                                u.ticket
                            )));
                        }
                        Err(StepError::Invalid(e)) => return Ok(CommandOutcome::Refused(e.en)),
                    }
                }
                None => {
                    if u.owner.is_some() || u.deadline.is_some() || u.measures.is_some() {
                        return Ok(CommandOutcome::Refused(
                            "owner, deadline and measures come with status `assigned`".into(),
                        ));
                    }
                    let Some((id, status)) = conn
                        .query_row(
                            "SELECT id, status FROM hazards WHERE ticket = ?1",
                            [&u.ticket],
                            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
                        )
                        .optional()?
                    else {
                        return Ok(CommandOutcome::Refused(format!(
                            "no hazard with ticket {}",
                            u.ticket
                        )));
                    };
                    // A comment alone is a step that keeps the status.
                    conn.execute(
                        "INSERT INTO hazard_steps(hazard_id, status, by, note, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                        (id, &status, COUNTY, &comment, &at),
                    )?;
                }
            }
            crate::store::events::insert(
                conn,
                &at,
                &crate::store::events::NewEvent {
                    kind: "county.hazard".into(),
                    actor: Some("county".into()),
                    subject: Some(u.msg_id.clone()),
                    detail: serde_json::json!({
                        "ticket": u.ticket,
                        "comment": comment,
                        "status": u.status,
                    }),
                },
            )?;
            Ok(CommandOutcome::Accepted)
        }
        "resend" => {
            let r: Resend = match serde_json::from_slice(payload) {
                Ok(r) => r,
                Err(e) => {
                    return Ok(CommandOutcome::Refused(format!(
                        "not a resend request: {e}"
                    )));
                }
            };
            if r.schema != SCHEMA {
                return Ok(CommandOutcome::Refused(format!(
                    "schema `{}` is not {SCHEMA}",
                    r.schema
                )));
            }
            if let Err(e) = check_text(&r.msg_id, 64, "msg_id") {
                return Ok(CommandOutcome::Refused(e));
            }
            let seen = conn
                .query_row(
                    "SELECT 1 FROM events WHERE kind = 'county.resend' AND subject = ?1",
                    [&r.msg_id],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if seen {
                return Ok(CommandOutcome::Replay);
            }
            let epoch = outbox::epoch(conn)?;
            if r.epoch != epoch {
                return Ok(CommandOutcome::Refused(format!(
                    "epoch {} is not this station's ({epoch}): those numbers are gone with the database they came from",
                    r.epoch
                )));
            }
            let Some(lane) = Lane::from_name(&r.lane) else {
                return Ok(CommandOutcome::Refused(format!("no lane `{}`", r.lane)));
            };
            if r.from_seq < 1 || r.to_seq < r.from_seq || r.to_seq - r.from_seq >= MAX_RESEND {
                return Ok(CommandOutcome::Refused(format!(
                    "from_seq..to_seq must be 1 ≤ from ≤ to, at most {MAX_RESEND} numbers"
                )));
            }
            let (resent, gone) = outbox::resend(conn, lane, r.from_seq, r.to_seq)?;
            crate::store::events::insert(
                conn,
                &rfc3339(now),
                &crate::store::events::NewEvent {
                    kind: "county.resend".into(),
                    actor: Some("county".into()),
                    subject: Some(r.msg_id.clone()),
                    detail: serde_json::json!({
                        "lane": r.lane, "from_seq": r.from_seq, "to_seq": r.to_seq,
                        "resent": resent, "gone": gone,
                    }),
                },
            )?;
            Ok(CommandOutcome::Resent { resent, gone })
        }
        other => Ok(CommandOutcome::Refused(format!(
            "unknown command `{other}`"
        ))),
    }
}

/// Handles a command and records its outcome for the county, inside the
/// caller's transaction: an applied or refused command gets a `cmd_ack`
/// row on the hazard lane (the lane of what the county asks), a refusal an
/// event. A replay gets neither (its first delivery had them).
pub fn apply(
    conn: &Connection,
    cfg: &Config,
    kind: &str,
    payload: &[u8],
    retained: bool,
    now: SystemTime,
) -> Result<CommandOutcome, StoreError> {
    // With the county's key configured, only what it signed for this
    // station's topic is carried out.
    let topic =
        super::protocol::topic(&cfg.station.county, &cfg.station.id, &format!("cmd/{kind}"));
    let key = cfg
        .mqtt
        .county_public_key
        .as_deref()
        .and_then(|k| crate::signing::county_key(k).ok());
    let opened = crate::signing::open(key.as_ref(), &topic, payload);
    let payload: &[u8] = match &opened {
        Ok(inner) => inner,
        Err(_) => payload,
    };
    let outcome = if retained {
        // A retained command would be carried out again by every station
        // that ever subscribes: the county never sends one.
        CommandOutcome::Refused("retained: commands are never retained".into())
    } else if let Err(why) = &opened {
        CommandOutcome::Refused(why.clone())
    } else {
        handle(conn, cfg, kind, payload, now)?
    };
    let msg_id = serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v["msg_id"].as_str().map(str::to_owned))
        .filter(|m| m.chars().count() <= 64);
    let at = rfc3339(now);
    let mut body = CmdAckBody {
        county: cfg.station.county.clone(),
        station: cfg.station.id.clone(),
        cmd_msg_id: msg_id.clone(),
        cmd: kind.chars().take(32).collect::<String>(),
        outcome: AckOutcome::Applied,
        reason: None,
        resent: None,
        gone: None,
        at: at.clone(),
    };
    match &outcome {
        CommandOutcome::Replay => return Ok(outcome),
        CommandOutcome::Accepted => {}
        CommandOutcome::Resent { resent, gone } => {
            body.resent = Some(*resent);
            body.gone = Some(gone.clone());
        }
        CommandOutcome::Refused(why) => {
            body.outcome = AckOutcome::Refused;
            body.reason = Some(why.clone());
            crate::store::events::insert(
                conn,
                &at,
                &crate::store::events::NewEvent {
                    kind: "county.refused".into(),
                    actor: Some("county".into()),
                    subject: msg_id.clone(),
                    detail: serde_json::json!({ "cmd": kind, "reason": why }),
                },
            )?;
        }
    }
    let body = serde_json::to_value(&body).unwrap_or_default();
    outbox::enqueue(conn, Lane::Hazard, "cmd_ack", &at, &body)?;
    Ok(outcome)
}

/// The client id of the downlink's persistent session.
pub fn client_id(cfg: &Config) -> String {
    format!("pithead-{}-{}-cmd", cfg.station.county, cfg.station.id)
}

/// Largest packet the downlink reads; a bigger one would end the
/// connection, and come again with the persistent session (see [`run`]).
const MAX_PACKET: usize = 1024 * 1024;

/// Runs the downlink until `shutdown`. Does nothing when `[mqtt]` is off.
pub async fn run(
    cfg: Arc<Config>,
    store: Store,
    stats: Arc<SyncStats>,
    shutdown: CancellationToken,
) {
    if !cfg.mqtt.enabled {
        return;
    }
    let mut opts = loop {
        match super::base_options(&cfg, client_id(&cfg)) {
            Ok(o) => break o,
            // The uplink says why, and retries the same way.
            Err(_) => {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    };
    opts.set_clean_session(false);
    opts.set_manual_acks(true);
    opts.set_inflight(16);
    opts.set_max_packet_size(MAX_PACKET, 64 * 1024);
    let prefix = super::protocol::topic(&cfg.station.county, &cfg.station.id, "cmd/");
    let mut link: Option<Link> = None;
    let mut reconnect_at = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(500);
    // Connections lost to a packet too big to read, in a row: the same
    // message comes first again with the persistent session, so after a
    // few the session is dropped once (what else was queued goes with it).
    let mut too_big = 0u32;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep_until(reconnect_at), if link.is_none() => {
                opts.set_clean_session(too_big >= 3);
                if too_big >= 3 {
                    tracing::error!("a command too big to read came back {too_big} times: dropping the downlink session (commands queued at the broker are lost)");
                    stats.downlink_refused.fetch_add(1, Ordering::Relaxed);
                    too_big = 0;
                }
                link = Some(Link::open(opts.clone()));
            }
            ev = super::recv(&mut link) => match ev {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = Duration::from_millis(500);
                    let Some(l) = &link else { continue };
                    if !ack.session_present {
                        // A new session: subscribe (a kept one keeps the
                        // subscription, and what was queued for it).
                        let _ = l.client.try_subscribe(format!("{prefix}+"), QoS::AtLeastOnce);
                    } else {
                        stats.downlink_connected.store(true, Ordering::Relaxed);
                    }
                    tracing::info!(session_present = ack.session_present, "downlink connected");
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    stats.downlink_connected.store(true, Ordering::Relaxed);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    too_big = 0;
                    let stored = store_command(&store, &cfg, &stats, &prefix, &p, &shutdown).await;
                    if !stored {
                        // Shutting down: unacknowledged, it comes again.
                        break;
                    }
                    if let Some(l) = &link
                        && let Err(e) = l.client.ack(&p).await
                    {
                        tracing::warn!(error = %e, "cannot acknowledge a command; the broker will deliver it again");
                    }
                }
                Ok(_) => {}
                Err(why) => {
                    if why.contains("PayloadSizeLimitExceeded") || why.contains("payload size") {
                        too_big += 1;
                        stats.downlink_refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %why, max = MAX_PACKET, "a command too big to read ended the downlink connection");
                    } else {
                        tracing::debug!(error = %why, "downlink not connected");
                    }
                    stats.downlink_connected.store(false, Ordering::Relaxed);
                    link = None;
                    let jitter = Duration::from_millis(u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * 4);
                    reconnect_at = tokio::time::Instant::now() + backoff + jitter;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            },
        }
    }
    stats.downlink_connected.store(false, Ordering::Relaxed);
    if let Some(l) = link {
        let _ = l.client.try_disconnect();
    }
}

/// Stores one command (applied, or refused and recorded), trying again
/// while the store cannot take it (a full disk, no database). Returns
/// false only when stopping first: the command is then not acknowledged.
async fn store_command(
    store: &Store,
    cfg: &Arc<Config>,
    stats: &SyncStats,
    prefix: &str,
    p: &rumqttc::Publish,
    shutdown: &CancellationToken,
) -> bool {
    let kind = p.topic.strip_prefix(prefix).map(str::to_owned);
    tracing::info!(topic = %p.topic, bytes = p.payload.len(), "command from the county received");
    let mut wait = Duration::from_millis(200);
    let mut failures = 0u32;
    loop {
        let kind = kind
            .clone()
            .unwrap_or_else(|| format!("(foreign topic {})", p.topic));
        let payload = p.payload.to_vec();
        let retained = p.retain;
        let cfg2 = Arc::clone(cfg);
        let r = store
            .write(Durability::Acknowledged, move |c| {
                apply(c, &cfg2, &kind, &payload, retained, SystemTime::now())
            })
            .await;
        match r {
            Ok(outcome) => {
                match &outcome {
                    CommandOutcome::Accepted | CommandOutcome::Resent { .. } => {
                        stats.downlink_accepted.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(topic = %p.topic, ?outcome, "command from the county applied");
                    }
                    CommandOutcome::Replay => {
                        tracing::debug!(topic = %p.topic, "command from the county seen before: ignored");
                    }
                    CommandOutcome::Refused(why) => {
                        stats.downlink_refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(topic = %p.topic, reason = %why, "command from the county refused");
                    }
                }
                return true;
            }
            Err(e) => {
                failures += 1;
                let storage = matches!(e, StoreError::DiskFull | StoreError::Unavailable(_));
                if failures == 1 {
                    tracing::error!(topic = %p.topic, error = %e, "command from the county not stored yet: not acknowledged, trying again");
                }
                if !storage && failures >= 5 {
                    // Not the disk: something about this command the store
                    // refuses every time. Let it go rather than wedge every
                    // command behind it.
                    stats.downlink_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(topic = %p.topic, error = %e, "command from the county could not be stored after 5 tries: dropped");
                    return true;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Notices valid at `now`, urgent first, newest first.
pub fn current_notices(conn: &Connection, now: SystemTime) -> Result<Vec<Notice>, StoreError> {
    let at = rfc3339(now);
    let mut st = conn.prepare(
        "SELECT msg_id, title, body, priority, valid_from, valid_until FROM notices
         WHERE valid_from <= ?1 AND valid_until > ?1 ORDER BY priority = 'urgent' DESC, received_at DESC LIMIT 20",
    )?;
    let rows = st.query_map([at], |r| {
        Ok(Notice {
            schema: SCHEMA.into(),
            msg_id: r.get(0)?,
            title: r.get(1)?,
            body: r.get(2)?,
            priority: r.get(3)?,
            valid_from: r.get(4)?,
            valid_until: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Urgent notices valid at `now` that `badge` has not read (the kiosk asks
/// for 已阅 before its check-in answer).
pub fn unread_urgent(
    conn: &Connection,
    badge: &str,
    now: SystemTime,
) -> Result<Vec<Notice>, StoreError> {
    let mut list = current_notices(conn, now)?;
    list.retain(|n| n.priority == "urgent");
    let mut read =
        conn.prepare_cached("SELECT 1 FROM notice_reads WHERE notice = ?1 AND badge = ?2")?;
    let mut out = Vec::new();
    for n in list {
        if !read.exists((&n.msg_id, badge))? {
            out.push(n);
        }
    }
    Ok(out)
}

/// Why a read was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadRefused {
    /// No urgent notice valid now has that id.
    NoNotice,
    /// The badge is not on the roster.
    UnknownBadge,
}

/// Records that `badge` read urgent notice `notice` at `kiosk`, with its
/// outbox row (`notice_read`, the check-in lane); `Ok(Ok(false))` when it
/// was recorded before.
pub fn record_read(
    conn: &Connection,
    cfg: &Config,
    notice: &str,
    badge: &str,
    kiosk: &str,
    now: SystemTime,
) -> Result<Result<bool, ReadRefused>, StoreError> {
    if !current_notices(conn, now)?
        .iter()
        .any(|n| n.msg_id == notice && n.priority == "urgent")
    {
        return Ok(Err(ReadRefused::NoNotice));
    }
    let Some((name, team)) = conn
        .query_row(
            "SELECT name, team FROM workers WHERE badge = ?1",
            [badge],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        )
        .optional()?
    else {
        return Ok(Err(ReadRefused::UnknownBadge));
    };
    let at = rfc3339(now);
    let added = conn.execute(
        "INSERT OR IGNORE INTO notice_reads(notice, badge, read_at, kiosk) VALUES (?1, ?2, ?3, ?4)",
        (notice, badge, &at, kiosk),
    )?;
    if added == 0 {
        return Ok(Ok(false));
    }
    let body = serde_json::to_value(super::protocol::NoticeReadBody {
        county: cfg.station.county.clone(),
        station: cfg.station.id.clone(),
        notice: notice.to_owned(),
        badge: badge.to_owned(),
        name,
        team,
        at: at.clone(),
        kiosk: kiosk.to_owned(),
    })
    .unwrap_or_default();
    outbox::enqueue(conn, Lane::Checkin, "notice_read", &at, &body)?;
    Ok(Ok(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        let src = format!(
            "[station]\ncounty = \"c1\"\nid = \"s1\"\nname = \"n\"\n[outputs]\nbackend = \"sim\"\n[storage]\ndata_dir = \"{}\"\n",
            std::env::temp_dir().display()
        );
        crate::config::load_str(&src, std::path::Path::new("t.toml")).unwrap()
    }

    #[test]
    fn the_county_comments_and_moves_hazards_by_the_lifecycle() {
        let c = db();
        let cfg = cfg();
        let now = SystemTime::now();
        let report = hazards::NewHazard {
            category: pithead_core::hazard::Category::Roof,
            location: "1201 回风巷".into(),
            grade: hazards::Grade::Major,
            description: "顶板掉渣".into(),
            anonymous: true,
            badge: None,
        }
        .validate()
        .unwrap_or_else(|e| panic!("{e:?}"));
        let h = hazards::create(&c, &cfg, &report, None, now).unwrap();
        let outbox = |c: &Connection| -> i64 {
            c.query_row("SELECT count(*) FROM outbox WHERE lane = 1", [], |r| {
                r.get(0)
            })
            .unwrap()
        };
        assert_eq!(outbox(&c), 1);
        let msg = |id: &str, rest: &str| {
            format!(
                r#"{{"schema":"pithead/v1","msg_id":"{id}","ticket":"{}"{rest}}}"#,
                h.ticket
            )
        };
        let run = |m: String| handle(&c, &cfg, "hazard", m.as_bytes(), now).ok();
        let refused = |o: Option<CommandOutcome>| matches!(o, Some(CommandOutcome::Refused(_)));

        // A comment alone: a step that keeps the status, nothing sent back.
        assert_eq!(
            run(msg("h1", r#","comment":"县总工会已督办""#)),
            Some(CommandOutcome::Accepted)
        );
        assert_eq!(
            run(msg("h1", r#","comment":"县总工会已督办""#)),
            Some(CommandOutcome::Replay)
        );
        assert_eq!(outbox(&c), 1);
        // Against the lifecycle, or incomplete: refused with the reason.
        assert!(refused(run(msg("h2", r#","status":"closed""#))));
        assert!(refused(run(msg("h3", r#","status":"assigned""#))));
        assert!(
            refused(run(msg("h4", r#","status":"rejected""#))),
            "rejecting needs a reason"
        );
        assert!(refused(run(msg("h5", r#","status":"burnt""#))));
        assert!(refused(run(msg("h6", r#","owner":"张三""#))));
        assert!(refused(run(msg("h7", ""))));
        assert!(
            refused(run(msg(
                "h10",
                r#","status":"rejected","comment":"重复","deadline":"garbage""#
            ))),
            "owner, deadline and measures only with assigned"
        );
        assert!(refused(run(
            r#"{"schema":"pithead/v1","msg_id":"h8","ticket":"ZZZZZZ","status":"acknowledged"}"#
                .into()
        )));
        // A major hazard assigned by the county: without the five in place
        // it is refused as the console's would be; with them, done.
        assert!(refused(run(msg(
            "h9a",
            r#","status":"assigned","owner":"李工","deadline":"2999-01-01T08:00:00Z","measures":"补打锚杆""#
        ))));
        assert_eq!(
            run(msg(
                "h9",
                r#","status":"assigned","owner":"李工","deadline":"2999-01-01T08:00:00Z","measures":"补打锚杆","funds":"3 万元","plan":"冒顶撤人预案","major_category":"other","comment":"限期整改""#
            )),
            Some(CommandOutcome::Accepted)
        );
        let after = hazards::get(&c, &h.ticket, now)
            .unwrap()
            .unwrap_or_else(|| panic!("gone"));
        assert_eq!(after.status, hazards::Status::Assigned);
        assert_eq!(after.owner.as_deref(), Some("李工"));
        let last = after.steps.last().unwrap_or_else(|| panic!("no steps"));
        assert_eq!(
            (last.by.as_deref(), last.note.as_deref()),
            (Some(COUNTY), Some("限期整改"))
        );
        assert_eq!(after.steps.len(), 3, "reported, the comment, assigned");
        assert_eq!(outbox(&c), 2, "the new status goes back to the county");
    }

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::schema::migrate(&mut c, None).unwrap();
        c
    }

    #[test]
    fn notices_are_checked_stored_once_and_expire() {
        let c = db();
        let now = SystemTime::now();
        let good = r#"{"schema":"pithead/v1","msg_id":"n1","title":"停电检修","body":"明天 8:00-10:00 主井停电检修","priority":"urgent","valid_until":"2999-01-01T00:00:00Z"}"#.as_bytes();
        assert_eq!(
            handle(&c, &cfg(), "notice", good, now).ok(),
            Some(CommandOutcome::Accepted)
        );
        assert_eq!(
            handle(&c, &cfg(), "notice", good, now).ok(),
            Some(CommandOutcome::Replay)
        );
        assert_eq!(current_notices(&c, now).map(|v| v.len()).ok(), Some(1));
        for bad in [
            &br#"{"schema":"pithead/v2","msg_id":"n2","title":"t","body":"b","valid_until":"2999-01-01T00:00:00Z"}"#[..],
            br#"{"schema":"pithead/v1","msg_id":"n3","title":"","body":"b","valid_until":"2999-01-01T00:00:00Z"}"#,
            br#"{"schema":"pithead/v1","msg_id":"n4","title":"t","body":"b","valid_until":"yesterday"}"#,
            br#"{"schema":"pithead/v1","msg_id":"n5","title":"t","body":"b","valid_until":"2999-01-01T00:00:00Z","x":1}"#,
            b"\xff\xfe not json",
        ] {
            assert!(matches!(handle(&c, &cfg(), "notice", bad, now).ok(), Some(CommandOutcome::Refused(_))), "{}", String::from_utf8_lossy(bad));
        }
        assert!(matches!(
            handle(&c, &cfg(), "notice", &vec![b' '; MAX_PAYLOAD + 1], now).ok(),
            Some(CommandOutcome::Refused(_))
        ));
        assert!(matches!(
            handle(&c, &cfg(), "reboot", b"{}", now).ok(),
            Some(CommandOutcome::Refused(_))
        ));
        let expired = br#"{"schema":"pithead/v1","msg_id":"n6","title":"t","body":"b","valid_until":"2000-01-01T00:00:00Z","valid_from":"1999-01-01T00:00:00Z"}"#;
        assert_eq!(
            handle(&c, &cfg(), "notice", expired, now).ok(),
            Some(CommandOutcome::Accepted)
        );
        assert_eq!(
            current_notices(&c, now).map(|v| v.len()).ok(),
            Some(1),
            "expired notices are not shown"
        );
    }

    const NOTICE: &str = r#"{"schema":"pithead/v1","msg_id":"n1","title":"停电检修","body":"明天 8:00-10:00 主井停电检修","priority":"urgent","valid_until":"2999-01-01T00:00:00Z"}"#;
    const STEP: &str = r#"{"schema":"pithead/v1","msg_id":"h1","ticket":"S1-20261124-0001","status":"assigned","owner":"李工","deadline":"2999-01-01T00:00:00Z","measures":"加强支护","note":"县里督办"}"#;

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// Whatever the broker delivers on a command topic is stored or
        /// refused with a reason; never a panic, never a database error.
        #[test]
        fn a_damaged_county_command_is_refused_never_a_panic(
            (kind, bytes) in proptest::prop_oneof![
                crate::testing::mutated(NOTICE.as_bytes().to_vec()).prop_map(|b| ("notice", b)),
                crate::testing::mutated(STEP.as_bytes().to_vec()).prop_map(|b| ("hazard", b)),
                crate::testing::mutated(NOTICE.as_bytes().to_vec()).prop_map(|b| ("comment", b)),
                crate::testing::mutated(STEP.as_bytes().to_vec()).prop_map(|b| ("../../x", b)),
            ]
        ) {
            let c = db();
            let r = handle(&c, &cfg(), kind, &bytes, SystemTime::now());
            proptest::prop_assert!(r.is_ok(), "{kind}: {r:?}");
        }
    }
}
