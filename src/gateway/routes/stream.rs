//! `/stream`: WebSocket streaming execute, the terminal (PTY) and service proxies of a
//! session, and the server-sent event stream of session lifecycle events. Every stream of a
//! session closes when the session terminates.

use super::kernel::owner;
use crate::domain::KernelStatus;
use crate::gateway::error::agent_error;
use crate::gateway::error::{ApiError, Problem};
use crate::gateway::router::Ctx;
use crate::registry::ops;
use crate::registry::sessions::{self, Live};
use crate::registry::SessionEvent;
use crate::rpc::client::{AgentClient, Execute};
use crate::server::App;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use warp::http::Response;
use warp::hyper::Body;
use warp::ws::{Message, WebSocket};
use warp::Reply as _;

type Reply = Result<Response<Body>, ApiError>;

/// The session of a stream route (the caller's own, or `owner_access_key` for admins),
/// RUNNING on a reachable agent, with the handshake.
async fn open(app: &App, ctx: &mut Ctx) -> Result<(Live, AgentClient, warp::ws::Ws), ApiError> {
    let owner = owner(app, ctx).await?;
    let live = sessions::find(&app.store, ctx.param("sess_id"), &owner.access_key)
        .await?
        .ok_or_else(|| ApiError::new(Problem::KernelNotFound))?;
    let client = ops::client(&app.registry, &live).await?;
    let ws = ctx.ws.take().ok_or_else(|| {
        ApiError::bad_params("this is a WebSocket endpoint: send an upgrade request")
    })?;
    Ok((live, client, ws))
}

/// Resolves when `kernel_id` terminates (or the event source is gone).
async fn terminated(events: &mut broadcast::Receiver<SessionEvent>, kernel_id: &str) {
    loop {
        match events.recv().await {
            Ok(ev) if ev.kernel_id == kernel_id && ev.status == KernelStatus::Terminated => return,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn send_json(ws: &mut WebSocket, v: &Value) -> bool {
    ws.send(Message::text(v.to_string())).await.is_ok()
}

/// The next text frame from the client; `None` when it closed.
async fn next_text(ws: &mut WebSocket) -> Option<String> {
    while let Some(msg) = ws.next().await {
        let msg = msg.ok()?;
        if msg.is_close() {
            return None;
        }
        if let Ok(t) = msg.to_str() {
            return Some(t.to_owned());
        }
    }
    None
}

/// GET /stream/kernel/{sess_id}/execute: one run per connection. The client sends
/// `{"mode", "code", "options"}`; every result goes back as it comes; on `waiting-input`
/// the next text frame is the input; the socket closes after `finished`.
pub async fn execute(app: Arc<App>, mut ctx: Ctx) -> Reply {
    let (live, client, ws) = open(&app, &mut ctx).await?;
    let events = app.registry.subscribe();
    Ok(ws
        .on_upgrade(move |socket| run_execute(app, live, client, socket, events))
        .into_response())
}

async fn run_execute(
    app: Arc<App>,
    live: Live,
    client: AgentClient,
    mut ws: WebSocket,
    mut events: broadcast::Receiver<SessionEvent>,
) {
    let kernel_id = live.id.clone();
    let closing = app.registry.closing();
    let conversation = async {
        let Some(first) = next_text(&mut ws).await else {
            return Ok(());
        };
        let params: Value = match serde_json::from_str(&first) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                let msg = "Invalid API parameters: the first message must be a JSON object";
                send_json(&mut ws, &json!({"status": "error", "msg": msg})).await;
                return Ok(());
            }
        };
        let mut mode = params["mode"].as_str().unwrap_or("query").to_owned();
        if mode != "query" && mode != "batch" {
            let msg = format!("Invalid API parameters: mode must be query or batch, not {mode}");
            send_json(&mut ws, &json!({"status": "error", "msg": msg})).await;
            return Ok(());
        }
        let mut code = params["code"].as_str().unwrap_or_default().to_owned();
        let opts = params
            .get("options")
            .cloned()
            .filter(|o| o.is_object())
            .unwrap_or_else(|| json!({}));
        let run_id = hex::encode(rand::random::<[u8; 8]>());
        let _ = app.count_query(&kernel_id);
        loop {
            let call = Execute {
                run_id: Some(run_id.clone()),
                mode: &mode,
                code: &code,
                opts: &opts,
                flush_timeout: Some(Duration::from_millis(200)),
                follow: true,
            };
            let mut results = client.execute_stream(&kernel_id, &call).await?;
            let mut last = String::from("finished");
            while let Some(r) = results.next().await? {
                last = r["status"].as_str().unwrap_or("finished").to_owned();
                let has_output = r["console"].as_array().is_some_and(|c| !c.is_empty());
                if last != "continued" || has_output {
                    let frame = json!({
                        "status": last,
                        "console": r["console"],
                        "exitCode": r["exitCode"],
                        "options": r["options"],
                        "files": r.get("files").cloned().unwrap_or_else(|| json!([])),
                    });
                    if !send_json(&mut ws, &frame).await {
                        return Err(crate::agent::AgentError::Failure("client gone".into()));
                    }
                }
            }
            match last.as_str() {
                "waiting-input" => {
                    let Some(input) = next_text(&mut ws).await else {
                        return Err(crate::agent::AgentError::Failure("client gone".into()));
                    };
                    mode = "input".into();
                    code = input;
                }
                "continued" | "clean-finished" | "build-finished" => {
                    mode = "continue".into();
                    code.clear();
                }
                _ => return Ok(()),
            }
        }
    };
    tokio::select! {
        outcome = conversation => {
            if let Err(e) = outcome {
                // The client left mid-run (or the agent failed): stop the run.
                let _ = client.interrupt_kernel(&kernel_id).await;
                let e = agent_error(Problem::KernelExecutionFailed, e);
                let msg = format!("BackendError: {}", e.body()["title"].as_str().unwrap_or_default());
                let _ = ws.send(Message::text(json!({"status": "error", "msg": msg}).to_string())).await;
            }
        }
        _ = terminated(&mut events, &kernel_id) => {
            let _ = ws.send(Message::text(json!({"status": "error", "msg": "the session has terminated"}).to_string())).await;
        }
        _ = closing => {
            let msg = json!({"status": "server-restarting", "msg": "the server is shutting down; run again later"});
            let _ = ws.send(Message::text(msg.to_string())).await;
        }
    }
    let _ = ws.close().await;
}

/// GET /stream/kernel/_/events: server-sent events of session status changes of the
/// caller's sessions (or `owner_access_key`'s), optionally of one `sessionId`; with a
/// session named, the stream ends after it terminates.
pub async fn events(app: Arc<App>, ctx: Ctx) -> Reply {
    let owner = owner(&app, &ctx).await?;
    let only = ctx.query_param("sessionId").filter(|s| !s.is_empty());
    let mut events = app.registry.subscribe();
    let (mut tx, body) = Body::channel();
    let ak = owner.access_key.clone();
    tokio::spawn(async move {
        let mut keepalive = tokio::time::interval(Duration::from_secs(15));
        if tx
            .send_data(": backend.ai session events\n\n".into())
            .await
            .is_err()
        {
            return;
        }
        loop {
            let frame = tokio::select! {
                ev = events.recv() => match ev {
                    Ok(ev) if ev.access_key == ak && only.as_ref().is_none_or(|s| *s == ev.sess_id) => {
                        let end = only.is_some() && ev.status == KernelStatus::Terminated;
                        let data = serde_json::to_string(&ev).unwrap_or_default();
                        (format!("event: {}\ndata: {data}\n\n", ev.name), end)
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => (format!(": {n} events were dropped\n\n"), false),
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = keepalive.tick() => (": keep-alive\n\n".to_owned(), false),
            };
            if tx.send_data(frame.0.into()).await.is_err() || frame.1 {
                break;
            }
        }
    });
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        warp::http::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        "cache-control",
        warp::http::HeaderValue::from_static("no-cache"),
    );
    Ok(resp)
}

#[derive(serde::Deserialize)]
struct PtyMessage {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    chars: String,
    #[serde(default)]
    rows: u32,
    #[serde(default)]
    cols: u32,
}

/// GET /stream/kernel/{sess_id}/pty: a terminal. Client frames are JSON
/// `{"type": "stdin", "chars": base64}`, `{"type": "resize", "rows", "cols"}`,
/// `{"type": "ping"}` and `{"type": "restart"}`; output comes as
/// `{"type": "out", "data": base64}`.
pub async fn pty(app: Arc<App>, mut ctx: Ctx) -> Reply {
    let (live, client, ws) = open(&app, &mut ctx).await?;
    let channel = client
        .pty(&live.id, 24, 80)
        .await
        .map_err(|e| agent_error(Problem::KernelExecutionFailed, e))?;
    let events = app.registry.subscribe();
    Ok(ws
        .on_upgrade(move |socket| run_pty(app, live, client, channel, socket, events))
        .into_response())
}

async fn run_pty(
    app: Arc<App>,
    live: Live,
    client: AgentClient,
    mut channel: crate::rpc::client::ByteChannel,
    mut ws: WebSocket,
    mut events: broadcast::Receiver<SessionEvent>,
) {
    use crate::rpc::pb::StreamIn;
    use data_encoding::BASE64;
    let closing = app.registry.closing();
    tokio::pin!(closing);
    loop {
        tokio::select! {
            out = channel.rx.message() => match out {
                Ok(Some(o)) if !o.exited => {
                    let frame = json!({"type": "out", "data": BASE64.encode(&o.data)});
                    if !send_json(&mut ws, &frame).await {
                        break;
                    }
                }
                // The shell ended (or the agent went away).
                _ => break,
            },
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { break };
                if msg.is_close() {
                    break;
                }
                let Ok(text) = msg.to_str() else { continue };
                let Ok(m) = serde_json::from_str::<PtyMessage>(text) else { continue };
                let input = match m.kind.as_str() {
                    "stdin" => match BASE64.decode(m.chars.as_bytes()) {
                        Ok(data) => StreamIn { kind: "stdin".into(), data, ..Default::default() },
                        Err(_) => continue,
                    },
                    "resize" => {
                        let _ = app.count_query(&live.id);
                        StreamIn { kind: "resize".into(), rows: m.rows, cols: m.cols, ..Default::default() }
                    }
                    "ping" => {
                        let _ = app.count_query(&live.id);
                        let _ = client.refresh_idle(&live.id).await;
                        continue;
                    }
                    "restart" => {
                        let _ = app.count_query(&live.id);
                        if let Err(e) = ops::restart(&app.registry, &live).await {
                            tracing::warn!("restarting {} from its terminal: {}", live.sess_id, e);
                            break;
                        }
                        match client.pty(&live.id, 24, 80).await {
                            Ok(c) => channel = c,
                            Err(_) => break,
                        }
                        continue;
                    }
                    _ => continue,
                };
                if channel.tx.send(input).await.is_err() {
                    break;
                }
            },
            _ = terminated(&mut events, &live.id) => break,
            _ = &mut closing => {
                let _ = ws.send(Message::close_with(1001u16, "server shutting down")).await;
                break;
            }
        }
    }
    let _ = ws.close().await;
}

#[derive(serde::Deserialize)]
struct ServicePort {
    name: String,
    #[serde(default)]
    protocol: String,
}

/// GET /stream/kernel/{sess_id}/httpproxy?app=NAME (and tcpproxy): a byte stream to one of
/// the session's services in binary WebSocket frames; the service is started on demand,
/// and the traffic keeps the session from going idle.
pub async fn proxy(app: Arc<App>, mut ctx: Ctx) -> Reply {
    let (live, client, ws) = open(&app, &mut ctx).await?;
    let name = ctx
        .query_param("app")
        .filter(|a| !a.is_empty())
        .ok_or_else(|| ApiError::bad_params("app (the service name) is required"))?;
    let ports: Vec<ServicePort> = live
        .service_ports
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let port = ports
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ApiError::msg(Problem::AppNotFound, name.clone()))?;
    if !matches!(port.protocol.as_str(), "tcp" | "http" | "") {
        return Err(ApiError::bad_params(format!(
            "the {} service ({}) is not reached through a proxy",
            name, port.protocol
        )));
    }
    let _ = app.count_query(&live.id);
    let channel = client
        .connect_service(&live.id, &name)
        .await
        .map_err(|e| match e {
            crate::agent::AgentError::Failure(m) => ApiError::msg(Problem::InternalServerError, m),
            other => agent_error(Problem::KernelExecutionFailed, other),
        })?;
    let events = app.registry.subscribe();
    Ok(ws
        .on_upgrade(move |socket| run_proxy(app.registry.closing(), live, channel, socket, events))
        .into_response())
}

async fn run_proxy(
    closing: impl std::future::Future<Output = ()>,
    live: Live,
    mut channel: crate::rpc::client::ByteChannel,
    mut ws: WebSocket,
    mut events: broadcast::Receiver<SessionEvent>,
) {
    use crate::rpc::pb::StreamIn;
    tokio::pin!(closing);
    let close = loop {
        tokio::select! {
            out = channel.rx.message() => match out {
                Ok(Some(o)) if !o.exited => {
                    if ws.send(Message::binary(o.data)).await.is_err() {
                        break None;
                    }
                }
                // The service closed the connection.
                _ => break Some(1001u16),
            },
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { break None };
                if msg.is_close() {
                    break None;
                }
                if msg.is_binary() || msg.is_text() {
                    let data = msg.into_bytes().to_vec();
                    if channel.tx.send(StreamIn { data, ..Default::default() }).await.is_err() {
                        break Some(1001);
                    }
                }
            },
            _ = terminated(&mut events, &live.id) => break Some(1001),
            _ = &mut closing => break Some(1001),
        }
    };
    match close {
        Some(code) => {
            let _ = ws.send(Message::close_with(code, "upstream closed")).await;
        }
        None => {
            let _ = ws.close().await;
        }
    }
}

/// GET /stream/kernel/{sess_id}/apps: the session's services, as the 19.09 manager lists
/// them (`name`, `protocol`, `ports`), with the port of each browser app open now.
pub async fn apps(app: Arc<App>, ctx: Ctx) -> Reply {
    let owner = owner(&app, &ctx).await?;
    let live = sessions::find(&app.store, ctx.param("sess_id"), &owner.access_key)
        .await?
        .ok_or_else(|| ApiError::new(Problem::KernelNotFound))?;
    let ports: Vec<ServicePortRow> = live
        .service_ports
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let open = app.apps.open_ports(&live.id);
    let list: Vec<Value> = ports
        .iter()
        .map(|p| {
            let mut v =
                json!({"name": p.name, "protocol": p.protocol, "ports": [p.container_port]});
            if let Some((_, port)) = open.iter().find(|(n, _)| *n == p.name) {
                v["open_port"] = json!(port);
            }
            v
        })
        .collect();
    Ok(warp::reply::json(&list).into_response())
}

#[derive(serde::Deserialize)]
struct ServicePortRow {
    name: String,
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    container_port: u16,
}

/// POST /stream/kernel/{sess_id}/apps/{app}/launch: opens a browser app of a RUNNING
/// session (its owner, or an admin for it) and answers a one-time launch URL on the app's
/// own origin. See [`crate::gateway::apps`].
pub async fn launch_app(app: Arc<App>, ctx: Ctx) -> Reply {
    let owner = owner(&app, &ctx).await?;
    let live = sessions::find(&app.store, ctx.param("sess_id"), &owner.access_key)
        .await?
        .ok_or_else(|| ApiError::new(Problem::KernelNotFound))?;
    let name = ctx.param("app").to_owned();
    if !crate::gateway::apps::http_apps(&live).contains(&name) {
        return Err(ApiError::msg(
            Problem::AppNotFound,
            format!("the session has no browser app named '{name}'"),
        ));
    }
    // Refuses sessions that are not RUNNING, with their status.
    ops::client(&app.registry, &live).await?;
    let launched = crate::gateway::apps::Apps::launch(&app, &live, &name).await?;
    let scheme = if app.tls.is_some() { "https" } else { "http" };
    let host = app_host(&app, &ctx);
    let url = format!(
        "{scheme}://{host}:{}/_bai/launch?token={}",
        launched.port, launched.token
    );
    ok_json(json!({
        "url": url,
        "app": name,
        "port": launched.port,
        "expiresIn": crate::gateway::apps::LAUNCH_TTL.as_secs(),
    }))
}

/// The host name the caller reached the API by (without its port), which its browser can
/// reach the app's port by as well; the configured hostname if the request has none.
fn app_host(app: &App, ctx: &Ctx) -> String {
    let host = ctx
        .headers
        .get(warp::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or(&app.config.manager.hostname);
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        rest.split_once(']')
            .map(|(ip, _)| format!("[{ip}]"))
            .unwrap_or_else(|| host.to_owned())
    } else {
        host.rsplit_once(':')
            .map(|(h, _)| h.to_owned())
            .unwrap_or_else(|| host.to_owned())
    };
    let valid = !without_port.is_empty()
        && without_port
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    if valid {
        without_port
    } else {
        app.config.manager.hostname.clone()
    }
}

fn ok_json(v: Value) -> Reply {
    Ok(warp::reply::json(&v).into_response())
}
