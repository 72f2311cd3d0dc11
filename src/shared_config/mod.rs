//! The shared configuration: the etcd key space the manager and agents share, behind one
//! trait with two backends — real etcd when `etcd.addr` is configured, otherwise a table in
//! the embedded SQLite database. Keys are logical (`config/redis/addr`); the etcd backend
//! places them under `/sorna/{namespace}/`.
//!
//! This module is the one place that knows the key layout conventions: prefix reads return
//! the keys equal to the prefix or below `prefix/`, and [`nest`] turns them into the
//! original's nested maps (`{"": value, child: …}` where a key is both a value and a parent).

mod cached;
mod embedded;
mod etcd;

pub use cached::CachedConfig;
pub use embedded::EmbeddedConfig;
pub use etcd::EtcdConfig;

use async_trait::async_trait;
use serde_json::{Map, Value};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Well-known keys.
pub mod keys {
    pub const MANAGER_STATUS: &str = "manager/status";
    pub const REDIS_ADDR: &str = "config/redis/addr";
    pub const REDIS_PASSWORD: &str = "config/redis/password";
    pub const RESOURCE_SLOTS: &str = "config/resource_slots";
    pub const MANAGER_NODE: &str = "nodes/manager";
}

/// The most keys one `/config/set` or `etcd put-json` may write (as the original).
pub const MAX_KEYS_PER_UPDATE: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SharedConfigError {
    #[error("invalid key '{0}': keys are non-empty, without NUL bytes or a leading '/'")]
    BadKey(String),
    #[error("etcd at {addr}: {msg}")]
    Etcd { addr: String, msg: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put { key: String, value: String },
    Delete { key: String },
}

#[async_trait]
pub trait SharedConfig: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<String>, SharedConfigError>;
    /// `(key, value)` for the key itself and every key below `prefix/`, sorted by key.
    async fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, SharedConfigError>;
    async fn put(&self, key: &str, value: &str) -> Result<(), SharedConfigError>;
    /// Writes all pairs atomically.
    async fn put_many(&self, pairs: &[(String, String)]) -> Result<(), SharedConfigError>;
    async fn delete(&self, key: &str) -> Result<(), SharedConfigError>;
    /// Deletes the key and everything below `prefix/`.
    async fn delete_prefix(&self, prefix: &str) -> Result<(), SharedConfigError>;
    /// Changes to `key` (and, with `prefix`, below `key/`) from now on, until the receiver
    /// is dropped.
    async fn watch(
        &self,
        key: &str,
        prefix: bool,
    ) -> Result<mpsc::Receiver<WatchEvent>, SharedConfigError>;
    /// Where the configuration lives, for logs and `--help`-level messages.
    fn describe(&self) -> String;
}

pub type SharedConfigHandle = Arc<dyn SharedConfig>;

pub fn validate_key(key: &str) -> Result<(), SharedConfigError> {
    if key.is_empty() || key.starts_with('/') || key.contains('\0') || key.len() > 1024 {
        return Err(SharedConfigError::BadKey(key.to_owned()));
    }
    Ok(())
}

/// Whether `key` is `prefix` itself or lies below `prefix/`.
pub fn under_prefix(key: &str, prefix: &str) -> bool {
    key == prefix
        || (key.len() > prefix.len()
            && key.starts_with(prefix)
            && key.as_bytes()[prefix.len()] == b'/')
}

/// Builds the nested map of a prefix read: key segments below `prefix` become nested
/// objects; a key with both a value and children keeps its value under `""`.
pub fn nest(prefix: &str, pairs: &[(String, String)]) -> Value {
    let mut root = Map::new();
    let mut own: Option<String> = None;
    for (k, v) in pairs {
        if k == prefix {
            own = Some(v.clone());
            continue;
        }
        let Some(rest) = k.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
            continue;
        };
        let segs: Vec<&str> = rest.split('/').collect();
        insert_nested(&mut root, &segs, v);
    }
    match (own, root.is_empty()) {
        (Some(v), true) => Value::String(v),
        (Some(v), false) => {
            root.insert(String::new(), Value::String(v));
            Value::Object(root)
        }
        (None, _) => Value::Object(root),
    }
}

fn insert_nested(map: &mut Map<String, Value>, segs: &[&str], value: &str) {
    let (first, rest) = match segs.split_first() {
        Some(x) => x,
        None => return,
    };
    if rest.is_empty() {
        match map.get_mut(*first) {
            Some(Value::Object(child)) => {
                child.insert(String::new(), Value::String(value.to_owned()));
            }
            _ => {
                map.insert((*first).to_owned(), Value::String(value.to_owned()));
            }
        }
        return;
    }
    let entry = map
        .entry((*first).to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::String(s) = entry {
        let mut m = Map::new();
        m.insert(String::new(), Value::String(std::mem::take(s)));
        *entry = Value::Object(m);
    }
    if let Value::Object(child) = entry {
        insert_nested(child, rest, value);
    }
}

/// Flattens a JSON value into `(key, string value)` pairs below `key`: objects nest as
/// `key/sub`, scalars are stored as their text (strings without quotes).
pub fn flatten(key: &str, value: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    flatten_into(key, value, &mut out);
    out.sort();
    out
}

fn flatten_into(key: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                let sub = if k.is_empty() {
                    key.to_owned()
                } else {
                    format!("{key}/{k}")
                };
                flatten_into(&sub, v, out);
            }
        }
        Value::String(s) => out.push((key.to_owned(), s.clone())),
        Value::Null => out.push((key.to_owned(), String::new())),
        other => out.push((key.to_owned(), other.to_string())),
    }
}

/// Connects to the backend the configuration names.
pub async fn connect(
    cfg: &crate::config::ManagerConfig,
    store: &crate::store::Store,
) -> Result<SharedConfigHandle, SharedConfigError> {
    if cfg.etcd.addr.is_empty() {
        Ok(Arc::new(EmbeddedConfig::new(
            store.clone(),
            &cfg.etcd.namespace,
        )))
    } else {
        Ok(Arc::new(EtcdConfig::connect(&cfg.etcd).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn nests_prefix_reads_like_the_original() {
        let p = pairs(&[
            ("config/redis", "legacy"),
            ("config/redis/addr", "127.0.0.1:6379"),
            ("config/redis/tls/ca", "x"),
            ("config/redis/tls", "on"),
        ]);
        assert_eq!(
            nest("config/redis", &p),
            json!({"": "legacy", "addr": "127.0.0.1:6379", "tls": {"": "on", "ca": "x"}})
        );
        assert_eq!(nest("a", &pairs(&[("a", "1")])), json!("1"));
        assert_eq!(nest("a", &[]), json!({}));
    }

    #[test]
    fn prefix_means_the_key_or_below_it() {
        assert!(under_prefix("config/redis", "config/redis"));
        assert!(under_prefix("config/redis/addr", "config/redis"));
        assert!(!under_prefix("config/redis2", "config/redis"));
        assert!(!under_prefix("config/redis-x/a", "config/redis"));
    }

    #[test]
    fn flattens_objects_to_slash_keys() {
        let f = flatten(
            "volumes",
            &json!({"_mount": "/mnt", "local": {"path": "/x", "n": 3}, "": "root"}),
        );
        assert_eq!(
            f,
            pairs(&[
                ("volumes", "root"),
                ("volumes/_mount", "/mnt"),
                ("volumes/local/n", "3"),
                ("volumes/local/path", "/x")
            ])
        );
    }
}
