//! Parsing with positions, section by section, so one bad key does not hide
//! the next one.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use pithead_core::config_file::locate;

use super::check::{self, Problem};
use super::{
    Acquisition, Bus, Channel, Config, ConfigError, Device, Diagnostic, Http, Kiosk, Log, Mqtt,
    OutputsConfig, Roster, Station, Storage, WatchdogConfig, presets,
};

const SECTIONS: &str = "[station], [storage], [http], [log], [kiosk], [roster], [mqtt], \
                        [acquisition], [outputs], [watchdog], [light], [[bus]], [[device]], [[channel]]";

/// Reads and checks a configuration file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    load_file_with(path, |_| {})
}

/// Reads a configuration file, lets the caller override values (command-line
/// options), then checks it.
pub fn load_file_with(
    path: &Path,
    overrides: impl FnOnce(&mut Config),
) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_owned(),
        source,
    })?;
    let config = load_str_with(&src, path, overrides);
    drop(src);
    // The parse's tables are gone: a large file's would otherwise stay
    // counted against the box for as long as the daemon runs.
    crate::lifecycle::release_memory();
    config
}

/// Parses and checks configuration text; `file` names it in messages and
/// relative paths in it are taken from the file's directory.
pub fn load_str(src: &str, file: &Path) -> Result<Config, ConfigError> {
    load_str_with(src, file, |_| {})
}

/// As [`load_str`], with overrides applied before the semantic check.
pub fn load_str_with(
    src: &str,
    file: &Path,
    overrides: impl FnOnce(&mut Config),
) -> Result<Config, ConfigError> {
    let invalid = |diagnostics: Vec<Diagnostic>| ConfigError::Invalid {
        file: file.to_owned(),
        diagnostics,
    };
    // In pieces when large: a 10,000-channel file parsed whole takes 40 MB
    // of toml's tokens at start.
    let (doc, syntax) = pithead_core::config_file::parse_document(src);
    if !syntax.is_empty() {
        return Err(invalid(
            syntax
                .into_iter()
                .map(|e| {
                    Diagnostic::at(src, e.span, "(syntax)".into(), e.message)
                        .with_hint("this is not valid TOML; compare with `pithead configfile`")
                })
                .collect(),
        ));
    }
    let mut p = Parser {
        src,
        diags: Vec::new(),
    };

    let mut station = None;
    let mut storage = Storage::default();
    let mut http = Http::default();
    let mut log = Log::default();
    let mut kiosk = Kiosk::default();
    let mut roster = Roster::default();
    let mut mqtt = Mqtt::default();
    let mut acquisition = Acquisition::default();
    let mut outputs = OutputsConfig::default();
    let mut watchdog = WatchdogConfig::default();
    let mut light = pithead_core::light::Rule::default();
    let mut buses = Vec::new();
    let mut devices = Vec::new();
    let mut channels = Vec::new();

    for (key, value) in doc.iter() {
        let name: &str = key.get_ref();
        match name {
            "station" => station = p.section::<Station>(name, value),
            "storage" => p.set(&mut storage, name, value),
            "http" => p.set(&mut http, name, value),
            "log" => p.set(&mut log, name, value),
            "kiosk" => p.set(&mut kiosk, name, value),
            "roster" => p.set(&mut roster, name, value),
            "mqtt" => p.set(&mut mqtt, name, value),
            "acquisition" => p.set(&mut acquisition, name, value),
            "outputs" => p.set(&mut outputs, name, value),
            "watchdog" => p.set(&mut watchdog, name, value),
            "light" => p.set(&mut light, name, value),
            "bus" => buses = p.array::<Bus>(name, value),
            "device" => devices = p.array::<Device>(name, value),
            "channel" => channels = p.array::<Channel>(name, value),
            other => {
                let hint = match other {
                    "buses" => "write one `[[bus]]` block per line".to_owned(),
                    "devices" => "write one `[[device]]` block per device".to_owned(),
                    "channels" => "write one `[[channel]]` block per channel".to_owned(),
                    _ => format!("known sections: {SECTIONS}"),
                };
                p.diags.push(
                    Diagnostic::at(
                        src,
                        Some(key.span()),
                        other.to_owned(),
                        format!("unknown section `{other}`"),
                    )
                    .with_hint(hint),
                );
            }
        }
    }

    let Some(station) = station else {
        if !doc.contains_key("station") {
            p.diags.push(
                Diagnostic::at(
                    src,
                    None,
                    "station".into(),
                    "the [station] section is missing".into(),
                )
                .with_hint("add [station] with county, id and name as given by the county union"),
            );
        }
        return Err(invalid(p.finish()));
    };

    let mut config = Config {
        station,
        storage,
        http,
        log,
        kiosk,
        roster,
        mqtt,
        acquisition,
        buses,
        devices,
        channels,
        outputs,
        light,
        watchdog,
    };
    let base = file.parent().unwrap_or(Path::new("."));
    config.resolve_relative_paths(base);
    apply_presets(&mut config, &mut p, &doc);
    overrides(&mut config);
    if !p.diags.is_empty() {
        // Semantic rules over a half-read file would only add noise.
        return Err(invalid(p.finish()));
    }
    for Problem { key, message, hint } in check::check(&config) {
        let span = locate(&doc, &key);
        let mut d = Diagnostic::at(src, span, key, message);
        d.hint = hint;
        p.diags.push(d);
    }
    if p.diags.is_empty() {
        Ok(config)
    } else {
        Err(invalid(p.finish()))
    }
}

/// Replaces each channel's levels by its preset merged with its own.
fn apply_presets(config: &mut Config, p: &mut Parser<'_>, doc: &DeTable) {
    for (i, ch) in config.channels.iter_mut().enumerate() {
        let Some(name) = ch.preset.clone() else {
            continue;
        };
        let key = format!("channel[{i}].preset");
        match presets::all().get(&name) {
            None => {
                let names: Vec<&str> = presets::all().keys().map(String::as_str).collect();
                p.diags.push(
                    Diagnostic::at(
                        p.src,
                        locate(doc, &key),
                        key,
                        format!("in channel \"{}\": unknown preset `{name}`", ch.id),
                    )
                    .with_hint(format!("one of: {}", names.join(", "))),
                );
            }
            Some(preset) if preset.kind != ch.kind => {
                p.diags.push(
                    Diagnostic::at(
                        p.src,
                        locate(doc, &key),
                        key,
                        format!(
                            "in channel \"{}\": preset `{name}` is for {:?} channels, this one is {:?}",
                            ch.id, preset.kind, ch.kind
                        ),
                    )
                    .with_hint("pick a preset of the channel's kind"),
                );
            }
            Some(preset) => ch.levels = presets::merge(preset, &ch.levels),
        }
    }
}

struct Parser<'s> {
    src: &'s str,
    diags: Vec<Diagnostic>,
}

impl Parser<'_> {
    fn finish(mut self) -> Vec<Diagnostic> {
        self.diags.sort_by_key(|d| (d.line, d.column));
        self.diags
    }

    fn set<T: DeserializeOwned>(&mut self, slot: &mut T, name: &str, value: &Spanned<DeValue>) {
        if let Some(v) = self.section(name, value) {
            *slot = v;
        }
    }

    /// Deserializes one value, recording a located diagnostic on failure.
    fn section<T: DeserializeOwned>(
        &mut self,
        prefix: &str,
        value: &Spanned<DeValue>,
    ) -> Option<T> {
        let de = ValueDeserializer::from(value.clone());
        match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(v) => Some(v),
            Err(e) => {
                let key = join(prefix, e.path().iter());
                let inner = e.into_inner();
                let span = inner.span().or_else(|| Some(value.span()));
                let message = inner.message().to_owned();
                let hint = hint_for(&message);
                let mut d = Diagnostic::at(self.src, span, key, message);
                d.hint = hint;
                self.diags.push(d);
                None
            }
        }
    }

    /// An array of tables, element by element, so that every bad element is
    /// reported.
    fn array<T: DeserializeOwned>(&mut self, name: &str, value: &Spanned<DeValue>) -> Vec<T> {
        let Some(items) = value.get_ref().as_array() else {
            self.diags.push(
                Diagnostic::at(
                    self.src,
                    Some(value.span()),
                    name.to_owned(),
                    format!("`{name}` must be a list of `[[{name}]]` blocks"),
                )
                .with_hint(format!("write each item as a `[[{name}]]` block")),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let before = self.diags.len();
            if let Some(v) = self.section(&format!("{name}[{i}]"), item) {
                out.push(v);
            }
            // Name the item by its id too: "channel[3]" alone is hard to find.
            if let Some(id) = item
                .get_ref()
                .get("id")
                .and_then(|v| v.get_ref().as_str().map(str::to_owned))
            {
                for d in &mut self.diags[before..] {
                    d.message = format!("in {name} \"{id}\": {}", d.message);
                }
            }
        }
        out
    }
}

fn join<'a>(prefix: &str, path: impl Iterator<Item = &'a Segment>) -> String {
    let mut key = prefix.to_owned();
    for seg in path {
        match seg {
            Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            Segment::Map { key: k } => {
                key.push('.');
                key.push_str(k);
            }
            Segment::Enum { variant } => {
                key.push('.');
                key.push_str(variant);
            }
            Segment::Unknown => key.push_str(".?"),
        }
    }
    key
}

fn hint_for(message: &str) -> Option<String> {
    let m = message;
    if m.contains("unknown field") {
        Some("check the spelling; `pithead configfile` lists every key with its meaning".into())
    } else if m.contains("missing field") {
        Some("this key has no default and must be set here".into())
    } else if m.contains("time unit") || m.contains("expected number") || m.contains("duration") {
        Some("write durations as a number and a unit: \"500ms\", \"30s\", \"5m\", \"8h\"".into())
    } else if m.contains("unknown variant") {
        Some("use one of the values listed".into())
    } else if m.contains("invalid type") {
        Some("strings are written in quotes, numbers and true/false without".into())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[outputs]\nbackend = \"sim\"\n[station]\ncounty = \"c1\"\nid = \"s1\"\nname = \"一号井\"\n";

    fn errors(src: &str) -> Vec<Diagnostic> {
        match load_str(src, Path::new("test.toml")) {
            Ok(_) => Vec::new(),
            Err(e) => e.diagnostics().to_vec(),
        }
    }

    #[test]
    fn minimal_file_loads_with_defaults() {
        let cfg = load_str(MINIMAL, Path::new("t.toml"));
        let cfg = match cfg {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(cfg.station.name, "一号井");
        assert_eq!(cfg.storage, Storage::default());
        assert_eq!(cfg.http.listen, "127.0.0.1:8080");
    }

    #[test]
    fn kiosk_advice_time_zone_and_screen_are_checked_where_written() {
        let src = format!(
            "{MINIMAL}timezone = \"Asia/Nowhere\"\n[kiosk]\nscreen_width_mm = 7\n\
             [kiosk.advice]\npower_cut = {{ zh = \"\", en = \"Leave now\" }}\n\
             alarm = {{ zh = \"撤离\" }}\n"
        );
        let d = errors(&src);
        // serde names the missing half first; the rules wait for a whole file.
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].key, "kiosk.advice.alarm");
        assert!(d[0].message.contains("en"), "{}", d[0].message);
        let src = src.replace("alarm = { zh = \"撤离\" }\n", "");
        let d = errors(&src);
        let keys: Vec<(&str, usize)> = d.iter().map(|d| (d.key.as_str(), d.line)).collect();
        let zoneinfo = Path::new("/usr/share/zoneinfo").is_dir();
        let mut want = vec![
            ("kiosk.screen_width_mm", 9),
            ("kiosk.advice.power_cut.zh", 11),
        ];
        if zoneinfo {
            want.insert(0, ("station.timezone", 7));
        }
        assert_eq!(keys, want, "{d:?}");
        // A good zone and the defaults load; the defaults are all there.
        let cfg = load_str(
            &format!("{MINIMAL}timezone = \"Asia/Shanghai\"\n"),
            Path::new("t.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.station.zone().as_deref(), Some("Asia/Shanghai"));
        assert_eq!(cfg.kiosk.screen_width_mm, 154);
        assert!(cfg.kiosk.advice.power_cut.zh.contains("断电"));
        for level in ["fault", "warning", "alarm", "power_cut", "power_cut_fault"] {
            assert!(cfg.kiosk.advice.for_level(level).is_some(), "{level}");
        }
    }

    #[test]
    fn unknown_key_is_located() {
        let src = format!("{MINIMAL}[http]\nlisten = \"127.0.0.1:80\"\nlistn = 1\n");
        let d = errors(&src);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].key, "http.listn");
        assert_eq!(d[0].line, 9);
        assert!(d[0].message.contains("unknown field"), "{}", d[0].message);
    }

    #[test]
    fn a_large_file_read_in_pieces_loads_and_points_at_its_lines() {
        // 1,000 channels: four pieces. The file loads whole, and problems
        // in a late piece, one toml's and one of the rules, name their
        // lines in the file.
        let mut src = format!(
            "{MINIMAL}[[bus]]\nid = \"b\"\ntransport = \"tcp\"\nhost = \"127.0.0.1\"\nport = 502\n\
             [[device]]\nid = \"d\"\nbus = \"b\"\nunit = 1\n"
        );
        for i in 0..1000 {
            src.push_str(&format!(
                "[[channel]]\nid = \"c{i}\"\ndevice = \"d\"\nkind = \"ch4\"\nunit = \"%\"\npreset = \"cn-coal/ch4-face\"\n\
                 table = \"holding\"\naddress = {i}\nrange = [0.0, 4.0]\nscale = 0.01\n"
            ));
        }
        let cfg = load_str(&src, Path::new("big.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.channels.len(), 1000);
        assert_eq!(cfg.channels[999].id, "c999");
        assert!(!cfg.channels[999].levels.is_empty(), "the preset applied");
        let line_of = |text: &str, needle: &str| {
            text[..text.find(needle).unwrap_or(0)].matches('\n').count() + 1
        };
        let bad = src.replace("address = 900\n", "address = 900\ncolour = 1\n");
        let d = errors(&bad);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            (d[0].key.as_str(), d[0].line),
            ("channel[900].colour", line_of(&bad, "colour"))
        );
        // A duplicate id, found by the rules, located at the second one.
        let dup = src.replace("id = \"c950\"", "id = \"c949\"");
        let second = dup.rfind("id = \"c949\"").unwrap_or(0);
        let line = dup[..second].matches('\n').count() + 1;
        let d = errors(&dup);
        assert!(
            d.iter()
                .any(|d| d.key.starts_with("channel[950]") && d.line == line),
            "{d:?}"
        );
        let broken = src.replace("address = 990\n", "address = = 990\n");
        let d = errors(&broken);
        assert!(
            d.iter()
                .any(|d| d.key == "(syntax)" && d.line == line_of(&broken, "address = = 990")),
            "{d:?}"
        );
    }

    #[test]
    fn bad_duration_names_key_and_hints() {
        let src = format!("{MINIMAL}[roster]\nshift_length = \"8 hourz\"\n");
        let d = errors(&src);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].key, "roster.shift_length");
        assert_eq!(d[0].line, 8);
        assert!(d[0].hint.as_deref().unwrap_or("").contains("30s"));
    }

    #[test]
    fn every_bad_element_is_reported() {
        let src = format!(
            "{MINIMAL}[[device]]\nid = \"a\"\nbus = \"b\"\nunit = 1\ncolour = 1\n\
             [[device]]\nid = \"b\"\nbus = \"b\"\nunit = \"one\"\n"
        );
        let d = errors(&src);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0].key, "device[0].colour");
        assert!(d[0].message.starts_with("in device \"a\""));
        assert_eq!(d[1].key, "device[1].unit");
        assert_eq!(d[1].line, 15);
    }

    #[test]
    fn syntax_errors_are_located() {
        let d = errors("[station\ncounty = 1\n");
        assert!(!d.is_empty());
        assert_eq!(d[0].line, 1);
        assert_eq!(d[0].key, "(syntax)");
    }

    #[test]
    fn missing_station_is_reported() {
        let d = errors("[http]\nlisten = \"127.0.0.1:1\"\n");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].key, "station");
    }

    #[test]
    fn unknown_section_is_reported_with_hint() {
        let d = errors(&format!("{MINIMAL}[[channels]]\nid = \"x\"\n"));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].key, "channels");
        assert!(
            d[0].hint.as_deref().unwrap_or("").contains("[[channel]]"),
            "{:?}",
            d[0].hint
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// A damaged file (a half-saved edit, a bad merge, a stray paste)
        /// is refused with diagnostics that name the file and a line in it,
        /// never a panic.
        #[test]
        fn a_damaged_config_gets_named_errors_never_a_panic(
            bytes in crate::testing::mutated(crate::config::DEMO.as_bytes().to_vec())
        ) {
            let src = String::from_utf8_lossy(&bytes);
            let lines = src.lines().count() + 1;
            if let Err(e) = load_str(&src, Path::new("damaged.toml")) {
                let d = e.diagnostics();
                proptest::prop_assert!(!d.is_empty(), "an error without diagnostics: {e}");
                for x in d {
                    proptest::prop_assert!(x.line <= lines, "line {} of {lines}: {x:?}", x.line);
                    proptest::prop_assert!(!x.message.is_empty());
                }
                proptest::prop_assert!(e.to_string().contains("damaged.toml"), "{e}");
            }
        }

        #[test]
        fn any_text_is_a_config_or_errors(src in "\\PC{0,200}") {
            let _ = load_str(&src, Path::new("any.toml"));
        }
    }
}
