//! The `pithead-county` command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use pithead_county::{config, db, ingest};

/// The county union's side of Pithead: every station's data into PostgreSQL.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one receiver instance (run as many as needed, each with its own
    /// `mqtt.client_id`).
    Run {
        /// Configuration file.
        #[arg(
            short,
            long,
            env = "PITHEAD_COUNTY_CONFIG",
            default_value = "/etc/pithead/county.toml"
        )]
        config: PathBuf,
    },
    /// Check a configuration file: every problem with its line and key.
    Validate {
        /// Configuration file.
        #[arg(
            short,
            long,
            env = "PITHEAD_COUNTY_CONFIG",
            default_value = "/etc/pithead/county.toml"
        )]
        config: PathBuf,
    },
    /// Print the configuration template with every key explained.
    Configfile,
    /// Bring the database schema up to date, then exit.
    Migrate {
        /// Configuration file.
        #[arg(
            short,
            long,
            env = "PITHEAD_COUNTY_CONFIG",
            default_value = "/etc/pithead/county.toml"
        )]
        config: PathBuf,
    },
}

fn load(file: &std::path::Path) -> Result<config::Config, ExitCode> {
    config::load(file).map_err(|e| {
        eprintln!("{e}");
        // EX_CONFIG, as the station's `validate`.
        ExitCode::from(78)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Configfile => {
            print!("{}", config::TEMPLATE);
            ExitCode::SUCCESS
        }
        Command::Validate { config } => match load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Migrate { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            runtime(|| async move {
                let pg = db::pg_config(&cfg)?;
                let (mut client, conn) = pg.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                let applied = db::migrate(&mut client).await?;
                db::register(&client, &cfg).await?;
                println!("migrations applied: {applied:?}");
                Ok(())
            })
        }
        Command::Run { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
            runtime(|| async move {
                let shutdown = tokio_util::sync::CancellationToken::new();
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    use tokio::signal::unix::{SignalKind, signal};
                    if let (Ok(mut term), Ok(mut int)) = (
                        signal(SignalKind::terminate()),
                        signal(SignalKind::interrupt()),
                    ) {
                        tokio::select! {
                            _ = term.recv() => {}
                            _ = int.recv() => {}
                        }
                    }
                    stop.cancel();
                });
                let stats = Arc::new(ingest::Stats::default());
                tracing::info!(version = env!("CARGO_PKG_VERSION"), client_id = %cfg.mqtt.client_id, "starting");
                ingest::run(Arc::new(cfg), Arc::clone(&stats), shutdown).await?;
                tracing::info!(?stats, "stopped");
                Ok(())
            })
        }
    }
}

fn runtime<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
