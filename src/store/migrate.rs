//! Schema migrations (refinery, SQL files under `migrations/`), run at start-up.

use super::StoreError;
use rusqlite::Connection;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The newest schema version this binary carries.
pub const KNOWN_SCHEMA_VERSION: i64 = 8;

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
}
