//! The command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, ConfigError};
use crate::simulator::model::Scenario;

/// `EX_CONFIG` from sysexits.h: the configuration is wrong.
pub const EXIT_CONFIG: u8 = 78;

/// `EX_DATAERR` from sysexits.h: an input file is wrong.
pub const EXIT_DATA: u8 = 65;

/// The demo's sample roster.
const DEMO_ROSTER: &str = include_str!("../../config/roster-demo.csv");

/// Pithead — shaft-head safety station daemon.
#[derive(Debug, Parser)]
#[command(name = "pithead", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, env = "PITHEAD_CONFIG", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Run,
    /// Check the configuration file and exit: 0 when good, 78 when not.
    Validate,
    /// Print the fully commented default configuration.
    Configfile,
    /// Run with simulated devices, a temporary data directory and the kiosk
    /// on localhost: see Pithead work without any hardware.
    Demo {
        /// Address for the kiosk and console.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        /// Keep data here instead of a temporary directory.
        #[arg(long)]
        data: Option<PathBuf>,
        /// What the simulated station does: normal, methane-rise,
        /// oxygen-drop, water-rise, sensor-unplugged, garbage-frames,
        /// slow-device.
        #[arg(long, default_value = "normal")]
        scenario: Scenario,
        /// Send to this MQTT broker (`mqtt://127.0.0.1:1883`, `mqtts://…`);
        /// without it the demo keeps everything in its outbox.
        #[arg(long)]
        mqtt: Option<String>,
        /// The station's id (several demos on one broker need their own).
        #[arg(long)]
        station: Option<String>,
        /// The station's name on the kiosk.
        #[arg(long)]
        name: Option<String>,
        /// Carry out only county commands signed with this key
        /// (`[mqtt] county_public_key`).
        #[arg(long)]
        county_key: Option<String>,
    },
    /// Manage supervisor accounts for the console. The password is read
    /// from standard input (one line), so it never shows in a process list.
    User {
        /// The data directory to manage, instead of the one in `--config`
        /// (e.g. the demo's, as `pithead demo` prints it).
        #[arg(long, global = true)]
        data: Option<PathBuf>,
        /// What to do.
        #[command(subcommand)]
        action: UserAction,
    },
    /// Drive the outputs to their safe state and exit: power-cut relay
    /// de-energised, beacon red, siren off. The service unit runs
    /// `pithead outputs safe` after the daemon has stopped or died
    /// (`ExecStopPost=`), so a line that keeps its last level never keeps
    /// the power on.
    Outputs {
        /// What to do with them.
        #[command(subcommand)]
        action: OutputsAction,
    },
    /// Keys and certificates for the console over HTTPS.
    Tls {
        /// What to do.
        #[command(subcommand)]
        action: TlsAction,
    },
    /// Manage the roster of workers.
    Roster {
        /// What to do with it.
        #[command(subcommand)]
        action: RosterAction,
    },
    /// Serve the demo station's simulated Modbus devices.
    Simulate {
        /// Modbus TCP address to serve on.
        #[arg(long, default_value = "127.0.0.1:5020")]
        listen: SocketAddr,
        /// Address of the line-based control port (see docs/SIMULATOR.md).
        #[arg(long)]
        control: Option<SocketAddr>,
        /// What the simulated station does (see `demo --help`).
        #[arg(long, default_value = "normal")]
        scenario: Scenario,
        /// Also serve Modbus RTU on this serial device or pseudo-terminal.
        #[arg(long)]
        rtu: Option<String>,
        /// Baud rate for `--rtu`.
        #[arg(long, default_value_t = 9600)]
        baud: u32,
        /// Extra units for load tests (ids 10, 11, …), each with
        /// `--bulk-registers` drifting holding registers.
        #[arg(long, default_value_t = 0)]
        bulk_units: u8,
        /// Holding registers of each bulk unit.
        #[arg(long, default_value_t = 100)]
        bulk_registers: u16,
        /// The bulk registers' starting value (and, with `--drift-share`,
        /// the middle of their band).
        #[arg(long, default_value_t = 1000)]
        bulk_value: u16,
        /// A station's sensor noise instead of the default drift: every
        /// second this share (0 to 1) of the bulk registers moves by one
        /// count within ±5 of `--bulk-value`, with a rare excursion 12 up.
        #[arg(long)]
        drift_share: Option<f64>,
    },
}

/// When the process started, as near as the library can tell: the first
/// thing `run` does. Used for the start-to-first-poll figure.
pub static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Supervisor account sub-commands.
#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Add a supervisor.
    Add {
        /// The name they log in with (and that is recorded with their actions).
        name: String,
    },
    /// Change a supervisor's password.
    Passwd {
        /// The supervisor.
        name: String,
    },
}

/// TLS sub-commands.
#[derive(Debug, Subcommand)]
pub enum TlsAction {
    /// Write a new key and a self-signed certificate (ten years) to the
    /// configuration's `http.tls_key` and `http.tls_cert`, for `http.names`,
    /// this host's name and `localhost`, and print its SHA-256 fingerprint
    /// for the supervisors to compare with what their browser shows.
    SelfSigned {
        /// More names or addresses for the certificate.
        #[arg(long = "name")]
        names: Vec<String>,
        /// Replace files that exist.
        #[arg(long)]
        force: bool,
    },
}

/// Output sub-commands.
#[derive(Debug, Subcommand)]
pub enum OutputsAction {
    /// Power cut, beacon red, siren off; then exit.
    Safe,
}

/// Roster sub-commands.
#[derive(Debug, Subcommand)]
pub enum RosterAction {
    /// Replace the roster with a CSV file (`badge,name,team,role`, UTF-8).
    /// Every bad line is reported and then nothing is imported. Workers
    /// missing from the file become inactive; their history stays.
    Import {
        /// The CSV file.
        file: PathBuf,
    },
}

/// Runs a parsed command line; the process exit code is returned.
pub fn run(cli: Cli) -> ExitCode {
    STARTED.get_or_init(std::time::Instant::now);
    match cli.command.unwrap_or(Command::Run) {
        Command::Configfile => {
            print!("{}", config::TEMPLATE);
            ExitCode::SUCCESS
        }
        Command::Validate => match config::load_file(&cli.config) {
            Ok(cfg) => {
                println!(
                    "{}: ok (station {}/{}, {} buses, {} devices, {} channels)",
                    cli.config.display(),
                    cfg.station.county,
                    cfg.station.id,
                    cfg.buses.len(),
                    cfg.devices.len(),
                    cfg.channels.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => config_failure(&e),
        },
        Command::Run => match config::load_file(&cli.config) {
            Ok(cfg) => daemon(cfg, |_| Ok(())),
            Err(e) => config_failure(&e),
        },
        Command::Demo {
            http,
            data,
            scenario,
            mqtt,
            station,
            name,
            county_key,
        } => demo(
            http,
            data,
            scenario,
            mqtt,
            DemoStation {
                id: station,
                name,
                county_key,
            },
        ),
        Command::User {
            data: Some(dir),
            action,
        } => user(&dir, action),
        Command::User { data: None, action } => match config::load_file(&cli.config) {
            Ok(cfg) => user(&cfg.storage.data_dir, action),
            Err(e) => config_failure(&e),
        },
        Command::Tls {
            action: TlsAction::SelfSigned { names, force },
        } => {
            // The files it makes do not exist yet: checked without them.
            let mut files = (None, None);
            match config::load_file_with(&cli.config, |c| {
                files = (c.http.tls_cert.take(), c.http.tls_key.take());
                c.http.tls_listen = None;
            }) {
                Ok(cfg) => tls_self_signed(&cfg, files, names, force),
                Err(e) => config_failure(&e),
            }
        }
        Command::Outputs {
            action: OutputsAction::Safe,
        } => match config::load_file(&cli.config) {
            Ok(cfg) => outputs_safe(&cfg),
            Err(e) => config_failure(&e),
        },
        Command::Roster {
            action: RosterAction::Import { file },
        } => match config::load_file(&cli.config) {
            Ok(cfg) => roster_import(&cfg, &file),
            Err(e) => config_failure(&e),
        },
        Command::Simulate {
            listen,
            control,
            scenario,
            rtu,
            baud,
            bulk_units,
            bulk_registers,
            bulk_value,
            drift_share,
        } => simulate(
            listen,
            control,
            scenario,
            rtu,
            baud,
            (bulk_units, bulk_registers, bulk_value, drift_share),
        ),
    }
}

fn config_failure(e: &ConfigError) -> ExitCode {
    eprintln!("{e}");
    let n = e.diagnostics().len();
    if n > 1 {
        eprintln!("{n} problems; nothing was started");
    }
    ExitCode::from(EXIT_CONFIG)
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("pithead")
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

/// Runs the daemon; `extra` starts companions (the demo's simulator) on the
/// same runtime, stopped by the same shutdown.
fn daemon(cfg: Config, extra: impl FnOnce(&CancellationToken) -> std::io::Result<()>) -> ExitCode {
    let _log = crate::logging::init(&cfg.log);
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let (shutdown, force) = crate::lifecycle::shutdown_on_signals()?;
        extra(&shutdown)?;
        crate::app::run(
            cfg,
            *STARTED.get_or_init(std::time::Instant::now),
            shutdown,
            &force,
        )
        .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("pithead: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Who a demo station is, when several share a broker.
#[derive(Debug, Default)]
struct DemoStation {
    id: Option<String>,
    name: Option<String>,
    county_key: Option<String>,
}

fn demo(
    http: SocketAddr,
    data: Option<PathBuf>,
    scenario: Scenario,
    mqtt: Option<String>,
    who: DemoStation,
) -> ExitCode {
    let temp;
    let data_dir = match data {
        Some(d) => d,
        None => match tempfile::Builder::new().prefix("pithead-demo-").tempdir() {
            Ok(t) => {
                temp = t;
                temp.path().to_owned()
            }
            Err(e) => {
                eprintln!("cannot create a temporary data directory: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    // The simulator takes free ports, so the demo runs beside anything.
    let bind = || {
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.set_nonblocking(true).map(|()| l))
    };
    let (modbus, control) = match (bind(), bind()) {
        (Ok(m), Ok(c)) => (m, c),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("cannot open a port for the simulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A token for acknowledging alarms over the API, printed below.
    let token = uuid::Uuid::new_v4().simple().to_string();
    let token_file = data_dir.join("api-token");
    let write_secret = |path: &Path, text: &str| -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let _ = std::fs::remove_file(path);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?
            .write_all(text.as_bytes())
    };
    if let Err(e) =
        std::fs::create_dir_all(&data_dir).and_then(|()| write_secret(&token_file, &token))
    {
        eprintln!("cannot write {}: {e}", token_file.display());
        return ExitCode::FAILURE;
    }
    // The demo's workers, so a badge such as 0003 can be checked in.
    let roster_file = data_dir.join("roster.csv");
    if let Err(e) = std::fs::write(&roster_file, DEMO_ROSTER) {
        eprintln!("cannot write {}: {e}", roster_file.display());
        return ExitCode::FAILURE;
    }
    let modbus_port = modbus.local_addr().map_or(0, |a| a.port());
    let control_addr = control.local_addr().ok();
    let cfg = config::load_str_with(config::DEMO, Path::new("<built-in demo config>"), |c| {
        c.storage.data_dir = data_dir.clone();
        c.http.listen = http.to_string();
        c.http.api_token_file = Some(token_file.clone());
        c.roster.file = Some(roster_file.clone());
        if let Some(url) = &mqtt {
            c.mqtt.enabled = true;
            c.mqtt.url.clone_from(url);
        }
        if let Some(id) = &who.id {
            c.station.id.clone_from(id);
        }
        if let Some(name) = &who.name {
            c.station.name.clone_from(name);
        }
        c.mqtt.county_public_key.clone_from(&who.county_key);
        if scenario == Scenario::StuckContactor {
            c.outputs.sim_fault = Some("power_relay=welded".into());
        }
        for b in &mut c.buses {
            b.host = Some("127.0.0.1".into());
            b.port = modbus_port;
        }
    });
    let cfg = match cfg {
        Ok(cfg) => cfg,
        Err(e) => return config_failure(&e),
    };
    // A supervisor for the console, with a password made now (never a
    // fixed default), printed below.
    let password: String = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    if let Err(e) = demo_supervisor(&data_dir, &password) {
        eprintln!("cannot create the demo's supervisor: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!(
        "Pithead demo — station \"{}\", scenario {scenario:?}\n  \
         live readings: http://{http}/api/v1/channels   alarms: http://{http}/api/v1/alarms\n  \
         outputs (virtual siren, beacon, relay): http://{http}/api/v1/outputs   metrics: http://{http}/metrics\n  \
         acknowledge: curl -X POST -H 'Authorization: Bearer {token}' -d '{{\"by\":\"王班长\"}}' \\\n    \
         -H 'Content-Type: application/json' http://{http}/api/v1/alarms/ID/ack\n  \
         simulator control: {} (see docs/SIMULATOR.md)   data: {}\n  \
         console: http://{http}/console   user: {DEMO_SUPERVISOR}   password: {password}\n  \
         more supervisors: pithead user add NAME --data {}\n  Press Ctrl-C to stop.",
        cfg.station.name,
        control_addr.map_or_else(|| "-".to_owned(), |a| a.to_string()),
        data_dir.display(),
        data_dir.display()
    );
    daemon(cfg, move |shutdown| {
        let sim = crate::simulator::Sim::new(scenario);
        let modbus = tokio::net::TcpListener::from_std(modbus)?;
        let control = tokio::net::TcpListener::from_std(control)?;
        tokio::spawn(crate::simulator::control::serve(
            sim.clone(),
            control,
            shutdown.clone(),
        ));
        let s = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::simulator::serve_tcp(sim, modbus, s).await {
                tracing::error!(error = %e, "simulator stopped");
            }
        });
        Ok(())
    })
}

/// The demo's supervisor.
const DEMO_SUPERVISOR: &str = "演示主管";

/// Creates (or resets) the demo's supervisor with `password`.
fn demo_supervisor(data_dir: &Path, password: &str) -> Result<(), String> {
    let hash = crate::auth::hash(password)?;
    save_user(data_dir, DEMO_SUPERVISOR, hash, Mode::AddOrReplace)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// How [`save_user`] treats an existing supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Only a new one (refused if the name exists).
    Add,
    /// Only an existing one (refused if the name does not).
    Replace,
    /// Either (the demo's, reset at each run).
    AddOrReplace,
}

/// Stores a supervisor's password hash in the database of `data_dir`;
/// `true` when the supervisor was added, `false` when replaced.
fn save_user(
    data_dir: &Path,
    name: &str,
    hash: String,
    mode: Mode,
) -> Result<bool, crate::store::StoreError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::store::StoreError::Rejected(format!("cannot start a runtime: {e}")))?;
    let who = name.to_owned();
    runtime.block_on(async {
        let store = crate::store::Store::open(data_dir)?;
        let r = store
            .write(crate::store::Durability::Acknowledged, move |c| {
                let replace = match mode {
                    Mode::Add => false,
                    Mode::Replace => true,
                    Mode::AddOrReplace => crate::auth::stored_hash(c, &who)?.is_some(),
                };
                crate::auth::set_user(c, &who, &hash, replace)
            })
            .await;
        store.close().await;
        r
    })
}

fn simulate(
    listen: SocketAddr,
    control: Option<SocketAddr>,
    scenario: Scenario,
    rtu: Option<String>,
    baud: u32,
    bulk: (u8, u16, u16, Option<f64>),
) -> ExitCode {
    let _log = crate::logging::init(&config::Log::default());
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result: std::io::Result<()> = runtime.block_on(async {
        let (shutdown, _) = crate::lifecycle::shutdown_on_signals()?;
        let sim = crate::simulator::Sim::with_bulk_drift(scenario, bulk.0, bulk.1, bulk.2, bulk.3);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| std::io::Error::other(format!("cannot listen on {listen}: {e}")))?;
        if let Some(addr) = control {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| std::io::Error::other(format!("cannot listen on {addr}: {e}")))?;
            tokio::spawn(crate::simulator::control::serve(
                sim.clone(),
                l,
                shutdown.clone(),
            ));
        }
        if let Some(path) = rtu {
            let (sim, s) = (sim.clone(), shutdown.clone());
            tokio::spawn(async move {
                if let Err(e) = crate::simulator::serve_rtu(sim, &path, baud, s).await {
                    tracing::error!(error = %e, path, "RTU simulator stopped");
                }
            });
        }
        tracing::info!(modbus = %listen, control = ?control, ?scenario, "simulating");
        crate::simulator::serve_tcp(sim, listener, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pithead simulate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn tls_self_signed(
    cfg: &Config,
    files: (Option<PathBuf>, Option<PathBuf>),
    extra: Vec<String>,
    force: bool,
) -> ExitCode {
    let (Some(cert), Some(key)) = (&files.0, &files.1) else {
        eprintln!(
            "pithead tls self-signed: set http.tls_cert and http.tls_key (where to write them) in the configuration first"
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    if !force && (cert.exists() || key.exists()) {
        eprintln!(
            "pithead tls self-signed: {} or {} exists; --force replaces them (browsers will ask again)",
            cert.display(),
            key.display()
        );
        return ExitCode::FAILURE;
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty());
    let mut names: Vec<String> = cfg.http.names.clone();
    names.extend(extra);
    names.extend(host);
    names.push("localhost".into());
    names.push("127.0.0.1".into());
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(n.to_ascii_lowercase()));
    let (pem, key_pem) = match crate::tls::self_signed(&names) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("pithead tls self-signed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let write_key = || -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let _ = std::fs::remove_file(key);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(key)?;
        f.write_all(key_pem.as_bytes())
    };
    if let Err(e) = write_key().and_then(|()| std::fs::write(cert, &pem)) {
        eprintln!("pithead tls self-signed: cannot write: {e}");
        return ExitCode::FAILURE;
    }
    match crate::tls::fingerprint(cert) {
        Ok(f) => {
            println!("certificate {} for {}", cert.display(), names.join(", "));
            println!("key         {} (mode 0600)", key.display());
            println!("SHA-256 fingerprint, for the supervisors to compare with their browser's:");
            println!("  {f}");
            if rustix::process::geteuid().is_root() {
                println!(
                    "the daemon runs as pithead: sudo chgrp pithead {k} && sudo chmod 0640 {k}",
                    k = key.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pithead tls self-signed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn outputs_safe(cfg: &Config) -> ExitCode {
    use crate::alarm::panel::{Panel, SIM_STATE_FILE};
    let sim_state = (cfg.outputs.backend == config::OutputBackend::Sim)
        .then(|| cfg.storage.data_dir.join(SIM_STATE_FILE));
    // Opening the outputs drives every line to the start state, which is
    // the safe one; the lines are released when the process ends.
    match Panel::open(&cfg.outputs, sim_state.as_deref()) {
        Ok(panel) => {
            if let Some(t) = panel.timeline()
                && !t.flush(std::time::Duration::from_secs(5))
            {
                eprintln!(
                    "pithead outputs safe: cannot write {}",
                    sim_state.as_deref().unwrap_or(Path::new("-")).display()
                );
                return ExitCode::FAILURE;
            }
            println!("outputs safe: power-cut relay de-energised, beacon red, siren off");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pithead outputs safe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn roster_import(cfg: &Config, file: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: cannot read: {e}", file.display());
            return ExitCode::from(EXIT_DATA);
        }
    };
    let workers = match crate::roster::parse_csv(&text) {
        Ok(w) => w,
        Err(errors) => {
            for e in &errors {
                eprintln!("{}:{}: {}", file.display(), e.line, e.message);
            }
            eprintln!("{} problems; nothing was imported", errors.len());
            return ExitCode::from(EXIT_DATA);
        }
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let n = workers.len();
    let result = runtime.block_on(async {
        let store = crate::store::Store::open(&cfg.storage.data_dir)?;
        let at = crate::time::now_rfc3339();
        let r = store
            .write(crate::store::Durability::Acknowledged, move |c| {
                crate::roster::import(c, &workers, &at)
            })
            .await;
        store.close().await;
        r
    });
    match result {
        Ok(s) => {
            println!(
                "{}: {n} workers — {} added, {} updated, {} unchanged, {} no longer on the roster",
                file.display(),
                s.added,
                s.updated,
                s.unchanged,
                s.deactivated
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pithead roster import: {e}");
            ExitCode::FAILURE
        }
    }
}

fn user(data_dir: &Path, action: UserAction) -> ExitCode {
    let (name, replace) = match action {
        UserAction::Add { name } => (name, false),
        UserAction::Passwd { name } => (name, true),
    };
    let name = match crate::auth::check_name(&name) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("pithead user: {e}");
            return ExitCode::from(EXIT_DATA);
        }
    };
    let mut password = String::new();
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        // Typed without echo, and twice.
        let ask = |what: &str| {
            rpassword::prompt_password(format!(
                "{what} for {name} (at least {} characters, not shown): ",
                crate::auth::MIN_PASSWORD
            ))
        };
        match (ask("password"), ask("again, the password")) {
            (Ok(a), Ok(b)) if a == b => password = a,
            (Ok(_), Ok(_)) => {
                eprintln!("pithead user: the two passwords differ; nothing was changed");
                return ExitCode::from(EXIT_DATA);
            }
            _ => {
                eprintln!("pithead user: cannot read the password from the terminal");
                return ExitCode::from(EXIT_DATA);
            }
        }
    } else if std::io::stdin().read_line(&mut password).is_err() {
        eprintln!("pithead user: cannot read the password from standard input");
        return ExitCode::from(EXIT_DATA);
    }
    let hash = match crate::auth::hash(password.trim_end_matches(['\r', '\n'])) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("pithead user: {e}");
            return ExitCode::from(EXIT_DATA);
        }
    };
    let result = save_user(
        data_dir,
        &name,
        hash,
        if replace { Mode::Replace } else { Mode::Add },
    );
    match result {
        Ok(true) => {
            println!("supervisor {name} added");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("password of {name} changed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pithead user: {e}");
            ExitCode::FAILURE
        }
    }
}
