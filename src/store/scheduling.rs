//! What a scheduling pass reads and writes, inside the pass's transaction: the queue of
//! PENDING sessions, the ALIVE agents' slots, a placement (PREPARING on an agent, its slots
//! reserved there), a waiting session's reason, and what a placed session's kernel is
//! created from ([`StartSpec`], its stored config parsed here).

use super::kernels::adjust_agent;
use super::StoreError;
use crate::domain::{KernelStatus, ResourceSlots, SessionSpec};
use rusqlite::{params, Connection};
use std::time::Duration;

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

/// The parts of a placed session its kernel is created from, beyond the slots the pass has
/// already read.
pub struct StartSpec {
    /// Canonical image reference.
    pub image: String,
    pub registry: String,
    /// What the create request asked for; an unreadable stored config fails this session's
    /// start (not the whole pass), with the reason.
    pub session: Result<SessionSpec, String>,
    /// The owner's policy's idle timeout (zero: none).
    pub idle_timeout: Duration,
}

pub fn start_spec(tx: &Connection, kernel_id: &str) -> Result<StartSpec, StoreError> {
    let (image, registry, config, idle_timeout) = tx
        .prepare_cached(
            "SELECT coalesce(k.image, ''), coalesce(k.registry, ''), k.creation_config,
                    coalesce(p.idle_timeout, 0)
             FROM kernels k
             LEFT JOIN keypairs kp ON kp.access_key = k.access_key
             LEFT JOIN keypair_resource_policies p ON p.name = kp.resource_policy
             WHERE k.id = ?1",
        )?
        .query_row([kernel_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
    // Rows queued before the column existed have none: nothing beyond image and slots.
    let session = match config {
        None => Ok(SessionSpec::default()),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| format!("the stored creation config is unreadable: {e}")),
    };
    Ok(StartSpec {
        image,
        registry,
        session,
        idle_timeout: Duration::from_secs(idle_timeout.max(0).unsigned_abs()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MountSpec;

    fn row(config: Option<&str>) -> StartSpec {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE kernels (id TEXT, image TEXT, registry TEXT, creation_config TEXT,
                access_key TEXT);
             CREATE TABLE keypairs (access_key TEXT, resource_policy TEXT);
             CREATE TABLE keypair_resource_policies (name TEXT, idle_timeout INTEGER);
             INSERT INTO keypairs VALUES ('AK', 'default');
             INSERT INTO keypair_resource_policies VALUES ('default', 600);",
        )
        .unwrap();
        c.execute(
            "INSERT INTO kernels VALUES ('k1', 'img:1', 'index.docker.io', ?1, 'AK')",
            [config],
        )
        .unwrap();
        start_spec(&c, "k1").unwrap()
    }

    #[test]
    fn a_start_spec_reads_the_stored_config_typed_in_either_shape() {
        let before = row(Some(
            r#"{"environ": {"A": "1"}, "mounts": [["data", "/v/abc", "abc", "ro"]]}"#,
        ));
        let typed = SessionSpec {
            environ: [("A".to_owned(), "1".to_owned())].into_iter().collect(),
            mounts: vec![MountSpec {
                host_path: "/v/abc".into(),
                name: "data".into(),
                read_only: true,
                vfolder_id: Some("abc".into()),
            }],
        };
        assert_eq!(before.session.as_ref(), Ok(&typed));
        assert_eq!(
            (
                before.image.as_str(),
                before.registry.as_str(),
                before.idle_timeout
            ),
            ("img:1", "index.docker.io", Duration::from_secs(600))
        );
        let now = row(Some(&serde_json::to_string(&typed).unwrap()));
        assert_eq!(now.session, Ok(typed));
        assert_eq!(row(None).session, Ok(SessionSpec::default()));
        assert!(row(Some("{not json")).session.is_err());
    }
}
