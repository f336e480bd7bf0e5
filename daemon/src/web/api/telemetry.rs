//! Readings, devices, trends, outputs, the uplink, notices and `/metrics`.

use super::*;

/// One channel as the API shows it: the stable contract of `docs/API.md`.
#[derive(Debug, Serialize)]
pub struct ChannelView {
    pub(crate) id: String,
    kind: crate::config::ChannelKind,
    unit: String,
    location: String,
    /// What miners read (`[[channel]] name`); `null`: the page names the
    /// kind in its language.
    name: Option<String>,
    /// A number only when `state` is `ok`; never 0 for a missing reading.
    value: Option<f64>,
    pub(crate) state: &'static str,
    /// Why there is no value, for people.
    detail: Option<String>,
    /// When the reading was taken, RFC 3339 UTC.
    updated_at: String,
    /// In calibration (state `calibrating`) until then, RFC 3339.
    calibration_until: Option<String>,
}

/// Every channel's latest reading, as the API and the kiosk show it. A
/// channel in calibration (标校) is `calibrating`: its value is the test
/// gas's, which the kiosk does not show as air.
pub fn channel_views(
    snap: &crate::acquisition::Snapshot,
    cal: &crate::acquisition::calibration::Calibrations,
) -> Vec<ChannelView> {
    snap.info
        .iter()
        .zip(&snap.readings)
        .enumerate()
        .map(|(ch, (i, r))| {
            let calibrating = cal.current(ch);
            ChannelView {
                id: i.id.clone(),
                kind: i.kind,
                unit: i.unit.clone(),
                location: i.location.clone(),
                name: i.name.clone(),
                value: r.value,
                state: if calibrating.is_some() {
                    "calibrating"
                } else {
                    r.state.as_str()
                },
                detail: r.detail.as_deref().map(str::to_owned),
                updated_at: crate::time::rfc3339(r.wall),
                calibration_until: calibrating.map(|c| crate::time::rfc3339(c.until)),
            }
        })
        .collect()
}

/// `GET /api/v1/channels`
pub async fn channels(State(s): State<AppState>) -> Json<Vec<ChannelView>> {
    Json(channel_views(
        &s.acquisition.snapshot.borrow(),
        &s.acquisition.calibrations,
    ))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(s): State<AppState>) -> Result<Response, ApiError> {
    let mut out = String::with_capacity(4096);
    s.acquisition.metrics.render(&mut out);
    out.push_str("# HELP pithead_alarm_reading_to_output_seconds From a reading taken to the outputs it changed.\n");
    out.push_str("# TYPE pithead_alarm_reading_to_output_seconds histogram\n");
    s.alarms
        .reading_to_output
        .render(&mut out, "pithead_alarm_reading_to_output_seconds", "");
    out.push_str("# HELP pithead_alarm_events_queued Alarm events waiting for the store.\n# TYPE pithead_alarm_events_queued gauge\n");
    out.push_str(&format!(
        "pithead_alarm_events_queued {}\n",
        s.alarms.queue.len()
    ));
    out.push_str("# HELP pithead_alarm_events_dropped_total Alarm events dropped to keep the queue bounded while the store took none.\n# TYPE pithead_alarm_events_dropped_total counter\n");
    out.push_str(&format!(
        "pithead_alarm_events_dropped_total {}\n",
        s.alarms.queue.dropped()
    ));
    s.uplink.render(&mut out);
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
            let ok = u8::from(r.state == pithead_core::ReadingState::Ok);
            out.push_str(&format!(
                "pithead_channel_ok{{channel=\"{}\",state=\"{}\"}} {ok}\n",
                i.id,
                r.state.as_str()
            ));
        }
    }
    out.push_str("# HELP pithead_http_connections_open HTTP connections open now.\n# TYPE pithead_http_connections_open gauge\n");
    out.push_str(&format!(
        "pithead_http_connections_open {}\n",
        s.http.open()
    ));
    out.push_str("# HELP pithead_http_connections_refused_total Connections closed at once for being over a limit.\n# TYPE pithead_http_connections_refused_total counter\n");
    out.push_str(&format!(
        "pithead_http_connections_refused_total {}\n",
        s.http.refused()
    ));
    out.push_str("# HELP pithead_store_disk_full Whether the disk is full and records are refused.\n# TYPE pithead_store_disk_full gauge\n");
    out.push_str(&format!(
        "pithead_store_disk_full {}\n",
        u8::from(s.store.disk_full())
    ));
    out.push_str("# HELP pithead_store_refused_disk_full_total Writes refused because the disk was full.\n# TYPE pithead_store_refused_disk_full_total counter\n");
    out.push_str(&format!(
        "pithead_store_refused_disk_full_total {}\n",
        s.store.refused_for_full_disk()
    ));
    if let Ok(b) = s.store.read(crate::store::outbox::backlog).await {
        out.push_str("# HELP pithead_outbox_pending Messages waiting for the county.\n# TYPE pithead_outbox_pending gauge\n");
        out.push_str(&format!("pithead_outbox_pending {}\n", b.pending));
        out.push_str("# HELP pithead_outbox_bytes Bytes waiting for the county.\n# TYPE pithead_outbox_bytes gauge\n");
        out.push_str(&format!("pithead_outbox_bytes {}\n", b.bytes));
        out.push_str("# HELP pithead_outbox_set_aside Outbox rows set aside: the broker would not take them (kept, announced to the county as a gap).\n# TYPE pithead_outbox_set_aside gauge\n");
        out.push_str(&format!("pithead_outbox_set_aside {}\n", b.set_aside));
        out.push_str("# HELP pithead_outbox_dropped_summaries_total Summaries dropped at the outbox cap.\n# TYPE pithead_outbox_dropped_summaries_total counter\n");
        out.push_str(&format!(
            "pithead_outbox_dropped_summaries_total {}\n",
            b.dropped_summaries
        ));
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

/// `GET /api/v1/outputs`: what the siren, beacon and relay show, and for
/// simulated outputs their recent changes.
pub async fn outputs(State(s): State<AppState>) -> Result<Response, ApiError> {
    // Copy out of the panel's lock before the work: the engine and the
    // supervisor take the same lock.
    let (current, timeline, errors) = match s.alarms.panel.lock() {
        Ok(p) => (p.current(), p.timeline().cloned(), p.errors()),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "panel",
                "输出状态不可读",
                "outputs unreadable",
            ));
        }
    };
    Ok(Json(serde_json::json!({
        "siren": current.siren,
        "beacon": current.beacon,
        "power_allowed": current.power_allowed,
        "output_errors": errors,
        "power_feedback": s.alarms.state.borrow().feedback,
        "simulated": timeline.is_some(),
        "changes": timeline.map(|t| crate::alarm::panel::recent_changes(&t, 500)),
    }))
    .into_response())
}

/// `GET /api/v1/devices` (supervisor): each device's health.
pub async fn devices(
    State(s): State<AppState>,
    _supervisor: Supervisor,
) -> Result<Response, ApiError> {
    let devices = s.acquisition.snapshot.borrow().devices.clone();
    let list: Vec<serde_json::Value> = devices
        .iter()
        .map(|d| {
            serde_json::json!({
                "id": d.id,
                "online": d.online,
                "consecutive_failures": d.consecutive_failures,
                "last_error": d.last_error,
                "last_ok": d.last_ok.map(crate::time::rfc3339),
            })
        })
        .collect();
    Ok(Json(list).into_response())
}

/// Query of the trend endpoint.
#[derive(Debug, serde::Deserialize)]
pub struct TrendQuery {
    /// How far back, in hours (1 to 48; 8 by default).
    #[serde(default)]
    hours: Option<u32>,
}

/// `GET /api/v1/channels/{id}/trend?hours=8` (supervisor): per-minute
/// statistics from the stored aggregates, with the channel's alarm levels.
pub async fn trend(
    State(s): State<AppState>,
    _supervisor: Supervisor,
    Path(id): Path<String>,
    Query(q): Query<TrendQuery>,
) -> Result<Response, ApiError> {
    let hours = q.hours.unwrap_or(8);
    if !(1..=48).contains(&hours) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_hours",
            "时间范围为 1 到 48 小时",
            "hours must be 1 to 48",
        ));
    }
    let Some(channel) = s.config.channel(&id).cloned() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_channel",
            "没有这个测点",
            "no such channel",
        ));
    };
    let since = crate::time::unix_ms(std::time::SystemTime::now()) - i64::from(hours) * 3_600_000;
    let cid = channel.id.clone();
    let points = s
        .store
        .read(move |c| crate::acquisition::recorder::trend(c, &cid, since))
        .await?;
    Ok(Json(serde_json::json!({
        "channel": channel.id,
        "unit": channel.unit,
        "range": channel.range,
        "levels": channel.levels.iter().map(|l| serde_json::json!({
            "name": l.name,
            "threshold": l.threshold,
            "direction": l.direction.unwrap_or_else(|| channel.kind.default_direction()),
        })).collect::<Vec<_>>(),
        "points": points,
    }))
    .into_response())
}

/// `GET /api/v1/notices` (public): the county's notices valid now.
pub async fn notices(State(s): State<AppState>) -> Result<Response, ApiError> {
    let n = s
        .store
        .read(|c| crate::sync::downlink::current_notices(c, std::time::SystemTime::now()))
        .await?;
    Ok(Json(n).into_response())
}

/// `GET /api/v1/uplink` (supervisor): the county uplink and its backlog.
pub async fn uplink(
    State(s): State<AppState>,
    _supervisor: Supervisor,
) -> Result<Response, ApiError> {
    let backlog = s.store.read(crate::store::outbox::backlog).await?;
    let u = &s.uplink;
    let g = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    Ok(Json(serde_json::json!({
        "enabled": s.config.mqtt.enabled,
        "connected": u.connected.load(std::sync::atomic::Ordering::Relaxed),
        "pending": backlog.pending,
        "bytes": backlog.bytes,
        "dropped_summaries": backlog.dropped_summaries,
        "set_aside": backlog.set_aside,
        "downlink_connected": u.downlink_connected.load(std::sync::atomic::Ordering::Relaxed),
        "published": g(&u.published),
        "acknowledged": g(&u.acknowledged),
    }))
    .into_response())
}
