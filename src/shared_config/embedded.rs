//! The shared config kept in the embedded SQLite database (no etcd configured; the SQL is
//! in [`crate::store::kv`]).
//!
//! Every change is also appended to `shared_config_events`; watches follow that log, woken
//! at once by writes from this process and by a short poll for writes from another one (the
//! `etcd` CLI writing while `serve` runs).

use super::{under_prefix, validate_key, SharedConfig, SharedConfigError, WatchEvent};
use crate::store::{kv, Store};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

const CROSS_PROCESS_POLL: Duration = Duration::from_millis(500);

pub struct EmbeddedConfig {
    store: Store,
    namespace: String,
    changed: Arc<Notify>,
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
            .write(move |tx| kv::apply(tx, &ns, changes, prefix_delete.as_deref()))
            .await?;
        self.changed.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl SharedConfig for EmbeddedConfig {
    async fn get(&self, key: &str) -> Result<Option<String>, SharedConfigError> {
        validate_key(key)?;
        Ok(self.store.read_now(|c| kv::get(c, &self.namespace, key))?)
    }

    async fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, SharedConfigError> {
        validate_key(prefix)?;
        // A prefix holds the configuration of one part (an image list, the registries): an
        // index range of at most a few hundred rows, read at once.
        Ok(self
            .store
            .read_now(|c| kv::get_prefix(c, &self.namespace, prefix))?)
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
        let start = self.store.read(kv::last_revision).await?;
        let (tx, rx) = mpsc::channel(256);
        let (store, changed, key) = (self.store.clone(), self.changed.clone(), key.to_owned());
        tokio::spawn(async move {
            let mut last = start;
            loop {
                // Register interest before reading, so a write between the read and the
                // wait is not missed.
                let notified = changed.notified();
                let ns2 = ns.clone();
                let batch = store.read(move |c| kv::changes_after(c, &ns2, last)).await;
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
