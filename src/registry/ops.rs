//! Operations on a session over its agent's RPC, with the original's error mapping:
//! a timeout or agent failure becomes the operation's `…-failed` problem (with the agent's
//! words), a kernel the agent does not know is `kernel-not-found`.

use super::sessions::{self, Live};
use crate::agent::AgentError;
use crate::domain::KernelStatus;
use crate::gateway::error::{ApiError, Problem};
use crate::rpc::client::AgentClient;
use crate::server::App;
use serde_json::{json, Value};
use warp::http::StatusCode;

/// An agent error as the API reports it for operation `problem`.
pub fn agent_error(problem: Problem, e: AgentError) -> ApiError {
    match e {
        AgentError::NotFound(_) => ApiError::new(Problem::KernelNotFound),
        AgentError::InvalidInput(m) => ApiError::bad_params(m),
        AgentError::Timeout(m) => {
            ApiError::msg(problem, "TIMEOUT").with_data(json!({"agent-details": m}))
        }
        AgentError::Failure(m) => {
            ApiError::msg(problem, "FAILURE").with_data(json!({"agent-details": m}))
        }
    }
}

/// The RPC client for a RUNNING session on an ALIVE agent; a clear error otherwise.
pub async fn client(app: &App, live: &Live) -> Result<AgentClient, ApiError> {
    if live.status != KernelStatus::Running {
        let why = live
            .status_info
            .as_deref()
            .map(|i| format!(" ({i})"))
            .unwrap_or_default();
        return Err(ApiError::bad_params(format!(
            "the session {} is {}{why}, not RUNNING",
            live.sess_id, live.status
        ))
        .with_status(StatusCode::CONFLICT));
    }
    if live.agent_status.as_deref() != Some("ALIVE") {
        return Err(ApiError::msg(
            Problem::InstanceNotAvailable,
            format!("the agent of session {} is not reachable", live.sess_id),
        ));
    }
    app.registry
        .agent(&live.agent_addr)
        .await
        .map_err(|e| agent_error(Problem::KernelExecutionFailed, e))
}

/// Destroys a session in whatever state it is; returns its last statistics.
pub async fn destroy(app: &App, live: &Live, reason: &str) -> Result<Option<Value>, ApiError> {
    let (reg, store) = (&app.registry, &app.store);
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
    if live.agent_status.as_deref() != Some("ALIVE") {
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
    let client = app
        .registry
        .agent(&live.agent_addr)
        .await
        .map_err(|e| agent_error(Problem::KernelDestructionFailed, e))?;
    match client.destroy_kernel(&live.id, reason).await {
        Ok(last) => {
            let last = match last {
                Some(v) => Some(v),
                None => app.bus.get_stat(&live.id).await.ok().flatten(),
            };
            match sessions::mark_terminated(reg, store, &live.id, reason, last.clone()).await {
                Ok(_) => Ok(last),
                // The container is gone; only its record could not be closed. Say so: the
                // next heartbeat after space is freed closes it (`vanished`).
                Err(e) if e.is_disk_full() => Err(ApiError::msg(
                    Problem::StorageFull,
                    "the session's container was destroyed, but its end could not be recorded \
                     because the database's disk is full; it is recorded once space is freed",
                )),
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
            Err(agent_error(Problem::KernelDestructionFailed, e))
        }
    }
}

/// Recreates the session's container (same id, resources and files).
pub async fn restart(app: &App, live: &Live) -> Result<(), ApiError> {
    let client = client(app, live).await?;
    let (reg, store) = (&app.registry, &app.store);
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
        Ok(result) => {
            let started = sessions::Started {
                container_id: result["container_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                kernel_host: live
                    .agent_addr
                    .split("://")
                    .nth(1)
                    .and_then(|a| a.rsplit_once(':'))
                    .map(|(h, _)| h.to_owned())
                    .unwrap_or_default(),
                service_ports: result
                    .get("service_ports")
                    .cloned()
                    .unwrap_or_else(|| json!([])),
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
            Err(agent_error(Problem::KernelRestartFailed, e))
        }
    }
}
