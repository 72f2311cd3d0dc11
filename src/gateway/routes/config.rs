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

pub async fn resource_slots(app: Arc<App>, _ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let mut out = Map::new();
    out.insert("cpu".into(), json!("count"));
    out.insert("mem".into(), json!("bytes"));
    for (k, v) in app.shared.get_prefix(keys::RESOURCE_SLOTS).await? {
        if let Some(slot) = k
            .strip_prefix(keys::RESOURCE_SLOTS)
            .and_then(|s| s.strip_prefix('/'))
        {
            if !slot.contains('/') {
                out.insert(slot.to_owned(), Value::String(v));
            }
        }
    }
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
