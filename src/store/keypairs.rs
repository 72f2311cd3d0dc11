//! Keypairs, keypair resource policies and resource presets for the admin API.

use super::directory::{apply_changes, integrity, KeypairChanges, PolicyChanges, PresetChanges};
use super::{Store, StoreError};
use rusqlite::{params, OptionalExtension, Row};

#[derive(Debug, Clone)]
pub struct KeypairRow {
    pub user_id: Option<String>,
    pub access_key: String,
    pub secret_key: String,
    pub is_active: bool,
    pub is_admin: bool,
    pub resource_policy: String,
    pub created_at: String,
    pub last_used: Option<String>,
    pub concurrency_used: i64,
    pub rate_limit: i64,
    pub num_queries: i64,
    pub user: String,
}

#[derive(Debug, Clone)]
pub struct PolicyRow {
    pub name: String,
    pub created_at: String,
    pub default_for_unspecified: String,
    pub total_resource_slots: String,
    pub max_concurrent_sessions: i64,
    pub max_containers_per_session: i64,
    pub max_vfolder_count: i64,
    pub max_vfolder_size: i64,
    pub idle_timeout: i64,
    pub allowed_vfolder_hosts: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct PresetRow {
    pub name: String,
    pub resource_slots: String,
}

fn keypair_row(r: &Row<'_>) -> rusqlite::Result<KeypairRow> {
    Ok(KeypairRow {
        user_id: r.get("user_id")?,
        access_key: r.get("access_key")?,
        secret_key: r.get("secret_key")?,
        is_active: r.get("is_active")?,
        is_admin: r.get("is_admin")?,
        resource_policy: r.get("resource_policy")?,
        created_at: r.get("created_at")?,
        last_used: r.get("last_used")?,
        concurrency_used: r.get("concurrency_used")?,
        rate_limit: r.get("rate_limit")?,
        num_queries: r.get("num_queries")?,
        user: r.get("user")?,
    })
}

fn policy_row(r: &Row<'_>) -> rusqlite::Result<PolicyRow> {
    let hosts: String = r.get("allowed_vfolder_hosts")?;
    Ok(PolicyRow {
        name: r.get("name")?,
        created_at: r.get("created_at")?,
        default_for_unspecified: r.get("default_for_unspecified")?,
        total_resource_slots: r.get("total_resource_slots")?,
        max_concurrent_sessions: r.get("max_concurrent_sessions")?,
        max_containers_per_session: r.get("max_containers_per_session")?,
        max_vfolder_count: r.get("max_vfolder_count")?,
        max_vfolder_size: r.get("max_vfolder_size")?,
        idle_timeout: r.get("idle_timeout")?,
        allowed_vfolder_hosts: serde_json::from_str(&hosts).unwrap_or_default(),
    })
}

fn preset_row(r: &Row<'_>) -> rusqlite::Result<PresetRow> {
    Ok(PresetRow {
        name: r.get("name")?,
        resource_slots: r.get("resource_slots")?,
    })
}

impl Store {
    pub async fn keypair(&self, access_key: &str) -> Result<Option<KeypairRow>, StoreError> {
        let ak = access_key.to_owned();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT * FROM keypairs WHERE access_key = ?1",
                [ak],
                keypair_row,
            )
            .optional()?)
        })
        .await
    }

    /// Keypairs, filtered by owner e-mail, active flag and (for domain admins) domain.
    /// Keypairs of a user (by e-mail or user id), activity and owner's domain, oldest
    /// first, at most `limit` of them; `without_superadmins` leaves out those of superadmins
    /// (a domain admin never sees them).
    pub async fn keypairs(
        &self,
        user_email: Option<String>,
        is_active: Option<bool>,
        domain: Option<String>,
        without_superadmins: bool,
        limit: i64,
    ) -> Result<Vec<KeypairRow>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT k.* FROM keypairs k JOIN users u ON k.\"user\" = u.uuid
                 WHERE (?1 IS NULL OR k.user_id = ?1 OR u.email = ?1) AND (?2 IS NULL OR k.is_active = ?2)
                   AND (?3 IS NULL OR u.domain_name = ?3) AND (NOT ?4 OR u.role != 'superadmin')
                 ORDER BY k.created_at, k.access_key LIMIT ?5",
            )?;
            let rows = st
                .query_map(params![user_email, is_active, domain, without_superadmins, limit], keypair_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn create_keypair(&self, row: KeypairRow) -> Result<KeypairRow, StoreError> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO keypairs (user_id, access_key, secret_key, is_active, is_admin, rate_limit, \"user\", resource_policy)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![row.user_id, row.access_key, row.secret_key, row.is_active, row.is_admin, row.rate_limit, row.user, row.resource_policy],
            )
            .map_err(integrity)?;
            Ok(tx.query_row("SELECT * FROM keypairs WHERE access_key = ?1", [&row.access_key], keypair_row)?)
        })
        .await
    }

    pub async fn modify_keypair(
        &self,
        access_key: &str,
        changes: KeypairChanges,
    ) -> Result<bool, StoreError> {
        let ak = access_key.to_owned();
        self.write(move |tx| {
            Ok(apply_changes(tx, "keypairs", "access_key", &ak, &changes.columns())? > 0)
        })
        .await
    }

    pub async fn delete_keypair(&self, access_key: &str) -> Result<bool, StoreError> {
        let ak = access_key.to_owned();
        self.write(move |tx| {
            Ok(tx
                .execute("DELETE FROM keypairs WHERE access_key = ?1", [ak])
                .map_err(integrity)?
                > 0)
        })
        .await
    }

    pub async fn policy(&self, name: &str) -> Result<Option<PolicyRow>, StoreError> {
        let name = name.to_owned();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT * FROM keypair_resource_policies WHERE name = ?1",
                [name],
                policy_row,
            )
            .optional()?)
        })
        .await
    }

    /// All policies, or only those used by the keypairs of `user_uuid`.
    pub async fn policies(&self, user_uuid: Option<String>) -> Result<Vec<PolicyRow>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT * FROM keypair_resource_policies p
                 WHERE ?1 IS NULL OR p.name IN (SELECT resource_policy FROM keypairs WHERE \"user\" = ?1)
                 ORDER BY p.name",
            )?;
            let rows = st.query_map([user_uuid], policy_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn create_policy(&self, row: PolicyRow) -> Result<PolicyRow, StoreError> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO keypair_resource_policies (name, default_for_unspecified, total_resource_slots, max_concurrent_sessions,
                    max_containers_per_session, max_vfolder_count, max_vfolder_size, idle_timeout, allowed_vfolder_hosts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    row.name, row.default_for_unspecified, row.total_resource_slots, row.max_concurrent_sessions,
                    row.max_containers_per_session, row.max_vfolder_count, row.max_vfolder_size, row.idle_timeout,
                    serde_json::Value::from(row.allowed_vfolder_hosts.clone()).to_string()
                ],
            )
            .map_err(integrity)?;
            Ok(tx.query_row("SELECT * FROM keypair_resource_policies WHERE name = ?1", [&row.name], policy_row)?)
        })
        .await
    }

    pub async fn modify_policy(
        &self,
        name: &str,
        changes: PolicyChanges,
    ) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.write(move |tx| {
            Ok(apply_changes(
                tx,
                "keypair_resource_policies",
                "name",
                &name,
                &changes.columns(),
            )? > 0)
        })
        .await
    }

    pub async fn delete_policy(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.write(move |tx| {
            Ok(tx
                .execute(
                    "DELETE FROM keypair_resource_policies WHERE name = ?1",
                    [name],
                )
                .map_err(integrity)?
                > 0)
        })
        .await
    }

    pub async fn preset(&self, name: &str) -> Result<Option<PresetRow>, StoreError> {
        let name = name.to_owned();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT * FROM resource_presets WHERE name = ?1",
                [name],
                preset_row,
            )
            .optional()?)
        })
        .await
    }

    pub async fn presets(&self) -> Result<Vec<PresetRow>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare("SELECT * FROM resource_presets ORDER BY name")?;
            let rows = st
                .query_map([], preset_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn create_preset(&self, row: PresetRow) -> Result<PresetRow, StoreError> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO resource_presets (name, resource_slots) VALUES (?1, ?2)",
                params![row.name, row.resource_slots],
            )
            .map_err(integrity)?;
            Ok(row)
        })
        .await
    }

    pub async fn modify_preset(
        &self,
        name: &str,
        changes: PresetChanges,
    ) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.write(move |tx| {
            Ok(apply_changes(tx, "resource_presets", "name", &name, &changes.columns())? > 0)
        })
        .await
    }

    pub async fn delete_preset(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.write(move |tx| {
            Ok(tx.execute("DELETE FROM resource_presets WHERE name = ?1", [name])? > 0)
        })
        .await
    }
}
