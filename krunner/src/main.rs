//! backend-ai-krunner: the process inside every kernel container.
//!
//! It listens on `runner.sock` in the IPC directory the agent bind-mounts, runs query-mode
//! code in a persistent Python interpreter (state survives between runs), runs batch-mode
//! clean/build/exec commands with `sh -c`, answers input/interrupt/completion/status, starts
//! the image's declared services, runs terminals (a shell on a pseudo-terminal), and relays
//! byte streams to `127.0.0.1:PORT` so services
//! work without any container network. Tasks (code, clean, build, exec) run one at a time.
//!
//! Settings come from the environment: `BACKENDAI_IPC_DIR` (default `/opt/backend.ai/ipc`),
//! `BACKENDAI_RUNTIME_PATH` (default `python3`), `BACKENDAI_WORKDIR` (default `/home/work`),
//! `BACKENDAI_EXEC_TIMEOUT` (seconds, 0 = none), `BACKENDAI_SERVICE_DEFS` (default
//! `/etc/backend.ai/service-defs`, one `NAME.json` with `{"command": [...]}` per service).

use backend_ai_krunner::{read_frame, to_agent, to_runner, write_frame, Frame, SOCKET_NAME};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DRIVER: &str = include_str!("driver.py");

struct Config {
    ipc_dir: PathBuf,
    python: String,
    workdir: PathBuf,
    exec_timeout: Option<Duration>,
    service_defs: PathBuf,
}

impl Config {
    fn from_env() -> Config {
        let var = |k: &str, d: &str| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| d.to_owned())
        };
        let timeout: u64 = var("BACKENDAI_EXEC_TIMEOUT", "0").parse().unwrap_or(0);
        Config {
            ipc_dir: PathBuf::from(var("BACKENDAI_IPC_DIR", "/opt/backend.ai/ipc")),
            python: var("BACKENDAI_RUNTIME_PATH", "python3"),
            workdir: PathBuf::from(var("BACKENDAI_WORKDIR", "/home/work")),
            exec_timeout: (timeout > 0).then(|| Duration::from_secs(timeout)),
            service_defs: PathBuf::from(var(
                "BACKENDAI_SERVICE_DEFS",
                "/etc/backend.ai/service-defs",
            )),
        }
    }
}

/// What the task thread is doing, so input and interrupts reach it.
enum Running {
    Idle,
    Query {
        pid: u32,
    },
    Batch {
        pgid: u32,
        stdin: Option<ChildStdin>,
    },
}

enum Task {
    Code(String),
    Batch { kind: &'static str, command: String },
}

/// Events from the Python driver that the task thread or a completion request waits for.
enum DriverEvent {
    Done(i32),
    Completion(Vec<String>),
    Exited,
}

struct Driver {
    child: Child,
    cmd: std::io::PipeWriter,
    /// Waited on without holding the driver itself, so input can reach the interpreter
    /// while a run is being waited for.
    events: Arc<Mutex<Receiver<DriverEvent>>>,
}

struct Runner {
    cfg: Config,
    agent: Mutex<Option<UnixStream>>,
    running: Mutex<Running>,
    driver: Mutex<Option<Driver>>,
    services: Mutex<HashMap<String, Child>>,
    started_at: f64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn log(msg: &str) {
    eprintln!("krunner: {msg}");
}

impl Runner {
    /// Sends an output frame to the connected agent; without one it is dropped.
    fn emit(&self, kind: &str, payload: &[u8]) {
        let mut agent = lock(&self.agent);
        if let Some(stream) = agent.as_mut() {
            if write_frame(stream, kind, payload).is_err() {
                *agent = None;
            }
        }
    }

    fn emit_json(&self, kind: &str, v: Value) {
        self.emit(kind, v.to_string().as_bytes());
    }

    /// Starts the persistent interpreter if it is not running.
    fn ensure_driver(self: &Arc<Self>) -> std::io::Result<()> {
        let mut slot = lock(&self.driver);
        if let Some(d) = slot.as_mut() {
            if matches!(d.child.try_wait(), Ok(None)) {
                return Ok(());
            }
        }
        let (cmd_r, cmd_w) = std::io::pipe()?;
        let (ev_r, ev_w) = std::io::pipe()?;
        let (cmd_fd, ev_fd) = (
            std::os::fd::AsRawFd::as_raw_fd(&cmd_r),
            std::os::fd::AsRawFd::as_raw_fd(&ev_w),
        );
        let mut command = Command::new(&self.cfg.python);
        command
            .args(["-u", "-c", DRIVER])
            .current_dir(&self.cfg.workdir)
            .env("BACKENDAI_WORKDIR", &self.cfg.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe dup2 calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(cmd_fd, 3) < 0 || libc::dup2(ev_fd, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn()?;
        drop(cmd_r);
        drop(ev_w);
        for (pipe, kind) in [
            (
                child
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn Read + Send>),
                to_agent::STDOUT,
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn Read + Send>),
                to_agent::STDERR,
            ),
        ] {
            if let Some(p) = pipe {
                self.pump(p, kind);
            }
        }
        let (tx, rx) = mpsc::channel();
        let me = self.clone();
        std::thread::spawn(move || me.driver_events(ev_r, tx));
        *slot = Some(Driver {
            child,
            cmd: cmd_w,
            events: Arc::new(Mutex::new(rx)),
        });
        Ok(())
    }

    /// Forwards raw output of a pipe as frames until it closes.
    fn pump(
        self: &Arc<Self>,
        mut pipe: Box<dyn Read + Send>,
        kind: &'static str,
    ) -> std::thread::JoinHandle<()> {
        let me = self.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => me.emit(kind, &buf[..n]),
                }
            }
        })
    }

    fn driver_events(self: Arc<Self>, pipe: std::io::PipeReader, tx: Sender<DriverEvent>) {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            match msg["t"].as_str() {
                Some("out") => {
                    let kind = if msg["s"] == "stderr" {
                        to_agent::STDERR
                    } else {
                        to_agent::STDOUT
                    };
                    self.emit(kind, msg["d"].as_str().unwrap_or("").as_bytes());
                }
                Some("media") => self.emit_json(
                    to_agent::MEDIA,
                    json!({"type": msg["mime"], "data": msg["data"]}),
                ),
                Some("html") => {
                    self.emit(to_agent::HTML, msg["d"].as_str().unwrap_or("").as_bytes())
                }
                Some("waiting-input") => self.emit_json(
                    to_agent::WAITING_INPUT,
                    json!({"is_password": msg["is_password"]}),
                ),
                Some("done") => {
                    let _ = tx.send(DriverEvent::Done(
                        msg["exitCode"].as_i64().unwrap_or(1) as i32
                    ));
                }
                Some("completion") => {
                    let items = msg["items"].as_array().map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    });
                    let _ = tx.send(DriverEvent::Completion(items.unwrap_or_default()));
                }
                _ => {}
            }
        }
        let _ = tx.send(DriverEvent::Exited);
    }

    fn driver_send(&self, msg: Value) -> bool {
        let mut slot = lock(&self.driver);
        match slot.as_mut() {
            Some(d) => writeln!(d.cmd, "{msg}").and_then(|_| d.cmd.flush()).is_ok(),
            None => false,
        }
    }

    /// The running interpreter's event queue.
    fn event_queue(&self) -> Option<Arc<Mutex<Receiver<DriverEvent>>>> {
        lock(&self.driver).as_ref().map(|d| d.events.clone())
    }

    /// Waits for the driver's answer to a run, honouring the exec timeout.
    fn wait_done(&self, deadline: Option<Instant>) -> Result<i32, &'static str> {
        loop {
            // The driver's lock is not held while waiting: `input` needs it to answer the
            // interpreter's input() during the run.
            let Some(events) = self.event_queue() else {
                return Err("exited");
            };
            let wait = deadline
                .map(|dl| dl.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_millis(200));
            let event = lock(&events).recv_timeout(wait.min(Duration::from_millis(200)));
            match event {
                Ok(DriverEvent::Done(code)) => return Ok(code),
                Ok(DriverEvent::Completion(_)) => continue,
                Ok(DriverEvent::Exited) | Err(RecvTimeoutError::Disconnected) => {
                    return Err("exited")
                }
                Err(RecvTimeoutError::Timeout) => {
                    if deadline.is_some_and(|dl| Instant::now() >= dl) {
                        return Err("timeout");
                    }
                }
            }
        }
    }

    fn run_code(self: &Arc<Self>, code: &str) {
        if let Err(e) = self.ensure_driver() {
            self.emit(
                to_agent::STDERR,
                format!("cannot start {}: {e}\n", self.cfg.python).as_bytes(),
            );
            self.emit_json(to_agent::FINISHED, json!({"exitCode": 127}));
            return;
        }
        let pid = lock(&self.driver)
            .as_ref()
            .map(|d| d.child.id())
            .unwrap_or(0);
        *lock(&self.running) = Running::Query { pid };
        let deadline = self.cfg.exec_timeout.map(|t| Instant::now() + t);
        let result = if self.driver_send(json!({"op": "run", "code": code})) {
            self.wait_done(deadline)
        } else {
            Err("exited")
        };
        *lock(&self.running) = Running::Idle;
        // Let output still in the pipes reach the agent before the end marker.
        std::thread::sleep(Duration::from_millis(10));
        match result {
            Ok(code) => self.emit_json(to_agent::FINISHED, json!({"exitCode": code})),
            Err("timeout") => {
                self.kill_driver();
                self.emit_json(to_agent::EXEC_TIMEOUT, json!({}));
            }
            Err(_) => {
                // The interpreter exited (e.g. `exit()`); the next run starts a fresh one.
                let code = self.kill_driver();
                self.emit_json(to_agent::FINISHED, json!({"exitCode": code}));
            }
        }
    }

    /// Stops the interpreter; returns its exit code (128 + N when a signal ended it, which
    /// it reports on stderr: SIGKILL from outside is usually the memory limit).
    fn kill_driver(&self) -> i32 {
        let Some(mut d) = lock(&self.driver).take() else {
            return 1;
        };
        let status = match d.child.try_wait().ok().flatten() {
            Some(s) => s,
            None => {
                let _ = d.child.kill();
                return d.child.wait().ok().and_then(|s| s.code()).unwrap_or(137);
            }
        };
        match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(code), _) => code,
            (None, Some(sig)) => {
                let why = if sig == libc::SIGKILL {
                    " (out of memory?)"
                } else {
                    ""
                };
                self.emit(
                    to_agent::STDERR,
                    format!("the interpreter was killed by signal {sig}{why}\n").as_bytes(),
                );
                128 + sig
            }
            (None, None) => 1,
        }
    }

    fn run_batch(self: &Arc<Self>, kind: &'static str, command: &str, build_failed: &mut bool) {
        let done_kind = match kind {
            to_runner::CLEAN => to_agent::CLEAN_FINISHED,
            to_runner::BUILD => to_agent::BUILD_FINISHED,
            _ => to_agent::FINISHED,
        };
        if kind == to_runner::EXEC && *build_failed {
            self.emit_json(done_kind, json!({"exitCode": 127}));
            return;
        }
        let command = match command.trim() {
            "*" => self.heuristic(kind),
            c => c.to_owned(),
        };
        if command.is_empty() {
            self.emit_json(done_kind, json!({"exitCode": 0}));
            return;
        }
        let spawned = Command::new("/bin/sh")
            .args(["-c", &command])
            .current_dir(&self.cfg.workdir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                self.emit(
                    to_agent::STDERR,
                    format!("cannot run the command: {e}\n").as_bytes(),
                );
                self.emit_json(done_kind, json!({"exitCode": 127}));
                return;
            }
        };
        let readers: Vec<_> = [
            child
                .stdout
                .take()
                .map(|p| (Box::new(p) as Box<dyn Read + Send>, to_agent::STDOUT)),
            child
                .stderr
                .take()
                .map(|p| (Box::new(p) as Box<dyn Read + Send>, to_agent::STDERR)),
        ]
        .into_iter()
        .flatten()
        .map(|(p, k)| self.pump(p, k))
        .collect();
        *lock(&self.running) = Running::Batch {
            pgid: child.id(),
            stdin: child.stdin.take(),
        };
        let deadline = self.cfg.exec_timeout.map(|t| Instant::now() + t);
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    // SAFETY: signalling our own child's process group.
                    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => break None,
            }
        };
        *lock(&self.running) = Running::Idle;
        for r in readers {
            let _ = r.join();
        }
        match status {
            Some(s) => {
                let code = s.code().unwrap_or_else(|| {
                    128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)
                });
                if kind == to_runner::BUILD {
                    *build_failed = code != 0;
                }
                self.emit_json(done_kind, json!({"exitCode": code}));
            }
            None => self.emit_json(to_agent::EXEC_TIMEOUT, json!({})),
        }
    }

    /// What `*` means for each batch step.
    fn heuristic(&self, kind: &str) -> String {
        let has = |f: &str| self.cfg.workdir.join(f).is_file();
        match kind {
            to_runner::BUILD if has("Makefile") => "make".into(),
            to_runner::EXEC if has("main.py") => format!("{} main.py", self.cfg.python),
            to_runner::EXEC => "echo 'no main.py to run' >&2; exit 127".into(),
            _ => String::new(),
        }
    }

    fn interrupt(&self) {
        match &*lock(&self.running) {
            // SAFETY: signalling processes this runner started.
            Running::Query { pid } => unsafe {
                libc::kill(*pid as i32, libc::SIGINT);
            },
            Running::Batch { pgid, .. } => unsafe {
                libc::kill(-(*pgid as i32), libc::SIGINT);
            },
            Running::Idle => {}
        }
    }

    fn input(&self, text: &str) {
        let mut running = lock(&self.running);
        match &mut *running {
            Running::Query { .. } => {
                drop(running);
                self.driver_send(json!({"op": "input", "text": text}));
            }
            Running::Batch {
                stdin: Some(stdin), ..
            } => {
                let _ = stdin.write_all(format!("{text}\n").as_bytes());
            }
            _ => {}
        }
    }

    /// Completions from the interpreter, or none when it is busy running code.
    fn complete(self: &Arc<Self>, payload: &str) {
        let req: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
        let text = req["code"]
            .as_str()
            .or_else(|| req["text"].as_str())
            .unwrap_or("")
            .to_owned();
        let idle = matches!(*lock(&self.running), Running::Idle);
        let mut items = Vec::new();
        if idle
            && self.ensure_driver().is_ok()
            && self.driver_send(json!({"op": "complete", "text": text}))
        {
            if let Some(events) = self.event_queue() {
                if let Ok(DriverEvent::Completion(i)) =
                    lock(&events).recv_timeout(Duration::from_secs(2))
                {
                    items = i;
                }
            }
        }
        self.emit_json(to_agent::COMPLETION, json!(items));
    }

    fn start_service(&self, payload: &str) {
        let req: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
        let name = req["name"].as_str().unwrap_or("");
        let port = req["port"].as_u64().unwrap_or(0);
        let result = self.start_service_inner(name, port);
        self.emit_json(to_agent::SERVICE_RESULT, result);
    }

    fn start_service_inner(&self, name: &str, port: u64) -> Value {
        let failed = |e: String| json!({"status": "failed", "error": e});
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return failed(format!("invalid service name '{name}'"));
        }
        let mut services = lock(&self.services);
        if let Some(child) = services.get_mut(name) {
            if matches!(child.try_wait(), Ok(None)) {
                return json!({"status": "running"});
            }
        }
        let def_path = self.cfg.service_defs.join(format!("{name}.json"));
        let def: Value = match std::fs::read_to_string(&def_path).map(|t| serde_json::from_str(&t))
        {
            Ok(Ok(v)) => v,
            _ => return failed(format!("no service definition {}", def_path.display())),
        };
        let argv: Vec<String> = def["command"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str())
                    .map(|s| s.replace("{port}", &port.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let Some((prog, args)) = argv.split_first() else {
            return failed("the service definition has no command".into());
        };
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .current_dir(&self.cfg.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        if let Some(env) = def["env"].as_object() {
            for (k, v) in env {
                cmd.env(k, v.as_str().unwrap_or_default());
            }
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return failed(format!("cannot start {prog}: {e}")),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port as u16)).is_ok() {
                services.insert(name.to_owned(), child);
                return json!({"status": "started"});
            }
            if let Ok(Some(s)) = child.try_wait() {
                return failed(format!("{name} exited with {s}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        failed(format!("{name} did not listen on port {port} within 10 s"))
    }

    fn control(self: &Arc<Self>, mut stream: UnixStream, tasks: &Sender<Task>) {
        match stream.try_clone() {
            Ok(out) => *lock(&self.agent) = Some(out),
            Err(e) => return log(&format!("cannot use the control connection: {e}")),
        }
        loop {
            let frame = match read_frame(&mut stream) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    log(&format!("control connection: {e}"));
                    break;
                }
            };
            let Frame { kind, .. } = &frame;
            match kind.as_str() {
                to_runner::CODE => {
                    let _ = tasks.send(Task::Code(frame.text()));
                }
                to_runner::CLEAN | to_runner::BUILD | to_runner::EXEC => {
                    let kind = match kind.as_str() {
                        to_runner::CLEAN => to_runner::CLEAN,
                        to_runner::BUILD => to_runner::BUILD,
                        _ => to_runner::EXEC,
                    };
                    let _ = tasks.send(Task::Batch {
                        kind,
                        command: frame.text(),
                    });
                }
                to_runner::INPUT => self.input(&frame.text()),
                to_runner::INTERRUPT => self.interrupt(),
                to_runner::COMPLETE => self.complete(&frame.text()),
                to_runner::STATUS => {
                    self.emit_json(to_agent::STATUS, json!({"started_at": self.started_at}))
                }
                to_runner::START_SERVICE => self.start_service(&frame.text()),
                other => log(&format!("ignoring unknown message kind '{other}'")),
            }
        }
    }
}

/// Relays bytes between an agent connection and `127.0.0.1:port` inside the container.
fn proxy(mut agent: UnixStream, port: &str) {
    let target = port
        .trim()
        .parse::<u16>()
        .map_err(|e| e.to_string())
        .and_then(|p| TcpStream::connect(("127.0.0.1", p)).map_err(|e| e.to_string()));
    let tcp = match target {
        Ok(t) => t,
        Err(e) => {
            let _ = write_frame(
                &mut agent,
                to_agent::CONNECTED,
                json!({"error": e}).to_string().as_bytes(),
            );
            return;
        }
    };
    if write_frame(&mut agent, to_agent::CONNECTED, b"{}").is_err() {
        return;
    }
    let (Ok(mut a2), Ok(mut t2)) = (agent.try_clone(), tcp.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a2, &mut t2);
        let _ = t2.shutdown(std::net::Shutdown::Write);
    });
    let mut tcp = tcp;
    let _ = std::io::copy(&mut tcp, &mut agent);
    let _ = agent.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

/// A terminal: a login shell on a new pseudo-terminal, its output sent as `stdout` frames
/// (then `exit` when it ends), `stdin` and `resize` frames from the agent applied to it.
/// The shell is hung up when the agent goes away.
fn pty(mut agent: UnixStream, params: &str, workdir: &std::path::Path) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let size = |v: &Value| libc::winsize {
        ws_row: v["rows"].as_u64().unwrap_or(24).clamp(1, 1000) as u16,
        ws_col: v["cols"].as_u64().unwrap_or(80).clamp(1, 1000) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let fail = |agent: &mut UnixStream, e: String| {
        let _ = write_frame(
            agent,
            to_agent::CONNECTED,
            json!({"error": e}).to_string().as_bytes(),
        );
    };
    let ws = size(&serde_json::from_str(params).unwrap_or(Value::Null));
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two descriptors we then own; the pointers are valid.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    if rc != 0 {
        return fail(
            &mut agent,
            format!("openpty: {}", std::io::Error::last_os_error()),
        );
    }
    // SAFETY: both descriptors were just opened and nothing else owns them.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let shell = ["/bin/bash", "/bin/sh"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("/bin/sh");
    let stdio = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
    let (Ok(i), Ok(o), Ok(e)) = (stdio(&slave), stdio(&slave), stdio(&slave)) else {
        return fail(&mut agent, "cannot duplicate the terminal".into());
    };
    let mut cmd = Command::new(shell);
    cmd.current_dir(workdir)
        .env("TERM", "xterm-256color")
        .stdin(i)
        .stdout(o)
        .stderr(e);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(&mut agent, format!("cannot start {shell}: {e}")),
    };
    drop(slave);
    let (Ok(mut out_agent), Ok(reader)) = (agent.try_clone(), master.try_clone()) else {
        let _ = child.kill();
        return;
    };
    if write_frame(&mut agent, to_agent::CONNECTED, b"{}").is_err() {
        let _ = child.kill();
        return;
    }
    let output = std::thread::spawn(move || {
        let mut reader = std::fs::File::from(reader);
        let mut buf = [0u8; 8192];
        // The master reads EIO once the shell (and everything on the terminal) is gone.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || write_frame(&mut out_agent, to_agent::STDOUT, &buf[..n]).is_err() {
                break;
            }
        }
        let _ = write_frame(&mut out_agent, to_agent::EXIT, b"{}");
        let _ = out_agent.shutdown(std::net::Shutdown::Write);
    });
    let fd = master.as_raw_fd();
    let mut writer = std::fs::File::from(master);
    while let Ok(Some(f)) = read_frame(&mut agent) {
        match f.kind.as_str() {
            to_runner::STDIN if writer.write_all(&f.payload).is_err() => break,
            to_runner::RESIZE => {
                let ws = size(&serde_json::from_slice(&f.payload).unwrap_or(Value::Null));
                // SAFETY: fd is the open master; ws is a valid winsize.
                unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
            }
            _ => {}
        }
    }
    // SAFETY: signalling the shell's own process group (it is a session leader).
    unsafe { libc::kill(-(child.id() as i32), libc::SIGHUP) };
    let _ = child.kill();
    let _ = child.wait();
    drop(writer);
    let _ = output.join();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "backend-ai-krunner {}: the kernel runner inside Backend.AI containers.\n\n\
             Listens on $BACKENDAI_IPC_DIR/runner.sock (default /opt/backend.ai/ipc) for the agent.\n\
             Environment: BACKENDAI_RUNTIME_PATH (python3), BACKENDAI_WORKDIR (/home/work),\n\
             BACKENDAI_EXEC_TIMEOUT (seconds, 0 = none), BACKENDAI_SERVICE_DEFS (/etc/backend.ai/service-defs).",
            env!("CARGO_PKG_VERSION")
        );
        return;
    }
    if args.iter().any(|a| a == "--version" || a == "-V") {
        println!("backend-ai-krunner {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    let cfg = Config::from_env();
    let sock = cfg.ipc_dir.join(SOCKET_NAME);
    let _ = std::fs::remove_file(&sock);
    let listener = match UnixListener::bind(&sock) {
        Ok(l) => l,
        Err(e) => {
            log(&format!("cannot listen on {}: {e}", sock.display()));
            std::process::exit(1);
        }
    };
    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let runner = Arc::new(Runner {
        cfg,
        agent: Mutex::new(None),
        running: Mutex::new(Running::Idle),
        driver: Mutex::new(None),
        services: Mutex::new(HashMap::new()),
        started_at,
    });
    // Start the interpreter now so the first run does not wait for it.
    if let Err(e) = runner.ensure_driver() {
        log(&format!("cannot start {}: {e}", runner.cfg.python));
    }
    let (tasks_tx, tasks_rx) = mpsc::channel::<Task>();
    let worker = runner.clone();
    std::thread::spawn(move || {
        let mut build_failed = false;
        for task in tasks_rx {
            match task {
                Task::Code(code) => worker.run_code(&code),
                Task::Batch { kind, command } => {
                    if kind == to_runner::CLEAN {
                        build_failed = false;
                    }
                    worker.run_batch(kind, &command, &mut build_failed)
                }
            }
        }
    });
    log(&format!("listening on {}", sock.display()));
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let (runner, tasks) = (runner.clone(), tasks_tx.clone());
        std::thread::spawn(move || match read_frame(&mut conn) {
            Ok(Some(f)) if f.kind == to_runner::CONTROL => runner.control(conn, &tasks),
            Ok(Some(f)) if f.kind == to_runner::CONNECT => proxy(conn, &f.text()),
            Ok(Some(f)) if f.kind == to_runner::PTY => pty(conn, &f.text(), &runner.cfg.workdir),
            _ => {}
        });
    }
}
