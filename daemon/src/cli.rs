//! The command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, ConfigError};

/// `EX_CONFIG` from sysexits.h: the configuration is wrong.
pub const EXIT_CONFIG: u8 = 78;

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
    },
}

/// Runs a parsed command line; the process exit code is returned.
pub fn run(cli: Cli) -> ExitCode {
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
            Ok(cfg) => daemon(cfg),
            Err(e) => config_failure(&e),
        },
        Command::Demo { http, data } => demo(http, data),
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

fn daemon(cfg: Config) -> ExitCode {
    crate::logging::init(&cfg.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("pithead")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = crate::lifecycle::shutdown_on_signals()?;
        crate::app::run(cfg, shutdown).await
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

fn demo(http: SocketAddr, data: Option<PathBuf>) -> ExitCode {
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
    let cfg = config::load_str_with(config::DEMO, Path::new("<built-in demo config>"), |c| {
        c.storage.data_dir = data_dir.clone();
        c.http.listen = http.to_string();
    });
    match cfg {
        Ok(cfg) => {
            eprintln!(
                "Pithead demo — health: http://{http}/healthz  data: {}\n\
                 Press Ctrl-C to stop.",
                data_dir.display()
            );
            daemon(cfg)
        }
        Err(e) => config_failure(&e),
    }
}
