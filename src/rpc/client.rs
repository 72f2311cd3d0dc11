//! The manager's client for an agent's RPC, with the original's per-call deadlines and
//! errors mapped back to [`AgentError`].

use super::pb::agent_client::AgentClient as Raw;
use super::pb::*;
use super::{convert, TOKEN_HEADER};
use crate::agent::runner::ExecResult;
use crate::agent::AgentError;
use crate::domain::{KernelCreation, KernelInfo};
use serde_json::Value;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Adds the shared token to every call.
#[derive(Clone)]
pub struct TokenInterceptor {
    header: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert(TOKEN_HEADER, h.clone());
        }
        Ok(req)
    }
}

/// The arguments of one `execute` call.
pub struct Execute<'a> {
    pub run_id: Option<String>,
    /// `query`, `batch`, `input`, `continue`.
    pub mode: &'a str,
    pub code: &'a str,
    pub opts: &'a Value,
    pub flush_timeout: Option<Duration>,
    pub follow: bool,
}

/// Execute results as the agent sends them.
pub struct ExecStream(tonic::Streaming<JsonReply>);

impl ExecStream {
    /// The next result; `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Value>, AgentError> {
        match self.0.message().await? {
            Some(msg) => Ok(Some(parse(&msg.json)?)),
            None => Ok(None),
        }
    }
}

#[derive(Clone)]
pub struct AgentClient {
    raw: Raw<InterceptedService<Channel, TokenInterceptor>>,
}

fn timed<T>(msg: T, timeout: Duration) -> Request<T> {
    let mut r = Request::new(msg);
    r.set_timeout(timeout);
    r
}

/// Parses a JSON reply into a typed value.
fn parse<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, AgentError> {
    serde_json::from_str(json)
        .map_err(|e| AgentError::Failure(format!("the agent answered nonsense: {e}")))
}

impl AgentClient {
    /// Connects to `addr` (`tcp://host:port`, as agents report it, or `http://host:port`).
    pub async fn connect(addr: &str, token: Option<String>) -> Result<Self, AgentError> {
        let url = match addr.strip_prefix("tcp://") {
            Some(rest) => format!("http://{rest}"),
            None => addr.to_owned(),
        };
        let endpoint = Channel::from_shared(url.clone())
            .map_err(|e| AgentError::InvalidInput(format!("bad agent address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(5));
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| AgentError::Timeout(format!("cannot reach the agent at {addr}: {e}")))?;
        let header = token
            .filter(|t| !t.is_empty())
            .map(|t| format!("Bearer {t}").parse::<tonic::metadata::MetadataValue<_>>())
            .transpose()
            .map_err(|_| {
                AgentError::InvalidInput(
                    "the agent token has characters a header cannot carry".into(),
                )
            })?;
        let interceptor = TokenInterceptor { header };
        Ok(AgentClient {
            raw: Raw::with_interceptor(channel, interceptor).max_decoding_message_size(16 << 20),
        })
    }

    pub async fn ping(&self, msg: &str) -> Result<String, AgentError> {
        Ok(self
            .raw
            .clone()
            .ping(timed(
                PingRequest { msg: msg.into() },
                Duration::from_secs(10),
            ))
            .await?
            .into_inner()
            .msg)
    }

    /// Creates a kernel (image pulls can take long: ten minutes at most).
    pub async fn create_kernel(
        &self,
        kernel_id: &str,
        creation: &KernelCreation,
    ) -> Result<KernelInfo, AgentError> {
        self.create_kernel_within(kernel_id, creation, Duration::from_secs(600))
            .await
    }

    /// Creates a kernel, giving the agent `deadline` to answer.
    pub async fn create_kernel_within(
        &self,
        kernel_id: &str,
        creation: &KernelCreation,
        deadline: Duration,
    ) -> Result<KernelInfo, AgentError> {
        let req = convert::create_request(kernel_id, creation);
        convert::kernel_info(
            self.raw
                .clone()
                .create_kernel(timed(req, deadline))
                .await?
                .into_inner(),
        )
    }

    /// Destroys a kernel; returns its last statistics.
    pub async fn destroy_kernel(
        &self,
        kernel_id: &str,
        reason: &str,
    ) -> Result<Option<Value>, AgentError> {
        let req = KernelRef {
            kernel_id: kernel_id.into(),
            reason: reason.into(),
        };
        convert::last_stat(
            self.raw
                .clone()
                .destroy_kernel(timed(req, Duration::from_secs(30)))
                .await?
                .into_inner(),
        )
    }

    pub async fn restart_kernel(&self, kernel_id: &str) -> Result<KernelInfo, AgentError> {
        let req = KernelRef {
            kernel_id: kernel_id.into(),
            reason: "restarting".into(),
        };
        convert::kernel_info(
            self.raw
                .clone()
                .restart_kernel(timed(req, Duration::from_secs(90)))
                .await?
                .into_inner(),
        )
    }

    /// One execute call: a single result after `flush_timeout`, or with `follow` every
    /// result until a status other than `continued` (the streaming execute).
    pub async fn execute(
        &self,
        kernel_id: &str,
        call: &Execute<'_>,
    ) -> Result<Vec<Value>, AgentError> {
        let mut stream = self.execute_stream(kernel_id, call).await?;
        let mut out = Vec::new();
        while let Some(v) = stream.next().await? {
            out.push(v);
        }
        Ok(out)
    }

    /// Like [`execute`](Self::execute), handing over each result as it arrives.
    pub async fn execute_stream(
        &self,
        kernel_id: &str,
        call: &Execute<'_>,
    ) -> Result<ExecStream, AgentError> {
        let (flush_timeout, follow) = (call.flush_timeout, call.follow);
        let req = ExecuteRequest {
            api_version: 4,
            kernel_id: kernel_id.into(),
            run_id: call.run_id.clone(),
            mode: call.mode.into(),
            code: call.code.into(),
            opts_json: call.opts.to_string(),
            flush_timeout: flush_timeout.map(|d| d.as_secs_f64()),
            follow,
        };
        let mut request = Request::new(req);
        if !follow {
            request.set_timeout(
                flush_timeout.unwrap_or(Duration::from_secs(30)) + Duration::from_secs(30),
            );
        }
        Ok(ExecStream(
            self.raw.clone().execute(request).await?.into_inner(),
        ))
    }

    /// Parses one execute result.
    pub fn exec_result(v: &Value) -> Option<ExecResult> {
        let console = v["console"]
            .as_array()?
            .iter()
            .filter_map(|item| Some((item[0].as_str()?.to_owned(), item[1].clone())))
            .collect();
        Some(ExecResult {
            run_id: v["runId"].as_str()?.to_owned(),
            status: v["status"].as_str()?.to_owned(),
            exit_code: v["exitCode"].as_i64(),
            options: v.get("options").cloned().filter(|o| !o.is_null()),
            console,
            files: v["files"].as_array().cloned().unwrap_or_default(),
        })
    }

    pub async fn interrupt_kernel(&self, kernel_id: &str) -> Result<(), AgentError> {
        let req = KernelRef {
            kernel_id: kernel_id.into(),
            reason: String::new(),
        };
        self.raw
            .clone()
            .interrupt_kernel(timed(req, Duration::from_secs(30)))
            .await?;
        Ok(())
    }

    pub async fn get_completions(
        &self,
        kernel_id: &str,
        text: &str,
        opts: &Value,
    ) -> Result<Vec<String>, AgentError> {
        let req = CompletionRequest {
            kernel_id: kernel_id.into(),
            text: text.into(),
            opts_json: opts.to_string(),
        };
        Ok(self
            .raw
            .clone()
            .get_completions(timed(req, Duration::from_secs(10)))
            .await?
            .into_inner()
            .items)
    }

    pub async fn upload_file(
        &self,
        kernel_id: &str,
        filename: &str,
        data: Vec<u8>,
    ) -> Result<(), AgentError> {
        let req = UploadFileRequest {
            kernel_id: kernel_id.into(),
            filename: filename.into(),
            data,
        };
        self.raw
            .clone()
            .upload_file(timed(req, Duration::from_secs(60)))
            .await?;
        Ok(())
    }

    pub async fn download_file(&self, kernel_id: &str, path: &str) -> Result<Vec<u8>, AgentError> {
        let req = FileRequest {
            kernel_id: kernel_id.into(),
            path: path.into(),
        };
        Ok(self
            .raw
            .clone()
            .download_file(timed(req, Duration::from_secs(60)))
            .await?
            .into_inner()
            .data)
    }

    pub async fn list_files(&self, kernel_id: &str, path: &str) -> Result<Value, AgentError> {
        let req = FileRequest {
            kernel_id: kernel_id.into(),
            path: path.into(),
        };
        parse(
            &self
                .raw
                .clone()
                .list_files(timed(req, Duration::from_secs(30)))
                .await?
                .into_inner()
                .json,
        )
    }

    pub async fn get_logs(&self, kernel_id: &str) -> Result<String, AgentError> {
        let req = KernelRef {
            kernel_id: kernel_id.into(),
            reason: String::new(),
        };
        Ok(self
            .raw
            .clone()
            .get_logs(timed(req, Duration::from_secs(30)))
            .await?
            .into_inner()
            .logs)
    }

    pub async fn start_service(&self, kernel_id: &str, service: &str) -> Result<Value, AgentError> {
        let req = ServiceRequest {
            kernel_id: kernel_id.into(),
            service: service.into(),
            opts_json: "{}".into(),
        };
        parse(
            &self
                .raw
                .clone()
                .start_service(timed(req, Duration::from_secs(60)))
                .await?
                .into_inner()
                .json,
        )
    }

    pub async fn refresh_idle(&self, kernel_id: &str) -> Result<(), AgentError> {
        let req = KernelRef {
            kernel_id: kernel_id.into(),
            reason: String::new(),
        };
        self.raw
            .clone()
            .refresh_idle(timed(req, Duration::from_secs(30)))
            .await?;
        Ok(())
    }

    /// Opens a terminal in the kernel: messages to send (`stdin`, `resize`) and its output.
    pub async fn pty(
        &self,
        kernel_id: &str,
        rows: u32,
        cols: u32,
    ) -> Result<ByteChannel, AgentError> {
        let first = StreamIn {
            kernel_id: kernel_id.into(),
            rows,
            cols,
            ..Default::default()
        };
        let mut raw = self.raw.clone();
        open_stream(first, |out| async move { raw.pty(Request::new(out)).await }).await
    }

    /// Opens a byte stream to a service of the kernel (started if it is not running).
    pub async fn connect_service(
        &self,
        kernel_id: &str,
        service: &str,
    ) -> Result<ByteChannel, AgentError> {
        let first = StreamIn {
            kernel_id: kernel_id.into(),
            service: service.into(),
            ..Default::default()
        };
        let mut raw = self.raw.clone();
        open_stream(first, |out| async move {
            raw.connect_service(Request::new(out)).await
        })
        .await
    }
}

/// Starts a bidirectional call with `first` as its opening message.
async fn open_stream<F, Fut>(first: StreamIn, call: F) -> Result<ByteChannel, AgentError>
where
    F: FnOnce(tokio_stream::wrappers::ReceiverStream<StreamIn>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<tonic::Streaming<StreamOut>>, Status>>,
{
    let (tx, rx) = tokio::sync::mpsc::channel(32);
    let _ = tx.send(first).await;
    let out = call(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(ByteChannel { tx, rx: out })
}

/// Both directions of a stream call.
pub struct ByteChannel {
    pub tx: tokio::sync::mpsc::Sender<StreamIn>,
    pub rx: tonic::Streaming<StreamOut>,
}
