//! Supervisors: accounts (argon2id hashes in the store, no default
//! credentials), console sessions (in memory, HttpOnly SameSite=Strict
//! cookies with a CSRF token for every change), and a limit on failed logins
//! per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use rusqlite::{Connection, OptionalExtension};

use crate::store::{StoreError, now_rfc3339};

/// How long a console session lasts (a shift and a half).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Failed logins allowed per client address per [`FAIL_WINDOW`].
pub const MAX_FAILURES: u32 = 5;
/// The window for counting failed logins.
pub const FAIL_WINDOW: Duration = Duration::from_secs(60);
/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 10;

/// A supervisor name: 1 to 32 characters, no control characters.
pub fn check_name(name: &str) -> Result<String, &'static str> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 32 {
        return Err("a name is 1 to 32 characters");
    }
    if n.chars().any(char::is_control) {
        return Err("a name has no control characters");
    }
    Ok(n.to_owned())
}

/// An argon2id hash (PHC string) of `password`. Slow on purpose: call it
/// off the async threads.
pub fn hash(password: &str) -> Result<String, String> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(format!("a password has at least {MIN_PASSWORD} characters"));
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Adds a supervisor, or changes the password of an existing one when
/// `replace`.
pub fn set_user(
    conn: &Connection,
    name: &str,
    password_hash: &str,
    replace: bool,
) -> Result<bool, StoreError> {
    let now = now_rfc3339();
    let exists = conn
        .query_row("SELECT 1 FROM users WHERE name = ?1", [name], |_| Ok(()))
        .optional()?
        .is_some();
    match (exists, replace) {
        (true, false) => Err(StoreError::Rejected(format!(
            "supervisor `{name}` exists already"
        ))),
        (false, true) => Err(StoreError::Rejected(format!("no supervisor `{name}`"))),
        (true, true) => {
            conn.execute(
                "UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE name = ?1",
                (name, password_hash, &now),
            )?;
            Ok(false)
        }
        (false, false) => {
            conn.execute(
                "INSERT INTO users(name, password_hash, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
                (name, password_hash, &now),
            )?;
            Ok(true)
        }
    }
}

/// The stored hash of a supervisor.
pub fn stored_hash(conn: &Connection, name: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT password_hash FROM users WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()?)
}

/// How many supervisors exist.
pub fn count(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?)
}

/// Whether `password` matches `hash` (constant-time inside argon2). A hash
/// that does not parse never matches.
pub fn verify(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// A logged-in supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The supervisor's name.
    pub user: String,
    /// Must come back in `X-CSRF-Token` with every change.
    pub csrf: String,
    expires: Instant,
}

fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Console sessions and failed-login counts.
#[derive(Debug, Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Sessions {
    /// A new session for `user`: (cookie token, session).
    pub fn create(&self, user: &str) -> (String, Session) {
        let token = random_token();
        let s = Session {
            user: user.to_owned(),
            csrf: random_token(),
            expires: Instant::now() + SESSION_TTL,
        };
        if let Ok(mut m) = self.sessions.lock() {
            let now = Instant::now();
            m.retain(|_, s| s.expires > now);
            m.insert(token.clone(), s.clone());
        }
        (token, s)
    }

    /// The live session of a cookie token.
    pub fn get(&self, token: &str) -> Option<Session> {
        let m = self.sessions.lock().ok()?;
        m.get(token).filter(|s| s.expires > Instant::now()).cloned()
    }

    /// Ends a session.
    pub fn remove(&self, token: &str) {
        if let Ok(mut m) = self.sessions.lock() {
            m.remove(token);
        }
    }

    /// Whether `ip` may try to log in now.
    pub fn may_try(&self, ip: IpAddr) -> bool {
        let Ok(m) = self.failures.lock() else {
            return false;
        };
        match m.get(&ip) {
            Some((n, since)) if since.elapsed() < FAIL_WINDOW => *n < MAX_FAILURES,
            _ => true,
        }
    }

    /// Counts a failed login from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        if let Ok(mut m) = self.failures.lock() {
            if m.len() > 10_000 {
                m.retain(|_, (_, since)| since.elapsed() < FAIL_WINDOW);
            }
            let e = m.entry(ip).or_insert((0, Instant::now()));
            if e.1.elapsed() >= FAIL_WINDOW {
                *e = (0, Instant::now());
            }
            e.0 += 1;
        }
    }

    /// Forgets the failures of `ip` after a successful login.
    pub fn succeeded(&self, ip: IpAddr) {
        if let Ok(mut m) = self.failures.lock() {
            m.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        assert!(hash("short").is_err());
        let h = hash("correct horse battery").unwrap_or_default();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse batterY", &h));
        assert!(!verify("anything", "not a hash"));
    }

    #[test]
    fn sessions_and_login_limits() {
        let s = Sessions::default();
        let (token, sess) = s.create("王班长");
        assert_eq!(s.get(&token).map(|x| x.user), Some("王班长".into()));
        assert_ne!(token, sess.csrf);
        s.remove(&token);
        assert!(s.get(&token).is_none());
        let ip: IpAddr = [10, 0, 0, 7].into();
        for _ in 0..MAX_FAILURES {
            assert!(s.may_try(ip));
            s.failed(ip);
        }
        assert!(!s.may_try(ip));
        assert!(s.may_try([10, 0, 0, 8].into()), "per address");
        s.succeeded(ip);
        assert!(s.may_try(ip));
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name(" 王班长 "), Ok("王班长".into()));
        assert!(check_name("").is_err());
        assert!(check_name("a\nb").is_err());
    }
}
