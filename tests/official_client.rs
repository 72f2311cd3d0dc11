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
        .env("BACKEND_MANAGER__LOCAL_ENGINE_IMAGES", "false")
        .current_dir(dir)
        .output()
        .expect("the manager binary runs")
}

fn start_server() -> Server {
    start_server_with(&[("BACKEND_MANAGER__LOCAL_ENGINE_IMAGES", "false".into())])
}

/// A server with its embedded agent running kernels in Docker.
fn start_server_with_agent() -> Server {
    let krunner = std::env::var("BAI_KRUNNER").expect(
        "BAI_KRUNNER is not set: run the README's test command (scripts/test.sh), which builds the static runner",
    );
    start_server_with(&[
        ("BACKEND_AGENT__KRUNNER_PATH", krunner),
        (
            "BACKEND_AGENT__RPC_LISTEN_ADDR",
            format!("127.0.0.1:{}", common::free_port()),
        ),
        (
            "BACKEND_AGENT__ID",
            format!("i-client-{}", uuid::Uuid::new_v4().simple()),
        ),
        ("BACKEND_AGENT__HEARTBEAT_INTERVAL", "0.5".into()),
    ])
}

fn start_server_with(env: &[(&str, String)]) -> Server {
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
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
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
    run_client_with_input(s, key, args, "")
}

fn run_client_with_input(
    s: &Server,
    key: (&str, &str),
    args: &[&str],
    input: &str,
) -> (bool, String) {
    run_client_in(s, key, Path::new("."), args, input)
}

/// Runs an admin command as the superadmin and checks its output mentions `expect`.
fn admin_ok(s: &Server, args: &[&str], expect: &str) -> String {
    let (_, out) = run_client(s, common::ADMIN, args);
    assert!(
        out.contains(expect),
        "{args:?} should print {expect:?}:\n{out}"
    );
    assert!(
        !out.contains("Error") && !out.contains("Traceback"),
        "{args:?}:\n{out}"
    );
    out
}

/// Column `col` of the first line of `out` that contains `needle`.
fn column(out: &str, needle: &str, col: usize) -> String {
    out.lines()
        .find(|l| l.contains(needle))
        .and_then(|l| l.split_whitespace().nth(col))
        .unwrap_or_else(|| panic!("no row with {needle} in:\n{out}"))
        .to_owned()
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

#[test]
fn admin_queries_of_the_official_client_print_their_rows() {
    let s = start_server();
    admin_ok(&s, &["admin", "keypair"], "AKIAIOSFODNN7EXAMPLE");
    let out = admin_ok(&s, &["admin", "keypairs"], "AKIANABBDUSEREXAMPLE");
    assert!(out.contains("monitor@lablup.com") && out.contains("domain-admin@lablup.com"));
    admin_ok(
        &s,
        &["admin", "users"],
        "dfa9da54-4b28-432f-be29-c0d680c7a412",
    );
    admin_ok(
        &s,
        &["admin", "user", "-e", "user@lablup.com"],
        "user@lablup.com",
    );
    admin_ok(&s, &["admin", "domains"], "The default domain");
    admin_ok(&s, &["admin", "domain"], "default");
    admin_ok(
        &s,
        &["admin", "groups"],
        "2de2b969-1d04-48a6-af16-0bc8adb3c831",
    );
    admin_ok(
        &s,
        &["admin", "group", "2de2b969-1d04-48a6-af16-0bc8adb3c831"],
        "The default user group",
    );
    admin_ok(&s, &["admin", "resource-policies"], "UNLIMITED");
    admin_ok(&s, &["admin", "resource-policy"], "Max Concurrent Sessions");
    admin_ok(&s, &["admin", "images"], "There are no registered images.");
    admin_ok(&s, &["admin", "agents"], "There are no matching agents.");
    admin_ok(&s, &["admin", "vfolders"], "Max Files");
    admin_ok(
        &s,
        &["ps"],
        "There are no compute sessions currently running.",
    );
    admin_ok(
        &s,
        &["admin", "sessions", "--status", "ALL"],
        "There are no compute sessions",
    );
}

#[test]
fn admin_mutations_of_the_official_client_round_trip() {
    let s = start_server();
    admin_ok(
        &s,
        &["admin", "domains", "add", "lab", "-d", "Lab domain"],
        "Domain name lab is created.",
    );
    admin_ok(
        &s,
        &[
            "admin",
            "domains",
            "update",
            "lab",
            "--description",
            "Changed",
        ],
        "Domain lab is updated.",
    );
    admin_ok(
        &s,
        &["admin", "groups", "add", "lab", "team1", "-d", "T"],
        "Group name team1 is created in domain lab.",
    );
    let gid = column(
        &admin_ok(&s, &["admin", "groups", "-d", "lab"], "team1"),
        "team1",
        0,
    );
    admin_ok(
        &s,
        &[
            "admin",
            "users",
            "add",
            "lab",
            "bob@lab.org",
            "pw12345",
            "-u",
            "bob",
        ],
        "User bob@lab.org is created in domain lab.",
    );
    let uuid = column(
        &admin_ok(&s, &["admin", "user", "-e", "bob@lab.org"], "bob@lab.org"),
        "UUID",
        1,
    );
    admin_ok(
        &s,
        &["admin", "groups", "add-users", &gid, &uuid],
        "Users are added to the group",
    );
    admin_ok(
        &s,
        &["admin", "groups", "update", &gid, "-n", "team2"],
        "Group team2 is updated.",
    );
    admin_ok(
        &s,
        &["admin", "users", "update", "bob@lab.org", "-n", "Bob B"],
        "User bob@lab.org is updated.",
    );
    let out = admin_ok(
        &s,
        &[
            "admin",
            "keypairs",
            "add",
            "bob@lab.org",
            "default",
            "-r",
            "500",
        ],
        "Secret Key:",
    );
    let ak = column(&out, "Access Key:", 2);
    admin_ok(
        &s,
        &["admin", "keypairs", "update", &ak, "-r", "900"],
        "Key pair is updated",
    );
    admin_ok(
        &s,
        &["admin", "keypairs", "deactivate", &ak],
        "Key pair is deactivated",
    );
    admin_ok(
        &s,
        &["admin", "keypairs", "activate", &ak],
        "Key pair is activated",
    );
    admin_ok(
        &s,
        &["admin", "keypairs", "delete", &ak],
        "Key pair is deleted",
    );
    admin_ok(
        &s,
        &[
            "admin",
            "resource-policies",
            "add",
            "lowpol",
            "--max-concurrent-sessions",
            "2",
        ],
        "lowpol is created",
    );
    admin_ok(
        &s,
        &[
            "admin",
            "resource-policies",
            "update",
            "lowpol",
            "--allowed-vfolder-hosts",
            "nfs",
        ],
        "Update succeeded.",
    );
    let (_, out) = run_client_with_input(
        &s,
        common::ADMIN,
        &["admin", "resource-policies", "delete", "lowpol"],
        "y\n",
    );
    assert!(out.contains("Resource policy lowpol is deleted."), "{out}");
    admin_ok(
        &s,
        &["admin", "groups", "remove-users", &gid, &uuid],
        "Users are removed from the group",
    );
    admin_ok(&s, &["admin", "groups", "delete", &gid], "Group is deleted");
    admin_ok(
        &s,
        &["admin", "users", "delete", "bob@lab.org"],
        "User is deleted: bob@lab.org.",
    );
    admin_ok(
        &s,
        &["admin", "domains", "delete", "lab"],
        "Domain is deleted: lab.",
    );
    let out = admin_ok(&s, &["admin", "domains"], "lab");
    assert!(
        out.lines()
            .any(|l| l.starts_with("lab") && l.contains("False")),
        "{out}"
    );
}

#[test]
fn admin_only_fields_are_refused_to_users_and_domain_admins() {
    let s = start_server();
    let (_, out) = run_client(&s, common::USER, &["admin", "agents"]);
    assert!(out.contains("400") && out.contains("GraphQL"), "{out}");
    let (_, out) = run_client(&s, common::USER, &["admin", "domains", "add", "x"]);
    assert!(out.contains("400"), "{out}");
    let (_, out) = run_client(&s, common::DOMAIN_ADMIN, &["admin", "domains"]);
    assert!(out.contains("superadmin privilege required"), "{out}");
    // A user's own view works.
    let (_, out) = run_client(&s, common::USER, &["admin", "keypair"]);
    assert!(
        out.contains("C8qnIo29EZvXkPK_MXcuAakYTy4NYrxwmCEyNPlf"),
        "{out}"
    );
}

#[test]
fn image_aliases_through_the_official_client() {
    let s = start_server();
    // The embedded shared config is the server's database; put an image there as a scan would.
    let out = manager(
        s._dir.path(),
        &[
            "etcd",
            "put",
            "images/127.0.0.1%3A5000/lablup%2Fpython/3.11",
            "sha256:abc",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    admin_ok(
        &s,
        &[
            "admin",
            "alias-image",
            "py",
            "127.0.0.1:5000/lablup/python:3.11",
        ],
        "alias py created",
    );
    let out = admin_ok(&s, &["admin", "images"], "lablup/python");
    assert!(out.contains("['py']"), "{out}");
    admin_ok(&s, &["admin", "dealias-image", "py"], "alias py removed.");
    let (_, out) = run_client(&s, common::ADMIN, &["admin", "dealias-image", "py"]);
    assert!(out.contains("no such image: alias py"), "{out}");
}

fn image() -> String {
    std::env::var("BAI_TEST_IMAGE").expect(
        "BAI_TEST_IMAGE is not set: run the README's test command (scripts/test.sh), which builds the kernel image",
    )
}

/// Waits until the embedded agent has registered (its first heartbeat).
fn wait_for_agent(s: &Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out) = run_client(s, common::ADMIN, &["admin", "agents"]);
        if out.contains("ALIVE") {
            return;
        }
        assert!(Instant::now() < deadline, "no agent registered: {out}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn sessions_with_the_official_client_run_start_list_files_and_remove() {
    let s = start_server_with_agent();
    wait_for_agent(&s);
    let image = image();
    let user = common::USER;

    // Query mode prints the output, and with -s the session's last statistics (in the
    // per-metric "version 2" shape this client prints).
    let (ok, out) = run_client(
        &s,
        user,
        &[
            "run",
            "-g",
            "default",
            "--rm",
            "-s",
            "-c",
            "print(6*7)",
            &image,
        ],
    );
    assert!(ok && out.contains("42"), "{out}");
    assert!(
        out.contains("cpu_used") && out.contains("msec") && !out.contains("Traceback"),
        "{out}"
    );

    // Batch mode with an uploaded file: built and executed in the container.
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("main.py"),
        "import sys\nprint('batch says', sum(range(10)))\n",
    )
    .unwrap();
    let mut child = Command::new(client());
    child
        .args([
            "run",
            "-g",
            "default",
            "--rm",
            "--exec",
            "python3 main.py",
            &image,
            "main.py",
        ])
        .current_dir(work.path())
        .env("BACKEND_ENDPOINT", &s.endpoint)
        .env("BACKEND_ACCESS_KEY", user.0)
        .env("BACKEND_SECRET_KEY", user.1);
    let out = child.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("batch says 45"), "{text}");

    // start, ps, upload, ls, download, logs, rm.
    let (ok, out) = run_client(
        &s,
        user,
        &["start", "-g", "default", "-t", "clientsess", &image],
    );
    assert!(ok && out.contains("clientsess"), "{out}");
    let (_, out) = run_client(&s, user, &["ps"]);
    assert!(
        out.contains("clientsess") && out.contains("RUNNING"),
        "{out}"
    );
    std::fs::write(work.path().join("data.txt"), "round trip\n").unwrap();
    let mut up = Command::new(client());
    up.args(["upload", "clientsess", "data.txt"])
        .current_dir(work.path())
        .env("BACKEND_ENDPOINT", &s.endpoint)
        .env("BACKEND_ACCESS_KEY", user.0)
        .env("BACKEND_SECRET_KEY", user.1);
    assert!(up.output().unwrap().status.success());
    let (_, out) = run_client(&s, user, &["ls", "clientsess"]);
    assert!(out.contains("data.txt"), "{out}");
    // A nested path (sent as `sub%2Fa.txt`) lands nested.
    std::fs::create_dir(work.path().join("sub")).unwrap();
    std::fs::write(work.path().join("sub/a.txt"), "nested\n").unwrap();
    let (ok, out) = run_client_in(
        &s,
        user,
        work.path(),
        &["upload", "clientsess", "sub/a.txt"],
        "",
    );
    assert!(ok, "{out}");
    let (_, out) = run_client(&s, user, &["ls", "clientsess", "sub"]);
    assert!(out.contains("a.txt") && !out.contains("No such"), "{out}");
    let (_, out) = run_client(&s, user, &["ls", "clientsess"]);
    assert!(!out.contains("%2F"), "{out}");
    let dest = tempfile::tempdir().unwrap();
    let (_, out) = run_client(
        &s,
        user,
        &[
            "download",
            "clientsess",
            "data.txt",
            "--dest",
            dest.path().to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(dest.path().join("data.txt"))
            .unwrap_or_else(|e| panic!("{e}: {out}")),
        "round trip\n"
    );
    let (ok, out) = run_client(&s, user, &["logs", "clientsess"]);
    assert!(ok && out.contains("End of logs"), "{out}");
    // Another user cannot see or remove it.
    let (_, out) = run_client(&s, common::DOMAIN_ADMIN, &["rm", "clientsess"]);
    assert!(!out.contains("Done"), "{out}");
    let (ok, out) = run_client(&s, user, &["rm", "-s", "clientsess"]);
    assert!(ok && out.contains("Done"), "{out}");
    assert!(out.contains("mem") && !out.contains("Traceback"), "{out}");
    let (_, out) = run_client(&s, user, &["ps"]);
    assert!(!out.contains("clientsess"), "{out}");
}

/// Runs the client in `dir` (uploads and downloads use the working directory).
fn run_client_in(
    s: &Server,
    key: (&str, &str),
    dir: &Path,
    args: &[&str],
    input: &str,
) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(client())
        .args(args)
        .current_dir(dir)
        .env("BACKEND_ENDPOINT", &s.endpoint)
        .env("BACKEND_ACCESS_KEY", key.0)
        .env("BACKEND_SECRET_KEY", key.1)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the client runs");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().expect("the client finishes");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The server's peak resident memory, in KiB.
fn peak_rss_kib(s: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

#[test]
fn vfolder_commands_of_the_official_client() {
    let s = start_server();
    let (user, other) = (common::USER, common::DOMAIN_ADMIN);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let run = |key, args: &[&str], input: &str| run_client_in(&s, key, w, args, input);

    let (ok, out) = run(user, &["vfolder", "list-hosts"], "");
    assert!(ok && out.contains("local"), "{out}");
    let (ok, out) = run(user, &["vfolder", "create", "mydata", "local"], "");
    assert!(ok && out.contains("mydata"), "{out}");
    let (_, out) = run(user, &["vfolder", "create", "mydata", "local"], "");
    assert!(out.contains("already exists"), "{out}");
    let (_, out) = run(user, &["vfolder", "create", "elsewhere", "nowhere"], "");
    assert!(out.contains("not allowed"), "{out}");
    let (ok, out) = run(user, &["vfolder", "list"], "");
    assert!(ok && out.contains("mydata"), "{out}");

    std::fs::write(w.join("hello.txt"), "hello folder\n").unwrap();
    let (ok, out) = run(user, &["vfolder", "upload", "mydata", "hello.txt"], "");
    assert!(ok, "{out}");
    let (ok, out) = run(user, &["vfolder", "mkdir", "mydata", "sub/dir"], "");
    assert!(ok, "{out}");
    // A nested path (sent percent-encoded) lands nested.
    std::fs::create_dir_all(w.join("sub/dir")).unwrap();
    std::fs::write(w.join("sub/dir/n.txt"), "nested\n").unwrap();
    let (ok, out) = run(user, &["vfolder", "upload", "mydata", "sub/dir/n.txt"], "");
    assert!(ok, "{out}");
    let (ok, out) = run(user, &["vfolder", "ls", "mydata", "sub/dir"], "");
    assert!(ok && out.contains("n.txt"), "{out}");
    let (ok, out) = run(user, &["vfolder", "ls", "mydata"], "");
    assert!(
        ok && out.contains("hello.txt") && out.contains("sub"),
        "{out}"
    );
    let (ok, out) = run(user, &["vfolder", "info", "mydata"], "");
    assert!(ok && out.contains("2"), "{out}");

    // 200 MiB up and down, byte-exact, with the server's memory bounded.
    let big = w.join("big.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..(200 << 20) / 8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f.write_all(&x.to_le_bytes()).unwrap();
        }
    }
    let (ok, out) = run(user, &["vfolder", "upload", "mydata", "big.bin"], "");
    assert!(ok, "{out}");
    let down = tempfile::tempdir().unwrap();
    let (ok, out) = run_client_in(
        &s,
        user,
        down.path(),
        &["vfolder", "download", "mydata", "big.bin", "hello.txt"],
        "",
    );
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read_to_string(down.path().join("hello.txt")).unwrap(),
        "hello folder\n"
    );
    let (a, b) = (
        std::fs::read(&big).unwrap(),
        std::fs::read(down.path().join("big.bin")).unwrap(),
    );
    assert!(
        a.len() == b.len() && a == b,
        "the 200 MiB file came back different"
    );
    drop((a, b));
    let peak = peak_rss_kib(&s);
    assert!(
        peak < 150 * 1024,
        "the server peaked at {peak} KiB moving 200 MiB"
    );

    // Sharing: read-only for the other user, who can read but not write.
    let (ok, out) = run(
        user,
        &[
            "vfolder",
            "invite",
            "-p",
            "ro",
            "mydata",
            "domain-admin@lablup.com",
        ],
        "",
    );
    assert!(ok, "{out}");
    let (ok, out) = run(other, &["vfolder", "invitations"], "1\na\n");
    assert!(ok && out.contains("now can access"), "{out}");
    let (_, out) = run(other, &["vfolder", "list"], "");
    assert!(out.contains("mydata") && out.contains("ro"), "{out}");
    let (ok, out) = run(other, &["vfolder", "ls", "mydata"], "");
    assert!(ok && out.contains("hello.txt"), "{out}");
    // Refused before its body is read, a multi-MB upload still gets its answer (not a
    // broken pipe), every time.
    std::fs::write(w.join("refused.bin"), vec![b'x'; 8 << 20]).unwrap();
    for _ in 0..3 {
        let (_, out) = run(other, &["vfolder", "upload", "mydata", "refused.bin"], "");
        assert!(
            (out.contains("404") || out.contains("permission denied"))
                && !out.to_lowercase().contains("broken pipe"),
            "{out}"
        );
    }
    let (_, out) = run(other, &["vfolder", "rm", "mydata", "hello.txt"], "y\n");
    assert!(
        out.contains("404") || out.contains("permission denied"),
        "{out}"
    );

    // Owner operations.
    let (ok, out) = run(user, &["vfolder", "rm", "mydata", "hello.txt"], "y\n");
    assert!(ok, "{out}");
    let (_, out) = run(user, &["vfolder", "ls", "mydata"], "");
    assert!(!out.contains("hello.txt"), "{out}");
    let (ok, out) = run(user, &["vfolder", "rename", "mydata", "ourdata"], "");
    assert!(ok, "{out}");
    let (ok, out) = run(user, &["vfolder", "delete", "ourdata"], "");
    assert!(ok, "{out}");
    let (_, out) = run(user, &["vfolder", "list"], "");
    assert!(!out.contains("ourdata"), "{out}");
}
