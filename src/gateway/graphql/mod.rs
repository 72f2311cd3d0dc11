//! `POST /admin/graphql`: two juniper schemas as in the original — the admin schema
//! (queries and mutations) for keypairs with `is_admin`, the user schema (queries only)
//! otherwise. snake_case names, the bare `data` object on success, and errors as 400
//! `graphql-error` problems (503 `server-frozen` for mutations while frozen).
//!
//! Resolvers are thin: they check the caller's scope and call the store.

mod mutation;
mod query;
mod scalars;
mod types;

use super::error::{ApiError, Problem};
use super::router::{json_response, Caller, Ctx};
use crate::domain::{ManagerStatus, UserRole};
use crate::server::App;
use juniper::{graphql_value, EmptyMutation, EmptySubscription, FieldError, FieldResult, RootNode};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use warp::http::{Response, StatusCode};
use warp::hyper::Body;

pub use mutation::MutationForAdmin;
pub use query::{QueryForAdmin, QueryForUser};

/// What every resolver can see: the application and the authenticated caller.
pub struct Context {
    pub app: Arc<App>,
    pub caller: Caller,
}

impl juniper::Context for Context {}

const FROZEN_MARK: &str = "server-frozen";
const DISK_FULL_MARK: &str = "storage-full";

/// A change refused because the database's disk is full; the route answers 507 for it.
pub fn disk_full() -> FieldError {
    FieldError::new(
        "the disk that holds the database is full, so nothing was changed",
        graphql_value!({"type": "https://api.backend.ai/probs/storage-full", "mark": DISK_FULL_MARK}),
    )
}

/// A refused operation, as a GraphQL error.
pub fn forbidden(msg: &str) -> FieldError {
    FieldError::new(
        msg,
        graphql_value!({"type": "https://api.backend.ai/probs/generic-forbidden"}),
    )
}

impl Context {
    pub fn is_superadmin(&self) -> bool {
        self.caller.is_superadmin()
    }
    /// The keypair's admin flag: selects the admin schema.
    pub fn is_admin(&self) -> bool {
        self.caller.is_admin()
    }
    /// An admin keypair whose user is not a superadmin: confined to its own domain.
    pub fn is_domain_admin(&self) -> bool {
        self.caller.is_admin() && !self.is_superadmin()
    }
    pub fn domain(&self) -> Option<&str> {
        self.caller.keypair.domain_name.as_deref()
    }
    pub fn user_uuid(&self) -> &str {
        &self.caller.keypair.user_uuid
    }
    pub fn require_superadmin(&self) -> FieldResult<()> {
        if self.caller.keypair.user_role == UserRole::Superadmin {
            Ok(())
        } else {
            Err(forbidden("superadmin privilege required"))
        }
    }
    /// Live statistics of a kernel or agent; an unreachable stats store reads as none.
    pub async fn live_stat(&self, id: &str) -> Option<serde_json::Value> {
        match self.app.bus.get_stat(id).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("live statistics unavailable: {e}");
                None
            }
        }
    }

    /// Mutations need a running (not frozen) manager.
    pub async fn require_running(&self) -> FieldResult<()> {
        match self.app.status.current().await {
            ManagerStatus::Running => Ok(()),
            s => Err(FieldError::new(
                format!("the manager is {s}; changes are refused until it runs again"),
                graphql_value!({"type": "https://api.backend.ai/probs/server-frozen", "mark": FROZEN_MARK}),
            )),
        }
    }
}

pub type AdminSchema =
    RootNode<'static, QueryForAdmin, MutationForAdmin, EmptySubscription<Context>>;
pub type UserSchema =
    RootNode<'static, QueryForUser, EmptyMutation<Context>, EmptySubscription<Context>>;

/// Both schemas, built once.
pub struct Schemas {
    pub admin: AdminSchema,
    pub user: UserSchema,
}

impl Schemas {
    pub fn new() -> Self {
        Schemas {
            admin: RootNode::new(QueryForAdmin, MutationForAdmin, EmptySubscription::new()),
            user: RootNode::new(QueryForUser, EmptyMutation::new(), EmptySubscription::new()),
        }
    }

    /// The SDL of both schemas, as committed in `schema.graphql`.
    pub fn sdl(&self) -> String {
        format!(
            "# Generated from the code; a test fails when this file drifts.\n# Admin schema (keypairs with is_admin)\n\n{}\n\n# User schema (all other keypairs): queries only\n\n{}\n",
            self.admin.as_sdl().trim_end(),
            self.user.as_sdl().trim_end()
        )
    }
}

impl Default for Schemas {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Deserialize)]
struct GqlRequest {
    query: String,
    #[serde(default)]
    variables: Option<serde_json::Value>,
    #[serde(default, rename = "operationName")]
    operation_name: Option<String>,
}

fn variables(v: Option<serde_json::Value>) -> Result<juniper::Variables, ApiError> {
    let mut out = HashMap::new();
    match v {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(m)) => {
            for (k, v) in m {
                let iv: juniper::InputValue = serde_json::from_value(v)
                    .map_err(|e| ApiError::bad_params(format!("variable {k}: {e}")))?;
                out.insert(k, iv);
            }
        }
        Some(_) => return Err(ApiError::bad_params("variables must be an object")),
    }
    Ok(out)
}

fn graphql_error(errors: serde_json::Value) -> ApiError {
    ApiError::new(Problem::GraphQlError).with_data(errors)
}

/// The operation kinds (`query`, `mutation`, `subscription`) a document defines, found
/// by a small scan of its top level (outside selections, strings and comments).
fn operation_kinds(doc: &str) -> Vec<String> {
    let mut kinds = Vec::new();
    let mut depth = 0usize;
    let mut chars = doc.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for n in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if n == '\\' {
                        escaped = true;
                    } else if n == '"' {
                        break;
                    }
                }
            }
            '{' => {
                if depth == 0 && kinds.is_empty() {
                    kinds.push("query".to_owned()); // shorthand `{ … }`
                }
                depth += 1;
            }
            '}' => depth = depth.saturating_sub(1),
            c if depth == 0 && c.is_ascii_alphabetic() => {
                let mut word = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' {
                        word.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if matches!(word.as_str(), "query" | "mutation" | "subscription") {
                    kinds.push(word);
                }
            }
            _ => {}
        }
    }
    kinds
}

/// The route handler.
pub async fn handle(app: Arc<App>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let req: GqlRequest = ctx.json()?;
    let vars = variables(req.variables)?;
    let caller = ctx.caller()?.clone();
    let admin = caller.is_admin();
    // juniper cannot execute operations a schema has no root for; refuse them up front.
    let kinds = operation_kinds(&req.query);
    if kinds.iter().any(|k| k == "subscription")
        || (!admin && kinds.iter().any(|k| k == "mutation"))
    {
        let msg = if admin {
            "subscriptions are not supported"
        } else {
            "mutations need an admin keypair"
        };
        return Err(graphql_error(serde_json::json!([{"message": msg}])));
    }
    let gctx = Context {
        app: app.clone(),
        caller,
    };
    let op = req.operation_name.as_deref();
    let result = if admin {
        juniper::execute(&req.query, op, &app.graphql.admin, &vars, &gctx).await
    } else {
        juniper::execute(&req.query, op, &app.graphql.user, &vars, &gctx).await
    };
    match result {
        Ok((data, errors)) if errors.is_empty() => {
            let body =
                serde_json::to_value(&data).map_err(|e| ApiError::internal("graphql result", e))?;
            Ok(json_response(StatusCode::OK, &body))
        }
        Ok((_, errors)) => {
            let list = serde_json::to_value(&errors)
                .map_err(|e| ApiError::internal("graphql errors", e))?;
            let text = list.to_string();
            if text.contains(FROZEN_MARK) {
                return Err(ApiError::new(Problem::ServerFrozen));
            }
            if text.contains(DISK_FULL_MARK) {
                return Err(ApiError::disk_full());
            }
            Err(graphql_error(list))
        }
        Err(e) => Err(graphql_error(
            serde_json::json!([{"message": e.to_string()}]),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::operation_kinds;

    #[test]
    fn finds_top_level_operation_kinds_only() {
        assert_eq!(operation_kinds("{ keypair { access_key } }"), ["query"]);
        assert_eq!(
            operation_kinds("mutation($a: String!) { delete_keypair(access_key: $a) { ok } }"),
            ["mutation"]
        );
        assert_eq!(
            operation_kinds("query { f(arg: \"mutation {\") }  # mutation\n"),
            ["query"]
        );
        assert_eq!(
            operation_kinds("query A { a } mutation B { b }"),
            ["query", "mutation"]
        );
        assert_eq!(operation_kinds("{ mutation }"), ["query"]);
    }
}
