//! A per-client-address limit on the public endpoints (check-ins, hazard
//! reports and lookups), for phones on the station Wi-Fi. The kiosk on the
//! box itself talks over loopback and is not limited: a shift change sends
//! dozens of miners through it in a minute.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, AppState};

/// Requests a client may make at once.
pub const BURST: f64 = 20.0;
/// Requests per second a client may sustain.
pub const RATE: f64 = 2.0;

/// Token buckets per client address.
#[derive(Debug, Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl Limiter {
    /// Takes a token for `ip` at `now`; false when its bucket is empty.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let Ok(mut b) = self.buckets.lock() else {
            return true;
        };
        if b.len() > 10_000 {
            // Forget clients whose buckets have refilled.
            b.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * RATE < BURST
            });
        }
        let (tokens, at) = b.entry(ip).or_insert((BURST, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * RATE).min(BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The middleware: 429 with a reason for a client over its limit.
pub async fn limit(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let ip = peer.ip();
    if !ip.is_loopback() && !s.limiter.allow(ip, Instant::now()) {
        return ApiError::respond(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "操作过于频繁，请稍后再试",
            "too many requests from this device; wait a moment",
        );
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate_per_address() {
        let l = Limiter::default();
        let a: IpAddr = [192, 0, 2, 1].into();
        let t0 = Instant::now();
        let allowed = (0..30).filter(|_| l.allow(a, t0)).count();
        assert_eq!(allowed, 20);
        assert!(
            l.allow([192, 0, 2, 2].into(), t0),
            "another address has its own bucket"
        );
        assert!(!l.allow(a, t0 + Duration::from_millis(100)));
        assert!(
            l.allow(a, t0 + Duration::from_millis(600)),
            "two a second come back"
        );
    }
}
