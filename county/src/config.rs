//! `county.toml`: the broker, the database, and the registry of stations.
//!
//! Read strictly (unknown keys refused), then checked rule by rule; every
//! problem names the file, line and key (`pithead_core::config_file`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use pithead_core::config_file::{ConfigError, Diagnostic, locate};
use serde::Deserialize;

/// The template `pithead-county configfile` prints.
pub const TEMPLATE: &str = include_str!("../county.toml");

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The county union's broker.
    pub mqtt: Mqtt,
    /// The county's database.
    pub postgres: Postgres,
    /// How messages are written.
    #[serde(default)]
    pub ingest: Ingest,
    /// Logging.
    #[serde(default)]
    pub log: Log,
    /// The quarterly light's rule.
    #[serde(default)]
    pub light: crate::light::Rule,
    /// How commands to stations are signed.
    #[serde(default)]
    pub commands: Commands,
    /// The dashboard (absent: this instance only receives).
    #[serde(default)]
    pub http: Option<Http>,
    /// The stations the county knows.
    #[serde(default, rename = "station")]
    pub stations: Vec<Station>,
}

/// The broker every station publishes to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mqtt {
    /// `mqtt://host:port`.
    pub url: String,
    /// This instance's client id: unique per instance, the same across its
    /// restarts (its persistent session at the broker is under it).
    pub client_id: String,
    /// The shared-subscription group all instances join: the broker hands
    /// each message to one of them.
    #[serde(default = "default_group")]
    pub group: String,
    /// Broker account.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the account's password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Keep-alive interval.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
}

fn default_group() -> String {
    "pithead-county".to_owned()
}

fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}

/// The database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Postgres {
    /// A libpq connection string (`host=… port=… dbname=… user=…`) or URL
    /// (`postgresql://user@host:port/db`), without the password.
    pub url: String,
    /// File holding the password, if the server asks for one.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Connections for readers (the dashboard), besides the writer.
    #[serde(default = "default_pool")]
    pub pool: usize,
}

fn default_pool() -> usize {
    4
}

/// Batching.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ingest {
    /// Most messages written in one transaction.
    pub max_batch: usize,
    /// A gap nobody explains for this long is asked for again
    /// (`cmd/resend`).
    #[serde(with = "humantime_serde")]
    pub resend_after: Duration,
}

impl Default for Ingest {
    fn default() -> Self {
        Self {
            max_batch: 2000,
            resend_after: Duration::from_secs(60),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// Filter in `RUST_LOG` syntax.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
        }
    }
}

/// Signing commands.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commands {
    /// The county's Ed25519 signing key (from `pithead-county keys
    /// generate`, mode 0600): every command is signed with it, and
    /// stations configured with its public key refuse any other.
    pub signing_key_file: Option<PathBuf>,
}

/// The dashboard's web server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Address to listen on, e.g. `127.0.0.1:8090` (put a TLS proxy in
    /// front of it for the county's network).
    pub listen: String,
    /// Host names users reach it under (besides the address itself and
    /// `localhost`); any other `Host` is refused.
    #[serde(default)]
    pub names: Vec<String>,
}

/// A station of the registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Station {
    /// County id, as in the station's `[station] county`.
    pub county: String,
    /// Station id, as in the station's `[station] id`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The mine it belongs to.
    #[serde(default)]
    pub mine: String,
}

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Reads and checks `file`.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_owned(),
        source,
    })?;
    load_str(&src, file)
}

/// Reads and checks `src` (as the contents of `file`).
pub fn load_str(src: &str, file: &Path) -> Result<Config, ConfigError> {
    let invalid = |diagnostics| ConfigError::Invalid {
        file: file.to_owned(),
        diagnostics,
    };
    let cfg: Config = match toml::from_str(src) {
        Ok(c) => c,
        Err(e) => {
            let key = e
                .message()
                .split('`')
                .nth(1)
                .map_or_else(|| "(file)".to_owned(), str::to_owned);
            return Err(invalid(vec![
                Diagnostic::at(src, e.span(), key, e.message().to_owned())
                    .with_hint("compare with `pithead-county configfile`"),
            ]));
        }
    };
    let doc = toml::de::DeTable::parse(src).map_err(|e| {
        invalid(vec![Diagnostic::at(
            src,
            e.span(),
            "(syntax)".into(),
            e.message().to_owned(),
        )])
    })?;
    let doc = doc.into_inner();
    let mut d = Vec::new();
    let mut add = |key: String, message: String, hint: &str| {
        d.push(Diagnostic::at(src, locate(&doc, &key), key, message).with_hint(hint));
    };
    if pithead_core::protocol::parse_url(&cfg.mqtt.url).is_none_or(|(_, _, tls)| tls) {
        add(
            "mqtt.url".into(),
            format!("`{}` is not an mqtt://host:port address", cfg.mqtt.url),
            "e.g. \"mqtt://127.0.0.1:1883\" (TLS to the broker is for a later version: put the receivers beside the broker)",
        );
    }
    if !is_id(&cfg.mqtt.client_id) {
        add(
            "mqtt.client_id".into(),
            format!("`{}` is not a client id", cfg.mqtt.client_id),
            "1 to 64 letters, digits, '-' or '_', different for every instance and the same across its restarts",
        );
    }
    if !is_id(&cfg.mqtt.group) {
        add(
            "mqtt.group".into(),
            format!("`{}` is not a group name", cfg.mqtt.group),
            "1 to 64 letters, digits, '-' or '_', the same for every instance",
        );
    }
    if let Some(f) = &cfg.mqtt.password_file
        && std::fs::metadata(f).is_err()
    {
        add(
            "mqtt.password_file".into(),
            format!("{} cannot be read", f.display()),
            "a file holding the broker account's password",
        );
    }
    if let Some(f) = &cfg.postgres.password_file
        && std::fs::metadata(f).is_err()
    {
        add(
            "postgres.password_file".into(),
            format!("{} cannot be read", f.display()),
            "a file holding the database account's password",
        );
    }
    if cfg.postgres.url.parse::<tokio_postgres::Config>().is_err() {
        add(
            "postgres.url".into(),
            format!(
                "`{}` is not a PostgreSQL connection string",
                cfg.postgres.url
            ),
            "e.g. \"host=127.0.0.1 port=5432 dbname=pithead user=pithead\" or \"postgresql://pithead@127.0.0.1/pithead\"",
        );
    }
    if let Some(f) = &cfg.commands.signing_key_file
        && let Err(e) = crate::commands::signing_key(f)
    {
        add(
            "commands.signing_key_file".into(),
            e,
            "make one with `pithead-county keys generate --out DIR` (mode 0600)",
        );
    }
    if !(1..=100_000).contains(&cfg.ingest.max_batch) {
        add(
            "ingest.max_batch".into(),
            format!("{} is not between 1 and 100000", cfg.ingest.max_batch),
            "2000 suits most counties",
        );
    }
    if cfg.ingest.resend_after < Duration::from_secs(1) {
        add(
            "ingest.resend_after".into(),
            "must be at least 1s".into(),
            "\"60s\": a gap is usually a message still on its way for a few seconds",
        );
    }
    if tracing_subscriber::EnvFilter::try_new(&cfg.log.level).is_err() {
        add(
            "log.level".into(),
            format!("`{}` is not a log filter", cfg.log.level),
            "error, warn, info, debug or trace",
        );
    }
    if let Some(h) = &cfg.http
        && h.listen.parse::<std::net::SocketAddr>().is_err()
    {
        add(
            "http.listen".into(),
            format!("`{}` is not an address and port", h.listen),
            "e.g. \"127.0.0.1:8090\"",
        );
    }
    let mut seen = std::collections::HashSet::new();
    for (i, s) in cfg.stations.iter().enumerate() {
        for (k, v) in [("county", &s.county), ("id", &s.id)] {
            if !is_id(v) {
                add(
                    format!("station[{i}].{k}"),
                    format!("`{v}` is not a valid id"),
                    "as in the station's own [station] section",
                );
            }
        }
        if !seen.insert((s.county.as_str(), s.id.as_str())) {
            add(
                format!("station[{i}].id"),
                format!("station {}/{} is listed twice", s.county, s.id),
                "list each station once",
            );
        }
    }
    if d.is_empty() {
        Ok(cfg)
    } else {
        Err(invalid(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\nclient_id = \"county-1\"\n\
                        [postgres]\nurl = \"host=127.0.0.1 dbname=pithead user=pithead\"\n";

    fn problems(src: &str) -> Vec<(String, usize)> {
        match load_str(src, Path::new("county.toml")) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .diagnostics()
                .iter()
                .map(|d| (d.key.clone(), d.line))
                .collect(),
        }
    }

    #[test]
    fn the_template_and_a_small_file_load() {
        assert_eq!(problems(GOOD), Vec::<(String, usize)>::new());
        let cfg = load_str(TEMPLATE, Path::new("county.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.mqtt.group, "pithead-county");
        assert!(!cfg.stations.is_empty());
    }

    #[test]
    fn every_problem_names_its_key_and_line() {
        let src = format!(
            "{GOOD}[[station]]\ncounty = \"c\"\nid = \"a b\"\nname = \"一号井\"\n\
             [[station]]\ncounty = \"c\"\nid = \"a b\"\nname = \"二号井\"\n"
        );
        assert_eq!(
            problems(&src),
            vec![
                ("station[0].id".to_owned(), 8),
                ("station[1].id".to_owned(), 12),
                ("station[1].id".to_owned(), 12)
            ]
        );
        let src = GOOD.replace(
            "client_id = \"county-1\"\n",
            "client_id = \"county-1\"\ncolour = 1\n",
        );
        let p = problems(&src);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0], ("colour".to_owned(), 4));
        let src = GOOD.replace("mqtt://127.0.0.1:1883", "http://x");
        assert_eq!(problems(&src), vec![("mqtt.url".to_owned(), 2)]);
    }
}
