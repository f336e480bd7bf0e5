//! Check-ins and check-outs (kiosks only), who is underground, check-out by hand.

use super::*;

/// Body of `POST /api/v1/checkins`.
#[derive(Debug, serde::Deserialize)]
pub struct CheckinBody {
    badge: String,
    direction: crate::roster::Passage,
}

/// `POST /api/v1/checkins` `{badge, direction: "in"|"out"}`: recorded
/// durably (with its outbox row) before the answer, refused ones included.
pub async fn checkin(
    State(s): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<CheckinBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    // Who goes underground is told by the kiosk, not by any phone on the
    // Wi-Fi: a check-out from elsewhere would take a miner off the roll.
    let Some(kiosk) = crate::web::guard::kiosk(&s, peer, &headers) else {
        tracing::warn!(client = %peer.ip(), "check-in refused: not a kiosk");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_a_kiosk",
            "只能在井口登记终端上登记下井和升井",
            "check-ins and check-outs are made at a kiosk (the station's screen, or one with a key from [kiosk] keys_file)",
        ));
    };
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "请求格式错误，应为 {\"badge\": \"卡号\", \"direction\": \"in\" 或 \"out\"}",
                format!("expected {{\"badge\": \"…\", \"direction\": \"in\"|\"out\"}}: {e}"),
            ));
        }
    };
    let (status, answer) = check_in_or_out(&s, kiosk, &body.badge, body.direction).await?;
    Ok((status, Json(answer)).into_response())
}

/// A check-in or check-out from `kiosk` (a kiosk's page, or the box's badge
/// reader): recorded durably before the answer, with the limits it
/// exceeds and the urgent notices to read.
pub(crate) async fn check_in_or_out(
    s: &AppState,
    kiosk: String,
    badge: &str,
    direction: crate::roster::Passage,
) -> Result<(StatusCode, serde_json::Value), ApiError> {
    use crate::roster::{CheckinOutcome, Passage};
    if !s.roster_ready.load(std::sync::atomic::Ordering::Acquire) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "本站正在启动，花名册尚未载入，请稍后再试",
            "the station is starting and its roster is not loaded yet; try again in a moment",
        ));
    }
    let badge = match crate::roster::normalize_badge(badge) {
        Ok(b) => b,
        Err(why) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_badge",
                "卡号格式不正确，请重新刷卡或输入",
                why,
            ));
        }
    };
    let cfg = Arc::clone(&s.config);
    let at = std::time::SystemTime::now();
    let b = badge.clone();
    let result = s
        .store
        .write(crate::store::Durability::Acknowledged, move |c| {
            crate::roster::check(c, &cfg, &b, direction, at, &kiosk)
        })
        .await;
    let record = result?;
    if record.outcome == CheckinOutcome::Ok
        && direction == Passage::In
        && let Ok(mut clock) = s.overdue.lock()
    {
        clock.anchor(&badge, crate::time::unix_ms(at), std::time::Instant::now());
    }
    s.roster_changed.notify_one();
    // Over the limit: recorded all the same (nobody is kept from checking
    // in); the miner and the supervisor are told, the alarm follows.
    let crowded = overcrowding(s, direction).await;
    // Urgent county notices this miner has not read: the kiosk shows them
    // for 已阅 before its answer (the check-in itself is recorded already).
    let to_read = if record.outcome == CheckinOutcome::Ok && direction == Passage::In {
        let b = badge.clone();
        s.store
            .read(move |c| {
                crate::sync::downlink::unread_urgent(c, &b, std::time::SystemTime::now())
            })
            .await
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let name = record.name.clone().unwrap_or_default();
    let (status, mut zh, mut en) = match (record.outcome, direction) {
        (CheckinOutcome::Ok, Passage::In) => (StatusCode::CREATED, format!("{name}，下井登记成功。注意安全！"), format!("{name}: checked in. Stay safe!")),
        (CheckinOutcome::Ok, Passage::Out) => (
            StatusCode::CREATED,
            format!("{name}，升井登记成功，本班井下 {} 分钟。", record.minutes_underground.unwrap_or(0)),
            format!("{name}: checked out after {} minutes underground.", record.minutes_underground.unwrap_or(0)),
        ),
        (CheckinOutcome::UnknownBadge, _) => (
            StatusCode::NOT_FOUND,
            "卡号不在花名册中，已记录。请联系群监员。".to_owned(),
            "this badge is not on the roster; the attempt was recorded. See the station supervisor.".to_owned(),
        ),
        (CheckinOutcome::AlreadyIn, _) => (
            StatusCode::CONFLICT,
            // The time is in `record.underground_since`; the page shows it
            // in the station's time zone.
            format!("{name} 已在井下（已登记下井），本次未重复登记，已记录。"),
            format!("{name} is already checked in; recorded, not repeated."),
        ),
        (CheckinOutcome::NotIn, _) => (
            StatusCode::CONFLICT,
            format!("{name} 没有下井登记记录，升井已记录，请告知群监员。"),
            format!("{name} has no check-in; the check-out was recorded. Tell the station supervisor."),
        ),
    };
    for c in &crowded {
        let (wz, we) = if c.subject == crate::roster::OVERCROWDED_ALL {
            ("井下".to_owned(), "underground".to_owned())
        } else {
            let team = c.subject.trim_start_matches("team:");
            (format!("{team}班组"), format!("team {team}"))
        };
        zh.push_str(&format!(
            " 注意：{wz}已超员（{} 人，限 {} 人），已告知值班人员。",
            c.count, c.limit
        ));
        en.push_str(&format!(
            " Note: {we} is over its limit ({} of {}); the supervisor is told.",
            c.count, c.limit
        ));
    }
    Ok((
        status,
        serde_json::json!({
            "record": record,
            "message_zh": zh,
            "message_en": en,
            "overcrowded": crowded,
            "to_read": to_read,
        }),
    ))
}

/// The limits exceeded now, after a check-in (none after a check-out,
/// and none when no limit is configured or the store cannot be read: the
/// watch raises the alarm in any case).
async fn overcrowding(
    s: &AppState,
    direction: crate::roster::Passage,
) -> Vec<crate::roster::Crowded> {
    let r = &s.config.roster;
    if direction != crate::roster::Passage::In
        || (r.max_underground.is_none() && r.max_per_team.is_empty())
    {
        return Vec::new();
    }
    let roster = r.clone();
    let list = s
        .store
        .read(move |c| {
            crate::roster::underground(c, std::time::SystemTime::now(), std::time::Duration::MAX)
        })
        .await
        .unwrap_or_default();
    crate::roster::overcrowded(&roster, &list)
        .into_iter()
        .map(|(subject, n)| crate::roster::Crowded::new(&roster, subject, n))
        .collect()
}

/// `GET /api/v1/underground`: everyone underground now, longest first.
pub async fn underground(
    State(s): State<AppState>,
    _supervisor: Supervisor,
) -> Result<Response, ApiError> {
    let limit = s
        .config
        .roster
        .shift_length
        .saturating_add(s.config.roster.overdue_grace);
    Ok(
        match s
            .store
            .read(move |c| {
                let now = std::time::SystemTime::now();
                let people = crate::roster::underground(c, now, limit)?;
                let by_hand = crate::roster::checked_out_by_hand(c, now - limit)?;
                Ok((people, by_hand))
            })
            .await
        {
            Ok((people, by_hand)) => Json(serde_json::json!({
                "station": s.config.station.name,
                "count": people.len(),
                "overdue_after_minutes": limit.as_secs() / 60,
                "people": people,
                "checked_out_by_hand": by_hand,
            }))
            .into_response(),
            Err(e) => return Err(store_refused(&e)),
        },
    )
}

/// Body of `POST /api/v1/underground/{badge}/checkout`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutBody {
    /// Why (a lost badge, left by another way, confirmed on the surface).
    pub reason: String,
    /// Who, when the API token is used (a console login names itself).
    #[serde(default)]
    pub by: String,
}

/// `POST /api/v1/underground/{badge}/checkout` `{"reason": "…"}`: a
/// supervisor checks someone out by hand; recorded with who and why, sent
/// to the county, listed with the roll.
pub async fn checkout_by_hand(
    State(s): State<AppState>,
    Supervisor(who): Supervisor,
    Path(badge): Path<String>,
    body: Result<Json<CheckoutBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Ok(Json(body)) = body else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "请求格式错误，应为 {\"reason\": \"原因\"}",
            "expected {\"reason\": \"…\"}",
        ));
    };
    let reason = body.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 200 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_reason",
            "请填写人工升井的原因（不超过200字）",
            "give the reason for the check-out (1 to 200 characters)",
        ));
    }
    let by = match who {
        Who::Supervisor(user) => user,
        Who::Token if !body.by.trim().is_empty() && body.by.chars().count() <= 64 => {
            body.by.trim().to_owned()
        }
        Who::Token => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_name",
                "请填写操作人姓名（不超过64个字）",
                "give the name of who checks out (`by`, 1 to 64 characters)",
            ));
        }
    };
    let badge = match crate::roster::normalize_badge(&badge) {
        Ok(b) => b,
        Err(why) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_badge",
                "卡号格式不正确",
                why,
            ));
        }
    };
    let cfg = Arc::clone(&s.config);
    let b = badge.clone();
    let by_hand = crate::roster::ByHand { by, reason };
    let result = s
        .store
        .write(crate::store::Durability::Acknowledged, move |c| {
            crate::roster::check_out_by_hand(c, &cfg, &b, &by_hand, std::time::SystemTime::now())
        })
        .await;
    s.roster_changed.notify_one();
    Ok(match result {
        Ok(record) => (StatusCode::CREATED, Json(record)).into_response(),
        Err(crate::store::StoreError::Rejected(_)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_underground",
                format!("{badge} 不在井下"),
                format!("{badge} is not underground"),
            ));
        }
        Err(e) => return Err(store_refused(&e)),
    })
}

/// Body of `POST /api/v1/notices/{id}/read`.
#[derive(Debug, serde::Deserialize)]
pub struct ReadBody {
    badge: String,
}

/// `POST /api/v1/notices/{id}/read` `{badge}` (kiosks only): the miner
/// tapped 已阅 on an urgent notice; recorded with its `notice_read` row for
/// the county before the answer (201; 200 when recorded before).
pub async fn notice_read(
    State(s): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<ReadBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Some(kiosk) = crate::web::guard::kiosk(&s, peer, &headers) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_a_kiosk",
            "只能在井口登记终端上确认已阅",
            "notices are marked read at a kiosk",
        ));
    };
    let Ok(Json(body)) = body else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "请求格式错误，应为 {\"badge\": \"卡号\"}",
            "expected {\"badge\": \"…\"}",
        ));
    };
    let badge = crate::roster::normalize_badge(&body.badge).map_err(|why| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_badge", "卡号格式不正确", why)
    })?;
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_id",
            "通知编号无效",
            format!("`{id}` is not a notice id"),
        ));
    }
    let cfg = Arc::clone(&s.config);
    let (n, b) = (id.clone(), badge.clone());
    let r = s
        .store
        .write(crate::store::Durability::Acknowledged, move |c| {
            crate::sync::downlink::record_read(
                c,
                &cfg,
                &n,
                &b,
                &kiosk,
                std::time::SystemTime::now(),
            )
        })
        .await?;
    use crate::sync::downlink::ReadRefused;
    match r {
        Ok(new) => Ok((
            if new {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            Json(serde_json::json!({ "recorded": true, "notice": id, "badge": badge })),
        )
            .into_response()),
        Err(ReadRefused::NoNotice) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_notice",
            "没有这条有效的紧急通知",
            "no urgent notice valid now has that id",
        )),
        Err(ReadRefused::UnknownBadge) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_badge",
            "卡号不在花名册中",
            "this badge is not on the roster",
        )),
    }
}
