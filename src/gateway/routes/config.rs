//! `/config/*`: the shared configuration over HTTP (admins), and the known resource slots.

use crate::gateway::error::ApiError;
use crate::gateway::router::{ok_json, Ctx};
use crate::server::App;
use crate::shared_config::{flatten, keys, nest, MAX_KEYS_PER_UPDATE};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use warp::http::Response;
use warp::hyper::Body;

/// The slots this manager knows, with their units: `cpu`, `mem` and those agents
/// registered (`config/resource_slots/*`).
pub async fn known_slots(app: &App) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = vec![
        ("cpu".to_owned(), "count".to_owned()),
        ("mem".to_owned(), "bytes".to_owned()),
    ];
    for (k, v) in app.shared.get_prefix(keys::RESOURCE_SLOTS).await? {
        if let Some(slot) = k
            .strip_prefix(keys::RESOURCE_SLOTS)
            .and_then(|s| s.strip_prefix('/'))
        {
            if !slot.contains('/') && !slot.is_empty() && !out.iter().any(|(s, _)| s == slot) {
                out.push((slot.to_owned(), v));
            }
        }
    }
    Ok(out)
}

pub async fn resource_slots(app: Arc<App>, _ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let out: Map<String, Value> = known_slots(&app)
        .await?
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    ok_json(Value::Object(out))
}

#[derive(Deserialize)]
struct KeyQuery {
    key: String,
    #[serde(default)]
    prefix: bool,
}

pub async fn get(app: Arc<App>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let q: KeyQuery = ctx.json()?;
    let result = if q.prefix {
        nest(&q.key, &app.shared.get_prefix(&q.key).await?)
    } else {
        app.shared
            .get(&q.key)
            .await?
            .map(Value::String)
            .unwrap_or(Value::Null)
    };
    ok_json(json!({"result": result}))
}

#[derive(Deserialize)]
struct SetBody {
    key: String,
    value: Value,
}

pub async fn set(app: Arc<App>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let body: SetBody = ctx.json()?;
    let pairs = match &body.value {
        Value::String(_) | Value::Object(_) => flatten(&body.key, &body.value),
        _ => return Err(ApiError::bad_params("value must be a string or an object")),
    };
    if pairs.len() > MAX_KEYS_PER_UPDATE {
        return Err(ApiError::bad_params(format!(
            "Too large update! ({} keys; at most {MAX_KEYS_PER_UPDATE} in one request)",
            pairs.len()
        )));
    }
    app.shared.put_many(&pairs).await?;
    ok_json(json!({"result": "ok"}))
}

pub async fn delete(app: Arc<App>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let q: KeyQuery = ctx.json()?;
    if q.prefix {
        app.shared.delete_prefix(&q.key).await?;
    } else {
        app.shared.delete(&q.key).await?;
    }
    ok_json(json!({"result": "ok"}))
}
