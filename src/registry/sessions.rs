//! Every status change of a session, each in one write transaction (the SQL is in
//! [`crate::store::kernels`]); this module announces each change to the create calls,
//! streams and event listeners waiting for it:
//!
//! ```text
//! PENDING ─place─▶ PREPARING ─▶ (PULLING) ─▶ RUNNING ─destroy─▶ TERMINATING ─▶ TERMINATED
//!    │                  │                        │  ▲ restart            │
//!    └──cancel──────────┴──creation-failed───────┴──┴─────────▶ ERROR ────┘
//! ```
//!
//! Slots are reserved on an agent when a session is placed (by the scheduler's pass, in the
//! commit that queues it) and released when it becomes TERMINATED, in the transaction that
//! changes the status. The keypair's `concurrency_used` goes up and down in the same
//! transactions (and is recounted from the live sessions at start-up).

use super::{Registry, SessionEvent};
use crate::domain::{AgentStatus, KernelStatus};
use crate::store::auth::ResourcePolicy;
use crate::store::kernels;
use crate::store::{Store, StoreError};
use serde_json::Value;

pub use crate::store::kernels::{
    parse_slots, Changed, Enqueued, Live, NewSession, Refusal, Started,
};

/// Recounts every keypair's `concurrency_used` from its live sessions (at start-up: the
/// count is kept in step by each create and end, and this heals a database that was
/// edited or restored by other means).
pub async fn recount_concurrency(store: &Store) -> Result<(), StoreError> {
    store.write(kernels::recount_concurrency).await
}

/// Inserts a PENDING session after the policy checks, or finds the live session with the
/// same token. The scheduler's batch hook places it in the same commit when it can (see
/// [`super::scheduler::run`]).
pub async fn enqueue(
    store: &Store,
    new: NewSession,
    policy: &ResourcePolicy,
) -> Result<Result<Enqueued, Refusal>, StoreError> {
    let policy = policy.clone();
    store
        .write_hooked(move |tx| kernels::enqueue(tx, &new, &policy))
        .await
}

/// The live (not TERMINATED) master kernel of a session of `access_key`.
pub async fn find(
    store: &Store,
    sess_id: &str,
    access_key: &str,
) -> Result<Option<Live>, StoreError> {
    store.read_now(|c| kernels::live_session(c, sess_id, access_key))
}

/// A kernel by id, whatever its status.
pub async fn kernel(store: &Store, kernel_id: &str) -> Result<Option<Live>, StoreError> {
    store.read_now(|c| kernels::kernel(c, kernel_id))
}

/// Live kernels placed on `agent`.
pub async fn on_agent(store: &Store, agent: &str) -> Result<Vec<Live>, StoreError> {
    let agent = agent.to_owned();
    store.read(move |c| kernels::on_agent(c, &agent)).await
}

fn announce(
    reg: &Registry,
    kernel_id: &str,
    c: &Changed,
    to: KernelStatus,
    reason: Option<String>,
) {
    reg.emit(SessionEvent {
        name: to.event_name(),
        sess_id: c.sess_id.clone(),
        kernel_id: kernel_id.to_owned(),
        access_key: c.access_key.clone(),
        status: to,
        reason,
    });
}

/// Moves a kernel from one of `from` to `to` (and records `info`); `None` when it was not in
/// one of `from`. Never to TERMINATED: a session ends through [`mark_terminated`].
pub async fn transition(
    reg: &Registry,
    store: &Store,
    kernel_id: &str,
    from: &'static [KernelStatus],
    to: KernelStatus,
    info: Option<String>,
) -> Result<Option<Changed>, StoreError> {
    let id = kernel_id.to_owned();
    let info2 = info.clone();
    let changed = store
        .write(move |tx| kernels::transition(tx, &id, from, to, info2.as_deref()))
        .await?;
    if let Some(c) = &changed {
        announce(reg, kernel_id, c, to, info);
    }
    Ok(changed)
}

/// An agent went away (`LOST` or `TERMINATED`): its status and the ERROR status of every
/// session it was running (with `why` as the reason) are written in one transaction, so no
/// reader ever sees the agent gone while its sessions still look RUNNING. Slots stay
/// reserved: the containers may still be running and come back with the agent.
pub async fn agent_down(
    reg: &Registry,
    store: &Store,
    agent: &str,
    status: AgentStatus,
    why: &'static str,
) -> Result<usize, StoreError> {
    let agent = agent.to_owned();
    let changed = store
        .write(move |tx| kernels::agent_down(tx, &agent, status, why))
        .await?;
    for (kernel_id, c) in &changed {
        announce(reg, kernel_id, c, KernelStatus::Error, Some(why.to_owned()));
    }
    Ok(changed.len())
}

/// PREPARING/PULLING/RESTARTING → RUNNING with what the agent reported. `false` when the
/// session was meanwhile asked to terminate (the caller then destroys what it started).
pub async fn mark_running(
    reg: &Registry,
    store: &Store,
    kernel_id: &str,
    started: Started,
) -> Result<bool, StoreError> {
    let id = kernel_id.to_owned();
    let changed = store
        .write(move |tx| kernels::mark_running(tx, &id, &started))
        .await?;
    if let Some(c) = &changed {
        announce(reg, kernel_id, c, KernelStatus::Running, None);
    }
    Ok(changed.is_some())
}

/// Ends a session: TERMINATED with `reason`, its slots released and its keypair's
/// concurrency recounted, all at once. `None` when it had already ended.
pub async fn mark_terminated(
    reg: &Registry,
    store: &Store,
    kernel_id: &str,
    reason: &str,
    last_stat: Option<Value>,
) -> Result<Option<Changed>, StoreError> {
    let (id, why) = (kernel_id.to_owned(), reason.to_owned());
    let last = last_stat.filter(|v| !v.is_null()).map(|v| v.to_string());
    let changed = store
        .write(move |tx| kernels::mark_terminated(tx, &id, &why, last.as_deref()))
        .await?;
    if let Some(c) = &changed {
        announce(
            reg,
            kernel_id,
            c,
            KernelStatus::Terminated,
            Some(reason.to_owned()),
        );
        // Freed capacity may let a pending session start.
        reg.wake.notify_one();
    }
    Ok(changed)
}

/// Sessions whose start or restart was in flight when the manager stopped: what the agent
/// did is unknown, so they end (`creation-interrupted`) or are flagged (ERROR), and any
/// container left behind is destroyed as an orphan when its agent next reports.
pub async fn settle_interrupted(reg: &Registry, store: &Store) -> Result<usize, StoreError> {
    let ids = store.read(kernels::in_flight).await?;
    for (id, status) in &ids {
        if *status == KernelStatus::Restarting {
            let info = Some("restart interrupted by a manager restart".to_owned());
            transition(
                reg,
                store,
                id,
                &[KernelStatus::Restarting],
                KernelStatus::Error,
                info,
            )
            .await?;
        } else {
            mark_terminated(
                reg,
                store,
                id,
                "creation-interrupted (the manager restarted)",
                None,
            )
            .await?;
        }
    }
    Ok(ids.len())
}
