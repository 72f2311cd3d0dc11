//! Terminals: a login shell on a new pseudo-terminal, driven over a `pty` connection.

use backend_ai_krunner::{read_frame, to_agent, to_runner, write_frame};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// A terminal: a login shell on a new pseudo-terminal, its output sent as `stdout` frames
/// (then `exit` when it ends), `stdin` and `resize` frames from the agent applied to it.
/// The shell is hung up when the agent goes away.
pub fn pty(mut agent: UnixStream, params: &str, workdir: &std::path::Path) {
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
