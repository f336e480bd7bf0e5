//! The uplink over TLS to a real Mosquitto, with certificates made by the
//! test (rcgen): a station with the county's CA and its own client
//! certificate gets through; one that trusts another CA, and one without a
//! client certificate, are refused, say why in the log, and keep their
//! records queued.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of the tests: a failed unwrap is a failed test"
)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use pithead_e2e::{Daemon, Mosquitto, Subscriber, check_in, free_port, metric, uplink_config};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    CertifiedIssuer::self_signed(p, key).unwrap()
}

/// A certificate for `name` signed by `issuer`: (cert PEM, key PEM).
fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, name: &str) -> (String, String) {
    let mut p = CertificateParams::new(vec![name.to_owned()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Writes a PEM file (readable by its owner only: keys are secrets).
fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    pithead_e2e::write_secret(&p, text);
    p.display().to_string()
}

struct Station {
    daemon: Daemon,
    http: SocketAddr,
    _dir: tempfile::TempDir,
}

fn station(url: &str, tls: &str) -> Station {
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cfg = uplink_config(dir.path(), http, url, 5);
    cfg.push_str(tls);
    let mut daemon = Daemon::start(dir.path(), &cfg, http);
    daemon.wait_healthy(Duration::from_secs(20));
    check_in(http, 1);
    Station {
        daemon,
        http,
        _dir: dir,
    }
}

#[test]
fn tls_with_the_right_ca_and_client_certificate_only() {
    let county = ca("县总工会 MQTT CA");
    let other = ca("someone else's CA");
    let pki = tempfile::tempdir().unwrap();
    let (server_cert, server_key) = leaf(&county, "localhost");
    let (client_cert, client_key) = leaf(&county, "pithead-test-county-test-station");
    let ca_file = write(pki.path(), "ca.pem", &county.pem());
    let other_ca = write(pki.path(), "other-ca.pem", &other.pem());
    let server_cert = write(pki.path(), "server.pem", &server_cert);
    let server_key = write(pki.path(), "server.key", &server_key);
    let client_cert = write(pki.path(), "client.pem", &client_cert);
    let client_key = write(pki.path(), "client.key", &client_key);

    // A plain listener for the test's subscriber, a TLS one requiring a
    // client certificate for the stations.
    let tls_port = free_port();
    let broker = Mosquitto::start_with(
        free_port(),
        false,
        &format!(
            "listener {tls_port} 127.0.0.1\ncafile {ca_file}\ncertfile {server_cert}\nkeyfile {server_key}\n\
             require_certificate true\n"
        ),
    );
    let sub = Subscriber::start(broker.port);
    let url = format!("mqtts://localhost:{tls_port}");

    let good = station(
        &url,
        &format!(
            "ca_file = \"{ca_file}\"\nclient_cert = \"{client_cert}\"\nclient_key = \"{client_key}\"\n"
        ),
    );
    let wrong_ca = station(
        &url,
        &format!(
            "ca_file = \"{other_ca}\"\nclient_cert = \"{client_cert}\"\nclient_key = \"{client_key}\"\n"
        ),
    );
    let no_client_cert = station(&url, &format!("ca_file = \"{ca_file}\"\n"));

    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let arrived = sub
            .all()
            .iter()
            .any(|m| m.topic.ends_with("/checkin") && m.payload.contains("\"badge\":\"0001\""));
        if arrived && metric(good.http, "pithead_uplink_connected") == 1.0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "the good station's check-in never arrived:\n{}",
            good.daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for (s, why) in [
        (&wrong_ca, "invalid peer certificate"),
        (&no_client_cert, "CertificateRequired"),
    ] {
        let end = Instant::now() + Duration::from_secs(20);
        while metric(s.http, "pithead_uplink_failures_total") < 2.0 {
            assert!(
                Instant::now() < end,
                "no failed attempts:\n{}",
                s.daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(metric(s.http, "pithead_uplink_connected"), 0.0);
        assert_eq!(metric(s.http, "pithead_uplink_acknowledged_total"), 0.0);
        let log = s.daemon.log_text();
        assert!(
            log.contains("uplink not reachable") && log.contains(why),
            "{log}"
        );
    }
    // Only the good station's records reached the county: one check-in,
    // one connection's status.
    let checkins = sub
        .all()
        .iter()
        .filter(|m| m.topic.ends_with("/checkin"))
        .count();
    assert_eq!(checkins, 1);
}
