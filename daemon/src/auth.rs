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

use crate::store::StoreError;
use crate::time::now_rfc3339;

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

/// argon2id's cost for new hashes: 12 MiB and 3 passes, one of OWASP's
/// equivalent settings (19 MiB and 2 passes is another), chosen for the
/// memory of a 1 GB box. Older hashes keep their own until the next login.
const M_COST: u32 = 12 * 1024;
const T_COST: u32 = 3;

fn argon2() -> Argon2<'static> {
    let params = argon2::Params::new(M_COST, T_COST, 1, None).unwrap_or_default();
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// An argon2id hash (PHC string) of `password`. Slow on purpose: call it
/// off the async threads.
pub fn hash(password: &str) -> Result<String, String> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(format!("a password has at least {MIN_PASSWORD} characters"));
    }
    argon2()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether a stored hash has other costs than new ones get (it is hashed
/// again at the next good login).
pub fn needs_rehash(hash: &str) -> bool {
    argon2::PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Params::try_from(&h).is_ok_and(|p| p.m_cost() != M_COST || p.t_cost() != T_COST)
    })
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

/// Password checks that may run at once: argon2id takes 19 MiB each, and a
/// flood of logins must not take the memory of a 1 GB box (an out-of-memory
/// kill drops the relay).
pub const VERIFYING: usize = 2;
/// How long a login waits for a turn to be checked before it is told to
/// come back (429).
pub const VERIFY_WAIT: Duration = Duration::from_secs(2);

/// Console sessions, failed-login counts and the turns to check passwords.
#[derive(Debug)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    verifying: tokio::sync::Semaphore,
    verifier: std::sync::OnceLock<Verifier>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            sessions: Mutex::default(),
            failures: Mutex::default(),
            verifying: tokio::sync::Semaphore::new(VERIFYING),
            verifier: std::sync::OnceLock::new(),
        }
    }
}

/// A password to check, and where the answer goes.
type Check = (String, String, tokio::sync::oneshot::Sender<bool>);

/// [`VERIFYING`] threads of their own that check passwords: argon2's
/// memory is then taken in at most that many allocator arenas (on the
/// blocking pool every thread kept its own 19 MiB: 12 logins took the
/// daemon from 24 to 220 MB), and is given back to the system after each
/// check.
#[derive(Debug)]
pub struct Verifier {
    tx: std::sync::mpsc::Sender<Check>,
}

impl Verifier {
    fn start() -> Verifier {
        let (tx, rx) = std::sync::mpsc::channel::<Check>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for i in 0..VERIFYING {
            let rx = std::sync::Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("password-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx.lock().ok().and_then(|r| r.recv().ok());
                        let Some((password, hash, reply)) = job else {
                            return;
                        };
                        let ok = verify(&password, &hash);
                        crate::lifecycle::release_memory();
                        let _ = reply.send(ok);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password checker");
            }
        }
        Verifier { tx }
    }

    /// Whether `password` matches `hash`, checked on a verifier thread.
    pub async fn verify(&self, password: String, hash: String) -> bool {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.tx.send((password, hash, reply)).is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }
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

    /// Takes one of `ip`'s failure slots before its password is checked
    /// (so concurrent attempts cannot all pass the limit): false when they
    /// are used up for this window. A login that succeeds gives it back.
    pub fn begin(&self, ip: IpAddr) -> bool {
        let Ok(mut m) = self.failures.lock() else {
            return false;
        };
        if m.len() > 10_000 {
            m.retain(|_, (_, since)| since.elapsed() < FAIL_WINDOW);
        }
        let e = m.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() >= FAIL_WINDOW {
            *e = (0, Instant::now());
        }
        if e.0 >= MAX_FAILURES {
            return false;
        }
        e.0 += 1;
        true
    }

    /// The password checkers.
    pub fn verifier(&self) -> &Verifier {
        self.verifier.get_or_init(Verifier::start)
    }

    /// A turn to check a password, waiting at most [`VERIFY_WAIT`]; `None`
    /// when too many are being checked (the caller answers 429).
    pub async fn verify_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        tokio::time::timeout(VERIFY_WAIT, self.verifying.acquire())
            .await
            .ok()?
            .ok()
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
            assert!(s.begin(ip), "a slot is taken before the check");
        }
        assert!(!s.begin(ip), "used up, however many run at once");
        assert!(s.begin([10, 0, 0, 8].into()), "per address");
        s.succeeded(ip);
        assert!(s.begin(ip), "a success gives the slots back");
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name(" 王班长 "), Ok("王班长".into()));
        assert!(check_name("").is_err());
        assert!(check_name("a\nb").is_err());
    }
}
