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
    while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
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

/// System call numbers that wait on a file descriptor.
#[cfg(target_arch = "x86_64")]
mod nr {
    pub const READS: &[u64] = &[0, 17, 19]; // read, pread64, readv
    pub const POLLS: &[u64] = &[7, 271]; // poll, ppoll
    pub const EPOLLS: &[u64] = &[232, 281, 441]; // epoll_wait, epoll_pwait, epoll_pwait2
}
#[cfg(target_arch = "aarch64")]
mod nr {
    pub const READS: &[u64] = &[63, 65, 67]; // read, readv, pread64
    pub const POLLS: &[u64] = &[73]; // ppoll
    pub const EPOLLS: &[u64] = &[22, 441]; // epoll_pwait, epoll_pwait2
}
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod nr {
    pub const READS: &[u64] = &[];
    pub const POLLS: &[u64] = &[];
    pub const EPOLLS: &[u64] = &[];
}

/// Whether a thread of one of `pids` is blocked waiting for input on the pipe with inode
/// `pipe` (the stdin the runner gave it), i.e. waiting for the user: reading it under any
/// descriptor (R reopens it as /dev/stdin), or polling it (poll/ppoll, or epoll as the GHC
/// and other runtimes' I/O managers do).
pub fn reading_pipe(pids: &[u32], pipe: u64) -> bool {
    let target = format!("pipe:[{pipe}]");
    let is_pipe = |pid: u32, fd: u64| {
        std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .is_ok_and(|l| l.to_string_lossy() == target)
    };
    pids.iter().any(|&pid| {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.flatten().any(|t| {
            let Ok(s) = std::fs::read_to_string(t.path().join("syscall")) else {
                return false;
            };
            let mut f = s.split_whitespace();
            let num = |x: Option<&str>| {
                x.and_then(|x| u64::from_str_radix(x.trim_start_matches("0x"), 16).ok())
            };
            let (Some(call), Some(a0), a1) = (
                f.next().and_then(|x| x.parse::<u64>().ok()),
                num(f.next()),
                num(f.next()),
            ) else {
                return false;
            };
            if nr::READS.contains(&call) {
                is_pipe(pid, a0)
            } else if nr::POLLS.contains(&call) {
                polled_fds(pid, a0, a1.unwrap_or(0))
                    .into_iter()
                    .any(|fd| is_pipe(pid, fd))
            } else if nr::EPOLLS.contains(&call) {
                epoll_fds(pid, a0).into_iter().any(|fd| is_pipe(pid, fd))
            } else {
                false
            }
        })
    })
}

/// The descriptors a poll(2) call waits to read: its `struct pollfd` array, read from the
/// process's memory.
fn polled_fds(pid: u32, addr: u64, n: u64) -> Vec<u64> {
    use std::io::{Seek, SeekFrom};
    if n == 0 || n > 1024 {
        return Vec::new();
    }
    let mut buf = vec![0u8; (n * 8) as usize];
    let read = std::fs::File::open(format!("/proc/{pid}/mem")).and_then(|mut f| {
        f.seek(SeekFrom::Start(addr))?;
        f.read_exact(&mut buf)
    });
    if read.is_err() {
        return Vec::new();
    }
    buf.chunks_exact(8)
        .filter_map(|c| {
            let fd = i32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
            let events = i16::from_ne_bytes([c[4], c[5]]);
            (fd >= 0 && events & libc::POLLIN != 0).then_some(fd as u64)
        })
        .collect()
}

/// The descriptors an epoll instance watches for input (from /proc/PID/fdinfo).
fn epoll_fds(pid: u32, epfd: u64) -> Vec<u64> {
    let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{epfd}")) else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            if w.next() != Some("tfd:") {
                return None;
            }
            let fd = w.next()?.parse::<u64>().ok()?;
            if w.next() != Some("events:") {
                return None;
            }
            let events = u32::from_str_radix(w.next()?, 16).ok()?;
            (events & libc::EPOLLIN as u32 != 0).then_some(fd)
        })
        .collect()
}

/// The inode of a pipe (both of its ends share it).
pub fn pipe_inode(fd: &impl AsRawFd) -> Option<u64> {
    // SAFETY: fstat fills the zeroed stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0).then_some(st.st_ino)
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
        assert_eq!(
            take_frames(&mut buf),
            vec![("media".to_owned(), b"abcde".to_vec())]
        );
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
        let ino = pipe_inode(child.stdin.as_ref().unwrap()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !reading_pipe(&group_members(pgid), ino) {
            assert!(std::time::Instant::now() < deadline, "never seen reading");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hi\n").unwrap();
        drop(stdin);
        assert!(child.wait().unwrap().success());
    }
}
