//! Reads of agents and kernels (compute sessions) for the admin API (bounded, paged
//! lists), usage reports and quota checks.

use super::{Store, StoreError};
use crate::domain::KernelStatus;
use rusqlite::{params, OptionalExtension, Row};

#[derive(Debug, Clone)]
pub struct AgentRow {
    pub id: String,
    pub status: String,
    pub region: String,
    pub available_slots: String,
    pub occupied_slots: String,
    pub addr: String,
    pub first_contact: String,
    pub lost_at: Option<String>,
    pub version: String,
    pub compute_plugins: String,
}

#[derive(Debug, Clone)]
pub struct KernelRow {
    pub id: String,
    pub sess_id: String,
    pub role: String,
    pub agent: Option<String>,
    pub domain_name: String,
    pub group_id: String,
    pub group_name: Option<String>,
    pub user_uuid: String,
    pub access_key: Option<String>,
    pub image: Option<String>,
    pub registry: Option<String>,
    pub tag: Option<String>,
    pub container_id: Option<String>,
    pub occupied_slots: String,
    pub occupied_shares: String,
    pub service_ports: Option<String>,
    pub created_at: String,
    pub terminated_at: Option<String>,
    pub status: String,
    pub status_info: Option<String>,
    pub status_changed: Option<String>,
    pub num_queries: i64,
    pub last_stat: Option<String>,
}

fn agent_row(r: &Row<'_>) -> rusqlite::Result<AgentRow> {
    Ok(AgentRow {
        id: r.get("id")?,
        status: r.get("status")?,
        region: r.get("region")?,
        available_slots: r.get("available_slots")?,
        occupied_slots: r.get("occupied_slots")?,
        addr: r.get("addr")?,
        first_contact: r.get("first_contact")?,
        lost_at: r.get("lost_at")?,
        version: r.get("version")?,
        compute_plugins: r.get("compute_plugins")?,
    })
}

fn kernel_row(r: &Row<'_>) -> rusqlite::Result<KernelRow> {
    Ok(KernelRow {
        id: r.get("id")?,
        sess_id: r.get("sess_id")?,
        role: r.get("role")?,
        agent: r.get("agent")?,
        domain_name: r.get("domain_name")?,
        group_id: r.get("group_id")?,
        group_name: r.get("group_name")?,
        user_uuid: r.get("user_uuid")?,
        access_key: r.get("access_key")?,
        image: r.get("image")?,
        registry: r.get("registry")?,
        tag: r.get("tag")?,
        container_id: r.get("container_id")?,
        occupied_slots: r.get("occupied_slots")?,
        occupied_shares: r.get("occupied_shares")?,
        service_ports: r.get("service_ports")?,
        created_at: r.get("created_at")?,
        terminated_at: r.get("terminated_at")?,
        status: r.get("status")?,
        status_info: r.get("status_info")?,
        status_changed: r.get("status_changed")?,
        num_queries: r.get("num_queries")?,
        last_stat: r.get("last_stat")?,
    })
}

const KERNEL_SELECT: &str =
    "SELECT k.*, g.name AS group_name FROM kernels k LEFT JOIN groups g ON g.id = k.group_id";

/// Which kernels a list shows.
#[derive(Debug, Clone, Default)]
pub struct KernelFilter {
    pub role: Option<&'static str>,
    pub access_key: Option<String>,
    /// `None`: any status; otherwise one of these (an empty list matches nothing).
    pub status: Option<Vec<KernelStatus>>,
    pub group_id: Option<String>,
    pub domain: Option<String>,
    pub sess_id: Option<String>,
}

/// The most rows one unpaged list returns.
pub const UNPAGED_LIMIT: i64 = 100;

impl Store {
    pub async fn agent(&self, id: &str) -> Result<Option<AgentRow>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| {
            Ok(
                c.query_row("SELECT * FROM agents WHERE id = ?1", [id], agent_row)
                    .optional()?,
            )
        })
        .await
    }

    /// A page of agents ordered by id, and how many match in all.
    pub async fn agents(
        &self,
        status: Option<String>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<AgentRow>, i64), StoreError> {
        self.read(move |c| {
            let mut st = c.prepare("SELECT * FROM agents WHERE ?1 IS NULL OR status = ?1 ORDER BY id LIMIT ?2 OFFSET ?3")?;
            let rows = st.query_map(params![status, limit, offset], agent_row)?.collect::<Result<Vec<_>, _>>()?;
            let total = c.query_row("SELECT count(*) FROM agents WHERE ?1 IS NULL OR status = ?1", [&status], |r| r.get(0))?;
            Ok((rows, total))
        })
        .await
    }

    /// A page of kernels, newest first (by termination time when listing TERMINATED), and
    /// how many match in all.
    pub async fn kernels(
        &self,
        f: KernelFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<KernelRow>, i64), StoreError> {
        self.read(move |c| {
            // One status binds as ?3; a list (19.09) becomes an IN of the enum's names.
            let one = match f.status.as_deref() {
                Some([only]) => Some(*only),
                _ => None,
            };
            let status = match f.status.as_deref() {
                None | Some([_]) => "?3 IS NULL OR k.status = ?3".to_owned(),
                Some([]) => "?3 IS NULL AND 0".to_owned(),
                Some(list) => {
                    let names: Vec<String> = list.iter().map(|k| format!("'{}'", k.as_str())).collect();
                    format!("?3 IS NULL AND k.status IN ({})", names.join(", "))
                }
            };
            let cond = format!("(?1 IS NULL OR k.role = ?1) AND (?2 IS NULL OR k.access_key = ?2) AND ({status})
                        AND (?4 IS NULL OR k.group_id = ?4) AND (?5 IS NULL OR k.domain_name = ?5) AND (?6 IS NULL OR k.sess_id = ?6)");
            let order = if one == Some(KernelStatus::Terminated) { "k.terminated_at DESC" } else { "k.created_at DESC" };
            let args = params![f.role, f.access_key, one, f.group_id, f.domain, f.sess_id, limit, offset];
            let mut st = c.prepare_cached(&format!("{KERNEL_SELECT} WHERE {cond} ORDER BY {order} LIMIT ?7 OFFSET ?8"))?;
            let rows = st.query_map(args, kernel_row)?.collect::<Result<Vec<_>, _>>()?;
            let total = c
                .prepare_cached(&format!("SELECT count(*) FROM kernels k WHERE {cond}"))?
                .query_row(params![f.role, f.access_key, one, f.group_id, f.domain, f.sess_id], |r| r.get(0))?;
            Ok((rows, total))
        })
        .await
    }
}

/// A session that ended within a period, with its group, for usage reports.
#[derive(Debug, Clone)]
pub struct EndedKernel {
    pub group_id: String,
    pub group_name: String,
    pub domain_name: String,
    pub id: String,
    pub sess_id: String,
    pub image: Option<String>,
    pub occupied_slots: String,
    pub last_stat: Option<String>,
    pub created_at: String,
    pub terminated_at: String,
}

/// Sessions that ended in `[from, to)` (timestamp text), by group name, then end time.
pub fn ended_between(
    c: &rusqlite::Connection,
    from: &str,
    to: &str,
) -> Result<Vec<EndedKernel>, StoreError> {
    let mut st = c.prepare(
        "SELECT g.id, g.name, g.domain_name, k.id, k.sess_id, k.image, k.occupied_slots, k.last_stat,
                k.created_at, k.terminated_at
         FROM kernels k JOIN groups g ON g.id = k.group_id
         WHERE k.terminated_at >= ?1 AND k.terminated_at < ?2
         ORDER BY g.name, k.terminated_at",
    )?;
    let rows = st
        .query_map([from, to], |r| {
            Ok(EndedKernel {
                group_id: r.get(0)?,
                group_name: r.get(1)?,
                domain_name: r.get(2)?,
                id: r.get(3)?,
                sess_id: r.get(4)?,
                image: r.get(5)?,
                occupied_slots: r.get(6)?,
                last_stat: r.get(7)?,
                created_at: r.get(8)?,
                terminated_at: r.get(9)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The occupied slots (as stored) of every live session of a keypair.
pub fn occupied_by(c: &rusqlite::Connection, access_key: &str) -> Result<Vec<String>, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT occupied_slots FROM kernels WHERE access_key = ?1 AND terminated_at IS NULL",
    )?;
    let rows = st
        .query_map([access_key], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(rows)
}

/// Sessions (master kernels) not yet terminated.
pub fn live_count(c: &rusqlite::Connection) -> Result<i64, StoreError> {
    Ok(c.prepare_cached(
        "SELECT count(*) FROM kernels WHERE role = 'master' AND terminated_at IS NULL",
    )?
    .query_row([], |r| r.get(0))?)
}

/// The id of the active group `group` of active domain `domain` that a user may start
/// sessions in (a member, or any group for a superadmin).
pub fn session_group(
    c: &rusqlite::Connection,
    group: &str,
    domain: &str,
    user_uuid: &str,
    superadmin: bool,
) -> Result<Option<String>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT g.id FROM groups g JOIN domains d ON d.name = g.domain_name
         WHERE g.name = ?1 AND g.domain_name = ?2 AND g.is_active AND d.is_active
           AND (?4 OR EXISTS (SELECT 1 FROM association_groups_users a
                              WHERE a.group_id = g.id AND a.user_id = ?3))",
    )?
    .query_row(params![group, domain, user_uuid, superadmin], |r| r.get(0))
    .optional()?)
}
