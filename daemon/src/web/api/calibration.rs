//! Calibration (标校) from the console: start, end, and the list.

use super::*;
use crate::acquisition::calibration::{self, Calibration};

/// Body of `POST /api/v1/channels/{id}/calibration`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// How long, 1 to 120 minutes (30 when not given).
    #[serde(default)]
    minutes: Option<u64>,
    /// Why (standard gas, replacement, …).
    reason: String,
    /// Who, with the API token (a console session names its supervisor).
    #[serde(default)]
    by: String,
}

fn who_of(who: &Who, by: &str) -> Result<String, ApiError> {
    match who {
        Who::Supervisor(user) => Ok(user.clone()),
        Who::Token if !by.trim().is_empty() && by.chars().count() <= 64 => Ok(by.trim().to_owned()),
        Who::Token => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_name",
            "请填写标校人姓名（不超过64个字）",
            "give the name of who calibrates (`by`, 1 to 64 characters)",
        )),
    }
}

fn channel_index(s: &AppState, id: &str) -> Result<usize, ApiError> {
    s.config
        .channels
        .iter()
        .position(|c| c.id == id)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_channel",
                "没有这个测点",
                format!("no channel `{id}`"),
            )
        })
}

/// `POST /api/v1/channels/{id}/calibration` (supervisor) `{minutes, reason}`:
/// the channel is in calibration from now, recorded (who, why, until)
/// before the answer. Its alarms still act: a power-cut level still cuts.
pub async fn calibration_start(
    State(s): State<AppState>,
    Supervisor(who): Supervisor,
    Path(id): Path<String>,
    body: Result<Json<StartBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let ch = channel_index(&s, &id)?;
    let Ok(Json(b)) = body else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "请求格式错误，应为 {\"minutes\": 30, \"reason\": \"原因\"}",
            "expected {\"minutes\": 1..120, \"reason\": \"…\"}",
        ));
    };
    let by = who_of(&who, &b.by)?;
    let reason = b.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 200 || reason.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_reason",
            "请填写标校原因（不超过200个字）",
            "give the reason (1 to 200 characters, no control characters)",
        ));
    }
    let length = b.minutes.map_or(calibration::DEFAULT, |m| {
        std::time::Duration::from_secs(m * 60)
    });
    if length.is_zero() || length > calibration::MAX {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_minutes",
            "标校时长应为 1 到 120 分钟",
            "minutes must be 1 to 120",
        ));
    }
    if s.acquisition.calibrations.current(ch).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_calibrating",
            "该测点正在标校，请先结束",
            "this channel is in calibration already; end it first",
        ));
    }
    let now = std::time::SystemTime::now();
    let c = Calibration {
        by,
        reason,
        started: now,
        until: now + length,
    };
    let (cid, rec) = (id.clone(), c.clone());
    s.store
        .write(crate::store::Durability::Acknowledged, move |conn| {
            calibration::record_start(conn, &cid, &rec)
        })
        .await?;
    tracing::warn!(channel = %id, by = %c.by, reason = %c.reason, until = %crate::time::rfc3339(c.until), "calibration started");
    s.acquisition.calibrations.start(ch, c.clone());
    let guards = s.config.channels[ch]
        .levels
        .iter()
        .any(|l| l.name == crate::config::LevelName::PowerCut);
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "channel": id,
            "calibration": c,
            "guards_power": guards,
        })),
    )
        .into_response())
}

/// Body of `DELETE /api/v1/channels/{id}/calibration` with the API token.
#[derive(Debug, Default, serde::Deserialize)]
pub struct EndBody {
    #[serde(default)]
    by: String,
}

/// `DELETE /api/v1/channels/{id}/calibration` (supervisor): ends it now.
pub async fn calibration_end(
    State(s): State<AppState>,
    Supervisor(who): Supervisor,
    Path(id): Path<String>,
    body: Option<Json<EndBody>>,
) -> Result<Response, ApiError> {
    let ch = channel_index(&s, &id)?;
    let by = who_of(&who, &body.map(|b| b.0.by).unwrap_or_default())?;
    if s.acquisition.calibrations.current(ch).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_calibrating",
            "该测点不在标校中",
            "this channel is not in calibration",
        ));
    }
    let now = std::time::SystemTime::now();
    let (cid, b) = (id.clone(), by.clone());
    s.store
        .write(crate::store::Durability::Acknowledged, move |conn| {
            calibration::record_end(conn, &cid, now, Some(&b))
        })
        .await?;
    s.acquisition.calibrations.end(ch, now);
    tracing::info!(channel = %id, %by, "calibration ended");
    Ok(
        Json(serde_json::json!({ "channel": id, "ended": crate::time::rfc3339(now) }))
            .into_response(),
    )
}

/// `GET /api/v1/calibrations` (supervisor): every channel's calibration now,
/// its last calibration date, and whether that is older than
/// `calibration_days` (sensors with alarm levels).
pub async fn calibrations(
    State(s): State<AppState>,
    _supervisor: Supervisor,
) -> Result<Response, ApiError> {
    let now = std::time::SystemTime::now();
    let cal = &s.acquisition.calibrations;
    let days = s.config.acquisition.calibration_days;
    let list: Vec<serde_json::Value> = s
        .config
        .channels
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let last = cal.last(i);
            serde_json::json!({
                "channel": c.id,
                "calibration": cal.current(i),
                "last_calibrated": last.map(crate::time::rfc3339),
                "needs_calibration": !c.levels.is_empty(),
                "overdue": !c.levels.is_empty() && calibration::overdue(last, now, days),
                "guards_power": c.levels.iter().any(|l| l.name == crate::config::LevelName::PowerCut),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "calibration_days": days, "channels": list })).into_response())
}
