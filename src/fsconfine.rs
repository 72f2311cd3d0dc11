//! Paths confined to a directory that user code can write to: every request is resolved
//! without `..`, absolute paths, NUL bytes or over-long names, no symlink is followed on
//! the way, and the opened file's real path is checked to lie inside the directory before
//! a byte is read or written (closing the race where a directory is swapped for a symlink
//! between the check and the open). Only regular files are opened for their bytes: a FIFO,
//! socket or device planted by user code is listed but refused, and never opened in a way
//! that could block (`O_NONBLOCK` until its type is known).
//!
//! Blocking file work runs through [`job`]: at most [`MAX_FILE_JOBS`] at once per process,
//! each waited for a bounded time, so no number of slow or stuck requests can take every
//! thread of the runtime's blocking pool.
//!
//! Used by the agent for kernels' work directories and by the folder routes for virtual
//! folders.

use serde_json::{json, Value};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Why a confined file operation was refused or failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FsError {
    /// The request's fault: a bad path, a special file, a file too large.
    #[error("{0}")]
    Invalid(String),
    /// Too much file work under way, or a job that did not end in time.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Failure(String),
}

pub fn invalid(msg: impl Into<String>) -> FsError {
    FsError::Invalid(msg.into())
}

/// The longest file name component and path accepted.
const MAX_NAME: usize = 255;
const MAX_PATH: usize = 4096;

/// Blocking file jobs that may run at once in this process: well below tokio's blocking
/// pool (512 threads), which the store and other blocking work share.
pub const MAX_FILE_JOBS: usize = 64;
/// How long a file job waits for its turn before the request is refused as busy.
const JOB_QUEUE_WAIT: Duration = Duration::from_secs(10);
/// How long a file job may run before its request is answered with a timeout (the thread
/// keeps its turn until the job really ends, so stuck jobs cannot pile up past the bound).
const JOB_RUN_LIMIT: Duration = Duration::from_secs(30);

static FILE_JOBS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_FILE_JOBS);

/// Runs blocking file work on the blocking pool, bounded in number and time: a
/// [`FsError::Busy`] when it cannot start within 10 s or does not end within 30 s.
pub async fn job<T: Send + 'static, E: From<FsError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    let permit = tokio::time::timeout(JOB_QUEUE_WAIT, FILE_JOBS.acquire())
        .await
        .map_err(|_| {
            FsError::Busy("too many file operations are under way; try again later".to_owned())
        })?
        .map_err(|e| FsError::Failure(format!("file operations: {e}")))?;
    let handle = tokio::task::spawn_blocking(move || {
        let _turn = permit;
        f()
    });
    match tokio::time::timeout(JOB_RUN_LIMIT, handle).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(FsError::Failure(format!("file operation: {e}")).into()),
        Err(_) => Err(FsError::Busy(format!(
            "the file operation did not finish within {} seconds",
            JOB_RUN_LIMIT.as_secs()
        ))
        .into()),
    }
}

/// Validates a path relative to some root and returns its components (`"."` or `""` is
/// the root itself): no NUL bytes, no `..`, nothing absolute, no over-long names.
pub fn parts(rel: &str) -> Result<Vec<String>, FsError> {
    if rel.contains('\0') {
        return Err(invalid("paths must not contain NUL bytes"));
    }
    if rel.len() > MAX_PATH {
        return Err(invalid("the path is too long"));
    }
    let mut out = Vec::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(n) => {
                let n = n.to_str().ok_or_else(|| invalid("paths must be UTF-8"))?;
                if n.len() > MAX_NAME {
                    let start: String = n.chars().take(32).collect();
                    return Err(invalid(format!("the name '{start}…' is too long")));
                }
                out.push(n.to_owned());
            }
            Component::CurDir => {}
            Component::ParentDir => return Err(invalid("'..' is not allowed in paths")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid("paths must be relative (no leading /)"))
            }
        }
    }
    Ok(out)
}

/// Walks `parts` below `root`, refusing symlinks; creates missing directories if asked.
pub fn walk(
    root: &Path,
    parts: &[String],
    create_dirs: bool,
    uid_gid: Option<(u32, u32)>,
) -> Result<PathBuf, FsError> {
    let mut path = root.to_path_buf();
    for part in parts {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(invalid(format!(
                    "'{part}' is a symbolic link; links are not followed"
                )));
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(invalid(format!("'{part}' is not a directory"))),
            Err(_) if create_dirs => {
                std::fs::create_dir(&path)
                    .map_err(|e| FsError::Failure(format!("cannot create '{part}': {e}")))?;
                if let Some((u, g)) = uid_gid {
                    let _ = std::os::unix::fs::chown(&path, Some(u), Some(g));
                }
            }
            Err(_) => return Err(invalid(format!("no such directory '{part}'"))),
        }
    }
    Ok(path)
}

/// Checks that an open file really is inside `root`.
pub fn confined(file: &File, root: &Path) -> Result<(), FsError> {
    use std::os::fd::AsRawFd;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|e| FsError::Failure(format!("cannot check the path: {e}")))?;
    let root = root
        .canonicalize()
        .map_err(|e| FsError::Failure(format!("work directory: {e}")))?;
    if real.starts_with(&root) {
        Ok(())
    } else {
        Err(invalid("the path leads outside its folder"))
    }
}

/// What a file type is, in words, for messages about files that are not regular.
fn kind_of(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "a special file"
    }
}

fn not_regular(rel: &str, t: &std::fs::FileType) -> FsError {
    invalid(format!(
        "'{rel}' is {}, not a regular file: only regular files can be read or written",
        kind_of(t)
    ))
}

/// Clears `O_NONBLOCK` on a file that turned out to be regular.
fn set_blocking(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor `file` owns; neither takes a pointer.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Opens the regular file at `path` (`rel` names it in messages) for reading, or for
/// writing (created if missing). Anything else is refused without being opened where it
/// can be told beforehand, and the open itself never blocks: `open()` of a FIFO waits for
/// its other end, so it is opened `O_NONBLOCK` (and `O_NOFOLLOW`), its type checked on the
/// descriptor (closing the race with a swap after the first look), and only a regular
/// file is set back to blocking reads and writes.
pub fn open_file(path: &Path, rel: &str, for_write: bool) -> Result<(File, u64), FsError> {
    let verb = if for_write { "write" } else { "read" };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(invalid(format!(
                "'{rel}' is a symbolic link; links are not followed"
            )))
        }
        Ok(m) if !m.is_file() => return Err(not_regular(rel, &m.file_type())),
        Ok(_) => {}
        Err(e) if for_write && e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(invalid(format!("cannot {verb} '{rel}': {e}"))),
    }
    let mut opts = OpenOptions::new();
    if for_write {
        opts.write(true).create(true).truncate(false).mode(0o644);
    } else {
        opts.read(true);
    }
    let file = opts
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| invalid(format!("cannot {verb} '{rel}': {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| FsError::Failure(format!("cannot {verb} '{rel}': {e}")))?;
    if !meta.is_file() {
        return Err(not_regular(rel, &meta.file_type()));
    }
    set_blocking(&file).map_err(|e| FsError::Failure(format!("cannot {verb} '{rel}': {e}")))?;
    Ok((file, meta.len()))
}

/// Opens a regular file (by its validated components) below `root` for reading: no
/// symbolic link followed, no special file opened, confined to `root`. `rel` names it in
/// messages.
pub fn open_regular(root: &Path, parts: &[String], rel: &str) -> Result<(File, u64), FsError> {
    let Some((name, dirs)) = parts.split_last() else {
        return Err(invalid("a file name is required"));
    };
    let dir = walk(root, dirs, false, None)?;
    let (file, len) = open_file(&dir.join(name), rel, false)?;
    confined(&file, root)?;
    Ok((file, len))
}

/// `ls -l`'s mode column: the type letter (`d`, `l`, `p`, `s`, `c`, `b` or `-`) and the
/// permission bits.
fn mode_string(mode: u32, t: &std::fs::FileType) -> String {
    let mut s = String::with_capacity(10);
    s.push(if t.is_dir() {
        'd'
    } else if t.is_symlink() {
        'l'
    } else if t.is_fifo() {
        'p'
    } else if t.is_socket() {
        's'
    } else if t.is_char_device() {
        'c'
    } else if t.is_block_device() {
        'b'
    } else {
        '-'
    });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// One listing entry (the metadata of the entry itself: links are not followed).
pub fn entry(name: &str, m: &std::fs::Metadata) -> Value {
    json!({
        "mode": mode_string(m.permissions().mode(), &m.file_type()),
        "size": m.len(),
        "ctime": m.ctime(),
        "mtime": m.mtime(),
        "atime": m.atime(),
        "filename": name,
    })
}

/// The entries of a directory: `[{mode, size, ctime, mtime, atime, filename}]`, sorted by
/// name, and the entries that could not be read.
pub fn entries(dir: &Path) -> std::io::Result<(Vec<Value>, String)> {
    let mut files = Vec::new();
    let mut errors = String::new();
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        match e.metadata() {
            Ok(m) => files.push(entry(&name, &m)),
            Err(err) => errors.push_str(&format!("{name}: {err}\n")),
        }
    }
    files.sort_by(|a, b| a["filename"].as_str().cmp(&b["filename"].as_str()));
    Ok((files, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_show_their_type_letter() {
        let t = std::fs::symlink_metadata("/dev/null").unwrap().file_type();
        assert!(mode_string(0o666, &t).starts_with('c'));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_jobs_wait_for_a_turn_beyond_the_bound() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        // Every turn taken by a job that blocks until the sender goes.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Arc::new(Mutex::new(rx));
        let mut stuck = Vec::new();
        for _ in 0..MAX_FILE_JOBS {
            let rx = rx.clone();
            stuck.push(tokio::spawn(job(move || {
                let _ = rx.lock().unwrap().recv();
                Ok::<(), FsError>(())
            })));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while FILE_JOBS.available_permits() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the jobs did not start"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        let extra = tokio::spawn(job(move || {
            r.store(true, Ordering::SeqCst);
            Ok::<(), FsError>(())
        }));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!ran.load(Ordering::SeqCst), "a job ran beyond the bound");
        drop(tx);
        for j in stuck {
            j.await.unwrap().unwrap();
        }
        extra.await.unwrap().unwrap();
        assert!(ran.load(Ordering::SeqCst));
    }
}
