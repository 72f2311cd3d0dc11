//! Reads of agents and kernels (compute sessions) for the admin API: bounded, paged lists.

use super::{Store, StoreError};
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
    pub status: Option<String>,
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
            let cond = "(?1 IS NULL OR k.role = ?1) AND (?2 IS NULL OR k.access_key = ?2) AND (?3 IS NULL OR k.status = ?3)
                        AND (?4 IS NULL OR k.group_id = ?4) AND (?5 IS NULL OR k.domain_name = ?5) AND (?6 IS NULL OR k.sess_id = ?6)";
            let order = if f.status.as_deref() == Some("TERMINATED") { "k.terminated_at DESC" } else { "k.created_at DESC" };
            let args = params![f.role, f.access_key, f.status, f.group_id, f.domain, f.sess_id, limit, offset];
            let mut st = c.prepare_cached(&format!("{KERNEL_SELECT} WHERE {cond} ORDER BY {order} LIMIT ?7 OFFSET ?8"))?;
            let rows = st.query_map(args, kernel_row)?.collect::<Result<Vec<_>, _>>()?;
            let total = c
                .prepare_cached(&format!("SELECT count(*) FROM kernels k WHERE {cond}"))?
                .query_row(params![f.role, f.access_key, f.status, f.group_id, f.domain, f.sess_id], |r| r.get(0))?;
            Ok((rows, total))
        })
        .await
    }
}
