//! Kernels (compute sessions) as the lifecycle changes them: the SQL of every status
//! change, of queueing with the policy checks, of slot reservations on agents and of the
//! keypairs' live-session counts. Each function runs inside a transaction its caller holds
//! (the registry, through [`Store::write`](super::Store::write)) and returns typed rows; the
//! registry announces what changed.
//!
//! Slots are reserved on an agent when a session is placed and released when it becomes
//! TERMINATED; both happen inside the transaction that changes the status, and a session
//! becomes TERMINATED once, so slots are released exactly once.

use super::auth::ResourcePolicy;
use super::{now_text, StoreError};
use crate::domain::{
    AgentStatus, DefaultForUnspecified, KernelStatus, ResourceSlots, ServicePort, SessionSpec,
};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension};
use rust_decimal::Decimal;
use serde_json::Value;

/// Domain enums stored as their names: written as text, read back through `FromStr` (a
/// name the enum does not know is a read error, not a panic).
macro_rules! stored_by_name {
    ($($t:ty),+) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e| FromSqlError::Other(Box::new(e)))
            }
        }
    )+};
}

stored_by_name!(KernelStatus, AgentStatus);

/// A session to enqueue, already validated.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The id the kernel gets if this is a new session (chosen by the caller, so that it
    /// can watch the kernel before it exists).
    pub kernel_id: String,
    pub sess_id: String,
    pub access_key: String,
    pub user_uuid: String,
    pub domain_name: String,
    pub group_id: String,
    /// Canonical image reference.
    pub image: String,
    pub registry: String,
    pub tag: Option<String>,
    pub requested: ResourceSlots,
    /// `K=V` entries.
    pub environ: Vec<String>,
    /// What the agent needs beyond the image and slots (`kernels.creation_config`).
    pub creation_config: SessionSpec,
}

#[derive(Debug)]
pub enum Enqueued {
    New {
        kernel_id: String,
    },
    /// A live session with the same token and image: it is returned as it is.
    Existing {
        kernel_id: String,
    },
}

/// Why a session was not enqueued.
#[derive(Debug)]
pub enum Refusal {
    /// Too many concurrent sessions (412).
    Concurrency(i64),
    /// The token names a live session on another image.
    DifferentImage,
    /// A keypair, group or domain resource quota (400).
    Quota(String),
}

/// A live session as operations need it.
#[derive(Debug, Clone)]
pub struct Live {
    pub id: String,
    pub sess_id: String,
    pub access_key: String,
    pub status: KernelStatus,
    pub status_info: Option<String>,
    pub agent: Option<String>,
    pub agent_addr: String,
    pub agent_status: Option<AgentStatus>,
    pub image: String,
    pub registry: String,
    pub tag: Option<String>,
    pub created_at: String,
    pub num_queries: i64,
    pub occupied_slots: String,
    pub service_ports: Option<String>,
    pub creation_config: Option<String>,
    pub status_changed: Option<String>,
}

/// What a status change did.
#[derive(Debug, Clone)]
pub struct Changed {
    pub sess_id: String,
    pub access_key: String,
    pub previous: KernelStatus,
}

/// What the agent reported when a kernel started.
#[derive(Debug, Clone, Default)]
pub struct Started {
    pub container_id: String,
    pub kernel_host: String,
    pub service_ports: Vec<ServicePort>,
}

pub fn parse_slots(text: &str) -> Result<ResourceSlots, StoreError> {
    let v: Value = serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    ResourceSlots::from_json(&v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn sum_occupied(tx: &Connection, column: &str, value: &str) -> Result<ResourceSlots, StoreError> {
    let mut st = tx.prepare_cached(&format!(
        "SELECT occupied_slots FROM kernels WHERE {column} = ?1 AND terminated_at IS NULL"
    ))?;
    let mut total = ResourceSlots::new();
    for text in st.query_map([value], |r| r.get::<_, String>(0))? {
        total = total.add(&parse_slots(&text?)?);
    }
    Ok(total)
}

/// Counts a session of `access_key` starting (`1`) or ending (`-1`) in `concurrency_used`.
fn count_concurrency(tx: &Connection, access_key: &str, delta: i64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE keypairs SET concurrency_used = max(concurrency_used + ?2, 0) WHERE access_key = ?1",
    )?
    .execute(params![access_key, delta])?;
    Ok(())
}

/// Recounts every keypair's `concurrency_used` from its live sessions.
pub fn recount_concurrency(tx: &Connection) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE keypairs SET concurrency_used = (SELECT count(*) FROM kernels
            WHERE kernels.access_key = keypairs.access_key AND role = 'master'
              AND terminated_at IS NULL)",
        [],
    )?;
    Ok(())
}

/// Adds `delta` to an agent's occupied slots, or takes it away (`release`; negative
/// quantities clamp to zero).
pub fn adjust_agent(
    tx: &Connection,
    agent: &str,
    delta: &ResourceSlots,
    release: bool,
) -> Result<(), StoreError> {
    let current: Option<String> = tx
        .prepare_cached("SELECT occupied_slots FROM agents WHERE id = ?1")?
        .query_row([agent], |r| r.get(0))
        .optional()?;
    let Some(current) = current else {
        return Ok(());
    };
    let current = parse_slots(&current)?;
    let next = if release {
        current.sub(delta).clamp_negative()
    } else {
        current.add(delta)
    };
    tx.prepare_cached("UPDATE agents SET occupied_slots = ?2 WHERE id = ?1")?
        .execute(params![agent, next.to_json().to_string()])?;
    Ok(())
}

/// Inserts a PENDING session after the policy checks, or finds the live session with the
/// same token.
pub fn enqueue(
    tx: &Connection,
    new: &NewSession,
    policy: &ResourcePolicy,
) -> Result<Result<Enqueued, Refusal>, StoreError> {
    let existing: Option<(String, Option<String>)> = tx
        .prepare_cached(
            "SELECT id, image FROM kernels WHERE access_key = ?1 AND sess_id = ?2
                AND role = 'master' AND terminated_at IS NULL",
        )?
        .query_row(params![new.access_key, new.sess_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    if let Some((kernel_id, image)) = existing {
        return Ok(if image.as_deref() == Some(new.image.as_str()) {
            Ok(Enqueued::Existing { kernel_id })
        } else {
            Err(Refusal::DifferentImage)
        });
    }
    let active: i64 = tx
        .prepare_cached("SELECT concurrency_used FROM keypairs WHERE access_key = ?1")?
        .query_row([&new.access_key], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    if active >= policy.max_concurrent_sessions {
        return Ok(Err(Refusal::Concurrency(policy.max_concurrent_sessions)));
    }
    let unspecified = match policy.default_for_unspecified {
        DefaultForUnspecified::Limited => Some(Decimal::ZERO),
        DefaultForUnspecified::Unlimited => None,
    };
    let key_limit = &policy.total_resource_slots;
    if new.requested.bounded_by(key_limit, unspecified)
        && new.requested.exceeds(
            &sum_occupied(tx, "access_key", &new.access_key)?,
            key_limit,
            unspecified,
        )
    {
        return Ok(Err(Refusal::Quota(format!(
            "Your resource quota is exceeded. ({})",
            policy.total_resource_slots.humanize()
        ))));
    }
    for (what, table, key, column, value) in [
        ("group", "groups", "id", "group_id", &new.group_id),
        ("domain", "domains", "name", "domain_name", &new.domain_name),
    ] {
        let limit: Option<String> = tx
            .query_row(
                &format!("SELECT total_resource_slots FROM {table} WHERE {key} = ?1"),
                [value],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let limit = match limit {
            Some(text) => parse_slots(&text)?,
            None => continue,
        };
        if !new.requested.bounded_by(&limit, None) {
            continue;
        }
        let used = sum_occupied(tx, column, value)?;
        if new.requested.exceeds(&used, &limit, None) {
            return Ok(Err(Refusal::Quota(format!(
                "Your {what} resource quota is exceeded. ({})",
                limit.humanize()
            ))));
        }
    }
    let now = now_text();
    tx.prepare_cached(
        "INSERT INTO kernels (id, sess_id, role, domain_name, group_id, user_uuid, access_key,
            image, registry, tag, occupied_slots, environ, status, status_info, created_at,
            status_changed, creation_config)
         VALUES (?1, ?2, 'master', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'queued', ?13, ?13, ?14)",
    )?
    .execute(params![
        new.kernel_id,
        new.sess_id,
        new.domain_name,
        new.group_id,
        new.user_uuid,
        new.access_key,
        new.image,
        new.registry,
        new.tag,
        new.requested.to_json().to_string(),
        serde_json::to_string(&new.environ).unwrap_or_else(|_| "[]".into()),
        KernelStatus::Pending,
        now,
        serde_json::to_string(&new.creation_config)
            .map_err(|e| StoreError::Corrupt(format!("creation config: {e}")))?,
    ])?;
    count_concurrency(tx, &new.access_key, 1)?;
    Ok(Ok(Enqueued::New {
        kernel_id: new.kernel_id.clone(),
    }))
}

/// A row of [`LIVE_SELECT`], read by position (looking up 17 columns by name took a
/// third of the time of the whole read).
fn live_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Live> {
    Ok(Live {
        id: r.get(0)?,
        sess_id: r.get(1)?,
        access_key: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
        status: r.get(3)?,
        status_info: r.get(4)?,
        agent: r.get(5)?,
        agent_addr: r.get(6)?,
        agent_status: r.get(7)?,
        image: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
        registry: r.get::<_, Option<String>>(9)?.unwrap_or_default(),
        tag: r.get(10)?,
        created_at: r.get(11)?,
        num_queries: r.get(12)?,
        occupied_slots: r.get(13)?,
        service_ports: r.get(14)?,
        creation_config: r.get(15)?,
        status_changed: r.get(16)?,
    })
}

/// The columns [`live_row`] reads, in its order.
const LIVE_SELECT: &str = "SELECT k.id, k.sess_id, k.access_key, k.status, k.status_info, k.agent,
        k.agent_addr, a.status AS agent_status, k.image, k.registry, k.tag, k.created_at,
        k.num_queries, k.occupied_slots, k.service_ports, k.creation_config, k.status_changed
    FROM kernels k LEFT JOIN agents a ON a.id = k.agent";

/// The live (not TERMINATED) master kernel of a session of `access_key`.
pub fn live_session(
    c: &Connection,
    sess_id: &str,
    access_key: &str,
) -> Result<Option<Live>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "{LIVE_SELECT} WHERE k.sess_id = ?1 AND k.access_key = ?2 AND k.role = 'master'
            AND k.terminated_at IS NULL"
    ))?
    .query_row([sess_id, access_key], live_row)
    .optional()?)
}

/// A kernel by id, whatever its status.
pub fn kernel(c: &Connection, kernel_id: &str) -> Result<Option<Live>, StoreError> {
    Ok(c.prepare_cached(&format!("{LIVE_SELECT} WHERE k.id = ?1"))?
        .query_row([kernel_id], live_row)
        .optional()?)
}

/// Live kernels placed on `agent`.
pub fn on_agent(c: &Connection, agent: &str) -> Result<Vec<Live>, StoreError> {
    let mut st = c.prepare_cached(&format!(
        "{LIVE_SELECT} WHERE k.agent = ?1 AND k.terminated_at IS NULL"
    ))?;
    let rows = st
        .query_map([agent], live_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Every live (not TERMINATED) kernel, oldest first.
pub fn all_live(c: &Connection) -> Result<Vec<Live>, StoreError> {
    let mut st = c.prepare_cached(&format!(
        "{LIVE_SELECT} WHERE k.terminated_at IS NULL ORDER BY k.created_at"
    ))?;
    let rows = st.query_map([], live_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// `(status, sess_id, access_key)` of a kernel.
fn status_row(
    tx: &Connection,
    id: &str,
) -> Result<Option<(KernelStatus, String, String)>, StoreError> {
    Ok(tx
        .prepare_cached(
            "SELECT status, sess_id, coalesce(access_key, '') FROM kernels WHERE id = ?1",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?)
}

/// Moves a kernel from one of `from` to `to` (recording `info`); `None` when it was not in
/// one of `from`. Never to TERMINATED: see [`mark_terminated`].
pub fn transition(
    tx: &Connection,
    id: &str,
    from: &[KernelStatus],
    to: KernelStatus,
    info: Option<&str>,
) -> Result<Option<Changed>, StoreError> {
    debug_assert_ne!(
        to,
        KernelStatus::Terminated,
        "sessions end through mark_terminated"
    );
    let Some((previous, sess_id, access_key)) = status_row(tx, id)? else {
        return Ok(None);
    };
    if !from.contains(&previous) {
        return Ok(None);
    }
    tx.prepare_cached(
        "UPDATE kernels SET status = ?2, status_info = ?3, status_changed = ?4 WHERE id = ?1",
    )?
    .execute(params![id, to, info, now_text()])?;
    Ok(Some(Changed {
        sess_id,
        access_key,
        previous,
    }))
}

/// PREPARING/PULLING/RESTARTING → RUNNING with what the agent reported; `None` when the
/// session was in none of those (asked to terminate meanwhile, say).
pub fn mark_running(
    tx: &Connection,
    id: &str,
    started: &Started,
) -> Result<Option<Changed>, StoreError> {
    use KernelStatus::*;
    let Some((previous, sess_id, access_key)) = status_row(tx, id)? else {
        return Ok(None);
    };
    if ![Preparing, Pulling, Restarting].contains(&previous) {
        return Ok(None);
    }
    tx.prepare_cached(
        "UPDATE kernels SET status = ?6, status_info = NULL, status_changed = ?2,
                container_id = ?3, kernel_host = ?4, service_ports = ?5
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        now_text(),
        started.container_id,
        started.kernel_host,
        serde_json::to_string(&started.service_ports)
            .map_err(|e| StoreError::Corrupt(format!("service ports: {e}")))?,
        Running,
    ])?;
    Ok(Some(Changed {
        sess_id,
        access_key,
        previous,
    }))
}

/// Ends a session: TERMINATED with `reason` (and its last statistics, if known), its slots
/// released and its keypair's count of live sessions lowered. `None` when it had already
/// ended. The only way a session becomes TERMINATED, so `terminated_at` is always set
/// with it (the live-session indexes rely on that).
pub fn mark_terminated(
    tx: &Connection,
    id: &str,
    reason: &str,
    last_stat: Option<&str>,
) -> Result<Option<Changed>, StoreError> {
    type Row = (KernelStatus, String, String, Option<String>, String, String);
    let row: Option<Row> = tx
        .prepare_cached(
            "SELECT status, sess_id, coalesce(access_key, ''), agent, occupied_slots, role
             FROM kernels WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .optional()?;
    let Some((previous, sess_id, access_key, agent, occupied, role)) = row else {
        return Ok(None);
    };
    if previous == KernelStatus::Terminated {
        return Ok(None);
    }
    let now = now_text();
    tx.prepare_cached(
        "UPDATE kernels SET status = ?5, status_info = ?2, terminated_at = ?3,
                status_changed = ?3, last_stat = coalesce(?4, last_stat)
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        reason,
        now,
        last_stat,
        KernelStatus::Terminated
    ])?;
    if let Some(agent) = agent.filter(|_| previous.holds_slots()) {
        adjust_agent(tx, &agent, &parse_slots(&occupied)?, true)?;
    }
    if role == "master" && !access_key.is_empty() {
        count_concurrency(tx, &access_key, -1)?;
    }
    Ok(Some(Changed {
        sess_id,
        access_key,
        previous,
    }))
}

/// An agent went away: it is `status` and every session it was running is in ERROR with
/// `why`, in one transaction (slots stay reserved: the containers may still be running).
/// Returns `(kernel id, what changed)` of each session it moved.
pub fn agent_down(
    tx: &Connection,
    agent: &str,
    status: AgentStatus,
    why: &str,
) -> Result<Vec<(String, Changed)>, StoreError> {
    use KernelStatus::*;
    tx.prepare_cached(
        "UPDATE agents SET status = ?2,
                lost_at = coalesce(lost_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
         WHERE id = ?1",
    )?
    .execute(params![agent, status])?;
    let mut st = tx.prepare_cached(
        "SELECT id, status, sess_id, coalesce(access_key, '') FROM kernels
         WHERE agent = ?1 AND terminated_at IS NULL",
    )?;
    let rows = st
        .query_map([agent], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, KernelStatus>(1)?,
                r.get(2)?,
                r.get(3)?,
            ))
        })?
        .collect::<Result<Vec<(String, KernelStatus, String, String)>, _>>()?;
    let now = now_text();
    let mut changed = Vec::new();
    for (id, previous, sess_id, access_key) in rows {
        if ![Preparing, Pulling, Running, Restarting, Terminating].contains(&previous) {
            continue;
        }
        tx.prepare_cached(
            "UPDATE kernels SET status = ?4, status_info = ?2, status_changed = ?3 WHERE id = ?1",
        )?
        .execute(params![id, why, now, Error])?;
        changed.push((
            id,
            Changed {
                sess_id,
                access_key,
                previous,
            },
        ));
    }
    Ok(changed)
}

/// Kernels whose start or restart was in flight: `(id, status)`.
pub fn in_flight(c: &Connection) -> Result<Vec<(String, KernelStatus)>, StoreError> {
    let mut st = c.prepare(
        "SELECT id, status FROM kernels WHERE status IN ('PREPARING', 'PULLING', 'RESTARTING')",
    )?;
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The queries counted for a kernel so far, if it exists.
pub fn num_queries(c: &Connection, kernel_id: &str) -> Result<Option<i64>, StoreError> {
    Ok(
        c.prepare_cached("SELECT num_queries FROM kernels WHERE id = ?1")?
            .query_row([kernel_id], |r| r.get(0))
            .optional()?,
    )
}
