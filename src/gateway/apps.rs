//! Browser apps (Jupyter, a web terminal, any `http` entry of a session's service ports),
//! each on an origin of its own.
//!
//! `POST /stream/kernel/{sess_id}/apps/{app}/launch` (the session's owner, or an admin
//! acting for it) opens a listener for (session, app) on a port of `manager.app-ports`
//! and answers a launch URL carrying a one-time token valid for [`LAUNCH_TTL`]. The
//! browser trades the token at `/_bai/launch` for an HttpOnly cookie scoped to that app's
//! port; every other request to the port needs the cookie. The proxy then relays HTTP and
//! WebSocket traffic to the service through the agent and the in-container runner (so the
//! container keeps network mode `none`).
//!
//! Why a port of its own rather than a path under the API: the app serves pages its user
//! wrote, and scripts on those pages run with the origin they are served from. On another
//! port they are cross-origin to the UI/API: they cannot read API answers (no CORS grant),
//! and a web UI login refuses requests whose `Origin` is not its own and changing requests
//! without its CSRF token, which no other origin can read. A port works for any host name,
//! without wildcard DNS, as the original's app proxy did. Before forwarding, the proxy
//! removes the UI login cookie, its own app cookies and any `Authorization` header, and it
//! refuses requests whose `Origin` is another site's (a page elsewhere driving the app's
//! WebSocket). The listener closes, and its connections with it, when the session ends.

use crate::domain::KernelStatus;
use crate::gateway::auth::UI_COOKIE;
use crate::gateway::error::{agent_error, ApiError, Problem};
use crate::registry::sessions::Live;
use crate::registry::SessionEvent;
use crate::rpc::client::ByteChannel;
use crate::rpc::pb::StreamIn;
use crate::server::App;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, watch};
use warp::http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use warp::hyper::{self, Body};

/// How long a launch URL can be used (once).
pub const LAUNCH_TTL: Duration = Duration::from_secs(60);
/// How long an app cookie is valid (the session ending closes the app sooner).
const COOKIE_TTL: Duration = Duration::from_secs(12 * 3600);
/// The path that trades a launch token for the app cookie.
const LAUNCH_PATH: &str = "/_bai/launch";
/// At most this many apps open at once (each holds a port).
const MAX_OPEN: usize = 256;
/// Browser connections one app serves at once (more are closed as they come).
const MAX_CONNECTIONS: usize = 512;
/// Pending launch tokens kept at most (older ones are dropped first).
const MAX_PENDING: usize = 4096;

/// Ports for app listeners: an inclusive range, or port 0 (any free port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl std::str::FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("app-ports must be 'FIRST-LAST' or '0' (any free port), not '{s}'");
        let (a, b) = match s.trim().split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (s.trim(), s.trim()),
        };
        let (first, last): (u16, u16) =
            (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if first > last || (first == 0) != (last == 0) {
            return Err(bad());
        }
        Ok(PortRange { first, last })
    }
}

/// A launch URL not yet used.
struct Launch {
    kernel_id: String,
    app: String,
    expires: Instant,
}

/// The open apps and the pending launches of one manager.
pub struct Apps {
    ports: PortRange,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    open: HashMap<(String, String), Arc<Site>>,
    launches: HashMap<String, Launch>,
}

/// One open app: its listener's port and the cookies it accepts.
pub struct Site {
    pub kernel_id: String,
    pub app: String,
    pub port: u16,
    cookies: Mutex<HashMap<String, Instant>>,
    closed: watch::Sender<bool>,
    /// Bounds the browser connections open at once.
    connections: Arc<tokio::sync::Semaphore>,
}

impl Site {
    fn cookie_name(&self) -> String {
        format!("bai_app_{}", self.port)
    }

    fn valid_cookie(&self, value: &str) -> bool {
        let mut cookies = self.cookies.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        cookies.retain(|_, exp| *exp > now);
        cookies.contains_key(value)
    }

    fn new_cookie(&self) -> String {
        let value = random_token();
        self.cookies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(value.clone(), Instant::now() + COOKIE_TTL);
        value
    }
}

fn random_token() -> String {
    use data_encoding::BASE64URL_NOPAD;
    BASE64URL_NOPAD.encode(&rand::random::<[u8; 32]>())
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the launch route answers.
pub struct Launched {
    pub port: u16,
    pub token: String,
}

impl Apps {
    pub fn new(ports: PortRange) -> Apps {
        Apps {
            ports,
            state: Mutex::new(State::default()),
        }
    }

    /// Opens (or reuses) the app's listener and issues a one-time launch token for it.
    pub async fn launch(app: &Arc<App>, live: &Live, name: &str) -> Result<Launched, ApiError> {
        let site = Self::site(app, live, name).await?;
        let token = random_token();
        let mut st = lock(&app.apps.state);
        let now = Instant::now();
        st.launches.retain(|_, l| l.expires > now);
        if st.launches.len() >= MAX_PENDING {
            return Err(ApiError::msg(
                Problem::RateLimitExceeded,
                "too many app launches waiting to be opened; try again in a minute",
            ));
        }
        st.launches.insert(
            token.clone(),
            Launch {
                kernel_id: live.id.clone(),
                app: name.to_owned(),
                expires: now + LAUNCH_TTL,
            },
        );
        Ok(Launched {
            port: site.port,
            token,
        })
    }

    /// The open site of (session, app), or a new one on a free port of the range.
    async fn site(app: &Arc<App>, live: &Live, name: &str) -> Result<Arc<Site>, ApiError> {
        let key = (live.id.clone(), name.to_owned());
        if let Some(s) = lock(&app.apps.state).open.get(&key) {
            return Ok(s.clone());
        }
        let listener = app.apps.bind(app.config.manager.service_addr.ip())?;
        let port = listener.local_addr().map_err(io_error)?.port();
        let (closed, _) = watch::channel(false);
        let site = Arc::new(Site {
            kernel_id: live.id.clone(),
            app: name.to_owned(),
            port,
            cookies: Mutex::new(HashMap::new()),
            closed,
            connections: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
        });
        {
            let mut st = lock(&app.apps.state);
            if let Some(s) = st.open.get(&key) {
                // Another launch opened it meanwhile; ours is dropped unused.
                return Ok(s.clone());
            }
            if st.open.len() >= MAX_OPEN {
                return Err(ApiError::msg(
                    Problem::RateLimitExceeded,
                    format!("{MAX_OPEN} apps are open already; close a session's apps first"),
                ));
            }
            st.open.insert(key, site.clone());
        }
        tracing::info!(kernel = %live.id, app = name, port, "app opened");
        tokio::spawn(serve(
            Arc::downgrade(app),
            site.clone(),
            listener,
            app.registry.subscribe(),
            app.registry.closing(),
        ));
        Ok(site)
    }

    fn bind(&self, ip: IpAddr) -> Result<tokio::net::TcpListener, ApiError> {
        let PortRange { first, last } = self.ports;
        let in_use: Vec<u16> = lock(&self.state).open.values().map(|s| s.port).collect();
        // Start at a random point of the range so that ports are not reused in turn.
        let span = u32::from(last - first) + 1;
        let start = rand::random::<u32>() % span;
        for i in 0..span {
            let port = (u32::from(first) + (start + i) % span) as u16;
            if port != 0 && in_use.contains(&port) {
                continue;
            }
            let Ok(std) = std::net::TcpListener::bind(SocketAddr::new(ip, port)) else {
                continue;
            };
            if std.set_nonblocking(true).is_err() {
                continue;
            }
            if let Ok(l) = tokio::net::TcpListener::from_std(std) {
                return Ok(l);
            }
        }
        Err(ApiError::msg(
            Problem::ServiceUnavailable,
            format!("no free port for an app in manager.app-ports ({first}-{last})"),
        ))
    }

    /// Uses a launch token once: the site it opens, if it is this one and still valid.
    fn redeem(&self, token: &str, site: &Site) -> bool {
        let mut st = lock(&self.state);
        match st.launches.remove(token) {
            Some(l) => {
                l.expires > Instant::now() && l.kernel_id == site.kernel_id && l.app == site.app
            }
            None => false,
        }
    }

    fn close(&self, site: &Site) {
        let mut st = lock(&self.state);
        st.open.remove(&(site.kernel_id.clone(), site.app.clone()));
        st.launches.retain(|_, l| l.kernel_id != site.kernel_id);
        let _ = site.closed.send(true);
    }

    /// The ports of the open apps of a kernel, by app name.
    pub fn open_ports(&self, kernel_id: &str) -> Vec<(String, u16)> {
        lock(&self.state)
            .open
            .values()
            .filter(|s| s.kernel_id == kernel_id)
            .map(|s| (s.app.clone(), s.port))
            .collect()
    }
}

/// An API error as one line for an app page.
fn describe(e: ApiError) -> String {
    e.body()["title"]
        .as_str()
        .unwrap_or("the app is unavailable")
        .to_owned()
}

fn io_error(e: std::io::Error) -> ApiError {
    ApiError::msg(Problem::InternalServerError, e.to_string())
}

/// The `http` service ports of a session, by name.
pub fn http_apps(live: &Live) -> Vec<String> {
    let ports: Vec<serde_json::Value> = live
        .service_ports
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    ports
        .iter()
        .filter(|p| p["protocol"] == "http")
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect()
}

/// Accepts the app's connections until its session ends or the server stops.
async fn serve(
    app: Weak<App>,
    site: Arc<Site>,
    listener: tokio::net::TcpListener,
    mut events: broadcast::Receiver<SessionEvent>,
    closing: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(closing);
    let tls = app
        .upgrade()
        .and_then(|a| a.tls.clone())
        .and_then(|certs| crate::gateway::tls::acceptor(certs).ok());
    let mut closed = site.closed.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _peer)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(permit) = site.connections.clone().try_acquire_owned() else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let (app, site, tls) = (app.clone(), site.clone(), tls.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tls {
                        Some(acceptor) => {
                            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
                            if let Ok(Ok(stream)) = handshake.await {
                                connection(app, site, stream, true).await;
                            }
                        }
                        None => connection(app, site, tcp, false).await,
                    }
                });
            }
            ev = events.recv() => match ev {
                Ok(ev) if ev.kernel_id == site.kernel_id && matches!(ev.status, KernelStatus::Terminating | KernelStatus::Terminated | KernelStatus::Error) => break,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = closed.changed() => break,
            _ = &mut closing => break,
        }
    }
    if let Some(app) = app.upgrade() {
        app.apps.close(&site);
    } else {
        let _ = site.closed.send(true);
    }
    tracing::info!(kernel = %site.kernel_id, app = %site.app, port = site.port, "app closed");
}

/// One browser connection: HTTP/1.1 with upgrades, closed when the app closes.
async fn connection<S>(app: Weak<App>, site: Arc<Site>, io: S, https: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let upstream: Arc<tokio::sync::Mutex<Option<Upstream>>> = Default::default();
    let svc = {
        let site = site.clone();
        hyper::service::service_fn(move |req| {
            let (app, site, upstream) = (app.clone(), site.clone(), upstream.clone());
            async move {
                Ok::<_, std::convert::Infallible>(handle(app, site, upstream, req, https).await)
            }
        })
    };
    let conn = hyper::server::conn::Http::new()
        .http1_only(true)
        .serve_connection(io, svc)
        .with_upgrades();
    let mut closed = site.closed.subscribe();
    if *closed.borrow() {
        return;
    }
    tokio::select! {
        _ = conn => {}
        _ = closed.changed() => {}
    }
}

/// A connection to the service, reused by the requests of one browser connection.
struct Upstream {
    send: hyper::client::conn::SendRequest<Body>,
}

async fn handle(
    app: Weak<App>,
    site: Arc<Site>,
    upstream: Arc<tokio::sync::Mutex<Option<Upstream>>>,
    mut req: Request<Body>,
    https: bool,
) -> Response<Body> {
    let Some(app) = app.upgrade() else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is shutting down.",
        );
    };
    if !same_site_origin(req.headers(), https) {
        return page(
            StatusCode::FORBIDDEN,
            "This app only answers pages of its own origin.",
        );
    }
    if req.uri().path() == LAUNCH_PATH {
        return launch(&app, &site, &req, https);
    }
    let cookie_name = site.cookie_name();
    let authorised = cookies(req.headers()).any(|(n, v)| n == cookie_name && site.valid_cookie(v));
    if !authorised {
        return page(
            StatusCode::FORBIDDEN,
            "Open this app from Backend.AI: its link is missing, used already or expired.",
        );
    }
    strip_credentials(req.headers_mut());
    let wants_upgrade = req.headers().contains_key(header::UPGRADE);
    if wants_upgrade {
        // An upgraded connection is the WebSocket's alone: it gets a connection of its own.
        return match connect(&app, &site).await {
            Ok(up) => relay_upgrade(up, req).await,
            Err(e) => page(StatusCode::BAD_GATEWAY, &e),
        };
    }
    let mut guard = upstream.lock().await;
    // The connection of the previous request, if the service kept it open.
    if let Some(up) = guard.as_mut() {
        let ready = std::future::poll_fn(|cx| up.send.poll_ready(cx)).await;
        if ready.is_err() {
            *guard = None;
        }
    }
    if guard.is_none() {
        match connect(&app, &site).await {
            Ok(u) => *guard = Some(u),
            Err(e) => return page(StatusCode::BAD_GATEWAY, &e),
        }
    }
    let Some(up) = guard.as_mut() else {
        return page(StatusCode::BAD_GATEWAY, "no connection to the app");
    };
    if std::future::poll_fn(|cx| up.send.poll_ready(cx))
        .await
        .is_err()
    {
        *guard = None;
        return page(StatusCode::BAD_GATEWAY, "the app closed the connection");
    }
    match up.send.send_request(req).await {
        Ok(resp) => resp,
        Err(e) => {
            *guard = None;
            page(
                StatusCode::BAD_GATEWAY,
                &format!("the app did not answer: {e}"),
            )
        }
    }
}

/// Sends an upgrade request (WebSocket) on a connection of its own, and once the service
/// switches protocols, splices the two upgraded connections.
async fn relay_upgrade(mut up: Upstream, mut req: Request<Body>) -> Response<Body> {
    let downstream = hyper::upgrade::on(&mut req);
    let (parts, body) = req.into_parts();
    let mut resp = match up.send.send_request(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => {
            return page(
                StatusCode::BAD_GATEWAY,
                &format!("the app did not answer: {e}"),
            )
        }
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return resp;
    }
    let upgraded_up = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (Ok(mut a), Ok(mut b)) = (downstream.await, upgraded_up.await) else {
            return;
        };
        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
    });
    resp
}

/// A new connection to the service: a byte channel through the agent, with an HTTP/1.1
/// client on it.
async fn connect(app: &Arc<App>, site: &Site) -> Result<Upstream, String> {
    let kernel_id = site.kernel_id.clone();
    let live = app
        .store
        .read(move |c| crate::store::kernels::kernel(c, &kernel_id))
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the session has ended")?;
    let client = crate::registry::ops::client(&app.registry, &live)
        .await
        .map_err(|e| describe(ApiError::from(e)))?;
    let _ = app.count_query(&live.id);
    let channel = client
        .connect_service(&live.id, &site.app)
        .await
        .map_err(|e| describe(agent_error(Problem::KernelExecutionFailed, e)))?;
    let io = byte_pipe(channel);
    let (send, conn) = hyper::client::conn::Builder::new()
        .handshake::<_, Body>(io)
        .await
        .map_err(|e| e.to_string())?;
    // The connection hands itself over to an upgrade (WebSocket) when the service
    // switches protocols.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Upstream { send })
}

/// Turns a byte channel to the service into a local stream.
fn byte_pipe(channel: ByteChannel) -> tokio::io::DuplexStream {
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut rd, mut wr) = tokio::io::split(theirs);
    let ByteChannel { tx, mut rx } = channel;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let msg = StreamIn {
                        data: buf[..n].to_vec(),
                        ..Default::default()
                    };
                    if tx.send(msg).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Ok(Some(out)) = rx.message().await {
            if out.exited || wr.write_all(&out.data).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    ours
}

/// `GET /_bai/launch?token=…`: a valid, unused token for this app sets the app cookie and
/// sends the browser to the app.
fn launch(app: &App, site: &Site, req: &Request<Body>, https: bool) -> Response<Body> {
    let token = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .unwrap_or_default();
    if token.is_empty() || !app.apps.redeem(token, site) {
        return page(
            StatusCode::FORBIDDEN,
            "This launch link was used already or has expired: open the app again from Backend.AI.",
        );
    }
    let value = site.new_cookie();
    let secure = if https { "; Secure" } else { "" };
    let cookie = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        site.cookie_name(),
        COOKIE_TTL.as_secs()
    );
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    let h = resp.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static("/"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        h.insert(header::SET_COOKIE, v);
    }
    resp
}

/// The request's cookies as (name, value) pairs.
fn cookies(h: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
}

/// Removes what would let the app act as its user: `Authorization`, the UI login cookie
/// and the app cookies (the app's own cookies stay).
fn strip_credentials(h: &mut HeaderMap) {
    h.remove(header::AUTHORIZATION);
    h.remove(header::PROXY_AUTHORIZATION);
    let kept: Vec<String> = cookies(h)
        .filter(|(n, _)| *n != UI_COOKIE && !n.starts_with("bai_app_"))
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    h.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            h.insert(header::COOKIE, v);
        }
    }
}

/// No `Origin`, or one equal to this app's own origin (scheme, host and port).
fn same_site_origin(h: &HeaderMap, https: bool) -> bool {
    let Some(origin) = h.get(header::ORIGIN) else {
        return true;
    };
    let Some(host) = h.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let scheme = if https { "https" } else { "http" };
    origin
        .to_str()
        .is_ok_and(|o| o.eq_ignore_ascii_case(&format!("{scheme}://{host}")))
}

/// A short HTML page for the browser.
fn page(status: StatusCode, msg: &str) -> Response<Body> {
    let escaped = msg
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>Backend.AI app</title>\
         <p style=\"font-family:sans-serif\">{escaped}</p>\n"
    );
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse_and_refuse_nonsense() {
        assert_eq!(
            "30000-30099".parse(),
            Ok(PortRange {
                first: 30000,
                last: 30099
            })
        );
        assert_eq!("0".parse(), Ok(PortRange { first: 0, last: 0 }));
        for bad in ["", "x", "30099-30000", "0-10", "70000-70001"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_are_stripped_and_other_cookies_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("BackendAI x"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("bai_session=secret; _xsrf=abc"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("bai_app_30001=c"));
        strip_credentials(&mut h);
        assert!(h.get(header::AUTHORIZATION).is_none());
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h.get(header::COOKIE).unwrap(), "_xsrf=abc");
    }

    #[test]
    fn only_the_apps_own_origin_passes() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:30001"));
        assert!(same_site_origin(&h, false));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:30001"),
        );
        assert!(same_site_origin(&h, false));
        assert!(!same_site_origin(&h, true));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8081"),
        );
        assert!(!same_site_origin(&h, false));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_site_origin(&h, false));
    }
}
