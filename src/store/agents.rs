//! Agents as their events change them: registration and heartbeats, status changes, the
//! ALIVE list that liveness checks go over.

use super::StoreError;
use crate::domain::AgentStatus;
use rusqlite::{params, Connection, OptionalExtension};

/// What an agent's heartbeat reports, parsed.
#[derive(Debug, Clone)]
pub struct Beat {
    pub region: String,
    /// Its whole capacity, as slot JSON text.
    pub available_slots: String,
    pub addr: String,
    pub version: String,
    pub compute_plugins: String,
}

/// What recording a heartbeat found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeatRecorded {
    /// The agent is new, was not ALIVE, or reports other slots: waiting sessions may fit.
    pub room_changed: bool,
    /// It was LOST (or another status) until now: `(status, since)`.
    pub returned_from: Option<(String, Option<String>)>,
}

/// Registers an agent or refreshes it (ALIVE, with what it reports).
pub fn record_heartbeat(
    tx: &Connection,
    agent: &str,
    beat: &Beat,
) -> Result<BeatRecorded, StoreError> {
    let before: Option<(String, String, Option<String>)> = tx
        .prepare_cached("SELECT status, available_slots, lost_at FROM agents WHERE id = ?1")?
        .query_row([agent], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    tx.prepare_cached(
        "INSERT INTO agents (id, status, region, available_slots, occupied_slots, addr, version, compute_plugins)
         VALUES (?1, ?7, ?2, ?3, '{}', ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, lost_at = NULL, region = excluded.region,
            available_slots = excluded.available_slots, addr = excluded.addr,
            version = excluded.version, compute_plugins = excluded.compute_plugins",
    )?
    .execute(params![
        agent,
        beat.region,
        beat.available_slots,
        beat.addr,
        beat.version,
        beat.compute_plugins,
        AgentStatus::Alive
    ])?;
    let alive = AgentStatus::Alive.as_str();
    Ok(BeatRecorded {
        room_changed: before
            .as_ref()
            .is_none_or(|(status, was, _)| status != alive || *was != beat.available_slots),
        returned_from: before
            .filter(|(status, _, _)| status != alive)
            .map(|(status, _, lost_at)| (status, lost_at)),
    })
}

/// Sets an agent's status; `lost_at` is kept from the first time it left ALIVE.
pub fn set_status(tx: &Connection, agent: &str, status: AgentStatus) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE agents SET status = ?2,
                lost_at = CASE WHEN ?2 = 'ALIVE' THEN NULL
                               ELSE coalesce(lost_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) END
         WHERE id = ?1",
    )?
    .execute(params![agent, status])?;
    Ok(())
}

/// The ids of the ALIVE agents.
pub fn alive_ids(c: &Connection) -> Result<Vec<String>, StoreError> {
    let mut st = c.prepare_cached("SELECT id FROM agents WHERE status = 'ALIVE'")?;
    let ids = st
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(ids)
}
