//! `pithead validate`, `configfile` and `--version`, run as the real binary.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of the tests: a failed unwrap is a failed test"
)]

use std::path::Path;
use std::process::{Command, Output};

use pithead_e2e::pithead_bin;

fn pithead(args: &[&str]) -> Output {
    Command::new(pithead_bin())
        .args(args)
        .env_remove("PITHEAD_CONFIG")
        .output()
        .unwrap_or_else(|e| panic!("run pithead: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn validate(file: &Path) -> (Option<i32>, String, String) {
    let out = pithead(&["validate", "--config", &file.display().to_string()]);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

fn repo_file(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn version_is_printed() {
    let out = pithead(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("pithead {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn configfile_is_the_shipped_file() {
    let out = pithead(&["configfile"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), repo_file("config/pithead.toml"));
}

#[test]
fn shipped_template_refuses_placeholder_ids_then_passes_once_set() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pithead.toml");
    // The box under test has no relay board: simulated outputs.
    let template = text(&pithead(&["configfile"]).stdout)
        .replacen("backend = \"gpio\"", "backend = \"sim\"", 1)
        .replacen(
            "device = \"/dev/watchdog\"",
            "# device = \"/dev/watchdog\"",
            1,
        );
    std::fs::write(&file, &template).unwrap();
    let (code, _, err) = validate(&file);
    assert_eq!(code, Some(78), "{err}");
    let f = file.display();
    assert!(
        err.contains(&format!(
            "{f}:18:1: key `station.county`: still has the placeholder"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{f}:19:1: key `station.id`")),
        "{err}"
    );
    assert!(
        err.contains("hint: set it to the id the county union assigned"),
        "{err}"
    );
    assert!(err.contains("2 problems"), "{err}");

    let edited = template
        .replacen("county = \"change-me\"", "county = \"xx-county\"", 1)
        .replacen("id = \"change-me\"", "id = \"mine3-shaft1\"", 1)
        .replacen(
            "/var/lib/pithead",
            &dir.path().join("data").display().to_string(),
            1,
        );
    std::fs::write(&file, edited).unwrap();
    let (code, out, err) = validate(&file);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(": ok (station xx-county/mine3-shaft1"),
        "{out}"
    );
}

#[test]
fn every_problem_is_reported_with_file_line_column_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &file,
        format!(
            r#"[station]
county = "c"
id = "s"
name = "n"
[outputs]
backend = "sim"
[storage]
data_dir = "{}"

[roster]
shift_length = "8 hourz"

[mqtt]
keep_alive = "30s"
colour = "red"
"#,
            data.display()
        ),
    )
    .unwrap();
    let (code, out, err) = validate(&file);
    assert_eq!(code, Some(78), "{out}{err}");
    let f = file.display();
    assert!(
        err.contains(&format!("{f}:11:16: key `roster.shift_length`")),
        "{err}"
    );
    assert!(err.contains("hint: write durations"), "{err}");
    assert!(
        err.contains(&format!(
            "{f}:15:1: key `mqtt.colour`: unknown field `colour`"
        )),
        "{err}"
    );
    assert!(err.contains("2 problems"), "{err}");
}

#[test]
fn semantic_problems_point_at_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        format!(
            r#"[station]
county = "c"
id = "s"
name = "n"
[outputs]
backend = "sim"
[storage]
data_dir = "{}"
[http]
listen = "localhost:80"
[[bus]]
id = "line"
transport = "rtu"
path = "/dev/ttyUSB0"
[[device]]
id = "gas"
bus = "line"
unit = 3
[[channel]]
id = "ch4"
device = "gas"
kind = "ch4"
unit = "%vol"
table = "input"
address = 0
data_type = "f32"
[[channel.level]]
name = "alarm"
threshold = 1.5
[[channel.level]]
name = "power_cut"
threshold = 1.0
[[channel]]
id = "co"
device = "gas"
kind = "co"
unit = "ppm"
table = "input"
address = 1
"#,
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let (code, _, err) = validate(&file);
    assert_eq!(code, Some(78), "{err}");
    let f = file.display();
    assert!(
        err.contains(&format!("{f}:10:1: key `http.listen`")),
        "{err}"
    );
    assert!(err.contains(&format!("{f}:32:1: key `channel[0].level[1].threshold`: power_cut level 1 is below the milder alarm level 1.5")), "{err}");
    assert!(
        err.contains(&format!(
            "{f}:39:1: key `channel[1].address`: registers 1..=1 overlap channel `ch4`"
        )),
        "{err}"
    );
}

#[test]
fn syntax_error_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(&file, "[station]\ncounty = \"c\nid = 1\n").unwrap();
    let (code, _, err) = validate(&file);
    assert_eq!(code, Some(78));
    assert!(err.contains(&format!("{}:2:", file.display())), "{err}");
    assert!(err.contains("key `(syntax)`"), "{err}");

    let missing = dir.path().join("nope.toml");
    let (code, _, err) = validate(&missing);
    assert_eq!(code, Some(78));
    assert!(
        err.contains(&format!("{}: cannot read configuration", missing.display())),
        "{err}"
    );
}

#[test]
fn run_refuses_a_bad_file_with_the_same_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[stationn]\n").unwrap();
    let out = pithead(&["run", "--config", &file.display().to_string()]);
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out.stderr).contains("unknown section `stationn`"));
}

/// Issue 15: a configuration that would expose the station is refused
/// with the key to change: plain HTTP beyond the box, credentials sent to
/// the broker in clear, and secret files others may read.
#[test]
fn settings_that_expose_the_station_are_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "a-token-of-sufficient-length-1234").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let password = dir.path().join("mqtt-password");
    std::fs::write(&password, "hunter2").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file = dir.path().join("open.toml");
    std::fs::write(
        &file,
        format!(
            "[station]\ncounty = \"c\"\nid = \"s\"\nname = \"n\"\n\
             [outputs]\nbackend = \"sim\"\n\
             [storage]\ndata_dir = \"{}\"\n\
             [http]\nlisten = \"0.0.0.0:8080\"\napi_token_file = \"{}\"\n\
             [mqtt]\nenabled = true\nurl = \"mqtt://county.example:1883\"\nusername = \"s\"\npassword_file = \"{}\"\n",
            dir.path().join("data").display(),
            token.display(),
            password.display()
        ),
    )
    .unwrap();
    let (code, _, err) = validate(&file);
    assert_eq!(code, Some(78), "{err}");
    let f = file.display();
    assert!(
        err.contains(&format!("{f}:10:1: key `http.listen`"))
            && err.contains("plain HTTP beyond this box")
            && err.contains("pithead tls self-signed"),
        "{err}"
    );
    // On every address, a request naming another host is refused: the
    // names people reach the box by must be given.
    assert!(err.contains("key `http.names`"), "{err}");
    assert!(
        err.contains(&format!("{f}:11:1: key `http.api_token_file`"))
            && err.contains("readable by everyone (mode 0644)")
            && err.contains("chmod 0640"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{f}:16:1: key `mqtt.password_file`")) && err.contains("mqtts://"),
        "{err}"
    );

    // Said on purpose, plain HTTP on the LAN is allowed (and warned of at
    // start); the secrets still have to be kept.
    let text = std::fs::read_to_string(&file).unwrap_or_default().replace(
        "[http]\n",
        "[http]\nallow_plain_http = true\nnames = [\"pithead-1.local\"]\n",
    );
    std::fs::write(&file, text).unwrap();
    let (code, _, err) = validate(&file);
    assert_eq!(code, Some(78), "{err}");
    assert!(!err.contains("http.listen"), "{err}");
    assert!(err.contains("http.api_token_file"), "{err}");
}
