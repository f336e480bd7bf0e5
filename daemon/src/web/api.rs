//! The JSON API (`/api/v1`) and `/metrics`. See `docs/API.md`.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Json, Response};
use serde::Serialize;

use super::AppState;

/// One channel as the API shows it: the stable contract of `docs/API.md`.
#[derive(Debug, Serialize)]
pub struct ChannelView {
    id: String,
    kind: crate::config::ChannelKind,
    unit: String,
    location: String,
    /// A number only when `state` is `ok`; never 0 for a missing reading.
    value: Option<f64>,
    state: &'static str,
    /// Why there is no value, for people.
    detail: Option<String>,
    /// When the reading was taken, RFC 3339 UTC.
    updated_at: String,
}

/// `GET /api/v1/channels`
pub async fn channels(State(s): State<AppState>) -> Json<Vec<ChannelView>> {
    let snap = s.acquisition.snapshot.borrow();
    Json(
        snap.info
            .iter()
            .zip(&snap.readings)
            .map(|(i, r)| ChannelView {
                id: i.id.clone(),
                kind: i.kind,
                unit: i.unit.clone(),
                location: i.location.clone(),
                value: r.value,
                state: r.state.as_str(),
                detail: r.detail.as_deref().map(str::to_owned),
                updated_at: humantime::format_rfc3339_millis(r.wall).to_string(),
            })
            .collect(),
    )
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(s): State<AppState>) -> Response {
    let mut out = String::with_capacity(4096);
    s.acquisition.metrics.render(&mut out);
    {
        let snap = s.acquisition.snapshot.borrow();
        out.push_str("# HELP pithead_device_online Whether a device answered its last request.\n");
        out.push_str("# TYPE pithead_device_online gauge\n");
        for d in &snap.devices {
            out.push_str(&format!(
                "pithead_device_online{{device=\"{}\"}} {}\n",
                d.id,
                u8::from(d.online)
            ));
        }
        out.push_str("# HELP pithead_channel_ok Whether a channel has a good value (1) or a special state (0).\n");
        out.push_str("# TYPE pithead_channel_ok gauge\n");
        for (i, r) in snap.info.iter().zip(&snap.readings) {
            let ok = u8::from(r.state == crate::acquisition::State::Ok);
            out.push_str(&format!(
                "pithead_channel_ok{{channel=\"{}\",state=\"{}\"}} {ok}\n",
                i.id,
                r.state.as_str()
            ));
        }
    }
    if let Ok(b) = s.store.read(crate::store::outbox::backlog).await {
        out.push_str("# HELP pithead_outbox_pending Messages waiting for the county.\n# TYPE pithead_outbox_pending gauge\n");
        out.push_str(&format!("pithead_outbox_pending {}\n", b.pending));
        out.push_str("# HELP pithead_outbox_bytes Bytes waiting for the county.\n# TYPE pithead_outbox_bytes gauge\n");
        out.push_str(&format!("pithead_outbox_bytes {}\n", b.bytes));
        out.push_str("# HELP pithead_outbox_dropped_summaries_total Summaries dropped at the outbox cap.\n# TYPE pithead_outbox_dropped_summaries_total counter\n");
        out.push_str(&format!(
            "pithead_outbox_dropped_summaries_total {}\n",
            b.dropped_summaries
        ));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
