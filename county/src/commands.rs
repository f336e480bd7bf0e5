//! The county's commands to stations go out on a connection of their own
//! (client id `{mqtt.client_id}-cmd`), QoS 1, never retained.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Connection options for the county's broker under `client_id`: its
/// address, keep-alive and account (the password from its file).
pub fn options(cfg: &Config, client_id: String) -> MqttOptions {
    let (host, port, _) = pithead_core::protocol::parse_url(&cfg.mqtt.url).unwrap_or_default();
    let mut opts = MqttOptions::new(client_id, host, port);
    opts.set_keep_alive(cfg.mqtt.keep_alive);
    if let Some(user) = &cfg.mqtt.username {
        let password = cfg
            .mqtt
            .password_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|p| p.trim_end_matches(['\r', '\n']).to_owned())
            .unwrap_or_default();
        opts.set_credentials(user.clone(), password);
    }
    opts
}

/// A client whose event loop runs until `shutdown`, reconnecting by
/// itself; what is published while the broker is away waits in it.
pub fn publisher(cfg: &Config, shutdown: CancellationToken) -> AsyncClient {
    let mut opts = options(cfg, format!("{}-cmd", cfg.mqtt.client_id));
    opts.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut events) = AsyncClient::new(opts, 256);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(250);
        loop {
            let ev = tokio::select! {
                () = shutdown.cancelled() => return,
                ev = events.poll() => ev,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => backoff = Duration::from_millis(250),
                Ok(Event::Incoming(Packet::PubAck(a))) => {
                    tracing::debug!(pkid = a.pkid, "command taken by the broker")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "command connection lost");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    });
    client
}

/// The signing key in `file` (base64 of its 32 secret bytes), which only
/// its owner may read.
pub fn signing_key(file: &Path) -> Result<SigningKey, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(file).map_err(|e| format!("{}: {e}", file.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{} may be read by others (mode {:o}); chmod 600 it",
            file.display(),
            meta.permissions().mode() & 0o777
        ));
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("{}: not base64: {e}", file.display()))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| format!("{}: an Ed25519 key has 32 bytes", file.display()))?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// A new key pair: the secret written to `dir/county-signing.key` (0600),
/// the public key to `dir/county-signing.pub`; the public key's text is
/// returned, for every station's `[mqtt] county_public_key`.
pub fn generate(dir: &Path) -> Result<String, String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut secret = [0u8; 32];
    secret[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    secret[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    let key = SigningKey::from_bytes(&secret);
    let b64 = base64::engine::general_purpose::STANDARD;
    let file = dir.join("county-signing.key");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .map_err(|e| {
            format!(
                "{}: {e} (an existing key is never overwritten)",
                file.display()
            )
        })?;
    writeln!(f, "{}", b64.encode(key.to_bytes()))
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let public = b64.encode(key.verifying_key().to_bytes());
    let pubfile = dir.join("county-signing.pub");
    std::fs::write(&pubfile, format!("{public}\n"))
        .map_err(|e| format!("{}: {e}", pubfile.display()))?;
    Ok(public)
}

/// `payload` for `topic` as it is published: signed when the county has a
/// key (`pithead_core::protocol::Signed`), else as it is.
pub fn seal(key: Option<&SigningKey>, topic: &str, payload: Vec<u8>) -> Vec<u8> {
    let Some(key) = key else { return payload };
    let b64 = base64::engine::general_purpose::STANDARD;
    let sig = key.sign(&pithead_core::protocol::signed_bytes(topic, &payload));
    serde_json::to_vec(&pithead_core::protocol::Signed {
        schema: pithead_core::protocol::SCHEMA.to_owned(),
        signed: b64.encode(&payload),
        sig: b64.encode(sig.to_bytes()),
    })
    .unwrap_or(payload)
}
