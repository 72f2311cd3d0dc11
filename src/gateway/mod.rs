//! The HTTP gateway: one warp server on one port. warp accepts the connection and hands
//! every request to [`dispatch`], which runs the original's middleware order over the
//! route table: method override → route → version → authentication → rate limit →
//! status gate → access check → handler, then adds the common headers.

pub mod apps;
pub mod auth;
pub mod error;
pub mod graphql;
pub mod metrics;
pub mod multipart;
pub mod router;
mod routes;
pub mod tls;

use crate::server::App;
use bytes::{Bytes, BytesMut};
use error::{ApiError, Problem};
use futures_util::StreamExt;
use router::{Access, ApiVersion, Ctx, Lookup};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use warp::http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use warp::hyper::Body;
use warp::Filter;

pub use routes::route_table;

/// `(major, latest revision)` of every major version.
const LATEST_REVISIONS: &[(u8, &str)] = &[
    (1, "20160915"),
    (2, "20170915"),
    (3, "20181215"),
    (4, "20190315"),
];

/// Versions a client may announce. `v4.20190615` (client 19.09) is accepted too: it only
/// added endpoints.
pub const VALID_VERSIONS: &[&str] = &[
    "v1.20160915",
    "v2.20170315",
    "v3.20170615",
    "v4.20181215",
    "v4.20190115",
    "v4.20190315",
    "v4.20190615",
];

fn latest_revision(major: u8) -> String {
    LATEST_REVISIONS
        .iter()
        .find(|(m, _)| *m == major)
        .map(|(_, r)| (*r).to_owned())
        .unwrap_or_default()
}

fn parse_version(h: &HeaderMap, legacy: Option<u8>) -> Result<ApiVersion, ApiError> {
    if let Some(major) = legacy {
        return Ok(ApiVersion {
            major,
            revision: latest_revision(major),
        });
    }
    let announced = h
        .get("x-backendai-version")
        .or_else(|| h.get("x-sorna-version"))
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    match announced {
        None => Ok(ApiVersion {
            major: 4,
            revision: latest_revision(4),
        }),
        Some(v) if VALID_VERSIONS.contains(&v.as_str()) => {
            let (major, rev) = v[1..].split_once('.').unwrap_or(("4", ""));
            Ok(ApiVersion {
                major: major.parse().unwrap_or(4),
                revision: rev.to_owned(),
            })
        }
        Some(_) => Err(ApiError::msg(
            Problem::GenericBadRequest,
            "Unsupported API major version.",
        )),
    }
}

/// The raw request as warp hands it over.
pub struct RawRequest {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The WebSocket handshake, when the request is one.
    pub ws: Option<warp::ws::Ws>,
    /// The unread body of a route that streams it.
    pub body_stream: Option<router::BodyStream>,
}

impl RawRequest {
    fn path_and_query(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
}

fn problem_response(err: &ApiError) -> Response<Body> {
    let mut resp = router::json_response(err.status(), &err.body());
    resp.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}

fn cors_preflight(req: &RawRequest, allowed: &[Method]) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    let methods: Vec<&str> = allowed.iter().map(Method::as_str).collect();
    if let Ok(v) = HeaderValue::from_str(&methods.join(", ")) {
        h.insert("access-control-allow-methods", v);
    }
    let requested = req.headers.get("access-control-request-headers").cloned();
    h.insert(
        "access-control-allow-headers",
        requested.unwrap_or(HeaderValue::from_static("*")),
    );
    h.insert("access-control-max-age", HeaderValue::from_static("3600"));
    resp
}

/// Runs one request through the pipeline; never fails (errors become problem responses).
pub async fn dispatch(app: Arc<App>, mut req: RawRequest) -> Response<Body> {
    let started = Instant::now();
    let (label, result) = handle(&app, &mut req).await;
    let mut resp = result.unwrap_or_else(|e| problem_response(&e));
    let h = resp.headers_mut();
    h.insert("server", HeaderValue::from_static("BackendAI"));
    if req.headers.contains_key("origin") && !label.cors_skip {
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        h.insert(
            "access-control-expose-headers",
            HeaderValue::from_static("*"),
        );
    }
    for (k, v) in label.rate_headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    let status = resp.status();
    let elapsed = started.elapsed();
    app.metrics
        .observe(&label.route, req.method.as_str(), status.as_u16(), elapsed);
    if status.is_server_error() {
        tracing::warn!(method = %req.method, path = %req.path, status = status.as_u16(), ms = elapsed.as_millis() as u64, "request failed");
    } else {
        tracing::debug!(method = %req.method, path = %req.path, status = status.as_u16(), ms = elapsed.as_millis() as u64, "request");
    }
    resp
}

/// What the response decoration needs to know about how a request was routed.
struct Label {
    route: String,
    cors_skip: bool,
    rate_headers: Vec<(&'static str, String)>,
}

async fn handle(app: &Arc<App>, req: &mut RawRequest) -> (Label, Result<Response<Body>, ApiError>) {
    let mut label = Label {
        route: "unmatched".into(),
        cors_skip: false,
        rate_headers: Vec::new(),
    };
    let wire_method = req.method.clone();
    // X-Method-Override re-routes the request as if sent with that method.
    if let Some(m) = req
        .headers
        .get("x-method-override")
        .and_then(|v| Method::from_bytes(v.as_bytes()).ok())
    {
        req.method = m;
    }
    let (route, params, legacy) = match app.router.lookup(&req.method, &req.path) {
        Lookup::Found {
            route,
            params,
            legacy,
        } => (route, params, legacy),
        Lookup::WrongMethod { allowed, legacy } => {
            label.cors_skip = legacy.is_some();
            let preflight = req.method == Method::OPTIONS && legacy.is_none();
            return if preflight && req.headers.contains_key("access-control-request-method") {
                (label, Ok(cors_preflight(req, &allowed)))
            } else {
                (label, Err(ApiError::new(Problem::MethodNotAllowed)))
            };
        }
        Lookup::NotFound => return (label, Err(ApiError::new(Problem::GenericNotFound))),
    };
    label.route = route.full_path();
    label.cors_skip = legacy.is_some();
    let version = match parse_version(&req.headers, legacy) {
        Ok(v) => v,
        Err(e) => return (label, Err(e)),
    };

    // Authentication runs for protected routes only; its 400s come before any status check.
    let mut caller = None;
    if route.access != Access::Public {
        let pq = req.path_and_query();
        let line = auth::RequestLine {
            method: &req.method,
            path_and_query: &pq,
            body: &req.body,
        };
        let token = auth::ui_cookie(&req.headers)
            .filter(|_| !req.headers.contains_key("authorization"))
            .map(str::to_owned);
        let outcome = match token {
            Some(token) => {
                let methods = [&wire_method, &req.method];
                auth::authenticate_cookie(app, &req.headers, &token, methods).await
            }
            None => auth::authenticate(app, &req.headers, line).await,
        };
        match outcome {
            Ok(auth::Outcome::Authorized(c)) => caller = Some(*c),
            Ok(auth::Outcome::NotAuthorized) => {}
            Err(e) => return (label, Err(e)),
        }
    }
    match &caller {
        Some(c) => match app.rate_limit(&c.keypair).await {
            Ok(headers) => label.rate_headers = headers,
            Err(e) => return (label, Err(e)),
        },
        None => {
            label.rate_headers = vec![
                ("x-ratelimit-limit", "1000".into()),
                ("x-ratelimit-remaining", "1000".into()),
                (
                    "x-ratelimit-window",
                    crate::bus::RATE_LIMIT_WINDOW_SECS.to_string(),
                ),
            ];
        }
    }
    if let Err(e) = app.check_gate(route.gate).await {
        return (label, Err(e));
    }
    let allowed = match (&caller, route.access) {
        (_, Access::Public) => true,
        (Some(_), Access::User) => true,
        (Some(c), Access::Admin) => c.is_admin(),
        (Some(c), Access::Superadmin) => c.is_superadmin(),
        (None, _) => false,
    };
    if !allowed {
        // A web UI login that lacks the role gets 403: to the page, 401 means "log in
        // again". Signed requests keep the original's 401.
        let err = match &caller {
            Some(c) if c.ui.is_some() => ApiError::msg(
                Problem::GenericForbidden,
                "This needs an administrator's login.",
            ),
            _ => ApiError::new(Problem::AuthorizationFailed),
        };
        return (label, Err(err));
    }
    let ctx = Ctx {
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        headers: req.headers.clone(),
        body: std::mem::take(&mut req.body),
        ws: req.ws.take(),
        body_stream: req.body_stream.take().map(std::sync::Mutex::new),
        params,
        version,
        caller,
    };
    // A panic in a handler is a bug; it must cost one 500, not the connection or the task.
    use futures_util::FutureExt;
    let result = std::panic::AssertUnwindSafe((route.handler)(app.clone(), ctx))
        .catch_unwind()
        .await;
    let result = result.unwrap_or_else(|_| Err(ApiError::internal("handler", "panicked")));
    (label, result)
}

fn too_large(limit: u64) -> ApiError {
    ApiError::msg(
        Problem::GenericBadRequest,
        format!("request body exceeds {limit} bytes"),
    )
    .with_status(StatusCode::PAYLOAD_TOO_LARGE)
}

async fn collect_body<S, B>(mut stream: S, limit: u64) -> Result<Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: bytes::Buf,
{
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|e| {
            ApiError::msg(
                Problem::GenericBadRequest,
                format!("cannot read the body: {e}"),
            )
        })?;
        if (buf.len() + chunk.remaining()) as u64 > limit {
            return Err(too_large(limit));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            buf.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}

/// The body as a stream of chunks that fails once more than `limit` bytes arrived.
fn limited_stream<S, B>(stream: S, limit: u64) -> router::BodyStream
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin + Send + 'static,
    B: bytes::Buf + Send + 'static,
{
    let mut seen = 0u64;
    Box::pin(stream.map(move |chunk| {
        let mut chunk = chunk.map_err(std::io::Error::other)?;
        let bytes = chunk.copy_to_bytes(chunk.remaining());
        seen += bytes.len() as u64;
        if seen > limit {
            return Err(std::io::Error::other(format!(
                "the upload exceeds manager.max-upload-size ({limit} bytes)"
            )));
        }
        Ok(bytes)
    }))
}

/// The warp filter serving everything.
pub fn filter(
    app: Arc<App>,
) -> impl Filter<Extract = (Response<Body>,), Error = warp::Rejection> + Clone {
    let raw_query = warp::query::raw().or(warp::any().map(String::new)).unify();
    let ws = warp::ws().map(Some).or(warp::any().map(|| None)).unify();
    warp::any()
        .and(ws)
        .and(warp::method())
        .and(warp::path::full())
        .and(raw_query)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            move |ws: Option<warp::ws::Ws>,
                  method: Method,
                  path: warp::path::FullPath,
                  query: String,
                  headers: HeaderMap,
                  body| {
                let app = app.clone();
                async move {
                    // Routes that stream their body (folder uploads) get it unread, with
                    // their own limit; all others get it buffered up to max-body-size.
                    let effective = headers
                        .get("x-method-override")
                        .and_then(|v| Method::from_bytes(v.as_bytes()).ok())
                        .unwrap_or_else(|| method.clone());
                    let streamed = matches!(
                        app.router.lookup(&effective, path.as_str()),
                        Lookup::Found { route, .. } if route.stream_body
                    );
                    let limit = if streamed {
                        app.config.manager.max_upload_size
                    } else {
                        app.config.manager.max_body_size
                    };
                    let declared = headers
                        .get("content-length")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    if declared.is_some_and(|n| n > limit) {
                        let mut resp = problem_response(&too_large(limit));
                        resp.headers_mut()
                            .insert("server", HeaderValue::from_static("BackendAI"));
                        return resp;
                    }
                    let (body, body_stream) = if streamed {
                        (Bytes::new(), Some(limited_stream(Box::pin(body), limit)))
                    } else {
                        match collect_body(Box::pin(body), limit).await {
                            Ok(b) => (b, None),
                            Err(e) => return problem_response(&e),
                        }
                    };
                    let req = RawRequest {
                        method,
                        path: path.as_str().to_owned(),
                        query,
                        headers,
                        body,
                        ws,
                        body_stream,
                    };
                    dispatch(app, req).await
                }
            },
        )
}

/// Binds the gateway; returns the bound address and the server future.
pub fn bind(
    app: Arc<App>,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, futures_util::future::BoxFuture<'static, ()>), String> {
    use futures_util::{FutureExt, StreamExt};
    let std_listener = std::net::TcpListener::bind(addr).map_err(|e| e.to_string())?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    let bound = std_listener.local_addr().map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(|e| e.to_string())?;
    let Some(certs) = app.tls.clone() else {
        // Answers go out as soon as they are written (no Nagle delay behind a small
        // header write), as for the TLS listener.
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|c| {
            c.inspect(|tcp| {
                let _ = tcp.set_nodelay(true);
            })
        });
        let server =
            warp::serve(filter(app)).serve_incoming_with_graceful_shutdown(incoming, shutdown);
        return Ok((bound, server.boxed()));
    };
    let acceptor = tls::acceptor(certs)?;
    let server = warp::serve(filter(app))
        .serve_incoming_with_graceful_shutdown(tls::incoming(listener, acceptor), shutdown);
    Ok((bound, server.boxed()))
}
