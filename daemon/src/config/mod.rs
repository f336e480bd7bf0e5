//! The configuration file: one TOML document, read once at start.
//!
//! Three layers, kept apart on purpose:
//! * the serde types in this file, strict (`deny_unknown_fields`) with the
//!   defaults written next to each field;
//! * [`load`], which parses the text keeping source positions, so that every
//!   error names the file, line, column and key (see [`Diagnostic`]);
//! * [`check`], the semantic rules that serde cannot express (duplicate ids,
//!   overlapping registers, alarm order, paths that must be writable).

mod check;
mod load;
pub mod presets;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use check::check;
pub use load::{load_file, load_file_with, load_str, load_str_with};
pub use pithead_core::config_file::{ConfigError, Diagnostic};

/// Where the daemon looks for its configuration when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/pithead/pithead.toml";

/// The commented configuration shipped with Pithead; `pithead configfile`
/// prints it and the package installs it as `/etc/pithead/pithead.toml`.
pub const TEMPLATE: &str = include_str!("../../../config/pithead.toml");

/// The configuration of the demo: simulated devices on localhost.
pub const DEMO: &str = include_str!("../../../config/demo.toml");

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Who this station is; used in every message to the county.
    pub station: Station,
    /// Where data is kept and for how long.
    pub storage: Storage,
    /// The kiosk and console web server.
    pub http: Http,
    /// Log level and format.
    pub log: Log,
    /// Kiosk presentation.
    pub kiosk: Kiosk,
    /// The list of workers and shift rules.
    pub roster: Roster,
    /// The uplink to the county union's broker.
    pub mqtt: Mqtt,
    /// How sensors are polled.
    pub acquisition: Acquisition,
    /// Communication lines: one RS-485 port or one TCP endpoint each.
    pub buses: Vec<Bus>,
    /// Modbus devices (unit ids) on those lines.
    pub devices: Vec<Device>,
    /// Measured quantities, each read from one device register.
    pub channels: Vec<Channel>,
    /// Siren, beacon and power-cut relay.
    pub outputs: OutputsConfig,
    /// Hardware watchdog.
    pub watchdog: WatchdogConfig,
    /// The rule of the station's own light (预评), the county's rule:
    /// `red_power_cuts`, `ack_minutes`, `yellow_open_days`,
    /// `offline_hours`, `sensor_down_hours`.
    pub light: pithead_core::light::Rule,
}

/// Where the siren, the beacon and the power-cut relay are wired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputsConfig {
    /// `gpio` drives real lines; `sim` only records changes (demo, tests,
    /// a box without outputs).
    pub backend: OutputBackend,
    /// GPIO character device of the relay board.
    pub chip: PathBuf,
    /// Siren.
    pub siren: Line,
    /// Red lamp of the beacon.
    pub beacon_red: Line,
    /// Yellow lamp of the beacon.
    pub beacon_yellow: Line,
    /// Green lamp of the beacon.
    pub beacon_green: Line,
    /// Power-cut relay: energised while power is allowed, so that a dead box,
    /// a cut wire or a lost supply cuts power.
    pub power_relay: Line,
    /// Chirp the siren and cycle the beacon at start.
    pub self_test: bool,
    /// The power relay's feedback (馈电): where the daemon reads whether
    /// power is really there. Without it, a welded contactor goes unseen.
    pub power_feedback: Option<PowerFeedback>,
    /// How long the feedback may disagree with the relay (the contactor's
    /// travel, the feedback channel's poll) before it is 馈电异常.
    #[serde(with = "humantime_serde")]
    pub feedback_delay: Duration,
    /// Backend `sim` only: faults the simulated outputs have from the start,
    /// as in `PITHEAD_SIM_OUTPUT_FAULT` (`power_relay=welded`,
    /// `power_relay=no_power`, `siren=dead`, …; see `docs/SIMULATOR.md`).
    pub sim_fault: Option<String>,
}

/// Where the power relay's feedback comes from: a GPIO input, or a Modbus
/// channel (a discrete input or a coil: 1 while power is present).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerFeedback {
    /// Input line on `outputs.chip`, on while the contactor carries power
    /// (with backend `sim`: the simulated contactor's auxiliary contact).
    pub line: Option<u32>,
    /// The line reads low while power is present.
    #[serde(default)]
    pub active_low: bool,
    /// Or: the id of a `discrete` or `coil` channel that reads 1 while
    /// power is present (a feed sensor on the monitoring substation).
    pub channel: Option<String>,
}

impl Default for OutputsConfig {
    fn default() -> Self {
        let line = |offset| Line {
            line: offset,
            active_low: false,
        };
        OutputsConfig {
            backend: OutputBackend::Gpio,
            chip: PathBuf::from("/dev/gpiochip0"),
            siren: line(17),
            beacon_red: line(22),
            beacon_yellow: line(23),
            beacon_green: line(24),
            power_relay: line(27),
            self_test: true,
            power_feedback: None,
            feedback_delay: Duration::from_secs(2),
            sim_fault: None,
        }
    }
}

/// How outputs are driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputBackend {
    /// GPIO character device lines.
    Gpio,
    /// Simulated: changes are recorded and shown, nothing is driven.
    Sim,
}

/// One GPIO line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// Line offset on the chip (on a Raspberry Pi, the BCM GPIO number).
    pub line: u32,
    /// The load is on when the line is low.
    #[serde(default)]
    pub active_low: bool,
}

/// The hardware watchdog, besides systemd's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchdogConfig {
    /// `/dev/watchdog` to have the board reset itself if the daemon hangs;
    /// unset to rely on systemd's watchdog alone.
    pub device: Option<PathBuf>,
}

/// Station identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Station {
    /// County id as assigned by the county union (letters, digits, `-`, `_`).
    pub county: String,
    /// Station id, unique within the county (letters, digits, `-`, `_`).
    pub id: String,
    /// Name shown on the kiosk and console.
    pub name: String,
    /// The station's time zone (IANA name, e.g. `Asia/Shanghai`): every time
    /// on the kiosk and the console is shown in it. Unset: the box's own.
    #[serde(default)]
    pub timezone: Option<String>,
}

impl Station {
    /// The time zone pages show times in: the configured one, else the
    /// box's own (`TZ`, `/etc/timezone`, or where `/etc/localtime` points);
    /// `None` when neither says (the page then uses its browser's).
    pub fn zone(&self) -> Option<String> {
        if let Some(z) = &self.timezone {
            return Some(z.clone());
        }
        let tz = std::env::var("TZ")
            .ok()
            .map(|z| z.trim_start_matches(':').to_owned());
        if let Some(z) = tz.filter(|z| is_zone_name(z)) {
            return Some(z);
        }
        if let Ok(z) = std::fs::read_to_string("/etc/timezone")
            && is_zone_name(z.trim())
        {
            return Some(z.trim().to_owned());
        }
        let link = std::fs::read_link("/etc/localtime").ok()?;
        let link = link.to_string_lossy();
        let (_, z) = link.split_once("zoneinfo/")?;
        is_zone_name(z).then(|| z.to_owned())
    }
}

/// A fault a simulated output can be given (`outputs.sim_fault`,
/// `PITHEAD_SIM_OUTPUT_FAULT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimFaultSpec {
    /// The line cannot be switched off.
    StuckOn,
    /// The line cannot be switched at all.
    Dead,
    /// The power relay switches, its contactor's contacts welded shut.
    Welded,
    /// The power relay switches, its contactor never carries power.
    NoPower,
}

/// The simulated outputs' names.
pub const SIM_OUTPUTS: [&str; 5] = [
    "siren",
    "beacon_red",
    "beacon_yellow",
    "beacon_green",
    "power_relay",
];

/// Parses one `output=fault` item of a simulated-fault list.
pub fn parse_sim_fault(item: &str) -> Result<(&str, SimFaultSpec), String> {
    let Some((output, fault)) = item.split_once('=') else {
        return Err(format!("`{}` is not output=fault", item.trim()));
    };
    let (output, fault) = (output.trim(), fault.trim());
    if !SIM_OUTPUTS.contains(&output) {
        return Err(format!(
            "no simulated output `{output}` (there are {})",
            SIM_OUTPUTS.join(", ")
        ));
    }
    let f = match fault {
        "stuck_on" => SimFaultSpec::StuckOn,
        "dead" => SimFaultSpec::Dead,
        "welded" | "no_power" if output != "power_relay" => {
            return Err(format!(
                "`{fault}` is a fault of the power_relay's contactor"
            ));
        }
        "welded" => SimFaultSpec::Welded,
        "no_power" => SimFaultSpec::NoPower,
        other => {
            return Err(format!(
                "unknown fault `{other}` (stuck_on, dead; for power_relay also welded, no_power)"
            ));
        }
    };
    Ok((output, f))
}

/// Whether `z` looks like an IANA zone name (`Asia/Shanghai`, `UTC`,
/// `Etc/GMT-8`).
pub fn is_zone_name(z: &str) -> bool {
    !z.is_empty()
        && z.len() <= 64
        && !z.starts_with('/')
        && !z.contains("..")
        && z.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'))
}

/// Data directory and retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// Directory holding the database and hazard photos. Must be writable.
    pub data_dir: PathBuf,
    /// Days raw readings are kept (regulations ask for at least 3 months).
    pub raw_readings_days: u32,
    /// Days per-minute aggregates are kept (regulations ask for 2 years).
    pub aggregates_days: u32,
    /// Upper bound, in MiB, of data waiting for the county. When reached the
    /// oldest periodic summaries are dropped first, never alarms, check-ins or
    /// hazard reports.
    pub outbox_cap_mb: u32,
    /// Free space, in MiB, kept for what matters: below it hazard photos are
    /// refused (the report itself is kept), check-ins and alarm events are
    /// still saved.
    pub reserve_mb: u32,
    /// Upper bound, in MiB, of the hazard photos kept.
    pub photos_max_mb: u32,
    /// Days the photos of a closed or rejected hazard are kept.
    pub photos_days: u32,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/pithead"),
            raw_readings_days: 92,
            aggregates_days: 731,
            outbox_cap_mb: 256,
            reserve_mb: 200,
            photos_max_mb: 1024,
            photos_days: 365,
        }
    }
}

/// The web server for the kiosk, the console and the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Plain HTTP: the address and port the box's own kiosk screen uses,
    /// `127.0.0.1:8080`. Another address puts passwords and sessions on the
    /// LAN in clear, and needs `allow_plain_http = true` on purpose.
    pub listen: String,
    /// HTTPS for the console from the station LAN, e.g. `0.0.0.0:8443`,
    /// with `tls_cert` and `tls_key` (`pithead tls self-signed` makes them).
    pub tls_listen: Option<String>,
    /// Certificate chain (PEM) for `tls_listen`.
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for `tls_listen`; readable by the daemon only.
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback `listen` anyway (a LAN without
    /// anyone to fear, a test bench); warned about at every start.
    pub allow_plain_http: bool,
    /// The names and addresses people use to reach the box
    /// (`pithead-1.local`, `192.168.1.20`): a request naming another host
    /// is refused (DNS rebinding). Loopback names are always allowed.
    pub names: Vec<String>,
    /// File holding the token that authorises supervisor actions over the
    /// API (`Authorization: Bearer …`), for tools and scripts. Unset: those
    /// actions need a console login.
    pub api_token_file: Option<PathBuf>,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            allow_plain_http: false,
            names: Vec::new(),
            api_token_file: None,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// Filter in `RUST_LOG` syntax; the `RUST_LOG` variable overrides it.
    pub level: String,
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Kiosk presentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kiosk {
    /// Language the kiosk starts in; miners can switch.
    pub language: Language,
    /// Kiosks that are not the box's own screen (a tablet at the lamp
    /// room): one `NAME KEY` per line. Check-ins and check-outs come only
    /// from loopback or from a client presenting one of these keys
    /// (`X-Kiosk-Key`), and each record says which kiosk made it.
    pub keys_file: Option<PathBuf>,
    /// Width of the kiosk's screen in millimetres (154 for the official
    /// 7-inch Raspberry Pi display), so that every touch target is at least
    /// 15 mm wide and high on it.
    pub screen_width_mm: u32,
    /// A badge reader on the box that acts as a keyboard
    /// (`/dev/input/by-id/…-event-kbd`): read by the daemon with an
    /// exclusive grab, so digits never go to a Chinese input method or a
    /// lost focus; each badge is a check-in for the direction the box's
    /// kiosk shows. Unset: the reader types into the kiosk's field.
    pub badge_reader: Option<PathBuf>,
    /// What the alarm banner tells miners to do, per level: the mine's own
    /// rules, in both languages.
    pub advice: Advice,
}

impl Default for Kiosk {
    fn default() -> Self {
        Self {
            language: Language::ZhCn,
            keys_file: None,
            screen_width_mm: 154,
            badge_reader: None,
            advice: Advice::default(),
        }
    }
}

/// One instruction, in both languages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Said {
    /// Simplified Chinese.
    pub zh: String,
    /// English.
    pub en: String,
}

impl Said {
    fn new(zh: &str, en: &str) -> Self {
        Self {
            zh: zh.to_owned(),
            en: en.to_owned(),
        }
    }
}

/// The alarm banner's instruction per level (`[kiosk.advice]`). The
/// defaults follow common practice; a mine writes its own rules here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Advice {
    /// A sensor that cannot be read (断线, 故障).
    pub fault: Said,
    /// A warning level (预警).
    pub warning: Said,
    /// An alarm level (报警).
    pub alarm: Said,
    /// A power-cut level (断电).
    pub power_cut: Said,
    /// Power cut because a channel guarding it cannot be read (断线 or
    /// 故障 on a power-cut channel: the fail-safe cut, not a gas reading).
    pub power_cut_fault: Said,
}

impl Default for Advice {
    fn default() -> Self {
        Self {
            fault: Said::new(
                "监测故障：已通知维修，请按规定携带便携仪人工检测",
                "Monitoring fault: maintenance is called; measure by hand with a portable detector as the rules require",
            ),
            warning: Said::new(
                "浓度接近限值：加强通风，注意观察，做好撤离准备",
                "Close to the limit: more ventilation, watch closely, be ready to leave",
            ),
            alarm: Said::new(
                "超限报警：停止作业，撤至新鲜风流处，听从指挥",
                "Over the limit: stop work, move to fresh air, follow the supervisor",
            ),
            power_cut: Said::new(
                "超限已断电，人员立即撤离",
                "Over the limit, power is cut: everyone leave now",
            ),
            power_cut_fault: Said::new(
                "监测中断，已安全断电：人员撤出该区域，待人工检测确认后再进入",
                "Monitoring lost, power cut for safety: leave the area until the gas is measured by hand",
            ),
        }
    }
}

impl Advice {
    /// The instruction for a level (`fault`, `warning`, `alarm`,
    /// `power_cut`, `power_cut_fault`).
    pub fn for_level(&self, level: &str) -> Option<&Said> {
        match level {
            "power_cut_fault" => Some(&self.power_cut_fault),
            "fault" => Some(&self.fault),
            "warning" => Some(&self.warning),
            "alarm" => Some(&self.alarm),
            "power_cut" => Some(&self.power_cut),
            _ => None,
        }
    }
}

/// User-interface language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Language {
    /// Simplified Chinese.
    #[serde(rename = "zh-CN")]
    ZhCn,
    /// English.
    #[serde(rename = "en")]
    En,
}

/// Roster source and shift rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Roster {
    /// CSV file (`badge,name,team,role`, UTF-8) imported at start, if set.
    pub file: Option<PathBuf>,
    /// Normal length of a shift underground.
    #[serde(with = "humantime_serde")]
    pub shift_length: Duration,
    /// Extra time after the shift before a miner is reported overdue.
    #[serde(with = "humantime_serde")]
    pub overdue_grace: Duration,
    /// How many may be underground at once (核定人数, from the mine's
    /// approved staffing): a check-in beyond it is still recorded (nobody
    /// is kept from checking in) and raises an `overcrowded` alarm until
    /// the count falls. Unset: no limit is watched.
    pub max_underground: Option<u32>,
    /// Limits per team (班组), by the team's name as in the roster.
    pub max_per_team: std::collections::BTreeMap<String, u32>,
}

impl Default for Roster {
    fn default() -> Self {
        Self {
            file: None,
            shift_length: Duration::from_secs(8 * 3600),
            overdue_grace: Duration::from_secs(30 * 60),
            max_underground: None,
            max_per_team: std::collections::BTreeMap::new(),
        }
    }
}

/// The uplink to the county union.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mqtt {
    /// Off: everything for the county is kept in the outbox until enabled.
    pub enabled: bool,
    /// Broker address: `mqtt://host:1883` or `mqtts://host:8883`.
    pub url: String,
    /// User name given by the county, if any.
    pub username: Option<String>,
    /// File holding the password (kept out of this file on purpose).
    pub password_file: Option<PathBuf>,
    /// CA certificate (PEM) to trust for `mqtts://`; system roots if unset.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for brokers that ask for one.
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) of the client certificate.
    pub client_key: Option<PathBuf>,
    /// How often the connection is checked when idle.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Largest message sent (its whole MQTT packet stays under it): summaries
    /// and head-counts are split to fit as they are queued, and a row that
    /// is still bigger is set aside rather than sent. Keep it at or below
    /// the county broker's packet limit (Mosquitto `max_packet_size`).
    pub max_message_bytes: usize,
    /// The county's public key (Ed25519, base64, from `pithead-county keys
    /// generate`): when set, only commands signed with it are carried out;
    /// unsigned and wrongly signed ones are refused, logged and counted.
    pub county_public_key: Option<String>,
}

/// The smallest and largest `[mqtt] max_message_bytes`.
pub const MESSAGE_BYTES: [usize; 2] = [8 * 1024, 1024 * 1024];

impl Default for Mqtt {
    fn default() -> Self {
        Self {
            enabled: false,
            url: "mqtts://county-broker.invalid:8883".to_owned(),
            username: None,
            password_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            keep_alive: Duration::from_secs(30),
            max_message_bytes: 128 * 1024,
            county_public_key: None,
        }
    }
}

/// Polling rules common to every bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Acquisition {
    /// After start, readings are `warming_up` for this long (sensors and
    /// devices settling); alarms other than faults wait for it.
    #[serde(with = "humantime_serde")]
    pub warm_up: Duration,
    /// How often a raw reading of each channel is stored.
    #[serde(with = "humantime_serde")]
    pub raw_interval: Duration,
    /// Read adjacent registers of a device in one request (max 125).
    pub coalesce: bool,
    /// A sensor with alarm levels last calibrated (标校) longer ago than
    /// this many days is flagged on the console and in the station's
    /// light (AQ 1029: gas sensors every 15 days).
    pub calibration_days: u32,
}

impl Default for Acquisition {
    fn default() -> Self {
        Self {
            warm_up: Duration::from_secs(30),
            raw_interval: Duration::from_secs(10),
            coalesce: true,
            calibration_days: 15,
        }
    }
}

/// One communication line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bus {
    /// Name used by devices to refer to this line.
    pub id: String,
    /// `tcp` (Ethernet, a gateway) or `rtu` (RS-485 serial).
    pub transport: Transport,
    /// TCP: host name or IP address.
    #[serde(default)]
    pub host: Option<String>,
    /// TCP: port.
    #[serde(default = "default_tcp_port")]
    pub port: u16,
    /// RTU: serial device, e.g. `/dev/ttyAMA0` or `/dev/ttyUSB0`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// RTU: bits per second.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// RTU: `none`, `even` or `odd`.
    #[serde(default)]
    pub parity: Parity,
    /// RTU: data bits (7 or 8).
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// RTU: stop bits (1 or 2).
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// How long to wait for a reply.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Further tries after a timeout before a device is counted as failed.
    #[serde(default = "default_retries")]
    pub retries: u8,
    /// Quiet time between two frames on the line (RS-485 devices need it).
    #[serde(default = "default_frame_gap", with = "humantime_serde")]
    pub frame_gap: Duration,
    /// TCP: poll each device over its own connection, at the same time.
    /// Off (the default), the devices behind one endpoint (a gateway) share
    /// one connection and are asked in turn, as gateways expect.
    #[serde(default)]
    pub concurrent: bool,
}

fn default_tcp_port() -> u16 {
    502
}
fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
fn default_timeout() -> Duration {
    // Long enough for a 40-register reply at 9600 baud (about 90 ms on the
    // wire) and a slow device; short enough that a dead device and its retry
    // fit in a 1 s poll.
    Duration::from_millis(300)
}
fn default_retries() -> u8 {
    1
}
fn default_frame_gap() -> Duration {
    Duration::from_millis(5)
}

/// How a bus is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Modbus TCP.
    Tcp,
    /// Modbus RTU over a serial line.
    Rtu,
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    /// No parity bit.
    #[default]
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

/// One Modbus device (a unit id on a bus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Name used by channels to refer to this device.
    pub id: String,
    /// The bus it hangs on.
    pub bus: String,
    /// Modbus unit (slave) id, 1 to 247.
    pub unit: u8,
    /// Free text: make, model, where it is mounted.
    #[serde(default)]
    pub description: String,
}

/// One measured quantity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// Stable name, used in alarms, the API and messages to the county.
    pub id: String,
    /// The device it is read from.
    pub device: String,
    /// What is measured; decides default alarm direction and presentation.
    pub kind: ChannelKind,
    /// Engineering unit shown with the value, e.g. `%vol`, `ppm`, `m`.
    pub unit: String,
    /// Where the sensor is, shown to miners, e.g. `1201 回风巷`.
    #[serde(default)]
    pub location: String,
    /// What miners read on the kiosk's tile, e.g. `工作面瓦斯` (at most 32
    /// characters). Without it the page names the kind in its language
    /// (甲烷, 一氧化碳, …); the id is shown small, for technicians.
    #[serde(default)]
    pub name: Option<String>,
    /// Modbus table: `holding`, `input`, `coil` or `discrete`.
    pub table: Table,
    /// Register (or coil) address, counting from 0 as on the wire.
    pub address: u16,
    /// How the register(s) encode the value.
    #[serde(default)]
    pub data_type: DataType,
    /// Byte order inside each 16-bit register.
    #[serde(default)]
    pub byte_order: Order,
    /// Order of the two registers of a 32-bit value.
    #[serde(default)]
    pub word_order: Order,
    /// Engineering value = raw × scale + offset.
    #[serde(default = "one")]
    pub scale: f64,
    /// Added after scaling.
    #[serde(default)]
    pub offset: f64,
    /// Decimal places of the value (its resolution), 0 to 6. Without it,
    /// what `scale` and `offset` imply for an integer register
    /// (`scale = 0.01` → 2), and a float register's own precision. Values
    /// are rounded to it once, as they are read, so every screen, log and
    /// message shows the same number.
    #[serde(default)]
    pub decimals: Option<u8>,
    /// Measuring range of the sensor `[low, high]`, in engineering units. A
    /// value outside it is `out_of_range`, never a value.
    pub range: Option<[f64; 2]>,
    /// How often the channel is read.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll: Duration,
    /// Regulatory preset for the alarm levels, e.g. `cn-coal/ch4-face`
    /// (see `config/presets/`); `level` blocks override it by name.
    #[serde(default)]
    pub preset: Option<String>,
    /// Alarm levels, from mildest to most severe.
    #[serde(default, rename = "level")]
    pub levels: Vec<Level>,
}

fn one() -> f64 {
    1.0
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}

pub use pithead_core::domain::{ChannelKind, DataType, Direction, Level, LevelName, Order, Table};

impl Mqtt {
    /// The client certificate and key, when both are configured (for
    /// [`crate::tls::mqtt_client`]).
    pub fn client_identity(&self) -> Option<(&std::path::Path, &std::path::Path)> {
        self.client_cert.as_deref().zip(self.client_key.as_deref())
    }
}

impl Bus {
    /// How long the line must have been silent, after a timeout or a reply
    /// that did not fit, before the next request goes out: a timeout and a
    /// quarter, so that a reply as late as twice the timeout is still heard
    /// and thrown away.
    pub fn quiet(&self) -> Duration {
        self.timeout + self.timeout / 4
    }
}

impl Config {
    /// The channel with this id.
    pub fn channel(&self, id: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.id == id)
    }
}

impl Config {
    /// Makes relative paths relative to `base` (the configuration file's
    /// directory) rather than to wherever the daemon happens to be started.
    fn resolve_relative_paths(&mut self, base: &std::path::Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.storage.data_dir);
        for p in [
            &mut self.http.api_token_file,
            &mut self.roster.file,
            &mut self.mqtt.password_file,
            &mut self.mqtt.ca_file,
            &mut self.mqtt.client_cert,
            &mut self.mqtt.client_key,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serial_line_is_quiet_for_more_than_a_timeout() {
        let bus: Bus =
            toml::from_str("id = \"rs485\"\ntransport = \"rtu\"\ntimeout = \"300ms\"\n").unwrap();
        assert!(bus.quiet() > bus.timeout);
        assert_eq!(bus.quiet(), Duration::from_millis(375));
    }
}
