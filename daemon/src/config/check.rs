//! Semantic rules over a configuration that serde has already accepted.
//!
//! Every rule adds a [`Problem`] rather than stopping, so that one run of
//! `pithead validate` shows everything an electrician has to fix.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::{Config, DataType, Direction, LevelName, Transport};

/// One broken rule, by key path; the loader turns it into a located
/// [`super::Diagnostic`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `channel[2].level[1].threshold`.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// How to put it right.
    pub hint: Option<String>,
}

/// Placeholder ids in the shipped template; a box must not talk to the county
/// under them.
const PLACEHOLDER: &str = "change-me";

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>, hint: Option<&str>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
            hint: hint.map(str::to_owned),
        });
    }
}

/// Checks every cross-field rule; an empty list means the configuration can
/// be used.
pub fn check(cfg: &Config) -> Vec<Problem> {
    let mut p = Problems::default();
    station(cfg, &mut p);
    kiosk(cfg, &mut p);
    storage(cfg, &mut p);
    http(cfg, &mut p);
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&cfg.log.level) {
        p.add(
            "log.level",
            format!("`{}` is not a log filter: {e}", cfg.log.level),
            Some("use error, warn, info, debug or trace, optionally per module: \"info,pithead::acquisition=debug\""),
        );
    }
    if let Some(f) = &cfg.roster.file {
        readable(&mut p, "roster.file", f);
    }
    if let Some(f) = &cfg.http.api_token_file {
        secret(&mut p, "http.api_token_file", f);
        match std::fs::read_to_string(f) {
            Ok(t) if t.trim().len() < 16 => p.add(
                "http.api_token_file",
                format!("the token in {} is shorter than 16 characters", f.display()),
                Some("generate one: head -c 24 /dev/urandom | base64"),
            ),
            Ok(_) | Err(_) => {}
        }
    }
    if let Some(f) = &cfg.kiosk.keys_file {
        secret(&mut p, "kiosk.keys_file", f);
        if let Ok(text) = std::fs::read_to_string(f)
            && let Err(e) = crate::kiosk_keys::parse(&text)
        {
            p.add(
                "kiosk.keys_file",
                format!("{}: {e}", f.display()),
                Some("one `NAME KEY` per line: a name (letters, digits, - and _) and a key of at least 16 characters"),
            );
        }
    }
    if !(1..=365).contains(&cfg.acquisition.calibration_days) {
        p.add(
            "acquisition.calibration_days",
            format!("{} is outside 1..365", cfg.acquisition.calibration_days),
            Some("AQ 1029 asks gas sensors to be calibrated every 15 days"),
        );
    }
    if let Some(r) = &cfg.kiosk.badge_reader
        && !r.is_absolute()
    {
        // Not required to exist: a reader plugged in later is found then.
        p.add(
            "kiosk.badge_reader",
            format!("{} is not an absolute path", r.display()),
            Some("e.g. /dev/input/by-id/usb-Reader-event-kbd"),
        );
    }
    let l = &cfg.light;
    for (key, v) in [
        ("light.red_power_cuts", l.red_power_cuts),
        ("light.ack_minutes", l.ack_minutes),
        ("light.yellow_open_days", l.yellow_open_days),
        ("light.offline_hours", l.offline_hours),
        ("light.sensor_down_hours", l.sensor_down_hours),
    ] {
        if v < 1 {
            p.add(
                key,
                format!("{v} must be at least 1"),
                Some("the county's rule: see docs/COUNTY.md"),
            );
        }
    }
    if cfg.roster.max_underground == Some(0) {
        p.add(
            "roster.max_underground",
            "0 would raise 超员 at the first check-in",
            Some("the mine's approved number of people underground (核定人数), or remove the key"),
        );
    }
    for (team, max) in &cfg.roster.max_per_team {
        if *max == 0 || team.trim().is_empty() {
            p.add(
                format!("roster.max_per_team.{team}"),
                "a team's limit needs the team's name as in the roster and at least 1",
                None,
            );
        } else if cfg.roster.max_underground.is_some_and(|all| *max > all) {
            p.add(
                format!("roster.max_per_team.{team}"),
                format!("{max} is more than max_underground allows for the whole mine"),
                None,
            );
        }
    }
    if cfg.roster.shift_length.is_zero() {
        p.add(
            "roster.shift_length",
            "must be longer than zero",
            Some("e.g. \"8h\""),
        );
    }
    mqtt(cfg, &mut p);
    if cfg.acquisition.raw_interval.is_zero() {
        p.add(
            "acquisition.raw_interval",
            "must be longer than zero",
            Some("e.g. \"10s\""),
        );
    }
    buses(cfg, &mut p);
    devices(cfg, &mut p);
    channels(cfg, &mut p);
    line_timing(cfg, &mut p);
    limits(cfg, &mut p);
    outputs(cfg, &mut p);
    p.0
}

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

const ID_HINT: &str = "use 1 to 64 letters, digits, '-' or '_' (no spaces, no '/')";

const TZ_HINT: &str = "an IANA name such as \"Asia/Shanghai\"; leave it out to use the box's own";

fn kiosk(cfg: &Config, p: &mut Problems) {
    let k = &cfg.kiosk;
    if !(50..=1000).contains(&k.screen_width_mm) {
        p.add(
            "kiosk.screen_width_mm",
            format!("{} mm is not the width of a kiosk screen", k.screen_width_mm),
            Some("measure the visible width of the screen: 154 for the 7-inch Raspberry Pi display, 217 for the 10-inch"),
        );
    }
    for level in ["fault", "warning", "alarm", "power_cut", "power_cut_fault"] {
        let Some(said) = k.advice.for_level(level) else {
            continue;
        };
        for (lang, text) in [("zh", &said.zh), ("en", &said.en)] {
            let n = text.chars().count();
            if text.trim().is_empty() || n > 120 || text.chars().any(char::is_control) {
                p.add(
                    format!("kiosk.advice.{level}.{lang}"),
                    format!("must be 1 to 120 characters on one line (it has {n})"),
                    Some("one short instruction a miner reads at a glance, e.g. \"超限已断电，人员立即撤离\""),
                );
            }
        }
    }
}

fn station(cfg: &Config, p: &mut Problems) {
    for (key, value) in [
        ("station.county", &cfg.station.county),
        ("station.id", &cfg.station.id),
    ] {
        if value == PLACEHOLDER {
            p.add(
                key,
                "still has the placeholder value from the template",
                Some("set it to the id the county union assigned to this station; the county files every message under it"),
            );
        } else if !is_id(value) {
            p.add(key, format!("`{value}` is not a valid id"), Some(ID_HINT));
        }
    }
    if let Some(z) = &cfg.station.timezone {
        let zoneinfo = Path::new("/usr/share/zoneinfo");
        if !super::is_zone_name(z) {
            p.add(
                "station.timezone",
                format!("`{z}` is not a time zone name"),
                Some(TZ_HINT),
            );
        } else if zoneinfo.is_dir() && !zoneinfo.join(z).is_file() {
            p.add(
                "station.timezone",
                format!("no time zone `{z}` in /usr/share/zoneinfo"),
                Some(TZ_HINT),
            );
        }
    }
    if cfg.station.name.trim().is_empty() {
        p.add(
            "station.name",
            "must not be empty",
            Some("the name miners see on the kiosk"),
        );
    }
}

fn storage(cfg: &Config, p: &mut Problems) {
    let s = &cfg.storage;
    if let Err(e) = writable_dir(&s.data_dir) {
        p.add(
            "storage.data_dir",
            format!("{}: {e}", s.data_dir.display()),
            Some("the daemon must be able to create and write this directory (systemd's StateDirectory makes /var/lib/pithead)"),
        );
    }
    if s.raw_readings_days == 0 {
        p.add(
            "storage.raw_readings_days",
            "must be at least 1",
            Some("regulations ask for 92 days of methane data"),
        );
    }
    if s.aggregates_days < s.raw_readings_days {
        p.add(
            "storage.aggregates_days",
            "is shorter than raw_readings_days; summaries would vanish before the data they summarise",
            Some("regulations ask for 2 years (731 days) of statistics"),
        );
    }
    if s.outbox_cap_mb == 0 {
        p.add(
            "storage.outbox_cap_mb",
            "must be at least 1",
            Some("256 holds weeks of outage"),
        );
    }
}

/// The directory exists and takes a file, or can be created.
fn writable_dir(dir: &Path) -> Result<(), String> {
    let mut probe = dir;
    while !probe.exists() {
        probe = probe.parent().ok_or("no existing parent directory")?;
        if probe.as_os_str().is_empty() {
            probe = Path::new(".");
        }
    }
    if !probe.is_dir() {
        return Err(format!("{} is not a directory", probe.display()));
    }
    tempfile::tempfile_in(probe)
        .map(drop)
        .map_err(|e| format!("cannot write in {}: {e}", probe.display()))
}

fn readable(p: &mut Problems, key: &str, file: &Path) {
    if let Err(e) = std::fs::File::open(file) {
        p.add(key, format!("cannot read {}: {e}", file.display()), None);
    }
}

/// A file holding a secret (a token, a password, a private key): readable,
/// and by nobody but the daemon's user and group.
fn secret(p: &mut Problems, key: &str, file: &Path) {
    let meta = match std::fs::metadata(file) {
        Ok(m) => m,
        Err(e) => {
            p.add(key, format!("cannot read {}: {e}", file.display()), None);
            return;
        }
    };
    if let Err(e) = std::fs::File::open(file) {
        p.add(key, format!("cannot read {}: {e}", file.display()), None);
        return;
    }
    use std::os::unix::fs::MetadataExt as _;
    let mode = meta.mode() & 0o777;
    let own_group = meta.gid() == rustix::process::getegid().as_raw();
    let others = mode & 0o007 != 0;
    let group = mode & 0o070 != 0 && !own_group;
    if others || group {
        p.add(
            key,
            format!(
                "{} holds a secret but is readable by {} (mode {mode:04o})",
                file.display(),
                if others { "everyone" } else { "another group" }
            ),
            Some(&format!(
                "chgrp pithead {f} && chmod 0640 {f}   (or chmod 0600 for a file of the daemon's own user; a new file: install -m 0640 -g pithead NEW {f})",
                f = file.display()
            )),
        );
    }
}

fn is_loopback(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback())
}

fn http(cfg: &Config, p: &mut Problems) {
    let h = &cfg.http;
    let listen = h.listen.parse::<SocketAddr>();
    if let Err(e) = &listen {
        p.add(
            "http.listen",
            format!("`{}` is not an address and port: {e}", h.listen),
            Some("write an IP address and a port, e.g. \"127.0.0.1:8080\""),
        );
    } else if !is_loopback(&h.listen) {
        if h.allow_plain_http {
            // Said again at every start.
        } else {
            p.add(
                "http.listen",
                format!(
                    "`{}` serves plain HTTP beyond this box: supervisors' passwords and sessions would cross the LAN in clear",
                    h.listen
                ),
                Some("keep listen on 127.0.0.1 for the kiosk screen and serve the LAN with tls_listen, tls_cert and tls_key (pithead tls self-signed); or set allow_plain_http = true if you mean it"),
            );
        }
    }
    match &h.tls_listen {
        Some(a) => {
            if let Err(e) = a.parse::<SocketAddr>() {
                p.add(
                    "http.tls_listen",
                    format!("`{a}` is not an address and port: {e}"),
                    Some("e.g. \"0.0.0.0:8443\""),
                );
            }
            match (&h.tls_cert, &h.tls_key) {
                (Some(c), Some(k)) => {
                    readable(p, "http.tls_cert", c);
                    secret(p, "http.tls_key", k);
                    if let Err(e) = crate::tls::http_server(c, k) {
                        p.add(
                            "http.tls_cert",
                            e,
                            Some("make a pair: pithead tls self-signed --config FILE"),
                        );
                    }
                }
                _ => p.add(
                    "http.tls_listen",
                    "HTTPS needs tls_cert and tls_key",
                    Some("make them: pithead tls self-signed --config FILE"),
                ),
            }
        }
        None => {
            if h.tls_cert.is_some() || h.tls_key.is_some() {
                p.add(
                    "http.tls_cert",
                    "tls_cert and tls_key are used only with tls_listen",
                    Some("set tls_listen = \"0.0.0.0:8443\""),
                );
            }
        }
    }
    // A request must name the box: beyond loopback, the names people use.
    let wildcard = [Some(h.listen.as_str()), h.tls_listen.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(|a| a.parse::<SocketAddr>().ok())
        .any(|a| a.ip().is_unspecified());
    if wildcard && h.names.is_empty() {
        p.add(
            "http.names",
            "a server on every address needs the names and addresses people reach it by (requests naming another host are refused)",
            Some("names = [\"pithead-1.local\", \"192.168.1.20\"]"),
        );
    }
    for (i, n) in h.names.iter().enumerate() {
        if n.is_empty()
            || n.len() > 253
            || n.chars().any(|c| c.is_whitespace() || c == '/' || c == '@')
        {
            p.add(
                format!("http.names[{i}]"),
                format!("`{n}` is not a host name or address"),
                None,
            );
        }
    }
}

fn mqtt(cfg: &Config, p: &mut Problems) {
    let m = &cfg.mqtt;
    if let Some(k) = &m.county_public_key
        && let Err(e) = crate::signing::county_key(k)
    {
        p.add(
            "mqtt.county_public_key",
            e,
            Some("the line `pithead-county keys generate` printed as the public key (44 characters of base64)"),
        );
    }
    for (key, file) in [
        ("mqtt.ca_file", &m.ca_file),
        ("mqtt.client_cert", &m.client_cert),
    ] {
        if let (true, Some(f)) = (m.enabled, file) {
            readable(p, key, f);
        }
    }
    for (key, file) in [
        ("mqtt.password_file", &m.password_file),
        ("mqtt.client_key", &m.client_key),
    ] {
        if let (true, Some(f)) = (m.enabled, file) {
            secret(p, key, f);
        }
    }
    if m.enabled && m.url.starts_with("mqtt://") {
        for (key, set) in [
            ("mqtt.username", m.username.is_some()),
            ("mqtt.password_file", m.password_file.is_some()),
            ("mqtt.ca_file", m.ca_file.is_some()),
            ("mqtt.client_cert", m.client_cert.is_some()),
        ] {
            if set {
                p.add(
                    key,
                    format!(
                        "with `{}` (no TLS) the credentials would cross the network in clear",
                        m.url
                    ),
                    Some("use mqtts://host:8883, or leave the credentials out"),
                );
            }
        }
    }
    if m.enabled
        && m.url.starts_with("mqtts://")
        && m.client_cert.is_some() == m.client_key.is_some()
        && let Err(e) = crate::tls::mqtt_client(m.ca_file.as_deref(), m.client_identity())
    {
        p.add("mqtt.ca_file", e, None);
    }
    if m.client_cert.is_some() != m.client_key.is_some() {
        p.add(
            if m.client_cert.is_some() {
                "mqtt.client_cert"
            } else {
                "mqtt.client_key"
            },
            "a client certificate needs its key, and a key its certificate",
            Some("set both client_cert and client_key, or neither"),
        );
    }
    if !(crate::config::MESSAGE_BYTES[0]..=crate::config::MESSAGE_BYTES[1])
        .contains(&m.max_message_bytes)
    {
        p.add(
            "mqtt.max_message_bytes",
            format!(
                "must be {} to {} bytes",
                crate::config::MESSAGE_BYTES[0],
                crate::config::MESSAGE_BYTES[1]
            ),
            Some("at or below the county broker's packet limit; 131072 (128 KiB) unless the county says otherwise"),
        );
    }
    if m.keep_alive < Duration::from_secs(5) {
        p.add(
            "mqtt.keep_alive",
            "must be at least 5s",
            Some("30s suits most uplinks"),
        );
    }
    let url_ok = match m.url.split_once("://") {
        Some(("mqtt" | "mqtts", rest)) => !rest.is_empty() && !rest.contains('/'),
        _ => false,
    };
    if !url_ok {
        p.add(
            "mqtt.url",
            format!("`{}` is not a broker address", m.url),
            Some("write mqtt://host:1883 or mqtts://host:8883"),
        );
    }
}

/// Reports ids that occur more than once, at their second occurrence.
fn unique<'a>(p: &mut Problems, what: &str, ids: impl Iterator<Item = &'a str>) {
    let mut seen = HashSet::new();
    for (i, id) in ids.enumerate() {
        if !is_id(id) {
            p.add(
                format!("{what}[{i}].id"),
                format!("`{id}` is not a valid id"),
                Some(ID_HINT),
            );
        }
        if !seen.insert(id) {
            p.add(
                format!("{what}[{i}].id"),
                format!("{what} id `{id}` is used more than once"),
                Some("every id must be unique"),
            );
        }
    }
}

fn buses(cfg: &Config, p: &mut Problems) {
    unique(p, "bus", cfg.buses.iter().map(|b| b.id.as_str()));
    let mut endpoints = HashMap::new();
    for (i, b) in cfg.buses.iter().enumerate() {
        let k = |f: &str| format!("bus[{i}].{f}");
        let endpoint = match b.transport {
            Transport::Tcp => match &b.host {
                None => {
                    p.add(
                        k("transport"),
                        "a tcp bus needs `host`",
                        Some("add host = \"192.168.1.20\""),
                    );
                    None
                }
                Some(h) => Some(format!("{h}:{}", b.port)),
            },
            Transport::Rtu => match &b.path {
                None => {
                    p.add(
                        k("transport"),
                        "an rtu bus needs `path`",
                        Some("add path = \"/dev/ttyAMA0\""),
                    );
                    None
                }
                Some(path) => Some(path.display().to_string()),
            },
        };
        if let Some(e) = endpoint
            && let Some(first) = endpoints.insert(e.clone(), b.id.clone())
        {
            p.add(
                k("id"),
                format!("bus `{}` uses the same line as bus `{first}` ({e})", b.id),
                Some("one line is one bus; put several devices on it instead"),
            );
        }
        if b.transport == Transport::Rtu {
            if !matches!(b.data_bits, 7 | 8) {
                p.add(k("data_bits"), "must be 7 or 8", None);
            }
            if !matches!(b.stop_bits, 1 | 2) {
                p.add(k("stop_bits"), "must be 1 or 2", None);
            }
            if b.baud == 0 {
                p.add(
                    k("baud"),
                    "must be above zero",
                    Some("9600 or 19200 are usual"),
                );
            }
        }
        if b.timeout < Duration::from_millis(10) {
            p.add(
                k("timeout"),
                "must be at least 10ms",
                Some("500ms suits most devices"),
            );
        }
    }
}

fn devices(cfg: &Config, p: &mut Problems) {
    unique(p, "device", cfg.devices.iter().map(|d| d.id.as_str()));
    let mut units = HashMap::new();
    for (i, d) in cfg.devices.iter().enumerate() {
        let Some(bus) = cfg.buses.iter().find(|b| b.id == d.bus) else {
            p.add(
                format!("device[{i}].bus"),
                format!("no bus has the id `{}`", d.bus),
                Some("define it in a [[bus]] block"),
            );
            continue;
        };
        if bus.transport == Transport::Rtu && !(1..=247).contains(&d.unit) {
            p.add(
                format!("device[{i}].unit"),
                "an RS-485 unit id must be 1 to 247",
                None,
            );
        }
        if let Some(first) = units.insert((d.bus.as_str(), d.unit), d.id.as_str()) {
            p.add(
                format!("device[{i}].unit"),
                format!(
                    "unit {} on bus `{}` is already device `{first}`",
                    d.unit, d.bus
                ),
                Some("two devices on one line need different unit ids"),
            );
        }
    }
}

/// First register, last register, channel id.
type Taken<'a> = (u32, u32, &'a str);

fn outputs(cfg: &Config, p: &mut Problems) {
    let o = &cfg.outputs;
    if o.backend == super::OutputBackend::Gpio {
        if cfg.watchdog.device.is_none() {
            p.add(
                "watchdog.device",
                "a box that drives real outputs needs the hardware watchdog: if the daemon dies, \
                 a GPIO line may keep the power-cut relay energised until the board resets",
                Some("set device = \"/dev/watchdog\" in [watchdog]"),
            );
        }
        if !o.chip.exists() {
            p.add(
                "outputs.chip",
                format!("{} does not exist: the siren, beacon and power-cut relay cannot be driven", o.chip.display()),
                Some("check the relay board and `gpiodetect`; on a box without outputs set backend = \"sim\""),
            );
        }
        let lines = output_lines(o);
        for (i, (name, line)) in lines.iter().enumerate() {
            if let Some((other, _)) = lines[..i].iter().find(|(_, l)| l == line) {
                p.add(
                    format!("outputs.{name}"),
                    format!("line {line} is already used by outputs.{other}"),
                    Some("each output needs its own line"),
                );
            }
        }
    }
    feedback(cfg, p);
    if let Some(spec) = &o.sim_fault {
        if o.backend != super::OutputBackend::Sim {
            p.add(
                "outputs.sim_fault",
                "simulated faults are for backend = \"sim\" only: real outputs fail by themselves",
                Some("remove the key"),
            );
        }
        for item in spec.split(',') {
            if let Err(e) = crate::config::parse_sim_fault(item) {
                p.add("outputs.sim_fault", e, Some("e.g. \"power_relay=welded\""));
            }
        }
    }
    if let Some(dev) = &cfg.watchdog.device
        && !dev.exists()
    {
        p.add(
            "watchdog.device",
            format!("{} does not exist", dev.display()),
            Some("load the board's watchdog driver, or remove the key"),
        );
    }
}

/// Each output's name (its key under `outputs`) and GPIO line.
fn output_lines(o: &super::OutputsConfig) -> [(&'static str, u32); 5] {
    [
        ("siren", o.siren.line),
        ("beacon_red", o.beacon_red.line),
        ("beacon_yellow", o.beacon_yellow.line),
        ("beacon_green", o.beacon_green.line),
        ("power_relay", o.power_relay.line),
    ]
}

/// The power relay's feedback: one source, a line of its own or a channel
/// that reads 0/1 often enough for the delay.
fn feedback(cfg: &Config, p: &mut Problems) {
    let o = &cfg.outputs;
    let delay = o.feedback_delay;
    if !(Duration::from_millis(200)..=Duration::from_secs(60)).contains(&delay) {
        p.add(
            "outputs.feedback_delay",
            format!(
                "{} is outside 200ms..60s: shorter takes the contactor's travel for a fault, longer leaves a welded contactor unseen for too long",
                humantime::format_duration(delay)
            ),
            Some("AQ 6201 stations use about 2s"),
        );
    }
    let Some(f) = &o.power_feedback else {
        return;
    };
    match (f.line, &f.channel) {
        (Some(_), Some(_)) | (None, None) => p.add(
            "outputs.power_feedback",
            "give the feedback either a `line` (a GPIO input) or a `channel` (a discrete input or coil), not both and not neither",
            Some("power_feedback = { line = 5 } or power_feedback = { channel = \"feeder-main\" }"),
        ),
        (Some(line), None) => {
            if o.backend == super::OutputBackend::Gpio
                && let Some((other, _)) = output_lines(o).iter().find(|(_, l)| *l == line)
            {
                p.add(
                    "outputs.power_feedback.line",
                    format!("line {line} is already the {other} output"),
                    Some("the feedback contact needs an input line of its own"),
                );
            }
        }
        (None, Some(id)) => match cfg.channel(id) {
            None => p.add(
                "outputs.power_feedback.channel",
                format!("no channel `{id}`"),
                Some("name a [[channel]] with table = \"discrete\" or \"coil\""),
            ),
            Some(c) => {
                if !c.table.is_bits() {
                    p.add(
                        "outputs.power_feedback.channel",
                        format!(
                            "channel `{id}` is a {:?} register: the feedback is a contact, read as a discrete input or a coil",
                            c.table
                        ),
                        Some("use table = \"discrete\" or \"coil\""),
                    );
                }
                if c.poll * 2 > delay {
                    p.add(
                        "outputs.feedback_delay",
                        format!(
                            "{} is less than two polls of `{id}` ({} each): every cut would be taken for 馈电异常",
                            humantime::format_duration(delay),
                            humantime::format_duration(c.poll)
                        ),
                        Some("poll the feedback channel faster, or lengthen feedback_delay"),
                    );
                }
            }
        },
    }
}

/// Polled in turn (a serial line, a shared gateway connection), every device
/// waits while a dead one times out, is retried and times out again, the
/// line left quiet after each (a serial line): that must leave the others
/// room within two polls, or their readings turn stale.
fn line_timing(cfg: &Config, p: &mut Problems) {
    for (i, b) in cfg.buses.iter().enumerate() {
        if b.transport == Transport::Tcp && b.concurrent {
            continue;
        }
        let fastest = cfg
            .channels
            .iter()
            .filter(|c| {
                cfg.devices
                    .iter()
                    .any(|d| d.id == c.device && d.bus == b.id)
            })
            .map(|c| c.poll)
            .min();
        // A serial line must be silent for a while after each failed
        // attempt (TCP connects again instead).
        let quiet = if b.transport == Transport::Rtu {
            b.quiet()
        } else {
            Duration::ZERO
        };
        let worst = b
            .timeout
            .saturating_add(quiet)
            .saturating_mul(1 + u32::from(b.retries))
            .saturating_add(b.frame_gap);
        // The others' readings turn stale after two polls without one; the
        // dead device holds the line that long once (then it is offline
        // and only probed), so it must leave them half a poll.
        if let Some(poll) = fastest
            && worst.saturating_mul(2) > poll.saturating_mul(3)
        {
            p.add(
                format!("bus[{i}].timeout"),
                format!(
                    "a device that stops answering holds the line for (timeout + quiet) × (1 + retries) + frame_gap = {} \
                     (quiet = 1.25 × timeout on a serial line), more than 1.5 × the fastest poll on this line ({}); \
                     it would make other readings on the line stale",
                    humantime::format_duration(worst),
                    humantime::format_duration(poll)
                ),
                Some("shorten timeout, lower retries, poll less often, or (tcp) set concurrent = true"),
            );
        }
    }
}

/// Upper bounds that keep every duration sane (and arithmetic on them from
/// overflowing).
fn limits(cfg: &Config, p: &mut Problems) {
    let cap = |p: &mut Problems, key: String, d: Duration, max: Duration, hint: &str| {
        if d > max {
            p.add(
                key,
                format!(
                    "{} is longer than the limit of {}",
                    humantime::format_duration(d),
                    humantime::format_duration(max)
                ),
                Some(hint),
            );
        }
    };
    let hour = Duration::from_secs(3600);
    for (i, b) in cfg.buses.iter().enumerate() {
        cap(
            p,
            format!("bus[{i}].timeout"),
            b.timeout,
            Duration::from_secs(10),
            "a device that takes longer is broken",
        );
        cap(
            p,
            format!("bus[{i}].frame_gap"),
            b.frame_gap,
            Duration::from_secs(1),
            "a few milliseconds suffice",
        );
    }
    for (i, c) in cfg.channels.iter().enumerate() {
        let max_poll = if c.levels.is_empty() {
            hour
        } else {
            Duration::from_secs(30)
        };
        cap(
            p,
            format!("channel[{i}].poll"),
            c.poll,
            max_poll,
            "regulations allow at most 30s for a monitored channel",
        );
        for (j, l) in c.levels.iter().enumerate() {
            if l.name == LevelName::PowerCut {
                cap(
                    p,
                    format!("channel[{i}].level[{j}].on_delay"),
                    l.on_delay,
                    Duration::from_secs(2),
                    "a power cut must act within 2 s of the reading",
                );
            } else {
                cap(
                    p,
                    format!("channel[{i}].level[{j}].on_delay"),
                    l.on_delay,
                    hour,
                    "alarms must not wait that long",
                );
            }
            cap(
                p,
                format!("channel[{i}].level[{j}].off_delay"),
                l.off_delay,
                hour,
                "use latching instead",
            );
        }
        if !c.levels.is_empty() && c.range.is_none() {
            p.add(
                format!("channel[{i}].range"),
                "a channel with alarm levels needs the sensor's range: a broken sensor loop reads as a number \
                 outside it, which must be a fault, not a safe value",
                Some("set range = [low, high] from the sensor's data sheet, e.g. [0.0, 4.0] for CH4 %vol"),
            );
        }
    }
    cap(
        p,
        "acquisition.warm_up".into(),
        cfg.acquisition.warm_up,
        Duration::from_secs(600),
        "sensors settle within minutes",
    );
    cap(
        p,
        "acquisition.raw_interval".into(),
        cfg.acquisition.raw_interval,
        hour,
        "regulations ask for fine-grained history",
    );
    cap(
        p,
        "roster.shift_length".into(),
        cfg.roster.shift_length,
        Duration::from_secs(24 * 3600),
        "e.g. \"8h\"",
    );
    cap(
        p,
        "roster.overdue_grace".into(),
        cfg.roster.overdue_grace,
        Duration::from_secs(24 * 3600),
        "e.g. \"30m\"",
    );
    cap(
        p,
        "mqtt.keep_alive".into(),
        cfg.mqtt.keep_alive,
        hour,
        "30s suits most uplinks",
    );
}

fn channels(cfg: &Config, p: &mut Problems) {
    unique(p, "channel", cfg.channels.iter().map(|c| c.id.as_str()));
    // (device, table) -> registers taken so far
    let mut spans: HashMap<(&str, super::Table), Vec<Taken>> = HashMap::new();
    for (i, c) in cfg.channels.iter().enumerate() {
        let k = |f: &str| format!("channel[{i}].{f}");
        if let Some(name) = &c.name
            && (name.trim().is_empty()
                || name.chars().count() > 32
                || name.chars().any(char::is_control))
        {
            p.add(
                k("name"),
                "a channel's name is 1 to 32 characters, without control characters",
                Some("e.g. name = \"工作面瓦斯\", or leave it out to show the kind's name"),
            );
        }
        if !cfg.devices.iter().any(|d| d.id == c.device) {
            p.add(
                k("device"),
                format!("no device has the id `{}`", c.device),
                Some("define it in a [[device]] block"),
            );
        }
        if c.table.is_bits() && c.data_type != DataType::U16 {
            p.add(
                k("data_type"),
                "coils and discrete inputs are single bits",
                Some("remove data_type"),
            );
        }
        let width = if c.table.is_bits() {
            1
        } else {
            u32::from(c.data_type.registers())
        };
        let first = u32::from(c.address);
        let last = first + width - 1;
        if last > u32::from(u16::MAX) {
            p.add(
                k("address"),
                "the value runs past the last register (65535)",
                None,
            );
        }
        let others = spans.entry((c.device.as_str(), c.table)).or_default();
        if let Some((_, _, other)) = others.iter().find(|(a, b, _)| first <= *b && *a <= last) {
            p.add(
                k("address"),
                format!(
                    "registers {first}..={last} overlap channel `{other}` on the same device and table"
                ),
                Some("each register may feed one channel; check address and data_type (32-bit values take two registers)"),
            );
        }
        others.push((first, last, c.id.as_str()));
        if c.decimals.is_some_and(|d| d > 6) {
            p.add(
                k("decimals"),
                "must be 0 to 6",
                Some("the decimal places of the sensor's resolution"),
            );
        }
        if !c.scale.is_finite() || c.scale == 0.0 {
            p.add(k("scale"), "must be a number other than zero", None);
        }
        if !c.offset.is_finite() {
            p.add(k("offset"), "must be a finite number", None);
        }
        if let Some([lo, hi]) = c.range
            && !(lo.is_finite() && hi.is_finite() && lo < hi)
        {
            p.add(
                k("range"),
                "must be [low, high] with low below high",
                Some("e.g. range = [0.0, 4.0]"),
            );
        }
        if c.poll < Duration::from_millis(100) {
            p.add(
                k("poll"),
                "must be at least 100ms",
                Some("regulations ask for 30s or faster; 1s is usual"),
            );
        }
        levels(c, i, p);
    }
}

fn levels(c: &super::Channel, i: usize, p: &mut Problems) {
    let mut prev: Option<(LevelName, f64)> = None;
    let mut direction = None;
    for (j, l) in c.levels.iter().enumerate() {
        let k = |f: &str| format!("channel[{i}].level[{j}].{f}");
        let dir = l.direction.unwrap_or_else(|| c.kind.default_direction());
        if let Some(d) = direction
            && d != dir
        {
            p.add(
                k("direction"),
                "all levels of a channel must face the same way",
                Some("make a second channel on the same register for the other side"),
            );
        }
        direction = Some(dir);
        if !l.threshold.is_finite() {
            p.add(k("threshold"), "must be a number", None);
        }
        if !(l.deadband.is_finite() && l.deadband >= 0.0) {
            p.add(k("deadband"), "must be zero or more", None);
        }
        if let Some([lo, hi]) = c.range
            && !(lo..=hi).contains(&l.threshold)
        {
            p.add(
                k("threshold"),
                format!(
                    "{} is outside the sensor range [{lo}, {hi}]; the level could never be reached",
                    l.threshold
                ),
                None,
            );
        }
        if let Some((prev_name, prev_threshold)) = prev {
            if l.name <= prev_name {
                p.add(
                    k("name"),
                    format!("`{:?}` comes after `{:?}`; list levels from mildest to most severe, each once", l.name, prev_name),
                    Some("order: warning, alarm, power_cut"),
                );
            } else {
                let wrong_way = match dir {
                    Direction::Rising => l.threshold < prev_threshold,
                    Direction::Falling => l.threshold > prev_threshold,
                };
                if wrong_way {
                    let side = if dir == Direction::Rising {
                        "below"
                    } else {
                        "above"
                    };
                    p.add(
                        k("threshold"),
                        format!(
                            "{} level {} is {side} the milder {} level {prev_threshold}",
                            snake(l.name),
                            l.threshold,
                            snake(prev_name)
                        ),
                        Some("a more severe level must be reached later: e.g. CH4 warning 1.0, power_cut 1.5"),
                    );
                }
            }
        }
        prev = Some((l.name, l.threshold));
    }
}

fn snake(n: LevelName) -> &'static str {
    match n {
        LevelName::Warning => "warning",
        LevelName::Alarm => "alarm",
        LevelName::PowerCut => "power_cut",
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Diagnostic, load_str};

    fn base(extra: &str) -> String {
        let dir = std::env::temp_dir();
        format!(
            "[station]\ncounty = \"c1\"\nid = \"s1\"\nname = \"x\"\n[storage]\ndata_dir = \"{}\"\n\
             [[bus]]\nid = \"line1\"\ntransport = \"rtu\"\npath = \"/dev/ttyAMA0\"\n\
             [[device]]\nid = \"gas1\"\nbus = \"line1\"\nunit = 1\n[outputs]\nbackend = \"sim\"\n{extra}",
            dir.display()
        )
    }

    fn problems(src: &str) -> Vec<Diagnostic> {
        match load_str(src, Path::new("t.toml")) {
            Ok(_) => Vec::new(),
            Err(e) => e.diagnostics().to_vec(),
        }
    }

    const CH4: &str = "[[channel]]\nid = \"ch4\"\ndevice = \"gas1\"\nkind = \"ch4\"\nunit = \"%\"\n\
                       table = \"input\"\naddress = 0\nrange = [0.0, 4.0]\n";

    #[test]
    fn good_file_passes() {
        let src = base(&format!(
            "{CH4}[[channel.level]]\nname = \"warning\"\nthreshold = 1.0\n\
             [[channel.level]]\nname = \"power_cut\"\nthreshold = 1.5\n"
        ));
        assert_eq!(problems(&src), vec![]);
    }

    #[test]
    fn a_channel_name_is_short_and_printable() {
        let named = |n: &str| {
            base(&CH4.replace("unit = \"%\"\n", &format!("unit = \"%\"\nname = \"{n}\"\n")))
        };
        assert_eq!(problems(&named("工作面瓦斯")), vec![]);
        for bad in ["", "  ", &"长".repeat(33), "a\\u0007b"] {
            let d = problems(&named(bad));
            assert_eq!(
                d.iter().map(|d| d.key.as_str()).collect::<Vec<_>>(),
                ["channel[0].name"],
                "{bad:?}: {d:?}"
            );
        }
    }

    #[test]
    fn alarm_above_power_cut_is_refused() {
        let src = base(&format!(
            "{CH4}[[channel.level]]\nname = \"alarm\"\nthreshold = 2.0\n\
             [[channel.level]]\nname = \"power_cut\"\nthreshold = 1.5\n"
        ));
        let d = problems(&src);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].key, "channel[0].level[1].threshold");
        assert!(
            d[0].message.contains("below the milder alarm level"),
            "{}",
            d[0].message
        );
        assert!(d[0].line > 0);
    }

    #[test]
    fn falling_levels_order_the_other_way() {
        let src = base(
            "[[channel]]\nid = \"o2\"\ndevice = \"gas1\"\nkind = \"o2\"\nunit = \"%\"\ntable = \"input\"\n\
             address = 0\nrange = [0.0, 25.0]\n[[channel.level]]\nname = \"warning\"\nthreshold = 19.5\n\
             [[channel.level]]\nname = \"alarm\"\nthreshold = 18.0\n",
        );
        assert_eq!(problems(&src), vec![]);
    }

    #[test]
    fn overlapping_registers_and_duplicates_all_reported() {
        let src = base(
            "[[channel]]\nid = \"a\"\ndevice = \"gas1\"\nkind = \"ch4\"\nunit = \"%\"\ntable = \"holding\"\n\
             address = 10\ndata_type = \"f32\"\n\
             [[channel]]\nid = \"b\"\ndevice = \"gas1\"\nkind = \"co\"\nunit = \"ppm\"\ntable = \"holding\"\naddress = 11\n\
             [[channel]]\nid = \"a\"\ndevice = \"nope\"\nkind = \"co\"\nunit = \"ppm\"\ntable = \"input\"\naddress = 11\n",
        );
        let d = problems(&src);
        let keys: Vec<&str> = d.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(
            keys,
            ["channel[1].address", "channel[2].id", "channel[2].device"],
            "{d:?}"
        );
        assert!(d[0].message.contains("overlap channel `a`"));
    }

    #[test]
    fn listen_address_and_placeholder_ids() {
        let src = base("[http]\nlisten = \"localhost\"\n").replace("\"c1\"", "\"change-me\"");
        let d = problems(&src);
        let keys: Vec<&str> = d.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, ["station.county", "http.listen"], "{d:?}");
        assert_eq!(d[1].line, 18);
    }

    #[test]
    fn data_dir_that_is_a_file_is_refused() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let src = base("").replace(
            &format!("data_dir = \"{}\"", std::env::temp_dir().display()),
            &format!("data_dir = \"{}/sub\"", f.path().display()),
        );
        let d = problems(&src);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].key, "storage.data_dir");
        assert!(d[0].message.contains("is not a directory"));
    }

    #[test]
    fn rtu_unit_zero_and_shared_line() {
        let src = base(
            "[[bus]]\nid = \"line2\"\ntransport = \"rtu\"\npath = \"/dev/ttyAMA0\"\n\
             [[device]]\nid = \"gas2\"\nbus = \"line1\"\nunit = 0\n",
        );
        let keys: Vec<String> = problems(&src).into_iter().map(|d| d.key).collect();
        assert_eq!(keys, ["bus[1].id", "device[1].unit"]);
    }

    #[test]
    fn a_dead_rtu_device_must_fit_in_the_fastest_poll() {
        let src = base(&format!("{CH4}poll = \"500ms\"\n"));
        let d = problems(&src);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].key, "bus[0].timeout");
        assert!(
            d[0].message.contains(
                "= 1s 355ms (quiet = 1.25 × timeout on a serial line), more than 1.5 × the fastest poll on this line (500ms)"
            ),
            "{}",
            d[0].message
        );
    }

    #[test]
    fn the_power_feedback_needs_one_source_that_reads_a_contact_in_time() {
        let keys = |extra: &str| -> Vec<(String, String)> {
            problems(&base(extra))
                .into_iter()
                .map(|d| (d.key, d.message))
                .collect()
        };
        assert!(keys(&format!("power_feedback = {{ line = 5 }}\n{CH4}")).is_empty());
        let both = keys(&format!(
            "power_feedback = {{ line = 5, channel = \"ch4\" }}\n{CH4}"
        ));
        assert_eq!(both.len(), 1, "{both:?}");
        assert_eq!(both[0].0, "outputs.power_feedback");
        let register = keys(&format!("power_feedback = {{ channel = \"ch4\" }}\n{CH4}"));
        assert_eq!(register.len(), 1, "{register:?}");
        assert_eq!(register[0].0, "outputs.power_feedback.channel");
        assert!(
            register[0].1.contains("discrete input or a coil"),
            "{register:?}"
        );
        let slow = keys(
            "power_feedback = { channel = \"fb\" }\nfeedback_delay = \"2s\"\n\
             [[channel]]\nid = \"fb\"\ndevice = \"gas1\"\nkind = \"generic\"\nunit = \"\"\n\
             table = \"discrete\"\naddress = 0\npoll = \"5s\"\n",
        );
        assert_eq!(slow.len(), 1, "{slow:?}");
        assert_eq!(slow[0].0, "outputs.feedback_delay");
        assert!(
            slow[0].1.contains("less than two polls of `fb`"),
            "{slow:?}"
        );
        let missing = keys("power_feedback = { channel = \"nope\" }\n");
        assert_eq!(missing[0].0, "outputs.power_feedback.channel");
        let fault = keys("sim_fault = \"siren=welded,power_relay=melted\"\n");
        assert_eq!(fault.len(), 2, "{fault:?}");
        assert!(fault.iter().all(|(k, _)| k == "outputs.sim_fault"));
        assert!(keys("sim_fault = \"power_relay=welded\"\n").is_empty());
        let quick = keys("feedback_delay = \"50ms\"\n");
        assert_eq!(quick[0].0, "outputs.feedback_delay");
    }
}
