//! Messages from the county: notices for the kiosk and hazard updates.
//!
//! Only this station's `cmd` topics are subscribed; a payload is capped,
//! must parse as the schema says, and is ignored when its message id was
//! seen. Anything else is logged and counted, never a crash.

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::protocol::SCHEMA;
use crate::store::{StoreError, rfc3339};

/// Largest downlink payload accepted.
pub const MAX_PAYLOAD: usize = 16 * 1024;

/// A notice for the kiosk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notice {
    /// Must be [`SCHEMA`].
    pub schema: String,
    /// The county's message id.
    pub msg_id: String,
    /// Title, up to 100 characters.
    pub title: String,
    /// Text, up to 2000 characters.
    pub body: String,
    /// `normal` or `urgent`.
    #[serde(default = "normal")]
    pub priority: String,
    /// From when (RFC 3339); now if absent.
    #[serde(default)]
    pub valid_from: Option<String>,
    /// Until when (RFC 3339).
    pub valid_until: String,
}

fn normal() -> String {
    "normal".into()
}

/// A hazard update from the county.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HazardUpdate {
    /// Must be [`SCHEMA`].
    pub schema: String,
    /// The county's message id.
    pub msg_id: String,
    /// The hazard's ticket.
    pub ticket: String,
    /// A comment for the record.
    pub comment: String,
}

/// What became of a downlink message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored.
    Accepted,
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
    kind: &str,
    payload: &[u8],
    now: SystemTime,
) -> Result<Outcome, StoreError> {
    if payload.len() > MAX_PAYLOAD {
        return Ok(Outcome::Refused(format!(
            "payload of {} bytes is over the {MAX_PAYLOAD}-byte cap",
            payload.len()
        )));
    }
    match kind {
        "notice" => {
            let n: Notice = match serde_json::from_slice(payload) {
                Ok(n) => n,
                Err(e) => return Ok(Outcome::Refused(format!("not a notice: {e}"))),
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
                Err(e) => return Ok(Outcome::Refused(e)),
            };
            let added = conn.execute(
                "INSERT OR IGNORE INTO notices(msg_id, title, body, priority, valid_from, valid_until, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                (&n.msg_id, &title, &body, &priority, rfc3339(from), rfc3339(until), rfc3339(now)),
            )?;
            Ok(if added == 1 {
                Outcome::Accepted
            } else {
                Outcome::Replay
            })
        }
        "hazard" => {
            let u: HazardUpdate = match serde_json::from_slice(payload) {
                Ok(u) => u,
                Err(e) => return Ok(Outcome::Refused(format!("not a hazard update: {e}"))),
            };
            if u.schema != SCHEMA {
                return Ok(Outcome::Refused(format!(
                    "schema `{}` is not {SCHEMA}",
                    u.schema
                )));
            }
            let comment = match check_text(&u.comment, 200, "comment") {
                Ok(c) => c,
                Err(e) => return Ok(Outcome::Refused(e)),
            };
            let seen = conn
                .query_row(
                    "SELECT 1 FROM events WHERE kind = 'county.hazard' AND subject = ?1",
                    [&u.msg_id],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if seen {
                return Ok(Outcome::Replay);
            }
            let Some((id, status)) = conn
                .query_row(
                    "SELECT id, status FROM hazards WHERE ticket = ?1",
                    [&u.ticket],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
                )
                .optional()?
            else {
                return Ok(Outcome::Refused(format!(
                    "no hazard with ticket {}",
                    u.ticket
                )));
            };
            let at = rfc3339(now);
            // A comment is a step that keeps the status, by the county.
            conn.execute(
                "INSERT INTO hazard_steps(hazard_id, status, by, note, at) VALUES (?1, ?2, '县总工会', ?3, ?4)",
                (id, &status, &comment, &at),
            )?;
            crate::store::events::insert(
                conn,
                &at,
                &crate::store::events::NewEvent {
                    kind: "county.hazard".into(),
                    actor: Some("county".into()),
                    subject: Some(u.msg_id.clone()),
                    detail: serde_json::json!({ "ticket": u.ticket, "comment": comment }),
                },
            )?;
            Ok(Outcome::Accepted)
        }
        other => Ok(Outcome::Refused(format!("unknown command `{other}`"))),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        crate::store::schema::migrate(&mut c, None).unwrap_or_else(|e| panic!("{e}"));
        c
    }

    #[test]
    fn notices_are_checked_stored_once_and_expire() {
        let c = db();
        let now = SystemTime::now();
        let good = r#"{"schema":"pithead/v1","msg_id":"n1","title":"停电检修","body":"明天 8:00-10:00 主井停电检修","priority":"urgent","valid_until":"2999-01-01T00:00:00Z"}"#.as_bytes();
        assert_eq!(
            handle(&c, "notice", good, now).ok(),
            Some(Outcome::Accepted)
        );
        assert_eq!(handle(&c, "notice", good, now).ok(), Some(Outcome::Replay));
        assert_eq!(current_notices(&c, now).map(|v| v.len()).ok(), Some(1));
        for bad in [
            &br#"{"schema":"pithead/v2","msg_id":"n2","title":"t","body":"b","valid_until":"2999-01-01T00:00:00Z"}"#[..],
            br#"{"schema":"pithead/v1","msg_id":"n3","title":"","body":"b","valid_until":"2999-01-01T00:00:00Z"}"#,
            br#"{"schema":"pithead/v1","msg_id":"n4","title":"t","body":"b","valid_until":"yesterday"}"#,
            br#"{"schema":"pithead/v1","msg_id":"n5","title":"t","body":"b","valid_until":"2999-01-01T00:00:00Z","x":1}"#,
            b"\xff\xfe not json",
        ] {
            assert!(matches!(handle(&c, "notice", bad, now).ok(), Some(Outcome::Refused(_))), "{}", String::from_utf8_lossy(bad));
        }
        assert!(matches!(
            handle(&c, "notice", &vec![b' '; MAX_PAYLOAD + 1], now).ok(),
            Some(Outcome::Refused(_))
        ));
        assert!(matches!(
            handle(&c, "reboot", b"{}", now).ok(),
            Some(Outcome::Refused(_))
        ));
        let expired = br#"{"schema":"pithead/v1","msg_id":"n6","title":"t","body":"b","valid_until":"2000-01-01T00:00:00Z","valid_from":"1999-01-01T00:00:00Z"}"#;
        assert_eq!(
            handle(&c, "notice", expired, now).ok(),
            Some(Outcome::Accepted)
        );
        assert_eq!(
            current_notices(&c, now).map(|v| v.len()).ok(),
            Some(1),
            "expired notices are not shown"
        );
    }
}
