//! `GET/PUT /manager/status`: the running/frozen switch (a freeze with `force_kill`
//! terminates every live session).

use crate::domain::ManagerStatus;
use crate::gateway::error::{ApiError, Problem};
use crate::gateway::router::{no_content, ok_json, Ctx};
use crate::registry::ops;
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
    app.status.set(body.status).await?;
    tracing::info!(
        "manager status set to {} by {}",
        body.status,
        ctx.caller()?.keypair.access_key
    );
    // Frozen first, so nothing new starts while the running sessions are ended.
    if body.force_kill == Some(true) && body.status == ManagerStatus::Frozen {
        let (ended, failed) = ops::destroy_all(&app.registry, "force-terminated").await?;
        tracing::warn!("freeze with force_kill: {ended} session(s) terminated");
        if !failed.is_empty() {
            let list: Vec<String> = failed.iter().map(|(s, e)| format!("{s}: {e}")).collect();
            return Err(ApiError::msg(
                Problem::KernelDestructionFailed,
                format!(
                    "frozen; {ended} session(s) terminated, {} could not be: {}",
                    failed.len(),
                    list.join("; ")
                ),
            ));
        }
    }
    no_content()
}
