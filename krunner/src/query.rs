//! Query mode: code snippets.
//!
//! Interpreted languages run every snippet in one long-lived interpreter per kernel, started
//! with a small driver written in that language (`src/drivers/`). The driver and the runner
//! talk over two extra pipes, in frames of `KIND LEN\n` followed by LEN bytes:
//! - runner → driver on fd 3: `run` (the code), `input` (a line the user typed, answering a
//!   `waiting-input` the driver sent), `complete` (the text to complete);
//! - driver → runner on fd 4: `stdout`/`stderr` (output the driver captured in-language),
//!   `media` (`MIME\nDATA`), `html`, `waiting-input` (`1` for a password), `done` (the exit
//!   code), `completion` (one candidate a line), `feed` (a line to write to the
//!   interpreter's stdin, for an interpreter whose prompt must resume the driver), `ready`.
//!
//! Output the interpreter writes to its real stdout/stderr is read from those pipes by the
//! same thread that reads the events (`proc::pump`), so a run's output always precedes its
//! `finished`. Programs that read their real stdin get the user's input the same way in
//! every language: the runner sees a process blocked reading fd 0, asks for input, and writes
//! the answer to that pipe. An interrupt is SIGINT to the interpreter's process group; each
//! driver turns it into an error for the snippet and keeps the interpreter.
//!
//! Compiled languages (and the `git` shell) write the snippet into a private directory and
//! run the language's compile-and-run command there as a batch job (`batch.rs`).

use crate::lang::Query;
use crate::proc::{self, Sink, TICK};
use crate::{lock, log, Runner, Running};
use backend_ai_krunner::to_agent;
use serde_json::{json, Value};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Events from the driver that the task thread or a completion request waits for.
pub(crate) enum DriverEvent {
    Done(i32),
    Completion(Vec<String>),
    Exited,
}

pub(crate) struct Interp {
    child: Child,
    cmd: std::io::PipeWriter,
    stdin: Option<ChildStdin>,
    /// Waited on without holding the interpreter itself, so input can reach it while a run
    /// is being waited for.
    events: Arc<Mutex<Receiver<DriverEvent>>>,
    stop: Arc<AtomicBool>,
}

/// Where the pump delivers an interpreter's output and events.
struct InterpSink {
    runner: Arc<Runner>,
    tx: Mutex<Sender<DriverEvent>>,
}

impl Sink for InterpSink {
    fn output(&self, kind: &'static str, data: &[u8]) {
        self.runner.emit(kind, data);
    }

    fn event(&self, kind: &str, payload: &[u8]) {
        let text = || String::from_utf8_lossy(payload).into_owned();
        match kind {
            "stdout" => self.runner.emit(to_agent::STDOUT, payload),
            "stderr" => self.runner.emit(to_agent::STDERR, payload),
            "media" => {
                let t = text();
                let (mime, data) = t.split_once('\n').unwrap_or(("text/plain", &t));
                self.runner
                    .emit_json(to_agent::MEDIA, json!({"type": mime, "data": data}));
            }
            "html" => self.runner.emit(to_agent::HTML, payload),
            // A line for the interpreter's own prompt (Octave resumes its driver this way
            // after an interrupt).
            "feed" => {
                if let Some(stdin) = lock(&self.runner.interp)
                    .as_mut()
                    .and_then(|d| d.stdin.as_mut())
                {
                    let mut line = payload.to_vec();
                    line.push(b'\n');
                    let _ = stdin.write_all(&line);
                }
            }
            "waiting-input" => {
                self.runner.driver_waiting.store(true, Ordering::SeqCst);
                self.runner.emit_json(
                    to_agent::WAITING_INPUT,
                    json!({"is_password": payload == b"1"}),
                );
            }
            "done" => {
                let code = text().trim().parse().unwrap_or(1);
                let _ = lock(&self.tx).send(DriverEvent::Done(code));
            }
            "completion" => {
                let items = text()
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect();
                let _ = lock(&self.tx).send(DriverEvent::Completion(items));
            }
            _ => {}
        }
    }

    fn events_closed(&self) {
        let _ = lock(&self.tx).send(DriverEvent::Exited);
    }
}

fn frame(op: &str, payload: &str) -> Vec<u8> {
    let mut out = format!("{op} {}\n", payload.len()).into_bytes();
    out.extend_from_slice(payload.as_bytes());
    out
}

impl Runner {
    /// Starts the interpreter if the language has one and it is not running.
    pub(crate) fn ensure_interp(self: &Arc<Self>) -> std::io::Result<()> {
        let Query::Interpreted { driver, ext, argv } = &self.cfg.lang.query else {
            return Ok(());
        };
        let mut slot = lock(&self.interp);
        if let Some(d) = slot.as_mut() {
            if matches!(d.child.try_wait(), Ok(None)) {
                return Ok(());
            }
        }
        // The driver lives in the IPC directory: always there and writable, whatever the
        // image's file system allows.
        let path = self.cfg.ipc_dir.join(format!("driver.{ext}"));
        std::fs::write(&path, driver)?;
        let (cmd_r, cmd_w) = std::io::pipe()?;
        let (ev_r, ev_w) = std::io::pipe()?;
        let (cmd_fd, ev_fd) = (
            std::os::fd::AsRawFd::as_raw_fd(&cmd_r),
            std::os::fd::AsRawFd::as_raw_fd(&ev_w),
        );
        let args = argv(&self.cfg.runtime, &path);
        let Some((prog, rest)) = args.split_first() else {
            return Err(std::io::Error::other("empty interpreter command"));
        };
        let mut command = Command::new(prog);
        command
            .args(rest)
            .current_dir(&self.cfg.workdir)
            .env("BACKENDAI_WORKDIR", &self.cfg.workdir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
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
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let sink = Arc::new(InterpSink {
            runner: self.clone(),
            tx: Mutex::new(tx),
        });
        proc::pump(
            sink,
            child.stdout.take().map(OwnedFd::from),
            child.stderr.take().map(OwnedFd::from),
            Some(OwnedFd::from(ev_r)),
            stop.clone(),
        );
        *slot = Some(Interp {
            stdin: child.stdin.take(),
            child,
            cmd: cmd_w,
            events: Arc::new(Mutex::new(rx)),
            stop,
        });
        Ok(())
    }

    fn driver_send(&self, op: &str, payload: &str) -> bool {
        let mut slot = lock(&self.interp);
        match slot.as_mut() {
            Some(d) => d
                .cmd
                .write_all(&frame(op, payload))
                .and_then(|_| d.cmd.flush())
                .is_ok(),
            None => false,
        }
    }

    /// The running interpreter's event queue.
    fn event_queue(&self) -> Option<Arc<Mutex<Receiver<DriverEvent>>>> {
        lock(&self.interp).as_ref().map(|d| d.events.clone())
    }

    /// Asks the user for input when a process of `pgid` is blocked reading an empty stdin
    /// pipe (once per wait).
    pub(crate) fn check_stdin(&self, pgid: u32, stdin: Option<&ChildStdin>) {
        if self.stdin_asked.load(Ordering::SeqCst) || self.driver_waiting.load(Ordering::SeqCst) {
            return;
        }
        let Some(stdin) = stdin else { return };
        let Some(ino) = proc::pipe_inode(stdin) else {
            return;
        };
        if proc::unread_bytes(stdin) == 0 && proc::reading_pipe(&proc::group_members(pgid), ino) {
            self.stdin_asked.store(true, Ordering::SeqCst);
            self.emit_json(to_agent::WAITING_INPUT, json!({"is_password": false}));
        }
    }

    /// Waits for the driver's answer to a run, honouring the exec timeout.
    fn wait_done(&self, pgid: u32, deadline: Option<Instant>) -> Result<i32, &'static str> {
        loop {
            // The interpreter's lock is not held while waiting: `input` needs it to answer
            // the program's reads during the run.
            let Some(events) = self.event_queue() else {
                return Err("exited");
            };
            let event = lock(&events).recv_timeout(TICK);
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
                    let interp = lock(&self.interp);
                    self.check_stdin(pgid, interp.as_ref().and_then(|d| d.stdin.as_ref()));
                }
            }
        }
    }

    pub(crate) fn run_code(self: &Arc<Self>, code: &str) {
        self.stdin_asked.store(false, Ordering::SeqCst);
        self.driver_waiting.store(false, Ordering::SeqCst);
        if let Query::Compiled { script } = &self.cfg.lang.query {
            return self.run_compiled(*script, code);
        }
        if let Err(e) = self.ensure_interp() {
            self.emit(
                to_agent::STDERR,
                format!("cannot start {}: {e}\n", self.cfg.runtime).as_bytes(),
            );
            self.emit_json(to_agent::FINISHED, json!({"exitCode": 127}));
            return;
        }
        let pgid = lock(&self.interp)
            .as_ref()
            .map(|d| d.child.id())
            .unwrap_or(0);
        *lock(&self.running) = Running::Interp { pgid };
        let deadline = self.cfg.exec_timeout.map(|t| Instant::now() + t);
        let result = if self.driver_send("run", code) {
            self.wait_done(pgid, deadline)
        } else {
            Err("exited")
        };
        *lock(&self.running) = Running::Idle;
        match result {
            Ok(code) => self.emit_json(to_agent::FINISHED, json!({"exitCode": code})),
            Err("timeout") => {
                self.kill_interp(Duration::ZERO);
                self.emit_json(to_agent::EXEC_TIMEOUT, json!({}));
            }
            Err(_) => {
                // The interpreter exited (e.g. `exit()`, or the memory limit killed it): its
                // pipe closed first, so give it a moment to be reaped with its real status.
                // The next run starts a fresh one.
                let code = self.kill_interp(Duration::from_secs(2));
                self.emit_json(to_agent::FINISHED, json!({"exitCode": code}));
            }
        }
    }

    /// Compiles and runs a snippet of a compiled language in a private directory.
    fn run_compiled(
        self: &Arc<Self>,
        script: fn(&str, &std::path::Path, &str) -> std::io::Result<String>,
        code: &str,
    ) {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "backend.ai-query-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let command =
            std::fs::create_dir_all(&dir).and_then(|_| script(&self.cfg.runtime, &dir, code));
        match command {
            Ok(command) => {
                self.run_job(to_agent::FINISHED, &command);
            }
            Err(e) => {
                self.emit(
                    to_agent::STDERR,
                    format!("cannot write the snippet to {}: {e}\n", dir.display()).as_bytes(),
                );
                self.emit_json(to_agent::FINISHED, json!({"exitCode": 127}));
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Stops the interpreter, after waiting up to `grace` for it to end by itself; returns
    /// its exit code (128 + N when a signal ended it, which it reports on stderr: SIGKILL
    /// from outside is usually the memory limit).
    fn kill_interp(&self, grace: Duration) -> i32 {
        let Some(mut d) = lock(&self.interp).take() else {
            return 1;
        };
        let until = Instant::now() + grace;
        let mut ended = d.child.try_wait().ok().flatten();
        while ended.is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
            ended = d.child.try_wait().ok().flatten();
        }
        let status = match ended {
            Some(s) => s,
            None => {
                // SAFETY: signalling the interpreter's own process group.
                unsafe { libc::kill(-(d.child.id() as i32), libc::SIGKILL) };
                let code = d.child.wait().ok().and_then(|s| s.code()).unwrap_or(137);
                d.stop.store(true, Ordering::Relaxed);
                return code;
            }
        };
        d.stop.store(true, Ordering::Relaxed);
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

    pub(crate) fn interrupt(&self) {
        let pgid = match &*lock(&self.running) {
            Running::Interp { pgid } | Running::Job { pgid, .. } => *pgid,
            Running::Idle => return,
        };
        // SAFETY: signalling a process group this runner started.
        unsafe { libc::kill(-(pgid as i32), libc::SIGINT) };
    }

    pub(crate) fn input(&self, text: &str) {
        let line = format!("{text}\n");
        let mut running = lock(&self.running);
        match &mut *running {
            Running::Interp { .. } => {
                drop(running);
                if self.driver_waiting.swap(false, Ordering::SeqCst) {
                    self.driver_send("input", text);
                } else if let Some(stdin) =
                    lock(&self.interp).as_mut().and_then(|d| d.stdin.as_mut())
                {
                    let _ = stdin.write_all(line.as_bytes());
                    self.stdin_asked.store(false, Ordering::SeqCst);
                }
            }
            Running::Job {
                stdin: Some(stdin), ..
            } => {
                let _ = stdin.write_all(line.as_bytes());
                self.stdin_asked.store(false, Ordering::SeqCst);
            }
            _ => {}
        }
    }

    /// Completions from the interpreter, or none when it is busy running code or the
    /// language has no interpreter.
    pub(crate) fn complete(self: &Arc<Self>, payload: &str) {
        let req: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
        let text = req["code"]
            .as_str()
            .or_else(|| req["text"].as_str())
            .unwrap_or("")
            .to_owned();
        let idle = matches!(*lock(&self.running), Running::Idle);
        let interpreted = matches!(self.cfg.lang.query, Query::Interpreted { .. });
        let mut items = Vec::new();
        if idle
            && interpreted
            && self.ensure_interp().is_ok()
            && self.driver_send("complete", &text)
        {
            if let Some(events) = self.event_queue() {
                let deadline = Instant::now() + Duration::from_secs(2);
                while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                    match lock(&events).recv_timeout(left) {
                        Ok(DriverEvent::Completion(i)) => {
                            items = i;
                            break;
                        }
                        Ok(DriverEvent::Done(_)) => continue,
                        Ok(DriverEvent::Exited) | Err(_) => {
                            log("no completion from the interpreter");
                            break;
                        }
                    }
                }
            }
        }
        self.emit_json(to_agent::COMPLETION, json!(items));
    }
}
