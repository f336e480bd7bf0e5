//! Helpers for the end-to-end tests: find the real `pithead` binary, run it
//! with a configuration in a scratch directory, talk to it over HTTP, and
//! drive a real headless browser (`webdriver`).

#![allow(
    clippy::unwrap_used,
    reason = "test harness: a failed unwrap is a failed test, with the error in its message"
)]

pub mod webdriver;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `pithead` binary built from this workspace (`target/<profile>/pithead`).
///
/// The first call in a test process builds it with `cargo build` (a no-op
/// when it is current), so the end-to-end tests never run a stale binary.
pub fn pithead_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
            // target/<profile>/deps/<test> -> target/<profile>/pithead
            let dir = exe
                .parent()
                .and_then(Path::parent)
                .unwrap_or_else(|| panic!("unexpected test path {}", exe.display()));
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "--quiet", "-p", "pithead", "--bin", "pithead"]);
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().unwrap_or_else(|e| panic!("cargo build: {e}"));
            assert!(status.success(), "cargo build -p pithead failed");
            let bin = dir.join("pithead");
            assert!(
                bin.exists(),
                "{} is missing after cargo build",
                bin.display()
            );
            bin
        })
        .clone()
}

/// The `pithead-county` binary, built like [`pithead_bin`].
pub fn county_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
            let dir = exe
                .parent()
                .and_then(Path::parent)
                .unwrap_or_else(|| panic!("unexpected test path {}", exe.display()));
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args([
                "build",
                "--quiet",
                "-p",
                "pithead-county",
                "--bin",
                "pithead-county",
            ]);
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().unwrap_or_else(|e| panic!("cargo build: {e}"));
            assert!(status.success(), "cargo build -p pithead-county failed");
            dir.join("pithead-county")
        })
        .clone()
}

/// A `pithead-county run` instance, killed when dropped.
#[derive(Debug)]
pub struct County {
    /// The child process.
    pub child: Child,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its standard error.
    pub log: PathBuf,
}

impl County {
    /// Starts an instance on `config` (written to `dir/NAME.toml`).
    pub fn start(dir: &Path, name: &str, config: &str) -> County {
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, config).unwrap();
        let log = dir.join(format!("{name}.log"));
        let mut c = County {
            child: Command::new("true").spawn().unwrap(),
            config: file,
            log,
        };
        c.restart();
        c
    }

    /// Starts it again (after a kill), appending to its log.
    pub fn restart(&mut self) {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Command::new(county_bin())
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info,pithead_county=debug")
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
    }

    /// SIGKILL, and reaped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its log has `needle` `times` times in all.
    pub fn wait_log(&self, needle: &str, times: usize, within: Duration) {
        let end = Instant::now() + within;
        while self.log_text().matches(needle).count() < times {
            let log = self.log_text();
            let tail: String = log
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                Instant::now() < end,
                "no {needle:?} ({times}x; {} so far) in the county log; its end:\n{tail}",
                log.matches(needle).count()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for County {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An address of this machine that is not loopback (the one its default
/// route leaves by), so that a test can be a client "on the station LAN".
pub fn lan_ip() -> std::net::IpAddr {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    // A UDP connect sends nothing: it only picks the route.
    s.connect("8.8.8.8:53")
        .unwrap_or_else(|e| panic!("no route off this machine for a LAN client: {e}"));
    let ip = s.local_addr().map(|a| a.ip()).unwrap();
    assert!(!ip.is_loopback(), "no address besides loopback: {ip}");
    ip
}

/// A TCP port that was free a moment ago on every address, and that this
/// test process has not handed out before. It is taken below the kernel's
/// ephemeral range (32768–60999 on Linux), so the many outgoing connections
/// of the tests running beside (HTTP clients, the browser, the brokers)
/// cannot occupy it as their local port before the daemon binds it.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    // Spread the test processes of one run apart: each starts at its own
    // place in the range.
    let span = 12_000u32;
    let seed = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(u32::try_from(Instant::now().elapsed().as_nanos() % 997).unwrap_or(0));
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for i in 0..span {
        let port = u16::try_from(20_000 + (seed.wrapping_add(i.wrapping_mul(7919)) % span))
            .unwrap_or(20_000);
        if given.contains(&port) {
            continue;
        }
        let free = TcpListener::bind(("0.0.0.0", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port in 20000..32000")
}

/// [`minimal_config`] plus a roster of `miners` (badges 0000, 0001, …) and
/// the uplink to `url`.
pub fn uplink_config(dir: &Path, http: SocketAddr, url: &str, miners: usize) -> String {
    let roster = dir.join("roster.csv");
    let csv: String = std::iter::once("badge,name,team,role\n".to_owned())
        .chain((0..miners).map(|i| format!("{i:04},工人{i},一队,工\n")))
        .collect();
    std::fs::write(&roster, csv).unwrap();
    format!(
        "{}[roster]\nfile = \"{}\"\n{}",
        minimal_config(&dir.join("data"), http),
        roster.display(),
        mqtt_section(url)
    )
}

/// The `[mqtt]` section of a station sending to `url`, 5 s keep-alive.
pub fn mqtt_section(url: &str) -> String {
    format!("[mqtt]\nenabled = true\nurl = \"{url}\"\nkeep_alive = \"5s\"\n")
}

/// Checks badge `badge` (as `{badge:04}`) in and expects `201`.
pub fn check_in(http: SocketAddr, badge: usize) {
    let (s, b) = check_in_answer(http, badge);
    assert_eq!(s, 201, "{b}");
}

/// Checks badge `badge` (as `{badge:04}`) in; the status and the JSON answer.
pub fn check_in_answer(http: SocketAddr, badge: usize) -> (u16, serde_json::Value) {
    let (s, b) = http_request(
        http,
        "POST",
        "/api/v1/checkins",
        &[],
        &format!("{{\"badge\": \"{badge:04}\", \"direction\": \"in\"}}"),
    )
    .unwrap();
    (
        s,
        serde_json::from_str(&b).unwrap_or_else(|e| panic!("{e}: {b}")),
    )
}

/// A small xorshift giving numbers below its argument, seeded from
/// `PITHEAD_SEED` or the clock and printed, so a failing run can be
/// repeated.
pub fn rng() -> impl FnMut(u64) -> u64 {
    let mut seed = std::env::var("PITHEAD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(7)
        });
    eprintln!("PITHEAD_SEED={seed}");
    move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n.max(1)
    }
}

/// Resident memory of a process, in KiB (0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until `/metrics` says the uplink is connected (`yes`) or not.
pub fn wait_connected(http: SocketAddr, yes: bool, within: Duration) {
    let end = Instant::now() + within;
    while (metric(http, "pithead_uplink_connected") == 1.0) != yes {
        assert!(Instant::now() < end, "uplink never became connected={yes}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A metric's value from `/metrics`, 0 when absent or unreachable.
pub fn metric(http: SocketAddr, name: &str) -> f64 {
    http_get(http, "/metrics")
        .map(|r| r.1)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The states simulated outputs left in `data_dir/sim-outputs` (what the
/// relay "is" for another process, also after the daemon died): output →
/// on. Empty when the file is not there (yet).
pub fn sim_outputs(data_dir: &Path) -> BTreeMap<String, bool> {
    std::fs::read_to_string(data_dir.join("sim-outputs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v == "1"))
        .collect()
}

/// Waits until the simulated outputs' file satisfies `pred`, or panics.
pub fn wait_sim_outputs(
    data_dir: &Path,
    within: Duration,
    what: &str,
    pred: impl Fn(&BTreeMap<String, bool>) -> bool,
) {
    let end = Instant::now() + within;
    let mut last = BTreeMap::new();
    while Instant::now() < end {
        last = sim_outputs(data_dir);
        if pred(&last) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("simulated outputs never showed {what}: {last:?}");
}

/// A minimal valid configuration for a station whose data lives in `data_dir`.
pub fn minimal_config(data_dir: &Path, http: SocketAddr) -> String {
    format!(
        "[station]\ncounty = \"test-county\"\nid = \"test-station\"\nname = \"测试站\"\n\
         [storage]\ndata_dir = \"{}\"\n[http]\nlisten = \"{http}\"\n\
         [outputs]\nbackend = \"sim\"\nself_test = false\n",
        data_dir.display()
    )
}

/// A station reading the simulator's face monitor (unit 1): CH4 on input 0
/// guarding power with the `cn-coal/ch4-face` preset, plus `extra` TOML;
/// the roster is one miner, 0001 张伟.
pub fn face_station(dir: &Path, http: SocketAddr, sim: &Simulator, extra: &str) -> String {
    let roster = dir.join("roster.csv");
    std::fs::write(
        &roster,
        "badge,name,team,role\n0001,张伟,综采一队,采煤机司机\n",
    )
    .unwrap();
    format!(
        "{}[roster]\nfile = \"{}\"\n[acquisition]\nwarm_up = \"0s\"\n\
         [[bus]]\nid = \"sim\"\ntransport = \"tcp\"\nhost = \"127.0.0.1\"\nport = {}\ntimeout = \"300ms\"\nretries = 0\n\
         [[device]]\nid = \"face\"\nbus = \"sim\"\nunit = 1\n\
         [[channel]]\nid = \"ch4-1201-face\"\ndevice = \"face\"\nkind = \"ch4\"\nunit = \"%vol\"\nlocation = \"1201 工作面\"\n\
         table = \"input\"\naddress = 0\nscale = 0.01\nrange = [0.0, 4.0]\npreset = \"cn-coal/ch4-face\"\n{extra}",
        minimal_config(&dir.join("data"), http),
        roster.display(),
        sim.modbus.port()
    )
}

/// The demo station's own configuration (`config/demo.toml`: ten channels
/// on three devices, as `pithead demo` runs it) reading the simulator, in
/// the time zone `Asia/Shanghai`, with the demo roster; `extra` is added.
pub fn demo_station(dir: &Path, http: SocketAddr, sim: &Simulator, extra: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let demo = std::fs::read_to_string(root.join("config/demo.toml")).unwrap();
    let roster = dir.join("roster.csv");
    std::fs::copy(root.join("config/roster-demo.csv"), &roster).unwrap();
    let data = dir.join("data");
    let cfg = demo
        .replacen(
            "name = \"示范井口安全工作站\"\n",
            "name = \"示范井口安全工作站\"\ntimezone = \"Asia/Shanghai\"\n",
            1,
        )
        .replacen(
            "data_dir = \"/tmp/pithead-demo\"",
            &format!("data_dir = \"{}\"", data.display()),
            1,
        )
        .replacen(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"{http}\""),
            1,
        )
        .replacen(
            "[roster]\n",
            &format!("[roster]\nfile = \"{}\"\n", roster.display()),
            1,
        )
        .replacen("port = 5020", &format!("port = {}", sim.modbus.port()), 1)
        .replacen("self_test = true", "self_test = false", 1)
        .replacen("warm_up = \"2s\"", "warm_up = \"0s\"", 1);
    assert!(
        cfg.contains("Asia/Shanghai")
            && cfg.contains(&sim.modbus.port().to_string())
            && cfg.contains("roster.csv")
    );
    format!("{cfg}\n{extra}")
}

/// Writes a secret file as `validate` wants it: readable by its owner only.
pub fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The API token the tests configure.
pub const TEST_TOKEN: &str = "test-token-0123456789abcdef";

/// [`minimal_config`] with `http.api_token_file` holding [`TEST_TOKEN`]
/// (written into `dir`).
pub fn config_with_token(dir: &Path, http: SocketAddr) -> String {
    with_token(dir, http, &minimal_config(&dir.join("data"), http))
}

/// `config` (listening on `http`) with `http.api_token_file` holding
/// [`TEST_TOKEN`] (written into `dir`).
pub fn with_token(dir: &Path, http: SocketAddr, config: &str) -> String {
    let token = dir.join("token");
    write_secret(&token, TEST_TOKEN);
    config.replacen(
        &format!("listen = \"{http}\"\n"),
        &format!(
            "listen = \"{http}\"\napi_token_file = \"{}\"\n",
            token.display()
        ),
        1,
    )
}

/// The real daemon, running in the background; killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    /// The child process.
    pub child: Child,
    /// Where its HTTP server listens.
    pub http: SocketAddr,
    /// Its standard error, captured to this file.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `pithead run` with `config` written to `dir/pithead.toml`.
    pub fn start(dir: &Path, config: &str, http: SocketAddr) -> Daemon {
        Self::start_with_env(dir, config, http, &[])
    }

    /// As [`Daemon::start`], with extra environment variables.
    pub fn start_with_env(
        dir: &Path,
        config: &str,
        http: SocketAddr,
        env: &[(&str, &str)],
    ) -> Daemon {
        Self::start_under(dir, config, http, env, &[])
    }

    /// As [`Daemon::start_with_env`], run by `wrapper` (a program and its
    /// arguments that ends by exec'ing the rest of its command line), so
    /// the daemon's pid is the child's.
    pub fn start_under(
        dir: &Path,
        config: &str,
        http: SocketAddr,
        env: &[(&str, &str)],
        wrapper: &[String],
    ) -> Daemon {
        let cfg = dir.join("pithead.toml");
        std::fs::write(&cfg, config).unwrap_or_else(|e| panic!("write config: {e}"));
        // `listen = "127.0.0.1:0"`: the daemon picks a free port and says
        // which in its data directory's `listening` file.
        let listening = (http.port() == 0).then(|| {
            let data_dir = config
                .lines()
                .find_map(|l| l.trim().strip_prefix("data_dir = "))
                .map(|v| PathBuf::from(v.trim_matches('"')))
                .unwrap_or_else(|| panic!("port 0 needs data_dir in the config"));
            let file = data_dir.join("listening");
            let _ = std::fs::remove_file(&file);
            file
        });
        let log = dir.join("stderr.log");
        let stderr = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log file: {e}"));
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(pithead_bin());
                c
            }
            None => Command::new(pithead_bin()),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn pithead: {e}"));
        let mut d = Daemon { child, http, log };
        if let Some(file) = listening {
            d.http = d.wait_listening(&file, Duration::from_secs(20));
        }
        d
    }

    /// The address in the daemon's `listening` file, once it is written.
    fn wait_listening(&mut self, file: &Path, within: Duration) -> SocketAddr {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pithead exited with {status}:\n{}", self.log_text());
            }
            if let Some(addr) = std::fs::read_to_string(file).ok().and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("http ")?.parse().ok())
            }) {
                return addr;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no {} within {within:?}:\n{}",
            file.display(),
            self.log_text()
        );
    }

    /// Waits until `/healthz` answers 200, or panics with the daemon's log.
    pub fn wait_healthy(&mut self, within: Duration) {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pithead exited with {status}:\n{}", self.log_text());
            }
            if matches!(http_get(self.http, "/healthz"), Ok((200, _))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "pithead not healthy within {within:?}:\n{}",
            self.log_text()
        );
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: libc::c_int) {
        let pid = i32::try_from(self.child.id()).unwrap_or(i32::MAX);
        // SAFETY: kill(2) with a pid we own; no memory is touched.
        #[expect(unsafe_code, reason = "kill(2) has no safe wrapper in std")]
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Waits for the process to exit, up to `within`.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let end = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < end,
                "pithead did not exit within {within:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the daemon wrote to standard error so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTPS request trusting only the certificate in `ca_pem`, sent to
/// `addr` for host `host`: (status, head, body).
pub fn https_request(
    addr: SocketAddr,
    ca_pem: &[u8],
    host: &str,
    request: &str,
) -> std::io::Result<(u16, String, String)> {
    use rustls_pki_types::pem::PemObject as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(c.map_err(|e| std::io::Error::other(e.to_string()))?)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| std::io::Error::other(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut raw)).await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((status, head.to_owned(), body.to_owned()))
    })
}

/// A plain HTTP/1.1 GET; returns status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, &[], "")
}

/// A plain HTTP/1.1 request with extra headers and a body (sent as JSON
/// when not empty); returns status and body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let ct = (!body.is_empty()).then_some("application/json");
    http_send(addr, method, path, headers, ct, body.as_bytes())
}

/// A plain HTTP/1.1 request with any body and content type.
pub fn http_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    content_type: Option<&str>,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    http_send_head(addr, method, path, headers, content_type, body).map(|(s, _, b)| (s, b))
}

/// As [`http_request`], with the answer's head too (status, head, body).
pub fn http_request_head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String, String)> {
    let ct = (!body.is_empty()).then_some("application/json");
    http_send_head(addr, method, path, headers, ct, body.as_bytes())
}

/// As [`http_send`], with the answer's head too (status, head, body).
pub fn http_send_head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    content_type: Option<&str>,
    body: &[u8],
) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(ct) = content_type {
        req.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    if !body.is_empty() || content_type.is_some() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    // A server may answer (413) before reading a large body: a failed write
    // is not the end, the answer may be waiting.
    let _ = s.write_all(&bytes);
    // Read the head, then exactly the body: some servers keep the
    // connection open whatever the request says.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other(format!(
                "connection closed in the head: {:?}",
                String::from_utf8_lossy(&raw)
            )));
        }
        raw.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {head:?}")))?;
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
        })
    };
    let mut body = raw[head_end..].to_vec();
    if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while body.len() < len {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        s.read_to_end(&mut body)?;
        if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            body = dechunk(&body);
        }
    }
    Ok((status, head, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = i + 2;
        let end = (start + size).min(b.len());
        out.extend_from_slice(&b[start..end]);
        b = b.get(end + 2..).unwrap_or(&[]);
    }
    out
}

/// `pithead simulate` as a child process, with its control port.
#[derive(Debug)]
pub struct Simulator {
    /// The child process.
    pub child: Child,
    /// Modbus TCP address.
    pub modbus: SocketAddr,
    /// Control port address.
    pub control: SocketAddr,
}

impl Simulator {
    /// Starts the simulator on free ports (and on `rtu`, a serial device).
    pub fn start(scenario: &str, rtu: Option<&Path>) -> Simulator {
        let modbus = SocketAddr::from(([127, 0, 0, 1], free_port()));
        Self::start_on(modbus, scenario, rtu)
    }

    /// Starts the simulator on a given Modbus address.
    pub fn start_on(modbus: SocketAddr, scenario: &str, rtu: Option<&Path>) -> Simulator {
        let control = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = Command::new(pithead_bin());
        cmd.args([
            "simulate",
            "--listen",
            &modbus.to_string(),
            "--control",
            &control.to_string(),
        ])
        .args(["--scenario", scenario])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
        if let Some(path) = rtu {
            cmd.arg("--rtu").arg(path);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn simulator: {e}"));
        let sim = Simulator {
            child,
            modbus,
            control,
        };
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if TcpStream::connect(control).is_ok() && TcpStream::connect(modbus).is_ok() {
                return sim;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("simulator did not start");
    }

    /// Sends one control command; returns the answer line.
    pub fn control(&self, cmd: &str) -> String {
        let mut s = TcpStream::connect(self.control).unwrap_or_else(|e| panic!("control: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        writeln!(s, "{cmd}").unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while s.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let answer = String::from_utf8_lossy(&line).into_owned();
        assert!(
            answer.starts_with("ok"),
            "simulator refused `{cmd}`: {answer}"
        );
        answer
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One channel as `GET /api/v1/channels` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelState {
    /// The value, if any.
    pub value: Option<f64>,
    /// `ok` or the special state.
    pub state: String,
    /// Why there is no value.
    pub detail: Option<String>,
}

/// Every channel, by id.
pub fn channels(http: SocketAddr) -> std::collections::BTreeMap<String, ChannelState> {
    let (status, body) =
        http_get(http, "/api/v1/channels").unwrap_or_else(|e| panic!("GET channels: {e}"));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {body}"))
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().map(str::to_owned);
            (
                s("id").unwrap_or_default(),
                ChannelState {
                    value: c["value"].as_f64(),
                    state: s("state").unwrap_or_default(),
                    detail: s("detail"),
                },
            )
        })
        .collect()
}

/// Polls `GET /api/v1/channels` until `pred` holds or `within` passes;
/// returns the time it took, or panics with the last answer.
pub fn wait_channels(
    http: SocketAddr,
    within: Duration,
    what: &str,
    pred: impl Fn(&std::collections::BTreeMap<String, ChannelState>) -> bool,
) -> Duration {
    let start = Instant::now();
    let mut last = Default::default();
    while start.elapsed() < within {
        last = channels(http);
        if pred(&last) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("not within {within:?}: {what}\n{last:#?}");
}

/// A real Mosquitto broker on a port of its own (never the system's 1883),
/// by default with persistence in a scratch directory so a restart keeps
/// sessions.
#[derive(Debug)]
pub struct Mosquitto {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    persistence: bool,
    extra: String,
}

impl Mosquitto {
    /// Starts a broker on a free port.
    pub fn start() -> Mosquitto {
        Self::start_on(free_port())
    }

    /// Starts a broker on `port`.
    pub fn start_on(port: u16) -> Mosquitto {
        Self::start_with(port, true, "")
    }

    /// Starts a broker on `port`, with or without persistence (without, a
    /// restart loses every session and queued message), and `extra` lines
    /// of configuration (more listeners, TLS).
    pub fn start_with(port: u16, persistence: bool, extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Mosquitto {
            child: None,
            port,
            dir,
            persistence,
            extra: extra.to_owned(),
        };
        m.restart();
        m
    }

    /// A broker on `port` that is down, with the county's subscriber
    /// already holding a persistent session on it: started, subscribed,
    /// then stopped (it saves the session). Once [`Mosquitto::restart`]ed,
    /// everything a station publishes is queued for the subscriber, even
    /// what arrives before the subscriber has reconnected. (A broker simply
    /// started while a station retries would let the station publish before
    /// the subscriber subscribed, and those messages would go nowhere.)
    pub fn down_with_county(port: u16) -> (Mosquitto, Subscriber) {
        let mut broker = Self::start_on(port);
        let sub = Subscriber::start(port);
        broker.stop();
        (broker, sub)
    }

    /// Its scratch directory (for certificates and the like).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn binary() -> &'static str {
        if Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto"
        } else {
            "mosquitto"
        }
    }

    /// Starts it again after [`Mosquitto::stop`], with its saved sessions.
    pub fn restart(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                // `user root`: run as root (on CI), it keeps reading the
                // test's 0600 key files rather than drop to `mosquitto`.
                "user root\nper_listener_settings false\nallow_anonymous true\nmax_queued_messages 0\n\
                 persistence {}\npersistence_location {}/\nautosave_interval 1\nlistener {} 127.0.0.1\n{}",
                self.persistence,
                self.dir.path().display(),
                self.port,
                self.extra
            ),
        )
        .unwrap();
        let child = Command::new(Self::binary())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("mosquitto (apt-get install mosquitto): {e}"));
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < end, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it cleanly (it saves its sessions).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = i32::try_from(c.id()).unwrap_or(i32::MAX);
            // SAFETY: kill(2) with a pid we own; no memory is touched.
            #[expect(unsafe_code, reason = "kill(2) has no safe wrapper in std")]
            let _ = unsafe { libc::kill(pid, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// Kills it with SIGKILL: nothing is saved, connections just drop.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The county's side for commands: a client that publishes to a
/// station's `cmd/` topics (QoS 1).
pub struct CountySender {
    client: rumqttc::Client,
}

impl std::fmt::Debug for CountySender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CountySender")
    }
}

impl CountySender {
    /// Connects to the broker on `port`.
    pub fn start(port: u16) -> CountySender {
        let mut o = rumqttc::MqttOptions::new(
            format!("county-test-sender-{}", std::process::id()),
            "127.0.0.1",
            port,
        );
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
        let (client, mut conn) = rumqttc::Client::new(o, 100);
        std::thread::spawn(move || for _ in conn.iter() {});
        CountySender { client }
    }

    /// Publishes `body` to `…/test-county/test-station/cmd/{kind}`.
    pub fn send(&self, kind: &str, body: &str) {
        self.send_to(
            &format!("pithead/v1/test-county/test-station/cmd/{kind}"),
            body,
            false,
        );
    }

    /// Publishes `body` to `topic`, retained or not.
    pub fn send_to(&self, topic: &str, body: &str, retain: bool) {
        self.client
            .publish(
                topic,
                rumqttc::QoS::AtLeastOnce,
                retain,
                body.as_bytes().to_vec(),
            )
            .unwrap();
    }
}

/// A notice as the county sends it, with message id `id`.
pub fn notice(id: &str, title: &str) -> String {
    format!(
        "{{\"schema\":\"pithead/v1\",\"msg_id\":\"{id}\",\"title\":\"{title}\",\"body\":\"明天 8:00 主井停电\",\"priority\":\"urgent\",\"valid_until\":\"2999-01-01T00:00:00Z\"}}"
    )
}

/// The `cmd_ack` bodies the county received, by the command's message id.
pub fn cmd_acks(sub: &Subscriber) -> Vec<serde_json::Value> {
    sub.all()
        .into_iter()
        .filter(|m| m.topic.ends_with("/cmd_ack"))
        .filter_map(|m| serde_json::from_str::<serde_json::Value>(&m.payload).ok())
        .map(|v| v["body"].clone())
        .collect()
}

/// Waits until the county received a `cmd_ack` for command `id`; returns it.
pub fn wait_cmd_ack(sub: &Subscriber, id: &str, within: Duration) -> serde_json::Value {
    let end = Instant::now() + within;
    loop {
        if let Some(a) = cmd_acks(sub).into_iter().find(|a| a["cmd_msg_id"] == id) {
            return a;
        }
        assert!(
            Instant::now() < end,
            "no cmd_ack for {id}: {:?}",
            cmd_acks(sub)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A message a [`Subscriber`] received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Topic.
    pub topic: String,
    /// Payload as text.
    pub payload: String,
    /// Retained flag.
    pub retain: bool,
}

/// An MQTT subscriber to `pithead/v1/#` with a persistent session (QoS 1),
/// collecting every message in a thread, reconnecting by itself.
#[derive(Debug)]
pub struct Subscriber {
    /// Everything received so far.
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    /// Subscriptions the broker confirmed (one per connection).
    pub subscribed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Subscriber {
    /// Connects to the broker on `port` with a persistent session and
    /// QoS 1, so it misses nothing while the broker keeps its sessions.
    pub fn start(port: u16) -> Subscriber {
        Self::start_with(port, rumqttc::QoS::AtLeastOnce)
    }

    /// Connects to the broker on `port`, subscribing at `qos`. At QoS 0 it
    /// sends the broker nothing back, so a broker killed mid-stream closes
    /// its connection cleanly and what it had written still arrives.
    pub fn start_with(port: u16, qos: rumqttc::QoS) -> Subscriber {
        let mut o = rumqttc::MqttOptions::new("county-test-receiver", "127.0.0.1", port);
        o.set_clean_session(false);
        o.set_keep_alive(Duration::from_secs(5));
        // It also sees the tests' oversized downlink messages.
        o.set_max_packet_size(1024 * 1024, 1024 * 1024);
        let (client, mut conn) = rumqttc::Client::new(o, 100);
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let subscribed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = std::sync::Arc::clone(&received);
        let acks = std::sync::Arc::clone(&subscribed);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        let _ = client.subscribe("pithead/v1/#", qos);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let _ = ready_tx.send(());
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        if let Ok(mut v) = r.lock() {
                            v.push(Received {
                                topic: p.topic.clone(),
                                payload: String::from_utf8_lossy(&p.payload).into_owned(),
                                retain: p.retain,
                            });
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("subscriber not ready: {e}"));
        Subscriber {
            received,
            subscribed,
        }
    }

    /// A copy of what was received.
    pub fn all(&self) -> Vec<Received> {
        self.received.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// A multipart body as the kiosk sends a hazard report: (content type, body).
pub fn multipart(report: &str, photo: Option<&[u8]>) -> (String, Vec<u8>) {
    let boundary = "pithead-test-boundary-7d1";
    let mut b = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"report\"\r\n\r\n{report}\r\n"
    )
    .into_bytes();
    if let Some(p) = photo {
        b.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"p.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n")
                .as_bytes(),
        );
        b.extend_from_slice(p);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), b)
}

/// A tiny JPEG whose EXIF segment names a place: a picture's segments
/// (tables, a 1×1 frame, a scan), EXIF with GPS, a comment, and after the
/// end an appended image with GPS of its own (as phones write motion
/// photos and depth maps).
pub fn jpeg_with_gps() -> Vec<u8> {
    let segment = |marker: u8, data: &[u8]| {
        let mut s = vec![0xFF, marker];
        s.extend_from_slice(&u16::try_from(data.len() + 2).unwrap_or(0).to_be_bytes());
        s.extend_from_slice(data);
        s
    };
    let mut b = vec![0xFF, 0xD8];
    b.extend(segment(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"));
    b.extend(segment(0xE1, b"Exif\0\0MM\0*GPSLatitude 39.9N"));
    b.extend(segment(0xFE, b"GPSLongitude 116.4E"));
    b.extend(segment(0xDB, &[0; 65]));
    b.extend(segment(0xC0, &[8, 0, 1, 0, 1, 1, 1, 0x11, 0]));
    b.extend(segment(0xC4, &[0; 17]));
    b.extend(segment(0xDA, &[1, 1, 0, 0, 0x3F, 0]));
    b.extend_from_slice(&[0x11, 0x22, 0x33, 0xFF, 0xD9]);
    b.extend_from_slice(&[0xFF, 0xD8]);
    b.extend(segment(0xE1, b"Exif\0\0MM\0*GPSLatitude 40.1N"));
    b.extend_from_slice(&[0xFF, 0xD9]);
    b
}

// The county's view of a station, for the uplink and fault tests.

/// Messages from the station's outbox (not status, not commands), in
/// arrival order: (lane, msg id, seq).
pub fn outbox_messages(sub: &Subscriber) -> Vec<(String, String, i64)> {
    sub.all()
        .into_iter()
        .filter(|m| !m.topic.ends_with("/status") && !m.topic.contains("/cmd/"))
        .filter_map(|m| {
            let v: serde_json::Value = serde_json::from_str(&m.payload).ok()?;
            Some((
                v["lane"].as_str()?.to_owned(),
                v["msg_id"].as_str()?.to_owned(),
                v["seq"].as_i64()?,
            ))
        })
        .collect()
}

/// Messages received so far, of any kind (cheap: no parsing).
pub fn count(sub: &Subscriber) -> usize {
    sub.received.lock().map(|v| v.len()).unwrap_or(0)
}

/// Every row of the station's outbox that is to be sent (not set aside):
/// msg id -> sent.
pub fn store_rows(dir: &Path) -> BTreeMap<String, bool> {
    let db = rusqlite::Connection::open(dir.join("data/pithead.db")).unwrap();
    let mut st = db
        .prepare("SELECT msg_id, sent_at IS NOT NULL FROM outbox WHERE set_aside IS NULL")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Waits until every outbox row is marked sent and the county has them all,
/// then checks the sets and sequences. With `in_order`, each lane's first
/// arrivals must also come in sequence order (no reconnect in between).
pub fn assert_county_has_exactly_the_store(
    dir: &Path,
    sub: &Subscriber,
    within: Duration,
    in_order: bool,
) {
    assert_county_has_the_store_after_drops(dir, sub, within, in_order, 0);
}

/// As [`assert_county_has_exactly_the_store`] for a store that dropped
/// `dropped` summaries at the outbox cap: their numbers must be announced
/// by `gap` records, and every other number arrive.
pub fn assert_county_has_the_store_after_drops(
    dir: &Path,
    sub: &Subscriber,
    within: Duration,
    in_order: bool,
    dropped: i64,
) {
    let end = Instant::now() + within;
    let (rows, got) = loop {
        let rows = store_rows(dir);
        let sent = rows.values().all(|s| *s);
        // Parse only once enough has arrived: it is not cheap.
        if sent && count(sub) >= rows.len() {
            let got = outbox_messages(sub);
            let ids: BTreeSet<&str> = got.iter().map(|m| m.1.as_str()).collect();
            if rows.keys().all(|k| ids.contains(k.as_str())) {
                break (rows, got);
            }
        }
        if Instant::now() > end {
            let got = outbox_messages(sub);
            let ids: BTreeSet<&str> = got.iter().map(|m| m.1.as_str()).collect();
            panic!(
                "not complete within {within:?}: {} rows, {} unsent, {} of them at the county",
                rows.len(),
                rows.values().filter(|s| !**s).count(),
                rows.keys().filter(|k| ids.contains(k.as_str())).count()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    // A number is never given to two records: a station that reused a
    // sequence number after a power cut (rows published before they were
    // durable) shows here as one (epoch, lane, seq) with two message ids.
    let mut numbers: BTreeMap<(String, String, i64), BTreeSet<String>> = BTreeMap::new();
    for m in sub.all() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&m.payload) else {
            continue;
        };
        if let (Some(epoch), Some(lane), Some(seq), Some(id)) = (
            v["epoch"].as_str(),
            v["lane"].as_str(),
            v["seq"].as_i64(),
            v["msg_id"].as_str(),
        ) {
            numbers
                .entry((epoch.to_owned(), lane.to_owned(), seq))
                .or_default()
                .insert(id.to_owned());
        }
    }
    if let Some((number, ids)) = numbers.iter().find(|(_, ids)| ids.len() > 1) {
        panic!(
            "(epoch, lane, seq) {number:?} carries {} message ids: {ids:?}",
            ids.len()
        );
    }
    let mut first: BTreeMap<String, (String, i64)> = BTreeMap::new();
    let mut arrival: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (lane, id, seq) in &got {
        if !first.contains_key(id) {
            first.insert(id.clone(), (lane.clone(), *seq));
            arrival.entry(lane.clone()).or_default().push(*seq);
        }
    }
    let county: BTreeSet<&String> = first.keys().collect();
    let store: BTreeSet<&String> = rows.keys().collect();
    assert_eq!(
        county, store,
        "after de-duplication the county holds exactly the store's records"
    );
    // Every number of a lane arrived, or was announced dropped by a `gap`
    // record of the station (the only way a receiver may explain a gap).
    let mut announced: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    let mut capped = 0i64;
    for m in sub.all() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&m.payload) else {
            continue;
        };
        if v["kind"] == "gap" {
            let b = &v["body"];
            if let (Some(lane), Some(from), Some(to)) = (
                b["lane"].as_str(),
                b["from_seq"].as_i64(),
                b["to_seq"].as_i64(),
            ) {
                let set = announced.entry(lane.to_owned()).or_default();
                let before = set.len();
                set.extend(from..=to);
                if b["reason"] == "outbox_cap" {
                    capped += i64::try_from(set.len() - before).unwrap_or(0);
                }
            }
        }
    }
    let announced_summaries = capped;
    assert_eq!(
        announced_summaries, dropped,
        "every summary dropped at the cap is announced, and only those"
    );
    for (lane, seqs) in &arrival {
        let set: BTreeSet<i64> = seqs.iter().copied().collect();
        let gone = announced.get(lane).cloned().unwrap_or_default();
        assert!(
            set.is_disjoint(&gone),
            "lane {lane}: numbers announced dropped arrived anyway"
        );
        let all: BTreeSet<i64> = set.union(&gone).copied().collect();
        let n = i64::try_from(all.len()).unwrap_or(i64::MAX);
        assert_eq!(
            all,
            (1..=n).collect(),
            "lane {lane}: sequence 1..{n} without an unexplained gap"
        );
        if in_order {
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "lane {lane}: arrived out of order"
            );
        }
    }
}

/// A private PostgreSQL server: Debian's `initdb` and `pg_ctl` in a
/// temporary directory, on a free port, trust authentication for the user
/// `pithead`, with a database `pithead`; stopped when dropped. Started by
/// the test even where a PostgreSQL already runs on the machine. As root
/// (on CI) the server runs as the `postgres` user, which the package makes.
#[derive(Debug)]
pub struct Postgres {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
}

impl Postgres {
    /// The directory of `initdb` and `pg_ctl`: the newest of
    /// `/usr/lib/postgresql/*/bin`, else wherever `PATH` has them.
    fn bindir() -> PathBuf {
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
        found
            .pop()
            .map(|(_, b)| b)
            .unwrap_or_else(|| panic!("PostgreSQL's initdb not found under /usr/lib/postgresql (apt-get install postgresql)"))
    }

    fn run(&self, tool: &str, args: &[&str]) -> std::process::Output {
        let path = self.bin.join(tool);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        c.args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Starts one.
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let pg = Postgres {
            port: free_port(),
            dir,
            bin: Self::bindir(),
            as_postgres,
        };
        if as_postgres {
            let out = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(pg.dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "chown to postgres: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let data = pg.dir.path().join("data");
        let data_s = data.display().to_string();
        let out = pg.run(
            "initdb",
            &[
                "-D",
                &data_s,
                "-U",
                "pithead",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sock = pg.dir.path().display().to_string();
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {sock} -c fsync=off -c synchronous_commit=off -c max_connections=50",
            pg.port
        );
        let log = pg.dir.path().join("log").display().to_string();
        let out = pg.run(
            "pg_ctl",
            &[
                "-D", &data_s, "-l", &log, "-o", &opts, "-w", "-t", "60", "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let port = pg.port.to_string();
        let out = pg.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "pithead", "pithead"],
        );
        assert!(
            out.status.success(),
            "createdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg
    }

    /// The connection string for the database `pithead`.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=pithead user=pithead",
            self.port
        )
    }

    /// A query's rows through `psql` (tab-separated, no headings).
    pub fn query(&self, sql: &str) -> String {
        let port = self.port.to_string();
        let out = self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "pithead",
                "-d",
                "pithead",
                "-At",
                "-F",
                "\t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
        );
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").display().to_string();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}

/// Creates supervisor 王班长 (password `井口安全第一 2026`) for the station
/// configuration in `file`.
pub fn add_supervisor(file: &Path) {
    let mut add = Command::new(pithead_bin())
        .args(["user", "add", "王班长", "--config"])
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    if let Some(mut i) = add.stdin.take() {
        let _ = writeln!(i, "井口安全第一 2026");
    }
    assert!(add.wait().is_ok_and(|s| s.success()), "user add 王班长");
}
