//! The shared config in a real etcd, keys under `/sorna/{namespace}/`.

use super::{under_prefix, validate_key, SharedConfig, SharedConfigError, WatchEvent};
use async_trait::async_trait;
use etcd_client::{
    Client, ConnectOptions, DeleteOptions, EventType, GetOptions, Txn, TxnOp, WatchOptions,
};
use std::time::Duration;
use tokio::sync::mpsc;

pub struct EtcdConfig {
    client: Client,
    root: String,
    addr: String,
}

impl EtcdConfig {
    pub async fn connect(cfg: &crate::config::EtcdConfig) -> Result<Self, SharedConfigError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10));
        if !cfg.user.is_empty() {
            opts = opts.with_user(cfg.user.clone(), cfg.password.clone());
        }
        let addr = cfg.addr.clone();
        let err = |e: etcd_client::Error| SharedConfigError::Etcd {
            addr: cfg.addr.clone(),
            msg: e.to_string(),
        };
        let mut client = Client::connect([format!("http://{addr}")], Some(opts))
            .await
            .map_err(err)?;
        // Fail at start-up, not on the first request, when etcd is not there.
        client.status().await.map_err(err)?;
        Ok(EtcdConfig {
            client,
            root: format!("/sorna/{}/", cfg.namespace),
            addr,
        })
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    fn err(&self, e: etcd_client::Error) -> SharedConfigError {
        SharedConfigError::Etcd {
            addr: self.addr.clone(),
            msg: e.to_string(),
        }
    }

    /// The key-range `[key, key + "0")`: the key itself, everything below `key/`, and
    /// (filtered out by callers) siblings such as `key-x` that sort between them.
    fn range(&self, key: &str) -> (String, String) {
        (self.full(key), self.full(&format!("{key}0")))
    }

    fn strip<'a>(&self, full: &'a str) -> Option<&'a str> {
        full.strip_prefix(&self.root)
    }
}

#[async_trait]
impl SharedConfig for EtcdConfig {
    async fn get(&self, key: &str) -> Result<Option<String>, SharedConfigError> {
        validate_key(key)?;
        let resp = self
            .client
            .clone()
            .get(self.full(key), None)
            .await
            .map_err(|e| self.err(e))?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    async fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, SharedConfigError> {
        validate_key(prefix)?;
        let (start, end) = self.range(prefix);
        let resp = self
            .client
            .clone()
            .get(start, Some(GetOptions::new().with_range(end)))
            .await
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for kv in resp.kvs() {
            let full = String::from_utf8_lossy(kv.key());
            if let Some(k) = self.strip(&full).filter(|k| under_prefix(k, prefix)) {
                out.push((
                    k.to_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                ));
            }
        }
        out.sort();
        Ok(out)
    }

    async fn put(&self, key: &str, value: &str) -> Result<(), SharedConfigError> {
        validate_key(key)?;
        self.client
            .clone()
            .put(self.full(key), value, None)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn put_many(&self, pairs: &[(String, String)]) -> Result<(), SharedConfigError> {
        for (k, _) in pairs {
            validate_key(k)?;
        }
        let ops: Vec<TxnOp> = pairs
            .iter()
            .map(|(k, v)| TxnOp::put(self.full(k), v.as_str(), None))
            .collect();
        self.client
            .clone()
            .txn(Txn::new().and_then(ops))
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), SharedConfigError> {
        validate_key(key)?;
        self.client
            .clone()
            .delete(self.full(key), None)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), SharedConfigError> {
        validate_key(prefix)?;
        let ops = vec![
            TxnOp::delete(self.full(prefix), None),
            TxnOp::delete(
                self.full(&format!("{prefix}/")),
                Some(DeleteOptions::new().with_prefix()),
            ),
        ];
        self.client
            .clone()
            .txn(Txn::new().and_then(ops))
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn watch(
        &self,
        key: &str,
        prefix: bool,
    ) -> Result<mpsc::Receiver<WatchEvent>, SharedConfigError> {
        validate_key(key)?;
        let (start, end) = self.range(key);
        let opts = if prefix {
            Some(WatchOptions::new().with_range(end))
        } else {
            None
        };
        let (watcher, mut stream) = self
            .client
            .clone()
            .watch(start, opts)
            .await
            .map_err(|e| self.err(e))?;
        let (tx, rx) = mpsc::channel(256);
        let (root, key) = (self.root.clone(), key.to_owned());
        tokio::spawn(async move {
            let _watcher = watcher; // dropping it cancels the watch
            loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    _ = tx.closed() => return,
                };
                let resp = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!("etcd watch on '{key}' ended: {e}");
                        return;
                    }
                };
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let full = String::from_utf8_lossy(kv.key()).into_owned();
                    let Some(k) = full.strip_prefix(&root) else {
                        continue;
                    };
                    if !(if prefix {
                        under_prefix(k, &key)
                    } else {
                        k == key
                    }) {
                        continue;
                    }
                    let out = match ev.event_type() {
                        EventType::Put => WatchEvent::Put {
                            key: k.to_owned(),
                            value: String::from_utf8_lossy(kv.value()).into_owned(),
                        },
                        EventType::Delete => WatchEvent::Delete { key: k.to_owned() },
                    };
                    if tx.send(out).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    fn describe(&self) -> String {
        format!("etcd at {} (prefix {})", self.addr, self.root)
    }
}
