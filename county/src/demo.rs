//! `pithead-county demo`: the county side to look at in one command — a
//! private PostgreSQL and Mosquitto (Debian's packages, in a temporary
//! directory on free ports), three real `pithead demo` stations with
//! scenarios, signed commands, and the dashboard on localhost with an
//! operator account made for the run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::{commands, config, db, ingest, web};

/// The demo's stations: id, name, scenario.
const STATIONS: [(&str, &str, &str); 3] = [
    ("demo-s1", "一矿主井井口工作站", "normal"),
    ("demo-s2", "二矿副井井口工作站", "methane-rise"),
    ("demo-s3", "三矿主井井口工作站", "sensor-unplugged"),
];

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// PostgreSQL's programs: the newest `/usr/lib/postgresql/*/bin`.
fn pg_bindir() -> anyhow::Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, b)) => Ok(b),
        None => bail!(
            "PostgreSQL's initdb was not found under /usr/lib/postgresql: install the Debian package `postgresql` (sudo apt-get install postgresql)"
        ),
    }
}

fn mosquitto_bin() -> anyhow::Result<PathBuf> {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    bail!(
        "mosquitto was not found: install the Debian package `mosquitto` (sudo apt-get install mosquitto)"
    )
}

/// The `pithead` binary: `PITHEAD_BIN`, beside this one, or on `PATH`.
fn pithead_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PITHEAD_BIN") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("pithead")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("pithead"))
}

/// What the demo started, stopped when dropped.
#[derive(Debug)]
struct Running {
    children: Vec<Child>,
    pg: Option<(PathBuf, PathBuf, bool)>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some((bin, data, as_postgres)) = &self.pg {
            let _ = pg_tool(bin, *as_postgres, "pg_ctl")
                .args(["-D"])
                .arg(data)
                .args(["-m", "fast", "-w", "stop"])
                .output();
        }
    }
}

fn pg_tool(bin: &Path, as_postgres: bool, tool: &str) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

fn check(out: std::io::Result<std::process::Output>, what: &str) -> anyhow::Result<()> {
    let out = out.with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs the demo until Ctrl-C.
pub async fn run(
    http: SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let root = tempfile::Builder::new()
        .prefix("pithead-county-demo-")
        .tempdir()?;
    let dir = root.path().to_owned();
    let mut running = Running {
        children: Vec::new(),
        pg: None,
    };

    // PostgreSQL, private.
    let bin = pg_bindir()?;
    let as_postgres = is_root();
    let pgdir = dir.join("pg");
    std::fs::create_dir(&pgdir)?;
    if as_postgres {
        check(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&pgdir)
                .output(),
            "chown",
        )?;
    }
    let data = pgdir.join("data");
    check(
        pg_tool(&bin, as_postgres, "initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "pithead",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ])
            .output(),
        "initdb",
    )?;
    let pg_port = free_port()?;
    let opts = format!(
        "-p {pg_port} -c listen_addresses=127.0.0.1 -k {}",
        pgdir.display()
    );
    check(
        pg_tool(&bin, as_postgres, "pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(pgdir.join("log"))
            .args(["-o", &opts, "-w", "-t", "60", "start"])
            .output(),
        "pg_ctl start",
    )?;
    running.pg = Some((bin.clone(), data, as_postgres));
    check(
        pg_tool(&bin, as_postgres, "createdb")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg_port.to_string(),
                "-U",
                "pithead",
                "pithead",
            ])
            .output(),
        "createdb",
    )?;

    // Mosquitto, private.
    let mq_port = free_port()?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "{}listener {mq_port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
             max_inflight_messages 1000\nmax_queued_messages 0\n",
            if as_postgres { "user root\n" } else { "" },
            dir.display()
        ),
    )?;
    running.children.push(
        Command::new(mosquitto_bin()?)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start mosquitto")?,
    );
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", mq_port)).is_err() {
        if Instant::now() > end {
            bail!("mosquitto did not start on port {mq_port}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The county's key, configuration, schema and operator.
    let public = commands::generate(&dir).map_err(anyhow::Error::msg)?;
    let mut toml = format!(
        "[mqtt]\nurl = \"mqtt://127.0.0.1:{mq_port}\"\nclient_id = \"county-demo\"\nkeep_alive = \"5s\"\n\
         [postgres]\nurl = \"host=127.0.0.1 port={pg_port} dbname=pithead user=pithead\"\n\
         [ingest]\nresend_after = \"10s\"\n[commands]\nsigning_key_file = \"{}\"\n[http]\nlisten = \"{http}\"\n",
        dir.join("county-signing.key").display()
    );
    for (id, name, _) in STATIONS {
        toml.push_str(&format!(
            "[[station]]\ncounty = \"demo-county\"\nid = \"{id}\"\nname = \"{name}\"\nmine = \"{}\"\n",
            name.chars().take(2).collect::<String>()
        ));
    }
    let file = dir.join("county.toml");
    std::fs::write(&file, &toml)?;
    let cfg = Arc::new(config::load_str(&toml, &file).map_err(|e| anyhow::anyhow!("{e}"))?);
    let pg = db::pg_config(&cfg)?;
    let (mut client, conn) = pg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    db::migrate(&mut client).await?;
    let password = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let hash = {
        let p = password.clone();
        tokio::task::spawn_blocking(move || web::hash(&p))
            .await?
            .map_err(anyhow::Error::msg)?
    };
    client
        .execute(
            "INSERT INTO users (name, hash, role) VALUES ('演示操作员', $1, 'operator')
             ON CONFLICT (name) DO UPDATE SET hash = EXCLUDED.hash",
            &[&hash],
        )
        .await?;

    // The receiver and the dashboard, then the stations (the shared
    // subscription exists before they publish).
    let stats = Arc::new(ingest::Stats::default());
    let pool = db::pool(&cfg, cfg.postgres.pool)?;
    let ingest_task = tokio::spawn(ingest::run(
        Arc::clone(&cfg),
        Arc::clone(&stats),
        shutdown.clone(),
    ));
    let web_task = tokio::spawn(web::serve(
        Arc::clone(&cfg),
        pool,
        Arc::clone(&stats),
        http,
        shutdown.clone(),
    ));
    let end = Instant::now() + Duration::from_secs(30);
    while !stats.connected.load(std::sync::atomic::Ordering::Relaxed) {
        if Instant::now() > end || ingest_task.is_finished() {
            bail!("the receiver did not subscribe at the demo's broker");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut kiosks = Vec::new();
    for (id, name, scenario) in STATIONS {
        let sdir = dir.join(id);
        std::fs::create_dir(&sdir)?;
        let log = std::fs::File::create(dir.join(format!("{id}.log")))?;
        running.children.push(
            Command::new(pithead_bin())
                .args([
                    "demo",
                    "--http",
                    "127.0.0.1:0",
                    "--scenario",
                    scenario,
                    "--station",
                    id,
                    "--name",
                    name,
                ])
                .arg("--data")
                .arg(&sdir)
                .args([
                    "--mqtt",
                    &format!("mqtt://127.0.0.1:{mq_port}"),
                    "--county-key",
                    &public,
                ])
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| {
                    format!("cannot start {} (set PITHEAD_BIN)", pithead_bin().display())
                })?,
        );
        kiosks.push((id, name, scenario, sdir.join("listening")));
    }
    let end = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    for (id, name, scenario, listening) in &kiosks {
        let addr = loop {
            if let Ok(t) = std::fs::read_to_string(listening)
                && let Some(a) = t.lines().find_map(|l| l.strip_prefix("http "))
            {
                break a.to_owned();
            }
            if Instant::now() > end {
                bail!(
                    "station {id} did not start: see {}",
                    dir.join(format!("{id}.log")).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        lines.push(format!("  {name} ({id}, scenario {scenario}): kiosk http://{addr}/  console http://{addr}/console"));
    }
    println!(
        "Pithead county demo — three stations, a private PostgreSQL and Mosquitto in {}\n  \
         dashboard: http://{http}/   user: 演示操作员   password: {password}\n{}\n  \
         commands are signed; the stations trust only the county's key\n  Press Ctrl-C to stop.",
        dir.display(),
        lines.join("\n")
    );
    tokio::select! {
        () = shutdown.cancelled() => {}
        r = ingest_task => { r??; }
    }
    shutdown.cancel();
    let _ = web_task.await;
    drop(running);
    drop(root);
    Ok(())
}
