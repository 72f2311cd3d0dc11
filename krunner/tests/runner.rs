//! The runner as the agent drives it: the real binary, a real socket, a real Python.

use backend_ai_krunner::{read_frame, to_agent, to_runner, write_frame, Frame, SOCKET_NAME};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Runner {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(exec_timeout: u32) -> Runner {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("work")).unwrap();
    std::fs::create_dir_all(dir.path().join("services")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_backend-ai-krunner"))
        .env("BACKENDAI_IPC_DIR", dir.path())
        .env("BACKENDAI_WORKDIR", dir.path().join("work"))
        .env("BACKENDAI_SERVICE_DEFS", dir.path().join("services"))
        .env("BACKENDAI_EXEC_TIMEOUT", exec_timeout.to_string())
        .spawn()
        .unwrap();
    let sock = dir.path().join(SOCKET_NAME);
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "runner did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Runner { child, dir }
}

struct Agent(UnixStream);

impl Agent {
    fn connect(r: &Runner) -> Agent {
        let mut s = UnixStream::connect(r.dir.path().join(SOCKET_NAME)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write_frame(&mut s, to_runner::CONTROL, b"").unwrap();
        Agent(s)
    }

    fn send(&mut self, kind: &str, payload: &str) {
        write_frame(&mut self.0, kind, payload.as_bytes()).unwrap();
    }

    /// Frames up to and including the first of `until`.
    fn until(&mut self, until: &[&str]) -> Vec<Frame> {
        let mut out = Vec::new();
        loop {
            let f = read_frame(&mut self.0)
                .unwrap()
                .expect("runner closed the connection");
            let last = until.contains(&f.kind.as_str());
            out.push(f);
            if last {
                return out;
            }
        }
    }

    /// Runs query-mode code; returns (stdout, stderr, exit code).
    fn run(&mut self, code: &str) -> (String, String, i64) {
        self.send(to_runner::CODE, code);
        split(&self.until(&[to_agent::FINISHED]))
    }
}

fn split(frames: &[Frame]) -> (String, String, i64) {
    let text = |k: &str| {
        frames
            .iter()
            .filter(|f| f.kind == k)
            .map(Frame::text)
            .collect::<String>()
    };
    let last: serde_json::Value = serde_json::from_str(&frames.last().unwrap().text()).unwrap();
    (
        text(to_agent::STDOUT),
        text(to_agent::STDERR),
        last["exitCode"].as_i64().unwrap_or(-1),
    )
}

#[test]
fn query_mode_keeps_interpreter_state_between_runs() {
    let r = start(0);
    let mut a = Agent::connect(&r);
    assert_eq!(a.run("x = 41"), (String::new(), String::new(), 0));
    assert_eq!(a.run("print(x + 1)").0, "42\n");
    assert_eq!(
        a.run("x * 2").0,
        "82\n",
        "the last expression is echoed as in a notebook"
    );
    let (_, err, code) = a.run("1/0");
    assert_eq!(code, 1);
    assert!(err.contains("ZeroDivisionError"), "{err}");
    // A new agent connection (an agent restart) finds the same interpreter.
    drop(a);
    let mut a = Agent::connect(&r);
    assert_eq!(a.run("print(x)").0, "41\n");
}

#[test]
fn stdout_and_stderr_arrive_in_order() {
    let r = start(0);
    let mut a = Agent::connect(&r);
    a.send(to_runner::CODE, "import sys\nfor i in range(3):\n    print('out', i)\n    print('err', i, file=sys.stderr)\n");
    let frames = a.until(&[to_agent::FINISHED]);
    // Merge consecutive frames of one kind, as the agent does.
    let mut seq: Vec<(String, String)> = Vec::new();
    for f in frames.iter().filter(|f| f.kind != to_agent::FINISHED) {
        match seq.last_mut() {
            Some((k, t)) if *k == f.kind => t.push_str(&f.text()),
            _ => seq.push((f.kind.clone(), f.text())),
        }
    }
    let seq: Vec<String> = seq
        .into_iter()
        .map(|(k, t)| format!("{k}:{}", t.trim()))
        .collect();
    assert_eq!(
        seq,
        [
            "stdout:out 0",
            "stderr:err 0",
            "stdout:out 1",
            "stderr:err 1",
            "stdout:out 2",
            "stderr:err 2"
        ]
    );
    // Output of child processes is captured too.
    assert_eq!(
        a.run("import os; os.system('echo from-child')").0,
        "from-child\n0\n"
    );
}

#[test]
fn input_round_trips_and_password_prompts_are_marked() {
    let r = start(0);
    let mut a = Agent::connect(&r);
    a.send(
        to_runner::CODE,
        "name = input('Name? ')\nprint('hello', name)",
    );
    let frames = a.until(&[to_agent::WAITING_INPUT]);
    assert_eq!(
        frames
            .iter()
            .find(|f| f.kind == to_agent::STDOUT)
            .map(Frame::text)
            .as_deref(),
        Some("Name? ")
    );
    assert_eq!(frames.last().unwrap().text(), r#"{"is_password":false}"#);
    a.send(to_runner::INPUT, "Lablup");
    let (out, _, code) = split(&a.until(&[to_agent::FINISHED]));
    assert_eq!((out.as_str(), code), ("hello Lablup\n", 0));
    a.send(
        to_runner::CODE,
        "import getpass\np = getpass.getpass()\nprint(len(p))",
    );
    assert_eq!(
        a.until(&[to_agent::WAITING_INPUT]).last().unwrap().text(),
        r#"{"is_password":true}"#
    );
    a.send(to_runner::INPUT, "secret");
    assert!(split(&a.until(&[to_agent::FINISHED])).0.ends_with("6\n"));
}

#[test]
fn interrupting_a_busy_loop_leaves_the_interpreter_usable() {
    let r = start(0);
    let mut a = Agent::connect(&r);
    a.run("state = 'kept'");
    a.send(to_runner::CODE, "while True: pass");
    std::thread::sleep(Duration::from_millis(300));
    a.send(to_runner::INTERRUPT, "");
    let (_, err, code) = split(&a.until(&[to_agent::FINISHED]));
    assert_eq!(code, 1);
    assert!(err.contains("KeyboardInterrupt"), "{err}");
    assert_eq!(a.run("print(state)").0, "kept\n");
}

#[test]
fn batch_mode_runs_clean_build_exec_with_exit_codes() {
    let r = start(0);
    let work = r.dir.path().join("work");
    std::fs::write(
        work.join("main.py"),
        "import sys\nprint('main ran')\nsys.exit(3)\n",
    )
    .unwrap();
    let mut a = Agent::connect(&r);
    a.send(to_runner::CLEAN, "");
    a.send(to_runner::BUILD, "echo building; echo warn >&2");
    a.send(to_runner::EXEC, "*");
    let clean = a.until(&[to_agent::CLEAN_FINISHED]);
    assert_eq!(clean.last().unwrap().text(), r#"{"exitCode":0}"#);
    let (out, err, code) = split(&a.until(&[to_agent::BUILD_FINISHED]));
    assert_eq!(
        (out.as_str(), err.as_str(), code),
        ("building\n", "warn\n", 0)
    );
    let (out, _, code) = split(&a.until(&[to_agent::FINISHED]));
    assert_eq!((out.as_str(), code), ("main ran\n", 3));
    // A failed build skips exec with 127.
    a.send(to_runner::CLEAN, "");
    a.send(to_runner::BUILD, "exit 2");
    a.send(to_runner::EXEC, "echo never");
    a.until(&[to_agent::CLEAN_FINISHED]);
    assert_eq!(split(&a.until(&[to_agent::BUILD_FINISHED])).2, 2);
    let (out, _, code) = split(&a.until(&[to_agent::FINISHED]));
    assert_eq!((out.as_str(), code), ("", 127));
    // Batch commands read input like query code.
    a.send(to_runner::CLEAN, "");
    a.send(to_runner::BUILD, "");
    a.send(to_runner::EXEC, "read line; echo got:$line");
    a.until(&[to_agent::BUILD_FINISHED]);
    std::thread::sleep(Duration::from_millis(200));
    a.send(to_runner::INPUT, "abc");
    assert_eq!(split(&a.until(&[to_agent::FINISHED])).0, "got:abc\n");
}

#[test]
fn runs_past_the_exec_timeout_are_stopped() {
    let r = start(1);
    let mut a = Agent::connect(&r);
    a.send(to_runner::EXEC, "sleep 30");
    let started = Instant::now();
    assert_eq!(
        a.until(&[to_agent::EXEC_TIMEOUT, to_agent::FINISHED])
            .last()
            .unwrap()
            .kind,
        to_agent::EXEC_TIMEOUT
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    a.send(to_runner::CODE, "import time; time.sleep(30)");
    assert_eq!(
        a.until(&[to_agent::EXEC_TIMEOUT, to_agent::FINISHED])
            .last()
            .unwrap()
            .kind,
        to_agent::EXEC_TIMEOUT
    );
    // A fresh interpreter takes over.
    assert_eq!(a.run("print('alive')").0, "alive\n");
}

#[test]
fn completion_and_status() {
    let r = start(0);
    let mut a = Agent::connect(&r);
    a.run("import collections\nmy_variable = 1");
    a.send(to_runner::COMPLETE, r#"{"code": "my_va"}"#);
    assert_eq!(
        a.until(&[to_agent::COMPLETION]).last().unwrap().text(),
        r#"["my_variable"]"#
    );
    a.send(to_runner::STATUS, "");
    let s: serde_json::Value =
        serde_json::from_str(&a.until(&[to_agent::STATUS]).last().unwrap().text()).unwrap();
    assert!(s["started_at"].as_f64().unwrap() > 1.0e9);
}

#[test]
fn services_start_once_and_are_reached_through_the_socket() {
    let r = start(0);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(r.dir.path().join("work/hello.txt"), "served file\n").unwrap();
    std::fs::write(
        r.dir.path().join("services/web.json"),
        r#"{"command": ["python3", "-m", "http.server", "--bind", "127.0.0.1", "{port}"]}"#,
    )
    .unwrap();
    let mut a = Agent::connect(&r);
    let req = format!(r#"{{"name": "web", "port": {port}, "protocol": "http"}}"#);
    a.send(to_runner::START_SERVICE, &req);
    assert_eq!(
        a.until(&[to_agent::SERVICE_RESULT]).last().unwrap().text(),
        r#"{"status":"started"}"#
    );
    a.send(to_runner::START_SERVICE, &req);
    assert_eq!(
        a.until(&[to_agent::SERVICE_RESULT]).last().unwrap().text(),
        r#"{"status":"running"}"#
    );
    a.send(to_runner::START_SERVICE, r#"{"name": "nope", "port": 1}"#);
    assert!(a
        .until(&[to_agent::SERVICE_RESULT])
        .last()
        .unwrap()
        .text()
        .contains("failed"));

    // A second connection becomes a byte stream to the service.
    use std::io::{Read, Write};
    let mut s = UnixStream::connect(r.dir.path().join(SOCKET_NAME)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write_frame(&mut s, to_runner::CONNECT, port.to_string().as_bytes()).unwrap();
    assert_eq!(read_frame(&mut s).unwrap().unwrap().text(), "{}");
    s.write_all(b"GET /hello.txt HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(
        body.starts_with("HTTP/1.0 200") && body.ends_with("served file\n"),
        "{body}"
    );
    // Nothing listening: a clear error instead of a stream.
    let mut s = UnixStream::connect(r.dir.path().join(SOCKET_NAME)).unwrap();
    write_frame(&mut s, to_runner::CONNECT, b"1").unwrap();
    assert!(read_frame(&mut s)
        .unwrap()
        .unwrap()
        .text()
        .contains("error"));
}

#[test]
fn help_and_version_answer_without_a_socket() {
    let out = Command::new(env!("CARGO_BIN_EXE_backend-ai-krunner"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("BACKENDAI_IPC_DIR"));
    assert!(Path::new(env!("CARGO_BIN_EXE_backend-ai-krunner")).exists());
}

#[test]
fn rich_output_arrives_as_media_and_html_in_order() {
    let r = start(0);
    let mut a = Agent::connect(&r);
    let code = "class Table:\n    def _repr_html_(self): return '<b>t</b>'\nclass Dot:\n    def _repr_png_(self): return b'PNG'\n\
                print('before')\ndisplay(Table(), Dot(), 7)\nprint('after')";
    a.send(to_runner::CODE, code);
    let frames = a.until(&[to_agent::FINISHED]);
    // JSON payloads compared as values: key order depends on serde_json's features.
    let kinds: Vec<(&str, serde_json::Value)> = frames
        .iter()
        .map(|f| {
            let v = match f.kind.as_str() {
                to_agent::MEDIA | to_agent::FINISHED => serde_json::from_slice(&f.payload).unwrap(),
                _ => serde_json::Value::String(f.text()),
            };
            (f.kind.as_str(), v)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("stdout", serde_json::json!("before\n")),
            ("html", serde_json::json!("<b>t</b>")),
            (
                "media",
                serde_json::json!({"type": "image/png", "data": "data:image/png;base64,UE5H"})
            ),
            ("stdout", serde_json::json!("7\n")),
            ("stdout", serde_json::json!("after\n")),
            ("finished", serde_json::json!({"exitCode": 0})),
        ]
    );
}
