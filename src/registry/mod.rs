//! The registry: what the manager knows about agents and sessions, and what it does with
//! them. [`agents`] follows the agents' events (registration, heartbeats, LOST detection,
//! ended kernels, reconciliation); [`sessions`] owns every status change of a session in
//! one write transaction each; [`scheduler`] places pending sessions on agents and starts
//! them; [`ops`] runs the operations on a running session over the agent RPC.

pub mod agents;
pub mod ops;
pub mod scheduler;
pub mod sessions;

use crate::agent::AgentError;
use crate::rpc::client::AgentClient;
use std::collections::HashMap;
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
    pub status: String,
    pub reason: Option<String>,
}

/// The registry's process-wide state.
pub struct Registry {
    events: broadcast::Sender<SessionEvent>,
    /// Wakes the scheduler (new session, freed capacity, agent changes).
    pub wake: Notify,
    clients: Mutex<HashMap<String, AgentClient>>,
    rpc_token: String,
    /// Set when the server shuts down: open streams close politely.
    closing: tokio::sync::watch::Sender<bool>,
}

impl Registry {
    pub fn new(rpc_token: &str) -> Self {
        Registry {
            events: broadcast::channel(4096).0,
            wake: Notify::new(),
            clients: Mutex::new(HashMap::new()),
            rpc_token: rpc_token.to_owned(),
            closing: tokio::sync::watch::channel(false).0,
        }
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

    pub(crate) fn emit(&self, ev: SessionEvent) {
        tracing::debug!(session = %ev.sess_id, kernel = %ev.kernel_id, status = %ev.status, "{}", ev.name);
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
