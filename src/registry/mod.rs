//! The registry: what the manager knows about agents and sessions, and what it does with
//! them. [`agents`] follows the agents' events (registration, heartbeats, LOST detection,
//! ended kernels, reconciliation); [`sessions`] makes every status change of a session (one
//! write transaction each, the SQL in [`crate::store::kernels`]) and announces it;
//! [`scheduler`] places pending sessions on agents and starts them; [`ops`] runs the
//! operations on a running session over the agent RPC.
//!
//! It depends on the store, the shared config, the event bus and the agents only: never
//! on the gateway or the HTTP types. Its failures are [`RegistryError`]s, which the gateway
//! maps to the API's problems in one place.

pub mod agents;
pub mod ops;
pub mod scheduler;
pub mod sessions;

use crate::agent::AgentError;
use crate::bus::EphemeralHandle;
use crate::config::ManagerConfig;
use crate::domain::{KernelStatus, ResourceSlots};
use crate::rpc::client::AgentClient;
use crate::shared_config::SharedConfigHandle;
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{broadcast, Mutex, Notify};

/// A change of a session's status, as the lifecycle records it. Create calls wait on
/// these, streams close on them, and the event stream relays them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionEvent {
    /// `session_pending`, `session_preparing`, `session_pulling`, `session_started`,
    /// `session_terminating`, `session_terminated`, `session_failed`, ...
    pub name: &'static str,
    #[serde(rename = "sessionId")]
    pub sess_id: String,
    #[serde(rename = "kernelId")]
    pub kernel_id: String,
    #[serde(rename = "ownerAccessKey")]
    pub access_key: String,
    pub status: KernelStatus,
    pub reason: Option<String>,
}

/// How long a read of the agents' capacities is reused by [`Registry::recent_capacities`].
pub const CAPACITIES_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// An operation on a session over its agent's RPC (what a failure of it is reported as).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Destroy,
    Restart,
    Execute,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Destroy => "destroy",
            Operation::Restart => "restart",
            Operation::Execute => "execute",
        })
    }
}

/// Why the registry could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The operation needs a RUNNING session.
    #[error("the session {sess_id} is {status}{why}, not RUNNING")]
    NotRunning {
        sess_id: String,
        status: KernelStatus,
        /// ` (its status info)`, or empty.
        why: String,
    },
    #[error("the agent of session {0} is not reachable")]
    AgentUnreachable(String),
    /// The agent refused or failed the operation.
    #[error("{op} failed: {source}")]
    Agent {
        op: Operation,
        #[source]
        source: AgentError,
    },
    /// The container is gone, but the database's disk is full, so its end is not recorded
    /// yet (the next heartbeat after space is freed closes it as `vanished`).
    #[error("the session's container was destroyed, but its end could not be recorded because the database's disk is full; it is recorded once space is freed")]
    EndNotRecorded,
}

impl RegistryError {
    pub fn agent(op: Operation, source: AgentError) -> Self {
        RegistryError::Agent { op, source }
    }
}

/// The registry's process-wide state.
pub struct Registry {
    pub store: Store,
    pub shared: SharedConfigHandle,
    pub bus: EphemeralHandle,
    pub config: ManagerConfig,
    events: broadcast::Sender<SessionEvent>,
    /// The ALIVE agents' capacities as last read, and when (see
    /// [`Registry::recent_capacities`]).
    capacities: std::sync::Mutex<Option<(std::time::Instant, Arc<Vec<ResourceSlots>>)>>,
    /// Create calls waiting for one kernel's next change (see [`Registry::watch`]).
    watchers: std::sync::Mutex<HashMap<String, Vec<Arc<Watcher>>>>,
    /// Wakes the scheduler (new session, freed capacity, agent changes).
    pub wake: Notify,
    clients: Mutex<HashMap<String, AgentClient>>,
    rpc_token: String,
    /// Set when the server shuts down: open streams close politely.
    closing: tokio::sync::watch::Sender<bool>,
    /// Agents running inside this process (see [`Registry::adopt_in_process`]).
    in_process: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Registry {
    pub fn new(
        config: ManagerConfig,
        store: Store,
        shared: SharedConfigHandle,
        bus: EphemeralHandle,
    ) -> Self {
        let rpc_token = config.agent.rpc_token.clone();
        Registry {
            store,
            shared,
            bus,
            config,
            events: broadcast::channel(4096).0,
            watchers: std::sync::Mutex::new(HashMap::new()),
            capacities: std::sync::Mutex::new(None),
            wake: Notify::new(),
            clients: Mutex::new(HashMap::new()),
            rpc_token: rpc_token.to_owned(),
            closing: tokio::sync::watch::channel(false).0,
            in_process: Default::default(),
        }
    }

    /// Records that agent `id` runs inside this process: it is never judged lost by its
    /// heartbeats (a loaded machine may delay them), since it lives as long as we do.
    pub fn adopt_in_process(&self, id: &str) {
        if let Ok(mut set) = self.in_process.lock() {
            set.insert(id.to_owned());
        }
    }

    pub fn is_in_process(&self, id: &str) -> bool {
        self.in_process.lock().is_ok_and(|set| set.contains(id))
    }

    /// Tells open streams the server is shutting down.
    pub fn close_streams(&self) {
        let _ = self.closing.send(true);
    }

    /// Resolves once the server is shutting down.
    pub fn closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }

    /// The ALIVE agents' whole capacities, if read less than [`CAPACITIES_FRESH`] ago.
    pub fn recent_capacities(&self) -> Option<Arc<Vec<ResourceSlots>>> {
        let cached = self.capacities.lock().ok()?;
        let (at, capacities) = cached.as_ref()?;
        (at.elapsed() < CAPACITIES_FRESH).then(|| capacities.clone())
    }

    pub fn remember_capacities(&self, capacities: Vec<ResourceSlots>) {
        if let Ok(mut cached) = self.capacities.lock() {
            *cached = Some((std::time::Instant::now(), Arc::new(capacities)));
        }
    }

    /// Wakes when kernel `kernel_id` next changes status, for as long as it is held. A change
    /// made after this call is never missed, even before the first wait; a caller reads the
    /// status after calling this, then waits. Only that kernel's changes wake it (a thousand
    /// concurrent creates do not each look at every event).
    pub fn watch(&self, kernel_id: &str) -> KernelWatch<'_> {
        let watcher = Arc::new(Watcher::default());
        if let Ok(mut w) = self.watchers.lock() {
            w.entry(kernel_id.to_owned())
                .or_default()
                .push(watcher.clone());
        }
        KernelWatch {
            registry: self,
            kernel_id: kernel_id.to_owned(),
            watcher,
        }
    }

    pub(crate) fn emit(&self, ev: SessionEvent) {
        tracing::debug!(session = %ev.sess_id, kernel = %ev.kernel_id, status = %ev.status, "{}", ev.name);
        if let Ok(w) = self.watchers.lock() {
            for watcher in w.get(&ev.kernel_id).into_iter().flatten() {
                if let Ok(mut last) = watcher.last.lock() {
                    *last = Some(ev.status);
                }
                watcher.notify.notify_one();
            }
        }
        let _ = self.events.send(ev);
    }

    /// The RPC client of the agent at `addr` (connections are kept and shared).
    pub async fn agent(&self, addr: &str) -> Result<AgentClient, AgentError> {
        if let Some(c) = self.clients.lock().await.get(addr) {
            return Ok(c.clone());
        }
        let token = Some(self.rpc_token.clone()).filter(|t| !t.is_empty());
        let client = AgentClient::connect(addr, token).await?;
        self.clients
            .lock()
            .await
            .insert(addr.to_owned(), client.clone());
        Ok(client)
    }

    /// Drops the cached connection to an agent (it was lost or restarted).
    pub async fn forget_agent(&self, addr: &str) {
        self.clients.lock().await.remove(addr);
    }
}

/// One [`KernelWatch`]'s side of the registry: woken on a change, with its status.
#[derive(Default)]
struct Watcher {
    notify: Notify,
    last: std::sync::Mutex<Option<KernelStatus>>,
}

/// A wait on one kernel's status changes (from [`Registry::watch`]); dropping it stops
/// the watch.
pub struct KernelWatch<'a> {
    registry: &'a Registry,
    kernel_id: String,
    watcher: Arc<Watcher>,
}

impl KernelWatch<'_> {
    /// Resolves at the kernel's next change (at once if one came since the last call), with
    /// the status the latest change announced.
    pub async fn changed(&self) -> Option<KernelStatus> {
        self.watcher.notify.notified().await;
        self.watcher.last.lock().ok().and_then(|s| *s)
    }
}

impl Drop for KernelWatch<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.registry.watchers.lock() {
            if let Some(list) = w.get_mut(&self.kernel_id) {
                list.retain(|n| !Arc::ptr_eq(n, &self.watcher));
                if list.is_empty() {
                    w.remove(&self.kernel_id);
                }
            }
        }
    }
}
