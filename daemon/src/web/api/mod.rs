//! The JSON API (`/api/v1`) and `/metrics`, by resource. See
//! `docs/API.md`. Handlers return `Result<_, ApiError>`; supervisor
//! actions take the [`Supervisor`] extractor.

use super::ApiError;
use super::AppState;
use crate::alarm::{AlarmView, Command};
use axum::extract::State;
use axum::extract::{Path, Query};
use axum::http::header;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use serde::Serialize;
use std::sync::Arc;

mod alarms;
mod calibration;
mod checkins;
mod hazards;
mod roster;
mod session;
mod telemetry;

pub use alarms::*;
pub use calibration::*;
pub use checkins::*;
pub use hazards::*;
pub use roster::*;
pub use session::*;
pub use telemetry::*;

use crate::kiosk_keys::constant_time_eq;

/// Who is acting, as authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// The API token (tools, scripts); the name comes with the request.
    Token,
    /// A supervisor logged in to the console.
    Supervisor(String),
}

/// The console session cookie.
pub const COOKIE: &str = "pithead_session";

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            kv.trim()
                .strip_prefix(COOKIE)
                .and_then(|r| r.strip_prefix('='))
                .map(str::to_owned)
        })
}

/// A supervisor, as a handler argument: a console session (and, for a
/// change — any method but GET and HEAD — its CSRF token in
/// `X-CSRF-Token`), or the API token. Without one the request is answered
/// 401 (or 403 for a wrong CSRF token, or a token where none is
/// configured) before the handler runs. `Option<Supervisor>` asks without
/// refusing: the answer then leaves out what only supervisors see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supervisor(pub Who);

impl axum::extract::FromRequestParts<AppState> for Supervisor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authorize(s, &parts.headers, !parts.method.is_safe()).map(Supervisor)
    }
}

impl axum::extract::OptionalFromRequestParts<AppState> for Supervisor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(authorize(s, &parts.headers, !parts.method.is_safe())
            .ok()
            .map(Supervisor))
    }
}

/// Supervisor actions need a console session (and, for a change, its CSRF
/// token in `X-CSRF-Token`) or the API token.
fn authorize(s: &AppState, headers: &HeaderMap, change: bool) -> Result<Who, ApiError> {
    if let Some(session) = cookie_token(headers).and_then(|t| s.sessions.get(&t)) {
        let csrf = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if change && !constant_time_eq(csrf.as_bytes(), session.csrf.as_bytes()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "请求缺少有效的防伪令牌，请刷新页面后重试",
                "missing or wrong X-CSRF-Token; reload the page",
            ));
        }
        return Ok(Who::Supervisor(session.user));
    }
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (&s.api_token, given) {
        (Some(token), Some(g)) if constant_time_eq(g.as_bytes(), token.as_bytes()) => {
            Ok(Who::Token)
        }
        (None, Some(_)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ack_disabled",
            "本站未配置接口令牌，请登录主管控制台操作",
            "no API token is configured on this station (http.api_token_file); log in to the console",
        )),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "请先登录主管控制台",
            "log in to the console, or give the API token",
        )),
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        store_refused(&e)
    }
}

/// A store error as an answer: the record was not kept (or cannot be
/// read), and why.
fn store_refused(e: &crate::store::StoreError) -> ApiError {
    match e {
        crate::store::StoreError::DiskFull => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "disk_full",
            "存储空间已满，本次未能记录，请向群监员报告",
            "the disk is full; this was not recorded. Tell the station supervisor.",
        ),
        e => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_recorded",
            "暂时无法记录，请稍后再试或向群监员报告",
            format!("not recorded: {e}"),
        ),
    }
}

fn invalid_response(
    status: StatusCode,
    code: &'static str,
    e: crate::hazards::Invalid,
) -> ApiError {
    ApiError::new(status, code, e.zh, e.en)
}
