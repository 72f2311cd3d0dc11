//! In-process ephemeral state for a single manager without Redis.

use super::{BusError, Delivery, Ephemeral, Event};
use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Width of one rate-limit bucket: a millisecond, the precision of the original's scores, so
/// counts match Redis exactly.
const BUCKET_MS: u64 = 1;

/// One key's requests in the rolling window, counted per [`BUCKET_MS`]: memory stays bounded
/// (at most one entry per bucket in the window) however many requests come, refused ones
/// included.
#[derive(Default)]
struct Window {
    buckets: VecDeque<(u64, u64)>,
    total: u64,
}

impl Window {
    fn hit(&mut self, now_ms: u64, floor_ms: u64) -> u64 {
        while let Some(&(bucket, n)) = self.buckets.front() {
            if (bucket + 1) * BUCKET_MS > floor_ms + 1 {
                break;
            }
            self.total -= n;
            self.buckets.pop_front();
        }
        let bucket = now_ms / BUCKET_MS;
        match self.buckets.back_mut() {
            Some((b, n)) if *b == bucket => *n += 1,
            _ => self.buckets.push_back((bucket, 1)),
        }
        self.total += 1;
        self.total
    }

    fn newest_ms(&self) -> u64 {
        self.buckets.back().map_or(0, |(b, _)| (b + 1) * BUCKET_MS)
    }
}

/// Live statistics with their expiry; expired ones are swept at most once a second.
#[derive(Default)]
struct Stats {
    values: HashMap<String, (serde_json::Value, Instant)>,
    swept: Option<Instant>,
}

#[derive(Default)]
pub struct InProcess {
    hits: Mutex<HashMap<String, Window>>,
    stats: Mutex<Stats>,
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
            all.retain(|_, w| w.newest_ms() > floor);
        }
        Ok(all
            .entry(access_key.to_owned())
            .or_default()
            .hit(now_ms, floor))
    }

    async fn put_stat(
        &self,
        id: &str,
        stat: &serde_json::Value,
        ttl_secs: u64,
    ) -> Result<(), BusError> {
        let now = Instant::now();
        let mut all = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        if all
            .swept
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            all.values.retain(|_, (_, expiry)| *expiry > now);
            all.swept = Some(now);
        }
        all.values.insert(
            id.to_owned(),
            (stat.clone(), now + Duration::from_secs(ttl_secs)),
        );
        Ok(())
    }

    async fn get_stat(&self, id: &str) -> Result<Option<serde_json::Value>, BusError> {
        let all = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        Ok(all
            .values
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_window_counts_rolls_and_stays_small() {
        let mut w = Window::default();
        let window = 900_000;
        // 100 000 hits within one second: counted, in at most a thousand buckets.
        for i in 0..100_000u64 {
            w.hit(1_000_000 + i / 100, 1_000_000u64.saturating_sub(window));
        }
        assert_eq!(w.total, 100_000);
        assert!(w.buckets.len() <= 1000, "{}", w.buckets.len());
        // A window later, the old hits are gone.
        let later = 1_000_000 + window + 1_000;
        assert_eq!(w.hit(later, later - window), 1);
        assert_eq!(w.buckets.len(), 1);
    }
}
