//! `/auth` (echo) and `/auth/authorize` (e-mail + password → keypair).

use crate::gateway::error::{ApiError, Problem};
use crate::gateway::router::{ok_json, Ctx};
use crate::server::App;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use warp::http::Response;
use warp::hyper::Body;

#[derive(Deserialize)]
struct Echo {
    echo: String,
}

pub async fn echo(_app: Arc<App>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let body: Echo = ctx.json()?;
    ok_json(json!({"authorized": "yes", "echo": body.echo}))
}

#[derive(Deserialize)]
struct Authorize {
    #[serde(rename = "type")]
    kind: String,
    domain: String,
    username: String,
    password: String,
}

/// A hash to verify against when the user does not exist, so the answer takes as long as
/// for a wrong password and does not reveal which e-mails are registered.
static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub async fn authorize(app: Arc<App>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let body: Authorize = ctx.json()?;
    if body.kind != "keypair" {
        return Err(ApiError::bad_params("Unsupported authorization type"));
    }
    let candidate = app
        .store
        .login_candidate(&body.domain, &body.username)
        .await?;
    let stored = candidate.as_ref().and_then(|c| c.password_hash.clone());
    let password = body.password;
    let matched = tokio::task::spawn_blocking(move || match stored {
        Some(hash) => crate::password::verify_password(&password, &hash),
        None => {
            let dummy = DUMMY_HASH
                .get_or_init(|| crate::password::hash_password("dummy").unwrap_or_default());
            let _ = crate::password::verify_password(&password, dummy);
            false
        }
    })
    .await
    .map_err(|e| ApiError::internal("password check", e))?;
    let mismatch = || ApiError::msg(Problem::AuthorizationFailed, "User credential mismatch.");
    let user = match candidate {
        Some(c) if matched && c.is_active => c,
        _ => return Err(mismatch()),
    };
    let (access_key, secret_key) = app
        .store
        .keypair_of_user(&user.user_uuid)
        .await?
        .ok_or_else(mismatch)?;
    ok_json(
        json!({"data": {"access_key": access_key, "secret_key": secret_key, "role": user.role}}),
    )
}
