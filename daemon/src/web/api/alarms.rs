//! Alarms: the list (redacted for anyone but a supervisor) and acknowledgement.

use super::*;

/// Query of `GET /api/v1/alarms`.
#[derive(Debug, serde::Deserialize)]
pub struct AlarmQuery {
    /// Only the active ones.
    #[serde(default)]
    active: bool,
}

/// `GET /api/v1/alarms[?active=true]`: active alarms; without `active=true`,
/// also the 100 alarms that ended last. Without a supervisor (a session or
/// the API token) nothing personal is in it: an overdue miner is
/// `worker` without his badge, and nobody's name says who acknowledged.
pub async fn alarms(
    State(s): State<AppState>,
    supervisor: Option<Supervisor>,
    Query(q): Query<AlarmQuery>,
) -> Result<Response, ApiError> {
    let supervisor = supervisor.is_some();
    let mut list: Vec<AlarmView> = s.alarms.state.borrow().alarms.clone();
    if !q.active {
        match s.store.read(|c| crate::alarm::history::ended(c, 100)).await {
            Ok(ended) => list.extend(ended),
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "history_unavailable",
                    format!("报警记录暂时无法读取：{e}"),
                    format!("alarm history cannot be read: {e}"),
                ));
            }
        }
    }
    if !supervisor {
        for a in &mut list {
            if a.channel.starts_with("worker:") {
                a.channel = "worker".into();
            }
            a.acknowledged_by = None;
        }
    }
    Ok(Json(list).into_response())
}

/// Body of `POST /api/v1/alarms/{id}/ack`.
#[derive(Debug, serde::Deserialize)]
pub struct AckBody {
    /// The supervisor's name (with the API token; a console session names
    /// its supervisor itself).
    #[serde(default)]
    by: String,
}

/// `POST /api/v1/alarms/{id}/ack` with `{"by": "name"}`: silences the siren
/// for that alarm at once; answers once the acknowledgement is recorded.
pub async fn ack(
    State(s): State<AppState>,
    Supervisor(who): Supervisor,
    Path(id): Path<String>,
    body: Result<Json<AckBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Ok(id) = id.parse::<u64>() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_id",
            "报警编号无效",
            format!("`{id}` is not an alarm id"),
        ));
    };
    let by = acknowledger(&who, body)?;
    ack_one(&s, id, by).await?;
    let view = s
        .alarms
        .state
        .borrow()
        .alarms
        .iter()
        .find(|a| a.id == id)
        .cloned();
    Ok(
        Json(
            serde_json::json!({ "id": id, "acknowledged": true, "recorded": true, "alarm": view }),
        )
        .into_response(),
    )
}

/// Who acknowledges: the console's supervisor, or with the API token the
/// name in the body.
fn acknowledger(
    who: &Who,
    body: Result<Json<AckBody>, axum::extract::rejection::JsonRejection>,
) -> Result<String, ApiError> {
    match (who, body) {
        (Who::Supervisor(user), _) => Ok(user.clone()),
        (Who::Token, Ok(Json(b))) if !b.by.trim().is_empty() && b.by.chars().count() <= 64 => {
            Ok(b.by.trim().to_owned())
        }
        (Who::Token, Ok(_)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_name",
            "请填写确认人姓名（不超过64个字）",
            "give the name of who acknowledges (`by`, 1 to 64 characters)",
        )),
        (Who::Token, Err(e)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "请求格式错误，应为 {\"by\": \"姓名\"}",
            format!("expected a JSON body {{\"by\": \"name\"}}: {e}"),
        )),
    }
}

/// Acknowledges alarm `id` as `by`; `Ok` once it is recorded.
async fn ack_one(s: &AppState, id: u64, by: String) -> Result<(), ApiError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    if s.alarms
        .commands
        .send(Command::Ack { id, by, reply })
        .await
        .is_err()
    {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "系统正在停止",
            "the daemon is stopping",
        ));
    }
    let recorded = match answer.await {
        Ok(Ok(recorded)) => recorded,
        Ok(Err(crate::alarm::engine::AckError::NotFound(_))) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_such_alarm",
                "没有这个正在报警的编号",
                format!("no active alarm {id}"),
            ));
        }
        Ok(Err(e @ crate::alarm::engine::AckError::AlreadyAcknowledged { .. })) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_acknowledged",
                "该报警已被确认",
                e.to_string(),
            ));
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "stopping",
                "系统正在停止",
                "the daemon is stopping",
            ));
        }
    };
    match tokio::time::timeout(std::time::Duration::from_secs(10), recorded).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "not_recorded",
            format!("已确认，警笛已消音，但记录未能保存（将自动重试）：{e}"),
            format!("acknowledged and silenced, but not yet recorded (it will be retried): {e}"),
        )),
        _ => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_recorded",
            "已确认，警笛已消音，但记录尚未保存",
            "acknowledged and silenced, but not yet recorded",
        )),
    }
}

/// `POST /api/v1/alarms/ack-all`: acknowledges every alarm nobody has
/// acknowledged yet, each recorded before the answer, as the console's
/// "acknowledge all" after one confirmation. Answers with the ids
/// acknowledged and, per id, why one was not (`failed`; an alarm that
/// ended or was acknowledged meanwhile is not a failure).
pub async fn ack_all(
    State(s): State<AppState>,
    Supervisor(who): Supervisor,
    body: Result<Json<AckBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let by = acknowledger(&who, body)?;
    let ids: Vec<u64> = s
        .alarms
        .state
        .borrow()
        .alarms
        .iter()
        .filter(|a| a.acknowledged_by.is_none())
        .map(|a| a.id)
        .collect();
    let mut acknowledged = Vec::new();
    let mut failed = Vec::new();
    for id in ids {
        match ack_one(&s, id, by.clone()).await {
            Ok(()) => acknowledged.push(id),
            Err(e) if matches!(e.error, "no_such_alarm" | "already_acknowledged") => {}
            Err(e) if e.error == "stopping" => return Err(e),
            Err(e) => failed.push(serde_json::json!({ "id": id, "error": e.error, "message_zh": e.message_zh, "message_en": e.message_en })),
        }
    }
    let status = if failed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::INSUFFICIENT_STORAGE
    };
    Ok((
        status,
        Json(serde_json::json!({ "acknowledged": acknowledged, "failed": failed })),
    )
        .into_response())
}
