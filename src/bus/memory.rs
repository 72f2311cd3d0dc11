//! In-process ephemeral state for a single manager without Redis.

use super::{BusError, Delivery, Ephemeral, Event};
use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Default)]
pub struct InProcess {
    hits: Mutex<HashMap<String, VecDeque<u64>>>,
    stats: Mutex<HashMap<String, (serde_json::Value, Instant)>>,
    /// One queue per consumer group: every group sees every event once.
    groups: Mutex<HashMap<String, mpsc::UnboundedSender<Delivery>>>,
    next_id: std::sync::atomic::AtomicU64,
}

#[async_trait]
impl Ephemeral for InProcess {
    async fn rate_limit_hit(
        &self,
        access_key: &str,
        now_ms: u64,
        window_secs: u64,
    ) -> Result<u64, BusError> {
        let floor = now_ms.saturating_sub(window_secs * 1000);
        let mut all = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        // Forget keys that went quiet, so the map does not grow with every key ever seen.
        if all.len() > 10_000 {
            all.retain(|_, q| q.back().is_some_and(|t| *t > floor));
        }
        let q = all.entry(access_key.to_owned()).or_default();
        while q.front().is_some_and(|t| *t <= floor) {
            q.pop_front();
        }
        q.push_back(now_ms);
        Ok(q.len() as u64)
    }

    async fn put_stat(
        &self,
        id: &str,
        stat: &serde_json::Value,
        ttl_secs: u64,
    ) -> Result<(), BusError> {
        let now = Instant::now();
        let mut all = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|_, (_, expiry)| *expiry > now);
        all.insert(
            id.to_owned(),
            (stat.clone(), now + Duration::from_secs(ttl_secs)),
        );
        Ok(())
    }

    async fn get_stat(&self, id: &str) -> Result<Option<serde_json::Value>, BusError> {
        let all = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        Ok(all
            .get(id)
            .filter(|(_, expiry)| *expiry > Instant::now())
            .map(|(v, _)| v.clone()))
    }

    async fn publish(&self, event: &Event) -> Result<(), BusError> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_string();
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups.retain(|_, tx| {
            tx.send(Delivery {
                id: id.clone(),
                event: event.clone(),
            })
            .is_ok()
        });
        Ok(())
    }

    async fn subscribe(
        &self,
        group: &str,
        _consumer: &str,
    ) -> Result<mpsc::Receiver<Delivery>, BusError> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group.to_owned(), tx);
        let (out_tx, out_rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                if out_tx.send(d).await.is_err() {
                    break;
                }
            }
        });
        Ok(out_rx)
    }

    async fn ack(&self, _group: &str, _id: &str) -> Result<(), BusError> {
        Ok(())
    }

    fn describe(&self) -> String {
        "in-process (no Redis configured)".into()
    }
}
