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
            "CREATE INDEX ix_kernels_sess_id ON kernels (sess_id);
             CREATE INDEX ix_kernels_status ON kernels (status);
             CREATE INDEX ix_kernels_access_key ON kernels (access_key);
             DROP INDEX ix_kernels_live_access_key;
             DROP INDEX ix_kernels_live_group;
             DROP INDEX ix_kernels_live_domain;
             DROP INDEX ix_kernels_live_agent;
             DROP INDEX ix_kernels_unique_sess_token;
             CREATE UNIQUE INDEX ix_kernels_unique_sess_token ON kernels (access_key, sess_id)
                 WHERE status != 'TERMINATED' AND role = 'master';
             ALTER TABLE kernels DROP COLUMN creation_config;
             ALTER TABLE kernels DROP COLUMN status_changed;
             DROP TABLE ui_sessions;
             DROP TRIGGER auth_changes_keypair_insert;
             DROP TRIGGER auth_changes_keypair_delete;
             DROP TRIGGER auth_changes_keypair_update;
             DROP TRIGGER auth_changes_user_insert;
             DROP TRIGGER auth_changes_user_delete;
             DROP TRIGGER auth_changes_user_update;
             DROP TRIGGER auth_changes_policy_insert;
             DROP TRIGGER auth_changes_policy_delete;
             DROP TRIGGER auth_changes_policy_update;
             DROP TABLE auth_changes;
             ALTER TABLE domains DROP COLUMN allowed_vfolder_hosts;
             ALTER TABLE domains DROP COLUMN allowed_docker_registries;
             ALTER TABLE groups DROP COLUMN allowed_vfolder_hosts;
             DELETE FROM refinery_schema_history WHERE version IN (4, 5, 6, 7, 8, 9, 10);",
        )
        .unwrap();
    }
    let (ok, out) = manager(dir.path(), &["schema", "show"]);
    assert!(
        ok && out.contains("applied:  version 3")
            && out.contains("pending:  version 4")
            && out.contains("pending:  version 5")
            && out.contains("pending:  version 6")
            && out.contains("pending:  version 7")
            && out.contains("pending:  version 8")
            && out.contains("pending:  version 9")
            && out.contains("pending:  version 10"),
        "{out}"
    );
    let (ok, out) = manager(dir.path(), &["schema", "migrate"]);
    assert!(ok, "{out}");
    assert!(
        dir.path().join("manager.db.before-v10.bak").is_file(),
        "a backup precedes the migration"
    );
    let (ok, out) = manager(dir.path(), &["schema", "show"]);
    assert!(
        ok && out.contains("applied:  version 10") && !out.contains("pending"),
        "{out}"
    );
    let (ok, out) = manager(
        dir.path(),
        &[
            "db",
            "check",
            dir.path()
                .join("manager.db.before-v10.bak")
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

/// A test CA and a certificate for 127.0.0.1 signed by it (openssl), with `serial`.
fn certificates(dir: &std::path::Path, serial: &str) {
    let sh = |script: &str| {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
    };
    if !dir.join("ca.pem").exists() {
        sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=bai-test-ca 2>/dev/null");
    }
    sh(&format!(
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout new.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null && \
         printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf && \
         openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial {serial} -out new.pem -days 2 -extfile ext.cnf 2>/dev/null && \
         mv new.key server.key && mv new.pem server.pem"
    ));
}

/// The serial number of the certificate served at `addr`.
fn served_serial(addr: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &std::path::Path, port: u16, env: &[(&str, String)]) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_backend-ai-manager"))
        .arg("--data-dir")
        .arg(dir)
        .args(["serve", "--service-addr", &format!("127.0.0.1:{port}")])
        .env_remove("BACKEND_CONFIG_FILE")
        .env("BACKEND_AGENT__ENABLED", "false")
        .env("BACKEND_MANAGER__LOCAL_ENGINE_IMAGES", "false")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Child(child)
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn https_with_the_official_client_and_a_certificate_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tempfile::tempdir().unwrap();
    certificates(tls.path(), "1001");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/fixtures/example-keypairs.json");
    let (ok, out) = manager(
        dir.path(),
        &["fixture", "populate", fixture.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = serve(
        dir.path(),
        port,
        &[
            ("BACKEND_MANAGER__SSL_ENABLED", "true".into()),
            (
                "BACKEND_MANAGER__SSL_CERT",
                tls.path().join("server.pem").display().to_string(),
            ),
            (
                "BACKEND_MANAGER__SSL_PRIVKEY",
                tls.path().join("server.key").display().to_string(),
            ),
        ],
    );
    let client = |args: &[&str]| {
        let out = Command::new(common::setting("BAI_CLIENT"))
            .args(args)
            .env("BACKEND_ENDPOINT", format!("https://{addr}"))
            .env("BACKEND_ACCESS_KEY", common::ADMIN.0)
            .env("BACKEND_SECRET_KEY", common::ADMIN.1)
            .env("SSL_CERT_FILE", tls.path().join("ca.pem"))
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = client(&["admin", "keypairs"]);
    assert!(ok && out.contains("AKIANABBDUSEREXAMPLE"), "{out}");

    // Plain HTTP to the TLS port gets no HTTP answer, and the server carries on.
    {
        use std::io::{Read, Write};
        let mut plain = std::net::TcpStream::connect(&addr).unwrap();
        plain
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        plain
            .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        let _ = plain.read_to_end(&mut buf);
        assert!(
            !String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"),
            "plain HTTP was served"
        );
    }
    assert_eq!(served_serial(&addr), "serial=03E9");

    // A renewed certificate is served after SIGHUP, without a restart.
    certificates(tls.path(), "1002");
    signal(&server, "-HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while served_serial(&addr) != "serial=03EA" {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was not served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out) = client(&["admin", "keypairs"]);
    assert!(ok, "{out}");
    // A broken file on SIGHUP keeps the certificate being served.
    std::fs::write(tls.path().join("server.pem"), "garbage").unwrap();
    signal(&server, "-HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(served_serial(&addr), "serial=03EA");
}

#[tokio::test]
async fn sigterm_during_fifty_requests_answers_them_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/fixtures/example-keypairs.json");
    let (ok, out) = manager(
        dir.path(),
        &["fixture", "populate", fixture.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    let port = common::free_port();
    let server = serve(dir.path(), port, &[]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let query = serde_json::json!({"query": "{ keypairs { access_key } }"});
    let requests: Vec<_> = (0..50)
        .map(|i| {
            let q = query.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i * 2)).await;
                let req = common::Req::new(addr, "POST", "/admin/graphql")
                    .json(&q)
                    .signed(&common::creds(common::ADMIN));
                // A connection refused once the server stopped accepting is a clean refusal.
                tokio::time::timeout(Duration::from_secs(20), req.try_send()).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(40)).await;
    signal(&server, "-TERM");
    let mut answered = 0;
    for r in requests {
        match r.await.unwrap() {
            Ok(Ok(resp)) => {
                assert_eq!(resp.status, 200, "an answer is a whole answer");
                answered += 1;
            }
            Ok(Err(_)) => {} // refused or closed before the request was read
            Err(_) => panic!("a request hung through the shutdown"),
        }
    }
    assert!(answered > 0, "requests in flight were answered");
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let mut s = server;
        s.0.wait()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn serve_refuses_an_empty_database_file_instead_of_starting_over() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("manager.db");
    std::fs::write(&db, b"").unwrap(); // e.g. a copy that failed half-way
    let port = common::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_backend-ai-manager"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--service-addr", &format!("127.0.0.1:{port}")])
        .env_remove("BACKEND_CONFIG_FILE")
        .env("BACKEND_AGENT__ENABLED", "false")
        .env("BACKEND_MANAGER__LOCAL_ENGINE_IMAGES", "false")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve started on an empty database file");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("is an empty file")
            && text.contains("remove it to start with a new database"),
        "{text}"
    );
    assert!(!text.contains("secret key"), "no new superadmin: {text}");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
}
