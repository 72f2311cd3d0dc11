//! `GET/PUT /manager/status`: the running/frozen switch.

use crate::domain::ManagerStatus;
use crate::gateway::error::ApiError;
use crate::gateway::router::{no_content, ok_json, Ctx};
use crate::server::App;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use warp::http::Response;
use warp::hyper::Body;

pub async fn get_status(app: Arc<App>, _ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let status = app.status.current().await;
    let active = app.active_sessions().await?;
    ok_json(json!({"status": status, "active_sessions": active}))
}

#[derive(Deserialize)]
struct PutStatus {
    status: ManagerStatus,
    #[serde(default)]
    force_kill: Option<bool>,
}

pub async fn put_status(app: Arc<App>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    if ctx.body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_params("No request body!"));
    }
    let body: PutStatus = ctx.json()?;
    if body.force_kill == Some(true) && body.status == ManagerStatus::Frozen {
        // Sessions are only ever created through the registry; with none running there is
        // nothing to kill. Terminating live ones arrives with the session registry.
        let active = app.active_sessions().await?;
        if active > 0 {
            tracing::warn!("freeze with force_kill: {active} session(s) left running (no registry to stop them yet)");
        }
    }
    app.status.set(body.status).await?;
    tracing::info!(
        "manager status set to {} by {}",
        body.status,
        ctx.caller()?.keypair.access_key
    );
    no_content()
}
