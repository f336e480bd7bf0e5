//! What every request passes before a handler: the `Host` it names (a
//! request for another host is a DNS-rebinding attempt), where a change
//! comes from (a cross-site form is refused), and who is a kiosk. Every
//! client on the station LAN is treated as possibly hostile.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, AppState};

/// The host names and addresses a request may name: the configured ones,
/// loopback, and the addresses the server listens on (unless every one).
pub fn allowed_hosts(cfg: &crate::config::Http) -> Vec<String> {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    hosts.extend(cfg.names.iter().map(|n| {
        n.trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase()
    }));
    for a in [Some(cfg.listen.as_str()), cfg.tls_listen.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(|a| a.parse::<SocketAddr>().ok())
        .filter(|a| !a.ip().is_unspecified())
    {
        hosts.push(a.ip().to_string());
    }
    hosts
}

/// The host part of a `Host` header, lower case, without the port.
pub fn host_of(value: &str) -> String {
    let v = value.trim();
    let host = if let Some(rest) = v.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        match v.rsplit_once(':') {
            Some((h, port)) if !h.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => v,
        }
    };
    host.to_ascii_lowercase()
}

/// Refuses a request naming another host, and marks every answer
/// `nosniff` (and `no-store` for the API: answers may hold names).
pub async fn host(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let named = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(host_of);
    let ok = named
        .as_deref()
        .is_some_and(|h| s.hosts.iter().any(|a| a == h));
    if !ok {
        tracing::debug!(host = ?named, "request for another host refused");
        return ApiError::respond(
            StatusCode::MISDIRECTED_REQUEST,
            "wrong_host",
            "请求的主机名不属于本站",
            "this request names a host that is not this station (http.names)",
        );
    }
    let api = req.uri().path().starts_with("/api/") || req.uri().path() == "/metrics";
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if api && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// The kiosk a request comes from: the box's own screen (loopback), or a
/// kiosk presenting its key in `X-Kiosk-Key`.
pub fn kiosk(s: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Option<String> {
    if peer.ip().is_loopback() {
        return Some(crate::kiosk_keys::LOCAL.to_owned());
    }
    let key = headers.get("x-kiosk-key").and_then(|v| v.to_str().ok())?;
    s.kiosk_keys.kiosk(key).map(str::to_owned)
}

/// Refuses a change to a public endpoint sent from another site: a
/// browser says where a request comes from (`Sec-Fetch-Site`, `Origin`),
/// and a page elsewhere must not make the kiosk's requests. A kiosk with
/// its key passes; a client that is no browser sends neither header.
pub async fn same_origin(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || req
            .headers()
            .get("x-kiosk-key")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|k| s.kiosk_keys.kiosk(k).is_some())
    {
        return next.run(req).await;
    }
    let h = req.headers();
    let site = h.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let origin = h.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let same = match (site, origin) {
        (Some(site), _) => matches!(site, "same-origin" | "none"),
        (None, Some(origin)) => origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host)),
        (None, None) => true,
    };
    if !same {
        tracing::warn!(client = %peer.ip(), ?site, ?origin, path = %req.uri().path(), "cross-site request refused");
        return ApiError::respond(
            StatusCode::FORBIDDEN,
            "cross_site",
            "拒绝来自其他网站的请求",
            "a request from another site is refused",
        );
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_headers_are_read_without_their_port() {
        assert_eq!(host_of("Pithead.local:8443"), "pithead.local");
        assert_eq!(host_of("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8080"), "::1");
        assert_eq!(host_of("::1"), "::1");
        assert_eq!(host_of("example.com"), "example.com");
        let cfg = crate::config::Http {
            listen: "127.0.0.1:8080".into(),
            tls_listen: Some("0.0.0.0:8443".into()),
            names: vec!["Pithead-1.local".into(), "192.168.1.20".into()],
            ..crate::config::Http::default()
        };
        let hosts = allowed_hosts(&cfg);
        for h in ["localhost", "127.0.0.1", "pithead-1.local", "192.168.1.20"] {
            assert!(hosts.contains(&h.to_owned()), "{h}: {hosts:?}");
        }
        assert!(!hosts.contains(&"0.0.0.0".to_owned()));
        assert!(!hosts.contains(&"evil.example".to_owned()));
    }
}
