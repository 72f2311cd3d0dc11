//! The route table. Each route states its method, path, API versions, who may call it and
//! which manager states it needs; the table generates the `/v{N}/…` legacy twins and tells
//! 404 from 405. Handlers receive a parsed [`Ctx`].

use super::error::{ApiError, Problem};
use crate::server::App;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use warp::http::{HeaderMap, Method, Response, StatusCode};
use warp::hyper::Body;

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No authentication.
    Public,
    /// Any valid keypair.
    User,
    /// A keypair with `is_admin`.
    Admin,
    /// A keypair whose user has the superadmin role.
    Superadmin,
}

/// Which manager statuses a route runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Always.
    Any,
    /// `running` or `frozen` (reads).
    Read,
    /// `running` only (changes).
    All,
}

/// A request body read as it arrives.
pub type BodyStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

pub type Handler = fn(Arc<App>, Ctx) -> BoxFuture<'static, Result<Response<Body>, ApiError>>;

pub struct Route {
    pub method: Method,
    /// Sub-app prefix (`kernel`, `auth`…); empty for the root.
    pub prefix: &'static str,
    /// Path below the prefix (`""`, `/test`, `/{sess_id}`).
    pub path: &'static str,
    /// API major versions that get a `/v{N}` legacy twin.
    pub versions: &'static [u8],
    pub access: Access,
    pub gate: Gate,
    pub handler: Handler,
    /// The handler reads the body as a stream ([`Ctx::body_stream`]) instead of a buffer
    /// limited to `manager.max-body-size` (folder uploads).
    pub stream_body: bool,
}

impl Route {
    pub fn full_path(&self) -> String {
        if self.prefix.is_empty() {
            if self.path.is_empty() {
                "/".into()
            } else {
                self.path.into()
            }
        } else {
            format!("/{}{}", self.prefix, self.path)
        }
    }

    fn legacy_path(&self, major: u8) -> String {
        let p = self.full_path();
        if self.path.is_empty() {
            format!("/v{major}{p}/")
        } else {
            format!("/v{major}{p}")
        }
    }
}

struct PathEntry {
    legacy: Option<u8>,
    methods: Vec<(Method, usize)>,
}

pub struct Router {
    routes: Vec<Route>,
    matcher: matchit::Router<usize>,
    entries: Vec<PathEntry>,
}

pub enum Lookup<'a> {
    Found {
        route: &'a Route,
        params: Vec<(String, String)>,
        legacy: Option<u8>,
    },
    /// The path exists with other methods.
    WrongMethod {
        allowed: Vec<Method>,
        legacy: Option<u8>,
    },
    NotFound,
}

impl Router {
    /// Builds the matcher; panics only on a malformed static table (a programming error
    /// caught by the test that builds the real table).
    pub fn new(routes: Vec<Route>) -> Router {
        let mut matcher = matchit::Router::new();
        let mut entries: Vec<PathEntry> = Vec::new();
        let mut by_path: Vec<(String, usize)> = Vec::new();
        let mut add = |path: String,
                       legacy: Option<u8>,
                       method: Method,
                       idx: usize,
                       matcher: &mut matchit::Router<usize>| {
            if let Some((_, e)) = by_path.iter().find(|(p, _)| *p == path) {
                entries[*e].methods.push((method, idx));
                return;
            }
            let e = entries.len();
            entries.push(PathEntry {
                legacy,
                methods: vec![(method, idx)],
            });
            if let Err(err) = matcher.insert(path.clone(), e) {
                panic!("route table: cannot add {path}: {err}");
            }
            by_path.push((path, e));
        };
        for (idx, r) in routes.iter().enumerate() {
            add(r.full_path(), None, r.method.clone(), idx, &mut matcher);
            for v in r.versions {
                add(
                    r.legacy_path(*v),
                    Some(*v),
                    r.method.clone(),
                    idx,
                    &mut matcher,
                );
            }
        }
        Router {
            routes,
            matcher,
            entries,
        }
    }

    pub fn lookup(&self, method: &Method, path: &str) -> Lookup<'_> {
        let Ok(m) = self.matcher.at(path) else {
            return Lookup::NotFound;
        };
        let entry = &self.entries[*m.value];
        let params: Vec<(String, String)> = m
            .params
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        match entry.methods.iter().find(|(mm, _)| mm == method) {
            Some((_, idx)) => Lookup::Found {
                route: &self.routes[*idx],
                params,
                legacy: entry.legacy,
            },
            None => Lookup::WrongMethod {
                allowed: entry.methods.iter().map(|(m, _)| m.clone()).collect(),
                legacy: entry.legacy,
            },
        }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// The API version a request speaks: `(major, revision date)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersion {
    pub major: u8,
    pub revision: String,
}

impl ApiVersion {
    /// The `vN.YYYYMMDD` form used in comparisons (the original compares these as strings).
    pub fn as_string(&self) -> String {
        format!("v{}.{}", self.major, self.revision)
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub keypair: crate::store::auth::KeypairRecord,
    /// The web UI login the request came with (cookie authentication); `None` for signed
    /// requests.
    pub ui: Option<crate::store::ui_sessions::UiLogin>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.keypair.is_admin
    }
    pub fn is_superadmin(&self) -> bool {
        self.keypair.user_role == crate::domain::UserRole::Superadmin
    }
}

/// A request as handlers see it.
pub struct Ctx {
    /// The method after `X-Method-Override`.
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The WebSocket handshake of a stream route.
    pub ws: Option<warp::ws::Ws>,
    /// The body, unread, for routes that stream it (in a mutex only so that `Ctx` is
    /// `Sync`; the handler takes it out).
    pub body_stream: Option<std::sync::Mutex<BodyStream>>,
    pub params: Vec<(String, String)>,
    pub version: ApiVersion,
    pub caller: Option<Caller>,
}

impl Ctx {
    pub fn param(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// A query-string parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The authenticated caller; routes with `Access::Public` have none.
    pub fn caller(&self) -> Result<&Caller, ApiError> {
        self.caller
            .as_ref()
            .ok_or_else(|| ApiError::new(Problem::AuthorizationFailed))
    }

    /// The JSON body as `T`. An empty body reads as `{}` (clients send parameters in
    /// bodies even on GET, and omit them when there are none).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let raw: &[u8] = if self.body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &self.body
        };
        let value: serde_json::Value =
            serde_json::from_slice(raw).map_err(|_| ApiError::bad_params("Malformed body"))?;
        serde_json::from_value(value).map_err(|e| {
            ApiError::bad_params("Input validation error")
                .with_data(serde_json::json!({"error": e.to_string()}))
        })
    }
}

pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

pub fn ok_json(body: serde_json::Value) -> Result<Response<Body>, ApiError> {
    Ok(json_response(StatusCode::OK, &body))
}

pub fn no_content() -> Result<Response<Body>, ApiError> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}
