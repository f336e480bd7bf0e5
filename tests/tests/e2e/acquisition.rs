//! Acquisition end to end: the real daemon against real Modbus servers over
//! real sockets — a tokio-modbus server in this test, and the `pithead
//! simulate` process with injected faults.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of the tests: a failed unwrap is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pithead_e2e::{
    ChannelState, Daemon, Simulator, channels, free_port, minimal_config, wait_channels,
};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

type Seen = Arc<Mutex<BTreeSet<(u8, u16, u16)>>>;

/// A device with one register of every encoding, recording each distinct
/// (function, start, count) it is asked for.
#[derive(Clone)]
struct Device {
    holding: Vec<u16>,
    input: Vec<u16>,
    seen: Seen,
}

impl tokio_modbus::server::Service for Device {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Result<Response, ExceptionCode>> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let words = |v: &[u16], a: u16, n: u16| {
            v.get(usize::from(a)..usize::from(a) + usize::from(n))
                .map(<[u16]>::to_vec)
        };
        let (code, a, n, r) = match req.request {
            Request::ReadHoldingRegisters(a, n) => (
                3,
                a,
                n,
                words(&self.holding, a, n).map(Response::ReadHoldingRegisters),
            ),
            Request::ReadInputRegisters(a, n) => (
                4,
                a,
                n,
                words(&self.input, a, n).map(Response::ReadInputRegisters),
            ),
            Request::ReadCoils(a, n) => (
                1,
                a,
                n,
                (a == 0 && n == 1).then(|| Response::ReadCoils(vec![true])),
            ),
            Request::ReadDiscreteInputs(a, n) => {
                let bits = [false, true];
                (
                    2,
                    a,
                    n,
                    bits.get(usize::from(a)..usize::from(a) + usize::from(n))
                        .map(|b| Response::ReadDiscreteInputs(b.to_vec())),
                )
            }
            _ => (0, 0, 0, None),
        };
        if let Ok(mut s) = self.seen.lock() {
            s.insert((code, a, n));
        }
        Box::pin(async move { r.ok_or(ExceptionCode::IllegalDataAddress) })
    }
}

/// Serves `device` on a free port from a runtime of its own.
fn serve(device: Device) -> SocketAddr {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            let server = tokio_modbus::server::tcp::Server::new(listener);
            let on_connected = |stream, _| {
                let d = device.clone();
                async move { Ok(Some((d, stream))) }
            };
            let _ = server.serve(&on_connected, |_| {}).await;
        });
    });
    addr
}

fn channel(id: &str, table: &str, addr: u16, extra: &str) -> String {
    format!(
        "[[channel]]\nid = \"{id}\"\ndevice = \"dev\"\nkind = \"generic\"\nunit = \"u\"\ntable = \"{table}\"\naddress = {addr}\n{extra}\n"
    )
}

fn typed_channels() -> String {
    [
        channel("u16", "holding", 0, "scale = 0.1"),
        channel("i16", "holding", 1, "data_type = \"i16\""),
        channel("u32_abcd", "holding", 2, "data_type = \"u32\""),
        channel(
            "u32_cdab",
            "holding",
            4,
            "data_type = \"u32\"\nword_order = \"little\"",
        ),
        channel("i32", "holding", 6, "data_type = \"i32\""),
        channel("f32", "holding", 8, "data_type = \"f32\"\noffset = -0.25"),
        channel(
            "f32_dcba",
            "holding",
            10,
            "data_type = \"f32\"\nbyte_order = \"little\"\nword_order = \"little\"",
        ),
        channel("u16_ba", "holding", 12, "byte_order = \"little\""),
        channel("over_range", "input", 0, "range = [0.0, 100.0]"),
        channel("nan", "input", 1, "data_type = \"f32\""),
        channel("coil", "coil", 0, ""),
        channel("di0", "discrete", 0, ""),
        channel("di1", "discrete", 1, ""),
    ]
    .concat()
}

fn device_config(
    dir: &std::path::Path,
    http: SocketAddr,
    modbus: SocketAddr,
    coalesce: bool,
) -> String {
    format!(
        "{}[acquisition]\nwarm_up = \"0s\"\ncoalesce = {coalesce}\n\
         [[bus]]\nid = \"gw\"\ntransport = \"tcp\"\nhost = \"127.0.0.1\"\nport = {}\n\
         [[device]]\nid = \"dev\"\nbus = \"gw\"\nunit = 1\n{}",
        minimal_config(&dir.join("data"), http),
        modbus.port(),
        typed_channels()
    )
}

#[test]
fn every_data_type_and_order_decodes_and_reads_are_coalesced() {
    let holding = vec![
        1234, 0xfffb, 0x0001, 0x86a0, 0x86a0, 0x0001, 0xfffe, 0x7960, 0x4050, 0x0000, 0x0000,
        0x5040, 0x0201,
    ];
    let input = vec![150, 0x7fc0, 0x0000];
    let mut seen_by_mode = Vec::new();
    for coalesce in [true, false] {
        let seen: Seen = Arc::default();
        let modbus = serve(Device {
            holding: holding.clone(),
            input: input.clone(),
            seen: Arc::clone(&seen),
        });
        let dir = tempfile::tempdir().unwrap();
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut d = Daemon::start(
            dir.path(),
            &device_config(dir.path(), http, modbus, coalesce),
            http,
        );
        d.wait_healthy(Duration::from_secs(20));
        wait_channels(http, Duration::from_secs(10), "every channel read", |c| {
            c.len() == 13
                && c.values()
                    .all(|s| s.state == "ok" || s.state == "out_of_range")
        });
        let c = channels(http);
        let v = |id: &str| c[id].value.unwrap_or_else(|| panic!("{id}: {:?}", c[id]));
        assert!((v("u16") - 123.4).abs() < 1e-9);
        assert_eq!(v("i16"), -5.0);
        assert_eq!(v("u32_abcd"), 100_000.0);
        assert_eq!(v("u32_cdab"), 100_000.0);
        assert_eq!(v("i32"), -100_000.0);
        assert_eq!(v("f32"), 3.0);
        assert_eq!(v("f32_dcba"), 3.25);
        assert_eq!(v("u16_ba"), 258.0);
        assert_eq!((v("coil"), v("di0"), v("di1")), (1.0, 0.0, 1.0));
        for id in ["over_range", "nan"] {
            assert_eq!(
                c[id],
                ChannelState {
                    value: None,
                    state: "out_of_range".into(),
                    detail: Some("outside the sensor range".into())
                }
            );
        }
        drop(d);
        seen_by_mode.push(seen.lock().map(|s| s.clone()).unwrap_or_default());
    }
    // Coalesced: one read per table; otherwise one per channel.
    assert_eq!(
        seen_by_mode[0],
        BTreeSet::from([(1, 0, 1), (2, 0, 2), (3, 0, 13), (4, 0, 3)]),
        "coalesced reads"
    );
    assert_eq!(seen_by_mode[1].len(), 13, "{:?}", seen_by_mode[1]);
}

fn sim_config(dir: &std::path::Path, http: SocketAddr, sim: &Simulator) -> String {
    // The demo devices (see config/demo.toml), with short timeouts.
    format!(
        "{}[acquisition]\nwarm_up = \"0s\"\n\
         [[bus]]\nid = \"sim\"\ntransport = \"tcp\"\nhost = \"127.0.0.1\"\nport = {}\ntimeout = \"300ms\"\nretries = 1\n\
         [[device]]\nid = \"face\"\nbus = \"sim\"\nunit = 1\n\
         [[device]]\nid = \"return\"\nbus = \"sim\"\nunit = 2\n\
         [[device]]\nid = \"sump\"\nbus = \"sim\"\nunit = 3\n\
         [[channel]]\nid = \"ch4\"\ndevice = \"face\"\nkind = \"ch4\"\nunit = \"%vol\"\ntable = \"input\"\naddress = 0\nscale = 0.01\nrange = [0.0, 4.0]\n\
         [[channel]]\nid = \"co\"\ndevice = \"face\"\nkind = \"co\"\nunit = \"ppm\"\ntable = \"input\"\naddress = 1\n\
         [[channel]]\nid = \"ch4r\"\ndevice = \"return\"\nkind = \"ch4\"\nunit = \"%vol\"\ntable = \"holding\"\naddress = 0\ndata_type = \"f32\"\n\
         [[channel]]\nid = \"h2s\"\ndevice = \"return\"\nkind = \"h2s\"\nunit = \"ppm\"\ntable = \"holding\"\naddress = 4\nscale = 0.1\n\
         [[channel]]\nid = \"level\"\ndevice = \"sump\"\nkind = \"water_level\"\nunit = \"m\"\ntable = \"input\"\naddress = 0\ndata_type = \"u32\"\nword_order = \"little\"\nscale = 0.001\n",
        minimal_config(&dir.join("data"), http),
        sim.modbus.port()
    )
}

fn state(c: &BTreeMap<String, ChannelState>, id: &str) -> String {
    c.get(id).map(|s| s.state.clone()).unwrap_or_default()
}

/// Two poll intervals (1 s each) plus the API sampling and a loaded machine.
const TWO_POLLS: Duration = Duration::from_millis(2500);

#[test]
fn faults_show_within_two_polls_and_other_devices_keep_reading() {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut d = Daemon::start(dir.path(), &sim_config(dir.path(), http, &sim), http);
    d.wait_healthy(Duration::from_secs(20));
    wait_channels(http, Duration::from_secs(10), "all ok", |c| {
        c.values().all(|s| s.state == "ok")
    });

    // A known value reaches the API: 1.23 %vol at the face.
    sim.control("set 1 input 0 123");
    wait_channels(http, TWO_POLLS, "ch4 = 1.23", |c| {
        c["ch4"].value == Some(1.23)
    });

    let others_ok = |c: &BTreeMap<String, ChannelState>, faulty: &[&str]| {
        c.iter()
            .filter(|(id, _)| !faulty.contains(&id.as_str()))
            .all(|(_, s)| s.state == "ok")
    };
    for (unit, fault, ids, detail) in [
        ("1", "silent", ["ch4", "co"], "no answer within 300ms"),
        ("2", "exception", ["ch4r", "h2s"], "exception 0x04"),
        ("2", "garbage", ["ch4r", "h2s"], "bad frame"),
        (
            "2",
            "wrong-tid",
            ["ch4r", "h2s"],
            "does not match the request",
        ),
    ] {
        sim.control(&format!("fault {unit} {fault}"));
        wait_channels(http, TWO_POLLS, &format!("{fault} -> comm_fault"), |c| {
            ids.iter()
                .all(|id| state(c, id) == "comm_fault" && c[*id].value.is_none())
        });
        let c = channels(http);
        assert!(
            c[ids[0]].detail.as_deref().unwrap_or("").contains(detail),
            "{fault}: {:?}",
            c[ids[0]]
        );
        // The other devices on the same endpoint never miss a beat.
        for _ in 0..12 {
            let c = channels(http);
            assert!(
                others_ok(&c, &ids),
                "{fault} disturbed other devices: {c:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        sim.control(&format!("fault {unit} none"));
        // A failed device is probed every 3 s.
        wait_channels(
            http,
            Duration::from_secs(5),
            &format!("{fault} recovers"),
            |c| ids.iter().all(|id| state(c, id) == "ok"),
        );
    }
}

#[test]
fn a_late_reply_is_never_taken_for_the_next_answer() {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // Every channel its own request: ch4 and co are neighbours, which
    // would otherwise be read together and could not take each other's
    // late replies.
    let cfg = sim_config(dir.path(), http, &sim).replacen(
        "[acquisition]\nwarm_up = \"0s\"\n",
        "[acquisition]\nwarm_up = \"0s\"\ncoalesce = false\n",
        1,
    );
    assert!(cfg.contains("coalesce = false"));
    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    // Two channels of one device with different values, read by separate
    // requests: a late reply to one would carry the other's.
    sim.control("set 1 input 0 111");
    sim.control("set 1 input 1 222");
    wait_channels(http, Duration::from_secs(10), "set values", |c| {
        c["ch4"].value == Some(1.11) && c["co"].value == Some(222.0)
    });
    // Replies now come 400 ms after the request, 100 ms past the timeout.
    sim.control("fault 1 slow:400");
    let start = std::time::Instant::now();
    let mut faults = 0;
    while start.elapsed() < Duration::from_secs(4) {
        let c = channels(http);
        for (id, want) in [("ch4", 1.11), ("co", 222.0)] {
            match c[id].value {
                None => faults += 1,
                Some(v) => assert_eq!(v, want, "{id} took a late reply for its answer"),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(faults > 0, "slow replies must show as faults");
    assert_eq!(state(&channels(http), "ch4"), "comm_fault");
}

#[test]
fn a_dropped_connection_is_a_fault_and_reconnects() {
    let modbus = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let sim = Simulator::start_on(modbus, "normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut d = Daemon::start(dir.path(), &sim_config(dir.path(), http, &sim), http);
    d.wait_healthy(Duration::from_secs(20));
    wait_channels(http, Duration::from_secs(10), "all ok", |c| {
        c.values().all(|s| s.state == "ok")
    });
    drop(sim);
    wait_channels(http, TWO_POLLS, "every channel comm_fault", |c| {
        c.values()
            .all(|s| s.state == "comm_fault" && s.value.is_none())
    });
    let _sim = Simulator::start_on(modbus, "normal", None);
    wait_channels(http, Duration::from_secs(15), "reconnected", |c| {
        c.values().all(|s| s.state == "ok")
    });
}

/// A pseudo-terminal pair joined by socat: what one end writes, the other
/// reads, like the two ends of an RS-485 line.
struct PtyPair {
    child: std::process::Child,
    a: std::path::PathBuf,
    b: std::path::PathBuf,
}

impl PtyPair {
    fn new(dir: &std::path::Path) -> PtyPair {
        let (a, b) = (dir.join("line-sim"), dir.join("line-box"));
        let child = std::process::Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("socat (apt-get install socat): {e}"));
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while !(a.exists() && b.exists()) {
            assert!(std::time::Instant::now() < end, "socat made no pty pair");
            std::thread::sleep(Duration::from_millis(20));
        }
        PtyPair { child, a, b }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn rtu_over_a_pty_pair_one_silent_unit_does_not_starve_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::new(dir.path());
    let sim = Simulator::start("normal", Some(&pty.a));
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = format!(
        "{}[acquisition]\nwarm_up = \"0s\"\n\
         [[bus]]\nid = \"rs485\"\ntransport = \"rtu\"\npath = \"{}\"\nbaud = 9600\ntimeout = \"250ms\"\nretries = 1\n\
         [[device]]\nid = \"face\"\nbus = \"rs485\"\nunit = 1\n\
         [[device]]\nid = \"sump\"\nbus = \"rs485\"\nunit = 3\n\
         [[channel]]\nid = \"ch4\"\ndevice = \"face\"\nkind = \"ch4\"\nunit = \"%vol\"\ntable = \"input\"\naddress = 0\nscale = 0.01\n\
         [[channel]]\nid = \"co\"\ndevice = \"face\"\nkind = \"co\"\nunit = \"ppm\"\ntable = \"input\"\naddress = 1\npoll = \"2s\"\n\
         [[channel]]\nid = \"level\"\ndevice = \"sump\"\nkind = \"water_level\"\nunit = \"m\"\ntable = \"input\"\naddress = 0\n\
         data_type = \"u32\"\nword_order = \"little\"\nscale = 0.001\n\
         [[channel]]\nid = \"pump\"\ndevice = \"sump\"\nkind = \"generic\"\nunit = \"\"\ntable = \"discrete\"\naddress = 0\n",
        minimal_config(&dir.path().join("data"), http),
        pty.b.display()
    );
    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    wait_channels(http, Duration::from_secs(10), "all ok over RTU", |c| {
        c.values().all(|s| s.state == "ok")
    });
    sim.control("set 3 input 0 4660 1"); // 0x0001_1234 mm, low word first
    sim.control("set 1 input 0 87");
    sim.control("set 1 input 1 31");
    wait_channels(http, TWO_POLLS, "set values over RTU", |c| {
        c["level"].value == Some(70.196)
            && c["ch4"].value == Some(0.87)
            && c["co"].value == Some(31.0)
    });
    assert_eq!(channels(http)["pump"].value, Some(1.0));

    // A late reply on a serial line has no transaction id to tell it apart.
    sim.control("fault 1 slow:400");
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let c = channels(http);
        assert!(
            matches!(c["ch4"].value, None | Some(0.87)),
            "ch4 took a late reply: {:?}",
            c["ch4"]
        );
        assert!(
            matches!(c["co"].value, None | Some(31.0)),
            "co took a late reply: {:?}",
            c["co"]
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    sim.control("fault 1 silent");
    wait_channels(http, TWO_POLLS, "silent unit 1 -> comm_fault", |c| {
        state(c, "ch4") == "comm_fault"
    });
    for _ in 0..30 {
        let c = channels(http);
        assert_eq!(
            state(&c, "level"),
            "ok",
            "unit 3 starved by silent unit 1: {c:#?}"
        );
        assert_eq!(c["level"].value, Some(70.196));
        std::thread::sleep(Duration::from_millis(100));
    }
    sim.control("fault 1 none");
    wait_channels(http, Duration::from_secs(6), "unit 1 recovers", |c| {
        state(c, "ch4") == "ok"
    });
}

#[test]
fn readings_and_minute_aggregates_are_stored_faults_without_values() {
    let sim = Simulator::start("normal", None);
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = sim_config(dir.path(), http, &sim).replace(
        "warm_up = \"0s\"\n",
        "warm_up = \"0s\"\nraw_interval = \"1s\"\n",
    );
    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    wait_channels(http, Duration::from_secs(10), "all ok", |c| {
        c.values().all(|s| s.state == "ok")
    });
    sim.control("fault 1 silent");
    wait_channels(http, TWO_POLLS, "face comm_fault", |c| {
        state(c, "ch4") == "comm_fault"
    });
    std::thread::sleep(Duration::from_millis(1500));
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(15)).success(),
        "{}",
        d.log_text()
    );

    let db = rusqlite::Connection::open(dir.path().join("data/pithead.db")).unwrap();
    let q = |sql: &str| -> i64 {
        db.query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    assert!(
        q(
            "SELECT count(*) FROM readings WHERE channel = 'h2s' AND state = 'ok' AND value IS NOT NULL"
        ) >= 2
    );
    assert!(
        q(
            "SELECT count(*) FROM readings WHERE channel = 'ch4' AND state = 'comm_fault' AND value IS NULL"
        ) >= 1
    );
    assert_eq!(
        q("SELECT count(*) FROM readings WHERE state != 'ok' AND value IS NOT NULL"),
        0
    );
    // Shutdown flushes the current minute's statistics.
    assert!(q("SELECT sum(count) FROM aggregates WHERE channel = 'h2s'") >= 3);
    assert!(q("SELECT sum(faults) FROM aggregates WHERE channel = 'ch4'") >= 1);
}

#[test]
fn the_demo_runs_the_simulator_and_reads_every_channel() {
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log = std::fs::File::create(dir.path().join("demo.log")).unwrap();
    let mut child = std::process::Command::new(pithead_e2e::pithead_bin())
        .args(["demo", "--http", &http.to_string(), "--data"])
        .arg(dir.path().join("data"))
        .stderr(log)
        .spawn()
        .unwrap();
    let c = {
        let mut ok = None;
        for _ in 0..200 {
            if let Ok((200, _)) = pithead_e2e::http_get(http, "/healthz") {
                ok = Some(());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(ok.is_some(), "demo did not serve");
        wait_channels(http, Duration::from_secs(15), "demo channels ok", |c| {
            c.len() == 10 && c.values().all(|s| s.state == "ok")
        });
        channels(http)
    };
    let ch4 = c["ch4-1201-face"].value.unwrap_or_default();
    assert!(
        (0.2..0.4).contains(&ch4),
        "normal methane at the face: {ch4}"
    );
    // The console of the demo in one command: it printed a supervisor with
    // a password made for this run, and that logs in.
    let printed = std::fs::read_to_string(dir.path().join("demo.log")).unwrap();
    let line = printed
        .lines()
        .find(|l| l.contains("/console"))
        .unwrap_or_else(|| panic!("no console line: {printed}"));
    let password = line
        .split("password: ")
        .nth(1)
        .map(str::trim)
        .unwrap_or_else(|| panic!("no password: {line}"));
    assert!(
        line.contains("user: 演示主管") && password.len() >= 10,
        "{line}"
    );
    let login = |user: &str, password: &str| {
        pithead_e2e::http_request(
            http,
            "POST",
            "/api/v1/session",
            &[],
            &serde_json::json!({ "user": user, "password": password }).to_string(),
        )
        .unwrap()
    };
    let (s, b) = login("演示主管", password);
    assert_eq!(s, 200, "{b}");
    assert_eq!(login("演示主管", "0123456789abcdef").0, 401);
    // `pithead user add NAME --data DIR`, as the demo says, without a
    // configuration file.
    let add = std::process::Command::new(pithead_e2e::pithead_bin())
        .args(["user", "add", "李班长", "--data"])
        .arg(dir.path().join("data"))
        .stdin(std::process::Stdio::piped())
        .output_with_stdin("第二位主管的口令 2026\n");
    assert!(add.0.success(), "{}", add.1);
    let (s, b) = login("李班长", "第二位主管的口令 2026");
    assert_eq!(s, 200, "{b}");
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs a command with `input` on its standard input: (status, stderr).
trait WithStdin {
    fn output_with_stdin(&mut self, input: &str) -> (std::process::ExitStatus, String);
}

impl WithStdin for std::process::Command {
    fn output_with_stdin(&mut self, input: &str) -> (std::process::ExitStatus, String) {
        use std::io::Write as _;
        let mut child = self
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// How the hostile RS-485 device answers unit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hostile {
    Good,
    BadCrc,
    /// The byte count says more than is sent.
    ShortFrame,
    /// More bytes than the byte count says.
    LongFrame,
    /// The first three bytes, then nothing.
    HalfFrame,
    /// A well-formed answer from unit 2.
    WrongUnit,
    /// A well-formed answer to another function.
    WrongFunction,
    /// The request sent back.
    Echo,
    /// 64 bytes of noise.
    Noise,
    /// An exception, then a dozen more nobody asked for.
    ExceptionStorm,
    /// A well-formed answer with one register more than asked for
    /// (tokio-modbus checks that only in debug builds, with a panic).
    ExtraRegister,
    /// A well-formed answer with one register fewer.
    MissingRegister,
}

fn crc16(frame: &[u8]) -> [u8; 2] {
    let mut crc: u16 = 0xFFFF;
    for b in frame {
        crc ^= u16::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc.to_le_bytes()
}

fn with_crc(mut frame: Vec<u8>) -> Vec<u8> {
    let crc = crc16(&frame);
    frame.extend_from_slice(&crc);
    frame
}

/// A device on one end of an RS-485 line (a pty) that answers unit 3
/// properly and unit 1 as `mode` says. Runs until the line closes.
fn hostile_device(path: &std::path::Path, mode: Arc<Mutex<Hostile>>) {
    use std::io::{Read, Write};
    let mut line = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::thread::spawn(move || {
        let mut buf: Vec<u8> = Vec::new();
        let mut byte = [0u8; 256];
        let mut noise: u32 = 0x9e37_79b9;
        loop {
            let n = match line.read(&mut byte) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&byte[..n]);
            // Every request here is a read: unit, function, address, count, CRC.
            while buf.len() >= 8 {
                let req: Vec<u8> = buf.drain(..8).collect();
                if crc16(&req[..6]) != [req[6], req[7]] {
                    buf.clear(); // out of step: wait for the next request
                    break;
                }
                let (unit, function) = (req[0], req[1]);
                let count = u16::from_be_bytes([req[4], req[5]]);
                let value: u16 = if unit == 1 { 87 } else { 1234 };
                let frame = |v: u16, n: u16| {
                    let mut data = vec![u8::try_from(n * 2).unwrap_or(0)];
                    for _ in 0..n {
                        data.extend_from_slice(&v.to_be_bytes());
                    }
                    data
                };
                let data = frame(value, count);
                let good = with_crc([vec![unit, function], data.clone()].concat());
                // Every abusive answer carries a wrong value: taking one
                // for an answer would show.
                let bad = frame(4242, count);
                let m = if unit == 1 {
                    *mode
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                } else {
                    Hostile::Good
                };
                let out: Vec<u8> = match m {
                    Hostile::Good => good,
                    Hostile::BadCrc => {
                        let mut f = with_crc([vec![unit, function], bad].concat());
                        let last = f.len() - 1;
                        f[last] ^= 0x5a;
                        f
                    }
                    Hostile::ShortFrame => {
                        let mut f = vec![unit, function, bad[0] + 4];
                        f.extend_from_slice(&bad[1..]);
                        with_crc(f)
                    }
                    Hostile::LongFrame => {
                        let mut f = vec![unit, function];
                        f.extend_from_slice(&bad);
                        f.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
                        with_crc(f)
                    }
                    Hostile::HalfFrame => {
                        with_crc([vec![unit, function], bad].concat())[..3].to_vec()
                    }
                    Hostile::WrongUnit => with_crc([vec![2, function], bad].concat()),
                    Hostile::WrongFunction => with_crc([vec![unit, 3], bad].concat()),
                    Hostile::Echo => req.clone(),
                    Hostile::Noise => (0..64)
                        .map(|_| {
                            noise ^= noise << 13;
                            noise ^= noise >> 17;
                            noise ^= noise << 5;
                            noise.to_le_bytes()[0]
                        })
                        .collect(),
                    Hostile::ExceptionStorm => (0..13)
                        .flat_map(|_| with_crc(vec![unit, function | 0x80, 4]))
                        .collect(),
                    Hostile::ExtraRegister => {
                        with_crc([vec![unit, function], frame(4242, count + 1)].concat())
                    }
                    Hostile::MissingRegister => with_crc(
                        [vec![unit, function], frame(4242, count.saturating_sub(1))].concat(),
                    ),
                };
                if line.write_all(&out).is_err() {
                    return;
                }
            }
        }
    });
}

/// Item 5 of RELIABILITY.md: a hostile device on the RS-485 line. Unit 1
/// answers with a bad CRC, a short and a long frame, half a frame, the
/// wrong unit, the wrong function, an echo, noise and an exception storm,
/// each for three polls. The daemon never takes a wrong value, reports
/// unit 1's channel as a fault, keeps reading unit 3 on the same line,
/// counts the failures, never panics or hangs, and reads unit 1 again as
/// soon as it behaves.
#[test]
fn a_hostile_rtu_device_gets_faults_never_a_wrong_value_or_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::new(dir.path());
    let mode = Arc::new(Mutex::new(Hostile::Good));
    hostile_device(&pty.a, Arc::clone(&mode));
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = format!(
        "{}[acquisition]\nwarm_up = \"0s\"\n\
         [[bus]]\nid = \"rs485\"\ntransport = \"rtu\"\npath = \"{}\"\nbaud = 9600\ntimeout = \"250ms\"\nretries = 1\n\
         [[device]]\nid = \"face\"\nbus = \"rs485\"\nunit = 1\n\
         [[device]]\nid = \"sump\"\nbus = \"rs485\"\nunit = 3\n\
         [[channel]]\nid = \"ch4\"\ndevice = \"face\"\nkind = \"ch4\"\nunit = \"%vol\"\ntable = \"input\"\naddress = 0\nscale = 0.01\n\
         [[channel]]\nid = \"level\"\ndevice = \"sump\"\nkind = \"water_level\"\nunit = \"m\"\ntable = \"input\"\naddress = 0\nscale = 0.01\n",
        minimal_config(&dir.path().join("data"), http),
        pty.b.display()
    );
    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    wait_channels(http, Duration::from_secs(10), "both units read", |c| {
        c["ch4"].value == Some(0.87) && c["level"].value == Some(12.34)
    });
    let errors = |http| {
        ["timeout", "protocol", "exception", "transport"]
            .iter()
            .map(|k| {
                pithead_e2e::metric(
                    http,
                    &format!("pithead_modbus_errors_total{{bus=\"rs485\",kind=\"{k}\"}}"),
                )
            })
            .sum::<f64>()
    };
    for m in [
        Hostile::BadCrc,
        Hostile::ShortFrame,
        Hostile::LongFrame,
        Hostile::HalfFrame,
        Hostile::WrongUnit,
        Hostile::WrongFunction,
        Hostile::Echo,
        Hostile::Noise,
        Hostile::ExceptionStorm,
        Hostile::ExtraRegister,
        Hostile::MissingRegister,
    ] {
        let before = errors(http);
        *mode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = m;
        let start = std::time::Instant::now();
        let (mut level_ok, mut ch4_fault) = (false, false);
        while start.elapsed() < Duration::from_secs(3) {
            let c = channels(http);
            assert!(
                matches!(c["ch4"].value, None | Some(0.87)),
                "{m:?}: ch4 took a wrong value: {:?}",
                c["ch4"]
            );
            assert!(
                matches!(c["level"].value, None | Some(12.34)),
                "{m:?}: unit 3 took a wrong value: {:?}",
                c["level"]
            );
            level_ok |= c["level"].state == "ok";
            ch4_fault |= c["ch4"].state == "comm_fault";
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(ch4_fault, "{m:?}: unit 1 never reported as a fault");
        assert!(level_ok, "{m:?}: unit 3 starved by unit 1");
        let after = errors(http);
        assert!(after > before, "{m:?}: no failure counted");
        assert!(
            d.child.try_wait().ok().flatten().is_none(),
            "{m:?}: the daemon died:\n{}",
            d.log_text()
        );
        eprintln!("{m:?}: {} failures counted", after - before);
        *mode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Hostile::Good;
        wait_channels(http, Duration::from_secs(8), "unit 1 behaves again", |c| {
            c["ch4"].state == "ok" && c["ch4"].value == Some(0.87)
        });
    }
    assert!(
        !d.log_text().contains("panicked"),
        "a panic in the log:\n{}",
        d.log_text()
    );
}

/// Item 2 of the fail-safe issue: a device on the RS-485 line that answers
/// late. Unit 1 answers every request at `factor` × the timeout (1.5, 2 and
/// 2.5), unit 3 at once; every request reads registers holding values of
/// its own (and the two requests of unit 1 differ in size), so a late
/// reply taken for another request's answer would show as a foreign
/// value. None may ever show; late replies are counted as errors, the
/// daemon keeps reading unit 3 and never panics.
#[test]
fn late_rtu_replies_never_become_another_requests_value() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::new(dir.path());
    let timeout = Duration::from_millis(200);
    let factor = Arc::new(Mutex::new(0.0_f64));
    // The register at `addr` of `unit` holds unit × 1000 + addr.
    let value = |unit: u8, addr: u16| u16::from(unit) * 1000 + addr;
    {
        let line = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&pty.a)
            .unwrap_or_else(|e| panic!("{}: {e}", pty.a.display()));
        let writer = Arc::new(Mutex::new(line.try_clone().unwrap()));
        let mut line = line;
        let factor = Arc::clone(&factor);
        std::thread::spawn(move || {
            let mut buf: Vec<u8> = Vec::new();
            let mut byte = [0u8; 256];
            loop {
                let n = match line.read(&mut byte) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&byte[..n]);
                while buf.len() >= 8 {
                    let req: Vec<u8> = buf.drain(..8).collect();
                    if crc16(&req[..6]) != [req[6], req[7]] {
                        buf.clear();
                        break;
                    }
                    let (unit, function) = (req[0], req[1]);
                    let start = u16::from_be_bytes([req[2], req[3]]);
                    let count = u16::from_be_bytes([req[4], req[5]]);
                    let mut frame = vec![unit, function, u8::try_from(count * 2).unwrap_or(0)];
                    for i in 0..count {
                        frame.extend_from_slice(&value(unit, start + i).to_be_bytes());
                    }
                    let frame = with_crc(frame);
                    let delay = if unit == 1 {
                        timeout.mul_f64(
                            *factor
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner),
                        )
                    } else {
                        Duration::ZERO
                    };
                    let w = Arc::clone(&writer);
                    std::thread::spawn(move || {
                        std::thread::sleep(delay);
                        let _ = w
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .write_all(&frame);
                    });
                }
            }
        });
    }
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let chan = |id: &str, dev: &str, addr: u16, extra: &str| {
        format!(
            "[[channel]]\nid = \"{id}\"\ndevice = \"{dev}\"\nkind = \"generic\"\nunit = \"-\"\ntable = \"input\"\naddress = {addr}\n{extra}"
        )
    };
    let cfg = format!(
        "{}[acquisition]\nwarm_up = \"0s\"\ncoalesce = false\n\
         [[bus]]\nid = \"rs485\"\ntransport = \"rtu\"\npath = \"{}\"\nbaud = 19200\ntimeout = \"200ms\"\nretries = 1\n\
         [[device]]\nid = \"slow\"\nbus = \"rs485\"\nunit = 1\n\
         [[device]]\nid = \"quick\"\nbus = \"rs485\"\nunit = 3\n{}{}{}{}",
        minimal_config(&dir.path().join("data"), http),
        pty.b.display(),
        chan("a", "slow", 0, ""),
        // Two registers: a different reply size from `a`'s.
        chan("b", "slow", 10, "data_type = \"u32\"\n"),
        chan("c", "quick", 0, ""),
        chan("d", "quick", 20, ""),
    );
    // The values each channel may show: its own, or none.
    let own: BTreeMap<&str, f64> = BTreeMap::from([
        ("a", f64::from(value(1, 0))),
        (
            "b",
            f64::from(u32::from(value(1, 10)) << 16 | u32::from(value(1, 11))),
        ),
        ("c", f64::from(value(3, 0))),
        ("d", f64::from(value(3, 20))),
    ]);
    let mut d = Daemon::start(dir.path(), &cfg, http);
    d.wait_healthy(Duration::from_secs(20));
    wait_channels(http, Duration::from_secs(10), "every unit read", |c| {
        own.iter().all(|(id, v)| c[*id].value == Some(*v))
    });
    let errors = || {
        ["timeout", "protocol"]
            .iter()
            .map(|k| {
                pithead_e2e::metric(
                    http,
                    &format!("pithead_modbus_errors_total{{bus=\"rs485\",kind=\"{k}\"}}"),
                )
            })
            .sum::<f64>()
    };
    for f in [1.5, 2.0, 2.5] {
        *factor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = f;
        let before = errors();
        let start = std::time::Instant::now();
        let (mut slow_fault, mut quick_ok) = (false, false);
        while start.elapsed() < Duration::from_secs(5) {
            let c = channels(http);
            for (id, v) in &own {
                assert!(
                    c[*id].value.is_none_or(|got| got == *v),
                    "{f}× the timeout: {id} shows {:?}, not its own {v}",
                    c[*id]
                );
            }
            slow_fault |= c["a"].state == "comm_fault" || c["b"].state == "comm_fault";
            quick_ok |= c["c"].state == "ok" && c["d"].state == "ok";
            std::thread::sleep(Duration::from_millis(25));
        }
        assert!(slow_fault, "{f}×: the late unit never showed as a fault");
        assert!(quick_ok, "{f}×: unit 3 starved by the late one");
        assert!(errors() > before, "{f}×: nothing counted");
        eprintln!("{f}× the timeout: {} errors counted", errors() - before);
    }
    assert!(
        d.child.try_wait().ok().flatten().is_none() && !d.log_text().contains("panicked"),
        "{}",
        d.log_text()
    );
}
