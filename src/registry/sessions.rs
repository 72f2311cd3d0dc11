//! Every status change of a session, each in one write transaction:
//!
//! ```text
//! PENDING ─place─▶ PREPARING ─▶ (PULLING) ─▶ RUNNING ─destroy─▶ TERMINATING ─▶ TERMINATED
//!    │                  │                        │  ▲ restart            │
//!    └──cancel──────────┴──creation-failed───────┴──┴─────────▶ ERROR ────┘
//! ```
//!
//! Slots are reserved on an agent when a session is placed and released when it becomes
//! TERMINATED; both happen inside the transaction that changes the status, and a session
//! becomes TERMINATED once, so slots are released exactly once. The keypair's
//! `concurrency_used` goes up and down in the same transactions (and is recounted from the
//! live sessions at start-up).

use super::{Registry, SessionEvent};
use crate::domain::{DefaultForUnspecified, ResourceSlots};
use crate::store::auth::ResourcePolicy;
use crate::store::{now_text, Store, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use rust_decimal::Decimal;
use serde_json::Value;

/// Statuses in which a session holds slots on its agent.
pub const PLACED: &[&str] = &[
    "PREPARING",
    "PULLING",
    "RUNNING",
    "RESTARTING",
    "TERMINATING",
    "ERROR",
];

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
    /// What the agent needs beyond slots: `{"environ": {...}, "mounts": [...]}`.
    pub creation_config: Value,
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
    pub status: String,
    pub status_info: Option<String>,
    pub agent: Option<String>,
    pub agent_addr: String,
    pub agent_status: Option<String>,
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

pub fn parse_slots(text: &str) -> Result<ResourceSlots, StoreError> {
    let v: Value = serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    ResourceSlots::from_json(&v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Whether `limit` bounds any slot `requested` asks for (else nothing needs counting).
fn bounds_any(
    requested: &ResourceSlots,
    limit: &ResourceSlots,
    unspecified: Option<Decimal>,
) -> bool {
    requested
        .iter()
        .any(|(slot, want)| want > Decimal::ZERO && limit.get_opt(slot).or(unspecified).is_some())
}

/// The slots of `requested` that would go over `limit` when added to `used`.
/// `unspecified` is the limit of slots the limit does not name (`None` = no limit).
fn over_limit(
    used: &ResourceSlots,
    requested: &ResourceSlots,
    limit: &ResourceSlots,
    unspecified: Option<Decimal>,
) -> bool {
    requested
        .iter()
        .any(|(slot, want)| match limit.get_opt(slot).or(unspecified) {
            Some(max) => want > Decimal::ZERO && used.get(slot) + want > max,
            None => false,
        })
}

/// Counts a session of `access_key` starting (`1`) or ending (`-1`) in `concurrency_used`.
fn count_concurrency(tx: &Connection, access_key: &str, delta: i64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE keypairs SET concurrency_used = max(concurrency_used + ?2, 0) WHERE access_key = ?1",
    )?
    .execute(params![access_key, delta])?;
    Ok(())
}

/// Recounts every keypair's `concurrency_used` from its live sessions (at start-up: the
/// count is kept in step by each create and end, and this heals a database that was
/// edited or restored by other means).
pub async fn recount_concurrency(store: &Store) -> Result<(), StoreError> {
    store
        .write(|tx| -> Result<_, StoreError> {
            tx.execute(
                "UPDATE keypairs SET concurrency_used = (SELECT count(*) FROM kernels
                    WHERE kernels.access_key = keypairs.access_key AND role = 'master'
                      AND terminated_at IS NULL)",
                [],
            )?;
            Ok(())
        })
        .await
}

/// Adds `delta` to an agent's occupied slots (negative quantities clamp to zero).
pub(crate) fn adjust_agent(
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
/// same token. The scheduler's batch hook places it in the same commit when it can (see
/// [`super::scheduler::run`]).
pub async fn enqueue(
    store: &Store,
    new: NewSession,
    policy: &ResourcePolicy,
) -> Result<Result<Enqueued, Refusal>, StoreError> {
    let policy = policy.clone();
    store
        .write_hooked(move |tx| -> Result<_, StoreError> {
            let existing: Option<(String, Option<String>)> = tx.prepare_cached("SELECT id, image FROM kernels WHERE access_key = ?1 AND sess_id = ?2
                        AND role = 'master' AND terminated_at IS NULL")?.query_row(params![new.access_key, new.sess_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
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
            if bounds_any(&new.requested, key_limit, unspecified)
                && over_limit(
                    &sum_occupied(tx, "access_key", &new.access_key)?,
                    &new.requested,
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
                if !bounds_any(&new.requested, &limit, None) {
                    continue;
                }
                let used = sum_occupied(tx, column, value)?;
                if over_limit(&used, &new.requested, &limit, None) {
                    return Ok(Err(Refusal::Quota(format!(
                        "Your {what} resource quota is exceeded. ({})",
                        limit.humanize()
                    ))));
                }
            }
            let kernel_id = new.kernel_id.clone();
            let now = now_text();
            tx.prepare_cached("INSERT INTO kernels (id, sess_id, role, domain_name, group_id, user_uuid, access_key,
                    image, registry, tag, occupied_slots, environ, status, status_info, created_at,
                    status_changed, creation_config)
                 VALUES (?1, ?2, 'master', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'PENDING', 'queued', ?12, ?12, ?13)")?.execute(params![
                    kernel_id,
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
                    now,
                    new.creation_config.to_string(),
                ],
            )?;
            count_concurrency(tx, &new.access_key, 1)?;
            Ok(Ok(Enqueued::New { kernel_id }))
        })
        .await
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

fn live_session(
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

/// The live (not TERMINATED) master kernel of a session of `access_key`.
pub async fn find(
    store: &Store,
    sess_id: &str,
    access_key: &str,
) -> Result<Option<Live>, StoreError> {
    store.read_now(|c| live_session(c, sess_id, access_key))
}

/// A kernel by id, whatever its status.
pub async fn kernel(store: &Store, kernel_id: &str) -> Result<Option<Live>, StoreError> {
    store.read_now(|c| -> Result<_, StoreError> {
        Ok(c.prepare_cached(&format!("{LIVE_SELECT} WHERE k.id = ?1"))?
            .query_row([kernel_id], live_row)
            .optional()?)
    })
}

/// Live kernels placed on `agent`.
pub async fn on_agent(store: &Store, agent: &str) -> Result<Vec<Live>, StoreError> {
    let agent = agent.to_owned();
    store
        .read(move |c| -> Result<_, StoreError> {
            let mut st = c.prepare_cached(&format!(
                "{LIVE_SELECT} WHERE k.agent = ?1 AND k.terminated_at IS NULL"
            ))?;
            let rows = st
                .query_map([agent], live_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
}

/// `(status, sess_id, access_key)` of a kernel.
fn status_row(tx: &Connection, id: &str) -> Result<Option<(String, String, String)>, StoreError> {
    Ok(tx
        .prepare_cached(
            "SELECT status, sess_id, coalesce(access_key, '') FROM kernels WHERE id = ?1",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?)
}

/// What a status change did.
#[derive(Debug, Clone)]
pub struct Changed {
    pub sess_id: String,
    pub access_key: String,
    pub previous: String,
}

/// Moves a kernel from one of `from` to `to` (and records `info`); `None` when it was not in
/// one of `from`. Never to TERMINATED: a session ends through [`mark_terminated`], which
/// sets `terminated_at` with it (the live-session indexes rely on that).
pub async fn transition(
    reg: &Registry,
    store: &Store,
    kernel_id: &str,
    from: &'static [&'static str],
    to: &'static str,
    info: Option<String>,
) -> Result<Option<Changed>, StoreError> {
    debug_assert_ne!(to, "TERMINATED", "sessions end through mark_terminated");
    let id = kernel_id.to_owned();
    let info2 = info.clone();
    let changed = store
        .write(move |tx| -> Result<_, StoreError> {
            let row = status_row(tx, &id)?;
            let Some((previous, sess_id, access_key)) = row else { return Ok(None) };
            if !from.contains(&previous.as_str()) {
                return Ok(None);
            }
            tx.prepare_cached("UPDATE kernels SET status = ?2, status_info = ?3, status_changed = ?4 WHERE id = ?1")?.execute(params![id, to, info2, now_text()],
            )?;
            Ok(Some(Changed { sess_id, access_key, previous }))
        })
        .await?;
    if let Some(c) = &changed {
        reg.emit(SessionEvent {
            name: event_name(to),
            sess_id: c.sess_id.clone(),
            kernel_id: kernel_id.to_owned(),
            access_key: c.access_key.clone(),
            status: to.to_owned(),
            reason: info,
        });
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
    status: &'static str,
    why: &'static str,
) -> Result<usize, StoreError> {
    const FROM: &[&str] = &[
        "PREPARING",
        "PULLING",
        "RUNNING",
        "RESTARTING",
        "TERMINATING",
    ];
    let agent = agent.to_owned();
    let changed = store
        .write(move |tx| -> Result<_, StoreError> {
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
                .query_map([&agent], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get(2)?,
                        r.get(3)?,
                    ))
                })?
                .collect::<Result<Vec<(String, String, String, String)>, _>>()?;
            let now = now_text();
            let mut changed = Vec::new();
            for (id, previous, sess_id, access_key) in rows {
                if !FROM.contains(&previous.as_str()) {
                    continue;
                }
                tx.prepare_cached(
                    "UPDATE kernels SET status = 'ERROR', status_info = ?2, status_changed = ?3
                     WHERE id = ?1",
                )?
                .execute(params![id, why, now])?;
                changed.push((id, sess_id, access_key));
            }
            Ok(changed)
        })
        .await?;
    for (kernel_id, sess_id, access_key) in &changed {
        reg.emit(SessionEvent {
            name: event_name("ERROR"),
            sess_id: sess_id.clone(),
            kernel_id: kernel_id.clone(),
            access_key: access_key.clone(),
            status: "ERROR".to_owned(),
            reason: Some(why.to_owned()),
        });
    }
    Ok(changed.len())
}

pub fn event_name(status: &str) -> &'static str {
    match status {
        "PENDING" => "session_pending",
        "PREPARING" => "session_preparing",
        "PULLING" => "session_pulling",
        "RUNNING" => "session_started",
        "RESTARTING" => "session_restarting",
        "TERMINATING" => "session_terminating",
        "TERMINATED" => "session_terminated",
        "ERROR" => "session_failed",
        _ => "session_changed",
    }
}

/// What the agent reported when a kernel started.
#[derive(Debug, Clone, Default)]
pub struct Started {
    pub container_id: String,
    pub kernel_host: String,
    pub service_ports: Value,
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
        .write(move |tx| -> Result<_, StoreError> {
            let row = status_row(tx, &id)?;
            let Some((status, sess_id, ak)) = row else {
                return Ok(None);
            };
            if !["PREPARING", "PULLING", "RESTARTING"].contains(&status.as_str()) {
                return Ok(None);
            }
            tx.prepare_cached(
                "UPDATE kernels SET status = 'RUNNING', status_info = NULL, status_changed = ?2,
                        container_id = ?3, kernel_host = ?4, service_ports = ?5
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                now_text(),
                started.container_id,
                started.kernel_host,
                started.service_ports.to_string()
            ])?;
            Ok(Some((sess_id, ak)))
        })
        .await?;
    match changed {
        Some((sess_id, access_key)) => {
            reg.emit(SessionEvent {
                name: "session_started",
                sess_id,
                kernel_id: kernel_id.to_owned(),
                access_key,
                status: "RUNNING".into(),
                reason: None,
            });
            Ok(true)
        }
        None => Ok(false),
    }
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
        .write(move |tx| -> Result<_, StoreError> {
            let row: Option<(String, String, String, Option<String>, String, String)> = tx
                .prepare_cached(
                    "SELECT status, sess_id, coalesce(access_key, ''), agent, occupied_slots, role
                     FROM kernels WHERE id = ?1",
                )?
                .query_row([&id], |r| {
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
            if previous == "TERMINATED" {
                return Ok(None);
            }
            let now = now_text();
            tx.prepare_cached(
                "UPDATE kernels SET status = 'TERMINATED', status_info = ?2, terminated_at = ?3,
                        status_changed = ?3, last_stat = coalesce(?4, last_stat)
                 WHERE id = ?1",
            )?
            .execute(params![id, why, now, last])?;
            if let Some(agent) = agent.filter(|_| PLACED.contains(&previous.as_str())) {
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
        })
        .await?;
    if let Some(c) = &changed {
        reg.emit(SessionEvent {
            name: "session_terminated",
            sess_id: c.sess_id.clone(),
            kernel_id: kernel_id.to_owned(),
            access_key: c.access_key.clone(),
            status: "TERMINATED".into(),
            reason: Some(reason.to_owned()),
        });
        // Freed capacity may let a pending session start.
        reg.wake.notify_one();
    }
    Ok(changed)
}

/// Sessions whose start or restart was in flight when the manager stopped: what the agent
/// did is unknown, so they end (`creation-interrupted`) or are flagged (ERROR), and any
/// container left behind is destroyed as an orphan when its agent next reports.
pub async fn settle_interrupted(reg: &Registry, store: &Store) -> Result<usize, StoreError> {
    let ids: Vec<(String, String)> = store
        .read(|c| -> Result<_, StoreError> {
            let mut st = c.prepare(
                "SELECT id, status FROM kernels WHERE status IN ('PREPARING', 'PULLING', 'RESTARTING')",
            )?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await?;
    for (id, status) in &ids {
        if status == "RESTARTING" {
            let info = Some("restart interrupted by a manager restart".to_owned());
            transition(reg, store, id, &["RESTARTING"], "ERROR", info).await?;
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

/// Counts a query against the session (`num_queries`; written with the next usage flush).
pub fn count_query(app: &crate::server::App, kernel_id: &str) -> Result<(), StoreError> {
    let stored: Option<i64> = app.store.read_now(|c| {
        Ok::<_, StoreError>(
            c.prepare_cached("SELECT num_queries FROM kernels WHERE id = ?1")?
                .query_row([kernel_id], |r| r.get(0))
                .optional()?,
        )
    })?;
    if let Some(stored) = stored {
        app.usage.count_query(kernel_id, stored);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slots(v: Value) -> ResourceSlots {
        ResourceSlots::from_json(&v).unwrap()
    }

    #[test]
    fn limits_count_what_is_already_used() {
        let used = slots(json!({"cpu": 3}));
        let limit = slots(json!({"cpu": 4}));
        assert!(!over_limit(&used, &slots(json!({"cpu": 1})), &limit, None));
        assert!(over_limit(&used, &slots(json!({"cpu": 2})), &limit, None));
        // An unnamed slot: limited to zero under LIMITED, free under UNLIMITED.
        let req = slots(json!({"cpu": 1, "mem": "1g"}));
        assert!(over_limit(&used, &req, &limit, Some(Decimal::ZERO)));
        assert!(!over_limit(&used, &req, &limit, None));
        // Asking for none of a slot never goes over.
        let req = slots(json!({"cpu": 1, "cuda.device": 0}));
        assert!(!over_limit(&used, &req, &limit, Some(Decimal::ZERO)));
    }
}
