//! On the box: the systemd units as systemd itself judges them, the
//! watchdog as the daemon feeds it, and the Debian package installed into a
//! scratch root with dpkg, its maintainer scripts run, its configuration
//! validated there, kept across a reinstall and on removal.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of the tests: a failed unwrap is a failed test"
)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pithead_e2e::{Daemon, county_bin, free_port, minimal_config, pithead_bin};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| panic!("no repository root"))
        .to_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (tests/run-all installs what is missing)"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The unit with the binary's path made real, so verify can check it.
fn unit_copy(dir: &Path, name: &str) -> PathBuf {
    let src = std::fs::read_to_string(repo().join("systemd").join(name)).unwrap();
    let text = src.replace("/usr/bin/pithead", &pithead_bin().display().to_string());
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn systemd_verifies_the_units_and_rates_the_service_at_most_1_5() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["pithead.service", "pithead-kiosk.service"] {
        let unit = unit_copy(dir.path(), name);
        let out = run(Command::new("systemd-analyze").arg("verify").arg(&unit));
        assert!(
            out.status.success() && text(&out).trim().is_empty(),
            "{name}: {}",
            text(&out)
        );
    }
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit_copy(dir.path(), "pithead.service")));
    let report = text(&out);
    let score: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for pithead.service:")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    eprintln!("systemd-analyze security: exposure {score}");
    assert!(
        score <= 1.5,
        "exposure {score} > 1.5 (issue 7 target)\n{report}"
    );
    // What the hardening must not take away: the devices and groups the
    // outputs and RS-485 need, and the watchdog.
    let unit = std::fs::read_to_string(repo().join("systemd/pithead.service")).unwrap();
    for line in [
        "Type=notify",
        "SupplementaryGroups=gpio dialout input",
        "DeviceAllow=char-input rw",
        "DeviceAllow=char-gpiochip rw",
        "DeviceAllow=char-ttyAMA rw",
        "DeviceAllow=char-ttyUSB rw",
        "DeviceAllow=char-watchdog rw",
        "DeviceAllow=/dev/watchdog rw",
        "DeviceAllow=char-ttyACM rw",
        "ExecStartPre=/usr/bin/pithead validate --config /etc/pithead/pithead.toml",
        "ExecStart=/usr/bin/pithead run --config /etc/pithead/pithead.toml",
        "ExecStopPost=/usr/bin/pithead outputs safe --config /etc/pithead/pithead.toml",
        "Restart=always",
        "OOMScoreAdjust=-900",
        "MemoryHigh=128M",
        "MemoryMax=256M",
        "StateDirectory=pithead",
        "ConfigurationDirectory=pithead",
        "CapabilityBoundingSet=",
        "UMask=0077",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing `{line}`");
    }
}

/// The watchdog interval the unit sets, in microseconds.
fn unit_watchdog_usec() -> u64 {
    let unit = std::fs::read_to_string(repo().join("systemd/pithead.service")).unwrap();
    let v = unit
        .lines()
        .find_map(|l| l.strip_prefix("WatchdogSec="))
        .unwrap_or_else(|| panic!("no WatchdogSec"));
    let secs: u64 = v
        .trim_end_matches('s')
        .parse()
        .unwrap_or_else(|e| panic!("WatchdogSec={v}: {e}"));
    secs * 1_000_000
}

#[test]
fn the_daemon_feeds_the_units_watchdog_well_within_its_interval() {
    let usec = unit_watchdog_usec();
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let d = Daemon::start_with_env(
        dir.path(),
        &minimal_config(&dir.path().join("data"), http),
        http,
        &[
            ("NOTIFY_SOCKET", &sock_path.display().to_string()),
            ("WATCHDOG_USEC", &usec.to_string()),
        ],
    );
    let mut buf = [0u8; 512];
    let mut feeds = Vec::new();
    let start = Instant::now();
    while feeds.len() < 4 {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no watchdog feed: {e}\n{}", d.log_text()));
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "WATCHDOG=1")
        {
            feeds.push(Instant::now());
        }
        assert!(start.elapsed() < Duration::from_secs(60), "too few feeds");
    }
    let worst = feeds
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    eprintln!(
        "WatchdogSec {} s: fed every {worst:?} at worst",
        usec / 1_000_000
    );
    assert!(
        worst < Duration::from_micros(usec / 2),
        "fed every {worst:?}, WatchdogSec is {usec} µs"
    );
    d.signal(libc::SIGTERM);
}

/// `dpkg --root` into `root`, scripts run outside a chroot with DPKG_ROOT
/// set (our scripts then touch only files under it).
fn dpkg(root: &Path, args: &[&str]) -> Output {
    let out = run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-not-root",
            "--force-confold",
            "--log=/dev/null",
        ])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive"));
    assert!(out.status.success(), "dpkg {args:?}:\n{}", text(&out));
    out
}

#[test]
fn the_package_installs_into_a_scratch_root_keeps_an_edited_config_and_validates() {
    let work = tempfile::tempdir().unwrap();
    let out = run(Command::new(repo().join("cross/package"))
        .arg("x86_64-unknown-linux-gnu")
        .env("PITHEAD_BIN", pithead_bin())
        .env("DEB_OUT", work.path())
        .env("DEB_FAST", "1"));
    assert!(out.status.success(), "{}", text(&out));
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(deb.ends_with("_amd64.deb"), "{deb}");

    let contents = text(&run(Command::new("dpkg-deb").args(["--contents", &deb])));
    for path in [
        "./usr/bin/pithead",
        "./usr/lib/systemd/system/pithead.service",
        "./usr/lib/systemd/user/pithead-kiosk.service",
        "./usr/lib/sysusers.d/pithead.conf",
        "./usr/lib/tmpfiles.d/pithead.conf",
        "./usr/lib/udev/rules.d/60-pithead.rules",
        "./etc/pithead/pithead.toml",
        "./usr/share/doc/pithead/presets/cn-coal.toml",
        "./usr/share/doc/pithead/presets/us-msha.toml",
        "./usr/share/doc/pithead/README.md",
    ] {
        assert!(
            contents.lines().any(|l| l.ends_with(path)),
            "{path} missing:\n{contents}"
        );
    }
    let conffiles = text(&run(Command::new("dpkg-deb").args([
        "--info",
        &deb,
        "conffiles",
    ])));
    assert_eq!(conffiles.trim(), "/etc/pithead/pithead.toml");
    let depends = text(&run(
        Command::new("dpkg-deb").args(["--field", &deb, "Depends"])
    ));
    assert!(depends.starts_with("libc6 (>= 2."), "{depends}");

    // A scratch root with an empty dpkg database.
    let root = work.path().join("root");
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    // A Raspberry Pi OS boot partition.
    let boot = root.join("boot/firmware/config.txt");
    std::fs::create_dir_all(root.join("boot/firmware")).unwrap();
    std::fs::write(&boot, "dtparam=audio=on\n[pi4]\narm_boost=1\n").unwrap();
    dpkg(&root, &["-i", &deb]);
    // A released GPIO line returns to an input, under [all] whatever
    // section the file ended in.
    let txt = std::fs::read_to_string(&boot).unwrap_or_default();
    assert!(
        txt.ends_with("[all]\ndtparam=strict_gpiod\n") && txt.starts_with("dtparam=audio=on\n"),
        "{txt}"
    );

    // postinst: the user in gpio and dialout, the data directory, the unit
    // enabled; nothing of this on the machine running the test.
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap_or_default();
    assert!(
        passwd.lines().any(|l| l.starts_with("pithead:")),
        "{passwd}"
    );
    for g in ["gpio", "dialout"] {
        assert!(
            group
                .lines()
                .any(|l| l.starts_with(&format!("{g}:")) && l.ends_with("pithead")),
            "{g} in:\n{group}"
        );
    }
    let data = root.join("var/lib/pithead");
    let mode = std::fs::metadata(&data)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or_else(|e| panic!("{}: {e}", data.display()));
    assert_eq!(mode, 0o750);
    assert!(
        root.join("etc/systemd/system/multi-user.target.wants/pithead.service")
            .symlink_metadata()
            .is_ok(),
        "the unit is not enabled"
    );

    // The shipped configuration is refused until its ids are set.
    let bin = root.join("usr/bin/pithead");
    let conf = root.join("etc/pithead/pithead.toml");
    let out = run(Command::new(&bin)
        .arg("validate")
        .arg("--config")
        .arg(&conf));
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(text(&out).contains("placeholder"), "{}", text(&out));

    // The electrician edits it; it validates there.
    let edited = std::fs::read_to_string(&conf)
        .unwrap()
        .replacen("county = \"change-me\"", "county = \"xx-county\"", 1)
        .replacen("id = \"change-me\"", "id = \"mine3-shaft1\"", 1)
        .replacen(
            "data_dir = \"/var/lib/pithead\"",
            &format!("data_dir = \"{}\"", data.display()),
            1,
        )
        // No GPIO chip or watchdog on the test machine.
        .replacen("backend = \"gpio\"", "backend = \"sim\"", 1)
        .replacen(
            "device = \"/dev/watchdog\"",
            "# device = \"/dev/watchdog\"",
            1,
        );
    std::fs::write(&conf, &edited).unwrap();
    let out = run(Command::new(&bin)
        .arg("validate")
        .arg("--config")
        .arg(&conf));
    assert!(out.status.success(), "{}", text(&out));

    // Reinstalling (an upgrade to the same version) keeps the edited file,
    // and adds strict_gpiod no second time.
    dpkg(&root, &["-i", &deb]);
    assert_eq!(std::fs::read_to_string(&conf).unwrap_or_default(), edited);
    assert_eq!(std::fs::read_to_string(&boot).unwrap_or_default(), txt);
    // Removing keeps the configuration; purging removes it but never the
    // station's records.
    std::fs::write(data.join("pithead.db"), "records").unwrap();
    dpkg(&root, &["-r", "pithead"]);
    assert!(!bin.exists() && conf.exists());
    let out = dpkg(&root, &["--purge", "pithead"]);
    assert!(!conf.exists(), "{}", text(&out));
    assert!(
        data.join("pithead.db").exists(),
        "purge deleted the records"
    );
}

#[test]
fn the_county_unit_verifies_and_its_package_installs_enabled_and_purges_clean() {
    let work = tempfile::tempdir().unwrap();
    // The unit, as systemd judges it.
    let unit = std::fs::read_to_string(repo().join("systemd/pithead-county.service"))
        .unwrap()
        .replace(
            "/usr/bin/pithead-county",
            &county_bin().display().to_string(),
        );
    let unit_file = work.path().join("pithead-county.service");
    std::fs::write(&unit_file, unit).unwrap();
    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_file));
    assert!(
        out.status.success() && text(&out).trim().is_empty(),
        "{}",
        text(&out)
    );
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit_file));
    let report = text(&out);
    let score: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for pithead-county.service:")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    eprintln!("systemd-analyze security pithead-county: exposure {score}");
    assert!(score <= 1.5, "exposure {score} > 1.5\n{report}");

    let out = run(Command::new(repo().join("cross/package-county"))
        .arg("x86_64-unknown-linux-gnu")
        .env("PITHEAD_COUNTY_BIN", county_bin())
        .env("DEB_OUT", work.path())
        .env("DEB_FAST", "1"));
    assert!(out.status.success(), "{}", text(&out));
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        deb.ends_with("pithead-county_0.1.0-1_amd64.deb") || deb.ends_with("_amd64.deb"),
        "{deb}"
    );
    let contents = text(&run(Command::new("dpkg-deb").args(["--contents", &deb])));
    for path in [
        "./usr/bin/pithead-county",
        "./usr/lib/systemd/system/pithead-county.service",
        "./usr/lib/sysusers.d/pithead-county.conf",
        "./etc/pithead-county/county.toml",
        "./usr/share/doc/pithead-county/COUNTY.md",
        "./usr/share/doc/pithead-county/migrations/0001_messages.sql",
    ] {
        assert!(
            contents.lines().any(|l| l.ends_with(path)),
            "{path} missing:\n{contents}"
        );
    }
    let conffiles = text(&run(Command::new("dpkg-deb").args([
        "--info",
        &deb,
        "conffiles",
    ])));
    assert_eq!(conffiles.trim(), "/etc/pithead-county/county.toml");

    let root = work.path().join("root");
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    dpkg(&root, &["-i", &deb]);
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    assert!(
        passwd.lines().any(|l| l.starts_with("pithead-county:")),
        "{passwd}"
    );
    assert!(
        root.join("etc/systemd/system/multi-user.target.wants/pithead-county.service")
            .symlink_metadata()
            .is_ok(),
        "the unit is not enabled"
    );
    // The shipped configuration is valid as it stands; an edit is kept
    // across a reinstall; a purge removes the directory, key and all.
    let bin = root.join("usr/bin/pithead-county");
    let conf = root.join("etc/pithead-county/county.toml");
    let out = run(Command::new(&bin)
        .arg("validate")
        .arg("--config")
        .arg(&conf));
    assert!(out.status.success(), "{}", text(&out));
    let edited = std::fs::read_to_string(&conf).unwrap().replacen(
        "client_id = \"pithead-county-1\"",
        "client_id = \"county-a\"",
        1,
    );
    std::fs::write(&conf, &edited).unwrap();
    let out = run(Command::new(&bin)
        .args(["keys", "generate", "--out"])
        .arg(root.join("etc/pithead-county")));
    assert!(out.status.success(), "{}", text(&out));
    dpkg(&root, &["-i", &deb]);
    assert_eq!(std::fs::read_to_string(&conf).unwrap_or_default(), edited);
    dpkg(&root, &["-r", "pithead-county"]);
    assert!(!bin.exists() && conf.exists());
    let out = dpkg(&root, &["--purge", "pithead-county"]);
    assert!(
        text(&out).contains("signing key") && !root.join("etc/pithead-county").exists(),
        "{}",
        text(&out)
    );
}
