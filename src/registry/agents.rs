//! Agents as the manager sees them, from their events: the first heartbeat registers an
//! agent, later ones update its slots (and revive it if it was LOST or TERMINATED), an agent
//! silent for longer than `manager.heartbeat-timeout` becomes LOST (never the agent that
//! runs inside this process: it lives as long as the process), `instance_terminated`
//! ends it, and `kernel_terminated` closes the kernel's record. Handlers are idempotent:
//! events may be delivered more than once.

use super::sessions;
use super::Registry;
use crate::bus::{Delivery, Event};
use crate::domain::{AgentStatus, KernelStatus};
use crate::shared_config::keys;
use crate::store::agents::{self as store_agents, Beat};
use crate::store::StoreError;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The consumer group every manager process reads agent events in.
pub const GROUP: &str = "managers";

/// When each agent was last heard from (this process's view).
#[derive(Default)]
pub struct LastSeen(Mutex<HashMap<String, Instant>>);

impl LastSeen {
    fn touch(&self, id: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), Instant::now());
    }

    fn since(&self, id: &str) -> Option<Duration> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(|t| t.elapsed())
    }
}

/// Applies one event to the database.
pub async fn handle(reg: &Arc<Registry>, seen: &LastSeen, ev: &Event) -> Result<(), StoreError> {
    match ev.name.as_str() {
        "instance_heartbeat" => {
            let info = ev.args.first().cloned().unwrap_or(Value::Null);
            seen.touch(&ev.agent_id);
            let room_changed = heartbeat(reg, &ev.agent_id, &info).await?;
            reconcile(reg, &ev.agent_id, &info).await?;
            // A pass only when the heartbeat could let a waiting session in (an ended
            // session wakes the scheduler itself): a queue that waits for room is not
            // planned again on every beat of every agent.
            if room_changed {
                reg.wake.notify_one();
            }
            Ok(())
        }
        "instance_started" => {
            seen.touch(&ev.agent_id);
            set_status(reg, &ev.agent_id, AgentStatus::Alive).await?;
            reg.wake.notify_one();
            Ok(())
        }
        "instance_terminated" => {
            let lost = ev.args.first().and_then(Value::as_str) == Some("agent-lost");
            if lost {
                agent_gone(reg, &ev.agent_id, AgentStatus::Lost, "agent-lost").await
            } else {
                agent_gone(reg, &ev.agent_id, AgentStatus::Terminated, "agent-shutdown").await
            }
        }
        "kernel_terminated" => {
            let Some(id) = ev.args.first().and_then(Value::as_str) else {
                return Ok(());
            };
            let reason = ev
                .args
                .get(1)
                .and_then(Value::as_str)
                .unwrap_or("self-terminated");
            // A restart replaces the container; the session goes on.
            if let Some(k) = sessions::kernel(&reg.store, id).await? {
                if k.status == KernelStatus::Restarting {
                    return Ok(());
                }
            }
            let mut last = ev.args.get(3).cloned().filter(|v| !v.is_null());
            if last.is_none() {
                last = reg.bus.get_stat(id).await.ok().flatten();
            }
            sessions::mark_terminated(reg, &reg.store, id, reason, last).await?;
            Ok(())
        }
        "kernel_pulling" => {
            if let Some(id) = ev.args.first().and_then(Value::as_str) {
                sessions::transition(
                    reg,
                    &reg.store,
                    id,
                    &[KernelStatus::Preparing],
                    KernelStatus::Pulling,
                    None,
                )
                .await?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Why sessions are in ERROR because their agent went away; they come back to RUNNING if
/// the agent returns with them.
const AGENT_GONE: &[&str] = &["agent-lost", "agent-shutdown"];

/// An agent went away: it is `status` (LOST or TERMINATED) and its live sessions are in
/// ERROR with the reason, in one transaction (their slots stay reserved: the containers
/// may still be running).
async fn agent_gone(
    reg: &Registry,
    agent: &str,
    status: AgentStatus,
    why: &'static str,
) -> Result<(), StoreError> {
    if let Some(addr) = reg.store.agent(agent).await?.map(|a| a.addr) {
        reg.forget_agent(&addr).await;
    }
    sessions::agent_down(reg, &reg.store, agent, status, why).await?;
    Ok(())
}

/// Compares what an agent reports running with the database: sessions it brought back are
/// RUNNING again, sessions it no longer has are closed (`vanished`), and containers
/// nobody has a live record of are destroyed.
async fn reconcile(reg: &Arc<Registry>, agent: &str, info: &Value) -> Result<(), StoreError> {
    let Some(reported) = info.get("kernels").and_then(Value::as_array) else {
        return Ok(());
    };
    let reported: std::collections::HashSet<&str> =
        reported.iter().filter_map(Value::as_str).collect();
    let grace = chrono::Duration::milliseconds(
        (reg.config.manager.heartbeat_timeout * 1000.0) as i64 + 5000,
    );
    let now = chrono::Utc::now();
    let live = sessions::on_agent(&reg.store, agent).await?;
    for k in &live {
        let here = reported.contains(k.id.as_str());
        let gone_agent = k.status == KernelStatus::Error
            && k.status_info
                .as_deref()
                .is_some_and(|i| AGENT_GONE.contains(&i));
        if here && gone_agent {
            sessions::transition(
                reg,
                &reg.store,
                &k.id,
                &[KernelStatus::Error],
                KernelStatus::Running,
                None,
            )
            .await?;
            continue;
        }
        // Creations in flight are not reported yet; a status that changed recently may
        // be newer than the heartbeat.
        let settled = k
            .status_changed
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| now - t.with_timezone(&chrono::Utc) > grace);
        if !here
            && settled
            && [
                KernelStatus::Running,
                KernelStatus::Terminating,
                KernelStatus::Error,
            ]
            .contains(&k.status)
        {
            tracing::warn!(
                "session {} ({}) is gone from agent {agent}",
                k.sess_id,
                k.id
            );
            sessions::mark_terminated(reg, &reg.store, &k.id, "vanished", None).await?;
        }
    }
    // Containers with no live record, and destructions that were cut short (a manager
    // restart during a destroy), are destroyed now.
    let known: std::collections::HashSet<&str> = live.iter().map(|k| k.id.as_str()).collect();
    let mut doomed: Vec<(String, Option<String>)> = reported
        .iter()
        .filter(|id| !known.contains(*id))
        .map(|id| ((*id).to_owned(), None))
        .collect();
    for k in &live {
        let stuck = k.status == KernelStatus::Terminating
            && k.status_changed
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| now - t.with_timezone(&chrono::Utc) > grace * 4);
        if stuck && reported.contains(k.id.as_str()) {
            doomed.push((
                k.id.clone(),
                Some(
                    k.status_info
                        .clone()
                        .unwrap_or_else(|| "user-requested".into()),
                ),
            ));
        }
    }
    if doomed.is_empty() {
        return Ok(());
    }
    let addr = info["addr"].as_str().unwrap_or_default().to_owned();
    let (reg, store) = (reg.clone(), reg.store.clone());
    tokio::spawn(async move {
        let Ok(client) = reg.agent(&addr).await else {
            return;
        };
        for (id, reason) in doomed {
            let why = reason.as_deref().unwrap_or("orphaned");
            tracing::warn!("destroying kernel {id} on {addr} ({why})");
            match client.destroy_kernel(&id, why).await {
                Ok(last) if reason.is_some() => {
                    if let Err(e) = sessions::mark_terminated(&reg, &store, &id, why, last).await {
                        tracing::warn!("cannot record the end of {id}: {e}");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("cannot destroy kernel {id}: {e}"),
            }
        }
    });
    Ok(())
}

async fn set_status(reg: &Registry, agent: &str, status: AgentStatus) -> Result<(), StoreError> {
    let agent = agent.to_owned();
    reg.store
        .write(move |tx| store_agents::set_status(tx, &agent, status))
        .await
}

/// Records a heartbeat; `true` if the agent is new, was not ALIVE, or reports other slots.
async fn heartbeat(reg: &Registry, agent: &str, info: &Value) -> Result<bool, StoreError> {
    // resource_slots: {slot: [unit, value]} (as the original agent sends them).
    let mut available = serde_json::Map::new();
    let mut units = Vec::new();
    for (slot, pair) in info["resource_slots"].as_object().into_iter().flatten() {
        let unit = pair[0].as_str().unwrap_or("count");
        let value = pair[1]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| pair[1].to_string());
        available.insert(slot.clone(), Value::String(value));
        if slot != "cpu" && slot != "mem" {
            units.push((format!("{}/{slot}", keys::RESOURCE_SLOTS), unit.to_owned()));
        }
    }
    let available = crate::domain::ResourceSlots::from_json(&Value::Object(available))
        .map_err(|e| StoreError::Invalid(format!("heartbeat of {agent}: {e}")))?
        .to_json()
        .to_string();
    let region = info["region"].as_str().unwrap_or("local").to_owned();
    let addr = info["addr"].as_str().unwrap_or("").to_owned();
    let version = info["version"].as_str().unwrap_or("").to_owned();
    let plugins = info
        .get("compute_plugins")
        .cloned()
        .unwrap_or(Value::Object(Default::default()))
        .to_string();
    let beat = Beat {
        region,
        available_slots: available,
        addr,
        version,
        compute_plugins: plugins,
    };
    let id = agent.to_owned();
    let recorded = reg
        .store
        .write(move |tx| store_agents::record_heartbeat(tx, &id, &beat))
        .await?;
    if let Some((status, since)) = &recorded.returned_from {
        tracing::warn!(
            "agent {agent} is back (it was {status} since {})",
            since.as_deref().unwrap_or("an unknown time")
        );
    }
    if !units.is_empty() {
        if let Err(e) = reg.shared.put_many(&units).await {
            tracing::warn!("cannot record slot types: {e}");
        }
    }
    Ok(recorded.room_changed)
}

/// Marks ALIVE agents not heard from within the timeout as LOST. Agents this process has
/// never heard from get the timeout counted from `started`.
pub async fn check_lost(
    reg: &Registry,
    seen: &LastSeen,
    started: Instant,
) -> Result<Vec<String>, StoreError> {
    let timeout = Duration::from_secs_f64(reg.config.manager.heartbeat_timeout);
    let alive = reg.store.read(store_agents::alive_ids).await?;
    let mut lost = Vec::new();
    for id in alive {
        // An agent inside this process lives as long as the process does: a busy machine
        // that delays its heartbeat task does not make it lost.
        if reg.is_in_process(&id) {
            continue;
        }
        let silent = seen.since(&id).unwrap_or_else(|| started.elapsed());
        if silent > timeout {
            agent_gone(reg, &id, AgentStatus::Lost, "agent-lost").await?;
            tracing::warn!(
                "agent {id} is lost (no heartbeat for {:.1} s)",
                silent.as_secs_f64()
            );
            lost.push(id);
        }
    }
    Ok(lost)
}

async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Follows agent events (from a subscription made by the caller, so nothing published
/// after start-up is missed) until `stop` resolves: handles and acknowledges each delivery,
/// and checks for lost agents every second.
pub async fn run(
    reg: Arc<Registry>,
    mut events: tokio::sync::mpsc::Receiver<Delivery>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let seen = LastSeen::default();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            d = events.recv() => {
                let Some(Delivery { id, event }) = d else { break };
                match handle(&reg, &seen, &event).await {
                    Ok(()) => {
                        if let Err(e) = reg.bus.ack(GROUP, &id).await {
                            tracing::warn!("cannot acknowledge event {id}: {e}");
                        }
                    }
                    // Not acknowledged: delivered again when this consumer comes back.
                    Err(e) => tracing::warn!("event {} from {}: {e}", event.name, event.agent_id),
                }
            }
            _ = tick.tick() => {
                if let Err(e) = check_lost(&reg, &seen, started).await {
                    tracing::warn!("checking for lost agents: {e}");
                }
            }
            _ = stopped(&mut stop) => break,
        }
    }
}
