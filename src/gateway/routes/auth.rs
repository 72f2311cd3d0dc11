//! `/auth` (echo) and `/auth/authorize` (e-mail + password → keypair).

use crate::gateway::auth::UI_COOKIE;
use crate::gateway::error::{ApiError, Problem};
use crate::gateway::router::{json_response, ok_json, Ctx};
use crate::server::App;
use crate::store::auth::{KeypairRecord, LoginCandidate};
use crate::store::ui_sessions::UiLogin;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use warp::http::header::SET_COOKIE;
use warp::http::{HeaderValue, Response, StatusCode};
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

/// The user whose e-mail and password these are, if active; the same error otherwise
/// (and the same time spent), whatever was wrong.
async fn check_password(
    app: &App,
    domain: &str,
    email: &str,
    password: String,
) -> Result<LoginCandidate, ApiError> {
    let candidate = app.store.login_candidate(domain, email).await?;
    let stored = candidate.as_ref().and_then(|c| c.password_hash.clone());
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
    match candidate {
        Some(c) if matched && c.is_active => Ok(c),
        _ => Err(mismatch()),
    }
}

fn mismatch() -> ApiError {
    ApiError::msg(Problem::AuthorizationFailed, "User credential mismatch.")
}

pub async fn authorize(app: Arc<App>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let body: Authorize = ctx.json()?;
    if body.kind != "keypair" {
        return Err(ApiError::bad_params("Unsupported authorization type"));
    }
    let user = check_password(&app, &body.domain, &body.username, body.password).await?;
    let (access_key, secret_key) = app
        .store
        .keypair_of_user(&user.user_uuid)
        .await?
        .ok_or_else(mismatch)?;
    ok_json(
        json!({"data": {"access_key": access_key, "secret_key": secret_key, "role": user.role}}),
    )
}

/// A web UI login request: e-mail and password, or a keypair.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Login {
    Password {
        #[serde(default = "default_domain")]
        domain: String,
        username: String,
        password: String,
    },
    Keypair {
        access_key: String,
        secret_key: String,
    },
}

fn default_domain() -> String {
    crate::domain::DEFAULT_DOMAIN.to_owned()
}

fn session_cookie(app: &App, value: &str, max_age: Option<u64>) -> String {
    let mut c = format!("{UI_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if app.tls.is_some() {
        c.push_str("; Secure");
    }
    c
}

fn login_json(kp: &KeypairRecord, login: &UiLogin) -> serde_json::Value {
    json!({
        "authenticated": true,
        "csrf_token": login.csrf_token,
        "expires_at": login.expires_at,
        "user": {
            "email": kp.user_email,
            "uuid": kp.user_uuid,
            "role": kp.user_role,
            "domain_name": kp.domain_name,
            "access_key": kp.access_key,
            "is_admin": kp.is_admin,
        },
    })
}

/// POST /auth/session: logs the web UI in and sets its HttpOnly cookie. The answer holds
/// the CSRF token, never the secret key.
pub async fn login(app: Arc<App>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    crate::gateway::auth::same_origin(&ctx.headers)?;
    let body: Login = ctx.json()?;
    let kp = match body {
        Login::Password {
            domain,
            username,
            password,
        } => {
            let user = check_password(&app, &domain, &username, password).await?;
            let (access_key, _) = app
                .store
                .keypair_of_user(&user.user_uuid)
                .await?
                .ok_or_else(mismatch)?;
            app.store
                .active_keypair(&access_key)
                .await?
                .ok_or_else(mismatch)?
        }
        Login::Keypair {
            access_key,
            secret_key,
        } => {
            use subtle::ConstantTimeEq;
            let kp = app.store.active_keypair(&access_key).await?;
            let expected = kp.as_ref().map(|k| k.secret_key.as_str()).unwrap_or("");
            let same: bool = expected.as_bytes().ct_eq(secret_key.as_bytes()).into();
            match kp {
                Some(k) if same => k,
                _ => return Err(mismatch()),
            }
        }
    };
    let ttl = app.config.manager.ui_session_ttl;
    let (token, login) = app.store.create_ui_login(&kp.access_key, ttl).await?;
    tracing::info!(access_key = %kp.access_key, "web UI login");
    let mut resp = json_response(StatusCode::OK, &login_json(&kp, &login));
    if let Ok(v) = HeaderValue::from_str(&session_cookie(&app, &token, None)) {
        resp.headers_mut().insert(SET_COOKIE, v);
    }
    Ok(resp)
}

fn ui_login(ctx: &Ctx) -> Result<(&KeypairRecord, &UiLogin), ApiError> {
    let caller = ctx.caller()?;
    let login = caller.ui.as_ref().ok_or_else(|| {
        ApiError::msg(
            Problem::GenericBadRequest,
            "This request is signed; it carries no web UI login.",
        )
    })?;
    Ok((&caller.keypair, login))
}

/// GET /auth/session: who the web UI is logged in as, with the CSRF token.
pub async fn whoami(_app: Arc<App>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let (kp, login) = ui_login(&ctx)?;
    ok_json(login_json(kp, login))
}

/// DELETE /auth/session: ends the web UI login and clears its cookie.
pub async fn logout(app: Arc<App>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let (_, login) = ui_login(&ctx)?;
    app.store.end_ui_login(&login.token_hash).await?;
    let mut resp = json_response(StatusCode::OK, &json!({"authenticated": false}));
    if let Ok(v) = HeaderValue::from_str(&session_cookie(&app, "", Some(0))) {
        resp.headers_mut().insert(SET_COOKIE, v);
    }
    Ok(resp)
}
