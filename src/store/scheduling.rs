//! What a scheduling pass reads and writes, inside the pass's transaction: the queue of
//! PENDING sessions, the ALIVE agents' slots, a placement (PREPARING on an agent, its slots
//! reserved there) and a waiting session's reason.

use super::kernels::adjust_agent;
use super::StoreError;
use crate::domain::{KernelStatus, ResourceSlots};
use rusqlite::{params, Connection};

/// The most queued sessions one pass considers.
pub const QUEUE_MAX: usize = 10_000;

/// A PENDING session as a pass reads it (slots as stored: the pass parses them through
/// its memo).
pub struct Queued {
    pub id: String,
    pub sess_id: String,
    pub access_key: String,
    pub occupied_slots: String,
    pub created_at: String,
    pub status_info: Option<String>,
}

/// The PENDING sessions, oldest first.
pub fn queue(tx: &Connection) -> Result<Vec<Queued>, StoreError> {
    let mut st = tx.prepare_cached(
        "SELECT id, sess_id, coalesce(access_key, ''), occupied_slots, created_at, status_info
         FROM kernels WHERE status = ?1 ORDER BY created_at, rowid LIMIT ?2",
    )?;
    let rows = st
        .query_map(params![KernelStatus::Pending, QUEUE_MAX as i64], |r| {
            Ok(Queued {
                id: r.get(0)?,
                sess_id: r.get(1)?,
                access_key: r.get(2)?,
                occupied_slots: r.get(3)?,
                created_at: r.get(4)?,
                status_info: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// An ALIVE agent as a pass reads it (slots as stored).
pub struct AliveAgent {
    pub id: String,
    pub addr: String,
    pub available_slots: String,
    pub occupied_slots: String,
}

pub fn alive_agents(tx: &Connection) -> Result<Vec<AliveAgent>, StoreError> {
    let mut st = tx.prepare_cached(
        "SELECT id, addr, available_slots, occupied_slots FROM agents WHERE status = 'ALIVE' ORDER BY id",
    )?;
    let rows = st
        .query_map([], |r| {
            Ok(AliveAgent {
                id: r.get(0)?,
                addr: r.get(1)?,
                available_slots: r.get(2)?,
                occupied_slots: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Places a PENDING session on `agent`: PREPARING there, with `requested` added to the
/// agent's occupied slots.
pub fn place(
    tx: &Connection,
    kernel_id: &str,
    agent: &str,
    addr: &str,
    requested: &ResourceSlots,
    now: &str,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE kernels SET status = ?5, status_info = NULL,
                status_changed = ?2, agent = ?3, agent_addr = ?4
         WHERE id = ?1 AND status = ?6",
    )?
    .execute(params![
        kernel_id,
        now,
        agent,
        addr,
        KernelStatus::Preparing,
        KernelStatus::Pending
    ])?;
    adjust_agent(tx, agent, requested, false)
}

/// Records why a PENDING session waits.
pub fn note_wait(tx: &Connection, kernel_id: &str, reason: &str) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE kernels SET status_info = ?2 WHERE id = ?1 AND status = ?3")?
        .execute(params![kernel_id, reason, KernelStatus::Pending])?;
    Ok(())
}

/// The parts of a placed session the agent's create config needs.
#[derive(Default)]
pub struct StartSpec {
    pub image: String,
    pub registry: String,
    pub occupied_slots: String,
    pub creation_config: Option<String>,
    pub idle_timeout: i64,
}

pub fn start_spec(tx: &Connection, kernel_id: &str) -> Result<StartSpec, StoreError> {
    Ok(tx
        .prepare_cached(
            "SELECT coalesce(k.image, ''), coalesce(k.registry, ''), k.occupied_slots,
                    k.creation_config, coalesce(p.idle_timeout, 0)
             FROM kernels k
             LEFT JOIN keypairs kp ON kp.access_key = k.access_key
             LEFT JOIN keypair_resource_policies p ON p.name = kp.resource_policy
             WHERE k.id = ?1",
        )?
        .query_row([kernel_id], |r| {
            Ok(StartSpec {
                image: r.get(0)?,
                registry: r.get(1)?,
                occupied_slots: r.get(2)?,
                creation_config: r.get(3)?,
                idle_timeout: r.get(4)?,
            })
        })?)
}
