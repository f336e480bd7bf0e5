//! The simulated devices of the demo station: their registers, how the
//! values drift, and the faults a scenario injects.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use crate::config::{DataType, Order, Table};
use pithead_core::decode::encode;

/// What a scenario does to the demo station over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Everything normal, values drifting realistically.
    Normal,
    /// Methane at the coal face rises through warning, alarm and power-cut.
    MethaneRise,
    /// Oxygen at the face falls below 20 %, then 18 %.
    OxygenDrop,
    /// The sump level and inflow rise.
    WaterRise,
    /// The face monitor (unit 1) stops answering.
    SensorUnplugged,
    /// The return-airway monitor (unit 2) answers with garbage.
    GarbageFrames,
    /// The sump transmitter (unit 3) answers after 1.5 s.
    SlowDevice,
    /// Methane rises as in `methane-rise`, and the power relay's contactor
    /// has welded shut: the cut is commanded, the feedback still shows
    /// power (馈电异常). The contactor is the daemon's simulated output
    /// (`pithead demo` sets `outputs.sim_fault = "power_relay=welded"`);
    /// to the Modbus devices this is `methane-rise`.
    StuckContactor,
}

impl Scenario {
    /// Every scenario name.
    pub const NAMES: [&'static str; 8] = [
        "normal",
        "methane-rise",
        "oxygen-drop",
        "water-rise",
        "sensor-unplugged",
        "garbage-frames",
        "slow-device",
        "stuck-contactor",
    ];
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "normal" => Scenario::Normal,
            "methane-rise" => Scenario::MethaneRise,
            "oxygen-drop" => Scenario::OxygenDrop,
            "water-rise" => Scenario::WaterRise,
            "sensor-unplugged" => Scenario::SensorUnplugged,
            "garbage-frames" => Scenario::GarbageFrames,
            "slow-device" => Scenario::SlowDevice,
            "stuck-contactor" => Scenario::StuckContactor,
            _ => {
                return Err(format!(
                    "unknown scenario `{s}`; one of: {}",
                    Scenario::NAMES.join(", ")
                ));
            }
        })
    }
}

/// How a unit misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answers properly.
    None,
    /// Never answers.
    Silent,
    /// Answers with bytes that are not a Modbus frame.
    Garbage,
    /// Answers, but only after this long.
    Slow(Duration),
    /// Answers with the wrong transaction id (Modbus TCP).
    WrongTid,
    /// Answers every read with exception 4 (server device failure).
    Exception,
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "none" => Fault::None,
            "silent" => Fault::Silent,
            "garbage" => Fault::Garbage,
            "wrong-tid" => Fault::WrongTid,
            "exception" => Fault::Exception,
            s => match s.strip_prefix("slow") {
                Some("") => Fault::Slow(Duration::from_millis(1500)),
                Some(ms) => Fault::Slow(Duration::from_millis(
                    ms.trim_start_matches(':')
                        .parse()
                        .map_err(|_| format!("bad delay in `{s}`"))?,
                )),
                None => {
                    return Err(format!(
                        "unknown fault `{s}`; one of: none, silent, garbage, slow[:MS], wrong-tid, exception"
                    ));
                }
            },
        })
    }
}

/// One unit's memory and behaviour.
#[derive(Debug, Default, Clone)]
pub struct Unit {
    /// Holding registers.
    pub holding: BTreeMap<u16, u16>,
    /// Input registers.
    pub input: BTreeMap<u16, u16>,
    /// Coils.
    pub coils: BTreeMap<u16, bool>,
    /// Discrete inputs.
    pub discrete: BTreeMap<u16, bool>,
    /// Registers set through the control port, left alone by the drift.
    pub pinned: HashSet<(u8, u16)>,
    /// Injected misbehaviour.
    pub fault: Option<Fault>,
    /// Requests received.
    pub requests: u64,
}

fn table_code(t: Table) -> u8 {
    t as u8
}

impl Unit {
    /// Sets registers starting at `addr` unless pinned (`force` overrides).
    pub fn set_words(&mut self, table: Table, addr: u16, words: &[u16], force: bool) {
        for (i, w) in words.iter().enumerate() {
            let Some(a) = addr.checked_add(u16::try_from(i).unwrap_or(u16::MAX)) else {
                break;
            };
            if !force && self.pinned.contains(&(table_code(table), a)) {
                continue;
            }
            if force {
                self.pinned.insert((table_code(table), a));
            }
            match table {
                Table::Holding => {
                    self.holding.insert(a, *w);
                }
                Table::Input => {
                    self.input.insert(a, *w);
                }
                Table::Coil => {
                    self.coils.insert(a, *w != 0);
                }
                Table::Discrete => {
                    self.discrete.insert(a, *w != 0);
                }
            }
        }
    }

    /// Forgets a pin so the drift moves the register again.
    pub fn unpin(&mut self, table: Table, addr: u16) {
        self.pinned.remove(&(table_code(table), addr));
    }

    /// Reads registers; `None` if any address is not mapped (the device
    /// answers with an illegal-address exception).
    pub fn read_words(&self, table: Table, addr: u16, count: u16) -> Option<Vec<u16>> {
        let map = match table {
            Table::Holding => &self.holding,
            Table::Input => &self.input,
            _ => return None,
        };
        (0..count)
            .map(|i| map.get(&addr.checked_add(i)?).copied())
            .collect()
    }

    /// Reads bits; `None` if any address is not mapped.
    pub fn read_bits(&self, table: Table, addr: u16, count: u16) -> Option<Vec<bool>> {
        let map = match table {
            Table::Coil => &self.coils,
            Table::Discrete => &self.discrete,
            _ => return None,
        };
        (0..count)
            .map(|i| map.get(&addr.checked_add(i)?).copied())
            .collect()
    }
}

/// A tiny deterministic noise source (xorshift); the drift needs no more.
#[derive(Debug, Clone)]
pub struct Noise(u64);

impl Noise {
    /// Seeded noise.
    pub fn new(seed: u64) -> Self {
        Noise(seed | 1)
    }
    /// Uniform in [-1, 1).
    pub fn sample(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

/// The physical quantities of the demo station at a moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Air {
    /// Methane at the 1201 face, %vol.
    pub ch4_face: f64,
    /// CO at the face, ppm.
    pub co_face: f64,
    /// Oxygen at the face, %vol.
    pub o2_face: f64,
    /// Temperature at the face, °C.
    pub temp_face: f64,
    /// Methane in the return airway, %vol.
    pub ch4_return: f64,
    /// CO2 in the return airway, %vol.
    pub co2_return: f64,
    /// H2S in the return airway, ppm.
    pub h2s_return: f64,
    /// Sump water level, m.
    pub sump_level: f64,
    /// Water inflow, m³/h.
    pub inflow: f64,
    /// Sump pump running.
    pub pump_on: bool,
}

/// The air at `t` seconds into `scenario`, with noise.
pub fn air(scenario: Scenario, t: f64, n: &mut Noise) -> Air {
    let slow = |period: f64| (t / period * std::f64::consts::TAU).sin();
    let mut a = Air {
        ch4_face: 0.30 + 0.05 * slow(90.0) + 0.01 * n.sample(),
        co_face: 6.0 + 1.0 * slow(120.0) + 0.5 * n.sample(),
        o2_face: 20.8 + 0.05 * slow(150.0) + 0.02 * n.sample(),
        temp_face: 24.5 + 0.3 * slow(300.0) + 0.05 * n.sample(),
        ch4_return: 0.45 + 0.05 * slow(110.0) + 0.01 * n.sample(),
        co2_return: 0.15 + 0.02 * slow(200.0) + 0.005 * n.sample(),
        h2s_return: 0.3 + 0.1 * n.sample().abs(),
        sump_level: 2.40 + 0.02 * slow(600.0) + 0.002 * n.sample(),
        inflow: 35.0 + 2.0 * slow(240.0) + 0.5 * n.sample(),
        pump_on: true,
    };
    // Scenarios start changing 5 s in, so a daemon started with them sees
    // normal air first.
    let since = (t - 5.0).max(0.0);
    match scenario {
        Scenario::MethaneRise | Scenario::StuckContactor => {
            a.ch4_face = (0.30 + 0.04 * since).min(2.2) + 0.005 * n.sample()
        }
        Scenario::OxygenDrop => a.o2_face = (20.8 - 0.05 * since).max(17.5) + 0.01 * n.sample(),
        Scenario::WaterRise => {
            a.sump_level = (2.4 + 0.05 * since).min(8.0);
            a.inflow = (35.0 + 2.0 * since).min(120.0);
        }
        _ => {}
    }
    a
}

/// First unit id of the bulk units used by load tests.
pub const BULK_FIRST: u8 = 10;

/// Moves every bulk register by a small random step.
pub fn drift_bulk(units: &mut BTreeMap<u8, Unit>, n: &mut Noise) {
    for (_, u) in units.range_mut(BULK_FIRST..) {
        for (a, w) in &mut u.holding {
            if !u.pinned.contains(&(table_code(Table::Holding), *a)) {
                *w = u16_of((f64::from(*w) + 3.0 * n.sample()).clamp(900.0, 1100.0));
            }
        }
    }
}

/// A station-like drift of the bulk registers: every second, `share` of
/// them move by one count within `center ± 5`; about one moved register in
/// ten thousand jumps 12 counts up for that second (a reading over an
/// alarm level placed above the band), then comes back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BulkDrift {
    /// Share of registers moved each second, 0 to 1.
    pub share: f64,
    /// The band's middle, in counts.
    pub center: u16,
}

/// One second of [`BulkDrift`].
pub fn drift_bulk_share(units: &mut BTreeMap<u8, Unit>, d: &BulkDrift, n: &mut Noise) {
    let (lo, hi) = (d.center.saturating_sub(5), d.center.saturating_add(5));
    for (_, u) in units.range_mut(BULK_FIRST..) {
        for (a, w) in &mut u.holding {
            if u.pinned.contains(&(table_code(Table::Holding), *a)) {
                continue;
            }
            if *w > hi {
                // The excursion lasts one second.
                *w = hi;
                continue;
            }
            if (n.sample() + 1.0) / 2.0 >= d.share {
                continue;
            }
            *w = if (n.sample() + 1.0) / 2.0 < 1e-4 {
                d.center.saturating_add(12)
            } else if n.sample() < 0.0 {
                w.saturating_sub(1).max(lo)
            } else {
                w.saturating_add(1).min(hi)
            };
        }
    }
}

/// Unit ids of the demo devices.
pub const FACE: u8 = 1;
/// Return-airway monitor.
pub const RETURN: u8 = 2;
/// Sump level transmitter.
pub const SUMP: u8 = 3;

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "values are within the sensors' ranges"
)]
fn u16_of(v: f64) -> u16 {
    v.round().clamp(0.0, 65535.0) as u16
}

/// Writes the air into the demo units' registers, as the demo
/// configuration (`config/demo.toml`) reads them.
pub fn write_air(units: &mut BTreeMap<u8, Unit>, a: &Air) {
    let big = Order::Big;
    if let Some(u) = units.get_mut(&FACE) {
        u.set_words(Table::Input, 0, &[u16_of(a.ch4_face * 100.0)], false);
        u.set_words(Table::Input, 1, &[u16_of(a.co_face)], false);
        u.set_words(Table::Input, 2, &[u16_of(a.o2_face * 10.0)], false);
        u.set_words(
            Table::Input,
            3,
            &encode(a.temp_face * 10.0, DataType::I16, big, big),
            false,
        );
    }
    if let Some(u) = units.get_mut(&RETURN) {
        u.set_words(
            Table::Holding,
            0,
            &encode(a.ch4_return, DataType::F32, big, big),
            false,
        );
        u.set_words(
            Table::Holding,
            2,
            &encode(a.co2_return, DataType::F32, big, big),
            false,
        );
        u.set_words(Table::Holding, 4, &[u16_of(a.h2s_return * 10.0)], false);
    }
    if let Some(u) = units.get_mut(&SUMP) {
        // Level in millimetres as u32, low word first (a common "CDAB" device).
        u.set_words(
            Table::Input,
            0,
            &encode(a.sump_level * 1000.0, DataType::U32, big, Order::Little),
            false,
        );
        u.set_words(Table::Input, 2, &[u16_of(a.inflow * 10.0)], false);
        u.set_words(Table::Discrete, 0, &[u16::from(a.pump_on)], false);
    }
}

/// The demo units with their faults for `scenario` at `t` seconds.
pub fn scenario_faults(scenario: Scenario, t: f64) -> [(u8, Fault); 3] {
    let on = t >= 5.0;
    let face = if on && scenario == Scenario::SensorUnplugged {
        Fault::Silent
    } else {
        Fault::None
    };
    let ret = if on && scenario == Scenario::GarbageFrames {
        Fault::Garbage
    } else {
        Fault::None
    };
    let sump = if on && scenario == Scenario::SlowDevice {
        Fault::Slow(Duration::from_millis(1500))
    } else {
        Fault::None
    };
    [(FACE, face), (RETURN, ret), (SUMP, sump)]
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_station_drift_moves_its_share_within_the_band() {
        let mut units = BTreeMap::new();
        let mut u = Unit::default();
        u.set_words(Table::Holding, 0, &[90; 1000], false);
        units.insert(BULK_FIRST, u);
        let d = BulkDrift {
            share: 0.2,
            center: 90,
        };
        let mut n = Noise::new(3);
        let before: Vec<u16> = units[&BULK_FIRST].holding.values().copied().collect();
        drift_bulk_share(&mut units, &d, &mut n);
        let after: Vec<u16> = units[&BULK_FIRST].holding.values().copied().collect();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert!((120..=280).contains(&moved), "about a fifth: {moved}");
        for _ in 0..50 {
            drift_bulk_share(&mut units, &d, &mut n);
        }
        let all: Vec<u16> = units[&BULK_FIRST].holding.values().copied().collect();
        assert!(
            all.iter().all(|w| (85..=95).contains(w) || *w == 102),
            "{all:?}"
        );
    }

    use super::*;

    #[test]
    fn methane_rise_passes_every_level_then_holds() {
        let mut n = Noise::new(7);
        let at = |t| air(Scenario::MethaneRise, t, &mut Noise::new(7)).ch4_face;
        assert!(at(0.0) < 0.5);
        assert!(at(30.0) > 1.0 && at(30.0) < 1.5);
        assert!(at(60.0) > 2.0);
        assert!((air(Scenario::Normal, 60.0, &mut n).ch4_face - 0.3).abs() < 0.1);
    }

    #[test]
    fn registers_round_trip_through_the_demo_encoding() {
        let mut units: BTreeMap<u8, Unit> = [FACE, RETURN, SUMP]
            .into_iter()
            .map(|u| (u, Unit::default()))
            .collect();
        let a = air(Scenario::Normal, 0.0, &mut Noise::new(1));
        write_air(&mut units, &a);
        let face = &units[&FACE];
        assert_eq!(
            face.read_words(Table::Input, 0, 4).map(|w| w.len()),
            Some(4)
        );
        assert_eq!(
            face.read_words(Table::Input, 0, 5),
            None,
            "unmapped register"
        );
        let sump = units[&SUMP]
            .read_words(Table::Input, 0, 2)
            .unwrap_or_default();
        let mm = (u32::from(sump[1]) << 16) | u32::from(sump[0]);
        assert!((f64::from(mm) / 1000.0 - a.sump_level).abs() < 0.001);
    }

    #[test]
    fn pinned_registers_ignore_the_drift() {
        let mut u = Unit::default();
        u.set_words(Table::Input, 0, &[500], true);
        u.set_words(Table::Input, 0, &[30], false);
        assert_eq!(u.read_words(Table::Input, 0, 1), Some(vec![500]));
        u.unpin(Table::Input, 0);
        u.set_words(Table::Input, 0, &[30], false);
        assert_eq!(u.read_words(Table::Input, 0, 1), Some(vec![30]));
    }

    #[test]
    fn faults_parse() {
        assert_eq!(
            "slow:250".parse::<Fault>(),
            Ok(Fault::Slow(Duration::from_millis(250)))
        );
        assert!("loud".parse::<Fault>().is_err());
        assert!("methane-rise".parse::<Scenario>().is_ok());
    }
}
