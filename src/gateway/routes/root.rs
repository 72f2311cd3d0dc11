//! `GET /` and `GET /metrics`.

use crate::domain::{LATEST_API_VERSION, MANAGER_VERSION};
use crate::gateway::error::ApiError;
use crate::gateway::router::{ok_json, Ctx};
use crate::server::App;
use serde_json::json;
use std::sync::Arc;
use warp::http::{HeaderValue, Response};
use warp::hyper::Body;

/// `GET /`: the API's hello, or for a browser (one that asks for HTML) the web UI.
pub async fn hello(_app: Arc<App>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let browser = ctx
        .headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if browser {
        return Ok(super::ui::see_ui());
    }
    ok_json(json!({"version": LATEST_API_VERSION, "manager": MANAGER_VERSION}))
}

pub async fn metrics(app: Arc<App>, _ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let active = app.active_sessions().await? as f64;
    let status = app.status.current().await;
    let mut gauges = vec![
        (
            "backendai_active_sessions",
            "Sessions not yet terminated.",
            active,
        ),
        (
            "backendai_manager_frozen",
            "1 while the manager is frozen.",
            f64::from(status == crate::domain::ManagerStatus::Frozen),
        ),
        (
            "backendai_uptime_seconds",
            "Seconds since the server started.",
            app.started.elapsed().as_secs_f64(),
        ),
    ];
    if let Some(rss) = super::super::metrics::resident_bytes() {
        gauges.push(("process_resident_memory_bytes", "Resident memory.", rss));
    }
    let db = app.store.write_stats();
    let counters = [
        (
            "backendai_db_writes_total",
            "Database writes committed.",
            db.writes.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
        (
            "backendai_db_commits_total",
            "Database transactions committed (writes are committed in batches).",
            db.commits.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
    ];
    let mut resp = Response::new(Body::from(app.metrics.render(&gauges, &counters)));
    resp.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}
