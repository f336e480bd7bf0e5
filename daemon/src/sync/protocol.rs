//! Protocol v1 to the county (docs/PROTOCOL.md): topics and envelopes.
//! Pure functions.

use serde::Serialize;

use crate::store::outbox::Pending;

/// Schema tag in every message.
pub const SCHEMA: &str = "pithead/v1";

/// `pithead/v1/{county}/{station}/{kind}`.
pub fn topic(county: &str, station: &str, kind: &str) -> String {
    format!("pithead/v1/{county}/{station}/{kind}")
}

/// The name of a lane in messages; `None` for a code no lane has (never
/// sent as something else).
pub fn lane_name(lane: i64) -> Option<&'static str> {
    crate::store::outbox::Lane::from_code(lane).map(crate::store::outbox::Lane::name)
}

/// Everything a receiver needs to de-duplicate and detect gaps.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// Globally unique; a receiver drops a message it has seen.
    pub msg_id: &'a str,
    /// County id.
    pub county: &'a str,
    /// Station id.
    pub station: &'a str,
    /// Changes only when the station's database is made anew: sequence
    /// numbers restart with a new epoch.
    pub epoch: &'a str,
    /// Priority lane.
    pub lane: &'static str,
    /// Sequence number within the lane, from 1, without gaps.
    pub seq: i64,
    /// Message kind.
    pub kind: &'a str,
    /// When the record was made (RFC 3339).
    pub created_at: &'a str,
    /// The record.
    pub body: serde_json::Value,
}

/// The JSON of an outbox row's message; `None` for a row of no known lane.
pub fn envelope(row: &Pending, county: &str, station: &str, epoch: &str) -> Option<String> {
    let body = serde_json::from_str(&row.payload)
        .unwrap_or(serde_json::Value::String(row.payload.clone()));
    serde_json::to_string(&Envelope {
        schema: SCHEMA,
        msg_id: &row.msg_id,
        county,
        station,
        epoch,
        lane: lane_name(row.lane)?,
        seq: row.seq,
        kind: &row.kind,
        created_at: &row.created_at,
        body,
    })
    .ok()
}

/// The retained status message (`online` on connect, `offline` as the
/// last will and on a clean stop).
pub fn status(county: &str, station: &str, state: &str, at: &str) -> String {
    serde_json::json!({
        "schema": SCHEMA,
        "county": county,
        "station": station,
        "state": state,
        "version": env!("CARGO_PKG_VERSION"),
        "at": at,
    })
    .to_string()
}

/// Host, port and TLS from `mqtt://host:port` or `mqtts://host:port`.
pub fn parse_url(url: &str) -> Option<(String, u16, bool)> {
    let (scheme, rest) = url.split_once("://")?;
    let tls = match scheme {
        "mqtt" => false,
        "mqtts" => true,
        _ => return None,
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().ok()?),
        None => (rest.to_owned(), if tls { 8883 } else { 1883 }),
    };
    (!host.is_empty()).then_some((host, port, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_topics_and_envelopes() {
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1884"),
            Some(("127.0.0.1".into(), 1884, false))
        );
        assert_eq!(
            parse_url("mqtts://broker.example"),
            Some(("broker.example".into(), 8883, true))
        );
        assert_eq!(parse_url("http://x"), None);
        assert_eq!(topic("c1", "s1", "alarm"), "pithead/v1/c1/s1/alarm");
        let row = Pending {
            id: 7,
            msg_id: "0193-abc".into(),
            lane: 2,
            seq: 41,
            kind: "checkin".into(),
            created_at: "2026-11-24T06:00:00.000Z".into(),
            payload: "{\"badge\":\"0042\"}".into(),
        };
        let v: serde_json::Value =
            serde_json::from_str(&envelope(&row, "c1", "s1", "e1").unwrap_or_default())
                .unwrap_or_default();
        assert_eq!(v["schema"], "pithead/v1");
        assert_eq!(
            (v["lane"].as_str(), v["seq"].as_i64()),
            (Some("checkin"), Some(41))
        );
        assert_eq!(v["body"]["badge"], "0042");
    }
}
