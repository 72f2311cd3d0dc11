//! Schema migrations (refinery, SQL files under `migrations/`), run at start-up.

use super::StoreError;
use rusqlite::Connection;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The newest schema version this binary carries.
pub const KNOWN_SCHEMA_VERSION: i64 = 10;

/// What `schema show` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaState {
    /// The newest applied migration (`None` for an empty database).
    pub applied: Option<(i64, String)>,
    /// Versions this binary knows and the database does not have yet.
    pub pending: Vec<(i64, String)>,
}

/// The embedded migrations, oldest first.
fn known() -> Vec<(i64, String)> {
    let mut all: Vec<(i64, String)> = embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| (i64::from(m.version()), m.name().to_owned()))
        .collect();
    all.sort();
    all
}

pub fn state(conn: &Connection) -> Result<SchemaState, StoreError> {
    let has_history: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'refinery_schema_history')",
        [],
        |r| r.get(0),
    )?;
    let applied: Option<(i64, String)> = if has_history {
        conn.query_row(
            "SELECT version, name FROM refinery_schema_history ORDER BY version DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map(Some)
        .or_else(|e| {
            if e == rusqlite::Error::QueryReturnedNoRows {
                Ok(None)
            } else {
                Err(e)
            }
        })?
    } else {
        None
    };
    let current = applied.as_ref().map(|a| a.0).unwrap_or(0);
    let pending = known().into_iter().filter(|(v, _)| *v > current).collect();
    Ok(SchemaState { applied, pending })
}

pub fn run(conn: &mut Connection) -> Result<SchemaState, StoreError> {
    let before = state(conn)?;
    if let Some((found, _)) = before.applied {
        if found > KNOWN_SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                known: KNOWN_SCHEMA_VERSION,
            });
        }
    }
    if !before.pending.is_empty() {
        embedded::migrations::runner()
            .set_abort_divergent(true)
            .run(conn)
            .map_err(|e| StoreError::Migration(e.to_string().replace('\n', " ")))?;
        tracing::info!(
            "database schema migrated to version {KNOWN_SCHEMA_VERSION} ({} migration(s) applied)",
            before.pending.len()
        );
    }
    state(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constant_matches_the_embedded_migrations() {
        assert_eq!(known().last().map(|m| m.0), Some(KNOWN_SCHEMA_VERSION));
    }

    #[test]
    fn refuses_a_newer_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        run(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES (99, 'future', '', '0')",
            [],
        )
        .unwrap();
        let err = run(&mut conn).unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
            "{err}"
        );
    }

    /// The live-session indexes of V9 rely on `terminated_at` being set exactly when a
    /// session is TERMINATED: the migration mends the rows that broke that rule.
    #[test]
    fn v9_mends_end_times_and_keeps_one_live_session_per_token() {
        const ENDED_WITHOUT_TIME: &str = "00000000-0000-0000-0000-000000000001";
        const RUNNING_WITH_TIME: &str = "00000000-0000-0000-0000-000000000002";
        const ENDED: &str = "00000000-0000-0000-0000-000000000003";
        const LIVE: &str = "00000000-0000-0000-0000-000000000004";
        let mut conn = Connection::open_in_memory().unwrap();
        embedded::migrations::runner()
            .set_target(refinery::Target::Version(8))
            .run(&mut conn)
            .unwrap();
        // Sessions alone, without the users, groups and domains they belong to.
        conn.pragma_update(None, "foreign_keys", "OFF").unwrap();
        fn insert(
            conn: &Connection,
            id: &str,
            token: &str,
            status: &str,
            terminated_at: Option<&str>,
        ) -> rusqlite::Result<usize> {
            conn.execute(
                "INSERT INTO kernels (id, sess_id, domain_name, group_id, user_uuid, access_key,
                                      status, created_at, status_changed, terminated_at)
                 VALUES (?1, ?2, 'd', 'g', 'u', 'AK', ?3, 'created', 'changed', ?4)",
                rusqlite::params![id, token, status, terminated_at],
            )
        }
        insert(&conn, ENDED_WITHOUT_TIME, "a", "TERMINATED", None).unwrap();
        insert(&conn, RUNNING_WITH_TIME, "b", "RUNNING", Some("then")).unwrap();
        insert(&conn, ENDED, "token", "TERMINATED", Some("then")).unwrap();
        insert(&conn, LIVE, "token", "RUNNING", None).unwrap();
        run(&mut conn).unwrap();
        let ended = |id: &str| -> Option<String> {
            conn.query_row(
                "SELECT terminated_at FROM kernels WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(ended(ENDED_WITHOUT_TIME).as_deref(), Some("changed"));
        assert_eq!(ended(RUNNING_WITH_TIME), None);
        assert_eq!(ended(ENDED).as_deref(), Some("then"));
        assert_eq!(ended(LIVE), None);
        // One live session per token: the ended one did not count, a second live one does.
        let twice = insert(
            &conn,
            "00000000-0000-0000-0000-000000000005",
            "token",
            "PENDING",
            None,
        );
        assert!(twice.is_err(), "two live sessions with one token");
        insert(
            &conn,
            "00000000-0000-0000-0000-000000000006",
            "a",
            "PENDING",
            None,
        )
        .unwrap();
    }
}
