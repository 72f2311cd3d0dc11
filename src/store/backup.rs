//! Backups of the database: SQLite's online backup API (safe while the server writes),
//! integrity checks, restores, and the lock that tells a running server is using a
//! database.

use super::{migrate, StoreError};
use rusqlite::{Connection, OpenFlags};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Copies the database at `src` to `dest` page by page, letting writers in between steps;
/// the copy is written beside `dest` and renamed into place when complete.
pub fn backup(src: &Path, dest: &Path) -> Result<(), StoreError> {
    if !src.exists() {
        return Err(StoreError::Invalid(format!(
            "no database at {}",
            src.display()
        )));
    }
    let from = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Open {
        path: src.to_owned(),
        source,
    })?;
    from.busy_timeout(Duration::from_secs(10))?;
    let tmp = sibling(dest, ".partial");
    let _ = std::fs::remove_file(&tmp);
    {
        let mut to = Connection::open(&tmp).map_err(|source| StoreError::Open {
            path: tmp.clone(),
            source,
        })?;
        let b = rusqlite::backup::Backup::new(&from, &mut to)?;
        b.run_to_completion(256, Duration::from_millis(2), None)?;
    }
    std::fs::rename(&tmp, dest)
        .map_err(|e| StoreError::Invalid(format!("cannot write {}: {e}", dest.display())))?;
    Ok(())
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// SQLite's integrity and foreign-key checks; an empty list means the database is sound.
pub fn check(path: &Path) -> Result<Vec<String>, StoreError> {
    if !path.exists() {
        return Err(StoreError::Invalid(format!(
            "no database at {}",
            path.display()
        )));
    }
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|source| {
            StoreError::Open {
                path: path.to_owned(),
                source,
            }
        })?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let mut problems: Vec<String> = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|r| r != "ok")
        .collect();
    let mut st = conn.prepare("PRAGMA foreign_key_check")?;
    let fk = st.query_map([], |r| {
        Ok(format!(
            "foreign key: {} row {} refers to a missing {} row",
            r.get::<_, String>(0)?,
            r.get::<_, Option<i64>>(1)?.unwrap_or(0),
            r.get::<_, String>(2)?
        ))
    })?;
    for p in fk {
        problems.push(p?);
    }
    Ok(problems)
}

/// Replaces the database at `db` with the backup at `from` (checked first). The caller
/// holds the [`ServerLock`], so no server is using the database.
pub fn restore(from: &Path, db: &Path, _lock: &ServerLock) -> Result<(), StoreError> {
    let problems = check(from)?;
    if !problems.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "the backup fails its check: {}",
            problems.join("; ")
        )));
    }
    let state = migrate::state(&Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?)?;
    if let Some((v, _)) = state.applied {
        if v > migrate::KNOWN_SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: v,
                known: migrate::KNOWN_SCHEMA_VERSION,
            });
        }
    }
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    let staged = sibling(db, ".restoring");
    backup(from, &staged)?;
    for stale in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(sibling(db, stale));
    }
    std::fs::rename(&staged, db)
        .map_err(|e| StoreError::Invalid(format!("cannot replace {}: {e}", db.display())))?;
    Ok(())
}

/// An exclusive lock on `{db}.lock`, held by a serving manager (and by `db restore`), with
/// the holder's PID in the file.
pub struct ServerLock {
    _file: File,
}

impl ServerLock {
    pub fn acquire(db: &Path) -> Result<ServerLock, StoreError> {
        if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let path = sibling(db, ".lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::Invalid(format!("cannot open {}: {e}", path.display())))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(StoreError::InUse {
                path: db.to_owned(),
                pid: holder.trim().to_owned(),
            });
        }
        let _ = file.set_len(0);
        let _ = writeln!(file, "{}", std::process::id());
        Ok(ServerLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_check_and_restore_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let store = crate::store::Store::open(&db).unwrap();
        drop(store);
        let copy = dir.path().join("copy.db");
        backup(&db, &copy).unwrap();
        assert!(check(&copy).unwrap().is_empty());
        let lock = ServerLock::acquire(&db).unwrap();
        assert!(matches!(
            ServerLock::acquire(&db),
            Err(StoreError::InUse { .. })
        ));
        std::fs::write(dir.path().join("garbage.db"), b"not a database at all").unwrap();
        assert!(restore(&dir.path().join("garbage.db"), &db, &lock).is_err());
        restore(&copy, &db, &lock).unwrap();
        assert!(check(&db).unwrap().is_empty());
    }
}
