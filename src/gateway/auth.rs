//! Signed-request authentication, step for step as the original (manager-inventory §2):
//! date window, header parsing, key lookup, sign method, version header, body hash,
//! derived-key HMAC compared in constant time.

use super::error::{ApiError, Problem};
use super::router::Caller;
use crate::server::App;
use crate::signing::{parse_date, HashAlg, SigningInput};
use warp::http::{HeaderMap, Method};

/// Requests whose date is further than this from the server's clock are refused.
pub const DATE_SKEW: chrono::Duration = chrono::Duration::minutes(15);

/// API versions before this one hash the request body into the signature.
const BODY_HASH_UNTIL: &str = "v4.20181215";

pub enum Outcome {
    Authorized(Box<Caller>),
    /// No `Authorization` header, or a signature that does not match.
    NotAuthorized,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
}

fn bad(detail: &str) -> ApiError {
    ApiError::msg(Problem::InvalidAuthParameters, detail)
}

/// The media type without parameters, lower-cased; `application/octet-stream` if absent.
pub fn media_type(h: &HeaderMap) -> String {
    header(h, "content-type")
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|ct| !ct.is_empty())
        .unwrap_or_else(|| "application/octet-stream".into())
}

/// `(sign method, access key, signature)` from an Authorization header value.
pub fn parse_authorization(value: &str) -> Result<(String, String, String), ApiError> {
    let (scheme, rest) = value
        .split_once(' ')
        .ok_or_else(|| bad("Malformed authorization header"))?;
    if scheme != "BackendAI" && scheme != "Sorna" {
        return Err(bad("Invalid authorization type name"));
    }
    let mut sign_method = None;
    let mut credential = None;
    for piece in rest.split(',') {
        if let Some((k, v)) = piece.trim().split_once('=') {
            match k.trim() {
                "signMethod" => sign_method = Some(v.trim()),
                "credential" => credential = Some(v.trim()),
                _ => {}
            }
        }
    }
    let missing = || bad("Missing or malformed authorization parameters");
    let (ak, sig) = credential
        .ok_or_else(missing)?
        .split_once(':')
        .ok_or_else(missing)?;
    let sign_method = sign_method.ok_or_else(missing)?;
    if ak.is_empty() || sig.is_empty() {
        return Err(missing());
    }
    Ok((sign_method.to_owned(), ak.to_owned(), sig.to_owned()))
}

/// Everything the signature covers that is not in the headers.
pub struct RequestLine<'a> {
    pub method: &'a Method,
    pub path_and_query: &'a str,
    pub body: &'a [u8],
}

pub async fn authenticate(
    app: &App,
    h: &HeaderMap,
    line: RequestLine<'_>,
) -> Result<Outcome, ApiError> {
    // 1. The date, checked even when there is no Authorization header.
    let raw_date = header(h, "date")
        .or_else(|| header(h, "x-backendai-date"))
        .or_else(|| header(h, "x-sorna-date"))
        .ok_or_else(|| bad("Date/time sync error"))?;
    let date = parse_date(raw_date).ok_or_else(|| bad("Date/time sync error"))?;
    let now = chrono::Utc::now();
    let skew = now.signed_duration_since(date);
    if skew > DATE_SKEW || skew < -DATE_SKEW {
        return Err(bad("Date/time sync error"));
    }

    // 2. The header.
    let Some(auth) = h.get("authorization") else {
        return Ok(Outcome::NotAuthorized);
    };
    let auth = auth
        .to_str()
        .map_err(|_| bad("Malformed authorization header"))?;
    let (sign_method, access_key, signature) = parse_authorization(auth)?;

    // 3. The key.
    let Some(keypair) = app.store.active_keypair(&access_key).await? else {
        return Err(ApiError::msg(
            Problem::AuthorizationFailed,
            "Access key not found",
        ));
    };

    // 4. The sign method.
    let lowered = sign_method.to_ascii_lowercase();
    let alg = match lowered.split_once('-') {
        Some(("hmac", hash)) => hash.parse::<HashAlg>().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        bad(&format!(
            "Unsupported request signing method ({sign_method})"
        ))
    })?;

    // 5. The version header.
    let (version_label, version) = match (
        header(h, "x-backendai-version"),
        header(h, "x-sorna-version"),
    ) {
        (Some(v), _) => ("x-backendai-version", v),
        (None, Some(v)) => ("x-sorna-version", v),
        (None, None) => return Err(bad("API version missing in request headers")),
    };

    // 6. The body hash, for old API versions only.
    let content_type = media_type(h);
    let body: &[u8] = if version < BODY_HASH_UNTIL && content_type != "multipart/form-data" {
        line.body
    } else {
        b""
    };
    let body_hash = alg.hex_digest(body);

    let host = header(h, "host").unwrap_or(&app.config.manager.hostname);
    let input = SigningInput {
        method: line.method.as_str(),
        path_and_query: line.path_and_query,
        raw_date,
        date,
        host,
        content_type: &content_type,
        version_label,
        version,
        body_hash: &body_hash,
    };
    if !input.verify(alg, &keypair.secret_key, &signature) {
        app.metrics.auth_failure();
        return Ok(Outcome::NotAuthorized);
    }
    app.usage.record(&keypair.access_key);
    Ok(Outcome::Authorized(Box::new(Caller { keypair, ui: None })))
}

/// The cookie holding a web UI login token.
pub const UI_COOKIE: &str = "bai_session";

/// The web UI login token of a request, from its `Cookie` header(s).
pub fn ui_cookie(h: &HeaderMap) -> Option<&str> {
    h.get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == UI_COOKIE && !value.is_empty())
        .map(|(_, value)| value)
}

/// Refuses a request whose `Origin` is not the server it is sent to. Browsers set
/// `Origin` on cross-site requests, WebSocket handshakes included.
pub fn same_origin(h: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = h.get("origin") else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
        .unwrap_or_default();
    match header(h, "host") {
        Some(host) if !origin_host.is_empty() && origin_host.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err(ApiError::msg(
            Problem::GenericForbidden,
            "Cross-origin requests cannot use a web UI login.",
        )),
    }
}

/// Authenticates by web UI login cookie. Changing requests (any method but GET and HEAD,
/// on the wire or after `X-Method-Override`) must echo the login's CSRF token in
/// `X-CSRF-Token`.
pub async fn authenticate_cookie(
    app: &App,
    h: &HeaderMap,
    token: &str,
    methods: [&Method; 2],
) -> Result<Outcome, ApiError> {
    same_origin(h)?;
    let Some((keypair, login)) = app
        .store
        .ui_login(token, app.config.manager.ui_session_ttl)
        .await?
    else {
        app.metrics.auth_failure();
        return Ok(Outcome::NotAuthorized);
    };
    let safe = methods
        .iter()
        .all(|m| **m == Method::GET || **m == Method::HEAD);
    if !safe {
        use subtle::ConstantTimeEq;
        let given = header(h, "x-csrf-token").unwrap_or_default();
        if !bool::from(given.as_bytes().ct_eq(login.csrf_token.as_bytes())) {
            return Err(ApiError::msg(
                Problem::GenericForbidden,
                "The CSRF token is missing or wrong; reload the page.",
            ));
        }
    }
    app.usage.record(&keypair.access_key);
    Ok(Outcome::Authorized(Box::new(Caller {
        keypair,
        ui: Some(login),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_schemes_and_rejects_malformed_headers() {
        let (m, ak, sig) = parse_authorization(
            "BackendAI signMethod=HMAC-SHA256, credential=AKIAIOSFODNN7EXAMPLE:abcd",
        )
        .unwrap();
        assert_eq!(
            (m.as_str(), ak.as_str(), sig.as_str()),
            ("HMAC-SHA256", "AKIAIOSFODNN7EXAMPLE", "abcd")
        );
        assert!(parse_authorization("Sorna signMethod=HMAC-SHA1,credential=AK:ff").is_ok());
        let title = |v: &str| {
            parse_authorization(v).unwrap_err().body()["title"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert!(title("Bearer token").contains("Invalid authorization type name"));
        assert!(title("BackendAI").contains("Malformed authorization header"));
        assert!(title("BackendAI signMethod=HMAC-SHA256").contains("Missing or malformed"));
        assert!(title("BackendAI signMethod=HMAC-SHA256, credential=AKONLY")
            .contains("Missing or malformed"));
    }

    #[test]
    fn finds_the_ui_cookie_and_checks_the_origin() {
        let mut h = HeaderMap::new();
        assert_eq!(ui_cookie(&h), None);
        h.append("cookie", "a=1; bai_session=tok; b=2".parse().unwrap());
        assert_eq!(ui_cookie(&h), Some("tok"));
        h.insert("host", "127.0.0.1:8081".parse().unwrap());
        assert!(same_origin(&h).is_ok());
        h.insert("origin", "http://127.0.0.1:8081".parse().unwrap());
        assert!(same_origin(&h).is_ok());
        h.insert("origin", "https://evil.example".parse().unwrap());
        assert_eq!(same_origin(&h).unwrap_err().status(), 403);
        h.insert("origin", "null".parse().unwrap());
        assert!(same_origin(&h).is_err());
    }

    #[test]
    fn media_type_drops_parameters() {
        let mut h = HeaderMap::new();
        assert_eq!(media_type(&h), "application/octet-stream");
        h.insert(
            "content-type",
            "Multipart/Form-Data; boundary=x".parse().unwrap(),
        );
        assert_eq!(media_type(&h), "multipart/form-data");
    }
}
