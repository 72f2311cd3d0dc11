//! Loads the original's JSON fixture format: `{table: [row, …], …}`, tables in file order.
//!
//! Every row is checked against the table's columns before anything is written, and the
//! whole file is one transaction: a bad row names itself (`users[2].role: …`) and nothing
//! is loaded. Rows whose primary key (or, for key-less link tables, whose unique pair)
//! already exists are skipped, so loading the same file twice changes nothing.

use super::{Store, StoreError};
use crate::domain::{
    AgentStatus, DefaultForUnspecified, KernelStatus, ResourceSlots, UserRole, VFolderPermission,
};
use rusqlite::types::Value as SqlValue;
use serde_json::Value;
use std::str::FromStr;

#[derive(Clone, Copy)]
enum Col {
    Text,
    /// Text that must be a UUID; stored canonical.
    Uuid,
    Bool,
    Int,
    /// A resource-slot object (`{"cpu": "1"}`).
    Slots,
    /// Any JSON object.
    Object,
    /// A JSON array of strings.
    StrArray,
    /// Any JSON value.
    Json,
    Timestamp,
    /// A plain password, hashed on the way in.
    Password,
    Enum(fn(&str) -> Result<(), String>),
}

fn check<T: FromStr>(s: &str) -> Result<(), String>
where
    T::Err: std::fmt::Display,
{
    T::from_str(s).map(|_| ()).map_err(|e| e.to_string())
}

fn invitation_state(s: &str) -> Result<(), String> {
    match s {
        "pending" | "accepted" | "rejected" => Ok(()),
        _ => Err(format!(
            "'{s}' is not a valid invitation state (expected one of: pending, accepted, rejected)"
        )),
    }
}

fn kernel_role(s: &str) -> Result<(), String> {
    match s {
        "master" | "worker" => Ok(()),
        _ => Err(format!(
            "'{s}' is not a valid kernel role (expected master or worker)"
        )),
    }
}

struct Table {
    name: &'static str,
    /// Columns that identify an existing row; rows matching them are skipped.
    key: &'static [&'static str],
    columns: &'static [(&'static str, Col)],
}

use Col::*;

const TABLES: &[Table] = &[
    Table {
        name: "domains",
        key: &["name"],
        columns: &[
            ("name", Text),
            ("description", Text),
            ("is_active", Bool),
            ("created_at", Timestamp),
            ("modified_at", Timestamp),
            ("total_resource_slots", Slots),
            ("integration_id", Text),
        ],
    },
    Table {
        name: "groups",
        key: &["id"],
        columns: &[
            ("id", Uuid),
            ("name", Text),
            ("description", Text),
            ("is_active", Bool),
            ("created_at", Timestamp),
            ("modified_at", Timestamp),
            ("integration_id", Text),
            ("domain_name", Text),
            ("total_resource_slots", Slots),
        ],
    },
    Table {
        name: "users",
        key: &["uuid"],
        columns: &[
            ("uuid", Uuid),
            ("username", Text),
            ("email", Text),
            ("password", Password),
            ("need_password_change", Bool),
            ("full_name", Text),
            ("description", Text),
            ("is_active", Bool),
            ("created_at", Timestamp),
            ("integration_id", Text),
            ("domain_name", Text),
            ("role", Enum(check::<UserRole>)),
        ],
    },
    Table {
        name: "association_groups_users",
        key: &["user_id", "group_id"],
        columns: &[("user_id", Uuid), ("group_id", Uuid)],
    },
    Table {
        name: "keypair_resource_policies",
        key: &["name"],
        columns: &[
            ("name", Text),
            ("created_at", Timestamp),
            (
                "default_for_unspecified",
                Enum(check::<DefaultForUnspecified>),
            ),
            ("total_resource_slots", Slots),
            ("max_concurrent_sessions", Int),
            ("max_containers_per_session", Int),
            ("max_vfolder_count", Int),
            ("max_vfolder_size", Int),
            ("idle_timeout", Int),
            ("allowed_vfolder_hosts", StrArray),
        ],
    },
    Table {
        name: "keypairs",
        key: &["access_key"],
        columns: &[
            ("user_id", Text),
            ("access_key", Text),
            ("secret_key", Text),
            ("is_active", Bool),
            ("is_admin", Bool),
            ("created_at", Timestamp),
            ("last_used", Timestamp),
            ("concurrency_used", Int),
            ("rate_limit", Int),
            ("num_queries", Int),
            ("user", Uuid),
            ("resource_policy", Text),
        ],
    },
    Table {
        name: "resource_presets",
        key: &["name"],
        columns: &[("name", Text), ("resource_slots", Slots)],
    },
    Table {
        name: "agents",
        key: &["id"],
        columns: &[
            ("id", Text),
            ("status", Enum(check::<AgentStatus>)),
            ("region", Text),
            ("available_slots", Slots),
            ("occupied_slots", Slots),
            ("addr", Text),
            ("first_contact", Timestamp),
            ("lost_at", Timestamp),
            ("version", Text),
            ("compute_plugins", Object),
        ],
    },
    Table {
        name: "kernels",
        key: &["id"],
        columns: &[
            ("id", Uuid),
            ("sess_id", Text),
            ("role", Enum(kernel_role)),
            ("agent", Text),
            ("agent_addr", Text),
            ("domain_name", Text),
            ("group_id", Uuid),
            ("user_uuid", Uuid),
            ("access_key", Text),
            ("image", Text),
            ("registry", Text),
            ("tag", Text),
            ("container_id", Text),
            ("occupied_slots", Slots),
            ("occupied_shares", Object),
            ("environ", StrArray),
            ("kernel_host", Text),
            ("repl_in_port", Int),
            ("repl_out_port", Int),
            ("stdin_port", Int),
            ("stdout_port", Int),
            ("service_ports", Json),
            ("created_at", Timestamp),
            ("terminated_at", Timestamp),
            ("status", Enum(check::<KernelStatus>)),
            ("status_info", Text),
            ("num_queries", Int),
            ("last_stat", Json),
        ],
    },
    Table {
        name: "vfolders",
        key: &["id"],
        columns: &[
            ("id", Uuid),
            ("host", Text),
            ("name", Text),
            ("max_files", Int),
            ("max_size", Int),
            ("num_files", Int),
            ("cur_size", Int),
            ("created_at", Timestamp),
            ("last_used", Timestamp),
            ("user", Uuid),
            ("group", Uuid),
        ],
    },
    Table {
        name: "vfolder_invitations",
        key: &["id"],
        columns: &[
            ("id", Uuid),
            ("permission", Enum(check::<VFolderPermission>)),
            ("inviter", Text),
            ("invitee", Text),
            ("state", Enum(invitation_state)),
            ("created_at", Timestamp),
            ("vfolder", Uuid),
        ],
    },
    Table {
        name: "vfolder_permissions",
        key: &["vfolder", "user"],
        columns: &[
            ("permission", Enum(check::<VFolderPermission>)),
            ("vfolder", Uuid),
            ("user", Uuid),
        ],
    },
];

/// How many rows of each table were inserted and skipped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FixtureReport {
    pub tables: Vec<(String, usize, usize)>,
}

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("the fixture is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the fixture must be a JSON object of table name to a list of rows")]
    NotAnObject,
    #[error("{0}")]
    Row(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn convert(
    table: &str,
    idx: usize,
    col: &str,
    kind: Col,
    v: &Value,
) -> Result<SqlValue, FixtureError> {
    let at = || format!("{table}[{idx}].{col}");
    let bad = |what: &str| FixtureError::Row(format!("{}: {what}, got {v}", at()));
    if v.is_null() {
        return Ok(SqlValue::Null);
    }
    Ok(match kind {
        Text => SqlValue::Text(
            v.as_str()
                .ok_or_else(|| bad("expected a string"))?
                .to_owned(),
        ),
        Timestamp => {
            let s = v
                .as_str()
                .ok_or_else(|| bad("expected a timestamp string"))?;
            let d = crate::signing::parse_date(s)
                .ok_or_else(|| bad("expected an ISO-8601 timestamp"))?;
            SqlValue::Text(
                d.with_timezone(&chrono::Utc)
                    .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                    .to_string(),
            )
        }
        Uuid => {
            let s = v.as_str().ok_or_else(|| bad("expected a UUID string"))?;
            let u = uuid::Uuid::parse_str(s).map_err(|_| bad("expected a UUID"))?;
            SqlValue::Text(u.hyphenated().to_string())
        }
        Bool => SqlValue::Integer(v.as_bool().ok_or_else(|| bad("expected true or false"))? as i64),
        Int => SqlValue::Integer(v.as_i64().ok_or_else(|| bad("expected an integer"))?),
        Slots => {
            let s = ResourceSlots::from_json(v)
                .map_err(|e| FixtureError::Row(format!("{}: {e}", at())))?;
            SqlValue::Text(s.to_json().to_string())
        }
        Object => {
            if !v.is_object() {
                return Err(bad("expected a JSON object"));
            }
            SqlValue::Text(v.to_string())
        }
        StrArray => {
            let ok = v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
            if !ok {
                return Err(bad("expected a list of strings"));
            }
            SqlValue::Text(v.to_string())
        }
        Json => SqlValue::Text(v.to_string()),
        Password => {
            let s = v.as_str().ok_or_else(|| bad("expected a string"))?;
            if crate::password::is_hashed(s) {
                SqlValue::Text(s.to_owned())
            } else {
                let h = crate::password::hash_password(s)
                    .map_err(|e| FixtureError::Row(format!("{}: {e}", at())))?;
                SqlValue::Text(h)
            }
        }
        Enum(validate) => {
            let s = v.as_str().ok_or_else(|| bad("expected a string"))?;
            validate(s).map_err(|e| FixtureError::Row(format!("{}: {e}", at())))?;
            SqlValue::Text(s.to_owned())
        }
    })
}

struct PreparedRow {
    table: &'static Table,
    idx: usize,
    values: Vec<(&'static str, SqlValue)>,
}

/// Checks every row and converts it to SQL values (hashing passwords) before any write.
fn prepare(doc: &Value) -> Result<Vec<PreparedRow>, FixtureError> {
    let obj = doc.as_object().ok_or(FixtureError::NotAnObject)?;
    let mut rows = Vec::new();
    for (tname, list) in obj {
        let table = TABLES.iter().find(|t| t.name == tname).ok_or_else(|| {
            let names: Vec<_> = TABLES.iter().map(|t| t.name).collect();
            FixtureError::Row(format!(
                "unknown table '{tname}' (known: {})",
                names.join(", ")
            ))
        })?;
        let list = list
            .as_array()
            .ok_or_else(|| FixtureError::Row(format!("{tname}: expected a list of rows")))?;
        for (idx, row) in list.iter().enumerate() {
            let row = row
                .as_object()
                .ok_or_else(|| FixtureError::Row(format!("{tname}[{idx}]: expected an object")))?;
            let mut values = Vec::new();
            for (col, v) in row {
                let (cname, kind) =
                    table
                        .columns
                        .iter()
                        .find(|(c, _)| c == col)
                        .ok_or_else(|| {
                            FixtureError::Row(format!("{tname}[{idx}]: unknown column '{col}'"))
                        })?;
                values.push((*cname, convert(tname, idx, col, *kind, v)?));
            }
            for k in table.key {
                if !values.iter().any(|(c, v)| c == k && *v != SqlValue::Null) {
                    return Err(FixtureError::Row(format!(
                        "{tname}[{idx}]: missing required column '{k}'"
                    )));
                }
            }
            if table.name == "kernels" {
                ended_when_terminated(tname, idx, &values)?;
            }
            rows.push(PreparedRow { table, idx, values });
        }
    }
    Ok(rows)
}

/// A session has `terminated_at` exactly when it is TERMINATED (the live-session indexes
/// rely on it; schema V9).
fn ended_when_terminated(
    tname: &str,
    idx: usize,
    values: &[(&'static str, SqlValue)],
) -> Result<(), FixtureError> {
    let given = |col: &str| {
        values
            .iter()
            .find(|(c, _)| *c == col)
            .map(|(_, v)| v)
            .filter(|v| **v != SqlValue::Null)
    };
    let terminated = matches!(given("status"), Some(SqlValue::Text(s)) if s == "TERMINATED");
    match (terminated, given("terminated_at").is_some()) {
        (true, false) => Err(FixtureError::Row(format!(
            "{tname}[{idx}]: a TERMINATED session needs terminated_at"
        ))),
        (false, true) => Err(FixtureError::Row(format!(
            "{tname}[{idx}]: only a TERMINATED session has terminated_at"
        ))),
        _ => Ok(()),
    }
}

fn insert(tx: &rusqlite::Connection, row: &PreparedRow) -> Result<bool, FixtureError> {
    let t = row.table;
    let key_vals: Vec<&SqlValue> = t
        .key
        .iter()
        .filter_map(|k| row.values.iter().find(|(c, _)| c == k).map(|(_, v)| v))
        .collect();
    let cond: Vec<String> = t
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("\"{k}\" = ?{}", i + 1))
        .collect();
    let exists: bool = tx
        .query_row(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM {} WHERE {})",
                t.name,
                cond.join(" AND ")
            ),
            rusqlite::params_from_iter(key_vals),
            |r| r.get(0),
        )
        .map_err(StoreError::from)?;
    if exists {
        return Ok(false);
    }
    let cols: Vec<String> = row.values.iter().map(|(c, _)| format!("\"{c}\"")).collect();
    let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        t.name,
        cols.join(", "),
        marks.join(", ")
    );
    tx.execute(
        &sql,
        rusqlite::params_from_iter(row.values.iter().map(|(_, v)| v)),
    )
    .map_err(|e| FixtureError::Row(format!("{}[{}]: {}", t.name, row.idx, e)))?;
    Ok(true)
}

impl Store {
    /// Loads a fixture document; all or nothing.
    pub async fn populate_fixture(&self, doc: &Value) -> Result<FixtureReport, FixtureError> {
        let rows = prepare(doc)?;
        self.write(move |tx| {
            let mut report = FixtureReport::default();
            for row in &rows {
                let inserted = insert(tx, row)?;
                match report.tables.last_mut() {
                    Some((name, ins, skip)) if name == row.table.name => {
                        *ins += inserted as usize;
                        *skip += (!inserted) as usize;
                    }
                    _ => report.tables.push((
                        row.table.name.to_owned(),
                        inserted as usize,
                        (!inserted) as usize,
                    )),
                }
            }
            Ok(report)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("m.db")).unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn shipped_example_fixture_loads_twice_idempotently() {
        let (_d, s) = store().await;
        let doc: Value =
            serde_json::from_str(include_str!("../../config/fixtures/example-keypairs.json"))
                .unwrap();
        let first = s.populate_fixture(&doc).await.unwrap();
        assert!(
            first.tables.iter().all(|(_, _, skipped)| *skipped == 0),
            "{first:?}"
        );
        let second = s.populate_fixture(&doc).await.unwrap();
        assert!(
            second.tables.iter().all(|(_, inserted, _)| *inserted == 0),
            "{second:?}"
        );
        let kp = s
            .active_keypair("AKIAIOSFODNN7EXAMPLE")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kp.user_email, "admin@lablup.com");
        assert!(kp.is_admin);
        let presets: Value = serde_json::from_str(include_str!(
            "../../config/fixtures/example-resource-presets.json"
        ))
        .unwrap();
        let r = s.populate_fixture(&presets).await.unwrap();
        assert_eq!(r.tables, vec![("resource_presets".to_owned(), 6, 0)]);
    }

    #[tokio::test]
    async fn a_bad_row_is_named_and_nothing_is_loaded() {
        let (_d, s) = store().await;
        let doc = json!({
            "domains": [{"name": "lab"}],
            "users": [
                {"uuid": "dfa9da54-4b28-432f-be29-c0d680c7a412", "email": "a@b.c", "role": "user"},
                {"uuid": "2e10157d-20ca-4bd0-9806-3f909cbcd0e6", "email": "d@e.f", "role": "root"}
            ]
        });
        let err = s.populate_fixture(&doc).await.unwrap_err().to_string();
        assert!(
            err.starts_with("users[1].role: 'root' is not a valid user role"),
            "{err}"
        );
        let err = s
            .populate_fixture(&json!({"domains": [{"name": "x", "colour": "red"}]}))
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(err, "domains[0]: unknown column 'colour'");
        // A session's end time goes with its status.
        let session = |status: &str, ended: Option<&str>| {
            json!({"kernels": [{"id": "00000000-0000-0000-0000-000000000001", "sess_id": "s",
                                "status": status, "terminated_at": ended}]})
        };
        for (status, ended, why) in [
            (
                "TERMINATED",
                None,
                "a TERMINATED session needs terminated_at",
            ),
            (
                "RUNNING",
                Some("2026-01-01T00:00:00Z"),
                "only a TERMINATED session has terminated_at",
            ),
        ] {
            let err = s
                .populate_fixture(&session(status, ended))
                .await
                .unwrap_err();
            assert_eq!(err.to_string(), format!("kernels[0]: {why}"));
        }
        // A constraint the database enforces is reported with its row too.
        let err = s
            .populate_fixture(&json!({"domains": [{"name": "ok"}], "groups": [{"id": "2de2b969-1d04-48a6-af16-0bc8adb3c831", "name": "g", "domain_name": "missing"}]}))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("groups[0]: FOREIGN KEY constraint failed"),
            "{err}"
        );
        let n: i64 = s
            .read(|c| -> Result<_, StoreError> {
                Ok(c.query_row("SELECT count(*) FROM domains", [], |r| r.get(0))?)
            })
            .await
            .unwrap();
        assert_eq!(n, 0, "a failed load must leave nothing behind");
    }
}
