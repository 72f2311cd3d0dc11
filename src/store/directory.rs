//! Domains, groups, users and group membership: rows and the reads/writes the admin API
//! needs. Callers decide who may do what; this module only does it.

use super::{Store, StoreError};
use crate::domain::{DefaultForUnspecified, ResourceSlots, UserRole};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Row};

#[derive(Debug, Clone)]
pub struct DomainRow {
    pub name: String,
    pub description: Option<String>,
    pub is_active: bool,
    pub created_at: String,
    pub modified_at: String,
    pub total_resource_slots: String,
    pub integration_id: Option<String>,
    /// Folder hosts the domain's members may use (besides their policy's).
    pub allowed_vfolder_hosts: Vec<String>,
    pub allowed_docker_registries: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct GroupRow {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub is_active: bool,
    pub created_at: String,
    pub modified_at: String,
    pub domain_name: String,
    pub total_resource_slots: String,
    pub integration_id: Option<String>,
    /// Folder hosts the group's members may use (besides their policy's).
    pub allowed_vfolder_hosts: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct UserRow {
    pub uuid: String,
    pub username: Option<String>,
    pub email: String,
    pub need_password_change: Option<bool>,
    pub full_name: Option<String>,
    pub description: Option<String>,
    pub is_active: bool,
    pub created_at: String,
    pub domain_name: Option<String>,
    pub role: UserRole,
}

fn domain_row(r: &Row<'_>) -> rusqlite::Result<DomainRow> {
    Ok(DomainRow {
        name: r.get("name")?,
        description: r.get("description")?,
        is_active: r.get("is_active")?,
        created_at: r.get("created_at")?,
        modified_at: r.get("modified_at")?,
        total_resource_slots: r.get("total_resource_slots")?,
        integration_id: r.get("integration_id")?,
        allowed_vfolder_hosts: names(r, "allowed_vfolder_hosts")?,
        allowed_docker_registries: names(r, "allowed_docker_registries")?,
    })
}

/// A JSON array of names stored in a column.
fn names(r: &Row<'_>, col: &str) -> rusqlite::Result<Vec<String>> {
    let text: String = r.get(col)?;
    Ok(serde_json::from_str(&text).unwrap_or_default())
}

fn group_row(r: &Row<'_>) -> rusqlite::Result<GroupRow> {
    Ok(GroupRow {
        id: r.get("id")?,
        name: r.get("name")?,
        description: r.get("description")?,
        is_active: r.get("is_active")?,
        created_at: r.get("created_at")?,
        modified_at: r.get("modified_at")?,
        domain_name: r.get("domain_name")?,
        total_resource_slots: r.get("total_resource_slots")?,
        integration_id: r.get("integration_id")?,
        allowed_vfolder_hosts: names(r, "allowed_vfolder_hosts")?,
    })
}

fn user_row(r: &Row<'_>) -> rusqlite::Result<UserRow> {
    let role: String = r.get("role")?;
    Ok(UserRow {
        uuid: r.get("uuid")?,
        username: r.get("username")?,
        email: r.get("email")?,
        need_password_change: r.get("need_password_change")?,
        full_name: r.get("full_name")?,
        description: r.get("description")?,
        is_active: r.get("is_active")?,
        created_at: r.get("created_at")?,
        domain_name: r.get("domain_name")?,
        role: role.parse().unwrap_or(UserRole::User),
    })
}

const USER_COLS: &str = "uuid, username, email, need_password_change, full_name, description, is_active, created_at, domain_name, role";

/// Maps constraint violations to a readable conflict, everything else to a store error.
pub fn integrity(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, msg)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Invalid(format!(
                "integrity error: {}",
                msg.as_deref().unwrap_or("constraint violated")
            ))
        }
        _ => StoreError::Sqlite(e),
    }
}

/// A value a change struct writes into its column.
trait Column {
    fn value(&self) -> Value;
}

impl Column for String {
    fn value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl Column for bool {
    fn value(&self) -> Value {
        Value::Integer(i64::from(*self))
    }
}

impl Column for i64 {
    fn value(&self) -> Value {
        Value::Integer(*self)
    }
}

/// Slots are stored as their JSON text, as the create paths write them.
impl Column for ResourceSlots {
    fn value(&self) -> Value {
        Value::Text(self.to_json().to_string())
    }
}

/// Lists (folder hosts) are stored as a JSON array of strings.
impl Column for Vec<String> {
    fn value(&self) -> Value {
        Value::Text(serde_json::Value::from(self.clone()).to_string())
    }
}

impl Column for UserRole {
    fn value(&self) -> Value {
        Value::Text(self.as_str().to_owned())
    }
}

impl Column for DefaultForUnspecified {
    fn value(&self) -> Value {
        Value::Text(self.as_str().to_owned())
    }
}

/// Declares the partial update of one table: every field is `Option`, `Some` to write it,
/// `None` to keep the stored value. Field names are the column names.
macro_rules! row_changes {
    ($($(#[$meta:meta])* $name:ident { $($field:ident : $ty:ty),+ $(,)? })+) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct $name { $(pub $field: Option<$ty>),+ }

        impl $name {
            /// The columns given, with their new values.
            pub(super) fn columns(&self) -> Vec<(&'static str, Value)> {
                let mut out = Vec::new();
                $(if let Some(v) = &self.$field {
                    out.push((stringify!($field), Column::value(v)));
                })+
                out
            }

            pub fn is_empty(&self) -> bool {
                self.columns().is_empty()
            }
        }
    )+};
}

row_changes! {
    /// Changes to a domain (`name` renames it, carried over to its users and kernels).
    DomainChanges {
        name: String,
        description: String,
        is_active: bool,
        total_resource_slots: ResourceSlots,
        integration_id: String,
        allowed_vfolder_hosts: Vec<String>,
        allowed_docker_registries: Vec<String>,
    }
    /// Changes to a group.
    GroupChanges {
        name: String,
        description: String,
        is_active: bool,
        domain_name: String,
        total_resource_slots: ResourceSlots,
        integration_id: String,
        allowed_vfolder_hosts: Vec<String>,
    }
    /// Changes to a user; `password` is the new password's hash, never the password.
    UserChanges {
        username: String,
        password: String,
        need_password_change: bool,
        full_name: String,
        description: String,
        is_active: bool,
        role: UserRole,
    }
    /// Changes to a keypair.
    KeypairChanges {
        is_active: bool,
        is_admin: bool,
        resource_policy: String,
        rate_limit: i64,
    }
    /// Changes to a keypair resource policy.
    PolicyChanges {
        default_for_unspecified: DefaultForUnspecified,
        total_resource_slots: ResourceSlots,
        max_concurrent_sessions: i64,
        max_containers_per_session: i64,
        idle_timeout: i64,
        max_vfolder_count: i64,
        max_vfolder_size: i64,
        allowed_vfolder_hosts: Vec<String>,
    }
    /// Changes to a resource preset.
    PresetChanges {
        resource_slots: ResourceSlots,
    }
}

/// `UPDATE table SET … WHERE key_col = key` for the columns given; returns the number of
/// rows changed. Table and column names come from this module, never from a request.
pub(super) fn apply_changes(
    tx: &Connection,
    table: &str,
    key_col: &str,
    key: &str,
    changes: &[(&'static str, Value)],
) -> Result<usize, StoreError> {
    if changes.is_empty() {
        return Err(StoreError::Invalid("nothing to update".into()));
    }
    let sets: Vec<String> = changes
        .iter()
        .enumerate()
        .map(|(i, (c, _))| format!("\"{c}\" = ?{}", i + 2))
        .collect();
    let sql = format!(
        "UPDATE {table} SET {} WHERE \"{key_col}\" = ?1",
        sets.join(", ")
    );
    let mut values: Vec<&dyn rusqlite::ToSql> = vec![&key];
    values.extend(changes.iter().map(|(_, v)| v as &dyn rusqlite::ToSql));
    tx.execute(&sql, values.as_slice()).map_err(integrity)
}

/// The slug rule for domain and group names.
pub fn valid_slug(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Parses a slot object given as a JSON string (as the client sends it).
pub fn parse_slots(json_text: &str) -> Result<ResourceSlots, StoreError> {
    let v: serde_json::Value = serde_json::from_str(json_text)
        .map_err(|e| StoreError::Invalid(format!("resource slots are not valid JSON: {e}")))?;
    ResourceSlots::from_json(&v).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// Normalises a slot object given as a JSON string into the text the store keeps.
pub fn normalize_slots(json_text: &str) -> Result<String, StoreError> {
    Ok(parse_slots(json_text)?.to_json().to_string())
}

impl Store {
    pub async fn domain(&self, name: &str) -> Result<Option<DomainRow>, StoreError> {
        let name = name.to_owned();
        self.read(move |c| {
            Ok(
                c.query_row("SELECT * FROM domains WHERE name = ?1", [name], domain_row)
                    .optional()?,
            )
        })
        .await
    }

    pub async fn domains(&self, is_active: Option<bool>) -> Result<Vec<DomainRow>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT * FROM domains WHERE ?1 IS NULL OR is_active = ?1 ORDER BY name",
            )?;
            let rows = st
                .query_map([is_active], domain_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn create_domain(&self, row: DomainRow) -> Result<DomainRow, StoreError> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO domains (name, description, is_active, total_resource_slots, integration_id,
                                      allowed_vfolder_hosts, allowed_docker_registries)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![row.name, row.description, row.is_active, row.total_resource_slots, row.integration_id,
                        row.allowed_vfolder_hosts.value(), row.allowed_docker_registries.value()],
            )
            .map_err(integrity)?;
            Ok(tx.query_row("SELECT * FROM domains WHERE name = ?1", [&row.name], domain_row)?)
        })
        .await
    }

    /// Applies changes to a domain; returns the row under its (possibly new) name.
    pub async fn modify_domain(
        &self,
        name: &str,
        changes: DomainChanges,
    ) -> Result<Option<DomainRow>, StoreError> {
        let name = name.to_owned();
        self.write(move |tx| {
            let new_name = changes.name.clone().unwrap_or_else(|| name.clone());
            // users and kernels refer to the domain without ON UPDATE CASCADE (as the
            // original); check references at commit and carry a rename over to them.
            tx.execute_batch("PRAGMA defer_foreign_keys = ON")?;
            if apply_changes(tx, "domains", "name", &name, &changes.columns())? == 0 {
                return Ok(None);
            }
            if new_name != name {
                tx.execute(
                    "UPDATE users SET domain_name = ?1 WHERE domain_name = ?2",
                    [&new_name, &name],
                )?;
                tx.execute(
                    "UPDATE kernels SET domain_name = ?1 WHERE domain_name = ?2",
                    [&new_name, &name],
                )?;
            }
            Ok(tx
                .query_row(
                    "SELECT * FROM domains WHERE name = ?1",
                    [&new_name],
                    domain_row,
                )
                .optional()?)
        })
        .await
    }

    /// The folder hosts that a domain, a group and the groups of a member allow (19.09
    /// adds these to the keypair policy's hosts).
    pub async fn vfolder_hosts_of(
        &self,
        domain: Option<String>,
        group_id: Option<String>,
        member: Option<String>,
    ) -> Result<Vec<String>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT allowed_vfolder_hosts FROM domains WHERE name = ?1 AND is_active
                 UNION ALL
                 SELECT allowed_vfolder_hosts FROM groups g WHERE g.is_active AND (g.id = ?2
                    OR g.id IN (SELECT group_id FROM association_groups_users WHERE user_id = ?3))",
            )?;
            let mut hosts: Vec<String> = Vec::new();
            for text in
                st.query_map(params![domain, group_id, member], |r| r.get::<_, String>(0))?
            {
                for h in serde_json::from_str::<Vec<String>>(&text?).unwrap_or_default() {
                    if !hosts.contains(&h) {
                        hosts.push(h);
                    }
                }
            }
            Ok(hosts)
        })
        .await
    }

    pub async fn group(&self, id: &str) -> Result<Option<GroupRow>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| {
            Ok(
                c.query_row("SELECT * FROM groups WHERE id = ?1", [id], group_row)
                    .optional()?,
            )
        })
        .await
    }

    /// Groups, optionally of one domain, active flag, or those `member` belongs to.
    pub async fn groups(
        &self,
        domain: Option<String>,
        is_active: Option<bool>,
        member: Option<String>,
    ) -> Result<Vec<GroupRow>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT * FROM groups g
                 WHERE (?1 IS NULL OR g.domain_name = ?1) AND (?2 IS NULL OR g.is_active = ?2)
                   AND (?3 IS NULL OR EXISTS (SELECT 1 FROM association_groups_users a WHERE a.group_id = g.id AND a.user_id = ?3))
                 ORDER BY g.domain_name, g.name",
            )?;
            let rows = st.query_map(params![domain, is_active, member], group_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn create_group(&self, row: GroupRow) -> Result<GroupRow, StoreError> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO groups (id, name, description, is_active, domain_name, total_resource_slots,
                                     integration_id, allowed_vfolder_hosts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![row.id, row.name, row.description, row.is_active, row.domain_name, row.total_resource_slots,
                        row.integration_id, row.allowed_vfolder_hosts.value()],
            )
            .map_err(integrity)?;
            Ok(tx.query_row("SELECT * FROM groups WHERE id = ?1", [&row.id], group_row)?)
        })
        .await
    }

    /// Changes a group and adds or removes members (`Some(true)` add, `Some(false)` remove).
    pub async fn modify_group(
        &self,
        id: &str,
        changes: GroupChanges,
        members: Option<(bool, Vec<String>)>,
    ) -> Result<Option<GroupRow>, StoreError> {
        let id = id.to_owned();
        self.write(move |tx| {
            let exists: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM groups WHERE id = ?1)", [&id], |r| r.get(0))?;
            if !exists {
                return Ok(None);
            }
            if changes.is_empty() && members.is_none() {
                return Err(StoreError::Invalid("nothing to update".into()));
            }
            if !changes.is_empty() {
                apply_changes(tx, "groups", "id", &id, &changes.columns())?;
            }
            if let Some((add, users)) = members {
                for u in users {
                    if add {
                        tx.execute("INSERT OR IGNORE INTO association_groups_users (user_id, group_id) VALUES (?1, ?2)", [&u, &id])
                            .map_err(integrity)?;
                    } else {
                        tx.execute("DELETE FROM association_groups_users WHERE user_id = ?1 AND group_id = ?2", [&u, &id])?;
                    }
                }
            }
            Ok(tx.query_row("SELECT * FROM groups WHERE id = ?1", [&id], group_row).optional()?)
        })
        .await
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, StoreError> {
        let email = email.to_owned();
        self.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE email = ?1 OR uuid = ?1"),
                [email],
                user_row,
            )
            .optional()?)
        })
        .await
    }

    /// Users by e-mail, at most `limit` of them.
    pub async fn users(
        &self,
        domain: Option<String>,
        is_active: Option<bool>,
        limit: i64,
    ) -> Result<Vec<UserRow>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {USER_COLS} FROM users WHERE (?1 IS NULL OR domain_name = ?1) AND (?2 IS NULL OR is_active = ?2) ORDER BY email LIMIT ?3"
            ))?;
            let rows = st.query_map(params![domain, is_active, limit], user_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// `(group id, group name)` of a user's groups.
    pub async fn user_groups(&self, uuid: &str) -> Result<Vec<(String, String)>, StoreError> {
        let uuid = uuid.to_owned();
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT g.id, g.name FROM groups g JOIN association_groups_users a ON a.group_id = g.id WHERE a.user_id = ?1 ORDER BY g.name",
            )?;
            let rows = st.query_map([uuid], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }
}

/// A new user with its first keypair, as `create_user` makes them.
pub struct NewUser {
    pub user: UserRow,
    pub password_hash: String,
    pub group_ids: Vec<String>,
    pub access_key: String,
    pub secret_key: String,
}

impl Store {
    /// Creates a user, its keypair (admin if the role is), and its memberships among
    /// `group_ids` restricted to groups of `allowed_domain` (when given).
    pub async fn create_user(
        &self,
        new: NewUser,
        allowed_domain: Option<String>,
    ) -> Result<UserRow, StoreError> {
        self.write(move |tx| {
            let u = &new.user;
            tx.execute(
                &format!("INSERT INTO users ({USER_COLS}, password) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), ?8, ?9, ?10)"),
                params![u.uuid, u.username, u.email, u.need_password_change, u.full_name, u.description, u.is_active, u.domain_name, u.role.as_str(), new.password_hash],
            )
            .map_err(integrity)?;
            let is_admin = matches!(u.role, UserRole::Superadmin | UserRole::Admin);
            tx.execute(
                "INSERT INTO keypairs (user_id, access_key, secret_key, is_active, is_admin, rate_limit, \"user\", resource_policy)
                 VALUES (?1, ?2, ?3, 1, ?4, 1000, ?5, ?6)",
                params![u.email, new.access_key, new.secret_key, is_admin, u.uuid, crate::domain::DEFAULT_RESOURCE_POLICY],
            )
            .map_err(integrity)?;
            set_memberships(tx, &u.uuid, &new.group_ids, allowed_domain.as_deref())?;
            Ok(tx.query_row(&format!("SELECT {USER_COLS} FROM users WHERE uuid = ?1"), [&u.uuid], user_row)?)
        })
        .await
    }

    /// Changes a user; `group_ids` replaces memberships (within `allowed_domain`).
    pub async fn modify_user(
        &self,
        email: &str,
        changes: UserChanges,
        group_ids: Option<Vec<String>>,
        allowed_domain: Option<String>,
    ) -> Result<Option<UserRow>, StoreError> {
        let email = email.to_owned();
        self.write(move |tx| {
            let Some(uuid) = tx.query_row("SELECT uuid FROM users WHERE email = ?1", [&email], |r| r.get::<_, String>(0)).optional()? else {
                return Ok(None);
            };
            if changes.is_empty() && group_ids.is_none() {
                return Err(StoreError::Invalid("nothing to update".into()));
            }
            if !changes.is_empty() {
                apply_changes(tx, "users", "uuid", &uuid, &changes.columns())?;
            }
            // The keypairs' admin flag follows the role.
            if let Some(role) = changes.role {
                let admin = matches!(role, UserRole::Superadmin | UserRole::Admin);
                tx.execute("UPDATE keypairs SET is_admin = ?1 WHERE \"user\" = ?2", params![admin, uuid])?;
            }
            if let Some(gids) = group_ids {
                tx.execute(
                    "DELETE FROM association_groups_users WHERE user_id = ?1
                     AND (?2 IS NULL OR group_id IN (SELECT id FROM groups WHERE domain_name = ?2))",
                    params![uuid, allowed_domain],
                )?;
                set_memberships(tx, &uuid, &gids, allowed_domain.as_deref())?;
            }
            Ok(tx.query_row(&format!("SELECT {USER_COLS} FROM users WHERE uuid = ?1"), [&uuid], user_row).optional()?)
        })
        .await
    }

    /// Soft delete: the user and its keypairs become inactive. Returns false if unknown.
    pub async fn deactivate_user(&self, email: &str) -> Result<bool, StoreError> {
        let email = email.to_owned();
        self.write(move |tx| {
            let n = tx.execute("UPDATE users SET is_active = 0 WHERE email = ?1", [&email])?;
            tx.execute("UPDATE keypairs SET is_active = 0 WHERE user_id = ?1 OR \"user\" IN (SELECT uuid FROM users WHERE email = ?1)", [&email])?;
            Ok(n > 0)
        })
        .await
    }
}

fn set_memberships(
    tx: &Connection,
    uuid: &str,
    group_ids: &[String],
    allowed_domain: Option<&str>,
) -> Result<(), StoreError> {
    for gid in group_ids {
        let n = tx
            .execute(
                "INSERT OR IGNORE INTO association_groups_users (user_id, group_id)
                 SELECT ?1, id FROM groups WHERE id = ?2 AND (?3 IS NULL OR domain_name = ?3)",
                params![uuid, gid, allowed_domain],
            )
            .map_err(integrity)?;
        if n == 0 {
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM groups WHERE id = ?1)",
                [gid],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(StoreError::Invalid(format!("no such group: {gid}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_original_rule() {
        for ok in ["default", "lab-1", "a", "x.y_z"] {
            assert!(valid_slug(ok), "{ok}");
        }
        for bad in ["", "-lead", "trail-", "sp ace", "slash/x"] {
            assert!(!valid_slug(bad), "{bad}");
        }
    }

    #[test]
    fn a_change_struct_writes_only_the_fields_given_in_their_stored_form() {
        let none = UserChanges::default();
        assert!(none.is_empty());
        let c = UserChanges {
            role: Some(UserRole::Admin),
            is_active: Some(false),
            ..Default::default()
        };
        assert_eq!(
            c.columns(),
            vec![
                ("is_active", Value::Integer(0)),
                ("role", Value::Text("admin".into()))
            ]
        );
        let p = PolicyChanges {
            total_resource_slots: Some(parse_slots(r#"{"cpu": "2", "mem": "1g"}"#).unwrap()),
            allowed_vfolder_hosts: Some(vec!["local".into()]),
            ..Default::default()
        };
        let cols = p.columns();
        assert_eq!(cols[0].0, "total_resource_slots");
        assert_eq!(
            cols[0].1,
            Value::Text(normalize_slots(r#"{"mem": "1g", "cpu": 2}"#).unwrap())
        );
        assert_eq!(
            cols[1],
            ("allowed_vfolder_hosts", Value::Text(r#"["local"]"#.into()))
        );
    }
}
