//! Operations on a session over its agent's RPC. A failure is a [`RegistryError`]: the
//! session not RUNNING, its agent unreachable, or the agent's own error for the operation
//! (the gateway reports these as the original did: a timeout or agent failure becomes the
//! operation's `…-failed` problem with the agent's words, a kernel the agent does not know
//! is `kernel-not-found`).

use super::sessions::{self, Live};
use super::{Operation, Registry, RegistryError};
use crate::agent::AgentError;
use crate::domain::{AgentStatus, KernelStatus};
use crate::rpc::client::AgentClient;
use serde_json::Value;

/// The RPC client for a RUNNING session on an ALIVE agent; a clear error otherwise.
pub async fn client(reg: &Registry, live: &Live) -> Result<AgentClient, RegistryError> {
    if live.status != KernelStatus::Running {
        let why = live
            .status_info
            .as_deref()
            .map(|i| format!(" ({i})"))
            .unwrap_or_default();
        return Err(RegistryError::NotRunning {
            sess_id: live.sess_id.clone(),
            status: live.status,
            why,
        });
    }
    if live.agent_status != Some(AgentStatus::Alive) {
        return Err(RegistryError::AgentUnreachable(live.sess_id.clone()));
    }
    reg.agent(&live.agent_addr)
        .await
        .map_err(|e| RegistryError::agent(Operation::Execute, e))
}

/// Destroys a session in whatever state it is; returns its last statistics.
pub async fn destroy(
    reg: &Registry,
    live: &Live,
    reason: &str,
) -> Result<Option<Value>, RegistryError> {
    let store = &reg.store;
    match live.status {
        KernelStatus::Pending => {
            sessions::mark_terminated(reg, store, &live.id, reason, None).await?;
            return Ok(None);
        }
        // The starting task sees TERMINATING when the agent answers and destroys it then.
        KernelStatus::Preparing | KernelStatus::Pulling => {
            sessions::transition(
                reg,
                store,
                &live.id,
                &[KernelStatus::Preparing, KernelStatus::Pulling],
                KernelStatus::Terminating,
                Some(reason.into()),
            )
            .await?;
            return Ok(None);
        }
        _ => {}
    }
    if live.agent_status != Some(AgentStatus::Alive) {
        // Nothing can be asked of a lost agent: the record ends here, and if the agent comes
        // back its orphaned container is destroyed then.
        let why = format!(
            "{reason} (agent {} lost)",
            live.agent.as_deref().unwrap_or("?")
        );
        sessions::mark_terminated(reg, store, &live.id, &why, None).await?;
        return Ok(None);
    }
    sessions::transition(
        reg,
        store,
        &live.id,
        &[
            KernelStatus::Running,
            KernelStatus::Restarting,
            KernelStatus::Error,
            KernelStatus::Terminating,
        ],
        KernelStatus::Terminating,
        Some(reason.into()),
    )
    .await?;
    let client = reg
        .agent(&live.agent_addr)
        .await
        .map_err(|e| RegistryError::agent(Operation::Destroy, e))?;
    match client.destroy_kernel(&live.id, reason).await {
        Ok(last) => {
            let last = match last {
                Some(v) => Some(v),
                None => reg.bus.get_stat(&live.id).await.ok().flatten(),
            };
            match sessions::mark_terminated(reg, store, &live.id, reason, last.clone()).await {
                Ok(_) => Ok(last),
                // The container is gone; only its record could not be closed. Say so: the
                // next heartbeat after space is freed closes it (`vanished`).
                Err(e) if e.is_disk_full() => Err(RegistryError::EndNotRecorded),
                Err(e) => Err(e.into()),
            }
        }
        Err(AgentError::NotFound(_)) => {
            sessions::mark_terminated(reg, store, &live.id, reason, None).await?;
            Ok(None)
        }
        Err(e) => {
            let info = format!("destruction failed: {e}");
            sessions::transition(
                reg,
                store,
                &live.id,
                &[KernelStatus::Terminating],
                KernelStatus::Error,
                Some(info),
            )
            .await?;
            Err(RegistryError::agent(Operation::Destroy, e))
        }
    }
}

/// How long a forced destroy waits for the agent before ending the record anyway.
const FORCED_AGENT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Ends a session whatever its agent says: the agent, if alive, is asked to destroy the
/// container (for at most [`FORCED_AGENT_WAIT`]; a failure is logged, and a container left
/// behind is destroyed as an orphan at the agent's next heartbeat), then the record becomes
/// TERMINATED with `reason` and its slots are released — once, as every end.
pub async fn destroy_forced(
    reg: &Registry,
    live: &Live,
    reason: &str,
) -> Result<Option<Value>, RegistryError> {
    let mut last = None;
    if live.agent_status == Some(AgentStatus::Alive) && live.status.holds_slots() {
        let asked = async {
            let client = reg.agent(&live.agent_addr).await?;
            client.destroy_kernel(&live.id, reason).await
        };
        match tokio::time::timeout(FORCED_AGENT_WAIT, asked).await {
            Ok(Ok(stats)) => last = stats,
            Ok(Err(e)) => tracing::warn!("forced end of {}: the agent said: {e}", live.sess_id),
            Err(_) => tracing::warn!(
                "forced end of {}: the agent did not answer within {} s",
                live.sess_id,
                FORCED_AGENT_WAIT.as_secs()
            ),
        }
    }
    sessions::mark_terminated(reg, &reg.store, &live.id, reason, last.clone()).await?;
    Ok(last)
}

/// Destroys every live session (a freeze with `force_kill`), a few at a time, with
/// `reason`. Returns how many were ended and the failures, each as `(session, error)`.
pub async fn destroy_all(
    reg: &Registry,
    reason: &str,
) -> Result<(usize, Vec<(String, RegistryError)>), RegistryError> {
    use futures_util::StreamExt;
    let live = reg.store.read(crate::store::kernels::all_live).await?;
    let outcomes: Vec<_> = futures_util::stream::iter(live)
        .map(|k| async move { (k.sess_id.clone(), destroy(reg, &k, reason).await) })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut ended = 0;
    let mut failed = Vec::new();
    for (sess_id, outcome) in outcomes {
        match outcome {
            Ok(_) => ended += 1,
            Err(e) => failed.push((sess_id, e)),
        }
    }
    Ok((ended, failed))
}

/// Recreates the session's container (same id, resources and files).
pub async fn restart(reg: &Registry, live: &Live) -> Result<(), RegistryError> {
    let client = client(reg, live).await?;
    let store = &reg.store;
    sessions::transition(
        reg,
        store,
        &live.id,
        &[KernelStatus::Running],
        KernelStatus::Restarting,
        None,
    )
    .await?;
    match client.restart_kernel(&live.id).await {
        Ok(created) => {
            let started = sessions::Started {
                container_id: created.container_id,
                kernel_host: live
                    .agent_addr
                    .split("://")
                    .nth(1)
                    .and_then(|a| a.rsplit_once(':'))
                    .map(|(h, _)| h.to_owned())
                    .unwrap_or_default(),
                service_ports: created.service_ports,
            };
            sessions::mark_running(reg, store, &live.id, started).await?;
            Ok(())
        }
        Err(e) => {
            let info = format!("restart failed: {e}");
            sessions::transition(
                reg,
                store,
                &live.id,
                &[KernelStatus::Restarting],
                KernelStatus::Error,
                Some(info),
            )
            .await?;
            Err(RegistryError::agent(Operation::Restart, e))
        }
    }
}
