//! Process plumbing shared by query and batch mode: one thread that reads a child's stdout,
//! stderr and (for interpreters) the driver's event pipe, so output reaches the agent in the
//! order it was written and every byte written before a run's end is sent before the end
//! marker; and the check for "a process is blocked reading its stdin", which is how the
//! runner knows to ask the user for input in any language.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Receives what the pump reads.
pub trait Sink: Send + Sync + 'static {
    fn output(&self, kind: &'static str, data: &[u8]);
    /// A complete driver frame (kind, payload), after all output read before it was sent.
    fn event(&self, kind: &str, payload: &[u8]);
    /// The event pipe closed (the interpreter is gone).
    fn events_closed(&self);
}

fn set_nonblocking(fd: &OwnedFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// Reads what is there now without blocking; `false` at end of file.
fn drain(fd: &mut Option<OwnedFd>, kind: &'static str, sink: &dyn Sink, buf: &mut [u8]) -> bool {
    let Some(f) = fd.as_ref() else { return false };
    let mut file = match f.try_clone() {
        Ok(f) => std::fs::File::from(f),
        Err(_) => return false,
    };
    loop {
        match file.read(buf) {
            Ok(0) => {
                *fd = None;
                return false;
            }
            Ok(n) => sink.output(kind, &buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                *fd = None;
                return false;
            }
        }
    }
}

/// Splits complete frames (`KIND LEN\n` + LEN bytes) off the front of `buf`.
pub fn take_frames(buf: &mut Vec<u8>) -> Vec<(String, Vec<u8>)> {
    let mut frames = Vec::new();
    loop {
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            break;
        };
        let header = String::from_utf8_lossy(&buf[..nl]).into_owned();
        let mut parts = header.split_whitespace();
        let kind = parts.next().unwrap_or("").to_owned();
        let len: usize = match parts.next().map(str::parse) {
            Some(Ok(n)) => n,
            // A line that is no frame header (stray output on the event pipe): skipped.
            _ => {
                buf.drain(..=nl);
                continue;
            }
        };
        if buf.len() < nl + 1 + len {
            break;
        }
        let payload = buf[nl + 1..nl + 1 + len].to_vec();
        buf.drain(..nl + 1 + len);
        frames.push((kind, payload));
    }
    frames
}

/// Starts the reader thread. It ends when stdout and stderr are closed (and the event pipe,
/// when there is one), or soon after `stop` is set.
pub fn pump(
    sink: Arc<dyn Sink>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    events: Option<OwnedFd>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (mut out, mut err, mut ev) = (stdout, stderr, events);
        for f in [&out, &err, &ev].into_iter().flatten() {
            set_nonblocking(f);
        }
        let mut buf = vec![0u8; 65536];
        let mut pending = Vec::new();
        loop {
            if out.is_none() && err.is_none() && ev.is_none() {
                break;
            }
            let mut fds: Vec<libc::pollfd> = [&out, &err, &ev]
                .iter()
                .map(|f| libc::pollfd {
                    fd: f.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: fds is a valid array of pollfd; negative fds are ignored by poll.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
            if stop.load(Ordering::Relaxed) {
                drain(&mut out, "stdout", &*sink, &mut buf);
                drain(&mut err, "stderr", &*sink, &mut buf);
                break;
            }
            if n <= 0 {
                continue;
            }
            if fds[0].revents != 0 {
                drain(&mut out, "stdout", &*sink, &mut buf);
            }
            if fds[1].revents != 0 {
                drain(&mut err, "stderr", &*sink, &mut buf);
            }
            if fds[2].revents != 0 {
                let closed = match ev.as_ref().and_then(|f| f.try_clone().ok()) {
                    Some(f) => {
                        let mut file = std::fs::File::from(f);
                        let mut closed = false;
                        loop {
                            match file.read(&mut buf) {
                                Ok(0) => {
                                    closed = true;
                                    break;
                                }
                                Ok(n) => pending.extend_from_slice(&buf[..n]),
                                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                                Err(_) => {
                                    closed = true;
                                    break;
                                }
                            }
                        }
                        closed
                    }
                    None => true,
                };
                let frames = take_frames(&mut pending);
                if !frames.is_empty() || closed {
                    // Whatever the interpreter wrote before this event is in the pipes
                    // already: send it first.
                    drain(&mut out, "stdout", &*sink, &mut buf);
                    drain(&mut err, "stderr", &*sink, &mut buf);
                }
                for (kind, payload) in frames {
                    sink.event(&kind, &payload);
                }
                if closed {
                    ev = None;
                    sink.events_closed();
                }
            }
        }
    })
}

/// The processes of a process group (read from /proc).
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    // Fields after the command name: state, ppid, pgrp.
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(2)?.parse::<u32>().ok()
                })
                == Some(pgid)
        })
        .collect()
}

/// Whether a thread of one of `pids` is blocked reading file descriptor 0 (read, readv or
/// pread64 on x86-64 and read/readv on aarch64), i.e. waiting for the user's input.
pub fn reading_stdin(pids: &[u32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    const READS: &[&str] = &["0", "17", "19"];
    #[cfg(target_arch = "aarch64")]
    const READS: &[&str] = &["63", "65", "67"];
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    const READS: &[&str] = &[];
    pids.iter().any(|pid| {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.flatten().any(|t| {
            std::fs::read_to_string(t.path().join("syscall")).is_ok_and(|s| {
                let mut f = s.split_whitespace();
                matches!((f.next(), f.next()), (Some(nr), Some("0x0")) if READS.contains(&nr))
            })
        })
    })
}

/// Bytes written to a pipe and not yet read by the other side.
pub fn unread_bytes(fd: &impl AsRawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc == 0 {
        n.max(0) as usize
    } else {
        0
    }
}

/// How often a running task checks for a timeout and for a process waiting on its stdin.
pub const TICK: Duration = Duration::from_millis(40);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_whole_and_partial_ones_wait() {
        let mut buf = b"stdout 3\nabcdone 1\n0stray line\nmedia 5\nab".to_vec();
        let frames = take_frames(&mut buf);
        assert_eq!(
            frames,
            vec![
                ("stdout".to_owned(), b"abc".to_vec()),
                ("done".to_owned(), b"0".to_vec())
            ]
        );
        assert_eq!(buf, b"media 5\nab");
        buf.extend_from_slice(b"cde");
        assert_eq!(take_frames(&mut buf), vec![("media".to_owned(), b"abcde".to_vec())]);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_child_blocked_on_its_stdin_is_seen() {
        use std::io::Write;
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read x; echo $x"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !reading_stdin(&group_members(pgid)) {
            assert!(std::time::Instant::now() < deadline, "never seen reading");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hi\n").unwrap();
        drop(stdin);
        assert!(child.wait().unwrap().success());
    }
}
