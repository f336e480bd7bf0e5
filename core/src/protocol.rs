//! Protocol v1 between a station and the county (`docs/PROTOCOL.md`):
//! topics, lanes, the envelope, every message body, and the county's
//! commands, as typed structs. The station writes them and the county's
//! receiver reads them with these same types; a field added here is added
//! on both sides.
//!
//! Receivers stay lenient where the protocol may grow (unknown fields in a
//! station's message are ignored); the station is strict about what the
//! county sends it (unknown fields refused).

use serde::{Deserialize, Serialize};

use crate::engine::{AlarmKind, EventKind};
use crate::hazard::{Hazard, Status};
use crate::reading::ReadingState;
use crate::roster::Checkin;

/// Schema tag in every message.
pub const SCHEMA: &str = "pithead/v1";

/// The topic filter a county receiver subscribes to (every station's
/// messages, not the commands).
pub const ALL_STATIONS: &str = "pithead/v1/+/+/+";

/// `pithead/v1/{county}/{station}/{kind}`.
pub fn topic(county: &str, station: &str, kind: &str) -> String {
    format!("pithead/v1/{county}/{station}/{kind}")
}

/// (county, station, kind) of a station's topic; `None` for any other.
pub fn parse_topic(topic: &str) -> Option<(&str, &str, &str)> {
    let rest = topic.strip_prefix("pithead/v1/")?;
    let mut it = rest.splitn(3, '/');
    let (county, station, kind) = (it.next()?, it.next()?, it.next()?);
    (!county.is_empty() && !station.is_empty() && !kind.is_empty())
        .then_some((county, station, kind))
}

/// Priority lanes, most urgent first. A lane's backlog never holds back a
/// more urgent lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// Alarm transitions and acknowledgements.
    Alarm = 0,
    /// Hazard reports and their lifecycle, and answers to county commands.
    Hazard = 1,
    /// Check-ins, check-outs and head-counts.
    Checkin = 2,
    /// Periodic summaries and gap records; the only lane ever dropped when
    /// the cap is hit.
    Summary = 3,
}

impl Lane {
    /// Every lane, most urgent first.
    pub const ALL: [Lane; 4] = [Lane::Alarm, Lane::Hazard, Lane::Checkin, Lane::Summary];

    /// The number the station stores.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// The lane with this code; `None` for a code no lane has (never read
    /// as another lane).
    pub fn from_code(code: i64) -> Option<Lane> {
        Lane::ALL.into_iter().find(|l| l.code() == code)
    }

    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Lane::Alarm => "alarm",
            Lane::Hazard => "hazard",
            Lane::Checkin => "checkin",
            Lane::Summary => "summary",
        }
    }

    /// The lane named `name` in messages.
    pub fn from_name(name: &str) -> Option<Lane> {
        Lane::ALL.into_iter().find(|l| l.name() == name)
    }
}

/// Everything a receiver needs to de-duplicate and detect gaps, around a
/// body already in JSON (as the station stores it).
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
    pub lane: Lane,
    /// Sequence number within the lane, from 1, without gaps.
    pub seq: i64,
    /// Message kind.
    pub kind: &'a str,
    /// When the record was made (RFC 3339).
    pub created_at: &'a str,
    /// The record.
    pub body: &'a serde_json::value::RawValue,
}

impl Envelope<'_> {
    /// The message's JSON.
    pub fn to_json(&self) -> Option<String> {
        serde_json::to_string(self).ok()
    }
}

/// The JSON of one message: `payload` (the body as stored) in its envelope.
/// A payload that is not JSON (never written by the station) goes as a
/// JSON string; `None` only if even that cannot be written.
#[allow(clippy::too_many_arguments)]
pub fn envelope(
    msg_id: &str,
    county: &str,
    station: &str,
    epoch: &str,
    lane: Lane,
    seq: i64,
    kind: &str,
    created_at: &str,
    payload: &str,
) -> Option<String> {
    let quoted: Box<serde_json::value::RawValue>;
    let body = match serde_json::from_str::<&serde_json::value::RawValue>(payload) {
        Ok(raw) => raw,
        Err(_) => {
            quoted = serde_json::value::to_raw_value(payload).ok()?;
            &*quoted
        }
    };
    Envelope {
        schema: SCHEMA,
        msg_id,
        county,
        station,
        epoch,
        lane,
        seq,
        kind,
        created_at,
        body,
    }
    .to_json()
}

/// A station's message as a receiver reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// [`SCHEMA`].
    pub schema: String,
    /// Globally unique.
    pub msg_id: String,
    /// County id.
    pub county: String,
    /// Station id.
    pub station: String,
    /// The station database's id.
    pub epoch: String,
    /// Priority lane.
    pub lane: Lane,
    /// Sequence number within `(epoch, lane)`.
    pub seq: i64,
    /// Message kind.
    pub kind: String,
    /// When the record was made (RFC 3339).
    pub created_at: String,
    /// The record, as sent.
    pub body: serde_json::Value,
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    /// Not JSON, or not the shape of its kind.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// Another schema.
    #[error("schema {0:?} is not {SCHEMA}")]
    Schema(String),
    /// A kind this version does not know.
    #[error("unknown kind {0:?}")]
    Kind(String),
}

impl Message {
    /// Reads a message, checking its schema.
    pub fn parse(json: &[u8]) -> Result<Message, Malformed> {
        let m: Message = serde_json::from_slice(json)?;
        if m.schema != SCHEMA {
            return Err(Malformed::Schema(m.schema));
        }
        Ok(m)
    }

    /// Its body, typed by its kind.
    pub fn body(&self) -> Result<Body, Malformed> {
        let b = self.body.clone();
        Ok(match self.kind.as_str() {
            "alarm" => Body::Alarm(serde_json::from_value(b)?),
            "checkin" => Body::Checkin(serde_json::from_value(b)?),
            "hazard" => Body::Hazard(Box::new(serde_json::from_value(b)?)),
            "headcount" => Body::Headcount(serde_json::from_value(b)?),
            "summary" => Body::Summary(serde_json::from_value(b)?),
            "gap" => Body::Gap(serde_json::from_value(b)?),
            "cmd_ack" => Body::CmdAck(serde_json::from_value(b)?),
            "notice_read" => Body::NoticeRead(serde_json::from_value(b)?),
            "light" => Body::Light(Box::new(serde_json::from_value(b)?)),
            other => return Err(Malformed::Kind(other.to_owned())),
        })
    }
}

/// Every record a station sends, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// `alarm`.
    Alarm(AlarmBody),
    /// `checkin`.
    Checkin(CheckinBody),
    /// `hazard`.
    Hazard(Box<HazardBody>),
    /// `headcount`.
    Headcount(HeadcountBody),
    /// `summary`.
    Summary(SummaryBody),
    /// `gap`.
    Gap(GapBody),
    /// `cmd_ack`.
    CmdAck(CmdAckBody),
    /// `notice_read`.
    NoticeRead(NoticeReadBody),
    /// `light`.
    Light(Box<LightBody>),
}

/// The station's own light (预评), computed live on the station from its
/// own data by the same rule as the county's quarterly light
/// ([`crate::light::judge`]); sent daily and whenever it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LightBody {
    /// County id.
    pub county: String,
    /// Station id.
    pub station: String,
    /// `green`, `yellow` or `red`.
    pub light: String,
    /// Each reason, `[zh, en]`.
    pub reasons: Vec<(String, String)>,
    /// The facts it was judged on (this quarter so far).
    pub facts: crate::light::Facts,
    /// The rule's figures the station uses.
    pub rule: crate::light::Rule,
    /// The quarter, e.g. `2026-Q4` (in the station's local time).
    pub quarter: String,
    /// When it was judged (RFC 3339).
    pub at: String,
}

/// A miner read an urgent county notice at check-in (tapped 已阅).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoticeReadBody {
    /// County id.
    pub county: String,
    /// Station id.
    pub station: String,
    /// The notice: the `msg_id` of its `cmd/notice`.
    pub notice: String,
    /// Who read it.
    pub badge: String,
    /// Their name, from the roster.
    pub name: String,
    /// Their team.
    pub team: String,
    /// When (RFC 3339).
    pub at: String,
    /// The kiosk it was read at (`local` for the box's own screen).
    pub kiosk: String,
}

/// What an alarm is about, as messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmLevel {
    /// The channel (or an output, or the station) cannot be trusted.
    Fault,
    /// Warning level.
    Warning,
    /// Alarm level.
    Alarm,
    /// Power-cut level.
    PowerCut,
    /// A miner past shift and grace.
    Overdue,
    /// More people underground than allowed (`channel` = `underground` or
    /// `team:NAME`, `value` = how many).
    Overcrowded,
}

impl From<AlarmKind> for AlarmLevel {
    fn from(k: AlarmKind) -> Self {
        use crate::domain::LevelName;
        match k {
            AlarmKind::Fault => AlarmLevel::Fault,
            AlarmKind::Level(LevelName::Warning) => AlarmLevel::Warning,
            AlarmKind::Level(LevelName::Alarm) => AlarmLevel::Alarm,
            AlarmKind::Level(LevelName::PowerCut) => AlarmLevel::PowerCut,
            AlarmKind::Overdue => AlarmLevel::Overdue,
            AlarmKind::Overcrowded => AlarmLevel::Overcrowded,
        }
    }
}

/// An alarm transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmBody {
    /// County id.
    pub county: String,
    /// Station id.
    pub station: String,
    /// The alarm's id (unique on the station, across restarts).
    pub alarm_id: u64,
    /// What happened.
    pub event: EventKind,
    /// Channel id, `worker:BADGE`, `output:NAME` or `system:…`.
    pub channel: String,
    /// Fault or level.
    pub level: AlarmLevel,
    /// The value, `None` when the channel had no reading.
    pub value: Option<f64>,
    /// The reading's state.
    pub state: ReadingState,
    /// Who, for an acknowledgement.
    pub by: Option<String>,
    /// When (RFC 3339).
    pub at: String,
    /// Raised, or changed, while its channel was in calibration (标校):
    /// a calibration alarm (absent when false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub calibration: bool,
}

/// A check-in or check-out attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckinBody {
    /// The record.
    #[serde(flatten)]
    pub record: Checkin,
    /// County id.
    pub county: String,
    /// Station id.
    pub station: String,
}

/// A hazard as it stands after a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HazardBody {
    /// The step taken (`reported` first).
    pub event: Status,
    /// A major hazard.
    pub urgent: bool,
    /// The whole hazard.
    #[serde(flatten)]
    pub hazard: Hazard,
    /// County id.
    pub county: String,
    /// Station id.
    pub station: String,
}

/// Someone underground, in a head-count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// Badge.
    pub badge: String,
    /// Name.
    pub name: String,
    /// Team.
    pub team: String,
    /// Checked in at (RFC 3339).
    pub since: String,
    /// Past shift length and grace.
    pub overdue: bool,
}

/// Who is underground.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadcountBody {
    /// County id.
    pub county: String,
    /// Station id.
    pub station: String,
    /// When counted (RFC 3339).
    pub at: String,
    /// How many are underground (in all parts).
    pub underground: usize,
    /// How many of them are overdue.
    pub overdue: usize,
    /// The people (of this part).
    pub people: Vec<Person>,
    /// This part's number, from 1, when the count was split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<usize>,
    /// How many parts, when split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<usize>,
}

/// One channel's minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinuteStats {
    /// The minute's start (RFC 3339).
    pub minute: String,
    /// Over good readings; `None` for a minute with none.
    pub min: Option<f64>,
    /// Over good readings.
    pub max: Option<f64>,
    /// Over good readings.
    pub mean: Option<f64>,
    /// Readings in the minute.
    pub count: i64,
    /// Readings in a special state.
    pub faults: i64,
    /// Readings taken while the channel was in calibration (标校): in none
    /// of the figures above (absent when 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub calibrating: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// One channel's minutes in a summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelMinutes {
    /// Channel id.
    pub channel: String,
    /// Oldest first.
    pub minutes: Vec<MinuteStats>,
}

/// Per-minute statistics for `from..to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryBody {
    /// County id.
    pub county: String,
    /// Station id.
    pub station: String,
    /// First minute covered (RFC 3339).
    pub from: String,
    /// End of the last minute covered (RFC 3339).
    pub to: String,
    /// The channels (of this part).
    pub channels: Vec<ChannelMinutes>,
    /// This part's number, from 1, when the summary was split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<usize>,
    /// How many parts, when split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<usize>,
}

/// Why numbers will never be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// The outbox reached its cap: the oldest summaries went.
    OutboxCap,
    /// A row the broker would not take, kept on the station.
    SetAside,
}

/// Numbers the station will never send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GapBody {
    /// County id.
    pub county: String,
    /// Station id.
    pub station: String,
    /// The lane of the numbers.
    pub lane: Lane,
    /// First number, inclusive.
    pub from_seq: i64,
    /// Last number, inclusive.
    pub to_seq: i64,
    /// How many.
    pub count: i64,
    /// Why.
    pub reason: GapReason,
    /// For `set_aside`: what the broker did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For `set_aside`: the row's kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// For `set_aside`: its size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<usize>,
    /// When (RFC 3339).
    pub at: String,
}

/// Whether a command was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckOutcome {
    /// Applied.
    Applied,
    /// Refused, with a reason.
    Refused,
}

/// The station's answer to a county command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CmdAckBody {
    /// County id.
    pub county: String,
    /// Station id.
    pub station: String,
    /// The command's `msg_id`, when it had a readable one.
    pub cmd_msg_id: Option<String>,
    /// The command (topic suffix).
    pub cmd: String,
    /// Applied or refused.
    pub outcome: AckOutcome,
    /// Why refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `resend`: rows marked to go again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resent: Option<usize>,
    /// For `resend`: inclusive ranges the station no longer has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone: Option<Vec<(i64, i64)>>,
    /// When (RFC 3339).
    pub at: String,
}

/// Online or offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Connected.
    Online,
    /// Gone (last will, or a clean stop).
    Offline,
}

/// The retained `status` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusMessage {
    /// [`SCHEMA`].
    pub schema: String,
    /// County id.
    pub county: String,
    /// Station id.
    pub station: String,
    /// Online or offline.
    pub state: Presence,
    /// The station's software version.
    pub version: String,
    /// When the connection was made, or the station stopped.
    pub at: String,
    /// What waits in the station's outbox, as of `backlog.at` (online
    /// statuses; absent from the last will and older stations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<UplinkBacklog>,
}

/// The uplink backlog a station reports in its `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkBacklog {
    /// Messages not yet acknowledged by the broker.
    pub pending: i64,
    /// Their size in bytes.
    pub bytes: i64,
    /// Summaries ever dropped at the outbox cap.
    pub dropped_summaries: i64,
    /// Rows set aside (never sent).
    pub set_aside: i64,
    /// When it was counted (RFC 3339).
    pub at: String,
}

/// The JSON of a `status` message.
pub fn status(
    county: &str,
    station: &str,
    state: Presence,
    version: &str,
    at: &str,
    backlog: Option<UplinkBacklog>,
) -> String {
    serde_json::to_string(&StatusMessage {
        schema: SCHEMA.into(),
        county: county.into(),
        station: station.into(),
        state,
        version: version.into(),
        at: at.into(),
        backlog,
    })
    .unwrap_or_default()
}

// County → station.

/// Largest command payload a station accepts.
pub const MAX_COMMAND: usize = 16 * 1024;

/// Who county steps on a hazard are recorded as.
pub const COUNTY: &str = "县总工会";

/// Most sequence numbers one `resend` may ask for.
pub const MAX_RESEND: i64 = 100_000;

/// `cmd/notice`: a notice for the kiosk.
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

/// `cmd/hazard`: a comment, a new status, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HazardUpdate {
    /// Must be [`SCHEMA`].
    pub schema: String,
    /// The county's message id.
    pub msg_id: String,
    /// The hazard's ticket.
    pub ticket: String,
    /// A comment for the record (the note of the step when `status` is set;
    /// required to reject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The status the county moves the hazard to, by the same lifecycle as
    /// the console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// For `assigned`: who rectifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// For `assigned`: by when, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// For `assigned`: the measures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measures: Option<String>,
    /// For `assigned`: the funds (资金; required for a major hazard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funds: Option<String>,
    /// For `assigned`: the plan (预案; required for a major hazard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// For `assigned` of a major hazard: its category of the fifteen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major_category: Option<crate::hazard::MajorCategory>,
}

/// `cmd/resend`: send a range of numbers again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resend {
    /// Must be [`SCHEMA`].
    pub schema: String,
    /// The county's message id.
    pub msg_id: String,
    /// The epoch the numbers belong to: the station's, or refused.
    pub epoch: String,
    /// `alarm`, `hazard`, `checkin` or `summary` (a name no lane has is
    /// refused with its own reason).
    pub lane: String,
    /// First sequence number, inclusive.
    pub from_seq: i64,
    /// Last sequence number, inclusive.
    pub to_seq: i64,
}

/// A county command signed by the county (Ed25519): the command as it
/// would be published unsigned, and the signature over the topic it is
/// published on, a newline, and those bytes ([`signed_bytes`]). The topic
/// is signed too, so a command for one station cannot be replayed to
/// another; a replay to the same one is a `msg_id` seen before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    /// Must be [`SCHEMA`].
    pub schema: String,
    /// The command's JSON, base64 (standard alphabet, padded).
    pub signed: String,
    /// The Ed25519 signature, base64.
    pub sig: String,
}

/// What a command's signature covers: `topic`, a newline, `payload`.
pub fn signed_bytes(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(topic.len() + 1 + payload.len());
    b.extend_from_slice(topic.as_bytes());
    b.push(b'\n');
    b.extend_from_slice(payload);
    b
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
        assert_eq!(
            parse_topic("pithead/v1/c1/s1/cmd/notice"),
            Some(("c1", "s1", "cmd/notice"))
        );
        assert_eq!(parse_topic("pithead/v2/c1/s1/alarm"), None);
        assert_eq!(parse_topic("pithead/v1/c1//alarm"), None);
        let json = envelope(
            "0193-abc",
            "c1",
            "s1",
            "e1",
            Lane::Checkin,
            41,
            "checkin",
            "2026-11-24T06:00:00.000Z",
            "{\"badge\":\"0042\"}",
        )
        .unwrap_or_default();
        let m = Message::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{e}: {json}"));
        assert_eq!(
            (m.lane, m.seq, m.kind.as_str()),
            (Lane::Checkin, 41, "checkin")
        );
        assert_eq!(m.body["badge"], "0042");
        // A body that is not JSON still makes a readable envelope.
        let json = envelope("x", "c", "s", "e", Lane::Alarm, 1, "alarm", "t", "not json")
            .unwrap_or_default();
        let m = Message::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{e}: {json}"));
        assert_eq!(m.body, "not json");
        assert!(matches!(m.body(), Err(Malformed::Json(_))));
    }

    #[test]
    fn a_lane_is_never_read_as_another() {
        for l in Lane::ALL {
            assert_eq!(Lane::from_code(l.code()), Some(l));
            assert_eq!(Lane::from_name(l.name()), Some(l));
            assert_eq!(
                serde_json::to_value(l).unwrap_or_default(),
                serde_json::Value::from(l.name())
            );
        }
        assert_eq!(Lane::from_code(4), None);
        assert_eq!(Lane::from_code(-1), None);
        assert_eq!(Lane::from_name("summaries"), None);
        assert!(serde_json::from_str::<Lane>("\"events\"").is_err());
    }

    #[test]
    fn a_status_carries_its_backlog_and_older_ones_none() {
        let with = r#"{ "schema": "pithead/v1", "county": "xx-county", "station": "mine3-shaft1",
            "state": "online", "version": "0.1.0", "at": "2026-11-24T06:00:00.120Z",
            "backlog": { "pending": 1843, "bytes": 912344, "dropped_summaries": 0, "set_aside": 0,
                         "at": "2026-11-24T06:00:00.118Z" } }"#;
        let s: StatusMessage = serde_json::from_str(with).unwrap();
        assert_eq!(s.backlog.map(|b| b.pending), Some(1843));
        let old = r#"{"schema":"pithead/v1","county":"c","station":"s","state":"offline","version":"0.1.0","at":"t"}"#;
        let s: StatusMessage = serde_json::from_str(old).unwrap();
        assert_eq!(s.backlog, None);
        assert!(!status("c", "s", Presence::Offline, "0.1.0", "t", None).contains("backlog"));
    }

    #[test]
    fn the_documented_examples_read_as_their_types() {
        // The bodies of docs/PROTOCOL.md's examples.
        let alarm = r#"{ "county": "xx-county", "station": "mine3-shaft1", "alarm_id": 1795481537415000,
            "event": "raised", "channel": "ch4-1201-face", "level": "power_cut",
            "value": 1.52, "state": "ok", "by": null, "at": "2026-11-24T06:01:02.115Z" }"#;
        let a: AlarmBody = serde_json::from_str(alarm).unwrap();
        assert_eq!(
            (a.event, a.level),
            (EventKind::Raised, AlarmLevel::PowerCut)
        );
        let checkin = r#"{ "id": 204, "badge": "0042", "name": "张伟", "team": "综采一队", "direction": "in",
            "outcome": "ok", "at": "2026-11-24T06:02:10.511Z", "underground_since": null,
            "minutes_underground": null, "county": "xx-county", "station": "mine3-shaft1" }"#;
        let c: CheckinBody = serde_json::from_str(checkin).unwrap();
        assert_eq!((c.record.id, c.station.as_str()), (204, "mine3-shaft1"));
        let hazard = r#"{ "event": "assigned", "urgent": true, "ticket": "7KQ2MZ", "category": "roof",
            "location": "1201 回风巷", "grade": "major", "description": "顶板掉渣", "photo": null,
            "reporter": null, "status": "assigned", "owner": "李工", "deadline": "2026-11-30T18:00:00.000Z",
            "measures": "加强支护", "overdue": false, "reported_at": "a", "updated_at": "b",
            "steps": [ { "status": "reported", "by": null, "note": null, "at": "c" } ],
            "county": "xx-county", "station": "mine3-shaft1" }"#;
        let h: HazardBody = serde_json::from_str(hazard).unwrap();
        assert_eq!(
            (h.event, h.hazard.status),
            (Status::Assigned, Status::Assigned)
        );
        let gap = r#"{ "county": "xx-county", "station": "mine3-shaft1", "lane": "summary",
            "from_seq": 1, "to_seq": 805, "count": 805, "reason": "outbox_cap",
            "at": "2026-11-28T06:00:00.000Z" }"#;
        let g: GapBody = serde_json::from_str(gap).unwrap();
        assert_eq!(
            (g.lane, g.reason, g.count),
            (Lane::Summary, GapReason::OutboxCap, 805)
        );
        let status: StatusMessage =
            serde_json::from_str(&status("c", "s", Presence::Offline, "0.1.0", "t", None)).unwrap();
        assert_eq!(status.state, Presence::Offline);
        // Unknown fields of a station's message are ignored (the protocol
        // grows); of a county command, refused.
        let later = alarm.replace("\"by\": null", "\"by\": null, \"zone\": \"1201\"");
        assert!(serde_json::from_str::<AlarmBody>(&later).is_ok());
        let notice = r#"{"schema":"pithead/v1","msg_id":"m","title":"t","body":"b","valid_until":"u","x":1}"#;
        assert!(serde_json::from_str::<Notice>(notice).is_err());
    }
}
