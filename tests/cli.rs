//! The command line as an operator uses it: help, errors, etcd/schema/fixture commands.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_backend-ai-manager");

fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("BACKEND_CONFIG_FILE")
        .env("BACKEND_MANAGER__LOCAL_ENGINE_IMAGES", "false")
        .env("HOME", dir)
        .stdin(Stdio::null())
        .output()
        .expect("binary runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn every_command_has_help() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["etcd", "--help"],
        vec!["etcd", "put-json", "--help"],
        vec!["schema", "--help"],
        vec!["schema", "migrate", "--help"],
        vec!["fixture", "populate", "--help"],
        vec!["generate-keypair", "--help"],
    ] {
        let o = cli(dir.path(), &args);
        assert!(o.status.success(), "{args:?}");
        assert!(text(&o).0.contains("Usage:"), "{args:?}");
    }
    let o = cli(dir.path(), &["generate-keypair"]);
    assert!(text(&o).0.starts_with("Access key: AKIA"));
}

#[test]
fn bad_configuration_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[manager]\nservice-addr = 12\n",
    )
    .unwrap();
    let o = cli(dir.path(), &["-f", "bad.toml", "schema", "show"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: manager.service-addr:"), "{err}");
    assert!(!err.contains("panicked"));
    let o = cli(dir.path(), &["-f", "missing.toml", "schema", "show"]);
    assert!(text(&o).1.contains("missing.toml does not exist"));
    // ./manager.toml is found by the search path.
    std::fs::write(
        dir.path().join("manager.toml"),
        "[etcd]\nnamespace = \"bad namespace!\"\n",
    )
    .unwrap();
    let o = cli(dir.path(), &["schema", "oneshot"]);
    assert!(text(&o).1.contains("etcd.namespace"), "{:?}", text(&o));
}

#[test]
fn etcd_commands_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["--data-dir", d, "etcd"];
        all.extend_from_slice(args);
        cli(dir.path(), &all)
    };
    assert!(run(&["put", "config/redis/addr", "127.0.0.1:6379"])
        .status
        .success());
    assert_eq!(
        text(&run(&["get", "config/redis/addr"])).0,
        "127.0.0.1:6379\n"
    );
    let missing = run(&["get", "config/nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing).1.contains("no such key"));
    std::fs::write(
        dir.path().join("vol.json"),
        r#"{"_mount": "/mnt", "local": {"path": "/data"}}"#,
    )
    .unwrap();
    assert!(run(&["put-json", "volumes", "vol.json"]).status.success());
    let tree: serde_json::Value =
        serde_json::from_str(&text(&run(&["get", "volumes", "--prefix"])).0).unwrap();
    assert_eq!(
        tree,
        serde_json::json!({"_mount": "/mnt", "local": {"path": "/data"}})
    );
    assert!(run(&["delete", "volumes", "--prefix"]).status.success());
    assert_eq!(text(&run(&["get", "volumes", "--prefix"])).0.trim(), "{}");
    std::fs::write(dir.path().join("list.json"), "[1, 2]").unwrap();
    let o = run(&["put-json", "volumes", "list.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("must contain a JSON object"));
}

#[test]
fn etcd_commands_on_real_etcd() {
    let etcd = common::etcd();
    let dir = tempfile::tempdir().unwrap();
    let ns = common::unique_namespace();
    std::fs::write(
        dir.path().join("m.toml"),
        format!("[etcd]\nnamespace = \"{ns}\"\naddr = \"{}\"\n", etcd.addr),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["-f", "m.toml", "etcd"];
        all.extend_from_slice(args);
        cli(dir.path(), &all)
    };
    assert!(run(&["put", "config/x", "1"]).status.success());
    assert_eq!(text(&run(&["get", "config/x"])).0, "1\n");
    assert!(run(&["delete", "config/x"]).status.success());
    assert_eq!(run(&["get", "config/x"]).status.code(), Some(1));
    // An etcd that is not there is a clear error, not a hang or a panic.
    std::fs::write(
        dir.path().join("down.toml"),
        format!("[etcd]\naddr = \"127.0.0.1:{}\"\n", common::free_port()),
    )
    .unwrap();
    let o = cli(dir.path(), &["-f", "down.toml", "etcd", "get", "config/x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.starts_with("error: etcd at 127.0.0.1:"),
        "{:?}",
        text(&o)
    );
}

#[test]
fn schema_and_fixture_commands() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let o = cli(dir.path(), &["--data-dir", d, "schema", "show"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("no database"));
    assert!(cli(dir.path(), &["--data-dir", d, "schema", "oneshot"])
        .status
        .success());
    let (out, _) = text(&cli(dir.path(), &["--data-dir", d, "schema", "show"]));
    let applied = format!(
        "applied:  version {}",
        backend_ai_manager::store::KNOWN_SCHEMA_VERSION
    );
    assert!(out.contains(&applied), "{out}");
    assert!(!out.contains("pending"));

    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fixtures/example-keypairs.json");
    let f = fixture.to_str().unwrap();
    let (out, _) = text(&cli(
        dir.path(),
        &["--data-dir", d, "fixture", "populate", f],
    ));
    assert!(out.contains("keypairs") && out.contains("4 added"), "{out}");
    let (out, _) = text(&cli(
        dir.path(),
        &["--data-dir", d, "fixture", "populate", f],
    ));
    assert!(
        out.lines().all(|l| l.contains(" 0 added")),
        "second load must add nothing: {out}"
    );

    std::fs::write(
        dir.path().join("bad.json"),
        r#"{"keypairs": [{"access_key": "AK1", "secret_key": "s", "user": "not-a-uuid"}]}"#,
    )
    .unwrap();
    let o = cli(
        dir.path(),
        &["--data-dir", d, "fixture", "populate", "bad.json"],
    );
    assert_eq!(o.status.code(), Some(1));
    let (_, err) = text(&o);
    assert!(
        err.contains("keypairs[0].user: expected a UUID") && err.contains("nothing was loaded"),
        "{err}"
    );
}

#[test]
fn first_start_prints_credentials_once_and_a_busy_port_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let serve = || {
        Command::new(BIN)
            .args(["--data-dir", d, "serve", "--service-addr", &addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let wait_stop = |mut child: std::process::Child| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(50));
        }
        // A second server on the same database fails with one line, and so does one on
        // the same port.
        let o = cli(
            dir.path(),
            &["--data-dir", d, "serve", "--service-addr", &addr],
        );
        assert_eq!(o.status.code(), Some(1));
        assert!(
            text(&o).1.contains("is in use by a running server"),
            "{:?}",
            text(&o)
        );
        let other = tempfile::tempdir().unwrap();
        let o = cli(
            other.path(),
            &[
                "--data-dir",
                other.path().to_str().unwrap(),
                "serve",
                "--service-addr",
                &addr,
            ],
        );
        assert_eq!(o.status.code(), Some(1));
        assert!(
            text(&o).1.contains(&format!("cannot listen on {addr}")),
            "{:?}",
            text(&o)
        );
        sigterm(child.id());
        let status = child.wait().unwrap();
        assert!(status.success(), "SIGTERM exits 0");
        let mut out = String::new();
        use std::io::Read;
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        out
    };
    let first = wait_stop(serve());
    assert!(
        first.contains("First start: created the superadmin account"),
        "{first}"
    );
    assert!(first.contains("secret key:"));
    let second = wait_stop(serve());
    assert!(!second.contains("First start"), "{second}");
}

fn sigterm(pid: u32) {
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn image_commands_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["--data-dir", d];
        all.extend_from_slice(args);
        cli(dir.path(), &all)
    };
    assert_eq!(
        text(&run(&["image", "list"])).0.trim(),
        "no images are known yet"
    );
    for (k, v) in [
        ("images/127.0.0.1%3A5000/lablup%2Fpython/3.11", "sha256:abc"),
        (
            "images/127.0.0.1%3A5000/lablup%2Fpython/3.11/size_bytes",
            "1000",
        ),
        (
            "images/127.0.0.1%3A5000/lablup%2Fpython/3.11/labels/ai.backend.kernelspec",
            "1",
        ),
    ] {
        assert!(run(&["etcd", "put", k, v]).status.success());
    }
    assert!(
        run(&["image", "alias", "py", "127.0.0.1:5000/lablup/python:3.11"])
            .status
            .success()
    );
    let (out, _) = text(&run(&["etcd", "list-images"]));
    assert!(
        out.contains("127.0.0.1:5000/lablup/python:3.11  sha256:abc  1000 bytes  (aliases: py)"),
        "{out}"
    );
    assert!(
        run(&["image", "set-resource-limit", "py", "mem", "256m:4g"])
            .status
            .success()
    );
    let doc: serde_json::Value =
        serde_json::from_str(&text(&run(&["image", "inspect-image", "py"])).0).unwrap();
    assert_eq!(
        doc["resource_limits"]["mem"],
        serde_json::json!({"min": "256m", "max": "4g"})
    );
    assert_eq!(doc["labels"]["ai.backend.kernelspec"], "1");
    let bad = run(&["image", "set-resource-limit", "py", "mem", "lots:"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad).1.contains("not a decimal quantity"),
        "{:?}",
        text(&bad)
    );
    let missing = run(&["image", "inspect", "nope"]);
    assert!(text(&missing).1.contains("no such image: nope"));
    assert!(run(&["image", "dealias", "py"]).status.success());
    assert_eq!(run(&["image", "dealias", "py"]).status.code(), Some(1));
}
