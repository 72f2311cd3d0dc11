//! Files in a kernel's work directory (`/home/work`), reached from the host side.
//!
//! The directory is writable by user code, so any path in it may be a trap: every request
//! is resolved without `..`, absolute paths, NUL bytes or over-long names, no symlink is
//! followed on the way, and the opened file's real path is checked to lie inside the
//! directory before a byte is read or written (closing the race where a directory is
//! swapped for a symlink between the check and the open). Only regular files are opened
//! for their bytes: a FIFO, socket or device planted by user code is listed but refused,
//! and never opened in a way that could block (`O_NONBLOCK` until its type is known).
//!
//! Paths under a folder mounted into the kernel (`{name}/...` for a mount at
//! `/home/work/{name}`) lead to that folder's own directory, as they do inside the
//! container, with the mount's permission.
//!
//! Blocking file work runs through [`job`]: at most [`MAX_FILE_JOBS`] at once per process,
//! each waited for a bounded time, so no number of slow or stuck requests can take every
//! thread of the runtime's blocking pool.

use super::backend::MountSpec;
use super::AgentError;
use serde_json::{json, Value};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

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
/// [`AgentError::Timeout`] when it cannot start within 10 s or does not end within 30 s.
pub async fn job<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> Result<T, AgentError> {
    let permit = tokio::time::timeout(JOB_QUEUE_WAIT, FILE_JOBS.acquire())
        .await
        .map_err(|_| {
            AgentError::Timeout(
                "too many file operations are under way; try again later".to_owned(),
            )
        })?
        .map_err(|e| AgentError::Failure(format!("file operations: {e}")))?;
    let handle = tokio::task::spawn_blocking(move || {
        let _turn = permit;
        f()
    });
    match tokio::time::timeout(JOB_RUN_LIMIT, handle).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(AgentError::Failure(format!("file operation: {e}"))),
        Err(_) => Err(AgentError::Timeout(format!(
            "the file operation did not finish within {} seconds",
            JOB_RUN_LIMIT.as_secs()
        ))),
    }
}

fn invalid(msg: impl Into<String>) -> AgentError {
    AgentError::InvalidInput(msg.into())
}

/// Where the work directory is inside the container.
const WORK_DIR: &str = "/home/work";

/// Validates a path in the kernel's work directory (relative, or the container's own
/// absolute spelling `/home/work/...`) and returns its components.
fn components(rel: &str) -> Result<Vec<String>, AgentError> {
    let rel = match rel.strip_prefix(WORK_DIR) {
        Some("") => ".",
        Some(rest) if rest.starts_with('/') => rest.trim_start_matches('/'),
        _ => rel,
    };
    parts(rel)
}

/// Validates a path relative to some root and returns its components (`"."` or `""` is
/// the root itself): no NUL bytes, no `..`, nothing absolute, no over-long names.
pub fn parts(rel: &str) -> Result<Vec<String>, AgentError> {
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
) -> Result<PathBuf, AgentError> {
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
                    .map_err(|e| AgentError::Failure(format!("cannot create '{part}': {e}")))?;
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
fn confined(file: &File, root: &Path) -> Result<(), AgentError> {
    use std::os::fd::AsRawFd;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|e| AgentError::Failure(format!("cannot check the path: {e}")))?;
    let root = root
        .canonicalize()
        .map_err(|e| AgentError::Failure(format!("work directory: {e}")))?;
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

fn not_regular(rel: &str, t: &std::fs::FileType) -> AgentError {
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
fn open_file(path: &Path, rel: &str, for_write: bool) -> Result<(File, u64), AgentError> {
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
        .map_err(|e| AgentError::Failure(format!("cannot {verb} '{rel}': {e}")))?;
    if !meta.is_file() {
        return Err(not_regular(rel, &meta.file_type()));
    }
    set_blocking(&file).map_err(|e| AgentError::Failure(format!("cannot {verb} '{rel}': {e}")))?;
    Ok((file, meta.len()))
}

/// Where a path of the work directory lives on the host.
struct Place {
    /// The directory the path is confined to: the work directory, or a mounted folder's.
    root: PathBuf,
    /// The path's components below `root`.
    parts: Vec<String>,
    /// The mount the path is under, if any.
    mount: Option<MountSpec>,
}

/// Resolves `rel` (relative to `/home/work`, or spelled absolute) against the work
/// directory `work` and the kernel's mounts: in the container `/home/work/{name}` is the
/// mounted folder, not the (empty) mount point in the scratch directory, so the file API
/// must reach the folder's host directory too.
fn place(work: &Path, mounts: &[MountSpec], rel: &str) -> Result<Place, AgentError> {
    let parts = components(rel)?;
    if let Some(m) = parts
        .first()
        .and_then(|first| mounts.iter().find(|m| &m.name == first))
    {
        let root = std::path::absolute(&m.host_path)
            .map_err(|e| AgentError::Failure(format!("mount {}: {e}", m.host_path.display())))?;
        return Ok(Place {
            root,
            parts: parts[1..].to_vec(),
            mount: Some(m.clone()),
        });
    }
    Ok(Place {
        root: work.to_path_buf(),
        parts,
        mount: None,
    })
}

/// Writes `data` to `rel` (creating parent directories), owned by the kernel's user; a
/// path under a mounted folder is written into the folder, unless it is mounted
/// read-only.
pub fn write(
    work: &Path,
    mounts: &[MountSpec],
    rel: &str,
    data: &[u8],
    uid_gid: Option<(u32, u32)>,
) -> Result<(), AgentError> {
    let place = place(work, mounts, rel)?;
    if let Some(m) = place.mount.as_ref().filter(|m| m.read_only) {
        return Err(invalid(format!(
            "'{}' is mounted read-only: '{rel}' cannot be written",
            m.name
        )));
    }
    let Some((name, dirs)) = place.parts.split_last() else {
        return Err(invalid(match &place.mount {
            Some(m) => format!("'{}' is a mounted folder, not a file", m.name),
            None => "a file name is required".to_owned(),
        }));
    };
    let dir = walk(&place.root, dirs, true, uid_gid)?;
    let (mut file, _) = open_file(&dir.join(name), rel, true)?;
    confined(&file, &place.root)?;
    file.set_len(0)
        .and_then(|_| file.write_all(data))
        .map_err(|e| AgentError::Failure(format!("cannot write '{rel}': {e}")))?;
    if let Some((u, g)) = uid_gid {
        let _ = std::os::unix::fs::fchown(&file, Some(u), Some(g));
    }
    Ok(())
}

/// Opens a regular file (by its validated components) below `root` for reading: no
/// symbolic link followed, no special file opened, confined to `root`. `rel` names it in
/// messages.
pub fn open_regular(root: &Path, parts: &[String], rel: &str) -> Result<(File, u64), AgentError> {
    let Some((name, dirs)) = parts.split_last() else {
        return Err(invalid("a file name is required"));
    };
    let dir = walk(root, dirs, false, None)?;
    let (file, len) = open_file(&dir.join(name), rel, false)?;
    confined(&file, root)?;
    Ok((file, len))
}

/// Reads `rel` (from a mounted folder for a path under one), refusing files larger than
/// `limit` bytes.
pub fn read(
    work: &Path,
    mounts: &[MountSpec],
    rel: &str,
    limit: u64,
) -> Result<Vec<u8>, AgentError> {
    let place = place(work, mounts, rel)?;
    let (mut file, len) = open_regular(&place.root, &place.parts, rel)?;
    if len > limit {
        return Err(invalid(format!("'{rel}' is larger than {limit} bytes")));
    }
    let mut buf = Vec::with_capacity(len as usize);
    file.read_to_end(&mut buf)
        .map_err(|e| AgentError::Failure(e.to_string()))?;
    Ok(buf)
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
fn entry(name: &str, m: &std::fs::Metadata) -> Value {
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

/// Lists a directory as the original's `list_files`: `files` is a JSON string of
/// `[{mode, size, ctime, mtime, atime, filename}]`. A path under a mounted folder lists
/// the folder; the work directory itself shows each mount as the folder it is.
pub fn list(work: &Path, mounts: &[MountSpec], rel: &str) -> Result<Value, AgentError> {
    let place = place(work, mounts, rel)?;
    let dir = walk(&place.root, &place.parts, false, None)?;
    let (mut files, errors) =
        entries(&dir).map_err(|e| invalid(format!("cannot list '{rel}': {e}")))?;
    if place.mount.is_none() && place.parts.is_empty() {
        for m in mounts {
            if let Ok(meta) = std::fs::metadata(&m.host_path) {
                files.retain(|f| f["filename"] != m.name.as_str());
                files.push(entry(&m.name, &meta));
            }
        }
        files.sort_by(|a, b| a["filename"].as_str().cmp(&b["filename"].as_str()));
    }
    let shown = components(rel)?;
    let abspath = if shown.is_empty() {
        WORK_DIR.to_owned()
    } else {
        format!("{WORK_DIR}/{}", shown.join("/"))
    };
    Ok(json!({"files": Value::Array(files).to_string(), "errors": errors, "abspath": abspath}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_every_escape() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r, &[], "a/b/c.txt", b"data", None).unwrap();
        assert_eq!(read(r, &[], "a/b/c.txt", 100).unwrap(), b"data");
        write(r, &[], "./a/b/c.txt", b"new", None).unwrap();
        assert_eq!(read(r, &[], "a/b/c.txt", 100).unwrap(), b"new");
        assert!(read(r, &[], "a/b/c.txt", 2).is_err(), "size limit");
        let listing = list(r, &[], "a/b").unwrap();
        assert!(listing["files"]
            .as_str()
            .unwrap()
            .contains("\"filename\":\"c.txt\""));
        assert_eq!(listing["abspath"], "/home/work/a/b");

        // The container's absolute spelling of the work directory is the same place.
        assert_eq!(read(r, &[], "/home/work/a/b/c.txt", 100).unwrap(), b"new");
        assert_eq!(list(r, &[], "/home/work").unwrap()["abspath"], "/home/work");
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "/home/workx/y",
            "/home/work/../x",
            "a\0b",
            "",
        ] {
            assert!(write(r, &[], bad, b"x", None).is_err(), "{bad:?}");
        }
        assert!(write(r, &[], &"n".repeat(300), b"x", None).is_err());
        // A long name of multi-byte characters is refused, not a panic.
        assert!(write(r, &[], &"é".repeat(200), b"x", None).is_err());
        // Symlinks planted by user code lead nowhere.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host file").unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), r.join("file-link")).unwrap();
        assert!(read(r, &[], "link/secret", 100).is_err());
        assert!(read(r, &[], "file-link", 100).is_err());
        assert!(write(r, &[], "link/new", b"x", None).is_err());
        assert!(write(r, &[], "file-link", b"x", None).is_err());
        assert!(list(r, &[], "link").is_err());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("secret")).unwrap(),
            "host file"
        );
        assert!(!outside.path().join("new").exists());
    }

    /// Makes a FIFO at `path`.
    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }

    #[test]
    fn special_files_are_listed_but_never_opened() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        mkfifo(&r.join("pipe"));
        let sock = std::os::unix::net::UnixListener::bind(r.join("sock")).unwrap();
        // Each of these would block forever in open() if the FIFO were opened plainly.
        let started = std::time::Instant::now();
        for err in [
            read(r, &[], "pipe", 100).unwrap_err(),
            write(r, &[], "pipe", b"x", None).unwrap_err(),
            open_regular(r, &["pipe".into()], "pipe").unwrap_err(),
            read(r, &[], "sock", 100).unwrap_err(),
            write(r, &[], "sock", b"x", None).unwrap_err(),
        ] {
            let AgentError::InvalidInput(m) = err else {
                panic!("{err:?}")
            };
            assert!(m.contains("not a regular file"), "{m}");
        }
        assert!(read(r, &[], "pipe", 100)
            .unwrap_err()
            .to_string()
            .contains("'pipe' is a FIFO (named pipe)"),);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let listing = list(r, &[], ".").unwrap();
        let files: Vec<Value> = serde_json::from_str(listing["files"].as_str().unwrap()).unwrap();
        let mode = |n: &str| {
            files.iter().find(|f| f["filename"] == n).unwrap()["mode"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert!(mode("pipe").starts_with('p'), "{files:?}");
        assert!(mode("sock").starts_with('s'), "{files:?}");
        drop(sock);
        let t = std::fs::symlink_metadata("/dev/null").unwrap().file_type();
        assert!(mode_string(0o666, &t).starts_with('c'));
    }

    #[test]
    fn paths_under_a_mount_reach_the_folder_with_its_permission() {
        let work = tempfile::tempdir().unwrap();
        let folder = tempfile::tempdir().unwrap();
        let shared = tempfile::tempdir().unwrap();
        let mounts = [
            MountSpec {
                host_path: folder.path().to_owned(),
                name: "thesis-data".into(),
                read_only: false,
            },
            MountSpec {
                host_path: shared.path().to_owned(),
                name: "shared".into(),
                read_only: true,
            },
        ];
        let w = work.path();
        write(w, &mounts, "thesis-data/sub/probe.txt", b"bytes", None).unwrap();
        assert_eq!(
            std::fs::read(folder.path().join("sub/probe.txt")).unwrap(),
            b"bytes"
        );
        assert!(
            !w.join("thesis-data").exists(),
            "nothing in the mount point"
        );
        assert_eq!(
            read(w, &mounts, "/home/work/thesis-data/sub/probe.txt", 100).unwrap(),
            b"bytes"
        );
        let l = list(w, &mounts, "thesis-data/sub").unwrap();
        assert!(l["files"].as_str().unwrap().contains("probe.txt"));
        assert_eq!(l["abspath"], "/home/work/thesis-data/sub");
        // The work directory shows the mounts as the folders they are.
        let top = list(w, &mounts, ".").unwrap();
        assert!(top["files"].as_str().unwrap().contains("\"thesis-data\""));

        std::fs::write(shared.path().join("ro.txt"), "shared").unwrap();
        assert_eq!(read(w, &mounts, "shared/ro.txt", 100).unwrap(), b"shared");
        let e = write(w, &mounts, "shared/new.txt", b"x", None).unwrap_err();
        assert!(e.to_string().contains("mounted read-only"), "{e}");
        assert!(!shared.path().join("new.txt").exists());
        assert!(write(w, &mounts, "thesis-data", b"x", None).is_err());
        // Escapes stay refused under a mount.
        assert!(read(w, &mounts, "thesis-data/../x", 100).is_err());
        std::os::unix::fs::symlink("/etc", folder.path().join("etc")).unwrap();
        assert!(read(w, &mounts, "thesis-data/etc/passwd", 100_000).is_err());
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
                Ok(())
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
            Ok(())
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
