//! The shared config kept in the embedded SQLite database (no etcd configured).
//!
//! Every change is also appended to `shared_config_events`; watches follow that log, woken
//! at once by writes from this process and by a short poll for writes from another one (the
//! `etcd` CLI writing while `serve` runs).

use super::{under_prefix, validate_key, SharedConfig, SharedConfigError, WatchEvent};
use crate::store::{Store, StoreError};
use async_trait::async_trait;
use rusqlite::OptionalExtension;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// Events kept for watchers that fall behind.
const EVENT_LOG_KEEP: i64 = 10_000;
const CROSS_PROCESS_POLL: Duration = Duration::from_millis(500);

pub struct EmbeddedConfig {
    store: Store,
    namespace: String,
    changed: Arc<Notify>,
}

/// The exclusive upper bound of keys below `prefix/` (`/` + 1 = `0`).
fn range_end(prefix: &str) -> String {
    format!("{prefix}0")
}

impl EmbeddedConfig {
    pub fn new(store: Store, namespace: &str) -> Self {
        EmbeddedConfig {
            store,
            namespace: namespace.to_owned(),
            changed: Arc::new(Notify::new()),
        }
    }

    /// Applies puts (`Some`) and deletes (`None`) in one transaction, logging each change.
    async fn apply(
        &self,
        changes: Vec<(String, Option<String>)>,
        prefix_delete: Option<String>,
    ) -> Result<(), SharedConfigError> {
        let ns = self.namespace.clone();
        self.store
            .write(move |tx| {
                let mut changes = changes;
                if let Some(p) = prefix_delete {
                    let mut st = tx.prepare("SELECT key FROM shared_config WHERE namespace = ?1 AND (key = ?2 OR (key >= ?3 AND key < ?4))")?;
                    let keys = st
                        .query_map(rusqlite::params![ns, p, format!("{p}/"), range_end(&p)], |r| r.get::<_, String>(0))?
                        .collect::<Result<Vec<_>, _>>()?;
                    changes.extend(keys.into_iter().map(|k| (k, None)));
                }
                for (k, v) in &changes {
                    match v {
                        Some(v) => tx.execute(
                            "INSERT INTO shared_config (namespace, key, value) VALUES (?1, ?2, ?3)
                             ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
                            rusqlite::params![ns, k, v],
                        )?,
                        None => tx.execute("DELETE FROM shared_config WHERE namespace = ?1 AND key = ?2", rusqlite::params![ns, k])?,
                    };
                    tx.execute(
                        "INSERT INTO shared_config_events (namespace, key, value) VALUES (?1, ?2, ?3)",
                        rusqlite::params![ns, k, v],
                    )?;
                }
                tx.execute(
                    "DELETE FROM shared_config_events WHERE rev <= (SELECT max(rev) FROM shared_config_events) - ?1",
                    [EVENT_LOG_KEEP],
                )?;
                Ok::<_, StoreError>(())
            })
            .await?;
        self.changed.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl SharedConfig for EmbeddedConfig {
    async fn get(&self, key: &str) -> Result<Option<String>, SharedConfigError> {
        validate_key(key)?;
        Ok(self.store.read_now(|c| {
            Ok::<_, StoreError>(
                c.prepare_cached(
                    "SELECT value FROM shared_config WHERE namespace = ?1 AND key = ?2",
                )?
                .query_row([&self.namespace, key], |r| r.get(0))
                .optional()?,
            )
        })?)
    }

    async fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, SharedConfigError> {
        validate_key(prefix)?;
        // A prefix holds the configuration of one part (an image list, the registries): an
        // index range of at most a few hundred rows, read at once.
        let p = prefix;
        Ok(self.store.read_now(|c| {
            let mut st = c.prepare_cached(
                "SELECT key, value FROM shared_config
                 WHERE namespace = ?1 AND (key = ?2 OR (key >= ?3 AND key < ?4)) ORDER BY key",
            )?;
            let rows = st
                .query_map(
                    rusqlite::params![self.namespace, p, format!("{p}/"), range_end(p)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, StoreError>(rows)
        })?)
    }

    async fn put(&self, key: &str, value: &str) -> Result<(), SharedConfigError> {
        validate_key(key)?;
        self.apply(vec![(key.to_owned(), Some(value.to_owned()))], None)
            .await
    }

    async fn put_many(&self, pairs: &[(String, String)]) -> Result<(), SharedConfigError> {
        for (k, _) in pairs {
            validate_key(k)?;
        }
        self.apply(
            pairs
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect(),
            None,
        )
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), SharedConfigError> {
        validate_key(key)?;
        self.apply(vec![(key.to_owned(), None)], None).await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), SharedConfigError> {
        validate_key(prefix)?;
        self.apply(Vec::new(), Some(prefix.to_owned())).await
    }

    async fn watch(
        &self,
        key: &str,
        prefix: bool,
    ) -> Result<mpsc::Receiver<WatchEvent>, SharedConfigError> {
        validate_key(key)?;
        let ns = self.namespace.clone();
        let start: i64 = self
            .store
            .read(|c| {
                Ok::<_, StoreError>(c.query_row(
                    "SELECT coalesce(max(rev), 0) FROM shared_config_events",
                    [],
                    |r| r.get(0),
                )?)
            })
            .await?;
        let (tx, rx) = mpsc::channel(256);
        let (store, changed, key) = (self.store.clone(), self.changed.clone(), key.to_owned());
        tokio::spawn(async move {
            let mut last = start;
            loop {
                // Register interest before reading, so a write between the read and the
                // wait is not missed.
                let notified = changed.notified();
                let ns2 = ns.clone();
                let batch = store
                    .read(move |c| {
                        let mut st = c.prepare_cached(
                            "SELECT rev, key, value FROM shared_config_events WHERE rev > ?1 AND namespace = ?2 ORDER BY rev LIMIT 1000",
                        )?;
                        let rows = st
                            .query_map(rusqlite::params![last, ns2], |r| {
                                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?))
                            })?
                            .collect::<Result<Vec<_>, _>>()?;
                        Ok::<_, StoreError>(rows)
                    })
                    .await;
                let Ok(batch) = batch else { break };
                for (rev, k, v) in batch {
                    last = rev;
                    let hit = if prefix {
                        under_prefix(&k, &key)
                    } else {
                        k == key
                    };
                    if !hit {
                        continue;
                    }
                    let ev = match v {
                        Some(value) => WatchEvent::Put { key: k, value },
                        None => WatchEvent::Delete { key: k },
                    };
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(CROSS_PROCESS_POLL) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(rx)
    }

    fn describe(&self) -> String {
        format!(
            "embedded shared config in {} (namespace '{}')",
            self.store.path().display(),
            self.namespace
        )
    }
}
