//! Benchmark helper: a county's backlog. `pithead-county-load PORT
//! STATIONS PER_STATION` publishes, to the broker on 127.0.0.1:PORT, QoS 1,
//! PER_STATION check-in messages from each of STATIONS simulated stations
//! (`bench-county`/`b000`…), each a valid envelope numbered from 1 in its
//! lane, interleaved across stations; waits for every PUBACK, and prints
//! `{"published": N, "seconds": S}`. A fifth argument RATE paces it at
//! RATE messages a second in all (a county's steady traffic, not a
//! backlog).

use std::time::Instant;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || anyhow::anyhow!("usage: pithead-county-load PORT STATIONS PER_STATION [RATE]");
    let port: u16 = args.next().ok_or_else(usage)?.parse()?;
    let stations: usize = args.next().ok_or_else(usage)?.parse()?;
    let per: i64 = args.next().ok_or_else(usage)?.parse()?;
    let rate: Option<u64> = args.next().map(|r| r.parse()).transpose()?;
    let mut o = MqttOptions::new(
        format!("county-load-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    o.set_keep_alive(std::time::Duration::from_secs(30));
    o.set_inflight(1000);
    o.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut events) = AsyncClient::new(o, 2000);
    let total = stations as u64 * per as u64;
    let epoch = uuid::Uuid::new_v4().simple().to_string();
    let started = Instant::now();
    let publisher = tokio::spawn(async move {
        // Paced: a tick every 10 ms, each with its share of the rate.
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
        let per_tick = rate.map(|r| (r / 100).max(1));
        let mut in_tick = 0u64;
        for seq in 1..=per {
            for s in 0..stations {
                if let Some(n) = per_tick {
                    if in_tick == 0 {
                        tick.tick().await;
                    }
                    in_tick = (in_tick + 1) % n;
                }
                let station = format!("b{s:03}");
                let at = "2026-12-01T06:00:00.000Z";
                let body = serde_json::json!({
                    "id": seq, "badge": format!("{:04}", seq % 500), "name": "工人", "team": "一队",
                    "direction": if seq % 2 == 0 { "out" } else { "in" }, "outcome": "ok", "at": at,
                    "underground_since": null, "minutes_underground": null,
                    "county": "bench-county", "station": station,
                });
                let m = serde_json::json!({
                    "schema": "pithead/v1", "msg_id": uuid::Uuid::now_v7().to_string(),
                    "county": "bench-county", "station": station, "epoch": epoch, "lane": "checkin",
                    "seq": seq, "kind": "checkin", "created_at": at, "body": body,
                });
                let topic = format!("pithead/v1/bench-county/{station}/checkin");
                if client
                    .publish(
                        topic,
                        QoS::AtLeastOnce,
                        false,
                        serde_json::to_vec(&m).unwrap_or_default(),
                    )
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    let mut acked = 0u64;
    while acked < total {
        match events.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => anyhow::bail!("broker connection lost after {acked} acknowledgements: {e}"),
        }
    }
    let _ = publisher.await;
    println!(
        "{}",
        serde_json::json!({ "published": acked, "seconds": started.elapsed().as_secs_f64() })
    );
    Ok(())
}
