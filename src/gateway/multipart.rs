//! Multipart request bodies (`multipart/form-data`), parsed with multer.

use super::error::ApiError;
use super::router::Ctx;

fn boundary(ctx: &Ctx) -> Result<String, ApiError> {
    let ct = ctx
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    multer::parse_boundary(ct)
        .map_err(|_| ApiError::bad_params("the body must be multipart/form-data"))
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
        let name = field
            .file_name()
            .or_else(|| field.name())
            .unwrap_or_default()
            .to_owned();
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
