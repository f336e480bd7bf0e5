//! TLS configurations, built by Pithead itself so that a bad file or a
//! broken system trust store is an error with a reason — at `validate` and
//! at start — never a panic (rumqttc's default configuration `expect`s the
//! platform's certificates, and a panic aborts the daemon in a loop).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // ring, not aws-lc: pure Rust and C that cross-compiles for the Pi.
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not PEM certificates: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", file.display()));
    }
    Ok(certs)
}

fn key(file: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{}: no private key in it (PEM): {e}", file.display()))
}

/// The client configuration for `mqtts://`: the CA of `ca_file`, or the
/// system's trust store; the client certificate and key when given.
pub fn mqtt_client(
    ca_file: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(ca) => {
            for c in certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                // A broken certificate among many is skipped, as browsers do.
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_owned(), ToString::to_string);
                return Err(format!(
                    "the system's trust store has no usable certificate ({why}): set mqtt.ca_file to the county's CA, or install ca-certificates"
                ));
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    match client {
        Some((c, k)) => builder
            .with_client_auth_cert(certs(c)?, key(k)?)
            .map_err(|e| format!("the client certificate and key do not go together: {e}")),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The server configuration for the console over HTTPS.
pub fn http_server(cert: &Path, key_file: &Path) -> Result<rustls::ServerConfig, String> {
    let mut c = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs(cert)?, key(key_file)?)
        .map_err(|e| {
            format!(
                "{} and {} do not go together: {e}",
                cert.display(),
                key_file.display()
            )
        })?;
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(c)
}

/// The SHA-256 fingerprint of the first certificate in `cert` (PEM), as
/// browsers show it: `AB:CD:…`.
pub fn fingerprint(cert: &Path) -> Result<String, String> {
    use sha2::Digest as _;
    let first = certs(cert)?.into_iter().next().ok_or("no certificate")?;
    Ok(sha2::Sha256::digest(first.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// A new key and a self-signed certificate for `names` (DNS names and IP
/// addresses), valid ten years: (certificate PEM, key PEM).
pub fn self_signed(names: &[String]) -> Result<(String, String), String> {
    let mut params =
        rcgen::CertificateParams::new(names.to_vec()).map_err(|e| format!("names: {e}"))?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Pithead station");
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + std::time::Duration::from_secs(10 * 365 * 24 * 3600)).into();
    let key = rcgen::KeyPair::generate().map_err(|e| format!("key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("certificate: {e}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_pair_serves_and_has_a_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(&["pithead.local".into(), "192.168.1.20".into()]).unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        assert!(http_server(&c, &k).is_ok());
        let f = fingerprint(&c).unwrap_or_default();
        assert_eq!(f.len(), 32 * 3 - 1, "{f}");
        // Not a certificate: a reason, not a panic.
        std::fs::write(&c, "garbage").unwrap();
        let e = http_server(&c, &k).err().unwrap_or_default();
        assert!(e.contains("no certificate") || e.contains("not PEM"), "{e}");
    }
}
