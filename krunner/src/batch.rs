//! Batch mode: clean, build and exec commands, run with `sh -c` in the work directory in
//! their own process group (so an interrupt or a timeout reaches everything they started).
//! `*` means the language's heuristics (`lang.rs`). An exec after a failed build is not run.
//! Compiled query-mode snippets run through the same job machinery.

use crate::proc::{self, Sink, TICK};
use crate::{lock, Runner, Running};
use backend_ai_krunner::{to_agent, to_runner};
use serde_json::json;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct JobSink(Arc<Runner>);

impl Sink for JobSink {
    fn output(&self, kind: &'static str, data: &[u8]) {
        self.0.emit(kind, data);
    }
    fn event(&self, _: &str, _: &[u8]) {}
    fn events_closed(&self) {}
}

impl Runner {
    pub(crate) fn run_batch(
        self: &Arc<Self>,
        kind: &'static str,
        command: &str,
        build_failed: &mut bool,
    ) {
        self.stdin_asked.store(false, Ordering::SeqCst);
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
            "*" => {
                let lang = self.cfg.lang;
                let heuristic = match kind {
                    to_runner::CLEAN => lang.clean,
                    to_runner::BUILD => lang.build,
                    _ => lang.exec,
                };
                match heuristic(&self.cfg.runtime, &self.cfg.workdir) {
                    Ok(c) => c,
                    Err(why) => {
                        self.emit(
                            to_agent::STDERR,
                            format!("{} {kind}: {why}\n", lang.name).as_bytes(),
                        );
                        if kind == to_runner::BUILD {
                            *build_failed = true;
                        }
                        self.emit_json(done_kind, json!({"exitCode": 127}));
                        return;
                    }
                }
            }
            c => c.to_owned(),
        };
        if command.is_empty() {
            self.emit_json(done_kind, json!({"exitCode": 0}));
            return;
        }
        let code = self.run_job(done_kind, &command);
        if kind == to_runner::BUILD {
            *build_failed = code != Some(0);
        }
    }

    /// Runs `command` with `sh -c`, sends its output and then `done_kind` with its exit
    /// code (or `exec-timeout`). Returns the exit code.
    pub(crate) fn run_job(self: &Arc<Self>, done_kind: &str, command: &str) -> Option<i32> {
        let spawned = Command::new("/bin/sh")
            .args(["-c", command])
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
                return Some(127);
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let reader = proc::pump(
            Arc::new(JobSink(self.clone())),
            child.stdout.take().map(OwnedFd::from),
            child.stderr.take().map(OwnedFd::from),
            None,
            stop.clone(),
        );
        let pgid = child.id();
        *lock(&self.running) = Running::Job {
            pgid,
            stdin: child.stdin.take(),
        };
        let deadline = self.cfg.exec_timeout.map(|t| Instant::now() + t);
        let mut last_check = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    // SAFETY: signalling our own child's process group.
                    unsafe { libc::kill(-(pgid as i32), libc::SIGKILL) };
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => {
                    std::thread::sleep(Duration::from_millis(5));
                    if last_check.elapsed() >= TICK {
                        last_check = Instant::now();
                        if let Running::Job { stdin, .. } = &*lock(&self.running) {
                            self.check_stdin(pgid, stdin.as_ref());
                        }
                    }
                }
                Err(_) => break None,
            }
        };
        *lock(&self.running) = Running::Idle;
        // The output ends when the pipes close; a background process still holding them
        // gets a moment, then is left behind.
        let grace = Instant::now() + Duration::from_millis(500);
        while !reader.is_finished() && Instant::now() < grace {
            std::thread::sleep(Duration::from_millis(2));
        }
        stop.store(true, Ordering::Relaxed);
        let _ = reader.join();
        match status {
            Some(s) => {
                let code = s.code().unwrap_or_else(|| {
                    128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)
                });
                self.emit_json(done_kind, json!({"exitCode": code}));
                Some(code)
            }
            None => {
                self.emit_json(to_agent::EXEC_TIMEOUT, json!({}));
                None
            }
        }
    }
}
