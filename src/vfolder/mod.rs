//! Virtual folders on disk: storage hosts from the shared config (`volumes/_mount`,
//! `volumes/_fsprefix`, `volumes/_default_host`; with embedded defaults, a `local` host
//! under the data directory), each folder at `{mount}/{host}/{fsprefix}/{id as 32 hex}`.
//!
//! Every path a user names is resolved inside its folder by the same rules as kernel files
//! ([`crate::fsconfine`]): no `..`, nothing absolute, no NUL bytes, no over-long names,
//! no symbolic link is followed, and only regular files are opened for their bytes.
//! Files are streamed to and from disk.

use crate::fsconfine::{open_regular, parts, walk, FsError};
use crate::shared_config::SharedConfig;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The storage hosts: where they are mounted and which one is the default.
#[derive(Debug, Clone)]
pub struct Hosts {
    pub mount: PathBuf,
    pub fsprefix: String,
    pub default_host: Option<String>,
}

/// The embedded default host.
pub const LOCAL_HOST: &str = "local";

impl Hosts {
    /// From the shared config; unset keys fall back to `{data_dir}/vfolders` with a `local`
    /// default host (created if missing).
    pub async fn load(
        shared: &dyn SharedConfig,
        data_dir: &Path,
    ) -> Result<Hosts, crate::shared_config::SharedConfigError> {
        let get = |k: &'static str| async move {
            shared
                .get(k)
                .await
                .map(|v| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()))
        };
        let mount = get("volumes/_mount").await?;
        let fsprefix = get("volumes/_fsprefix").await?.unwrap_or_default();
        let default_host = get("volumes/_default_host").await?;
        Ok(match mount {
            Some(m) => Hosts {
                mount: PathBuf::from(m),
                fsprefix,
                default_host,
            },
            None => {
                let mount = data_dir.join("vfolders");
                let _ = std::fs::create_dir_all(mount.join(LOCAL_HOST));
                Hosts {
                    mount,
                    fsprefix,
                    default_host: Some(default_host.unwrap_or_else(|| LOCAL_HOST.to_owned())),
                }
            }
        })
    }

    /// Where a host keeps its folders.
    pub fn host_dir(&self, host: &str) -> PathBuf {
        self.mount
            .join(host)
            .join(self.fsprefix.trim_start_matches('/'))
    }

    /// A folder's directory.
    pub fn folder_dir(&self, host: &str, id: &str) -> PathBuf {
        self.host_dir(host).join(id.replace('-', ""))
    }

    /// Hosts that exist under the mount point.
    pub fn mounted(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(&self.mount)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect();
        out.sort();
        out
    }

    /// A host name is one directory under the mount (and exists).
    pub fn is_mounted(&self, host: &str) -> bool {
        !host.is_empty()
            && !host.contains('/')
            && host != "."
            && host != ".."
            && self.host_dir(host).is_dir()
    }
}

/// Who files created for folders belong to: the kernels' user, so sessions can write them
/// (when the manager runs as root).
#[derive(Debug, Clone, Copy)]
pub struct Owner(pub Option<(u32, u32)>);

impl Owner {
    pub fn kernels(uid: u32, gid: u32) -> Owner {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        Owner(root.then_some((uid, gid)))
    }

    fn apply(&self, path: &Path) {
        if let Some((u, g)) = self.0 {
            let _ = std::os::unix::fs::lchown(path, Some(u), Some(g));
        }
    }
}

fn invalid(m: impl Into<String>) -> FsError {
    FsError::Invalid(m.into())
}

/// Creates a folder's directory.
pub fn create_dir(dir: &Path, owner: Owner) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    owner.apply(dir);
    Ok(())
}

/// `mkdir -p` of `rel` inside the folder.
pub fn mkdir(root: &Path, rel: &str, owner: Owner) -> Result<(), FsError> {
    let p = parts(rel)?;
    if p.is_empty() {
        return Err(invalid("a directory name is required"));
    }
    walk(root, &p, true, owner.0)?;
    Ok(())
}

/// Where an upload of `rel` goes: its directory (created, inside the folder) and name.
pub fn upload_target(root: &Path, rel: &str, owner: Owner) -> Result<(PathBuf, String), FsError> {
    let p = parts(rel)?;
    let Some((name, dirs)) = p.split_last() else {
        return Err(invalid("every uploaded file needs a file name"));
    };
    let dir = walk(root, dirs, true, owner.0)?;
    match std::fs::symlink_metadata(dir.join(name)) {
        Ok(m) if !m.is_file() => Err(invalid(format!("'{rel}' exists and is not a regular file"))),
        _ => Ok((dir, name.clone())),
    }
}

/// Moves a finished upload into place (replacing a regular file, never following a link).
pub fn finish_upload(tmp: &Path, dir: &Path, name: &str, owner: Owner) -> Result<(), FsError> {
    let target = dir.join(name);
    if let Ok(m) = std::fs::symlink_metadata(&target) {
        if !m.is_file() {
            return Err(invalid(format!(
                "'{name}' exists and is not a regular file"
            )));
        }
    }
    owner.apply(tmp);
    std::fs::rename(tmp, &target)
        .map_err(|e| FsError::Failure(format!("cannot store '{name}': {e}")))
}

/// Deletes files (and, with `recursive`, directories); missing paths are skipped.
pub fn delete(root: &Path, files: &[String], recursive: bool) -> Result<(), FsError> {
    for rel in files {
        let p = parts(rel)?;
        let Some((name, dirs)) = p.split_last() else {
            return Err(invalid("the folder itself cannot be deleted this way"));
        };
        let dir = match walk(root, dirs, false, None) {
            Ok(d) => d,
            Err(FsError::Invalid(m))
                if m.contains("No such file") || m.contains("does not exist") =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        let path = dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Err(_) => continue,
            Ok(m) if m.is_dir() => {
                if !recursive {
                    return Err(invalid(format!(
                        "'{rel}' is a directory: delete it recursively"
                    )));
                }
                std::fs::remove_dir_all(&path)
            }
            Ok(_) => std::fs::remove_file(&path),
        }
        .map_err(|e| FsError::Failure(format!("cannot delete '{rel}': {e}")))?;
    }
    Ok(())
}

/// Opens a regular file of the folder for reading: the file, its size and its name.
pub fn open(root: &Path, rel: &str) -> Result<(std::fs::File, u64, String), FsError> {
    let p = parts(rel)?;
    let (file, len) = open_regular(root, &p, rel)?;
    Ok((file, len, p.last().cloned().unwrap_or_default()))
}

/// A directory listing: `[{mode, size, ctime, mtime, atime, filename}]`.
pub fn list(root: &Path, rel: &str) -> Result<Vec<Value>, FsError> {
    let dir = walk(root, &parts(rel)?, false, None)?;
    crate::fsconfine::entries(&dir)
        .map(|(files, _)| files)
        .map_err(|e| invalid(format!("cannot list '{rel}': {e}")))
}

/// Entries at the top of a folder.
pub fn count_top(root: &Path) -> usize {
    std::fs::read_dir(root).map(|d| d.count()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_escape_is_refused_one_by_one() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let o = Owner(None);
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host").unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("out")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), r.join("secret-link")).unwrap();
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a\0b",
            "out/secret",
            "out/new/x",
        ] {
            assert!(upload_target(r, bad, o).is_err(), "upload {bad:?}");
            assert!(mkdir(r, bad, o).is_err(), "mkdir {bad:?}");
            assert!(open(r, bad).is_err(), "open {bad:?}");
            assert!(list(r, bad).is_err(), "list {bad:?}");
        }
        let long = "n".repeat(300);
        assert!(upload_target(r, &long, o).is_err());
        assert!(
            open(r, "secret-link").is_err(),
            "a link to a host file is not read"
        );
        assert!(
            upload_target(r, "secret-link", o).is_err(),
            "nor written through"
        );
        assert!(delete(r, &["out/secret".into()], true).is_err());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("secret")).unwrap(),
            "host"
        );
        assert!(!outside.path().join("new").exists());

        mkdir(r, "a/b", o).unwrap();
        let (dir, name) = upload_target(r, "a/b/c.txt", o).unwrap();
        std::fs::write(dir.join(".tmp"), "data").unwrap();
        finish_upload(&dir.join(".tmp"), &dir, &name, o).unwrap();
        assert_eq!(open(r, "a/b/c.txt").unwrap().1, 4);
        assert!(list(r, "a/b").unwrap()[0]["filename"] == "c.txt");
        assert!(
            delete(r, &["a".into()], false).is_err(),
            "a directory needs recursive"
        );
        delete(r, &["a".into(), "missing".into()], true).unwrap();
        assert!(!r.join("a").exists());
    }
}
