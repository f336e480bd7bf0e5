//! The alarm state machine, with injected time.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;

fn level(name: LevelName, threshold: f64, deadband: f64, latching: bool) -> LevelRule {
    LevelRule {
        name,
        threshold,
        direction: Direction::Rising,
        deadband,
        on_delay: Duration::ZERO,
        off_delay: Duration::ZERO,
        latching,
    }
}

/// CH4 at a coal face: warning 0.8, alarm 1.0, power-cut 1.5 restoring
/// below 1.0; plus a CO channel with one non-latching alarm.
fn engine() -> Engine {
    Engine::new(
        vec![
            ChannelRules {
                id: "ch4".into(),
                levels: vec![
                    level(LevelName::Warning, 0.8, 0.05, false),
                    level(LevelName::Alarm, 1.0, 0.05, true),
                    level(LevelName::PowerCut, 1.5, 0.5, true),
                ],
            },
            ChannelRules {
                id: "co".into(),
                levels: vec![level(LevelName::Alarm, 24.0, 2.0, false)],
            },
        ],
        1000,
    )
}

struct Clock {
    t0: Instant,
    t: Duration,
}

impl Clock {
    fn new() -> Self {
        Clock {
            t0: Instant::now(),
            t: Duration::ZERO,
        }
    }
    fn at(&mut self, secs: f64) -> (Instant, SystemTime) {
        self.t = Duration::from_secs_f64(secs);
        (
            self.t0 + self.t,
            UNIX_EPOCH + Duration::from_secs(1_800_000_000) + self.t,
        )
    }
}

fn ok(v: f64, now: Instant) -> Reading {
    Reading::ok(v, now, SystemTime::now())
}

fn fault(state: ReadingState, now: Instant) -> Reading {
    Reading::fault(state, "test", now, SystemTime::now())
}

/// Feeds a value to channel `ch` at `secs`; returns (event kind, level).
fn feed(
    e: &mut Engine,
    c: &mut Clock,
    ch: usize,
    secs: f64,
    v: f64,
) -> Vec<(EventKind, &'static str)> {
    let (now, wall) = c.at(secs);
    e.update(ch, &ok(v, now), now, wall)
        .into_iter()
        .map(|ev| (ev.kind, ev.level.as_str()))
        .collect()
}

fn ids(e: &Engine) -> Vec<(String, &'static str, u64)> {
    e.active()
        .map(|a| (e.rules()[a.channel].id.clone(), a.kind.as_str(), a.id))
        .collect()
}

fn settle(e: &mut Engine, c: &mut Clock) {
    let (now, wall) = c.at(0.0);
    e.update(0, &ok(0.3, now), now, wall);
    e.update(1, &ok(5.0, now), now, wall);
}

#[test]
fn methane_rise_escalates_in_order_and_drives_outputs() {
    let mut e = engine();
    let mut c = Clock::new();
    settle(&mut e, &mut c);
    assert_eq!(
        e.outputs(),
        Outputs {
            siren: false,
            beacon: Beacon::Green,
            power_allowed: true
        }
    );
    assert_eq!(
        feed(&mut e, &mut c, 0, 1.0, 0.85),
        [(EventKind::Raised, "warning")]
    );
    assert_eq!(
        e.outputs(),
        Outputs {
            siren: true,
            beacon: Beacon::Yellow,
            power_allowed: true
        }
    );
    assert_eq!(
        feed(&mut e, &mut c, 0, 2.0, 1.1),
        [(EventKind::Escalated, "alarm")]
    );
    assert_eq!(
        e.outputs(),
        Outputs {
            siren: true,
            beacon: Beacon::Red,
            power_allowed: true
        }
    );
    assert_eq!(
        feed(&mut e, &mut c, 0, 3.0, 1.5),
        [(EventKind::Escalated, "power_cut")]
    );
    assert_eq!(
        e.outputs(),
        Outputs {
            siren: true,
            beacon: Beacon::Red,
            power_allowed: false
        }
    );
    // Straight to power-cut from normal raises all three at once.
    let mut e2 = engine();
    settle(&mut e2, &mut c);
    assert_eq!(
        feed(&mut e2, &mut c, 0, 1.0, 2.0),
        [
            (EventKind::Raised, "warning"),
            (EventKind::Escalated, "alarm"),
            (EventKind::Escalated, "power_cut")
        ]
    );
}

#[test]
fn restore_needs_the_deadband_and_latched_levels_need_an_ack() {
    let mut e = engine();
    let mut c = Clock::new();
    settle(&mut e, &mut c);
    feed(&mut e, &mut c, 0, 1.0, 1.6);
    // Below 1.5 but not below 1.0: power stays cut.
    assert_eq!(feed(&mut e, &mut c, 0, 2.0, 1.2), []);
    assert!(!e.outputs().power_allowed);
    // Below 1.0: power-cut condition gone, but it latches.
    assert_eq!(
        feed(&mut e, &mut c, 0, 3.0, 0.97),
        [(EventKind::Returned, "power_cut")]
    );
    assert!(
        !e.outputs().power_allowed,
        "latched power-cut keeps power off until acknowledged"
    );
    // 0.9 is below 1.0 - 0.05: the alarm's condition goes too; the warning
    // (not latching) is still above its 0.8 - 0.05.
    assert_eq!(
        feed(&mut e, &mut c, 0, 4.0, 0.9),
        [(EventKind::Returned, "alarm")]
    );
    // Back up before anyone acknowledged: recorded as a recurrence.
    assert_eq!(
        feed(&mut e, &mut c, 0, 4.5, 1.05),
        [(EventKind::Recurred, "alarm")]
    );
    assert_eq!(
        feed(&mut e, &mut c, 0, 4.7, 0.9),
        [(EventKind::Returned, "alarm")]
    );
    assert_eq!(
        feed(&mut e, &mut c, 0, 5.0, 0.7),
        [(EventKind::Cleared, "warning")]
    );
    let active = ids(&e);
    assert_eq!(
        active.iter().map(|a| a.1).collect::<Vec<_>>(),
        ["alarm", "power_cut"]
    );
    let (_, wall) = c.at(6.0);
    for (_, _, id) in active {
        let evs: Vec<EventKind> = e
            .ack(id, "王班长", wall)
            .unwrap_or_default()
            .iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(evs, [EventKind::Acknowledged, EventKind::Cleared]);
    }
    assert_eq!(
        e.outputs(),
        Outputs {
            siren: false,
            beacon: Beacon::Green,
            power_allowed: true
        }
    );
}

#[test]
fn ack_silences_the_siren_but_never_hides_the_alarm() {
    let mut e = engine();
    let mut c = Clock::new();
    settle(&mut e, &mut c);
    feed(&mut e, &mut c, 0, 1.0, 1.7);
    let (_, wall) = c.at(2.0);
    let pc = ids(&e)
        .into_iter()
        .find(|a| a.1 == "power_cut")
        .map(|a| a.2)
        .unwrap_or_default();
    let evs = e.ack(pc, "李工", wall).unwrap_or_default();
    assert_eq!(evs.len(), 1);
    assert_eq!(
        (evs[0].kind, evs[0].by.as_deref()),
        (EventKind::Acknowledged, Some("李工"))
    );
    // Two other alarms still unacknowledged: the siren sounds on.
    assert!(e.outputs().siren);
    for (_, _, id) in ids(&e) {
        let _ = e.ack(id, "李工", wall);
    }
    let o = e.outputs();
    assert!(!o.siren);
    assert_eq!(
        (o.beacon, o.power_allowed),
        (Beacon::Red, false),
        "acknowledged, still dangerous"
    );
    assert_eq!(e.active().count(), 3);
    assert_eq!(
        e.ack(pc, "x", wall),
        Err(AckError::AlreadyAcknowledged {
            id: pc,
            by: "李工".into()
        })
    );
    assert_eq!(e.ack(42, "x", wall), Err(AckError::NotFound(42)));
    // An acknowledged latched level clears as soon as its condition goes.
    assert_eq!(
        feed(&mut e, &mut c, 0, 3.0, 0.5),
        [
            (EventKind::Cleared, "warning"),
            (EventKind::Cleared, "alarm"),
            (EventKind::Cleared, "power_cut")
        ]
    );
}

#[test]
fn a_non_latching_level_clears_by_itself() {
    let mut e = engine();
    let mut c = Clock::new();
    settle(&mut e, &mut c);
    assert_eq!(
        feed(&mut e, &mut c, 1, 1.0, 30.0),
        [(EventKind::Raised, "alarm")]
    );
    assert_eq!(
        feed(&mut e, &mut c, 1, 2.0, 23.0),
        [],
        "inside the deadband"
    );
    assert_eq!(
        feed(&mut e, &mut c, 1, 3.0, 21.9),
        [(EventKind::Cleared, "alarm")]
    );
    assert!(!e.outputs().siren);
}

#[test]
fn on_and_off_delays_use_monotonic_time_and_restart_on_a_dip() {
    let mut e = Engine::new(
        vec![ChannelRules {
            id: "co".into(),
            levels: vec![LevelRule {
                on_delay: Duration::from_secs(10),
                off_delay: Duration::from_secs(5),
                ..level(LevelName::Alarm, 24.0, 0.0, false)
            }],
        }],
        1,
    );
    let mut c = Clock::new();
    assert_eq!(feed(&mut e, &mut c, 0, 0.0, 30.0), []);
    assert_eq!(feed(&mut e, &mut c, 0, 6.0, 30.0), []);
    assert_eq!(
        feed(&mut e, &mut c, 0, 7.0, 20.0),
        [],
        "a dip restarts the delay"
    );
    assert_eq!(feed(&mut e, &mut c, 0, 8.0, 30.0), []);
    assert_eq!(feed(&mut e, &mut c, 0, 17.0, 30.0), []);
    let (now, wall) = c.at(18.0);
    assert_eq!(
        e.tick(now, wall).len(),
        1,
        "raised by the clock, with no new reading"
    );
    assert_eq!(feed(&mut e, &mut c, 0, 19.0, 10.0), []);
    assert_eq!(feed(&mut e, &mut c, 0, 23.0, 10.0), []);
    let (now, wall) = c.at(24.0);
    assert_eq!(
        e.tick(now, wall).iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventKind::Cleared]
    );
}

#[test]
fn wall_clock_jumps_change_nothing() {
    let run = |jump: i64| {
        let mut e = Engine::new(
            vec![ChannelRules {
                id: "co".into(),
                levels: vec![LevelRule {
                    on_delay: Duration::from_secs(10),
                    ..level(LevelName::Alarm, 24.0, 0.0, false)
                }],
            }],
            1,
        );
        let t0 = Instant::now();
        let base = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut kinds = Vec::new();
        for s in 0..30u64 {
            let now = t0 + Duration::from_secs(s);
            // The wall clock jumps by an hour half-way.
            let wall = if s >= 15 {
                if jump >= 0 {
                    base + Duration::from_secs(s + jump.unsigned_abs())
                } else {
                    base - Duration::from_secs(jump.unsigned_abs()) + Duration::from_secs(s)
                }
            } else {
                base + Duration::from_secs(s)
            };
            let v = if (5..25).contains(&s) { 30.0 } else { 5.0 };
            kinds.extend(
                e.update(0, &Reading::ok(v, now, wall), now, wall)
                    .into_iter()
                    .map(|e| e.kind),
            );
        }
        kinds
    };
    assert_eq!(run(0), [EventKind::Raised, EventKind::Cleared]);
    assert_eq!(run(3600), run(0));
    assert_eq!(run(-3600), run(0));
}

#[test]
fn falling_levels_for_oxygen() {
    let mut e = Engine::new(
        vec![ChannelRules {
            id: "o2".into(),
            levels: vec![LevelRule {
                direction: Direction::Falling,
                ..level(LevelName::Alarm, 20.0, 0.2, true)
            }],
        }],
        1,
    );
    let mut c = Clock::new();
    assert_eq!(feed(&mut e, &mut c, 0, 0.0, 20.8), []);
    assert_eq!(
        feed(&mut e, &mut c, 0, 1.0, 19.9),
        [(EventKind::Raised, "alarm")]
    );
    assert_eq!(
        feed(&mut e, &mut c, 0, 2.0, 20.1),
        [],
        "inside the deadband"
    );
    feed(&mut e, &mut c, 0, 3.0, 20.3);
    assert_eq!(e.active().next().map(|a| a.condition), Some(false));
}

#[test]
fn a_fault_raises_a_fault_alarm_and_cuts_power_on_a_guard_channel_at_once() {
    let mut e = Engine::new(
        vec![
            ChannelRules {
                id: "ch4".into(),
                levels: vec![LevelRule {
                    on_delay: Duration::from_secs(30),
                    ..level(LevelName::PowerCut, 1.5, 0.5, true)
                }],
            },
            ChannelRules {
                id: "co".into(),
                levels: vec![level(LevelName::Alarm, 24.0, 2.0, false)],
            },
        ],
        1,
    );
    let mut c = Clock::new();
    settle(&mut e, &mut c);
    assert!(e.outputs().power_allowed);
    let (now, wall) = c.at(1.0);
    let evs: Vec<(EventKind, &str)> = e
        .update(0, &fault(ReadingState::CommFault, now), now, wall)
        .iter()
        .map(|e| (e.kind, e.level.as_str()))
        .collect();
    assert_eq!(
        evs,
        [
            (EventKind::Raised, "fault"),
            (EventKind::Raised, "power_cut")
        ],
        "no on-delay for a fault"
    );
    assert_eq!(
        e.outputs(),
        Outputs {
            siren: true,
            beacon: Beacon::Red,
            power_allowed: false
        }
    );
    // A fault on a channel that does not guard power: yellow, power stays.
    let (now, wall) = c.at(1.0);
    let mut e2 = engine();
    settle(&mut e2, &mut Clock::new());
    let evs = e2.update(1, &fault(ReadingState::OutOfRange, now), now, wall);
    assert_eq!(
        evs.iter().map(|e| e.level.as_str()).collect::<Vec<_>>(),
        ["fault"]
    );
    assert_eq!(
        e2.outputs(),
        Outputs {
            siren: true,
            beacon: Beacon::Yellow,
            power_allowed: true
        }
    );
    // Back to a good low value: both latch until acknowledged.
    assert_eq!(
        feed(&mut e, &mut c, 0, 2.0, 0.3),
        [
            (EventKind::Returned, "fault"),
            (EventKind::Returned, "power_cut")
        ]
    );
    assert!(!e.outputs().power_allowed);
    let (_, wall) = c.at(3.0);
    for (_, _, id) in ids(&e) {
        assert_eq!(e.ack(id, "s", wall).map(|v| v.len()), Ok(2));
    }
    assert_eq!(
        e.outputs(),
        Outputs {
            siren: false,
            beacon: Beacon::Green,
            power_allowed: true
        }
    );
}

#[test]
fn warming_up_and_unread_channels_keep_power_cut_without_an_alarm() {
    let mut e = engine();
    assert_eq!(
        e.outputs(),
        Outputs {
            siren: false,
            beacon: Beacon::Yellow,
            power_allowed: false
        },
        "nothing read yet"
    );
    let mut c = Clock::new();
    let (now, wall) = c.at(0.0);
    assert_eq!(
        e.update(0, &fault(ReadingState::WarmingUp, now), now, wall),
        []
    );
    assert_eq!(e.update(1, &ok(5.0, now), now, wall), []);
    assert_eq!(
        e.outputs(),
        Outputs {
            siren: false,
            beacon: Beacon::Yellow,
            power_allowed: false
        }
    );
    feed(&mut e, &mut c, 0, 1.0, 0.3);
    assert_eq!(
        e.outputs(),
        Outputs {
            siren: false,
            beacon: Beacon::Green,
            power_allowed: true
        }
    );
}

#[test]
fn stale_is_a_fault_and_a_dip_into_fault_does_not_clear_a_level() {
    let mut e = engine();
    let mut c = Clock::new();
    settle(&mut e, &mut c);
    feed(&mut e, &mut c, 1, 1.0, 30.0);
    let (now, wall) = c.at(2.0);
    let evs = e.update(1, &fault(ReadingState::Stale, now), now, wall);
    assert_eq!(
        evs.iter().map(|e| e.level.as_str()).collect::<Vec<_>>(),
        ["fault"]
    );
    assert!(
        e.active()
            .any(|a| a.kind == AlarmKind::Level(LevelName::Alarm)),
        "no value is not a restore"
    );
}

#[derive(Debug, Clone)]
enum Step {
    Value(f64),
    Special(ReadingState),
    AckAll,
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0.0f64..3.0).prop_map(Step::Value),
        2 => prop_oneof![Just(ReadingState::CommFault), Just(ReadingState::OutOfRange), Just(ReadingState::Stale)].prop_map(Step::Special),
        1 => Just(Step::AckAll),
        1 => (0u64..5000).prop_map(Step::Wait),
    ]
}

proptest! {
    /// No sequence of readings, acknowledgements and waits leaves a
    /// power-cut level inactive (or power allowed) while the value is at or
    /// above its threshold or the channel cannot be read.
    #[test]
    fn power_is_never_allowed_at_or_above_the_threshold_or_unreadable(steps in proptest::collection::vec(step(), 1..80)) {
        let mut e = engine();
        let t0 = Instant::now();
        let mut t = Duration::ZERO;
        let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // The test's own account of the alarms, from the events alone:
        // id → acknowledged. The siren must sound exactly while one of them
        // is unacknowledged, whatever the engine keeps inside.
        let mut model: std::collections::BTreeMap<u64, bool> = std::collections::BTreeMap::new();
        let track = |evs: Vec<AlarmEvent>, model: &mut std::collections::BTreeMap<u64, bool>| {
            for ev in evs {
                match ev.kind {
                    EventKind::Raised | EventKind::Escalated => { model.insert(ev.alarm_id, false); }
                    EventKind::Acknowledged => { model.insert(ev.alarm_id, true); }
                    EventKind::Cleared => { model.remove(&ev.alarm_id); }
                    EventKind::Returned | EventKind::Recurred => {}
                }
            }
        };
        for s in steps {
            t += Duration::from_millis(100);
            let now = t0 + t;
            let danger = match s {
                Step::Value(v) => { let evs = e.update(0, &Reading::ok(v, now, wall), now, wall); track(evs, &mut model); v >= 1.5 }
                Step::Special(st) => { let evs = e.update(0, &Reading::fault(st, "x", now, wall), now, wall); track(evs, &mut model); true }
                Step::AckAll => {
                    let ids: Vec<u64> = model.keys().copied().collect();
                    for id in ids {
                        if let Ok(evs) = e.ack(id, "p", wall) { track(evs, &mut model); }
                    }
                    false
                }
                Step::Wait(ms) => { t += Duration::from_millis(ms); let evs = e.tick(t0 + t, wall); track(evs, &mut model); false }
            };
            if danger {
                prop_assert!(!e.outputs().power_allowed);
                prop_assert!(e.active().any(|a| a.kind == AlarmKind::Level(LevelName::PowerCut) && a.condition));
                prop_assert_eq!(e.outputs().beacon, Beacon::Red);
            }
            let unacked = model.values().any(|acked| !acked);
            prop_assert_eq!(e.outputs().siren, unacked, "siren vs the alarms the events told of: {:?}", model);
        }
    }
}

#[test]
fn overdue_miners_sound_the_siren_and_clear_when_they_come_up() {
    let mut e = engine();
    let mut c = Clock::new();
    settle(&mut e, &mut c);
    let (now, wall) = c.at(1.0);
    let evs = e.set_overdue(&["worker:0042".into()], now, wall);
    assert_eq!(
        evs.iter()
            .map(|e| (e.kind, e.level.as_str(), e.channel.as_str()))
            .collect::<Vec<_>>(),
        [(EventKind::Raised, "overdue", "worker:0042")]
    );
    assert_eq!(
        e.outputs(),
        Outputs {
            siren: true,
            beacon: Beacon::Yellow,
            power_allowed: true
        }
    );
    assert_eq!(
        e.set_overdue(&["worker:0042".into()], now, wall),
        [],
        "raised once"
    );
    let id = e.active().next().map(|a| a.id).unwrap_or_default();
    assert_eq!(e.ack(id, "班长", wall).map(|v| v.len()), Ok(1));
    assert!(!e.outputs().siren);
    assert_eq!(e.outputs().beacon, Beacon::Yellow, "still overdue: shown");
    let evs = e.set_overdue(&[], now, wall);
    assert_eq!(
        evs.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventKind::Cleared]
    );
    assert_eq!(
        e.outputs(),
        Outputs {
            siren: false,
            beacon: Beacon::Green,
            power_allowed: true
        }
    );
}

#[test]
fn restored_alarms_keep_power_cut_until_acknowledged_and_ids_continue() {
    let mut e = engine();
    let mut c = Clock::new();
    let (now, wall) = c.at(0.0);
    e.restore(
        &[Restored {
            id: 5000,
            channel: "ch4".into(),
            kind: AlarmKind::Level(LevelName::PowerCut),
            value: Some(1.7),
            raised_wall: wall,
            acked: None,
        }],
        now,
    );
    settle(&mut e, &mut c);
    let o = e.outputs();
    assert!(
        !o.power_allowed && o.siren,
        "a restart never returns power by itself: {o:?}"
    );
    assert_eq!(
        e.active().map(|a| (a.id, a.condition)).collect::<Vec<_>>(),
        [(5000, false)]
    );
    assert_eq!(feed(&mut e, &mut c, 1, 1.0, 30.0).len(), 1);
    assert!(
        e.active().any(|a| a.id == 5001),
        "new ids continue above restored ones"
    );
    let (_, wall) = c.at(2.0);
    assert_eq!(e.ack(5000, "王", wall).map(|v| v.len()), Ok(2));
    assert!(e.outputs().power_allowed);
}

/// Two channels with delays, so that ticks have timers to honour.
fn delayed_engine() -> Engine {
    let delayed = |name, threshold, deadband, latching, on, off| LevelRule {
        on_delay: Duration::from_millis(on),
        off_delay: Duration::from_millis(off),
        ..level(name, threshold, deadband, latching)
    };
    Engine::new(
        vec![
            ChannelRules {
                id: "ch4".into(),
                levels: vec![
                    delayed(LevelName::Warning, 0.8, 0.05, false, 300, 200),
                    delayed(LevelName::Alarm, 1.0, 0.05, true, 0, 500),
                    delayed(LevelName::PowerCut, 1.5, 0.5, true, 0, 1000),
                ],
            },
            ChannelRules {
                id: "co".into(),
                levels: vec![delayed(LevelName::Alarm, 24.0, 2.0, false, 700, 400)],
            },
        ],
        1,
    )
}

impl Engine {
    /// What `update` did before it passed over unchanged readings: every
    /// reading evaluated.
    fn update_always(
        &mut self,
        ch: usize,
        r: &Reading,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<AlarmEvent> {
        // Forget the last reading, keeping the counts of unknown channels
        // true, so that the reading is never the same as the last.
        if !unknown(self.last[ch]) {
            self.unknown += 1;
            self.unknown_guards += usize::from(self.rules[ch].guards_power());
        }
        self.last[ch] = None;
        self.update(ch, r, now, wall)
    }

    /// What `tick` did before it kept its due set: every channel, always.
    fn tick_every_channel(&mut self, now: Instant, wall: SystemTime) -> Vec<AlarmEvent> {
        let mut out = Vec::new();
        for ch in 0..self.rules.len() {
            self.evaluate(ch, now, wall, &mut out);
        }
        out
    }

    /// What `outputs` computed before it kept counts: every channel walked.
    fn outputs_by_walking(&self) -> Outputs {
        let mut o = self.outputs();
        let mut beacon = Beacon::Green;
        for a in self.active() {
            beacon = beacon.max(match a.kind {
                AlarmKind::Level(LevelName::Alarm | LevelName::PowerCut) => Beacon::Red,
                _ => Beacon::Yellow,
            });
        }
        let mut power = !self
            .active
            .keys()
            .any(|(_, k)| *k == AlarmKind::Level(LevelName::PowerCut));
        for (ch, rules) in self.rules.iter().enumerate() {
            if !matches!(self.last[ch], Some((Some(_), ReadingState::Ok))) {
                beacon = beacon.max(Beacon::Yellow);
                power &= !rules.guards_power();
            }
        }
        o.beacon = beacon;
        o.power_allowed = power;
        o
    }
}

/// What an engine answered an acknowledgement: event kinds, ids, channels.
type AckAnswer = Result<Vec<(EventKind, u64, String)>, String>;

/// The `i`-th active alarm of `every` acknowledged in both engines: what
/// each answered, equal when none is active.
fn ack_nth_in_both(
    fast: &mut Engine,
    every: &mut Engine,
    i: usize,
    wall: SystemTime,
) -> (AckAnswer, AckAnswer) {
    let kinds = |v: Vec<AlarmEvent>| {
        v.into_iter()
            .map(|e| (e.kind, e.alarm_id, e.channel))
            .collect::<Vec<_>>()
    };
    let Some(id) = every.active().map(|a| a.id).nth(i) else {
        return (Ok(Vec::new()), Ok(Vec::new()));
    };
    let a = fast
        .ack(id, "p", wall)
        .map(kinds)
        .map_err(|e| e.to_string());
    let b = every
        .ack(id, "p", wall)
        .map(kinds)
        .map_err(|e| e.to_string());
    (a, b)
}

/// Channel `c`'s alarm of before a restart restored in both engines.
fn restore_in_both(
    fast: &mut Engine,
    every: &mut Engine,
    c: usize,
    acked: bool,
    now: Instant,
    wall: SystemTime,
) {
    let r = Restored {
        id: 900 + c as u64,
        channel: ["ch4", "co"][c].into(),
        kind: AlarmKind::Level(LevelName::Alarm),
        value: Some(1.0),
        raised_wall: wall,
        acked: acked.then(|| Ack {
            by: "p".into(),
            at: wall,
        }),
    };
    fast.restore(std::slice::from_ref(&r), now);
    every.restore(std::slice::from_ref(&r), now);
}

#[derive(Debug, Clone)]
enum Step2 {
    Value(usize, f64),
    Special(usize, ReadingState),
    AckOne(usize),
    Restore(usize, bool),
    Wait(u64),
}

fn step2() -> impl Strategy<Value = Step2> {
    prop_oneof![
        6 => (0usize..2, 0.0f64..30.0).prop_map(|(c, v)| Step2::Value(c, if c == 0 { v / 10.0 } else { v })),
        1 => (0usize..2, prop_oneof![Just(ReadingState::CommFault), Just(ReadingState::Stale), Just(ReadingState::WarmingUp)]).prop_map(|(c, s)| Step2::Special(c, s)),
        2 => (0usize..4).prop_map(Step2::AckOne),
        1 => (0usize..2, any::<bool>()).prop_map(|(c, a)| Step2::Restore(c, a)),
        4 => (0u64..1200).prop_map(Step2::Wait),
    ]
}

proptest! {
    /// Ticking only the due channels, at the deadlines the engine gives,
    /// decides exactly what ticking every channel every 10 ms decided; and
    /// the counted outputs are the walked ones.
    #[test]
    fn ticking_only_due_channels_at_their_deadlines_changes_nothing(steps in proptest::collection::vec(step2(), 1..60)) {
        let (mut fast, mut every) = (delayed_engine(), delayed_engine());
        let t0 = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut t = Duration::ZERO;
        let kinds = |v: Vec<AlarmEvent>| v.into_iter().map(|e| (e.kind, e.alarm_id, e.channel)).collect::<Vec<_>>();
        for s in steps {
            t += Duration::from_millis(10);
            let now = t0 + t;
            match s {
                Step2::Value(c, v) => {
                    let r = Reading::ok(v, now, SystemTime::now());
                    prop_assert_eq!(kinds(fast.update(c, &r, now, wall)), kinds(every.update(c, &r, now, wall)));
                }
                Step2::Special(c, st) => {
                    let r = Reading::fault(st, "x", now, SystemTime::now());
                    prop_assert_eq!(kinds(fast.update(c, &r, now, wall)), kinds(every.update(c, &r, now, wall)));
                }
                Step2::AckOne(i) => {
                    let (a, b) = ack_nth_in_both(&mut fast, &mut every, i, wall);
                    prop_assert_eq!(a, b);
                }
                Step2::Restore(c, acked) => restore_in_both(&mut fast, &mut every, c, acked, now, wall),
                Step2::Wait(ms) => {
                    // The reference ticks every 10 ms; the engine under
                    // test only when its next deadline says so.
                    // Compared at every step, so a late alarm is caught.
                    let end = t + Duration::from_millis(ms);
                    while t < end {
                        t += Duration::from_millis(10);
                        let now = t0 + t;
                        let b = kinds(every.tick_every_channel(now, wall));
                        let a = if fast.next_deadline(now).is_some_and(|d| d <= now) {
                            kinds(fast.tick(now, wall))
                        } else {
                            Vec::new()
                        };
                        prop_assert_eq!(a, b, "at {:?}", t);
                        prop_assert_eq!(fast.outputs(), every.outputs_by_walking());
                    }
                }
            }
            prop_assert_eq!(fast.outputs(), every.outputs_by_walking());
            prop_assert_eq!(fast.outputs(), every.outputs());
        }
    }
}

#[derive(Debug, Clone)]
enum Step3 {
    /// A reading from a few values, so the same one comes again and again.
    Value(usize, usize),
    Special(usize, ReadingState),
    AckOne(usize),
    Restore(usize, bool),
    /// Time passes; with `true` the engine is ticked as the daemon does.
    Wait(u64, bool),
}

fn step3() -> impl Strategy<Value = Step3> {
    prop_oneof![
        8 => (0usize..2, 0usize..5).prop_map(|(c, v)| Step3::Value(c, v)),
        1 => (0usize..2, prop_oneof![Just(ReadingState::CommFault), Just(ReadingState::Stale), Just(ReadingState::WarmingUp)]).prop_map(|(c, s)| Step3::Special(c, s)),
        2 => (0usize..4).prop_map(Step3::AckOne),
        1 => (0usize..2, any::<bool>()).prop_map(|(c, a)| Step3::Restore(c, a)),
        4 => (0u64..1200, any::<bool>()).prop_map(|(ms, t)| Step3::Wait(ms, t)),
    ]
}

proptest! {
    /// Passing over a reading equal to the channel's last one (no delay
    /// running, nothing to recheck) decides exactly what evaluating every
    /// reading decided: the same events, the same outputs, at every step.
    #[test]
    fn passing_over_unchanged_readings_changes_nothing(steps in proptest::collection::vec(step3(), 1..80)) {
        const VALUES: [[f64; 5]; 2] = [[0.5, 0.85, 1.05, 1.2, 1.7], [10.0, 23.0, 25.0, 30.0, 21.0]];
        let (mut fast, mut every) = (delayed_engine(), delayed_engine());
        let t0 = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut t = Duration::ZERO;
        let kinds = |v: Vec<AlarmEvent>| v.into_iter().map(|e| (e.kind, e.alarm_id, e.channel, e.level)).collect::<Vec<_>>();
        for s in steps {
            t += Duration::from_millis(10);
            let now = t0 + t;
            match s {
                Step3::Value(c, i) => {
                    let r = Reading::ok(VALUES[c][i], now, SystemTime::now());
                    prop_assert_eq!(kinds(fast.update(c, &r, now, wall)), kinds(every.update_always(c, &r, now, wall)));
                }
                Step3::Special(c, st) => {
                    let r = Reading::fault(st, "x", now, SystemTime::now());
                    prop_assert_eq!(kinds(fast.update(c, &r, now, wall)), kinds(every.update_always(c, &r, now, wall)));
                }
                Step3::AckOne(i) => {
                    let (a, b) = ack_nth_in_both(&mut fast, &mut every, i, wall);
                    prop_assert_eq!(a, b);
                }
                Step3::Restore(c, acked) => restore_in_both(&mut fast, &mut every, c, acked, now, wall),
                Step3::Wait(ms, tick) => {
                    t += Duration::from_millis(ms);
                    if tick {
                        let now = t0 + t;
                        prop_assert_eq!(kinds(fast.tick(now, wall)), kinds(every.tick(now, wall)));
                    }
                }
            }
            prop_assert_eq!(fast.outputs(), every.outputs());
            prop_assert_eq!(fast.outputs(), every.outputs_by_walking());
            let active = |e: &Engine| e.active().map(|a| (a.id, a.kind, a.condition, a.acked.is_some())).collect::<Vec<_>>();
            prop_assert_eq!(active(&fast), active(&every));
        }
    }
}

#[test]
fn the_next_deadline_is_the_end_of_the_earliest_running_delay() {
    let mut e = delayed_engine();
    let mut c = Clock::new();
    let (now, _) = c.at(0.0);
    assert_eq!(e.next_deadline(now), None, "nothing read, nothing waits");
    feed(&mut e, &mut c, 0, 1.0, 0.5);
    feed(&mut e, &mut c, 1, 1.0, 10.0);
    assert_eq!(e.next_deadline(now), None, "normal values, nothing waits");
    feed(&mut e, &mut c, 1, 2.2, 30.0);
    feed(&mut e, &mut c, 0, 2.5, 0.9);
    assert_eq!(
        e.next_deadline(now),
        Some(c.t0 + Duration::from_millis(2800)),
        "the warning's 300 ms ends before CO's 700 ms"
    );
    let (now, wall) = c.at(2.8);
    let raised = e.tick(now, wall);
    assert_eq!(raised.len(), 1);
    assert_eq!(
        e.next_deadline(now),
        Some(c.t0 + Duration::from_millis(2900)),
        "then CO's"
    );
    let (now, wall) = c.at(2.9);
    assert_eq!(e.tick(now, wall).len(), 1);
    assert_eq!(e.next_deadline(now), None);
}

#[test]
fn the_daemons_engine_keeps_power_cut_until_its_history_is_back() {
    let mut e = Engine::awaiting_history(engine().rules().to_vec(), 1000);
    let mut c = Clock::new();
    settle(&mut e, &mut c);
    let o = e.outputs();
    assert!(!o.power_allowed, "good readings alone: {o:?}");
    assert_eq!(o.beacon, Beacon::Yellow);
    let (now, _) = c.at(1.0);
    e.restore(&[], now);
    assert!(
        e.outputs().power_allowed,
        "nothing was open: readings decide"
    );
}

#[test]
fn a_lost_history_holds_power_behind_an_alarm_until_it_is_acknowledged() {
    let mut e = Engine::awaiting_history(engine().rules().to_vec(), 1000);
    let mut c = Clock::new();
    settle(&mut e, &mut c);
    let (now, wall) = c.at(1.0);
    let evs = e.history_unavailable(now, wall);
    assert_eq!(
        evs.iter()
            .map(|e| (e.kind, e.channel.as_str()))
            .collect::<Vec<_>>(),
        [
            (EventKind::Raised, HISTORY_SUBJECT),
            (EventKind::Returned, HISTORY_SUBJECT)
        ]
    );
    let o = e.outputs();
    assert_eq!(
        o,
        Outputs {
            siren: true,
            beacon: Beacon::Red,
            power_allowed: false
        }
    );
    assert!(e.history_unavailable(now, wall).is_empty(), "raised once");
    // Readings come and go; the power stays cut.
    for (i, v) in [0.2, 0.4, 0.3].into_iter().enumerate() {
        feed(&mut e, &mut c, 0, 2.0 + i as f64, v);
        assert!(!e.outputs().power_allowed);
    }
    let id = e
        .active()
        .find(|a| a.subject.as_deref() == Some(HISTORY_SUBJECT))
        .map(|a| a.id);
    let (_, wall) = c.at(10.0);
    let evs = e
        .ack(id.unwrap_or_default(), "王班长", wall)
        .unwrap_or_default();
    assert_eq!(
        evs.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventKind::Acknowledged, EventKind::Cleared]
    );
    assert!(e.outputs().power_allowed && !e.outputs().siren);
}

#[test]
fn an_output_that_cannot_be_driven_latches_a_fault_until_acknowledged_and_fixed() {
    let mut e = engine();
    let mut c = Clock::new();
    settle(&mut e, &mut c);
    let (now, wall) = c.at(1.0);
    let evs = e.set_fault("output:power_relay", true, now, wall);
    assert_eq!(
        evs.iter()
            .map(|e| (e.kind, e.level, e.channel.as_str()))
            .collect::<Vec<_>>(),
        [(EventKind::Raised, AlarmKind::Fault, "output:power_relay")]
    );
    assert!(e.outputs().siren, "the siren sounds for it");
    assert_eq!(e.outputs().beacon, Beacon::Yellow);
    assert!(
        e.set_fault("output:power_relay", true, now, wall)
            .is_empty()
    );
    let id = e.active().next().map(|a| a.id).unwrap_or_default();
    let (_, wall) = c.at(2.0);
    assert_eq!(
        e.ack(id, "王", wall).map(|v| v.len()),
        Ok(1),
        "still failing: stays"
    );
    assert!(!e.outputs().siren);
    let (now, wall) = c.at(3.0);
    assert_eq!(
        e.set_fault("output:power_relay", false, now, wall)
            .iter()
            .map(|e| e.kind)
            .collect::<Vec<_>>(),
        [EventKind::Cleared]
    );
    assert_eq!(e.active().count(), 0);
    // Failing again, and fixed before anyone acknowledged: it waits.
    e.set_fault("output:siren", true, now, wall);
    assert_eq!(
        e.set_fault("output:siren", false, now, wall)
            .iter()
            .map(|e| e.kind)
            .collect::<Vec<_>>(),
        [EventKind::Returned]
    );
    assert!(e.outputs().siren);
    let id = e.active().next().map(|a| a.id).unwrap_or_default();
    assert_eq!(e.ack(id, "王", wall).map(|v| v.len()), Ok(2));
    assert_eq!(e.active().count(), 0);
}

#[test]
fn a_feedback_fault_cuts_power_latches_and_survives_a_restart() {
    let mut c = Clock::new();
    let mut e = engine();
    settle(&mut e, &mut c);
    let (now, wall) = c.at(1.0);
    e.restore(&[], now);
    assert!(e.outputs().power_allowed);
    let raised = e.set_feedback_fault(true, now, wall);
    assert_eq!(raised.len(), 1);
    assert_eq!(raised[0].channel, FEEDBACK_SUBJECT);
    assert_eq!(raised[0].level, AlarmKind::Fault);
    let o = e.outputs();
    assert_eq!(
        (o.siren, o.beacon, o.power_allowed),
        (true, Beacon::Red, false)
    );
    // The feedback agrees again: still latched, power still cut.
    let (now, wall) = c.at(2.0);
    assert_eq!(
        e.set_feedback_fault(false, now, wall)[0].kind,
        EventKind::Returned
    );
    assert!(!e.outputs().power_allowed);
    // A restart brings it back holding the power.
    let id = raised[0].alarm_id;
    let mut again = engine();
    settle(&mut again, &mut c);
    again.restore(
        &[Restored {
            id,
            channel: FEEDBACK_SUBJECT.into(),
            kind: AlarmKind::Fault,
            value: None,
            raised_wall: wall,
            acked: None,
        }],
        now,
    );
    assert!(!again.outputs().power_allowed, "a restart returns no power");
    // Acknowledged once it no longer holds: gone, power back.
    e.ack(id, "王班长", wall).unwrap();
    assert!(e.active().next().is_none());
    assert!(e.outputs().power_allowed);
}
