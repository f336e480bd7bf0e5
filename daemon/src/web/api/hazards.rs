//! Hazard reports: the kiosk's report and lookup, the photo, the supervisors' list and steps.

use super::*;

/// Largest JSON report body.
const MAX_REPORT_JSON: usize = 64 * 1024;

/// `POST /api/v1/hazards` (public): a miner's report, as JSON, or as
/// multipart with a `report` part (the JSON) and an optional `photo` part;
/// 201 with the ticket.
pub async fn hazard_report(
    State(s): State<AppState>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    use axum::extract::FromRequest as _;
    let multipart = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "照片太大（最大 {} MB）",
                crate::photos::MAX_BYTES / 1024 / 1024
            ),
            format!(
                "the photo is too large (at most {} MB)",
                crate::photos::MAX_BYTES / 1024 / 1024
            ),
        )
    };
    let bad_body = |e: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "请求格式错误：需要类别、地点、等级（general/major）、描述，以及卡号或匿名",
            format!(
                "expected {{category, location, grade: general|major, description, anonymous, badge?}}: {e}"
            ),
        )
    };
    let (json, photo) = if multipart {
        let mut mp = match axum::extract::Multipart::from_request(req, &s).await {
            Ok(m) => m,
            Err(e) => return Err(bad_body(e.to_string())),
        };
        let (mut json, mut photo) = (None, None);
        loop {
            match mp.next_field().await {
                Ok(None) => break,
                // Two reports or two photos in one request: which one the
                // miner meant cannot be told, so neither is taken.
                Ok(Some(field)) if field.name() == Some("report") && json.is_some() => {
                    return Err(bad_body("more than one `report` part".into()));
                }
                Ok(Some(field)) => match field.name() {
                    Some("report") => match field.text().await {
                        Ok(t) if t.len() <= MAX_REPORT_JSON => json = Some(t),
                        Ok(_) => return Err(bad_body("the report part is too large".into())),
                        Err(e) => return Err(bad_body(e.to_string())),
                    },
                    Some("photo") => match field.bytes().await {
                        Ok(b) if b.len() > crate::photos::MAX_BYTES => return Err(too_large()),
                        // An empty part is a form whose file field was left
                        // empty, wherever it comes.
                        Ok(b) if b.is_empty() => {}
                        Ok(_) if photo.is_some() => {
                            return Err(bad_body("more than one `photo` part".into()));
                        }
                        Ok(b) => photo = Some(b),
                        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                            return Err(too_large());
                        }
                        Err(e) => return Err(bad_body(e.to_string())),
                    },
                    _ => {}
                },
                Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
                Err(e) => return Err(bad_body(e.to_string())),
            }
        }
        match json {
            Some(j) => (j, photo),
            None => return Err(bad_body("no `report` part".into())),
        }
    } else {
        match axum::body::to_bytes(req.into_body(), MAX_REPORT_JSON).await {
            Ok(b) => (String::from_utf8_lossy(&b).into_owned(), None),
            Err(_) => return Err(bad_body("the body is too large".into())),
        }
    };
    let report: crate::hazards::NewHazard = match serde_json::from_str(&json) {
        Ok(r) => r,
        Err(e) => return Err(bad_body(e.to_string())),
    };
    let report = match report.validate() {
        Ok(r) => r,
        Err(e) => return Err(invalid_response(StatusCode::BAD_REQUEST, "bad_report", e)),
    };
    // The photo is stripped and stored (synced) before the report naming
    // it is committed.
    // Photos go first when space runs short: the report is kept without
    // its photo, and the miner told.
    let mut photo_refused: Option<String> = None;
    let photo = match photo {
        Some(bytes) => {
            let (dir, st) = (s.config.storage.data_dir.clone(), s.config.storage.clone());
            let n = bytes.len();
            let room = tokio::task::spawn_blocking(move || {
                crate::photos::room(&dir, n, st.reserve_mb, st.photos_max_mb)
            })
            .await
            .unwrap_or_else(|_| Err("stopping".into()));
            match room {
                Ok(()) => Some(bytes),
                Err(why) => {
                    tracing::warn!(reason = %why, "hazard photo refused for space; the report is kept");
                    photo_refused = Some(why);
                    None
                }
            }
        }
        None => None,
    };
    let photo_name = match photo {
        None => None,
        Some(bytes) => {
            let (kind, clean) = match crate::photos::strip(&bytes) {
                Ok(x) => x,
                Err(crate::photos::Refused::NotAnImage) => {
                    return Err(ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "not_an_image",
                        "只能上传 JPEG、PNG 或 WebP 照片",
                        "the photo must be JPEG, PNG or WebP",
                    ));
                }
                Err(crate::photos::Refused::Malformed) => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_image",
                        "照片文件已损坏",
                        "the photo file is damaged",
                    ));
                }
            };
            let dir = s.config.storage.data_dir.clone();
            match tokio::task::spawn_blocking(move || crate::photos::store(&dir, kind, &clean))
                .await
            {
                Ok(Ok((name, _))) => Some(name),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot store a hazard photo");
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                    ) {
                        s.store.note_disk_full();
                    }
                    return Err(ApiError::new(
                        StatusCode::INSUFFICIENT_STORAGE,
                        "photo_not_stored",
                        "照片未能保存（存储空间不足？），报告未提交，请重试或不带照片提交",
                        format!("the photo could not be stored ({e}); the report was not taken"),
                    ));
                }
                Err(_) => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "stopping",
                        "系统正在停止",
                        "stopping",
                    ));
                }
            }
        }
    };
    let cfg = Arc::clone(&s.config);
    let result = s
        .store
        .write(crate::store::Durability::Acknowledged, move |c| {
            crate::hazards::create(
                c,
                &cfg,
                &report,
                photo_name.as_deref(),
                std::time::SystemTime::now(),
            )
        })
        .await;
    let h = result?;
    Ok((
            StatusCode::CREATED,
            Json(serde_json::json!({
                "ticket": h.ticket,
                "status": h.status,
                "photo": h.photo.is_some(),
                "photo_refused": photo_refused.as_ref().map(|why| serde_json::json!({
                    "message_zh": "存储空间需留给下井登记和报警记录，照片未保存；报告已提交。",
                    "message_en": format!("the photo was not kept ({why}); the report is in"),
                })),
                "reported_at": h.reported_at,
                "message_zh": format!("隐患已上报，编号 {}。可凭编号在本机查询处理进度。", h.ticket),
                "message_en": format!("Reported. Your ticket is {}; look it up here to follow it.", h.ticket),
            })),
        )
            .into_response())
}

/// `GET /api/v1/hazards/{ticket}/photo` (public): the stripped photo.
pub async fn hazard_photo(
    State(s): State<AppState>,
    Path(ticket): Path<String>,
) -> Result<Response, ApiError> {
    let ticket = ticket_of(&ticket)?;
    let name = match s
        .store
        .read(move |c| crate::hazards::get(c, &ticket, std::time::SystemTime::now()))
        .await
    {
        Ok(Some(h)) => h.photo,
        Ok(None) => None,
        Err(e) => return Err(store_refused(&e)),
    };
    let Some((path, kind)) = name
        .as_deref()
        .and_then(|n| crate::photos::path_of(&s.config.storage.data_dir, n))
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_photo",
            "没有照片",
            "no photo",
        ));
    };
    Ok(
        match tokio::task::spawn_blocking(move || std::fs::read(&path))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        {
            Ok(bytes) => (
                [
                    (axum::http::header::CONTENT_TYPE, kind.mime()),
                    (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                    (axum::http::header::CACHE_CONTROL, "private, max-age=3600"),
                ],
                bytes,
            )
                .into_response(),
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no_photo",
                    "照片文件已丢失",
                    "the photo file is missing",
                ));
            }
        },
    )
}

/// `GET /api/v1/hazards/{ticket}` (public): where a report stands, without
/// who reported it.
pub async fn hazard_lookup(
    State(s): State<AppState>,
    Path(ticket): Path<String>,
) -> Result<Response, ApiError> {
    let ticket = ticket_of(&ticket)?;
    Ok(
        match s
            .store
            .read(move |c| crate::hazards::get(c, &ticket, std::time::SystemTime::now()))
            .await
        {
            Ok(Some(h)) => Json(crate::hazards::PublicHazard::from(h)).into_response(),
            Ok(None) => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no_such_ticket",
                    "没有这个编号的隐患",
                    "no hazard with that ticket",
                ));
            }
            Err(e) => return Err(store_refused(&e)),
        },
    )
}

/// `GET /api/v1/board` (anyone): the public board (隐患公示) — every open
/// hazard, overdue ones first, without reporters or names.
pub async fn hazard_board(State(s): State<AppState>) -> Result<Response, ApiError> {
    let list = s
        .store
        .read(|c| crate::hazards::board(c, std::time::SystemTime::now()))
        .await?;
    Ok(Json(list).into_response())
}

/// `GET /api/v1/hazards` (supervisor): the newest 500, open ones first.
pub async fn hazard_list(
    State(s): State<AppState>,
    _supervisor: Supervisor,
) -> Result<Response, ApiError> {
    /// A hazard with the steps the lifecycle allows from where it is: the
    /// console offers these (it keeps no copy of the lifecycle).
    #[derive(serde::Serialize)]
    struct WithNext {
        #[serde(flatten)]
        hazard: crate::hazards::Hazard,
        next: Vec<crate::hazards::Status>,
    }
    let list = s
        .store
        .read(|c| crate::hazards::list(c, 500, std::time::SystemTime::now()))
        .await?;
    let list: Vec<WithNext> = list
        .into_iter()
        .map(|hazard| WithNext {
            next: hazard.status.next(),
            hazard,
        })
        .collect();
    Ok(Json(list).into_response())
}

/// `POST /api/v1/hazards/{ticket}/steps` (supervisor): a lifecycle step.
pub async fn hazard_step(
    State(s): State<AppState>,
    Supervisor(who): Supervisor,
    Path(ticket): Path<String>,
    body: Result<Json<crate::hazards::Step>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let step = match body {
        Ok(Json(mut b)) => {
            if let Who::Supervisor(user) = &who {
                b.by.clone_from(user);
            }
            b
        }
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "请求格式错误：需要 status 与 by",
                format!("expected {{status, by, note?, owner?, deadline?, measures?}}: {e}"),
            ));
        }
    };
    let cfg = Arc::clone(&s.config);
    let result = s
        .store
        .write(crate::store::Durability::Acknowledged, move |c| {
            crate::hazards::step(c, &cfg, &ticket, &step, std::time::SystemTime::now())
        })
        .await;
    Ok(match result {
        Ok(Ok(h)) => Json(h).into_response(),
        Ok(Err(crate::hazards::StepError::NotFound)) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_such_ticket",
                "没有这个编号的隐患",
                "no hazard with that ticket",
            ));
        }
        Ok(Err(crate::hazards::StepError::Invalid(e))) => {
            return Err(invalid_response(StatusCode::CONFLICT, "bad_step", e));
        }
        Err(e) => return Err(store_refused(&e)),
    })
}

/// A ticket from a path: trimmed, upper case, letters and digits only.
fn ticket_of(raw: &str) -> Result<String, ApiError> {
    let ticket = raw.trim().to_ascii_uppercase();
    if ticket.is_empty() || ticket.len() > 16 || !ticket.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_ticket",
            "编号格式不正确",
            "not a ticket",
        ));
    }
    Ok(ticket)
}
