//! Files in a kernel's work directory (`/home/work`), reached from the host side, with
//! the path rules of [`crate::fsconfine`].
//!
//! Paths under a folder mounted into the kernel (`{name}/...` for a mount at
//! `/home/work/{name}`) lead to that folder's own directory, as they do inside the
//! container, with the mount's permission.

use super::backend::MountSpec;
use super::AgentError;
use crate::fsconfine::{confined, entries, entry, open_file, open_regular, parts, walk};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub use crate::fsconfine::{job, MAX_FILE_JOBS};

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
    Ok(parts(rel)?)
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
            AgentError::from(open_regular(r, &["pipe".into()], "pipe").unwrap_err()),
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
                vfolder_id: None,
            },
            MountSpec {
                host_path: shared.path().to_owned(),
                name: "shared".into(),
                read_only: true,
                vfolder_id: None,
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
}
