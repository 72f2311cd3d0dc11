//! Files in a kernel's work directory (`/home/work`), reached from the host side.
//!
//! The directory is writable by user code, so any path in it may be a trap: every request
//! is resolved without `..`, absolute paths, NUL bytes or over-long names, no symlink is
//! followed on the way, and the opened file's real path is checked to lie inside the
//! directory before a byte is read or written (closing the race where a directory is
//! swapped for a symlink between the check and the open).

use super::AgentError;
use serde_json::{json, Value};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// The longest file name component and path accepted.
const MAX_NAME: usize = 255;
const MAX_PATH: usize = 4096;

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

/// Writes `data` to `rel` (creating parent directories), owned by the kernel's user.
pub fn write(
    root: &Path,
    rel: &str,
    data: &[u8],
    uid_gid: Option<(u32, u32)>,
) -> Result<(), AgentError> {
    let parts = components(rel)?;
    let Some((name, dirs)) = parts.split_last() else {
        return Err(invalid("a file name is required"));
    };
    let dir = walk(root, dirs, true, uid_gid)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o644)
        .open(dir.join(name))
        .map_err(|e| invalid(format!("cannot write '{rel}': {e}")))?;
    confined(&file, root)?;
    file.set_len(0)
        .and_then(|_| file.write_all(data))
        .map_err(|e| AgentError::Failure(format!("cannot write '{rel}': {e}")))?;
    if let Some((u, g)) = uid_gid {
        let _ = std::os::unix::fs::fchown(&file, Some(u), Some(g));
    }
    Ok(())
}

/// Opens a regular file (by its validated components) below `root` for reading: no
/// symbolic link followed, confined to `root`. `rel` names it in messages.
pub fn open_regular(root: &Path, parts: &[String], rel: &str) -> Result<(File, u64), AgentError> {
    let Some((name, dirs)) = parts.split_last() else {
        return Err(invalid("a file name is required"));
    };
    let dir = walk(root, dirs, false, None)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dir.join(name))
        .map_err(|e| invalid(format!("cannot read '{rel}': {e}")))?;
    confined(&file, root)?;
    let meta = file
        .metadata()
        .map_err(|e| AgentError::Failure(e.to_string()))?;
    if !meta.is_file() {
        return Err(invalid(format!("'{rel}' is not a regular file")));
    }
    Ok((file, meta.len()))
}

/// Reads `rel`, refusing files larger than `limit` bytes.
pub fn read(root: &Path, rel: &str, limit: u64) -> Result<Vec<u8>, AgentError> {
    let (mut file, len) = open_regular(root, &components(rel)?, rel)?;
    if len > limit {
        return Err(invalid(format!("'{rel}' is larger than {limit} bytes")));
    }
    let mut buf = Vec::with_capacity(len as usize);
    file.read_to_end(&mut buf)
        .map_err(|e| AgentError::Failure(e.to_string()))?;
    Ok(buf)
}

fn mode_string(mode: u32, is_dir: bool, is_link: bool) -> String {
    let mut s = String::with_capacity(10);
    s.push(if is_dir {
        'd'
    } else if is_link {
        'l'
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

/// The entries of a directory: `[{mode, size, ctime, mtime, atime, filename}]`, sorted by
/// name, and the entries that could not be read.
pub fn entries(dir: &Path) -> std::io::Result<(Vec<Value>, String)> {
    let mut files = Vec::new();
    let mut errors = String::new();
    for entry in std::fs::read_dir(dir)?.flatten() {
        match entry.metadata() {
            Ok(m) => files.push(json!({
                "mode": mode_string(m.permissions().mode(), m.is_dir(), m.file_type().is_symlink()),
                "size": m.len(),
                "ctime": m.ctime(),
                "mtime": m.mtime(),
                "atime": m.atime(),
                "filename": entry.file_name().to_string_lossy(),
            })),
            Err(e) => errors.push_str(&format!("{}: {e}\n", entry.file_name().to_string_lossy())),
        }
    }
    files.sort_by(|a, b| a["filename"].as_str().cmp(&b["filename"].as_str()));
    Ok((files, errors))
}

/// Lists a directory as the original's `list_files`: `files` is a JSON string of
/// `[{mode, size, ctime, mtime, atime, filename}]`.
pub fn list(root: &Path, rel: &str) -> Result<Value, AgentError> {
    let parts = components(rel)?;
    let dir = walk(root, &parts, false, None)?;
    let (files, errors) =
        entries(&dir).map_err(|e| invalid(format!("cannot list '{rel}': {e}")))?;
    let abspath = if parts.is_empty() {
        "/home/work".to_owned()
    } else {
        format!("/home/work/{}", parts.join("/"))
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
        write(r, "a/b/c.txt", b"data", None).unwrap();
        assert_eq!(read(r, "a/b/c.txt", 100).unwrap(), b"data");
        write(r, "./a/b/c.txt", b"new", None).unwrap();
        assert_eq!(read(r, "a/b/c.txt", 100).unwrap(), b"new");
        assert!(read(r, "a/b/c.txt", 2).is_err(), "size limit");
        let listing = list(r, "a/b").unwrap();
        assert!(listing["files"]
            .as_str()
            .unwrap()
            .contains("\"filename\":\"c.txt\""));
        assert_eq!(listing["abspath"], "/home/work/a/b");

        // The container's absolute spelling of the work directory is the same place.
        assert_eq!(read(r, "/home/work/a/b/c.txt", 100).unwrap(), b"new");
        assert_eq!(list(r, "/home/work").unwrap()["abspath"], "/home/work");
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "/home/workx/y",
            "/home/work/../x",
            "a\0b",
            "",
        ] {
            assert!(write(r, bad, b"x", None).is_err(), "{bad:?}");
        }
        assert!(write(r, &"n".repeat(300), b"x", None).is_err());
        // A long name of multi-byte characters is refused, not a panic.
        assert!(write(r, &"é".repeat(200), b"x", None).is_err());
        // Symlinks planted by user code lead nowhere.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host file").unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), r.join("file-link")).unwrap();
        assert!(read(r, "link/secret", 100).is_err());
        assert!(read(r, "file-link", 100).is_err());
        assert!(write(r, "link/new", b"x", None).is_err());
        assert!(write(r, "file-link", b"x", None).is_err());
        assert!(list(r, "link").is_err());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("secret")).unwrap(),
            "host file"
        );
        assert!(!outside.path().join("new").exists());
    }
}
