//! backend-ai-krunner: the process inside every kernel container.
//!
//! It listens on `runner.sock` in the IPC directory the agent bind-mounts and serves four
//! kinds of work, one module each:
//! - query mode (`query.rs`): code snippets, run in a long-lived interpreter for interpreted
//!   languages (state survives between runs) or compiled and run for compiled ones;
//! - batch mode (`batch.rs`): clean/build/exec commands, `*` meaning the language's
//!   heuristics (`lang.rs`);
//! - terminals (`pty.rs`): a shell on a pseudo-terminal;
//! - services (`service.rs`): starting the image's declared services and relaying byte
//!   streams to `127.0.0.1:PORT`, so services work without any container network.
//!
//! Tasks (code, clean, build, exec) run one at a time; input, interrupts, completion and
//! status are answered while one runs. Settings come from the environment:
//! `BACKENDAI_IPC_DIR` (default `/opt/backend.ai/ipc`), `BACKENDAI_RUNTIME_TYPE` (the
//! image's `ai.backend.runtime-type`, default `python`), `BACKENDAI_RUNTIME_PATH` (default:
//! the language's interpreter or compiler), `BACKENDAI_WORKDIR` (default `/home/work`),
//! `BACKENDAI_EXEC_TIMEOUT` (seconds, 0 = none), `BACKENDAI_SERVICE_DEFS` (default
//! `/etc/backend.ai/service-defs`, one `NAME.json` with `{"command": [...]}` per service).

mod batch;
mod lang;
mod proc;
mod pty;
mod query;
mod service;

use backend_ai_krunner::{read_frame, to_agent, to_runner, write_frame, Frame, SOCKET_NAME};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) struct Config {
    ipc_dir: PathBuf,
    lang: &'static lang::Language,
    runtime: String,
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
        let lang = lang::find(&var("BACKENDAI_RUNTIME_TYPE", "python"));
        Config {
            ipc_dir: PathBuf::from(var("BACKENDAI_IPC_DIR", "/opt/backend.ai/ipc")),
            lang,
            runtime: var("BACKENDAI_RUNTIME_PATH", lang.default_runtime),
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
pub(crate) enum Running {
    Idle,
    /// The interpreter is running a snippet.
    Interp {
        pgid: u32,
    },
    /// A shell command (batch step or compiled snippet) in its own process group.
    Job {
        pgid: u32,
        stdin: Option<ChildStdin>,
    },
}

enum Task {
    Code(String),
    Batch { kind: &'static str, command: String },
}

pub(crate) struct Runner {
    cfg: Config,
    agent: Mutex<Option<UnixStream>>,
    running: Mutex<Running>,
    interp: Mutex<Option<query::Interp>>,
    /// The driver asked for input through its own protocol (it answers `input` ops).
    driver_waiting: AtomicBool,
    /// `waiting-input` was sent for a process blocked on its stdin; cleared by input.
    stdin_asked: AtomicBool,
    services: Mutex<HashMap<String, Child>>,
    started_at: f64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn log(msg: &str) {
    eprintln!("krunner: {msg}");
}

impl Runner {
    /// Sends an output frame to the connected agent; without one it is dropped.
    pub(crate) fn emit(&self, kind: &str, payload: &[u8]) {
        let mut agent = lock(&self.agent);
        if let Some(stream) = agent.as_mut() {
            if write_frame(stream, kind, payload).is_err() {
                *agent = None;
            }
        }
    }

    pub(crate) fn emit_json(&self, kind: &str, v: Value) {
        self.emit(kind, v.to_string().as_bytes());
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        let types: Vec<&str> = lang::LANGUAGES.iter().map(|l| l.name).collect();
        println!(
            "backend-ai-krunner {}: the kernel runner inside Backend.AI containers.\n\n\
             Listens on $BACKENDAI_IPC_DIR/runner.sock (default /opt/backend.ai/ipc) for the agent.\n\
             Environment: BACKENDAI_RUNTIME_TYPE (python; one of {}),\n\
             BACKENDAI_RUNTIME_PATH (the language's interpreter or compiler), BACKENDAI_WORKDIR (/home/work),\n\
             BACKENDAI_EXEC_TIMEOUT (seconds, 0 = none), BACKENDAI_SERVICE_DEFS (/etc/backend.ai/service-defs).",
            env!("CARGO_PKG_VERSION"),
            types.join(", ")
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
        interp: Mutex::new(None),
        driver_waiting: AtomicBool::new(false),
        stdin_asked: AtomicBool::new(false),
        services: Mutex::new(HashMap::new()),
        started_at,
    });
    // Start the interpreter now so the first run does not wait for it.
    if let Err(e) = runner.ensure_interp() {
        log(&format!("cannot start {}: {e}", runner.cfg.runtime));
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
    log(&format!(
        "listening on {} ({} runtime {})",
        sock.display(),
        runner.cfg.lang.name,
        runner.cfg.runtime
    ));
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let (runner, tasks) = (runner.clone(), tasks_tx.clone());
        std::thread::spawn(move || match read_frame(&mut conn) {
            Ok(Some(f)) if f.kind == to_runner::CONTROL => runner.control(conn, &tasks),
            Ok(Some(f)) if f.kind == to_runner::CONNECT => service::proxy(conn, &f.text()),
            Ok(Some(f)) if f.kind == to_runner::PTY => {
                pty::pty(conn, &f.text(), &runner.cfg.workdir)
            }
            _ => {}
        });
    }
}
