//! The alarm state machine: pure logic over readings and monotonic time.
//!
//! No I/O, no clocks of its own: every call takes `now` (monotonic, for
//! delays) and `wall` (for records). The engine is the only code that
//! decides alarms; [`Engine::outputs`] says what the siren, beacon and
//! power-cut relay must show.
//!
//! Rules (the alarm invariants of `docs/ARCHITECTURE.md`):
//! * each channel has ordered levels; a level is raised when its condition
//!   has held for `on_delay`, and its condition clears when the value is back
//!   past the threshold by `deadband` for `off_delay`;
//! * a latching level stays active after its condition cleared until a
//!   supervisor acknowledges it; acknowledging silences the siren for that
//!   alarm and never hides it;
//! * every special state (`comm_fault`, `out_of_range`, `stale`) raises a
//!   latching fault alarm; on a channel with a power-cut level it also
//!   raises that level at once (fail-safe), whatever its delays;
//! * `warming_up` raises nothing but keeps the beacon yellow and the power
//!   cut on channels that guard it, until the first real reading.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::domain::{Direction, LevelName};
use crate::reading::{Reading, ReadingState};

/// One level of one channel, resolved from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelRule {
    /// Which level.
    pub name: LevelName,
    /// Where it starts.
    pub threshold: f64,
    /// Which side is dangerous.
    pub direction: Direction,
    /// How far back past the threshold the value must go to restore.
    pub deadband: f64,
    /// How long the condition must hold before raising.
    pub on_delay: Duration,
    /// How long the condition must be clear before restoring.
    pub off_delay: Duration,
    /// Whether the level stays until acknowledged.
    pub latching: bool,
}

impl LevelRule {
    fn on(&self, v: f64) -> bool {
        match self.direction {
            Direction::Rising => v >= self.threshold,
            Direction::Falling => v <= self.threshold,
        }
    }

    fn restored(&self, v: f64) -> bool {
        match self.direction {
            Direction::Rising => v < self.threshold - self.deadband,
            Direction::Falling => v > self.threshold + self.deadband,
        }
    }
}

/// The alarm rules of one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRules {
    /// Channel id, for events.
    pub id: String,
    /// Levels, mildest first.
    pub levels: Vec<LevelRule>,
}

impl ChannelRules {
    /// Whether the channel has a power-cut level (and so cuts power when it
    /// cannot be read).
    pub fn guards_power(&self) -> bool {
        self.levels.iter().any(|l| l.name == LevelName::PowerCut)
    }
}

/// What an alarm is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// The channel cannot be read (comm fault, out of range, stale).
    Fault,
    /// A threshold level.
    Level(LevelName),
    /// A miner is still underground past shift length and grace.
    Overdue,
    /// More people underground than allowed (超员), in all or in a team.
    Overcrowded,
}

impl AlarmKind {
    /// The name used in the API and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::Fault => "fault",
            AlarmKind::Level(LevelName::Warning) => "warning",
            AlarmKind::Level(LevelName::Alarm) => "alarm",
            AlarmKind::Level(LevelName::PowerCut) => "power_cut",
            AlarmKind::Overdue => "overdue",
            AlarmKind::Overcrowded => "overcrowded",
        }
    }

    /// The kind named `s` (as [`AlarmKind::as_str`] writes it).
    pub fn parse(s: &str) -> Option<AlarmKind> {
        [
            AlarmKind::Fault,
            AlarmKind::Level(LevelName::Warning),
            AlarmKind::Level(LevelName::Alarm),
            AlarmKind::Level(LevelName::PowerCut),
            AlarmKind::Overdue,
            AlarmKind::Overcrowded,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Who acknowledged an alarm, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ack {
    /// The supervisor's name.
    pub by: String,
    /// Wall-clock time.
    pub at: SystemTime,
}

/// An active alarm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alarm {
    /// Unique id (also across restarts; see [`Engine::new`]).
    pub id: u64,
    /// Channel index (`usize::MAX` for an alarm about a person).
    pub channel: usize,
    /// What the alarm is about when it is not a channel: `worker:BADGE`.
    pub subject: Option<String>,
    /// Fault or level.
    pub kind: AlarmKind,
    /// Value when raised (`None` when raised by a special state).
    pub value: Option<f64>,
    /// Reading state when raised.
    pub state: ReadingState,
    /// When raised, monotonic.
    #[serde(skip)]
    pub raised_at: Instant,
    /// When raised, wall clock.
    pub raised_wall: SystemTime,
    /// Whether its condition still holds.
    pub condition: bool,
    /// Whether it stays until acknowledged.
    pub latching: bool,
    /// Whether it keeps the power cut while active, whatever the channels
    /// say (the alarm history could not be read at start).
    pub holds_power: bool,
    /// The acknowledgement, if any.
    pub acked: Option<Ack>,
}

/// Subject of the alarm raised when the alarm history cannot be read at
/// start: it keeps the power cut until a supervisor acknowledges it.
pub const HISTORY_SUBJECT: &str = "system:alarm_history";

/// Subject of the latching fault raised when the power relay's feedback
/// (馈电) disagrees with its command: it holds the power cut (and the
/// beacon red) until it no longer holds and a supervisor acknowledged it.
pub const FEEDBACK_SUBJECT: &str = "output:power_relay:feedback";

/// Whether a subject alarm (`output:…`, `system:…`) is one the event log
/// brings back after a restart; overdue miners (`worker:…`) are judged
/// again from the check-ins instead.
pub fn restorable_subject(subject: &str) -> bool {
    subject.starts_with("output:") || subject.starts_with("system:")
}

/// What happened to an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new alarm on a channel that had none of this kind.
    Raised,
    /// A more severe level on a channel that already had a milder one.
    Escalated,
    /// A supervisor acknowledged it.
    Acknowledged,
    /// The condition of a latched, unacknowledged alarm is gone: it waits
    /// for an acknowledgement.
    Returned,
    /// The condition of a latched alarm came back before it was
    /// acknowledged.
    Recurred,
    /// Its condition is gone and, if latching, it was acknowledged: it ends.
    Cleared,
}

impl EventKind {
    /// The name used in the event log and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Raised => "raised",
            EventKind::Escalated => "escalated",
            EventKind::Acknowledged => "acknowledged",
            EventKind::Returned => "returned",
            EventKind::Recurred => "recurred",
            EventKind::Cleared => "cleared",
        }
    }
}

/// One transition, for the event log, the county and the console.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlarmEvent {
    /// What happened.
    pub kind: EventKind,
    /// The alarm's id.
    pub alarm_id: u64,
    /// Channel id.
    pub channel: String,
    /// Fault or level.
    pub level: AlarmKind,
    /// The value at the transition, if the channel had one.
    pub value: Option<f64>,
    /// The reading's state at the transition.
    pub state: ReadingState,
    /// Who, for acknowledgements.
    pub by: Option<String>,
    /// When, wall clock.
    pub at: SystemTime,
}

/// An alarm brought back from the event log at start.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    /// Its id.
    pub id: u64,
    /// Channel id.
    pub channel: String,
    /// Fault or level.
    pub kind: AlarmKind,
    /// Value when raised.
    pub value: Option<f64>,
    /// When raised.
    pub raised_wall: SystemTime,
    /// Its acknowledgement, if it had one.
    pub acked: Option<Ack>,
}

/// Beacon colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Beacon {
    /// All normal.
    Green,
    /// A warning, a fault, or sensors warming up.
    Yellow,
    /// An alarm or a power cut.
    Red,
}

/// What the outputs must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Outputs {
    /// Siren sounding: some alarm is unacknowledged.
    pub siren: bool,
    /// Worst active state.
    pub beacon: Beacon,
    /// Power-cut relay energised: no power-cut level is active and no
    /// channel guarding power is unreadable.
    pub power_allowed: bool,
}

impl Outputs {
    /// The state a dead or stalled engine must leave behind.
    pub const FAIL_SAFE: Outputs = Outputs {
        siren: true,
        beacon: Beacon::Red,
        power_allowed: false,
    };
}

/// Why an acknowledgement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// No active alarm has that id.
    #[error("no active alarm {0}")]
    NotFound(u64),
    /// It was acknowledged already.
    #[error("alarm {id} was already acknowledged by {by}")]
    AlreadyAcknowledged {
        /// The alarm.
        id: u64,
        /// Who did.
        by: String,
    },
}

#[derive(Debug, Clone, Default)]
struct Pending {
    on_since: Option<Instant>,
    off_since: Option<Instant>,
}

/// The alarm engine.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<ChannelRules>,
    last: Vec<Option<(Option<f64>, ReadingState)>>,
    pending: Vec<Vec<Pending>>,
    active: BTreeMap<(usize, AlarmKind), Alarm>,
    /// Alarms about something other than a channel, by subject: overdue
    /// miners (`worker:BADGE`), outputs that cannot be driven
    /// (`output:NAME`), the station's own faults (`system:…`).
    subjects: BTreeMap<String, Alarm>,
    /// Whether the alarms of before the last stop are back (or known to be
    /// lost): until then the power stays cut, so a restart never returns
    /// power before the history that may forbid it is read.
    restored: bool,
    next_id: u64,
    /// Channels with a delay running: [`Engine::tick`] evaluates them when
    /// one ends. Every other channel's state changes only with its next
    /// reading, so a tick costs what is pending, not every channel.
    due: BTreeSet<usize>,
    /// Channels whose alarms changed outside a reading (restore,
    /// acknowledgement): the next tick evaluates them, whatever their
    /// delays.
    recheck: BTreeSet<usize>,
    /// Channels without a trusted value (not read yet, warming up, faulty),
    /// and those of them that guard the power.
    unknown: usize,
    unknown_guards: usize,
}

impl Engine {
    /// An engine with no alarms and no history to wait for; ids start at
    /// `first_id`.
    pub fn new(rules: Vec<ChannelRules>, first_id: u64) -> Self {
        let mut e = Self::awaiting_history(rules, first_id);
        e.restored = true;
        e
    }

    /// The daemon's engine: no alarms yet, and power withheld until
    /// [`Engine::restore`] brings back the alarms of before the last stop or
    /// [`Engine::history_unavailable`] says they cannot be known. Ids start
    /// at `first_id` (give something that grows across restarts, such as
    /// Unix milliseconds × 1000).
    pub fn awaiting_history(rules: Vec<ChannelRules>, first_id: u64) -> Self {
        Engine {
            last: vec![None; rules.len()],
            pending: rules
                .iter()
                .map(|r| vec![Pending::default(); r.levels.len()])
                .collect(),
            unknown: rules.len(),
            unknown_guards: rules.iter().filter(|r| r.guards_power()).count(),
            rules,
            active: BTreeMap::new(),
            subjects: BTreeMap::new(),
            restored: false,
            next_id: first_id,
            due: BTreeSet::new(),
            recheck: BTreeSet::new(),
        }
    }

    /// The rules, by channel index.
    pub fn rules(&self) -> &[ChannelRules] {
        &self.rules
    }

    /// Active alarms, by channel then kind, then those about a subject.
    pub fn active(&self) -> impl Iterator<Item = &Alarm> {
        self.active.values().chain(self.subjects.values())
    }

    /// Whether the alarms of before the last stop are back (or known to be
    /// lost).
    pub fn is_restored(&self) -> bool {
        self.restored
    }

    /// The miners who are overdue now (`worker:BADGE` subjects): raises an
    /// overdue alarm for each new one; an alarm whose miner came up clears
    /// (it does not latch: the check-out is the answer).
    pub fn set_overdue(
        &mut self,
        subjects: &[String],
        now: Instant,
        wall: SystemTime,
    ) -> Vec<AlarmEvent> {
        let list: Vec<(String, Option<f64>)> = subjects.iter().map(|s| (s.clone(), None)).collect();
        self.set_holding(AlarmKind::Overdue, &list, now, wall)
    }

    /// Where more people are underground than allowed now (`underground`
    /// for the whole mine, `team:NAME` for a team), with the count: raises
    /// an `overcrowded` alarm for each new one; it clears by itself once
    /// the count is back within the limit (nobody is kept from checking in,
    /// so the check-outs are the answer).
    pub fn set_overcrowded(
        &mut self,
        subjects: &[(String, f64)],
        now: Instant,
        wall: SystemTime,
    ) -> Vec<AlarmEvent> {
        let list: Vec<(String, Option<f64>)> = subjects
            .iter()
            .map(|(s, n)| (s.clone(), Some(*n)))
            .collect();
        self.set_holding(AlarmKind::Overcrowded, &list, now, wall)
    }

    /// Non-latching subject alarms of `kind`: those in `subjects` hold (with
    /// their value, the latest kept), every other one of that kind clears.
    fn set_holding(
        &mut self,
        kind: AlarmKind,
        subjects: &[(String, Option<f64>)],
        now: Instant,
        wall: SystemTime,
    ) -> Vec<AlarmEvent> {
        let mut out = Vec::new();
        let event = |ev, id, channel: &str, value: Option<f64>| AlarmEvent {
            kind: ev,
            alarm_id: id,
            channel: channel.to_owned(),
            level: kind,
            value,
            state: ReadingState::Ok,
            by: None,
            at: wall,
        };
        for (s, value) in subjects {
            if let Some(a) = self.subjects.get_mut(s) {
                a.condition = true;
                if value.is_some() {
                    a.value = *value;
                }
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            self.subjects.insert(
                s.clone(),
                Alarm {
                    id,
                    channel: usize::MAX,
                    subject: Some(s.clone()),
                    kind,
                    value: *value,
                    state: ReadingState::Ok,
                    raised_at: now,
                    raised_wall: wall,
                    condition: true,
                    latching: false,
                    holds_power: false,
                    acked: None,
                },
            );
            out.push(event(EventKind::Raised, id, s, *value));
        }
        let gone: Vec<String> = self
            .subjects
            .iter()
            .filter(|(k, a)| a.kind == kind && !subjects.iter().any(|(s, _)| s == *k))
            .map(|(k, _)| k.clone())
            .collect();
        for s in gone {
            if let Some(a) = self.subjects.remove(&s) {
                out.push(event(EventKind::Cleared, a.id, &s, a.value));
            }
        }
        out
    }

    /// A fault of something other than a channel (`output:NAME` for an
    /// output that cannot be driven, `system:…` for the station's own
    /// faults) holds (`active`) or not. Like a channel's fault it latches:
    /// raised when it first holds, returned when it no longer holds, and
    /// gone once it no longer holds and a supervisor acknowledged it.
    pub fn set_fault(
        &mut self,
        subject: &str,
        active: bool,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<AlarmEvent> {
        let event = |kind, id| AlarmEvent {
            kind,
            alarm_id: id,
            channel: subject.to_owned(),
            level: AlarmKind::Fault,
            value: None,
            state: ReadingState::Ok,
            by: None,
            at: wall,
        };
        match (active, self.subjects.get_mut(subject)) {
            (true, None) => {
                let id = self.next_id;
                self.next_id += 1;
                self.subjects.insert(
                    subject.to_owned(),
                    Alarm {
                        id,
                        channel: usize::MAX,
                        subject: Some(subject.to_owned()),
                        kind: AlarmKind::Fault,
                        value: None,
                        state: ReadingState::Ok,
                        raised_at: now,
                        raised_wall: wall,
                        condition: true,
                        latching: true,
                        holds_power: false,
                        acked: None,
                    },
                );
                vec![event(EventKind::Raised, id)]
            }
            (true, Some(a)) if !a.condition => {
                a.condition = true;
                vec![event(EventKind::Recurred, a.id)]
            }
            (false, Some(a)) if a.condition => {
                a.condition = false;
                let id = a.id;
                if a.acked.is_some() {
                    self.subjects.remove(subject);
                    vec![event(EventKind::Cleared, id)]
                } else {
                    vec![event(EventKind::Returned, id)]
                }
            }
            _ => Vec::new(),
        }
    }

    /// The power relay's feedback disagrees with its command (`active`) or
    /// no longer does: a latching fault, like [`Engine::set_fault`], that
    /// also holds the power cut, so the siren sounds, the beacon turns red
    /// and power does not return by itself once the feedback agrees again.
    pub fn set_feedback_fault(
        &mut self,
        active: bool,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<AlarmEvent> {
        let out = self.set_fault(FEEDBACK_SUBJECT, active, now, wall);
        if let Some(a) = self.subjects.get_mut(FEEDBACK_SUBJECT) {
            a.holds_power = true;
        }
        out
    }

    /// The alarms of before the last stop cannot be read (no database): a
    /// latching fault alarm keeps the power cut until a supervisor has
    /// acknowledged it, since a power-cut alarm that was active then may
    /// be among them. Power is no longer withheld for the restore itself.
    pub fn history_unavailable(&mut self, now: Instant, wall: SystemTime) -> Vec<AlarmEvent> {
        self.restored = true;
        if self.subjects.contains_key(HISTORY_SUBJECT) {
            return Vec::new();
        }
        let mut out = self.set_fault(HISTORY_SUBJECT, true, now, wall);
        if let Some(a) = self.subjects.get_mut(HISTORY_SUBJECT) {
            a.holds_power = true;
        }
        // Nothing will make it hold again: it is about the start, not a
        // condition. It ends with the acknowledgement.
        out.extend(self.set_fault(HISTORY_SUBJECT, false, now, wall));
        out
    }

    /// Takes a new reading of channel `ch`.
    pub fn update(
        &mut self,
        ch: usize,
        r: &Reading,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<AlarmEvent> {
        if ch >= self.rules.len() {
            return Vec::new();
        }
        let last = Some((r.value.filter(|_| r.state == ReadingState::Ok), r.state));
        // The same reading again, with no delay running and nothing changed
        // outside readings: evaluating it would find what the last one
        // left. Most polls of a quiet station are this.
        if self.last[ch] == last && !self.due.contains(&ch) && !self.recheck.contains(&ch) {
            return Vec::new();
        }
        let (was, is) = (unknown(self.last[ch]), unknown(last));
        if was != is {
            let guards = usize::from(self.rules[ch].guards_power());
            if is {
                self.unknown += 1;
                self.unknown_guards += guards;
            } else {
                self.unknown -= 1;
                self.unknown_guards -= guards;
            }
        }
        self.last[ch] = last;
        let mut out = Vec::new();
        self.evaluate(ch, now, wall, &mut out);
        out
    }

    /// Re-evaluates, at `now` and with their last readings, the channels
    /// whose delays run or whose alarms changed without a reading.
    pub fn tick(&mut self, now: Instant, wall: SystemTime) -> Vec<AlarmEvent> {
        let mut out = Vec::new();
        let due: Vec<usize> = self.due.union(&self.recheck).copied().collect();
        for ch in due {
            self.evaluate(ch, now, wall, &mut out);
        }
        out
    }

    /// When [`Engine::tick`] next has something to do: now if a channel
    /// must be evaluated again, else the earliest end of a running delay.
    /// `None` when nothing waits: only a reading or a command changes
    /// anything then.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        if !self.recheck.is_empty() {
            return Some(now);
        }
        let mut next: Option<Instant> = None;
        for &ch in &self.due {
            for (p, rule) in self.pending[ch].iter().zip(&self.rules[ch].levels) {
                for t in [
                    p.on_since.map(|s| s + rule.on_delay),
                    p.off_since.map(|s| s + rule.off_delay),
                ]
                .into_iter()
                .flatten()
                {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
        }
        next
    }

    /// A supervisor acknowledges alarm `id`.
    pub fn ack(
        &mut self,
        id: u64,
        by: &str,
        wall: SystemTime,
    ) -> Result<Vec<AlarmEvent>, AckError> {
        if let Some((subject, a)) = self.subjects.iter_mut().find(|(_, a)| a.id == id) {
            if let Some(ack) = &a.acked {
                return Err(AckError::AlreadyAcknowledged {
                    id,
                    by: ack.by.clone(),
                });
            }
            a.acked = Some(Ack {
                by: by.to_owned(),
                at: wall,
            });
            let event = |kind| AlarmEvent {
                kind,
                alarm_id: id,
                channel: subject.clone(),
                level: a.kind,
                value: None,
                state: ReadingState::Ok,
                by: Some(by.to_owned()),
                at: wall,
            };
            let mut out = vec![event(EventKind::Acknowledged)];
            // A latched fault whose condition is gone ends here; an overdue
            // miner stays shown until he comes up.
            if a.latching && !a.condition {
                out.push(event(EventKind::Cleared));
                let subject = subject.clone();
                self.subjects.remove(&subject);
            }
            return Ok(out);
        }
        let key = self
            .active
            .iter()
            .find(|(_, a)| a.id == id)
            .map(|(k, _)| *k)
            .ok_or(AckError::NotFound(id))?;
        let (value, state) = self.last[key.0].unwrap_or((None, ReadingState::Stale));
        let channel = self.rules[key.0].id.clone();
        let Some(alarm) = self.active.get_mut(&key) else {
            return Err(AckError::NotFound(id));
        };
        if let Some(ack) = &alarm.acked {
            return Err(AckError::AlreadyAcknowledged {
                id,
                by: ack.by.clone(),
            });
        }
        alarm.acked = Some(Ack {
            by: by.to_owned(),
            at: wall,
        });
        let event = |kind| AlarmEvent {
            kind,
            alarm_id: id,
            channel: channel.clone(),
            level: key.1,
            value,
            state,
            by: Some(by.to_owned()),
            at: wall,
        };
        let mut out = vec![event(EventKind::Acknowledged)];
        if !alarm.condition {
            self.active.remove(&key);
            out.push(event(EventKind::Cleared));
        }
        self.recheck.insert(key.0);
        Ok(out)
    }

    /// What the outputs must show now.
    pub fn outputs(&self) -> Outputs {
        let siren = self.active().any(|a| a.acked.is_none());
        let mut beacon = Beacon::Green;
        for a in self.active() {
            let b = match a.kind {
                _ if a.holds_power => Beacon::Red,
                AlarmKind::Level(LevelName::Alarm | LevelName::PowerCut) => Beacon::Red,
                AlarmKind::Level(LevelName::Warning)
                | AlarmKind::Fault
                | AlarmKind::Overdue
                | AlarmKind::Overcrowded => Beacon::Yellow,
            };
            beacon = beacon.max(b);
        }
        let mut power_allowed = self.restored
            && !self
                .active
                .keys()
                .any(|(_, k)| *k == AlarmKind::Level(LevelName::PowerCut))
            && !self.subjects.values().any(|a| a.holds_power);
        if !self.restored {
            beacon = beacon.max(Beacon::Yellow);
        }
        // A channel not read yet, warming up or faulty has no value to
        // trust (counted as readings come, not walked here).
        if self.unknown > 0 {
            beacon = beacon.max(Beacon::Yellow);
        }
        if self.unknown_guards > 0 {
            power_allowed = false;
        }
        Outputs {
            siren,
            beacon,
            power_allowed,
        }
    }

    fn raise(
        &mut self,
        ch: usize,
        kind: AlarmKind,
        latching: bool,
        now: Instant,
        wall: SystemTime,
    ) -> AlarmEvent {
        let (value, state) = self.last[ch].unwrap_or((None, ReadingState::Stale));
        let id = self.next_id;
        self.next_id += 1;
        let escalated = matches!(kind, AlarmKind::Level(n)
            if self.active.keys().any(|(c, k)| *c == ch && matches!(k, AlarmKind::Level(m) if *m < n)));
        self.active.insert(
            (ch, kind),
            Alarm {
                id,
                channel: ch,
                subject: None,
                kind,
                value,
                state,
                raised_at: now,
                raised_wall: wall,
                condition: true,
                latching,
                holds_power: false,
                acked: None,
            },
        );
        let event = if escalated {
            EventKind::Escalated
        } else {
            EventKind::Raised
        };
        self.event(ch, event, kind, id, wall)
    }

    /// The condition of an active alarm is gone: it ends unless it latches
    /// and waits for an acknowledgement.
    fn condition_gone(
        &mut self,
        ch: usize,
        kind: AlarmKind,
        wall: SystemTime,
        out: &mut Vec<AlarmEvent>,
    ) {
        let Some(a) = self.active.get_mut(&(ch, kind)) else {
            return;
        };
        a.condition = false;
        let id = a.id;
        let ends = !a.latching || a.acked.is_some();
        if ends {
            self.active.remove(&(ch, kind));
        }
        let event = if ends {
            EventKind::Cleared
        } else {
            EventKind::Returned
        };
        out.push(self.event(ch, event, kind, id, wall));
    }

    /// An event about alarm `id` (`level`) of channel `ch`, with the
    /// channel's last reading.
    fn event(
        &self,
        ch: usize,
        kind: EventKind,
        level: AlarmKind,
        id: u64,
        wall: SystemTime,
    ) -> AlarmEvent {
        let (value, state) = self.last[ch].unwrap_or((None, ReadingState::Stale));
        AlarmEvent {
            kind,
            alarm_id: id,
            channel: self.rules[ch].id.clone(),
            level,
            value,
            state,
            by: None,
            at: wall,
        }
    }

    /// Alarms that were active when the daemon last stopped (from the event
    /// log): they come back latched, with their ids and acknowledgements,
    /// so a restart never returns power or silences the siren by itself.
    /// Their conditions are judged again with the next readings. Ids of new
    /// alarms continue above every restored one.
    pub fn restore(&mut self, alarms: &[Restored], now: Instant) {
        self.restored = true;
        for r in alarms {
            self.next_id = self.next_id.max(r.id.saturating_add(1));
            if restorable_subject(&r.channel) {
                if r.channel == HISTORY_SUBJECT || self.subjects.contains_key(&r.channel) {
                    continue;
                }
                // Judged again by whoever reports it (the panel, the
                // overdue watch): latched until acknowledged meanwhile.
                self.subjects.insert(
                    r.channel.clone(),
                    Alarm {
                        id: r.id,
                        channel: usize::MAX,
                        subject: Some(r.channel.clone()),
                        kind: AlarmKind::Fault,
                        value: None,
                        state: ReadingState::Ok,
                        raised_at: now,
                        raised_wall: r.raised_wall,
                        condition: true,
                        latching: true,
                        holds_power: r.channel == FEEDBACK_SUBJECT,
                        acked: r.acked.clone(),
                    },
                );
                continue;
            }
            let Some(ch) = self.rules.iter().position(|c| c.id == r.channel) else {
                continue;
            };
            if matches!(r.kind, AlarmKind::Overdue | AlarmKind::Overcrowded)
                || self.active.contains_key(&(ch, r.kind))
            {
                continue;
            }
            self.active.insert(
                (ch, r.kind),
                Alarm {
                    id: r.id,
                    channel: ch,
                    subject: None,
                    kind: r.kind,
                    value: r.value,
                    state: ReadingState::Ok,
                    raised_at: now,
                    raised_wall: r.raised_wall,
                    condition: true,
                    latching: true,
                    holds_power: false,
                    acked: r.acked.clone(),
                },
            );
            // Judged again at the next tick with the reading there is.
            self.recheck.insert(ch);
        }
    }

    /// Makes new alarm ids start above `id`.
    pub fn ids_above(&mut self, id: u64) {
        self.next_id = self.next_id.max(id.saturating_add(1));
    }

    fn evaluate(&mut self, ch: usize, now: Instant, wall: SystemTime, out: &mut Vec<AlarmEvent>) {
        self.evaluate_levels(ch, now, wall, out);
        self.recheck.remove(&ch);
        let timed = self.pending[ch]
            .iter()
            .any(|p| p.on_since.is_some() || p.off_since.is_some());
        if timed {
            self.due.insert(ch);
        } else {
            self.due.remove(&ch);
        }
    }

    fn evaluate_levels(
        &mut self,
        ch: usize,
        now: Instant,
        wall: SystemTime,
        out: &mut Vec<AlarmEvent>,
    ) {
        let Some((value, state)) = self.last[ch] else {
            return;
        };
        let fault = matches!(
            state,
            ReadingState::CommFault | ReadingState::OutOfRange | ReadingState::Stale
        );

        // The fault alarm.
        match (fault, self.active.get_mut(&(ch, AlarmKind::Fault))) {
            (true, None) => out.push(self.raise(ch, AlarmKind::Fault, true, now, wall)),
            (true, Some(a)) if !a.condition => {
                a.condition = true;
                let id = a.id;
                out.push(self.event(ch, EventKind::Recurred, AlarmKind::Fault, id, wall));
            }
            (false, Some(a)) if a.condition && state == ReadingState::Ok => {
                self.condition_gone(ch, AlarmKind::Fault, wall, out);
            }
            _ => {}
        }

        for li in 0..self.rules[ch].levels.len() {
            let rule = self.rules[ch].levels[li].clone();
            let kind = AlarmKind::Level(rule.name);
            let key = (ch, kind);
            match value {
                Some(v) => {
                    let active = self.active.get(&key).map(|a| a.condition);
                    let p = &mut self.pending[ch][li];
                    match active {
                        None => {
                            p.off_since = None;
                            if rule.on(v) {
                                let since = *p.on_since.get_or_insert(now);
                                if now.duration_since(since) >= rule.on_delay {
                                    p.on_since = None;
                                    out.push(self.raise(ch, kind, rule.latching, now, wall));
                                }
                            } else {
                                p.on_since = None;
                            }
                        }
                        Some(true) => {
                            p.on_since = None;
                            if rule.restored(v) {
                                let since = *p.off_since.get_or_insert(now);
                                if now.duration_since(since) >= rule.off_delay {
                                    p.off_since = None;
                                    self.condition_gone(ch, kind, wall, out);
                                }
                            } else {
                                p.off_since = None;
                            }
                        }
                        Some(false) => {
                            // Latched, waiting for an acknowledgement: the
                            // condition may come back.
                            if rule.on(v)
                                && let Some(a) = self.active.get_mut(&key)
                            {
                                a.condition = true;
                                let id = a.id;
                                out.push(self.event(ch, EventKind::Recurred, kind, id, wall));
                            }
                        }
                    }
                }
                None if fault && rule.name == LevelName::PowerCut => {
                    // Fail-safe: a guard channel that cannot be read is
                    // above its power-cut level, at once.
                    self.pending[ch][li] = Pending::default();
                    match self.active.get_mut(&key) {
                        Some(a) if !a.condition => {
                            a.condition = true;
                            let id = a.id;
                            out.push(self.event(ch, EventKind::Recurred, kind, id, wall));
                        }
                        Some(_) => {}
                        None => out.push(self.raise(ch, kind, rule.latching, now, wall)),
                    }
                }
                None => {
                    // No value: milder levels keep their state; delays
                    // start again with the next value.
                    self.pending[ch][li] = Pending::default();
                }
            }
        }
    }
}

/// No value to trust: not read yet, warming up, or faulty.
fn unknown(last: Option<(Option<f64>, ReadingState)>) -> bool {
    !matches!(last, Some((Some(_), ReadingState::Ok)))
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
