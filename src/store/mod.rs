//! The SQLite store: one writer thread that owns the only write connection, a small pool
//! of read connections used from `spawn_blocking`, and the schema migrations.
//!
//! Async code never touches a connection directly: it hands a closure to [`Store::write`]
//! (run inside an IMMEDIATE transaction on the writer thread, so read-modify-write sequences
//! such as slot reservation are atomic) or [`Store::read`]. This module owns the pragmas,
//! the migration runner and the repositories; it knows nothing about HTTP.
//!
//! **Group commit.** The writer takes every write that is waiting when it becomes free
//! (up to [`WRITE_BATCH_MAX`]) and runs them in one transaction, each under its own
//! savepoint: a write that fails or panics is rolled back alone, the others go on, and
//! each caller is answered only after the one commit (so an answer is never ahead of the
//! database). Under load this turns thousands of small commits a second into a few hundred.
//!
//! **Batch hook.** One piece of work may be installed to run at the end of a batch, in its
//! transaction, when a write of the batch asks for it ([`Store::write_hooked`]): the
//! scheduler places the sessions a batch queued in the same commit that queued them.
//!
//! **Checkpoints.** A thread of its own copies the write-ahead log back into the database
//! (passive checkpoints, with their fsyncs) a few times a second while writes come, so the
//! writer does not stop for that. Under writes that never pause such a checkpoint never
//! catches up (the writer adds frames while it copies), and SQLite starts the log over
//! only once every frame is copied; so after each round the thread asks the writer to
//! copy the few frames left, between two batches, and the next batch starts the log from
//! its beginning. The log then stays at a few tens of megabytes, and the writer stops for a
//! millisecond or two instead of for the copy and flush of all of them (what its own
//! automatic checkpoint would do, and still does if the thread falls far behind).

pub mod agents;
pub mod auth;
pub mod backup;
pub mod bootstrap;
pub mod directory;
pub mod fixture;
pub mod kernels;
pub mod keypairs;
pub mod kv;
mod migrate;
pub mod scheduling;
pub mod sessions;
pub mod ui_sessions;
pub mod vfolders;

pub use migrate::{SchemaState, KNOWN_SCHEMA_VERSION};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot open the database at {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("schema migration failed: {0}")]
    Migration(String),
    #[error("the database schema is version {found}, newer than this binary knows ({known}); upgrade backend-ai-manager or restore an older backup")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("the database writer has stopped")]
    Closed,
    #[error("the database could not commit: {0}")]
    Commit(String),
    #[error("the disk that holds the database is full; nothing was changed")]
    DiskFull,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the database {path} is in use by a running server (pid {pid}); stop it first")]
    InUse { path: PathBuf, pid: String },
    #[error("the database {} is an empty file (a failed copy or restore?); restore a backup into it, or remove it to start with a new database on purpose", path.display())]
    EmptyFile { path: PathBuf },
}

impl StoreError {
    /// The write failed because the database's disk is full (SQLite's `SQLITE_FULL`, or
    /// the operating system's `ENOSPC`): the operator must free space, the caller can do
    /// nothing but try later.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::DiskFull => true,
            StoreError::Sqlite(e) | StoreError::Open { source: e, .. } => sqlite_disk_full(e),
            StoreError::DataDir { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
            _ => false,
        }
    }
}

fn sqlite_disk_full(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
}

/// A failed begin or commit of a batch, as every write of the batch is told.
fn commit_error(e: &rusqlite::Error) -> StoreError {
    if sqlite_disk_full(e) {
        StoreError::DiskFull
    } else {
        StoreError::Commit(e.to_string())
    }
}

/// A queued write. Given the batch's open transaction it runs under its own savepoint and
/// returns how to answer its caller once the commit is known; given an error (the batch
/// could not begin), it answers with that at once.
type Job = Box<dyn FnOnce(Result<&Connection, StoreError>) -> Option<Answer> + Send>;
/// Answers a write's caller: with its own result if the batch committed (`None`), with the
/// commit's error otherwise.
type Answer = Box<dyn FnOnce(Option<StoreError>) + Send>;

/// Work run at the end of a batch that a [`Store::write_hooked`] write was part of, inside
/// the batch's transaction and under a savepoint of its own (on Err only the hook's changes
/// are rolled back). It returns what to do once the outcome is known: called with `true`
/// if the batch committed.
pub type BatchHook =
    Box<dyn FnMut(&Connection) -> Result<Box<dyn FnOnce(bool) + Send>, StoreError> + Send>;

/// What the writer thread is sent.
enum Msg {
    /// A write; `hooked` asks for the batch hook before the commit.
    Write { job: Job, hooked: bool },
    /// Installs (or, with `None`, removes) the batch hook.
    Hook(Option<BatchHook>),
}

/// Most writes committed together (see the module documentation).
const WRITE_BATCH_MAX: usize = 256;

/// Least time between two rounds of the checkpoint thread.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// Frames a round may leave to the writer: with more left after a pass (what came while it
/// copied), the thread runs another.
const CATCH_UP_FRAMES: i64 = 256;
/// Log pages at which the writer checkpoints itself (SQLite's default is 1000): only when
/// the checkpoint thread has fallen far behind (see the module documentation).
const WRITER_CHECKPOINT_PAGES: i64 = 32_000;
/// A restarted log file larger than this is truncated to it.
const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: mpsc::UnboundedSender<Msg>,
    readers: Mutex<Vec<Connection>>,
    /// One permit per read connection in use (see [`READ_POOL_KEEP`]).
    read_slots: tokio::sync::Semaphore,
    /// Bumped after a commit that changed what authentication reads (the `auth_changes`
    /// count of migration V7 moved): cached keypairs read before it are stale.
    auth_version: std::sync::atomic::AtomicU64,
    /// Active keypairs by access key, as read at an auth version (see [`Store::active_keypair`]).
    keypairs: Mutex<std::collections::HashMap<String, auth::CachedKeypair>>,
    /// What the writer has committed so far.
    stats: Arc<WriteStats>,
}

/// Counts kept by the writer thread (see [`Store::write_stats`]).
#[derive(Debug, Default)]
pub struct WriteStats {
    /// Writes committed.
    pub writes: std::sync::atomic::AtomicU64,
    /// Transactions committed (each holds a batch of writes).
    pub commits: std::sync::atomic::AtomicU64,
}

/// Reads run at once on the blocking pool: a read waits for a free connection rather than
/// opening another (opening one parses the whole schema, which under load cost more than
/// the reads themselves).
const READ_POOL_KEEP: usize = 16;
/// Read connections kept open: those of the blocking pool, and as many again for the
/// lookups [`Store::read_now`] runs on the runtime's own threads.
const READERS_KEPT: usize = 2 * READ_POOL_KEEP;

fn configure(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Each batched write runs under a savepoint, whose sub-journal would otherwise spill
    // to a temporary file past 64 KiB and stay there for the rest of the batch: a write
    // to that file for every page a write touched (a quarter of the writer's time).
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the database, applies pending migrations and starts the
    /// writer thread. Refuses a database whose schema is newer than this binary.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        refuse_empty_file(path)?;
        let mut conn = open_writer(path)?;
        // A schema change is preceded by a backup of the database as it was.
        let before = migrate::state(&conn)?;
        if let Some((v, _)) = &before.applied {
            if !before.pending.is_empty() && *v < migrate::KNOWN_SCHEMA_VERSION {
                let copy = path
                    .with_extension(format!("db.before-v{}.bak", migrate::KNOWN_SCHEMA_VERSION));
                backup::backup(path, &copy)?;
                tracing::info!(
                    "backed up the database to {} before migrating it",
                    copy.display()
                );
            }
        }
        migrate::run(&mut conn)?;
        Ok(Self::start(path, conn))
    }

    /// Opens an existing database without migrating it (for inspection commands).
    pub fn open_unmigrated(path: &Path) -> Result<(Store, SchemaState), StoreError> {
        let conn = open_writer(path)?;
        let state = migrate::state(&conn)?;
        Ok((Self::start(path, conn), state))
    }

    fn start(path: &Path, conn: Connection) -> Store {
        let (tx, rx) = mpsc::unbounded_channel::<Msg>();
        let inner = Arc::new(Inner {
            path: path.to_owned(),
            writer: tx,
            readers: Mutex::new(Vec::new()),
            read_slots: tokio::sync::Semaphore::new(READ_POOL_KEEP),
            auth_version: std::sync::atomic::AtomicU64::new(0),
            keypairs: Mutex::new(std::collections::HashMap::new()),
            stats: Arc::default(),
        });
        // The writer holds only a weak handle: dropping every Store closes the channel.
        let weak = Arc::downgrade(&inner);
        let checkpoints = start_checkpoints(path);
        let stats = inner.stats.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(conn, rx, weak, checkpoints, stats))
            .map_err(|e| tracing::error!("cannot start the database writer thread: {e}"))
            .ok();
        Store { inner }
    }

    /// Installs the batch hook (see [`BatchHook`]), replacing any; `None` removes it. It
    /// applies to batches the writer begins after this.
    pub fn set_batch_hook(&self, hook: Option<BatchHook>) {
        let _ = self.inner.writer.send(Msg::Hook(hook));
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// How many writes and commits the writer has made since the store opened.
    pub fn write_stats(&self) -> &WriteStats {
        &self.inner.stats
    }

    /// Runs `f` on the writer thread inside an IMMEDIATE transaction, under a savepoint of
    /// its own: what it did is committed if it returns Ok and rolled back if it returns Err
    /// or panics. The answer comes after the commit.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.submit(f, false).await
    }

    /// As [`Store::write`], and the batch hook runs before the batch commits (after every
    /// write of the batch), so it sees what `f` did.
    pub async fn write_hooked<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.submit(f, true).await
    }

    async fn submit<T, E, F>(&self, f: F, hooked: bool) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |conn| {
            let conn = match conn {
                Ok(conn) => conn,
                Err(e) => {
                    let _ = done_tx.send(Err(E::from(e)));
                    return None;
                }
            };
            let result = in_savepoint(conn, f);
            Some(Box::new(move |commit_error: Option<StoreError>| {
                let _ = done_tx.send(match (commit_error, result) {
                    (Some(e), Ok(_)) => Err(E::from(e)),
                    (_, result) => result,
                });
            }))
        });
        self.inner
            .writer
            .send(Msg::Write { job, hooked })
            .map_err(|_| E::from(StoreError::Closed))?;
        done_rx.await.map_err(|_| E::from(StoreError::Closed))?
    }

    /// Runs `f` at once on a read connection, on the calling thread. For lookups by key
    /// that touch a few rows (tens of microseconds): handing those to the blocking pool
    /// cost more in thread wake-ups than the read itself. Anything that scans or may wait
    /// goes through [`Store::read`]. Readers never wait for the writer (WAL).
    pub fn read_now<T, E, F>(&self, f: F) -> Result<T, E>
    where
        E: From<StoreError>,
        F: FnOnce(&Connection) -> Result<T, E>,
    {
        let conn = self.inner.take_reader().map_err(E::from)?;
        let result = f(&conn);
        self.inner.give_back(conn);
        result
    }

    /// Runs `f` on a read connection on the blocking pool.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let _slot = self
            .inner
            .read_slots
            .acquire()
            .await
            .map_err(|_| E::from(StoreError::Closed))?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner.take_reader().map_err(E::from)?;
            let result = f(&conn);
            inner.give_back(conn);
            result
        })
        .await
        .map_err(|_| E::from(StoreError::Closed))?
    }
}

/// Runs `f` under a savepoint, releasing it on Ok and rolling it back on Err or panic.
fn in_savepoint<T, E, F>(conn: &Connection, f: F) -> Result<T, E>
where
    E: From<StoreError>,
    F: FnOnce(&Connection) -> Result<T, E>,
{
    let exec = |sql: &str| -> Result<(), StoreError> {
        conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    };
    exec("SAVEPOINT write").map_err(E::from)?;
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn))).unwrap_or_else(|_| {
            Err(E::from(StoreError::Invalid(
                "a database write failed unexpectedly and was rolled back".into(),
            )))
        });
    let end = match &result {
        Ok(_) => exec("RELEASE write"),
        Err(_) => exec("ROLLBACK TO write").and_then(|_| exec("RELEASE write")),
    };
    match end {
        Ok(()) => result,
        Err(e) => Err(E::from(e)),
    }
}

/// The writer thread: runs the waiting writes in batches until every handle is dropped.
fn write_loop(
    mut conn: Connection,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    inner: std::sync::Weak<Inner>,
    checkpoints: Option<Checkpoints>,
    stats: Arc<WriteStats>,
) {
    if checkpoints.is_some() {
        let _ = conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES);
    }
    let _ = conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT);
    let mut auth_changes = auth_change_count(&conn);
    let mut hook: Option<BatchHook> = None;
    let mut batch = Vec::with_capacity(WRITE_BATCH_MAX);
    let mut hooked = false;
    let take =
        |msg: Msg, batch: &mut Vec<Job>, hooked: &mut bool, hook: &mut Option<BatchHook>| match msg
        {
            Msg::Write { job, hooked: h } => {
                batch.push(job);
                *hooked |= h;
            }
            Msg::Hook(h) => *hook = h,
        };
    while let Some(first) = rx.blocking_recv() {
        take(first, &mut batch, &mut hooked, &mut hook);
        while batch.len() < WRITE_BATCH_MAX {
            match rx.try_recv() {
                Ok(msg) => take(msg, &mut batch, &mut hooked, &mut hook),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let run_hook = std::mem::take(&mut hooked);
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                for job in batch.drain(..) {
                    job(Err(commit_error(&e)));
                }
                continue;
            }
        };
        let writes = batch.len() as u64;
        let answers: Vec<Answer> = batch.drain(..).filter_map(|job| job(Ok(&*tx))).collect();
        let after_hook = match hook.as_mut().filter(|_| run_hook) {
            Some(h) => in_savepoint(&tx, |c| h(c))
                .map_err(|e| {
                    tracing::warn!("the end-of-batch work failed and was rolled back: {e}")
                })
                .ok(),
            None => None,
        };
        let committed = tx.commit();
        if committed.is_ok() {
            use std::sync::atomic::Ordering::Relaxed;
            stats.writes.fetch_add(writes, Relaxed);
            stats.commits.fetch_add(1, Relaxed);
            if let Some(c) = &checkpoints {
                let _ = c.wake.try_send(());
            }
            let now = auth_change_count(&conn);
            if now != auth_changes || now.is_none() {
                auth_changes = now;
                if let Some(inner) = inner.upgrade() {
                    inner
                        .auth_version
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
        if let Some(after) = after_hook {
            after(committed.is_ok());
        }
        for answer in answers {
            answer(committed.as_ref().err().map(commit_error));
        }
        if let Some(c) = &checkpoints {
            if c.catch_up.swap(false, std::sync::atomic::Ordering::AcqRel) {
                if let Err(e) = passive_checkpoint(&conn) {
                    tracing::warn!("database checkpoint failed: {e}");
                }
            }
        }
    }
    // All handles dropped: checkpoint so the WAL does not linger.
    drop(checkpoints);
    let _ = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
}

/// The checkpoint thread's handles, held by the writer.
struct Checkpoints {
    /// Told after every commit; wakes the thread.
    wake: std::sync::mpsc::SyncSender<()>,
    /// Set by the thread after a round: the writer copies what is left.
    catch_up: Arc<std::sync::atomic::AtomicBool>,
}

/// A passive checkpoint on `conn`: the frames in the log and how many of them are now in
/// the database.
fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}

/// Starts the checkpoint thread (see the module documentation) on a connection of its own.
/// A round runs when a commit happened, at most every [`CHECKPOINT_EVERY`]: passive
/// checkpoints until at most [`CATCH_UP_FRAMES`] are left, then the writer is asked for
/// the rest. The thread ends with the writer. `None` if it could not start (the writer then
/// checkpoints itself, as SQLite does by default).
fn start_checkpoints(path: &Path) -> Option<Checkpoints> {
    let conn = Connection::open(path)
        .and_then(|c| c.busy_timeout(Duration::from_secs(5)).map(|_| c))
        .map_err(|e| tracing::warn!("cannot open a connection for checkpoints: {e}"))
        .ok()?;
    let (wake, rx) = std::sync::mpsc::sync_channel::<()>(1);
    let catch_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ask_writer = catch_up.clone();
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                // Each pass copies the frames that came during the one before (the log as it
                // was when the pass began); it stops when a pass had few to copy.
                let mut copied_to = 0;
                for _ in 0..4 {
                    match passive_checkpoint(&conn) {
                        Ok((log, _)) if log - copied_to > CATCH_UP_FRAMES => copied_to = log,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!("database checkpoint failed: {e}");
                            break;
                        }
                    }
                }
                ask_writer.store(true, std::sync::atomic::Ordering::Release);
                std::thread::sleep(CHECKPOINT_EVERY);
            }
        })
        .map_err(|e| tracing::warn!("cannot start the database checkpoint thread: {e}"))
        .ok()?;
    Some(Checkpoints { wake, catch_up })
}

/// The count of changes to what authentication reads (`None` before migration V7, and
/// then every commit counts as one).
fn auth_change_count(conn: &Connection) -> Option<i64> {
    conn.prepare_cached("SELECT n FROM auth_changes WHERE id = 1")
        .and_then(|mut st| st.query_row([], |r| r.get(0)))
        .ok()
}

impl Inner {
    fn take_reader(&self) -> Result<Connection, StoreError> {
        if let Some(c) = self.readers.lock().map_err(|_| StoreError::Closed)?.pop() {
            return Ok(c);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(|source| StoreError::Open {
            path: self.path.clone(),
            source,
        })?;
        configure(&conn)?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut pool) = self.readers.lock() {
            if pool.len() < READERS_KEPT {
                pool.push(conn);
            }
        }
    }
}

/// A database file that exists with no bytes (and no write-ahead log holding its pages) is
/// not a new database: SQLite would silently start over in it, and the data that should be
/// there would be gone unnoticed. A new database is one whose file does not exist yet.
fn refuse_empty_file(path: &Path) -> Result<(), StoreError> {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if len(path) == Some(0) && len(Path::new(&wal)).unwrap_or(0) == 0 {
        return Err(StoreError::EmptyFile {
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    let conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?;
    let setup = || -> Result<(), rusqlite::Error> {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                "SQLite refused WAL mode (got {mode}); concurrent readers will wait on writers"
            );
        }
        configure(&conn)
    };
    setup().map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?;
    Ok(conn)
}

/// Current time as the text form every timestamp column uses.
pub fn now_text() -> String {
    time_text(chrono::Utc::now())
}

/// A time as the text form every timestamp column uses.
pub fn time_text(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_an_empty_database_file_that_is_not_new() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manager.db");
        std::fs::write(&path, b"").unwrap();
        let err = Store::open(&path).err().expect("an empty file is refused");
        assert!(matches!(err, StoreError::EmptyFile { .. }), "{err}");
        assert!(err
            .to_string()
            .contains("remove it to start with a new database"));
        // Nothing was written into it, and no log was started beside it.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert!(!dir.path().join("manager.db-wal").exists());
        // A file that does not exist is a new database.
        std::fs::remove_file(&path).unwrap();
        drop(Store::open(&path).unwrap());
        assert!(std::fs::metadata(&path).unwrap().len() > 0);
    }

    #[tokio::test]
    async fn migrates_an_empty_database_and_enforces_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.db")).unwrap();
        let tables: Vec<String> = store
            .read(|c| -> Result<_, StoreError> {
                let mut st =
                    c.prepare("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")?;
                let rows = st
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<Vec<String>, _>>()?;
                Ok(rows)
            })
            .await
            .unwrap();
        for t in [
            "agents",
            "association_groups_users",
            "domains",
            "groups",
            "kernels",
            "keypair_resource_policies",
            "keypairs",
            "resource_presets",
            "users",
            "vfolder_invitations",
            "vfolder_permissions",
            "vfolders",
        ] {
            assert!(
                tables.iter().any(|x| x == t),
                "missing table {t}: {tables:?}"
            );
        }
        let fk = store
            .write(|tx| -> Result<_, StoreError> {
                Ok(tx.execute("INSERT INTO groups (id, name, domain_name) VALUES ('00000000-0000-0000-0000-000000000000', 'g', 'nope')", []))
            })
            .await
            .unwrap();
        assert!(fk.is_err(), "a group in a missing domain must be refused");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_batched_together_fail_and_panic_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.db")).unwrap();
        // Many writes in flight at once land in shared batches: every third one fails,
        // every seventh panics; the rest must all be there, and only they.
        let mut tasks = Vec::new();
        for i in 0..300 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .write(move |tx| -> Result<_, StoreError> {
                        tx.execute("INSERT INTO domains (name) VALUES (?1)", [format!("d{i}")])?;
                        if i % 7 == 0 {
                            panic!("write {i} panics");
                        }
                        if i % 3 == 0 {
                            return Err(StoreError::Invalid(format!("write {i} fails")));
                        }
                        Ok(i)
                    })
                    .await
            }));
        }
        let mut kept = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(v) => {
                    assert_eq!(v, i);
                    assert!(i % 3 != 0 && i % 7 != 0, "write {i} should have failed");
                    kept.push(format!("d{i}"));
                }
                Err(_) => assert!(i % 3 == 0 || i % 7 == 0, "write {i} should have landed"),
            }
        }
        let mut names: Vec<String> = store
            .read(|c| -> Result<_, StoreError> {
                let mut st = c.prepare("SELECT name FROM domains WHERE name LIKE 'd%'")?;
                let rows = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .await
            .unwrap();
        names.sort();
        kept.sort();
        assert_eq!(names, kept);
    }

    #[tokio::test]
    async fn the_batch_hook_runs_in_the_commit_of_the_writes_that_ask_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.db")).unwrap();
        let count = |c: &Connection, like: &str| -> Result<i64, StoreError> {
            Ok(c.query_row(
                "SELECT count(*) FROM domains WHERE name LIKE ?1",
                [like],
                |r| r.get(0),
            )?)
        };
        // The hook copies every `d…` domain it has not seen to an `h…` one, and reports
        // how many it added once the commit is known; on a `fail` domain it fails.
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(bool, i64)>();
        store.set_batch_hook(Some(Box::new(move |tx| {
            let added = tx.execute(
                "INSERT INTO domains (name) SELECT 'h' || substr(name, 2) FROM domains d
                 WHERE name LIKE 'd%'
                   AND NOT EXISTS (SELECT 1 FROM domains h WHERE h.name = 'h' || substr(d.name, 2))",
                [],
            )? as i64;
            if tx.query_row("SELECT count(*) FROM domains WHERE name = 'fail'", [], |r| {
                r.get::<_, i64>(0)
            })? > 0
            {
                return Err(StoreError::Invalid("the hook fails".into()));
            }
            let seen = seen_tx.clone();
            Ok(Box::new(move |committed: bool| {
                let _ = seen.send((committed, added));
            }))
        })));
        let write = |name: &'static str| {
            move |tx: &Connection| -> Result<_, StoreError> {
                tx.execute("INSERT INTO domains (name) VALUES (?1)", [name])?;
                Ok(())
            }
        };
        // A plain write does not run it.
        store.write(write("d1")).await.unwrap();
        let c = |like: &'static str| move |c: &Connection| count(c, like);
        assert_eq!(store.read(c("h%")).await.unwrap(), 0);
        // A hooked one does, after it and in its commit.
        store.write_hooked(write("d2")).await.unwrap();
        assert_eq!(seen_rx.recv().await, Some((true, 2)));
        assert_eq!(store.read(c("h%")).await.unwrap(), 2);
        // A failing hook is rolled back alone: the write that asked for it stays.
        store.write(write("fail")).await.unwrap();
        store.write_hooked(write("d3")).await.unwrap();
        assert_eq!(store.read(c("d%")).await.unwrap(), 3);
        assert_eq!(store.read(c("h%")).await.unwrap(), 2);
        assert!(seen_rx.try_recv().is_err());
        // Removed, it runs no more.
        store.set_batch_hook(None);
        store
            .write(|tx| -> Result<_, StoreError> {
                tx.execute("DELETE FROM domains WHERE name = 'fail'", [])?;
                Ok(())
            })
            .await
            .unwrap();
        store.write_hooked(write("d4")).await.unwrap();
        assert_eq!(store.read(c("h%")).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn the_checkpoint_thread_copies_the_log_into_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let store = Store::open(&path).unwrap();
        let size = || std::fs::metadata(&path).unwrap().len();
        let before = size();
        // About 2 MiB of rows: far below the writer's own checkpoint, so only the thread
        // moves them from the log into the database file.
        store
            .write(|tx| -> Result<_, StoreError> {
                let mut st =
                    tx.prepare("INSERT INTO domains (name, description) VALUES (?1, ?2)")?;
                for i in 0..4000 {
                    st.execute(rusqlite::params![format!("d{i}"), "x".repeat(500)])?;
                }
                Ok(())
            })
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while size() < before + (1 << 20) {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file did not grow: {before} -> {}",
                size()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn the_log_starts_over_under_writes_that_never_pause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let store = Store::open(&path).unwrap();
        // The log's header counts its restarts (the checkpoint sequence number).
        let wal = dir.path().join("m.db-wal");
        let restarts = move || {
            let head = std::fs::read(&wal).unwrap_or_default();
            head.get(12..16)
                .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
                .unwrap_or(0)
        };
        store
            .write(|tx| -> Result<_, StoreError> {
                tx.execute("CREATE TABLE scratch (body BLOB NOT NULL)", [])?;
                Ok(())
            })
            .await
            .unwrap();
        // Sixteen writers that each send their next write as soon as the last one is
        // answered, so the writer always has one waiting, for a second: several rounds of
        // the checkpoint thread.
        const WRITERS: usize = 16;
        let first = restarts();
        let started = std::time::Instant::now();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut written = 0;
                    while started.elapsed() < Duration::from_secs(1) {
                        store
                            .write(move |tx| -> Result<_, StoreError> {
                                tx.execute(
                                    "INSERT INTO scratch (body) VALUES (?1)",
                                    [vec![w as u8; 1024]],
                                )?;
                                Ok(())
                            })
                            .await
                            .unwrap();
                        written += 1;
                    }
                    written
                })
            })
            .collect();
        let mut written = 0;
        for w in writers {
            written += w.await.unwrap();
        }
        // Without the writer's catch-ups the thread's passes never reach the end of the log,
        // and it would not start over at all (the writer's own checkpoint comes at 128 MiB).
        let times = restarts().wrapping_sub(first);
        assert!(
            times >= 2,
            "the log started over {times} times in a second of writes"
        );
        let rows: i64 = store
            .read(|c| -> Result<_, StoreError> {
                Ok(c.query_row("SELECT count(*) FROM scratch", [], |r| r.get(0))?)
            })
            .await
            .unwrap();
        assert_eq!(rows, written);
    }

    #[tokio::test]
    async fn a_failed_write_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.db")).unwrap();
        let r: Result<(), StoreError> = store
            .write(|tx| {
                tx.execute("INSERT INTO domains (name) VALUES ('d1')", [])?;
                Err(StoreError::Invalid("boom".into()))
            })
            .await;
        assert!(r.is_err());
        let n: i64 = store
            .read(|c| -> Result<_, StoreError> {
                Ok(c.query_row("SELECT count(*) FROM domains", [], |r| r.get(0))?)
            })
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
}
