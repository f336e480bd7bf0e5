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
            default_value = "/etc/pithead-county/county.toml"
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
            default_value = "/etc/pithead-county/county.toml"
        )]
        config: PathBuf,
    },
    /// Print the configuration template with every key explained.
    Configfile,
    /// County accounts: `user add NAME --role operator|viewer` (the
    /// password on standard input; there is no default account).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// The county's signing key for commands: `keys generate --out DIR`
    /// writes `county-signing.key` (0600) and prints the public key every
    /// station puts in `[mqtt] county_public_key`.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// See the county side work in one command: a private PostgreSQL and
    /// Mosquitto (Debian's packages), three real `pithead demo` stations,
    /// and the dashboard on localhost with an operator made for the run.
    Demo {
        /// Address for the dashboard.
        #[arg(long, default_value = "127.0.0.1:8090")]
        http: std::net::SocketAddr,
    },
    /// Bring the database schema up to date, then exit.
    Migrate {
        /// Configuration file.
        #[arg(
            short,
            long,
            env = "PITHEAD_COUNTY_CONFIG",
            default_value = "/etc/pithead-county/county.toml"
        )]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Make a new key pair (an existing key is never overwritten).
    Generate {
        /// Directory for `county-signing.key` and `county-signing.pub`.
        #[arg(long, default_value = "/etc/pithead-county")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum UserAction {
    /// Add an account, or set the password and role of an existing one.
    Add {
        /// The account's name.
        name: String,
        /// `operator` (may send commands) or `viewer` (reads only).
        #[arg(long, default_value = "viewer")]
        role: String,
        /// Configuration file.
        #[arg(
            short,
            long,
            env = "PITHEAD_COUNTY_CONFIG",
            default_value = "/etc/pithead-county/county.toml"
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
        Command::Demo { http } => {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
            runtime(|| async move {
                let shutdown = stop_on_signals();
                pithead_county::demo::run(http, shutdown).await
            })
        }
        Command::Keys {
            action: KeysAction::Generate { out },
        } => match pithead_county::commands::generate(&out) {
            Ok(public) => {
                eprintln!(
                    "signing key: {}\nput this public key in every station's [mqtt] county_public_key, and set [commands] signing_key_file here:",
                    out.join("county-signing.key").display()
                );
                println!("{public}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::User {
            action: UserAction::Add { name, role, config },
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if !matches!(role.as_str(), "operator" | "viewer") {
                eprintln!("--role is operator or viewer, not {role:?}");
                return ExitCode::from(64);
            }
            if name.trim().is_empty()
                || name.chars().count() > 64
                || name.chars().any(char::is_control)
            {
                eprintln!("a name has 1 to 64 characters");
                return ExitCode::from(64);
            }
            let mut password = String::new();
            if std::io::stdin().read_line(&mut password).is_err() {
                eprintln!("cannot read the password from standard input");
                return ExitCode::FAILURE;
            }
            let hash = match pithead_county::web::hash(password.trim_end_matches(['\r', '\n'])) {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(64);
                }
            };
            runtime(|| async move {
                let pg = db::pg_config(&cfg)?;
                let (mut client, conn) = pg.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                db::migrate(&mut client).await?;
                client
                    .execute(
                        "INSERT INTO users (name, hash, role) VALUES ($1, $2, $3)
                         ON CONFLICT (name) DO UPDATE SET hash = EXCLUDED.hash, role = EXCLUDED.role",
                        &[&name, &hash, &role],
                    )
                    .await?;
                client
                    .execute("DELETE FROM sessions WHERE name = $1", &[&name])
                    .await?;
                println!("account {name} ({role}) saved");
                Ok(())
            })
        }
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
                let shutdown = stop_on_signals();
                let stats = Arc::new(ingest::Stats::default());
                tracing::info!(version = env!("CARGO_PKG_VERSION"), client_id = %cfg.mqtt.client_id, "starting");
                let cfg = Arc::new(cfg);
                let web = match cfg
                    .http
                    .as_ref()
                    .map(|h| h.listen.parse::<std::net::SocketAddr>())
                {
                    Some(Ok(listen)) => {
                        let pool = db::pool(&cfg, cfg.postgres.pool)?;
                        Some(tokio::spawn(pithead_county::web::serve(
                            Arc::clone(&cfg),
                            pool,
                            Arc::clone(&stats),
                            listen,
                            shutdown.clone(),
                        )))
                    }
                    _ => None,
                };
                let ingested =
                    ingest::run(Arc::clone(&cfg), Arc::clone(&stats), shutdown.clone()).await;
                shutdown.cancel();
                if let Some(w) = web
                    && let Ok(Err(e)) = w.await
                {
                    tracing::error!(error = %e, "dashboard failed");
                }
                ingested?;
                tracing::info!(?stats, "stopped");
                Ok(())
            })
        }
    }
}

/// A token cancelled at SIGTERM or SIGINT.
fn stop_on_signals() -> tokio_util::sync::CancellationToken {
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
    shutdown
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
