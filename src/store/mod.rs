//! The SQLite store: one writer thread that owns the only write connection, a small pool
//! of read connections used from `spawn_blocking`, and the schema migrations.
//!
//! Async code never touches a connection directly: it hands a closure to [`Store::write`]
//! (run inside an IMMEDIATE transaction on the writer thread, so read-modify-write sequences
//! such as slot reservation are atomic) or [`Store::read`]. This module owns the pragmas,
//! the migration runner and the repositories; it knows nothing about HTTP.

pub mod auth;
pub mod backup;
pub mod bootstrap;
pub mod directory;
pub mod fixture;
pub mod keypairs;
mod migrate;
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
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the database {path} is in use by a running server (pid {pid}); stop it first")]
    InUse { path: PathBuf, pid: String },
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: mpsc::UnboundedSender<Job>,
    readers: Mutex<Vec<Connection>>,
    /// One permit per read connection in use (see [`READ_POOL_KEEP`]).
    read_slots: tokio::sync::Semaphore,
    /// Bumped after every committed write: what was read before may be stale.
    generation: std::sync::atomic::AtomicU64,
    /// Active keypairs by access key, as read at a generation (see [`Store::active_keypair`]).
    keypairs: Mutex<std::collections::HashMap<String, auth::CachedKeypair>>,
}

/// Read connections kept open, and reads run at once: a read waits for a free connection
/// rather than opening another (opening one parses the whole schema, which under load cost
/// more than the reads themselves).
const READ_POOL_KEEP: usize = 16;

fn configure(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the database, applies pending migrations and starts the
    /// writer thread. Refuses a database whose schema is newer than this binary.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
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

    fn start(path: &Path, mut conn: Connection) -> Store {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    job(&mut conn);
                }
                // All handles dropped: checkpoint so the WAL does not linger.
                let _ = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
            })
            .map_err(|e| tracing::error!("cannot start the database writer thread: {e}"))
            .ok();
        Store {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: tx,
                readers: Mutex::new(Vec::new()),
                read_slots: tokio::sync::Semaphore::new(READ_POOL_KEEP),
                generation: std::sync::atomic::AtomicU64::new(0),
                keypairs: Mutex::new(std::collections::HashMap::new()),
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` in one IMMEDIATE transaction on the writer thread; commits if it returns Ok.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E> + Send + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel();
        let inner = self.inner.clone();
        let job: Job = Box::new(move |conn: &mut Connection| {
            let result = (|| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(|e| E::from(StoreError::from(e)))?;
                let value = f(&tx)?;
                tx.commit().map_err(|e| E::from(StoreError::from(e)))?;
                inner
                    .generation
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(value)
            })();
            let _ = done_tx.send(result);
        });
        self.inner
            .writer
            .send(job)
            .map_err(|_| E::from(StoreError::Closed))?;
        done_rx.await.map_err(|_| E::from(StoreError::Closed))?
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
            if pool.len() < READ_POOL_KEEP {
                pool.push(conn);
            }
        }
    }
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
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
