//! Ephemeral state shared between manager processes and agents: Redis when the shared
//! config names one (`config/redis/addr`), otherwise in-process. Rate-limit counters and
//! live statistics live here (agent events join them with the agent).

mod memory;
mod redis;

pub use self::memory::InProcess;
pub use self::redis::RedisBus;

use crate::shared_config::{keys, SharedConfig, SharedConfigError};
use async_trait::async_trait;
use std::sync::Arc;
use tokio::sync::mpsc;

/// An agent event, named and shaped as the original's (`instance_heartbeat`,
/// `kernel_terminated`, …).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub name: String,
    pub agent_id: String,
    pub args: Vec<serde_json::Value>,
}

impl Event {
    pub fn new(name: &str, agent_id: &str, args: Vec<serde_json::Value>) -> Self {
        Event {
            name: name.to_owned(),
            agent_id: agent_id.to_owned(),
            args,
        }
    }
}

/// An event handed to a consumer; acknowledge it once handled.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub event: Event,
}

/// The rolling rate-limit window, in seconds (15 minutes, as the original).
pub const RATE_LIMIT_WINDOW_SECS: u64 = 900;

/// How long a live statistic stays without being refreshed (as the original's agents).
pub const STAT_TTL_SECS: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("redis at {addr}: {msg}")]
    Redis { addr: String, msg: String },
    #[error(transparent)]
    Config(#[from] SharedConfigError),
}

#[async_trait]
pub trait Ephemeral: Send + Sync {
    /// Records one request of `access_key` at `now_ms` and returns how many it made within
    /// the last `window_secs` (this one included).
    async fn rate_limit_hit(
        &self,
        access_key: &str,
        now_ms: u64,
        window_secs: u64,
    ) -> Result<u64, BusError>;
    /// Stores the live statistics of a kernel or agent (by id) for `ttl_secs`.
    async fn put_stat(
        &self,
        id: &str,
        stat: &serde_json::Value,
        ttl_secs: u64,
    ) -> Result<(), BusError>;
    /// The live statistics of a kernel or agent, if fresh.
    async fn get_stat(&self, id: &str) -> Result<Option<serde_json::Value>, BusError>;
    /// Appends an event for the managers.
    async fn publish(&self, event: &Event) -> Result<(), BusError>;
    /// Events for `consumer` in `group`, at least once: deliveries not acknowledged before
    /// a consumer stops are delivered again when it (by the same name) comes back.
    async fn subscribe(
        &self,
        group: &str,
        consumer: &str,
    ) -> Result<mpsc::Receiver<Delivery>, BusError>;
    async fn ack(&self, group: &str, id: &str) -> Result<(), BusError>;
    fn describe(&self) -> String;
}

pub type EphemeralHandle = Arc<dyn Ephemeral>;

/// Redis if the shared config has `config/redis/addr`, else in-process.
pub async fn connect(shared: &dyn SharedConfig) -> Result<EphemeralHandle, BusError> {
    match shared.get(keys::REDIS_ADDR).await? {
        Some(addr) if !addr.trim().is_empty() => {
            let password = shared
                .get(keys::REDIS_PASSWORD)
                .await?
                .filter(|p| !p.is_empty());
            Ok(Arc::new(
                RedisBus::connect(addr.trim(), password.as_deref()).await?,
            ))
        }
        _ => Ok(Arc::new(InProcess::default())),
    }
}
