//! The roster: read it, replace it from a CSV.

use super::*;

/// `GET /api/v1/roster`: the active roster.
pub async fn roster(
    State(s): State<AppState>,
    _supervisor: Supervisor,
) -> Result<Response, ApiError> {
    let w = s.store.read(crate::roster::roster).await?;
    Ok(Json(w).into_response())
}

/// `POST /api/v1/roster` with a CSV body: replaces the roster, or answers
/// 422 with every bad line and imports nothing.
pub async fn roster_upload(
    State(s): State<AppState>,
    _supervisor: Supervisor,
    body: String,
) -> Result<Response, ApiError> {
    let workers = match crate::roster::parse_csv(&body) {
        Ok(w) => w,
        Err(errors) => {
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(serde_json::json!({
                    "error": "bad_roster",
                    "message_zh": format!("花名册有 {} 处错误，未导入任何记录", errors.len()),
                    "message_en": format!("{} problems in the roster; nothing was imported", errors.len()),
                    "lines": errors,
                })),
            )
                .into_response());
        }
    };
    let at = crate::time::now_rfc3339();
    let summary = s
        .store
        .write(crate::store::Durability::Acknowledged, move |c| {
            crate::roster::import(c, &workers, &at)
        })
        .await?;
    Ok(Json(summary).into_response())
}
