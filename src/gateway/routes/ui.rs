//! `/ui/`, the admin web UI: the static files of `web/`, embedded in the binary, served under
//! `/ui/`. Paths that name no file get `index.html` (the page routes itself), and every
//! answer carries a strict content security policy: the UI loads only its own files and
//! talks only to this server.

use crate::gateway::error::{ApiError, Problem};
use crate::gateway::router::Ctx;
use crate::server::App;
use std::sync::Arc;
use warp::http::{HeaderValue, Response, StatusCode};
use warp::hyper::Body;

#[derive(rust_embed::RustEmbed)]
#[folder = "web/"]
struct Assets;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The names of every embedded file.
#[cfg(test)]
fn files() -> Vec<String> {
    Assets::iter().map(|f| f.into_owned()).collect()
}

/// GET /ui: the UI lives under /ui/.
pub async fn redirect(_app: Arc<App>, _ctx: Ctx) -> Result<Response<Body>, ApiError> {
    Ok(see_ui())
}

/// A redirect to the UI's start page.
pub fn see_ui() -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::FOUND;
    resp.headers_mut()
        .insert("location", HeaderValue::from_static("/ui/"));
    resp
}

/// GET /ui/ and /ui/{*path}: one embedded file, or the page itself for the UI's own
/// routes. Answers 304 to a matching `If-None-Match`.
pub async fn asset(_app: Arc<App>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let wanted = ctx.param("path").trim_start_matches('/');
    // Only plain relative names: nothing that could climb out of web/.
    let plain = !wanted
        .split('/')
        .any(|seg| seg == ".." || seg == "." || seg.contains('\\') || seg.contains('%'));
    if !plain {
        return Err(ApiError::msg(
            Problem::GenericNotFound,
            "No such file in the UI.",
        ));
    }
    let (path, file) = match Assets::get(wanted).filter(|_| !wanted.is_empty()) {
        Some(f) => (wanted, f),
        // A last segment with a dot names a file that is not there.
        None if wanted.rsplit('/').next().is_some_and(|s| s.contains('.')) => {
            return Err(ApiError::msg(
                Problem::GenericNotFound,
                "No such file in the UI.",
            ))
        }
        None => match Assets::get("index.html") {
            Some(f) => ("index.html", f),
            None => return Err(ApiError::internal("web UI", "index.html is not embedded")),
        },
    };
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    let fresh = ctx
        .headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(Body::from(file.data.into_owned()))
    };
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static(content_type(path)));
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert("etag", v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_scripts_are_embedded() {
        let files = files();
        for needed in ["index.html", "app.js", "style.css"] {
            assert!(files.iter().any(|f| f == needed), "{needed} in {files:?}");
        }
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("x/y.css"), "text/css; charset=utf-8");
    }
}
