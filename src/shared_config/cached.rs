//! A read cache in front of the server's shared config, for the reads every session create
//! makes: the image catalogue and aliases (`images/…`) and the slot types and registries
//! (`config/…`). Without it each create read and parsed them afresh (a round trip to etcd
//! each, when etcd is configured).
//!
//! What is cached is dropped when:
//! - this process writes anything through the cache (at once);
//! - a watch on those prefixes reports a change by anyone else: other managers and agents
//!   on etcd (as soon as etcd tells), the `etcd`/`image` CLI on the embedded store (its
//!   watch looks for other processes' writes every half second);
//! - it is a second old, whatever the watches say.
//!
//! While a watch is not running (it failed to start, or its stream ended), every read goes
//! to the backend.

use super::{under_prefix, SharedConfig, SharedConfigError, SharedConfigHandle, WatchEvent};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The prefixes whose reads are cached (and watched).
const CACHED: [&str; 2] = ["images", "config"];
/// The oldest a cached read may be.
const MAX_AGE: Duration = Duration::from_secs(1);
/// Cached reads kept at most (alias lookups name keys from user input).
const MAX_ENTRIES: usize = 1024;

#[derive(Clone, PartialEq, Eq, Hash)]
enum Read {
    One(String),
    Prefix(String),
}

#[derive(Clone)]
enum Value {
    One(Option<String>),
    Prefix(Vec<(String, String)>),
}

#[derive(Default)]
struct State {
    /// Moves on every invalidation; a read that started before one is not cached.
    generation: u64,
    /// Watches running; the cache is used only while all of them are.
    watching: usize,
    entries: HashMap<Read, (Instant, Value)>,
}

impl State {
    fn invalidate(&mut self) {
        self.generation += 1;
        self.entries.clear();
    }
}

pub struct CachedConfig {
    inner: SharedConfigHandle,
    state: Arc<Mutex<State>>,
    /// Dropping it ends the watch tasks.
    _stop: tokio::sync::watch::Sender<()>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl CachedConfig {
    /// Wraps `inner`, starting the watches that keep the cache honest.
    pub async fn new(inner: SharedConfigHandle) -> Arc<CachedConfig> {
        let state = Arc::new(Mutex::new(State::default()));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
        for prefix in CACHED {
            let mut events = match inner.watch(prefix, true).await {
                Ok(rx) => rx,
                Err(e) => {
                    tracing::warn!("shared config reads of '{prefix}' are not cached: {e}");
                    continue;
                }
            };
            lock(&state).watching += 1;
            let (state, mut stop) = (state.clone(), stop_rx.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        ev = events.recv() => match ev {
                            Some(_) => lock(&state).invalidate(),
                            None => break,
                        },
                        _ = stop.changed() => break,
                    }
                }
                let mut s = lock(&state);
                s.watching -= 1;
                s.invalidate();
            });
        }
        Arc::new(CachedConfig {
            inner,
            state,
            _stop: stop_tx,
        })
    }

    /// A cached answer to `read`, or the generation to cache a fresh one under (`None`
    /// when it must not be cached).
    fn lookup(&self, read: &Read, key: &str) -> Result<Value, Option<u64>> {
        if !CACHED.iter().any(|p| under_prefix(key, p)) {
            return Err(None);
        }
        let s = lock(&self.state);
        if s.watching < CACHED.len() {
            return Err(None);
        }
        match s.entries.get(read) {
            Some((at, value)) if at.elapsed() < MAX_AGE => Ok(value.clone()),
            _ => Err(Some(s.generation)),
        }
    }

    fn remember(&self, read: Read, generation: Option<u64>, value: Value) {
        let mut s = lock(&self.state);
        if generation != Some(s.generation) {
            return;
        }
        if s.entries.len() >= MAX_ENTRIES {
            s.entries.clear();
        }
        s.entries.insert(read, (Instant::now(), value));
    }

    /// The cached answer to `read` (of `key`), else what `fetch` reads, cached when no
    /// change was seen meanwhile. An answer is cached under the kind of its read, so it
    /// comes back as the same kind of value.
    async fn read_through(
        &self,
        read: Read,
        key: &str,
        fetch: impl std::future::Future<Output = Result<Value, SharedConfigError>>,
    ) -> Result<Value, SharedConfigError> {
        let generation = match self.lookup(&read, key) {
            Ok(cached) => return Ok(cached),
            Err(generation) => generation,
        };
        let value = fetch.await?;
        self.remember(read, generation, value.clone());
        Ok(value)
    }

    /// Runs a write, then drops what was cached.
    async fn write(
        &self,
        op: impl std::future::Future<Output = Result<(), SharedConfigError>>,
    ) -> Result<(), SharedConfigError> {
        let result = op.await;
        lock(&self.state).invalidate();
        result
    }
}

#[async_trait]
impl SharedConfig for CachedConfig {
    async fn get(&self, key: &str) -> Result<Option<String>, SharedConfigError> {
        let read = Read::One(key.to_owned());
        let fetch = async { Ok(Value::One(self.inner.get(key).await?)) };
        match self.read_through(read, key, fetch).await? {
            Value::One(v) => Ok(v),
            Value::Prefix(_) => unreachable!("a key's read is cached as one value"),
        }
    }

    async fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, SharedConfigError> {
        let read = Read::Prefix(prefix.to_owned());
        let fetch = async { Ok(Value::Prefix(self.inner.get_prefix(prefix).await?)) };
        match self.read_through(read, prefix, fetch).await? {
            Value::Prefix(v) => Ok(v),
            Value::One(_) => unreachable!("a prefix's read is cached as pairs"),
        }
    }

    async fn put(&self, key: &str, value: &str) -> Result<(), SharedConfigError> {
        self.write(self.inner.put(key, value)).await
    }

    async fn put_many(&self, pairs: &[(String, String)]) -> Result<(), SharedConfigError> {
        self.write(self.inner.put_many(pairs)).await
    }

    async fn delete(&self, key: &str) -> Result<(), SharedConfigError> {
        self.write(self.inner.delete(key)).await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), SharedConfigError> {
        self.write(self.inner.delete_prefix(prefix)).await
    }

    async fn watch(
        &self,
        key: &str,
        prefix: bool,
    ) -> Result<mpsc::Receiver<WatchEvent>, SharedConfigError> {
        self.inner.watch(key, prefix).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared_config::EmbeddedConfig;
    use crate::store::Store;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The embedded backend, counting the reads that reach it.
    struct Counting {
        inner: EmbeddedConfig,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl SharedConfig for Counting {
        async fn get(&self, key: &str) -> Result<Option<String>, SharedConfigError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.get(key).await
        }
        async fn get_prefix(&self, p: &str) -> Result<Vec<(String, String)>, SharedConfigError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.get_prefix(p).await
        }
        async fn put(&self, key: &str, value: &str) -> Result<(), SharedConfigError> {
            self.inner.put(key, value).await
        }
        async fn put_many(&self, pairs: &[(String, String)]) -> Result<(), SharedConfigError> {
            self.inner.put_many(pairs).await
        }
        async fn delete(&self, key: &str) -> Result<(), SharedConfigError> {
            self.inner.delete(key).await
        }
        async fn delete_prefix(&self, prefix: &str) -> Result<(), SharedConfigError> {
            self.inner.delete_prefix(prefix).await
        }
        async fn watch(
            &self,
            key: &str,
            prefix: bool,
        ) -> Result<mpsc::Receiver<WatchEvent>, SharedConfigError> {
            self.inner.watch(key, prefix).await
        }
        fn describe(&self) -> String {
            "counting".into()
        }
    }

    #[tokio::test]
    async fn serves_repeated_reads_and_sees_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.db")).unwrap();
        let backend = Arc::new(Counting {
            inner: EmbeddedConfig::new(store.clone(), "local"),
            reads: AtomicUsize::new(0),
        });
        let reads = || backend.reads.load(Ordering::SeqCst);
        let cached = CachedConfig::new(backend.clone()).await;
        cached.put("images/_aliases/py", "python:3").await.unwrap();

        // Repeated reads of a cached prefix reach the backend once.
        let before = reads();
        for _ in 0..3 {
            assert_eq!(
                cached.get("images/_aliases/py").await.unwrap().as_deref(),
                Some("python:3")
            );
            assert_eq!(cached.get_prefix("images").await.unwrap().len(), 1);
        }
        assert_eq!(reads() - before, 2);
        // Keys outside the cached prefixes always do.
        let before = reads();
        cached.get("manager/status").await.unwrap();
        cached.get("manager/status").await.unwrap();
        assert_eq!(reads() - before, 2);

        // A write through the cache is seen by the very next read.
        cached.put("images/_aliases/py", "python:4").await.unwrap();
        assert_eq!(
            cached.get("images/_aliases/py").await.unwrap().as_deref(),
            Some("python:4")
        );
        cached.delete("images/_aliases/py").await.unwrap();
        assert_eq!(cached.get("images/_aliases/py").await.unwrap(), None);
        assert!(cached.get_prefix("images").await.unwrap().is_empty());

        // A write by someone else (another handle on the database, as the CLI in another
        // process) is seen once the watch reports it, within the poll interval; a cached
        // "not found" does not hide it.
        tokio::time::sleep(Duration::from_millis(100)).await; // our own writes' events
        assert_eq!(cached.get("images/_aliases/py").await.unwrap(), None);
        let before = reads();
        assert_eq!(cached.get("images/_aliases/py").await.unwrap(), None);
        assert_eq!(reads(), before, "the \"not found\" is cached");
        let other = EmbeddedConfig::new(store.clone(), "local");
        other.put("images/_aliases/py", "python:5").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        while cached.get("images/_aliases/py").await.unwrap().as_deref() != Some("python:5") {
            assert!(
                Instant::now() < deadline,
                "the other writer's change stays hidden"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(cached.get_prefix("images").await.unwrap().len(), 1);
    }
}
