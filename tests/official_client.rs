//! The real binary under the official Python client, `backend.ai-client==19.6.0a1`.
//!
//! The client is found at `$BAI_CLIENT`, else `.venv-client/bin/backend.ai` (the README's
//! test command installs it there, as client-compat §2.2 describes).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_backend-ai-manager");

fn client() -> PathBuf {
    let p = std::env::var_os("BAI_CLIENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-client/bin/backend.ai")
        });
    assert!(
        p.is_file(),
        "the official client is not installed at {}: run the README's test command (scripts/test.sh), \
         which creates .venv-client with backend.ai-client==19.6.0a1, or set BAI_CLIENT",
        p.display()
    );
    p
}

struct Server {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn manager(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("BACKEND_CONFIG_FILE")
        .current_dir(dir)
        .output()
        .expect("the manager binary runs")
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fixtures/example-keypairs.json");
    let out = manager(
        dir.path(),
        &["fixture", "populate", fixture.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "fixture populate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--service-addr", &addr])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "server did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        child,
        endpoint: format!("http://{addr}"),
        _dir: dir,
    }
}

fn run_client(s: &Server, key: (&str, &str), args: &[&str]) -> (bool, String) {
    let out = Command::new(client())
        .args(args)
        .env("BACKEND_ENDPOINT", &s.endpoint)
        .env("BACKEND_ACCESS_KEY", key.0)
        .env("BACKEND_SECRET_KEY", key.1)
        .stdin(Stdio::null())
        .output()
        .expect("the client runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn manager_status_freeze_unfreeze_with_the_official_client() {
    let s = start_server();
    let (ok, out) = run_client(&s, common::ADMIN, &["manager", "status"]);
    assert!(ok && out.contains("running"), "{out}");
    let (ok, out) = run_client(&s, common::ADMIN, &["manager", "freeze"]);
    assert!(
        ok && out.contains("Manager is successfully frozen."),
        "{out}"
    );
    let (_, out) = run_client(&s, common::ADMIN, &["manager", "status"]);
    assert!(out.contains("frozen"), "{out}");
    let (ok, out) = run_client(&s, common::ADMIN, &["manager", "unfreeze"]);
    assert!(
        ok && out.contains("Manager is successfully unfrozen."),
        "{out}"
    );
    let (_, out) = run_client(&s, common::ADMIN, &["manager", "status"]);
    assert!(out.contains("running") && !out.contains("frozen"), "{out}");
}

#[test]
fn the_official_client_is_refused_with_a_wrong_key_or_role() {
    let s = start_server();
    let (ok, out) = run_client(
        &s,
        (common::ADMIN.0, "wrong-secret"),
        &["manager", "freeze"],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("401") && out.contains("https://api.backend.ai/probs/auth-failed"),
        "{out}"
    );
    // A plain user's keypair may read the status but not freeze the manager.
    let (ok, out) = run_client(&s, common::USER, &["manager", "freeze"]);
    assert!(!ok && out.contains("401"), "{out}");
    let (_, out) = run_client(&s, common::ADMIN, &["manager", "status"]);
    assert!(out.contains("running"), "{out}");
}
