//! Operating the appliance: database backups under load, restores, checks, and upgrades of
//! a database from an older release.

mod common;

use backend_ai_manager::store::StoreError;
use common::TestServer;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn manager(data_dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_backend-ai-manager"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("BACKEND_CONFIG_FILE")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn a_backup_taken_under_write_load_restores_to_a_sound_database() {
    let s = TestServer::start().await;
    let app = s.app();
    let dir = s.dir.path().to_owned();
    // A writer inserting users' groups as fast as it can.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let (st, w, store) = (stop.clone(), written.clone(), app.store.clone());
    let writer = tokio::spawn(async move {
        while !st.load(Ordering::Relaxed) {
            let n = w.fetch_add(1, Ordering::Relaxed);
            store
                .write(move |tx| -> Result<_, StoreError> {
                    Ok(tx.execute(
                        "INSERT INTO groups (id, name, domain_name) VALUES (?1, ?2, 'default')",
                        [uuid::Uuid::new_v4().to_string(), format!("load-{n}")],
                    )?)
                })
                .await
                .unwrap();
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let backup = tempfile::tempdir().unwrap();
    let file = backup.path().join("snapshot.db");
    let (d, f) = (dir.clone(), file.clone());
    let (ok, out) =
        tokio::task::spawn_blocking(move || manager(&d, &["db", "backup", f.to_str().unwrap()]))
            .await
            .unwrap();
    assert!(ok, "{out}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let total = written.load(Ordering::Relaxed);

    let (ok, out) = manager(&dir, &["db", "check", file.to_str().unwrap()]);
    assert!(ok && out.contains(": ok"), "{out}");
    // Not while the server uses the database.
    let (ok, out) = manager(&dir, &["db", "restore", file.to_str().unwrap()]);
    assert!(!ok && out.contains("in use by a running server"), "{out}");
    s.stop().await;

    let (ok, out) = manager(&dir, &["db", "restore", file.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) = manager(&dir, &["db", "check"]);
    assert!(ok && out.contains(": ok"), "{out}");
    // The restored database holds a prefix of the writes, and serves again.
    let conn = rusqlite::Connection::open(dir.join("manager.db")).unwrap();
    let restored: u64 = conn
        .query_row(
            "SELECT count(*) FROM groups WHERE name LIKE 'load-%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(restored > 0 && restored <= total, "{restored} of {total}");
    drop(conn);
    let cfg = TestServer::config(&dir);
    let s = TestServer::start_in(tempfile::tempdir().unwrap(), cfg).await;
    s.stop().await;
    // A damaged file is not restored.
    std::fs::write(backup.path().join("bad.db"), b"this is not SQLite").unwrap();
    let (ok, _) = manager(
        &dir,
        &[
            "db",
            "restore",
            backup.path().join("bad.db").to_str().unwrap(),
        ],
    );
    assert!(!ok);
    let (ok, _) = manager(&dir, &["db", "check"]);
    assert!(ok);
}

#[tokio::test]
async fn a_database_from_an_older_release_is_backed_up_and_migrated_forward() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("manager.db");
    // Version 3 of the schema, as the previous release left it, with a session in it.
    {
        let store = backend_ai_manager::store::Store::open(&db).unwrap();
        drop(store);
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "DROP INDEX ix_kernels_pending;
             ALTER TABLE kernels DROP COLUMN creation_config;
             ALTER TABLE kernels DROP COLUMN status_changed;
             DELETE FROM refinery_schema_history WHERE version = 4;",
        )
        .unwrap();
    }
    let (ok, out) = manager(dir.path(), &["schema", "show"]);
    assert!(
        ok && out.contains("applied:  version 3") && out.contains("pending:  version 4"),
        "{out}"
    );
    let (ok, out) = manager(dir.path(), &["schema", "migrate"]);
    assert!(ok, "{out}");
    assert!(
        dir.path().join("manager.db.before-v4.bak").is_file(),
        "a backup precedes the migration"
    );
    let (ok, out) = manager(dir.path(), &["schema", "show"]);
    assert!(
        ok && out.contains("applied:  version 4") && !out.contains("pending"),
        "{out}"
    );
    let (ok, out) = manager(
        dir.path(),
        &[
            "db",
            "check",
            dir.path()
                .join("manager.db.before-v4.bak")
                .to_str()
                .unwrap(),
        ],
    );
    assert!(ok, "{out}");
    // A schema from the future is refused with a clear message.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES (99, 'future', '', '0')",
        [],
    )
    .unwrap();
    drop(conn);
    let (ok, out) = manager(dir.path(), &["schema", "migrate"]);
    assert!(!ok && out.contains("newer than this binary knows"), "{out}");
}
