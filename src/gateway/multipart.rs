//! Multipart request bodies (`multipart/form-data`), parsed with multer: part file names
//! as clients encode them, and request bodies that are read to their end (within bounds)
//! even when the answer is known before.

use super::error::ApiError;
use super::router::{BodyStream, Ctx};
use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

fn boundary(ctx: &Ctx) -> Result<String, ApiError> {
    let ct = ctx
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    multer::parse_boundary(ct)
        .map_err(|_| ApiError::bad_params("the body must be multipart/form-data"))
}

/// The RFC 5987 `filename*` parameter of a Content-Disposition header, decoded (UTF-8
/// only), if there is one.
fn extended_file_name(disposition: &str) -> Result<Option<String>, ApiError> {
    let lower = disposition.to_ascii_lowercase();
    let Some(at) = lower.find("filename*=") else {
        return Ok(None);
    };
    let value = disposition[at + "filename*=".len()..]
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .trim_matches('"');
    let mut pieces = value.splitn(3, '\'');
    let (charset, _language, encoded) = (pieces.next(), pieces.next(), pieces.next());
    match (charset, encoded) {
        (Some(c), Some(encoded)) if c.eq_ignore_ascii_case("utf-8") => decode(encoded).map(Some),
        _ => Err(ApiError::bad_params(
            "filename* must be UTF-8 (utf-8''name)",
        )),
    }
}

fn decode(encoded: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::bad_params("file names must be UTF-8"))
}

/// The file name a part carries, decoded: `filename*` (RFC 5987) where given, else
/// `filename` with its percent-escapes decoded. Client 19.6.0a1 (aiohttp 3.8) sends a
/// nested path as `filename="sub%2Fa.txt"` (RFC 7578 allows percent-encoding), which
/// names `sub/a.txt`. Decoding comes before any path check, so an encoded `..` or `/` is
/// judged as what it decodes to.
pub fn part_file_name(field: &multer::Field<'_>) -> Result<Option<String>, ApiError> {
    let disposition = field
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let Some(name) = extended_file_name(disposition)? {
        return Ok(Some(name));
    }
    field.file_name().map(decode).transpose()
}

/// The files of a small upload: `(filename, bytes)` for each part, at most `max_files`
/// parts of less than `max_size` bytes each (the original's rules and messages).
pub async fn small_files(
    ctx: &Ctx,
    max_files: usize,
    max_size: usize,
) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    let body = ctx.body.clone();
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut parts = multer::Multipart::new(stream, boundary(ctx)?);
    let mut out = Vec::new();
    loop {
        let field = parts
            .next_field()
            .await
            .map_err(|e| ApiError::bad_params(format!("malformed multipart body: {e}")))?;
        let Some(mut field) = field else { break };
        if out.len() == max_files {
            return Err(ApiError::bad_params("Too many files"));
        }
        let name = match part_file_name(&field)? {
            Some(n) => n,
            None => field.name().unwrap_or_default().to_owned(),
        };
        if name.is_empty() {
            return Err(ApiError::bad_params("every part needs a filename"));
        }
        let mut data = Vec::new();
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| ApiError::bad_params(format!("malformed multipart body: {e}")))?
        {
            data.extend_from_slice(&chunk);
            if data.len() >= max_size {
                return Err(ApiError::bad_params("Too large file"));
            }
        }
        out.push((name, data));
    }
    Ok(out)
}

/// A streamed request body that both its parser and the handler hold, so that what the
/// parser leaves unread (it stopped at an error, or never started) can be read to the end
/// before the answer: hyper closes a connection whose request body is left unread, and a
/// client still sending it then sees a broken pipe instead of the answer.
#[derive(Clone)]
pub struct SharedBody(Arc<Mutex<BodyStream>>);

impl SharedBody {
    pub fn new(stream: BodyStream) -> SharedBody {
        SharedBody(Arc::new(Mutex::new(stream)))
    }

    /// Reads and discards the rest of the body: at most 64 MiB, for at most 30 seconds,
    /// and not past an error (an upload over its limit is not read on). Past a bound the
    /// connection closes as before.
    pub async fn drain(mut self) {
        use futures_util::StreamExt;
        const DRAIN_LIMIT: u64 = 64 << 20;
        const DRAIN_TIME: Duration = Duration::from_secs(30);
        let mut seen = 0u64;
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            while let Some(Ok(chunk)) = self.next().await {
                seen += chunk.len() as u64;
                if seen > DRAIN_LIMIT {
                    break;
                }
            }
        })
        .await;
    }
}

impl futures_util::Stream for SharedBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // The lock is held only for this poll; nothing awaits while holding it.
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        inner.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_names_are_decoded_and_others_refused() {
        assert_eq!(
            extended_file_name("form-data; name=\"src\"; filename*=utf-8''sub%2Fa%20b.txt")
                .unwrap(),
            Some("sub/a b.txt".to_owned())
        );
        assert_eq!(
            extended_file_name("form-data; name=\"src\"; filename=\"a.txt\"").unwrap(),
            None
        );
        assert!(extended_file_name("form-data; filename*=latin1''a").is_err());
        assert_eq!(decode("sub%2Fa.txt").unwrap(), "sub/a.txt");
        assert_eq!(decode("%2E%2E%2Fx").unwrap(), "../x");
        assert_eq!(decode("100%.txt").unwrap(), "100%.txt");
        assert!(decode("%FF").is_err());
    }
}
