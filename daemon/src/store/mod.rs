//! The store: the only code that touches SQLite.
//!
//! * One writer thread owns the read-write connection and is fed jobs through
//!   a bounded channel. It takes whatever jobs are queued (up to
//!   [`MAX_BATCH`]) and runs them in one transaction, each inside its own
//!   savepoint, so a failing job rolls back alone and a burst of check-ins
//!   costs one `fsync`, not one each (group commit).
//! * A batch that holds any [`Durability::Acknowledged`] job commits with
//!   `synchronous=FULL`: when the caller's future resolves, the record is on
//!   the disk and survives power loss. Bulk data (readings) commits with
//!   `synchronous=NORMAL`, which in WAL mode is crash-safe but may lose the
//!   last commits on power loss.
//! * Readers use their own read-only connections from a small pool, on the
//!   blocking thread pool, and never wait for the writer (WAL).
//! * Nothing else in Pithead holds a `rusqlite::Connection`.

pub mod events;
pub mod outbox;
pub mod retention;
pub mod schema;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::time::now_rfc3339;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "pithead.db";

/// Most jobs committed in one transaction.
pub const MAX_BATCH: usize = 256;

/// Jobs that may wait for the writer before callers are held back.
const QUEUE: usize = 4096;

/// How hard a write must be on the disk before it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A record the box answers "ok" for to a person or the county (check-in,
    /// hazard report, acknowledgement, alarm event): fsynced before the reply.
    Acknowledged,
    /// Bulk data (readings, aggregates): batched, crash-safe, may lose the
    /// last second on power loss.
    Bulk,
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The database file could not be opened or created.
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// SQLite's reason.
        source: rusqlite::Error,
    },
    /// The file is not a usable SQLite database.
    #[error(
        "database {path} is damaged or is not a Pithead database ({source}); \
         stop pithead, move the file aside (keep it for investigation) and start again \
         to begin a new one"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// SQLite's reason.
        source: rusqlite::Error,
    },
    /// The schema could not be brought up to date.
    #[error("database {path}: {source}")]
    Migrate {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: schema::MigrateError,
    },
    /// The disk (or the database's size limit) is full. The record was not
    /// saved; the daemon goes on and retries later writes.
    #[error("the disk is full; the record was not saved")]
    DiskFull,
    /// The store was closed (shutdown).
    #[error("the store is shutting down")]
    Closed,
    /// The database could not be opened at start; the daemon runs without
    /// it (alarms and outputs work, nothing is recorded).
    #[error("the database is not available: {0}")]
    Unavailable(String),
    /// A record failed a rule of its own (bad input, unknown reference).
    #[error("{0}")]
    Rejected(String),
    /// Any other SQLite failure.
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::DiskFull,
            _ => StoreError::Sqlite(e),
        }
    }
}

impl StoreError {
    /// A copy for fanning one commit failure out to every job of a batch.
    fn for_batch(e: &rusqlite::Error) -> StoreError {
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::DiskFull,
            _ => StoreError::Rejected(format!("commit failed: {e}")),
        }
    }
}

type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A job's body: given the connection inside an open transaction (or the
/// reason there is none), it runs and says whether it succeeded, and hands
/// back what to do once the commit's outcome is known.
type Run = Box<dyn FnOnce(Result<&Connection, StoreError>) -> (Outcome, Finish) + Send>;

/// How a job's body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Failed,
    DiskFull,
}

struct Job {
    durability: Durability,
    run: Run,
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    jobs: mpsc::Sender<Job>,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish()
    }
}

struct Inner {
    path: PathBuf,
    /// Why the database cannot be used now, for a store that runs without
    /// one (it may be opened later: [`Store::open_retrying`]).
    broken: Mutex<Option<String>>,
    /// Whether the database is open; watched by [`Store::opened`].
    open: tokio::sync::watch::Sender<bool>,
    readers: Mutex<Vec<Connection>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Notified after a commit that added outbox rows.
    outbox: Arc<tokio::sync::Notify>,
    /// The highest outbox row id that is durable.
    durable: Arc<std::sync::atomic::AtomicI64>,
    /// `NORMAL` commits that added outbox rows and were synced after.
    synced_after_bulk: Arc<AtomicU64>,
    /// Whether the disk is full, as the writer last found it.
    disk: Arc<DiskState>,
}

impl Inner {
    fn broken(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Longest wait between attempts to open a database that could not be
/// opened at start.
const MAX_REOPEN: Duration = Duration::from_secs(60);

/// Whether the disk is full, kept by the writer thread: set when a write
/// fails for want of space, cleared only by a commit that wrote something
/// (a transaction that changes nothing commits on a full disk too). Each
/// change is logged once.
#[derive(Debug)]
struct DiskState {
    path: PathBuf,
    full: AtomicBool,
    refused: AtomicU64,
}

impl DiskState {
    fn new(path: PathBuf) -> Arc<DiskState> {
        Arc::new(DiskState {
            path,
            full: AtomicBool::new(false),
            refused: AtomicU64::new(0),
        })
    }

    /// `writes` were refused for want of space.
    fn full(&self, writes: usize) {
        self.refused
            .fetch_add(u64::try_from(writes).unwrap_or(u64::MAX), Ordering::Relaxed);
        if !self.full.swap(true, Ordering::Relaxed) {
            tracing::error!(
                path = %self.path.display(),
                "the disk is full: new records are refused until space is freed \
                 (alarms and outputs are not affected)"
            );
        }
    }

    /// A commit wrote rows: there is space.
    fn wrote(&self) {
        if self.full.swap(false, Ordering::Relaxed) {
            tracing::warn!("disk space is back: records are saved again");
        }
    }
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir`, brings its
    /// schema up to date and starts the writer thread.
    ///
    /// Blocking: call it before the runtime is busy, or in `spawn_blocking`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join(DB_FILE);
        let mut conn = open_database(data_dir)?;
        let (store, rx, notify) = Store::new(path, None);
        let writer_disk = Arc::clone(&store.inner.disk);
        notify.watch(&mut conn)?;
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(conn, rx, &notify, &writer_disk))
            .map_err(|e| StoreError::Rejected(format!("cannot start the store writer: {e}")))?;
        store.inner.open.send_replace(true);
        if let Ok(mut w) = store.inner.writer.lock() {
            *w = Some(writer);
        }
        Ok(store)
    }

    /// As [`Store::open`]; when the database cannot be opened, a store
    /// without one (every call fails with [`StoreError::Unavailable`]
    /// naming the reason) that keeps trying in the background, every
    /// second at first and at most every [`MAX_REOPEN`], and works as soon
    /// as it succeeds ([`Store::opened`] resolves then). The first error
    /// comes back with it.
    ///
    /// Blocking: call it in `spawn_blocking`.
    pub fn open_retrying(data_dir: &Path) -> (Store, Option<StoreError>) {
        let first = match Store::open(data_dir) {
            Ok(store) => return (store, None),
            Err(e) => e,
        };
        let path = data_dir.join(DB_FILE);
        let (store, rx, notify) = Store::new(path, Some(first.to_string()));
        let inner = Arc::clone(&store.inner);
        let dir = data_dir.to_owned();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || reopen_loop(&dir, &inner, rx, notify));
        match thread {
            Ok(t) => {
                if let Ok(mut w) = store.inner.writer.lock() {
                    *w = Some(t);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the store writer: the database will not be retried")
            }
        }
        (store, Some(first))
    }

    fn new(path: PathBuf, broken: Option<String>) -> (Store, mpsc::Receiver<Job>, OutboxNotify) {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let outbox = Arc::new(tokio::sync::Notify::new());
        let durable = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let synced_after_bulk = Arc::new(AtomicU64::new(0));
        let notify = OutboxNotify {
            added: Arc::new(AtomicBool::new(false)),
            notify: Arc::clone(&outbox),
            durable: Arc::clone(&durable),
            wal: wal_path(&path),
            seq: seq_file(&path),
            synced_after_bulk: Arc::clone(&synced_after_bulk),
        };
        let store = Store {
            jobs,
            inner: Arc::new(Inner {
                disk: DiskState::new(path.clone()),
                durable,
                synced_after_bulk,
                path,
                broken: Mutex::new(broken),
                open: tokio::sync::watch::Sender::new(false),
                readers: Mutex::new(Vec::new()),
                writer: Mutex::new(None),
                outbox,
            }),
        };
        (store, rx, notify)
    }

    /// A store without a database, for a daemon whose database could not be
    /// opened: every call fails with [`StoreError::Unavailable`] naming
    /// `reason`, and everything that does not need the disk goes on.
    pub fn unavailable(path: PathBuf, reason: String) -> Store {
        Store::new(path, Some(reason)).0
    }

    /// Why the database is unavailable, if it is.
    pub fn unavailable_reason(&self) -> Option<String> {
        self.inner.broken()
    }

    /// The highest outbox row id on the disk for good: rows above it are
    /// committed but may still be lost to a power cut, and are not
    /// published yet.
    pub fn durable_outbox(&self) -> i64 {
        self.inner.durable.load(Ordering::Relaxed)
    }

    /// Commits with `synchronous=NORMAL` that added outbox rows and had the
    /// write-ahead log synced after them, since start.
    pub fn outbox_syncs_after_bulk(&self) -> u64 {
        self.inner.synced_after_bulk.load(Ordering::Relaxed)
    }

    /// Resolves once the database is open (at once for one opened at start).
    pub async fn opened(&self) {
        let mut rx = self.inner.open.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }

    /// Resolves once a commit has added outbox rows since the last call
    /// resolved (at once if one has). Never resolves for a store without a
    /// database.
    pub async fn outbox_added(&self) {
        self.inner.outbox.notified().await;
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` in a write transaction and resolves once it is committed with
    /// the requested durability. If `f` fails, its changes are rolled back
    /// and nothing else in the batch is affected.
    pub async fn write<T, F>(&self, durability: Durability, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if let Some(reason) = self.inner.broken() {
            return Err(StoreError::Unavailable(reason));
        }
        let (reply, answer) = oneshot::channel();
        let run: Run = Box::new(move |conn| {
            let result = conn.and_then(f);
            let ok = match &result {
                Ok(_) => Outcome::Ok,
                Err(StoreError::DiskFull) => Outcome::DiskFull,
                Err(_) => Outcome::Failed,
            };
            let finish: Finish = Box::new(move |commit| {
                let _ = reply.send(commit.and(result));
            });
            (ok, finish)
        });
        self.jobs
            .send(Job { durability, run })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Whether the disk is full: records are being refused. Clears by
    /// itself once a commit writes again.
    pub fn disk_full(&self) -> bool {
        self.inner.disk.full.load(Ordering::Relaxed)
    }

    /// Writes refused because the disk was full, since start.
    pub fn refused_for_full_disk(&self) -> u64 {
        self.inner.disk.refused.load(Ordering::Relaxed)
    }

    /// A file beside the database (a hazard photo) could not be written for
    /// want of space: the disk is full for the store too.
    pub fn note_disk_full(&self) {
        self.inner.disk.full(1);
    }

    /// Runs `f` on a read-only connection on the blocking pool. Readers see
    /// the last committed state and never block the writer.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if let Some(reason) = self.inner.broken() {
            return Err(StoreError::Unavailable(reason));
        }
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let conn = inner.take_reader()?;
            let result = f(&conn);
            inner.put_reader(conn);
            result
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Stops accepting jobs, lets the writer finish what is queued and waits
    /// for it. Other clones of the handle get [`StoreError::Closed`].
    pub async fn close(self) {
        let Store { jobs, inner } = self;
        drop(jobs);
        let handle = inner.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

impl Inner {
    fn take_reader(&self) -> Result<Connection, StoreError> {
        if let Some(c) = self.readers.lock().ok().and_then(|mut r| r.pop()) {
            return Ok(c);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    }

    fn put_reader(&self, conn: Connection) {
        if let Ok(mut r) = self.readers.lock()
            && r.len() < 4
        {
            r.push(conn);
        }
    }
}

/// The write-ahead log of the database at `db`.
fn wal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

/// The database of `data_dir`, created if needed, its schema up to date.
fn open_database(data_dir: &Path) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
        path: data_dir.to_owned(),
        source,
    })?;
    let path = data_dir.join(DB_FILE);
    let mut conn = open_writer(&path)?;
    schema::migrate(&mut conn, None).map_err(|source| StoreError::Migrate {
        path: path.clone(),
        source,
    })?;
    init_meta(&conn)?;
    renew_epoch_if_restored(&conn, &path)?;
    Ok(conn)
}

/// The file beside the database that remembers how far the lanes' sequence
/// numbers have gone (`EPOCH NEXT`, `NEXT` the sum of every lane's next
/// number), written by the writer after durable commits that added outbox
/// rows, without a sync: after a power cut it can only lag the database.
fn seq_file(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".seq");
    PathBuf::from(p)
}

fn seq_sum(conn: &Connection) -> Result<i64, StoreError> {
    Ok(
        conn.query_row("SELECT coalesce(sum(next), 0) FROM lane_seq", [], |r| {
            r.get(0)
        })?,
    )
}

/// A database whose sequence numbers are behind what this data directory
/// already sent — an older copy put back (a backup restored) — would give
/// the county numbers it already has under new message ids. It gets a new
/// epoch instead: the county sees the numbers start a new series.
fn renew_epoch_if_restored(conn: &Connection, db: &Path) -> Result<(), StoreError> {
    let epoch = outbox::epoch(conn)?;
    let now = seq_sum(conn)?;
    let file = seq_file(db);
    let seen = std::fs::read_to_string(&file).ok().and_then(|t| {
        let (e, n) = t.trim().split_once(' ')?;
        Some((e.to_owned(), n.parse::<i64>().ok()?))
    });
    let epoch = match seen {
        Some((e, n)) if e == epoch && n > now => {
            let new = uuid::Uuid::new_v4().to_string();
            set_meta(conn, "epoch", &new)?;
            events::insert(
                conn,
                &now_rfc3339(),
                &events::NewEvent {
                    kind: "store.epoch_renewed".into(),
                    actor: None,
                    subject: None,
                    detail: serde_json::json!({
                        "old": e, "new": new, "numbers_sent": n, "numbers_here": now,
                        "reason": "the database is older than what this data directory already numbered (a backup put back?)",
                    }),
                },
            )?;
            tracing::warn!(old = %e, new = %new, "the database is behind its own sequence numbers (a backup put back?): a new epoch, so no number is given twice");
            new
        }
        _ => epoch,
    };
    if let Err(e) = std::fs::write(&file, format!("{epoch} {now}\n")) {
        tracing::warn!(error = %e, file = %file.display(), "cannot note the sequence numbers");
    }
    Ok(())
}

/// The writer of a store whose database could not be opened at start:
/// tries again with a growing pause, answers the jobs that arrive meanwhile
/// (there are few: writers check first) with the reason, and once the
/// database opens becomes the normal writer.
fn reopen_loop(
    data_dir: &Path,
    inner: &Arc<Inner>,
    mut rx: mpsc::Receiver<Job>,
    notify: OutboxNotify,
) {
    let mut wait = Duration::from_secs(1);
    let mut last_error = inner.broken().unwrap_or_default();
    loop {
        let until = std::time::Instant::now() + wait;
        while std::time::Instant::now() < until {
            while let Ok(job) = rx.try_recv() {
                let (_, finish) = (job.run)(Err(StoreError::Unavailable(last_error.clone())));
                finish(Ok(()));
            }
            if rx.is_closed() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        match open_database(data_dir).and_then(|mut conn| notify.watch(&mut conn).map(|()| conn)) {
            Ok(conn) => {
                if let Ok(mut b) = inner.broken.lock() {
                    *b = None;
                }
                inner.open.send_replace(true);
                tracing::warn!(path = %inner.path.display(), "the database is open again: records are kept again");
                writer_loop(conn, rx, &notify, &inner.disk);
                return;
            }
            Err(e) => {
                let text = e.to_string();
                if text != last_error {
                    tracing::error!(error = %text, "the database still cannot be opened");
                }
                if let Ok(mut b) = inner.broken.lock() {
                    b.clone_from(&Some(text.clone()));
                }
                last_error = text;
                wait = (wait * 2).min(MAX_REOPEN);
            }
        }
    }
}

fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let fail = |source: rusqlite::Error| match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: path.to_owned(),
            source,
        },
        _ => StoreError::Open {
            path: path.to_owned(),
            source,
        },
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(fail)?;
    // The first statement reads the header: a file that is not a database
    // fails here, with the file named.
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(fail)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Rejected(format!(
            "database {}: cannot switch to WAL mode (got {mode}); is the file on a network share?",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(fail)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(fail)?;
    // Read the schema: a file damaged in its first pages fails here. A full
    // integrity check would read every page (minutes on two years of data)
    // and is left to the operator (`PRAGMA integrity_check`).
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(fail)?;
    Ok(conn)
}

/// Values set once in the life of a database.
fn init_meta(conn: &Connection) -> Result<(), StoreError> {
    // The epoch changes only when the database is created anew: a receiver
    // seeing a new epoch knows sequence numbers started again.
    conn.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES ('epoch', ?1), ('created_at', ?2)",
        (uuid::Uuid::new_v4().to_string(), now_rfc3339()),
    )?;
    Ok(())
}

/// Sets a value in `meta`, inside the caller's transaction.
pub fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )?;
    Ok(())
}

/// Tells the sync task that committed outbox rows are waiting, and how far
/// they are durable.
struct OutboxNotify {
    /// Set by the update hook when a row is inserted into the outbox.
    added: Arc<AtomicBool>,
    notify: Arc<tokio::sync::Notify>,
    /// The highest outbox row id on the disk for good (fsynced): the sync
    /// task publishes nothing above it.
    durable: Arc<std::sync::atomic::AtomicI64>,
    /// The database's write-ahead log, fsynced after a `NORMAL` commit
    /// that added outbox rows.
    wal: PathBuf,
    /// How often that was needed, since start.
    synced_after_bulk: Arc<AtomicU64>,
    /// Where how far the sequence numbers went is noted.
    seq: PathBuf,
}

impl OutboxNotify {
    /// Installs the update hook on the writer's connection: a commit that
    /// added an outbox row wakes the sync task at once, instead of at the
    /// next poll of the table.
    fn watch(&self, conn: &mut Connection) -> Result<(), StoreError> {
        // What is in the WAL at open may have outlived a killed process
        // but not yet a power cut: sync it before anything is published.
        if let Err(e) = std::fs::File::open(&self.wal).and_then(|f| f.sync_data())
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(StoreError::Rejected(format!(
                "cannot sync {}: {e}",
                self.wal.display()
            )));
        }
        let max: i64 =
            conn.query_row("SELECT coalesce(max(id), 0) FROM outbox", [], |r| r.get(0))?;
        self.durable.store(max, Ordering::Relaxed);
        let flag = Arc::clone(&self.added);
        conn.update_hook(Some(move |action, _db: &str, table: &str, _row| {
            if action == rusqlite::hooks::Action::SQLITE_INSERT && table == "outbox" {
                flag.store(true, Ordering::Relaxed);
            }
        }))
        .map_err(|e| StoreError::Rejected(format!("cannot watch the outbox: {e}")))
    }

    /// A batch that added outbox rows has committed (`full`: with
    /// `synchronous=FULL`): make it durable if it is not yet, and only then
    /// let the sync task see its rows. A row the broker acknowledged must
    /// never be lost to a power cut, or its sequence number would be given
    /// to another record.
    fn made_durable(&self, conn: &Connection, full: bool) {
        if !self.added.load(Ordering::Relaxed) {
            return;
        }
        if !full {
            // The commit is in the WAL; syncing the file makes it so on
            // the disk (fsync is per file, whichever descriptor).
            match std::fs::File::open(&self.wal).and_then(|f| f.sync_data()) {
                Ok(()) => {
                    self.synced_after_bulk.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!(error = %e, wal = %self.wal.display(), "cannot sync the write-ahead log: new outbox rows wait for the next durable commit");
                    return;
                }
            }
        }
        match conn.query_row("SELECT coalesce(max(id), 0) FROM outbox", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(max) => self.durable.store(max, Ordering::Relaxed),
            Err(e) => tracing::error!(error = %e, "cannot read the outbox's last row"),
        }
        // Note how far the numbers went (a restored backup is found by it).
        if let (Ok(epoch), Ok(sum)) = (outbox::epoch(conn), seq_sum(conn))
            && let Err(e) = std::fs::write(&self.seq, format!("{epoch} {sum}\n"))
        {
            tracing::debug!(error = %e, "cannot note the sequence numbers");
        }
    }

    fn committed(&self) {
        if self.added.swap(false, Ordering::Relaxed) {
            self.notify.notify_one();
        }
    }

    fn rolled_back(&self) {
        self.added.store(false, Ordering::Relaxed);
    }
}

fn writer_loop(
    conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    notify: &OutboxNotify,
    disk: &DiskState,
) {
    let mut synchronous_full = true;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(job) = rx.blocking_recv() {
        batch.push(job);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let full = batch
            .iter()
            .any(|j| j.durability == Durability::Acknowledged);
        if full != synchronous_full {
            let mode = if full { "FULL" } else { "NORMAL" };
            match conn.pragma_update(None, "synchronous", mode) {
                Ok(()) => synchronous_full = full,
                Err(e) => {
                    tracing::error!(error = %e, mode, "cannot set synchronous mode");
                    if full {
                        // An acknowledged record must not be committed
                        // without FULL: refuse the batch rather than risk it.
                        for job in batch.drain(..) {
                            let (_, finish) = (job.run)(Err(StoreError::Rejected(format!(
                                "cannot make the write durable: {e}"
                            ))));
                            finish(Ok(()));
                        }
                        continue;
                    }
                }
            }
        }
        if run_batch(&conn, &mut batch, notify, synchronous_full, disk) {
            notify.committed();
        } else {
            notify.rolled_back();
        }
    }
    tracing::debug!("store writer stopped");
}

/// Runs and commits a batch; whether it was committed.
///
/// `added` is the outbox hook's flag: a job rolled back to its savepoint
/// leaves it as it was before the job.
fn run_batch(
    conn: &Connection,
    batch: &mut Vec<Job>,
    notify: &OutboxNotify,
    full: bool,
    disk: &DiskState,
) -> bool {
    let added = &*notify.added;
    let mut finishes: Vec<Finish> = Vec::with_capacity(batch.len());
    let mut open = false;
    // Whether a job of this batch found the disk full, and whether one
    // that succeeded changed rows (only that proves there is space).
    let (mut refused, mut wrote) = (0usize, false);
    let is_full = |e: &rusqlite::Error| e.sqlite_error_code() == Some(ErrorCode::DiskFull);
    // Answers every job run so far in this batch with an error: their
    // writes are gone with the transaction.
    let abandon = |finishes: &mut Vec<Finish>, err: &dyn Fn() -> StoreError| {
        for f in finishes.drain(..) {
            f(Err(err()));
        }
    };
    for job in batch.drain(..) {
        if !open {
            if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
                tracing::error!(error = %e, "cannot begin a transaction");
                refuse(disk, &mut refused, usize::from(is_full(&e)));
                let (_, finish) = (job.run)(Err(StoreError::for_batch(&e)));
                finish(Ok(()));
                continue;
            }
            open = true;
        }
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            // Without a savepoint a failing job could not be undone alone:
            // do not run it.
            tracing::error!(error = %e, "savepoint failed");
            refuse(disk, &mut refused, usize::from(is_full(&e)));
            let (_, finish) = (job.run)(Err(StoreError::for_batch(&e)));
            finish(Ok(()));
            if conn.is_autocommit() {
                if is_full(&e) {
                    refuse(disk, &mut refused, finishes.len());
                }
                open = false;
                abandon(&mut finishes, &|| StoreError::for_batch(&e));
            }
            continue;
        }
        let added_before = added.load(Ordering::Relaxed);
        let changes_before = conn.total_changes();
        let (outcome, finish) = (job.run)(Ok(conn));
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back by itself (it does so
            // on a full disk or an I/O error): the jobs before this one in
            // the batch are lost too and must not be answered "ok".
            open = false;
            let err = || match outcome {
                Outcome::DiskFull => StoreError::DiskFull,
                _ => StoreError::Rejected("the transaction was rolled back by the database".into()),
            };
            if outcome == Outcome::DiskFull {
                // DiskState logs the change of state once.
                tracing::debug!(jobs = finishes.len() + 1, "disk full: batch rolled back");
                refuse(disk, &mut refused, finishes.len() + 1);
            } else {
                tracing::error!(
                    jobs = finishes.len() + 1,
                    ?outcome,
                    "transaction rolled back: batch not saved"
                );
            }
            abandon(&mut finishes, &err);
            // Even a job that swallowed its error was rolled back.
            finish(Err(err()));
            continue;
        }
        if outcome == Outcome::Ok {
            if let Err(e) = conn.execute_batch("RELEASE job") {
                tracing::error!(error = %e, "releasing a savepoint failed");
            }
            wrote |= conn.total_changes() > changes_before;
        } else if let Err(e) = conn
            .execute_batch("ROLLBACK TO job; RELEASE job")
            .inspect(|()| added.store(added_before, Ordering::Relaxed))
        {
            // The failed job's writes could not be undone: nothing of this
            // batch may be committed.
            tracing::error!(error = %e, "rolling back a failed job failed; abandoning the batch");
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            open = false;
            if is_full(&e) {
                refuse(disk, &mut refused, finishes.len() + 1);
            }
            abandon(&mut finishes, &|| StoreError::for_batch(&e));
            finish(Err(StoreError::for_batch(&e)));
            continue;
        }
        refuse(
            disk,
            &mut refused,
            usize::from(outcome == Outcome::DiskFull),
        );
        finishes.push(finish);
    }
    if !open {
        return false;
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => {
            notify.made_durable(conn, full);
            // Only a commit that wrote rows, in a batch where nothing found
            // the disk full, shows there is space again. The state is set
            // before anyone is answered, so an answer never runs ahead of it.
            if refused == 0 && wrote {
                disk.wrote();
            }
            for finish in finishes {
                finish(Ok(()));
            }
            true
        }
        Err(e) => {
            if is_full(&e) {
                // DiskState logs the change of state once.
                tracing::debug!(jobs = finishes.len(), "disk full: batch not saved");
                refuse(disk, &mut refused, finishes.len());
            } else {
                tracing::error!(error = %e, jobs = finishes.len(), "commit failed: batch not saved");
            }
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            abandon(&mut finishes, &|| StoreError::for_batch(&e));
            false
        }
    }
}

/// `writes` of a batch were refused for want of space: the state is set at
/// once, before they are answered.
fn refuse(disk: &DiskState, refused: &mut usize, writes: usize) {
    if writes > 0 {
        disk.full(writes);
        *refused += writes;
    }
}

#[cfg(test)]
mod tests;
