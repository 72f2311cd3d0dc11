//! The agent's side of the runner protocol: one control connection per kernel, and the
//! original's execute semantics on top of it (run ids, `continue` polling with a flush
//! timeout, merged console records, terminal statuses).

use super::AgentError;
use backend_ai_krunner::{encode, to_agent, to_runner, Frame, MAX_PAYLOAD};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Mutex};

/// Output records buffered per kernel before further ones are dropped (as the original).
const OUTPUT_QUEUE: usize = 4096;

/// Reads one frame asynchronously; `Ok(None)` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Frame>> {
    let klen = match r.read_u8().await {
        Ok(n) => usize::from(n),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    if klen == 0 {
        return Err(bad("empty frame kind"));
    }
    let mut kind = vec![0u8; klen];
    r.read_exact(&mut kind).await?;
    let plen = r.read_u32().await? as usize;
    if plen > MAX_PAYLOAD {
        return Err(bad("frame payload too large"));
    }
    let mut payload = vec![0u8; plen];
    r.read_exact(&mut payload).await?;
    let kind = String::from_utf8(kind).map_err(|_| bad("frame kind is not ASCII"))?;
    Ok(Some(Frame { kind, payload }))
}

/// The result of one `execute` call, in the original's shape.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExecResult {
    #[serde(rename = "runId")]
    pub run_id: String,
    pub status: String,
    #[serde(rename = "exitCode")]
    pub exit_code: Option<i64>,
    pub options: Option<Value>,
    pub console: Vec<(String, Value)>,
    pub files: Vec<Value>,
}

/// Decodes UTF-8 that may be split across frames.
#[derive(Default)]
struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        match std::str::from_utf8(&self.pending) {
            Ok(s) => {
                let out = s.to_owned();
                self.pending.clear();
                out
            }
            Err(e) if e.error_len().is_none() => {
                // An incomplete character at the end waits for the next chunk.
                let valid = e.valid_up_to();
                let out = String::from_utf8_lossy(&self.pending[..valid]).into_owned();
                self.pending.drain(..valid);
                out
            }
            Err(_) => String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned(),
        }
    }
}

pub struct RunnerClient {
    writer: Mutex<OwnedWriteHalf>,
    /// Held for the whole of one `execute`, so runs do not interleave their outputs.
    outputs: Mutex<mpsc::Receiver<Frame>>,
    completions: Mutex<mpsc::Receiver<Frame>>,
    services: Mutex<mpsc::Receiver<Frame>>,
    current_run: Mutex<Option<String>>,
}

impl RunnerClient {
    /// Connects to the runner's socket, waiting up to `timeout` for it to appear.
    pub async fn connect(sock: &Path, timeout: Duration) -> Result<RunnerClient, AgentError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(sock).await {
                Ok(s) => break s,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(AgentError::Timeout(format!(
                        "the kernel runner did not start ({e})"
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let (mut read, mut write) = stream.into_split();
        let hello =
            encode(to_runner::CONTROL, b"").map_err(|e| AgentError::Failure(e.to_string()))?;
        write
            .write_all(&hello)
            .await
            .map_err(|e| AgentError::Failure(format!("runner: {e}")))?;
        let (out_tx, out_rx) = mpsc::channel(OUTPUT_QUEUE);
        let (comp_tx, comp_rx) = mpsc::channel(16);
        let (svc_tx, svc_rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(Some(frame)) = read_frame(&mut read).await {
                match frame.kind.as_str() {
                    to_agent::COMPLETION => {
                        let _ = comp_tx.try_send(frame);
                    }
                    to_agent::SERVICE_RESULT => {
                        let _ = svc_tx.try_send(frame);
                    }
                    to_agent::STATUS => {}
                    _ => {
                        let _ = out_tx.try_send(frame);
                    }
                }
            }
        });
        Ok(RunnerClient {
            writer: Mutex::new(write),
            outputs: Mutex::new(out_rx),
            completions: Mutex::new(comp_rx),
            services: Mutex::new(svc_rx),
            current_run: Mutex::new(None),
        })
    }

    async fn send(&self, kind: &str, payload: &[u8]) -> Result<(), AgentError> {
        let bytes = encode(kind, payload).map_err(|e| AgentError::InvalidInput(e.to_string()))?;
        self.writer
            .lock()
            .await
            .write_all(&bytes)
            .await
            .map_err(|e| AgentError::Failure(format!("the kernel runner is gone: {e}")))
    }

    /// Runs or continues code. `mode`: `query`, `batch` (opts `clean`/`build`/`exec`),
    /// `input` (code = the text), `continue`. Collects output until a terminal status or
    /// `flush_timeout` (then status `continued`).
    pub async fn execute(
        &self,
        run_id: Option<String>,
        mode: &str,
        code: &str,
        opts: &Value,
        flush_timeout: Option<Duration>,
    ) -> Result<ExecResult, AgentError> {
        let mut outputs = self.outputs.lock().await;
        let run_id = {
            let mut current = self.current_run.lock().await;
            let id = match (mode, run_id) {
                ("query" | "batch", Some(id)) => id,
                ("query" | "batch", None) => uuid::Uuid::new_v4().simple().to_string(),
                (_, Some(id)) => {
                    if current.as_deref() != Some(id.as_str()) {
                        return Err(AgentError::InvalidInput(format!("no run {id} to {mode}")));
                    }
                    id
                }
                (_, None) => {
                    return Err(AgentError::InvalidInput(format!(
                        "mode {mode} needs a runId"
                    )))
                }
            };
            *current = Some(id.clone());
            id
        };
        match mode {
            "query" => self.send(to_runner::CODE, code.as_bytes()).await?,
            "batch" => {
                for (kind, key) in [
                    (to_runner::CLEAN, "clean"),
                    (to_runner::BUILD, "build"),
                    (to_runner::EXEC, "exec"),
                ] {
                    self.send(kind, opts[key].as_str().unwrap_or("").as_bytes())
                        .await?;
                }
            }
            "input" => self.send(to_runner::INPUT, code.as_bytes()).await?,
            "continue" => {}
            other => {
                return Err(AgentError::InvalidInput(format!(
                    "unknown execution mode '{other}'"
                )))
            }
        }
        let mut result = ExecResult {
            run_id,
            status: "continued".into(),
            exit_code: None,
            options: None,
            console: Vec::new(),
            files: Vec::new(),
        };
        let (mut out_text, mut err_text) = (Utf8Stream::default(), Utf8Stream::default());
        let deadline = flush_timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let frame = match deadline {
                Some(d) => match tokio::time::timeout_at(d, outputs.recv()).await {
                    Ok(f) => f,
                    Err(_) => break,
                },
                None => outputs.recv().await,
            };
            let Some(frame) = frame else {
                return Err(AgentError::Failure(
                    "the kernel runner closed the connection".into(),
                ));
            };
            let payload_json =
                || serde_json::from_slice::<Value>(&frame.payload).unwrap_or(Value::Null);
            match frame.kind.as_str() {
                to_agent::STDOUT => {
                    push_console(&mut result.console, "stdout", out_text.push(&frame.payload))
                }
                to_agent::STDERR => {
                    push_console(&mut result.console, "stderr", err_text.push(&frame.payload))
                }
                to_agent::MEDIA => result
                    .console
                    .push(("media".into(), media(&payload_json()))),
                to_agent::HTML => result
                    .console
                    .push(("html".into(), Value::String(frame.text()))),
                to_agent::WAITING_INPUT => {
                    result.status = "waiting-input".into();
                    result.options = Some(payload_json());
                    break;
                }
                kind @ (to_agent::FINISHED
                | to_agent::CLEAN_FINISHED
                | to_agent::BUILD_FINISHED) => {
                    result.status = kind.to_owned();
                    result.exit_code = payload_json()["exitCode"].as_i64();
                    break;
                }
                to_agent::EXEC_TIMEOUT => {
                    result.status = "exec-timeout".into();
                    break;
                }
                _ => {}
            }
        }
        if matches!(result.status.as_str(), "finished" | "exec-timeout") {
            *self.current_run.lock().await = None;
        }
        Ok(result)
    }

    pub async fn interrupt(&self) -> Result<(), AgentError> {
        self.send(to_runner::INTERRUPT, b"").await
    }

    pub async fn complete(&self, code: &str, opts: &Value) -> Result<Vec<String>, AgentError> {
        let mut rx = self.completions.lock().await;
        let mut req = opts.clone();
        if !req.is_object() {
            req = json!({});
        }
        req["code"] = Value::String(code.to_owned());
        self.send(to_runner::COMPLETE, req.to_string().as_bytes())
            .await?;
        let frame = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .map_err(|_| AgentError::Timeout("completion took too long".into()))?
            .ok_or_else(|| AgentError::Failure("the kernel runner closed the connection".into()))?;
        Ok(serde_json::from_slice(&frame.payload).unwrap_or_default())
    }

    pub async fn start_service(
        &self,
        name: &str,
        port: u16,
        protocol: &str,
    ) -> Result<Value, AgentError> {
        let mut rx = self.services.lock().await;
        let req = json!({"name": name, "port": port, "protocol": protocol, "options": {}});
        self.send(to_runner::START_SERVICE, req.to_string().as_bytes())
            .await?;
        let frame = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .map_err(|_| AgentError::Timeout(format!("service {name} did not start in 30 s")))?
            .ok_or_else(|| AgentError::Failure("the kernel runner closed the connection".into()))?;
        Ok(serde_json::from_slice(&frame.payload).unwrap_or(Value::Null))
    }
}

/// Appends text, merging with a preceding record of the same stream.
fn push_console(console: &mut Vec<(String, Value)>, kind: &str, text: String) {
    if text.is_empty() {
        return;
    }
    if let Some((k, Value::String(prev))) = console.last_mut() {
        if k == kind {
            prev.push_str(&text);
            return;
        }
    }
    console.push((kind.to_owned(), Value::String(text)));
}

fn media(v: &Value) -> Value {
    json!([
        v["type"].as_str().unwrap_or("application/octet-stream"),
        v["data"].clone()
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_chunks_is_joined() {
        let mut s = Utf8Stream::default();
        let bytes = "héllo".as_bytes();
        assert_eq!(s.push(&bytes[..2]), "h");
        assert_eq!(s.push(&bytes[2..]), "éllo");
        assert_eq!(s.push(&[0xff, b'a']), "\u{fffd}a");
    }

    #[test]
    fn console_merges_consecutive_records_of_one_stream() {
        let mut c = Vec::new();
        push_console(&mut c, "stdout", "a".into());
        push_console(&mut c, "stdout", "b".into());
        push_console(&mut c, "stderr", "c".into());
        push_console(&mut c, "stdout", "d".into());
        assert_eq!(
            c,
            vec![
                ("stdout".into(), json!("ab")),
                ("stderr".into(), json!("c")),
                ("stdout".into(), json!("d"))
            ]
        );
    }
}
