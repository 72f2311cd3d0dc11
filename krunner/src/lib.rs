//! The agent ↔ runner protocol: frames over a Unix stream socket in the kernel's IPC
//! directory (`/opt/backend.ai/ipc/runner.sock` inside the container).
//!
//! A frame is `kind length (u8) | kind (ASCII) | payload length (u32, big endian) | payload`.
//! The kinds are the original runner's message types. A connection's first frame says what
//! it is for: `control` (commands and their outputs), `pty` (a terminal) or `connect` (a byte stream to
//! `127.0.0.1:PORT` inside the container, for service ports under network mode `none`).

use std::io::{self, Read, Write};

/// The largest payload either side accepts.
pub const MAX_PAYLOAD: usize = 16 << 20;

/// Where the runner listens, relative to the IPC directory.
pub const SOCKET_NAME: &str = "runner.sock";

/// Message kinds, agent → runner.
pub mod to_runner {
    pub const CONTROL: &str = "control";
    pub const CONNECT: &str = "connect";
    pub const CODE: &str = "code";
    pub const CLEAN: &str = "clean";
    pub const BUILD: &str = "build";
    pub const EXEC: &str = "exec";
    pub const INPUT: &str = "input";
    pub const INTERRUPT: &str = "interrupt";
    pub const COMPLETE: &str = "complete";
    pub const STATUS: &str = "status";
    pub const START_SERVICE: &str = "start-service";
    /// Opens a terminal: `{"rows", "cols"}`; then `stdin` and `resize` frames.
    pub const PTY: &str = "pty";
    /// Bytes for the terminal.
    pub const STDIN: &str = "stdin";
    /// `{"rows", "cols"}` of the terminal.
    pub const RESIZE: &str = "resize";
}

/// Message kinds, runner → agent.
pub mod to_agent {
    pub const STDOUT: &str = "stdout";
    pub const STDERR: &str = "stderr";
    pub const MEDIA: &str = "media";
    pub const HTML: &str = "html";
    pub const FINISHED: &str = "finished";
    pub const CLEAN_FINISHED: &str = "clean-finished";
    pub const BUILD_FINISHED: &str = "build-finished";
    pub const WAITING_INPUT: &str = "waiting-input";
    pub const EXEC_TIMEOUT: &str = "exec-timeout";
    pub const COMPLETION: &str = "completion";
    pub const SERVICE_RESULT: &str = "service-result";
    pub const STATUS: &str = "status";
    pub const CONNECTED: &str = "connected";
    /// The terminal's shell ended.
    pub const EXIT: &str = "exit";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: String,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: &str, payload: impl Into<Vec<u8>>) -> Frame {
        Frame {
            kind: kind.to_owned(),
            payload: payload.into(),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// Encodes a frame into bytes (for writers that are not `Write`, e.g. async sockets).
pub fn encode(kind: &str, payload: &[u8]) -> io::Result<Vec<u8>> {
    if kind.is_empty() || kind.len() > 255 || !kind.is_ascii() {
        return Err(invalid("frame kinds are 1..=255 ASCII bytes"));
    }
    if payload.len() > MAX_PAYLOAD {
        return Err(invalid("frame payload too large"));
    }
    let mut out = Vec::with_capacity(5 + kind.len() + payload.len());
    out.push(kind.len() as u8);
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

pub fn write_frame(w: &mut impl Write, kind: &str, payload: &[u8]) -> io::Result<()> {
    w.write_all(&encode(kind, payload)?)?;
    w.flush()
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut len = [0u8; 1];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if len[0] == 0 {
        return Err(invalid("empty frame kind"));
    }
    let mut kind = vec![0u8; usize::from(len[0])];
    r.read_exact(&mut kind)?;
    let kind = String::from_utf8(kind).map_err(|_| invalid("frame kind is not ASCII"))?;
    let mut plen = [0u8; 4];
    r.read_exact(&mut plen)?;
    let plen = u32::from_be_bytes(plen) as usize;
    if plen > MAX_PAYLOAD {
        return Err(invalid("frame payload too large"));
    }
    let mut payload = vec![0u8; plen];
    r.read_exact(&mut payload)?;
    Ok(Some(Frame { kind, payload }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, "stdout", b"hello\n").unwrap();
        write_frame(&mut buf, "finished", br#"{"exitCode":0}"#).unwrap();
        let mut r = &buf[..];
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some(Frame::new("stdout", b"hello\n".to_vec()))
        );
        assert_eq!(
            read_frame(&mut r).unwrap().unwrap().text(),
            r#"{"exitCode":0}"#
        );
        assert_eq!(read_frame(&mut r).unwrap(), None);
        assert!(encode("", b"").is_err());
        let mut huge = vec![1u8, b'x'];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(read_frame(&mut &huge[..]).is_err());
        assert!(
            read_frame(&mut &[3u8, b'a'][..]).is_err(),
            "truncated frames are errors"
        );
    }
}
