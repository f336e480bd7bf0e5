//! Console sessions: log in, who am I, log out.

use super::*;

/// Body of `POST /api/v1/session`.
#[derive(Debug, serde::Deserialize)]
pub struct LoginBody {
    user: String,
    password: String,
}

/// `POST /api/v1/session`: logs a supervisor in; sets the session cookie
/// and answers the CSRF token for changes. Failed logins are limited per
/// client address.
pub async fn login(
    State(s): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    secure: Option<axum::Extension<crate::web::serve::Secure>>,
    body: Result<Json<LoginBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let ip = peer.ip();
    // The slot is taken before the password is checked, so that a burst of
    // attempts at once cannot all get past the limit.
    if !s.sessions.begin(ip) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "登录失败次数过多，请一分钟后再试",
            "too many failed logins; try again in a minute",
        ));
    }
    let Ok(Json(b)) = body else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "请求格式错误：需要用户名和密码",
            "expected {\"user\", \"password\"}",
        ));
    };
    let user = b.user.trim().to_owned();
    // For the log: a name as given, but short and escaped.
    let shown: String = user.chars().take(64).collect();
    let lookup = user.clone();
    let stored = s
        .store
        .read(move |c| crate::auth::stored_hash(c, &lookup))
        .await;
    let stored = stored?;
    let Some(turn) = s.sessions.verify_turn().await else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            "登录请求过多，请稍后再试",
            "too many logins at once; try again in a moment",
        ));
    };
    let password = b.password;
    // Verify even without such a user, so timing does not tell names.
    let hash = stored.clone().unwrap_or_else(|| "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2ruCiRC1mr8Et0Tb0Bvx1H7Yp2Z6V+mD1LAuyg2pKbI".into());
    let ok = s.sessions.verifier().verify(password.clone(), hash).await;
    drop(turn);
    // An old hash's costs are brought up to date once it has been seen to
    // be right.
    if ok
        && stored.as_deref().is_some_and(crate::auth::needs_rehash)
        && let Ok(new) = tokio::task::spawn_blocking(move || crate::auth::hash(&password)).await
        && let Ok(new) = new
    {
        let who = user.clone();
        let _ = s
            .store
            .write(crate::store::Durability::Acknowledged, move |c| {
                crate::auth::set_user(c, &who, &new, true)
            })
            .await;
    }
    if !ok || stored.is_none() {
        tracing::warn!(user = ?shown, client = %ip, "failed console login");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_login",
            "用户名或密码错误",
            "wrong user or password",
        ));
    }
    s.sessions.succeeded(ip);
    let (token, session) = s.sessions.create(&user);
    tracing::info!(user = ?shown, client = %ip, "console login");
    let secure = secure.is_some_and(|axum::Extension(crate::web::serve::Secure(s))| s);
    let cookie = format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        crate::auth::SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    Ok((
        [(axum::http::header::SET_COOKIE, cookie)],
        Json(serde_json::json!({ "user": session.user, "csrf": session.csrf })),
    )
        .into_response())
}

/// `GET /api/v1/session`: who is logged in (with the CSRF token), or 401.
pub async fn whoami(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    Ok(
        match cookie_token(&headers).and_then(|t| s.sessions.get(&t)) {
            Some(session) => {
                Json(serde_json::json!({ "user": session.user, "csrf": session.csrf }))
                    .into_response()
            }
            None => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "未登录",
                    "not logged in",
                ));
            }
        },
    )
}

/// `DELETE /api/v1/session`: logs out.
pub async fn logout(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(t) = cookie_token(&headers) {
        s.sessions.remove(&t);
    }
    Ok((
        [(
            axum::http::header::SET_COOKIE,
            format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        )],
        StatusCode::NO_CONTENT,
    )
        .into_response())
}
