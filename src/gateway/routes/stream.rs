//! `/stream`: WebSocket streaming execute, the terminal (PTY) and service proxies of a
//! session, and the server-sent event stream of session lifecycle events. Every stream of a
//! session closes when the session terminates.

use super::kernel::owner;
use crate::gateway::error::{ApiError, Problem};
use crate::gateway::router::Ctx;
use crate::registry::ops::{self, agent_error};
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
    let client = ops::client(app, &live).await?;
    let ws = ctx.ws.take().ok_or_else(|| {
        ApiError::bad_params("this is a WebSocket endpoint: send an upgrade request")
    })?;
    Ok((live, client, ws))
}

/// Resolves when `kernel_id` terminates (or the event source is gone).
async fn terminated(events: &mut broadcast::Receiver<SessionEvent>, kernel_id: &str) {
    loop {
        match events.recv().await {
            Ok(ev) if ev.kernel_id == kernel_id && ev.status == "TERMINATED" => return,
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
        let _ = sessions::count_query(&app.store, &kernel_id).await;
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
                        let end = only.is_some() && ev.status == "TERMINATED";
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
