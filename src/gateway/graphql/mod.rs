//! `POST /admin/graphql`: two juniper schemas as in the original — the admin schema
//! (queries and mutations) for keypairs with `is_admin`, the user schema (queries only)
//! otherwise. snake_case names, the bare `data` object on success, and errors as 400
//! `graphql-error` problems (503 `server-frozen` for mutations while frozen).
//!
//! Every request is bounded before juniper validates or executes it (nesting, tokens,
//! depth, selections and cost: see `limits`), and while it runs (time, answer size).
//!
//! Resolvers are thin: they check the caller's scope and call the store.

mod limits;
mod mutation;
mod query;
mod scalars;
mod types;

use super::error::{ApiError, Problem};
use super::router::{Caller, Ctx};
use crate::domain::{ManagerStatus, UserRole};
use crate::server::App;
use juniper::{
    graphql_value, EmptyMutation, EmptySubscription, FieldError, FieldResult, GraphQLType, RootNode,
};
use limits::{scan, Bounds, Kind, LimitError, EXECUTION_TIMEOUT, MAX_ANSWER_BYTES};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use warp::http::Response;
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

/// Both schemas, built once, with the bounds documents are measured against.
pub struct Schemas {
    pub admin: AdminSchema,
    pub user: UserSchema,
    admin_bounds: Bounds,
    user_bounds: Bounds,
}

impl Schemas {
    pub fn new() -> Self {
        let admin = RootNode::new(QueryForAdmin, MutationForAdmin, EmptySubscription::new());
        let user = RootNode::new(QueryForUser, EmptyMutation::new(), EmptySubscription::new());
        Schemas {
            admin_bounds: Bounds::new(&admin.schema),
            user_bounds: Bounds::new(&user.schema),
            admin,
            user,
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

impl From<LimitError> for ApiError {
    fn from(e: LimitError) -> Self {
        graphql_error(serde_json::json!([{"message": e.to_string()}]))
    }
}

/// Parses `doc` with juniper's own parser (the document juniper will execute, not a
/// look-alike) and refuses it if it is over a bound. Runs after [`scan`], which keeps the
/// recursive parser shallow.
fn check<Q, M, Sub>(
    root: &RootNode<'static, Q, M, Sub>,
    bounds: &Bounds,
    doc: &str,
    vars: &juniper::Variables,
) -> Result<(), ApiError>
where
    Q: GraphQLType<Context = Context>,
    M: GraphQLType<Context = Context>,
    Sub: GraphQLType<Context = Context>,
{
    let document = juniper::parser::parse_document_source(doc, &root.schema).map_err(|e| {
        let msg = juniper::GraphQLError::ParseError(e).to_string();
        graphql_error(serde_json::json!([{ "message": msg }]))
    })?;
    bounds.check(&document, &root.schema, vars)?;
    Ok(())
}

/// A writer that refuses to grow past a size: answers are serialized through it.
struct Bounded {
    bytes: Vec<u8>,
    max: usize,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.max {
            return Err(std::io::Error::other("answer too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The answer as JSON, or a refusal when it would be larger than [`MAX_ANSWER_BYTES`].
fn answer_body(data: &juniper::Value) -> Result<Vec<u8>, ApiError> {
    let mut out = Bounded {
        bytes: Vec::new(),
        max: MAX_ANSWER_BYTES,
    };
    if serde_json::to_writer(&mut out, data).is_err() {
        let msg = format!(
            "the answer would be larger than {} MiB; ask for fewer fields or smaller pages",
            MAX_ANSWER_BYTES >> 20
        );
        return Err(graphql_error(serde_json::json!([{ "message": msg }])));
    }
    Ok(out.bytes)
}

/// The route handler.
pub async fn handle(app: Arc<App>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let req: GqlRequest = ctx.json()?;
    let vars = variables(req.variables)?;
    let caller = ctx.caller()?.clone();
    let admin = caller.is_admin();
    let kinds = scan(&req.query)?;
    // juniper cannot execute operations a schema has no root for; refuse them up front.
    if kinds.contains(&Kind::Subscription) || (!admin && kinds.contains(&Kind::Mutation)) {
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
    let schemas = &app.graphql;
    // Execution yields at every read, so the time limit can stop it there; and when the
    // client goes away, the server drops this future and with it the execution.
    let run = async {
        if admin {
            check(&schemas.admin, &schemas.admin_bounds, &req.query, &vars)?;
            Ok::<_, ApiError>(juniper::execute(&req.query, op, &schemas.admin, &vars, &gctx).await)
        } else {
            check(&schemas.user, &schemas.user_bounds, &req.query, &vars)?;
            Ok(juniper::execute(&req.query, op, &schemas.user, &vars, &gctx).await)
        }
    };
    let result = match tokio::time::timeout(EXECUTION_TIMEOUT, run).await {
        Ok(result) => result?,
        Err(_) => {
            let msg = format!(
                "the query ran longer than {} s and was stopped",
                EXECUTION_TIMEOUT.as_secs()
            );
            return Err(graphql_error(serde_json::json!([{ "message": msg }])));
        }
    };
    match result {
        Ok((data, errors)) if errors.is_empty() => {
            let body = answer_body(&data)?;
            drop(data);
            let mut resp = Response::new(Body::from(body));
            resp.headers_mut().insert(
                warp::http::header::CONTENT_TYPE,
                warp::http::HeaderValue::from_static("application/json; charset=utf-8"),
            );
            Ok(resp)
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
    use super::limits::{scan, Kind};

    #[test]
    fn finds_top_level_operation_kinds_only() {
        let kinds = |doc: &str| scan(doc).unwrap();
        assert_eq!(kinds("{ keypair { access_key } }"), [Kind::Query]);
        assert_eq!(
            kinds("mutation($a: String!) { delete_keypair(access_key: $a) { ok } }"),
            [Kind::Mutation]
        );
        assert_eq!(
            kinds("query { f(arg: \"mutation {\") }  # mutation\n"),
            [Kind::Query]
        );
        assert_eq!(
            kinds("query A { a } mutation B { b }"),
            [Kind::Query, Kind::Mutation]
        );
        assert_eq!(kinds("{ mutation }"), [Kind::Query]);
        assert_eq!(kinds("query mutation($mutation: Int) { a }"), [Kind::Query]);
        assert_eq!(
            kinds("fragment F on Q { a } subscription { b }"),
            [Kind::Subscription]
        );
    }
}
