//! The agent's RPC server: the contract of `proto/agent.proto` over an [`AgentDaemon`].
//! Bound beyond loopback, it requires the shared token on every call. Messages become domain
//! values through [`crate::rpc::convert`]; runner frames are made with the runner's own
//! `encode` and read with [`super::runner::read_frame`].

use super::daemon::AgentDaemon;
use super::AgentError;
use crate::rpc::pb::agent_server::{Agent, AgentServer};
use crate::rpc::pb::*;
use crate::rpc::{convert, TOKEN_HEADER};
use serde_json::Value;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::Stream;
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status};

pub struct AgentService {
    daemon: Arc<AgentDaemon>,
}

fn json_arg(text: &str, what: &str) -> Result<Value, Status> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_str(text)
        .map_err(|e| Status::invalid_argument(format!("{what} is not valid JSON: {e}")))
}

fn reply(v: &impl serde::Serialize) -> Result<Response<JsonReply>, Status> {
    Ok(Response::new(JsonReply {
        json: serde_json::to_string(v).map_err(|e| Status::internal(e.to_string()))?,
    }))
}

type ExecuteStream = Pin<Box<dyn Stream<Item = Result<JsonReply, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for AgentService {
    async fn ping(&self, req: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        Ok(Response::new(PingReply {
            msg: req.into_inner().msg,
        }))
    }

    async fn create_kernel(
        &self,
        req: Request<CreateKernelRequest>,
    ) -> Result<Response<KernelCreated>, Status> {
        let (id, creation) = convert::kernel_creation(req.into_inner())?;
        let info = self
            .daemon
            .create_kernel(
                &id,
                &creation.spec,
                creation.idle_timeout,
                creation.registry.credentials.as_ref(),
            )
            .await?;
        Ok(Response::new(convert::kernel_created(&info)))
    }

    async fn destroy_kernel(
        &self,
        req: Request<KernelRef>,
    ) -> Result<Response<KernelDestroyed>, Status> {
        let req = req.into_inner();
        let reason = Some(req.reason.as_str())
            .filter(|r| !r.is_empty())
            .unwrap_or("user-requested");
        let last = self
            .daemon
            .destroy_kernel_because(&req.kernel_id, reason)
            .await?;
        Ok(Response::new(convert::kernel_destroyed(last.as_ref())))
    }

    async fn restart_kernel(
        &self,
        req: Request<KernelRef>,
    ) -> Result<Response<KernelCreated>, Status> {
        let id = req.into_inner().kernel_id;
        self.daemon.touch(&id);
        let info = self.daemon.backend.restart_kernel(&id).await?;
        Ok(Response::new(convert::kernel_created(&info)))
    }

    type executeStream = ExecuteStream;

    async fn execute(
        &self,
        req: Request<ExecuteRequest>,
    ) -> Result<Response<Self::executeStream>, Status> {
        let req = req.into_inner();
        let opts = json_arg(&req.opts_json, "opts")?;
        let flush = req
            .flush_timeout
            .filter(|t| t.is_finite() && *t >= 0.0)
            .map(Duration::from_secs_f64);
        self.daemon.touch(&req.kernel_id);
        let first = self
            .daemon
            .backend
            .execute(
                &req.kernel_id,
                req.run_id.clone(),
                &req.mode,
                &req.code,
                &opts,
                flush,
            )
            .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let daemon = self.daemon.clone();
        tokio::spawn(async move {
            let mut result = first;
            loop {
                let done = !matches!(result.status.as_str(), "continued");
                let json =
                    serde_json::to_string(&result).map_err(|e| Status::internal(e.to_string()));
                if tx.send(json.map(|json| JsonReply { json })).await.is_err()
                    || done
                    || !req.follow
                {
                    return;
                }
                daemon.touch(&req.kernel_id);
                match daemon
                    .backend
                    .execute(
                        &req.kernel_id,
                        Some(result.run_id.clone()),
                        "continue",
                        "",
                        &Value::Null,
                        flush,
                    )
                    .await
                {
                    Ok(r) => result = r,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn interrupt_kernel(&self, req: Request<KernelRef>) -> Result<Response<Empty>, Status> {
        let id = req.into_inner().kernel_id;
        self.daemon.touch(&id);
        self.daemon.backend.interrupt(&id).await?;
        Ok(Response::new(Empty {}))
    }

    async fn get_completions(
        &self,
        req: Request<CompletionRequest>,
    ) -> Result<Response<CompletionReply>, Status> {
        let req = req.into_inner();
        self.daemon.touch(&req.kernel_id);
        let opts = json_arg(&req.opts_json, "opts")?;
        let items = self
            .daemon
            .backend
            .complete(&req.kernel_id, &req.text, &opts)
            .await?;
        Ok(Response::new(CompletionReply { items }))
    }

    async fn upload_file(
        &self,
        req: Request<UploadFileRequest>,
    ) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        self.daemon.touch(&req.kernel_id);
        self.daemon
            .backend
            .upload_file(&req.kernel_id, &req.filename, &req.data)
            .await?;
        Ok(Response::new(Empty {}))
    }

    async fn download_file(&self, req: Request<FileRequest>) -> Result<Response<FileData>, Status> {
        let req = req.into_inner();
        self.daemon.touch(&req.kernel_id);
        let data = self
            .daemon
            .backend
            .download_file(&req.kernel_id, &req.path)
            .await?;
        Ok(Response::new(FileData { data }))
    }

    async fn list_files(&self, req: Request<FileRequest>) -> Result<Response<JsonReply>, Status> {
        let req = req.into_inner();
        self.daemon.touch(&req.kernel_id);
        reply(
            &self
                .daemon
                .backend
                .list_files(
                    &req.kernel_id,
                    if req.path.is_empty() { "." } else { &req.path },
                )
                .await?,
        )
    }

    async fn get_logs(&self, req: Request<KernelRef>) -> Result<Response<LogsReply>, Status> {
        let id = req.into_inner().kernel_id;
        Ok(Response::new(LogsReply {
            logs: self.daemon.backend.logs(&id).await?,
        }))
    }

    async fn start_service(
        &self,
        req: Request<ServiceRequest>,
    ) -> Result<Response<JsonReply>, Status> {
        let req = req.into_inner();
        self.daemon.touch(&req.kernel_id);
        reply(
            &self
                .daemon
                .backend
                .start_service(&req.kernel_id, &req.service)
                .await?,
        )
    }

    async fn refresh_idle(&self, req: Request<KernelRef>) -> Result<Response<Empty>, Status> {
        self.daemon.touch(&req.into_inner().kernel_id);
        Ok(Response::new(Empty {}))
    }

    type ptyStream = ByteStream;

    async fn pty(
        &self,
        req: Request<tonic::Streaming<StreamIn>>,
    ) -> Result<Response<Self::ptyStream>, Status> {
        use backend_ai_krunner::{encode, to_agent, to_runner};
        let mut input = req.into_inner();
        let first = first_message(&mut input).await?;
        let size = serde_json::json!({"rows": first.rows.max(1), "cols": first.cols.max(1)});
        let stream = self
            .daemon
            .backend
            .open_runner_stream(
                &first.kernel_id,
                to_runner::PTY,
                size.to_string().as_bytes(),
            )
            .await?;
        let (mut rd, mut wr) = stream.into_split();
        let (daemon, id) = (self.daemon.clone(), first.kernel_id.clone());
        tokio::spawn(async move {
            while let Ok(Some(m)) = input.message().await {
                daemon.touch(&id);
                let frame = match m.kind.as_str() {
                    "stdin" => encode(to_runner::STDIN, &m.data),
                    "resize" => encode(
                        to_runner::RESIZE,
                        serde_json::json!({"rows": m.rows, "cols": m.cols})
                            .to_string()
                            .as_bytes(),
                    ),
                    _ => continue,
                };
                let Ok(frame) = frame else { continue };
                if wr.write_all(&frame).await.is_err() {
                    break;
                }
            }
            // The runner hangs up the shell when this side closes.
            let _ = wr.shutdown().await;
        });
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(Some(f)) = crate::agent::runner::read_frame(&mut rd).await {
                let out = match f.kind.as_str() {
                    to_agent::STDOUT => StreamOut {
                        data: f.payload,
                        exited: false,
                    },
                    to_agent::EXIT => StreamOut {
                        data: Vec::new(),
                        exited: true,
                    },
                    _ => continue,
                };
                let exited = out.exited;
                if tx.send(Ok(out)).await.is_err() || exited {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type connect_serviceStream = ByteStream;

    async fn connect_service(
        &self,
        req: Request<tonic::Streaming<StreamIn>>,
    ) -> Result<Response<Self::connect_serviceStream>, Status> {
        let mut input = req.into_inner();
        let first = first_message(&mut input).await?;
        self.daemon.touch(&first.kernel_id);
        let stream = self
            .daemon
            .backend
            .connect_service(&first.kernel_id, &first.service)
            .await?;
        let (mut rd, mut wr) = stream.into_split();
        let (daemon, id) = (self.daemon.clone(), first.kernel_id.clone());
        tokio::spawn(async move {
            while let Ok(Some(m)) = input.message().await {
                daemon.touch(&id);
                if wr.write_all(&m.data).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let (daemon, id) = (self.daemon.clone(), first.kernel_id);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 << 10];
            while let Ok(n) = rd.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                daemon.touch(&id);
                let out = StreamOut {
                    data: buf[..n].to_vec(),
                    exited: false,
                };
                if tx.send(Ok(out)).await.is_err() {
                    break;
                }
            }
            let _ = tx
                .send(Ok(StreamOut {
                    data: Vec::new(),
                    exited: true,
                }))
                .await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<StreamOut, Status>> + Send>>;

/// The opening message of a stream call, which names the kernel.
async fn first_message(input: &mut tonic::Streaming<StreamIn>) -> Result<StreamIn, Status> {
    let first = input
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("the first message must name the kernel"))?;
    if first.kernel_id.is_empty() {
        return Err(Status::invalid_argument(
            "the first message must name the kernel",
        ));
    }
    Ok(first)
}

/// Serves the agent RPC on `addr` until `shutdown` resolves. Returns the bound address.
/// An address beyond loopback needs a token.
pub async fn serve(
    daemon: Arc<AgentDaemon>,
    addr: SocketAddr,
    token: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), AgentError> {
    let token = token.filter(|t| !t.is_empty());
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(AgentError::InvalidInput(format!(
            "the agent RPC on {addr} is reachable from other hosts: set agent.rpc-token (shared with the manager)"
        )));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| AgentError::Failure(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| AgentError::Failure(e.to_string()))?;
    let expected = token.map(|t| format!("Bearer {t}"));
    let check = move |req: Request<()>| -> Result<Request<()>, Status> {
        let Some(expected) = &expected else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get(TOKEN_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        let ok = given.len() == expected.len()
            && bool::from(subtle::ConstantTimeEq::ct_eq(given, expected.as_bytes()));
        if ok {
            Ok(req)
        } else {
            Err(Status::unauthenticated("a valid agent token is required"))
        }
    };
    let server = AgentServer::new(AgentService { daemon }).max_decoding_message_size(16 << 20);
    let service = tonic::service::interceptor::InterceptedService::new(server, check);
    // Replies go out at once: without TCP_NODELAY a small frame written after another one
    // can wait for the manager's delayed ACK (40 ms on Linux).
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|c| {
        c.inspect(|tcp| {
            let _ = tcp.set_nodelay(true);
        })
    });
    let task = tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
        {
            tracing::error!("agent RPC server: {e}");
        }
    });
    Ok((bound, task))
}
