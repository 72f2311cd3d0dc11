//! The `shared_config` table: the etcd key layout kept in SQLite when no etcd is
//! configured, and `shared_config_events`, the log of its changes that watches follow.
//! Keys are validated by the caller (`shared_config`); a prefix covers the key itself and
//! every key below `prefix/`.

use super::StoreError;
use rusqlite::{params, Connection, OptionalExtension};

/// Events kept for watchers that fall behind.
pub const EVENT_LOG_KEEP: i64 = 10_000;

/// The exclusive upper bound of keys below `prefix/` (`/` + 1 = `0`).
fn range_end(prefix: &str) -> String {
    format!("{prefix}0")
}

/// Applies puts (`Some`) and deletes (`None`), and deletes everything under
/// `prefix_delete`, logging each change.
pub fn apply(
    tx: &Connection,
    ns: &str,
    mut changes: Vec<(String, Option<String>)>,
    prefix_delete: Option<&str>,
) -> Result<(), StoreError> {
    if let Some(p) = prefix_delete {
        let mut st = tx.prepare(
            "SELECT key FROM shared_config WHERE namespace = ?1 AND (key = ?2 OR (key >= ?3 AND key < ?4))",
        )?;
        let keys = st
            .query_map(params![ns, p, format!("{p}/"), range_end(p)], |r| {
                r.get::<_, String>(0)
            })?
            .collect::<Result<Vec<_>, _>>()?;
        changes.extend(keys.into_iter().map(|k| (k, None)));
    }
    for (k, v) in &changes {
        match v {
            Some(v) => tx.execute(
                "INSERT INTO shared_config (namespace, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
                params![ns, k, v],
            )?,
            None => tx.execute(
                "DELETE FROM shared_config WHERE namespace = ?1 AND key = ?2",
                params![ns, k],
            )?,
        };
        tx.execute(
            "INSERT INTO shared_config_events (namespace, key, value) VALUES (?1, ?2, ?3)",
            params![ns, k, v],
        )?;
    }
    tx.execute(
        "DELETE FROM shared_config_events WHERE rev <= (SELECT max(rev) FROM shared_config_events) - ?1",
        [EVENT_LOG_KEEP],
    )?;
    Ok(())
}

pub fn get(c: &Connection, ns: &str, key: &str) -> Result<Option<String>, StoreError> {
    Ok(
        c.prepare_cached("SELECT value FROM shared_config WHERE namespace = ?1 AND key = ?2")?
            .query_row([ns, key], |r| r.get(0))
            .optional()?,
    )
}

/// `(key, value)` for `prefix` and every key below it, sorted by key.
pub fn get_prefix(c: &Connection, ns: &str, p: &str) -> Result<Vec<(String, String)>, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT key, value FROM shared_config
         WHERE namespace = ?1 AND (key = ?2 OR (key >= ?3 AND key < ?4)) ORDER BY key",
    )?;
    let rows = st
        .query_map(params![ns, p, format!("{p}/"), range_end(p)], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The latest revision of the change log (0 when empty).
pub fn last_revision(c: &Connection) -> Result<i64, StoreError> {
    Ok(c.query_row(
        "SELECT coalesce(max(rev), 0) FROM shared_config_events",
        [],
        |r| r.get(0),
    )?)
}

/// A logged change: revision, key, value (`None`: deleted).
pub type Change = (i64, String, Option<String>);

/// Up to 1000 changes in namespace `ns` after revision `after`, oldest first.
pub fn changes_after(c: &Connection, ns: &str, after: i64) -> Result<Vec<Change>, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT rev, key, value FROM shared_config_events WHERE rev > ?1 AND namespace = ?2 ORDER BY rev LIMIT 1000",
    )?;
    let rows = st
        .query_map(params![after, ns], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
