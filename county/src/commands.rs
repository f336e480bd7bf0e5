//! The county's commands to stations go out on a connection of their own
//! (client id `{mqtt.client_id}-cmd`), QoS 1, never retained.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// A client whose event loop runs until `shutdown`, reconnecting by
/// itself; what is published while the broker is away waits in it.
pub fn publisher(cfg: &Config, shutdown: CancellationToken) -> AsyncClient {
    let (host, port, _) = pithead_core::protocol::parse_url(&cfg.mqtt.url).unwrap_or_default();
    let mut opts = MqttOptions::new(format!("{}-cmd", cfg.mqtt.client_id), host, port);
    opts.set_keep_alive(cfg.mqtt.keep_alive);
    opts.set_max_packet_size(64 * 1024, 64 * 1024);
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
