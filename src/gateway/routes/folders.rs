//! `/folders`: virtual folders (manager-inventory §9). A folder is found by name among the
//! caller's accessible folders (owned: `wd`; group: `wd` for group admins, `rw` otherwise;
//! shared: the granted permission), and every operation needs its permission
//! (`ro` ⊂ `rw` ⊂ `wd`); otherwise it does not exist for the caller (404).
//!
//! File work runs in bounded blocking jobs ([`files::job`]); only regular files are read
//! or written (a FIFO, socket or device in a folder is listed, and refused with a 400).

use crate::domain::UserRole;
use crate::fsconfine::{self as files, FsError};
use crate::gateway::error::{ApiError, Problem};
use crate::gateway::multipart::{part_file_name, SharedBody};
use crate::gateway::router::{json_response, no_content, ok_json, Ctx};
use crate::server::App;
use crate::store::auth::KeypairRecord;
use crate::store::vfolders::{Accessible, NewVFolder, VFolderRefusal};
use crate::vfolder::{self, Hosts, Owner};
use bytes::Bytes;
use flate2::{write::GzEncoder, Compression};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use warp::http::{Response, StatusCode};
use warp::hyper::Body;

type Reply = Result<Response<Body>, ApiError>;

/// The most files one upload request carries.
const MAX_UPLOAD_FILES: usize = 10;

fn me(ctx: &Ctx) -> Result<&KeypairRecord, ApiError> {
    Ok(&ctx.caller()?.keypair)
}

async fn hosts(app: &App) -> Result<Hosts, ApiError> {
    Ok(Hosts::load(app.shared.as_ref(), &app.config.manager.data_dir).await?)
}

fn owner_of_files(app: &App) -> Owner {
    Owner::kernels(app.config.agent.kernel_uid, app.config.agent.kernel_gid)
}

fn fs_error(e: FsError) -> ApiError {
    match e {
        FsError::Invalid(m) => ApiError::bad_params(m),
        // Too much file work under way, or a job that did not end in time.
        FsError::Busy(m) => ApiError::msg(Problem::ServiceUnavailable, m),
        other => ApiError::internal("folder files", other),
    }
}

/// Runs blocking file-system work off the async threads, bounded in number and time.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FsError> + Send + 'static,
) -> Result<T, ApiError> {
    files::job(f).await.map_err(fs_error)
}

fn valid_name(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric();
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| ok(c) || matches!(c, '.' | '_' | '-'))
        && name.chars().next().is_some_and(ok)
        && name.chars().last().is_some_and(ok)
}

async fn accessible(app: &App, kp: &KeypairRecord, all: bool) -> Result<Vec<Accessible>, ApiError> {
    let all = all && kp.user_role == UserRole::Superadmin;
    Ok(app
        .store
        .accessible_vfolders(&kp.user_uuid, kp.user_role == UserRole::Admin, all)
        .await?)
}

/// The folder named in the path, if the caller has `needed` on it.
async fn folder(app: &App, ctx: &Ctx, needed: &str) -> Result<(Accessible, PathBuf), ApiError> {
    let kp = me(ctx)?;
    let name = ctx.param("name");
    let found = accessible(app, kp, false)
        .await?
        .into_iter()
        .find(|f| f.row.name == name && f.allows(needed))
        .ok_or_else(|| {
            ApiError::msg(
                Problem::VFolderNotFound,
                "Your operation may be permission denied.",
            )
        })?;
    let dir = hosts(app).await?.folder_dir(&found.row.host, &found.row.id);
    Ok((found, dir))
}

fn hex_id(id: &str) -> String {
    id.replace('-', "")
}

fn or_none(v: &Option<String>) -> Value {
    json!(v.clone().unwrap_or_else(|| "None".into()))
}

#[derive(Deserialize)]
struct CreateBody {
    name: String,
    #[serde(default)]
    host: Option<String>,
    #[serde(default, alias = "groupId", alias = "group_id")]
    group: Option<String>,
}

/// POST /folders
pub async fn create(app: Arc<App>, ctx: Ctx) -> Reply {
    let body: CreateBody = ctx.json()?;
    let kp = me(&ctx)?;
    if !valid_name(&body.name) {
        return Err(ApiError::bad_params(
            "a folder name is 1 to 64 letters, digits, '.', '_' or '-', starting and ending with a letter or digit",
        ));
    }
    let hosts = hosts(&app).await?;
    let host = match body
        .host
        .filter(|h| !h.is_empty())
        .or(hosts.default_host.clone())
    {
        Some(h) => h,
        None => {
            return Err(ApiError::bad_params(
                "You must specify the vfolder host because the default host is not configured.",
            ))
        }
    };
    // As in 19.09: the policy's hosts, and those of the caller's domain and of the
    // folder's group.
    let group_of_folder = body.group.clone().filter(|g| !g.is_empty());
    let mut allowed = kp.policy.allowed_vfolder_hosts.clone();
    allowed.extend(
        app.store
            .vfolder_hosts_of(kp.domain_name.clone(), group_of_folder, None)
            .await?,
    );
    if !allowed.contains(&host) {
        return Err(ApiError::bad_params(
            "You are not allowed to use this vfolder host.",
        ));
    }
    if !hosts.is_mounted(&host) {
        return Err(ApiError::bad_params("Invalid vfolder host."));
    }
    let (user, group) = match body.group.filter(|g| !g.is_empty()) {
        None => (Some(kp.user_uuid.clone()), None),
        Some(g) => {
            if !kp.is_admin || kp.user_role == UserRole::Superadmin {
                return Err(ApiError::msg(Problem::GenericForbidden, "no permission"));
            }
            let in_domain = app
                .store
                .group(&g)
                .await
                .ok()
                .flatten()
                .is_some_and(|row| Some(&row.domain_name) == kp.domain_name.as_ref());
            if !in_domain {
                return Err(ApiError::bad_params("No such group."));
            }
            (None, Some(g))
        }
    };
    let id = uuid::Uuid::new_v4().to_string();
    let dir = hosts.folder_dir(&host, &id);
    let (u, g) = (user.clone(), group.clone());
    let new = NewVFolder {
        id: id.clone(),
        host: host.clone(),
        name: body.name.clone(),
        user,
        group,
    };
    let row = match app
        .store
        .create_vfolder(new, kp.policy.max_vfolder_count, &kp.user_uuid)
        .await?
    {
        Ok(row) => row,
        Err(VFolderRefusal::TooMany) => {
            return Err(ApiError::bad_params("You cannot create more vfolders."))
        }
        Err(VFolderRefusal::NameTaken) => return Err(ApiError::new(Problem::VFolderAlreadyExists)),
    };
    let owner = owner_of_files(&app);
    let made = tokio::task::spawn_blocking(move || vfolder::create_dir(&dir, owner)).await;
    if !matches!(made, Ok(Ok(()))) {
        app.store.delete_vfolder(&id).await?;
        return Err(ApiError::new(Problem::VFolderCreationFailed));
    }
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"id": hex_id(&row.id), "name": row.name, "host": row.host, "user": u, "group": g}),
    ))
}

#[derive(Deserialize, Default)]
struct ListBody {
    #[serde(default)]
    all: Option<bool>,
}

/// GET /folders
pub async fn list(app: Arc<App>, ctx: Ctx) -> Reply {
    let body: ListBody = ctx.json()?;
    let all = body.all.unwrap_or(false)
        || ctx
            .query_param("all")
            .is_some_and(|v| v == "true" || v == "1");
    let kp = me(&ctx)?;
    let rows: Vec<Value> = accessible(&app, kp, all)
        .await?
        .iter()
        .map(|f| {
            json!({
                "name": f.row.name, "id": hex_id(&f.row.id), "host": f.row.host,
                "created_at": f.row.created_at, "is_owner": f.is_owner, "permission": f.permission,
                "user": or_none(&f.user), "group": or_none(&f.group), "type": f.kind(),
            })
        })
        .collect();
    ok_json(Value::Array(rows))
}

/// GET /folders/_/hosts
pub async fn list_hosts(app: Arc<App>, ctx: Ctx) -> Reply {
    let kp = me(&ctx)?;
    let hosts = hosts(&app).await?;
    let mounted = hosts.mounted();
    // The policy's hosts, and those of the caller's domain and of every group of theirs.
    let mut usable = kp.policy.allowed_vfolder_hosts.clone();
    usable.extend(
        app.store
            .vfolder_hosts_of(kp.domain_name.clone(), None, Some(kp.user_uuid.clone()))
            .await?,
    );
    let allowed: Vec<&String> = mounted.iter().filter(|h| usable.contains(h)).collect();
    let default = hosts.default_host.clone().filter(|d| allowed.contains(&d));
    ok_json(json!({"default": default, "allowed": allowed}))
}

/// GET /folders/{name}
pub async fn info(app: Arc<App>, ctx: Ctx) -> Reply {
    let (f, dir) = folder(&app, &ctx, "ro").await?;
    let n = files::job(move || Ok::<_, FsError>(vfolder::count_top(&dir)))
        .await
        .unwrap_or(0);
    ok_json(json!({
        "name": f.row.name, "id": hex_id(&f.row.id), "host": f.row.host,
        "numFiles": n, "num_files": n, "created": f.row.created_at, "created_at": f.row.created_at,
        "last_used": f.row.last_used.clone().unwrap_or_else(|| f.row.created_at.clone()),
        "user": or_none(&f.user), "group": or_none(&f.group), "type": f.kind(),
        "is_owner": f.is_owner, "permission": f.permission,
    }))
}

#[derive(Deserialize)]
struct RenameBody {
    new_name: String,
}

/// POST /folders/{name}/rename
pub async fn rename(app: Arc<App>, ctx: Ctx) -> Reply {
    let body: RenameBody = ctx.json()?;
    let (f, _) = folder(&app, &ctx, "wd").await?;
    if !f.is_owner {
        return Err(ApiError::bad_params(
            "Cannot change the name of a vfolder that is not owned by me.",
        ));
    }
    if !valid_name(&body.new_name) {
        return Err(ApiError::bad_params(
            "the new name is not a valid folder name",
        ));
    }
    match app
        .store
        .rename_vfolder(&f.row.id, &body.new_name, &me(&ctx)?.user_uuid)
        .await?
    {
        Ok(()) => Ok(json_response(StatusCode::CREATED, &json!({}))),
        Err(_) => Err(ApiError::new(Problem::VFolderAlreadyExists)),
    }
}

/// DELETE /folders/{name}
pub async fn delete(app: Arc<App>, ctx: Ctx) -> Reply {
    let (f, dir) = folder(&app, &ctx, "wd").await?;
    if !f.is_owner {
        return Err(ApiError::bad_params(
            "Cannot delete a vfolder that is not owned by me.",
        ));
    }
    app.store.delete_vfolder(&f.row.id).await?;
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    no_content()
}

#[derive(Deserialize)]
struct PathBody {
    #[serde(default)]
    path: Option<String>,
}

/// POST /folders/{name}/mkdir
pub async fn mkdir(app: Arc<App>, ctx: Ctx) -> Reply {
    let body: PathBody = ctx.json()?;
    let (_, dir) = folder(&app, &ctx, "rw").await?;
    let path = body
        .path
        .ok_or_else(|| ApiError::bad_params("path is required"))?;
    let owner = owner_of_files(&app);
    blocking(move || vfolder::mkdir(&dir, &path, owner)).await?;
    Ok(json_response(StatusCode::CREATED, &json!({})))
}

/// POST /folders/{name}/upload: multipart, one part (field `src`) per file; streamed to
/// disk (each file lands under a temporary name and is moved into place when complete).
/// The body is read to its end (within bounds) before any answer, refusals included, so
/// that the answer reaches a client still sending.
pub async fn upload(app: Arc<App>, mut ctx: Ctx) -> Reply {
    let stream = ctx
        .body_stream
        .take()
        .ok_or_else(|| ApiError::internal("upload", "no body stream"))?
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let body = SharedBody::new(stream);
    let result = store_upload(&app, &ctx, body.clone()).await;
    body.drain().await;
    result
}

async fn store_upload(app: &App, ctx: &Ctx, body: SharedBody) -> Reply {
    let (f, dir) = folder(app, ctx, "rw").await?;
    let ct = ctx
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let boundary = multer::parse_boundary(&ct)
        .map_err(|_| ApiError::bad_params("the body must be multipart/form-data"))?;
    let mut parts = multer::Multipart::new(body, boundary);
    let owner = owner_of_files(app);
    let mut count = 0;
    loop {
        let field = parts.next_field().await.map_err(upload_error)?;
        let Some(mut field) = field else { break };
        count += 1;
        if count > MAX_UPLOAD_FILES {
            return Err(ApiError::bad_params("Too many files!"));
        }
        let rel = part_file_name(&field)?
            .ok_or_else(|| ApiError::bad_params("every part needs a filename"))?;
        let (root, rel2) = (dir.clone(), rel.clone());
        let (target_dir, name) =
            blocking(move || vfolder::upload_target(&root, &rel2, owner)).await?;
        let tmp = target_dir.join(format!(
            ".{name}.upload-{}",
            hex::encode(rand::random::<[u8; 6]>())
        ));
        let written = async {
            let mut file = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .await
                .map_err(|e| ApiError::internal("upload", e))?;
            while let Some(chunk) = field.chunk().await.map_err(upload_error)? {
                file.write_all(&chunk).await.map_err(disk_error)?;
            }
            file.flush().await.map_err(disk_error)?;
            Ok::<_, ApiError>(())
        }
        .await;
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        let (t, d) = (tmp.clone(), target_dir.clone());
        if let Err(e) = blocking(move || vfolder::finish_upload(&t, &d, &name, owner)).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    }
    app.store.touch_vfolder(&f.row.id).await?;
    Ok(json_response(StatusCode::CREATED, &json!({})))
}

fn upload_error(e: multer::Error) -> ApiError {
    let text = e.to_string();
    if text.contains("max-upload-size") {
        ApiError::msg(Problem::GenericBadRequest, text).with_status(StatusCode::PAYLOAD_TOO_LARGE)
    } else {
        ApiError::bad_params(format!("malformed multipart body: {text}"))
    }
}

fn disk_error(e: std::io::Error) -> ApiError {
    if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
        ApiError::msg(
            Problem::GenericBadRequest,
            "the folder's storage host is full",
        )
        .with_status(StatusCode::INSUFFICIENT_STORAGE)
    } else {
        ApiError::internal("upload", e)
    }
}

#[derive(Deserialize)]
struct DeleteFilesBody {
    files: Vec<String>,
    #[serde(default)]
    recursive: bool,
}

/// DELETE /folders/{name}/delete_files
pub async fn delete_files(app: Arc<App>, ctx: Ctx) -> Reply {
    let body: DeleteFilesBody = ctx.json()?;
    let (_, dir) = folder(&app, &ctx, "wd").await?;
    blocking(move || vfolder::delete(&dir, &body.files, body.recursive)).await?;
    ok_json(json!({}))
}

/// GET /folders/{name}/files
pub async fn files(app: Arc<App>, ctx: Ctx) -> Reply {
    let body: PathBody = ctx.json()?;
    let path = ctx
        .query_param("path")
        .or(body.path)
        .unwrap_or_else(|| ".".into());
    let (_, dir) = folder(&app, &ctx, "ro").await?;
    let listing = blocking(move || vfolder::list(&dir, &path)).await?;
    ok_json(json!({"files": Value::Array(listing).to_string()}))
}

#[derive(Deserialize)]
struct DownloadBody {
    #[serde(default)]
    files: Vec<String>,
    #[serde(default)]
    file: Option<String>,
}

/// A response body whose chunks `next` produces (`None` at the end), each in a bounded
/// blocking job of its own: a slow client holds no blocking thread while it reads, so
/// downloads cannot take the blocking pool whatever their number.
fn chunked_body<F>(next: F) -> Body
where
    F: FnMut() -> std::io::Result<Option<Vec<u8>>> + Send + 'static,
{
    let (mut sender, body) = Body::channel();
    // Ends with the file, or when the client goes away (the body is dropped).
    tokio::spawn(async move {
        let mut next = next;
        loop {
            let step = files::job(move || {
                let chunk = next();
                Ok::<_, FsError>((next, chunk))
            })
            .await;
            match step {
                Ok((n, Ok(Some(chunk)))) => {
                    next = n;
                    if sender.send_data(Bytes::from(chunk)).await.is_err() {
                        return;
                    }
                }
                Ok((_, Ok(None))) => return,
                Ok((_, Err(e))) => {
                    tracing::warn!("download: {e}");
                    sender.abort();
                    return;
                }
                Err(e) => {
                    tracing::warn!("download: {e}");
                    sender.abort();
                    return;
                }
            }
        }
    });
    body
}

const CHUNK: usize = 64 << 10;

/// GET /folders/{name}/download: `multipart/mixed`, one gzip-compressed part per file,
/// with the total of the file sizes in `X-TOTAL-PAYLOADS-LENGTH`. Every file is opened
/// before the answer starts, so one that is not a regular file refuses the whole request
/// (400 naming it) rather than cutting the archive short.
pub async fn download(app: Arc<App>, ctx: Ctx) -> Reply {
    let body: DownloadBody = ctx.json()?;
    let (_, dir) = folder(&app, &ctx, "ro").await?;
    if body.files.is_empty() {
        return Err(ApiError::bad_params("files must name at least one file"));
    }
    let mut opened = Vec::new();
    for rel in body.files {
        let root = dir.clone();
        opened.push(blocking(move || vfolder::open(&root, &rel)).await?);
    }
    let total: u64 = opened.iter().map(|(_, n, _)| n).sum();
    // v4.20190315 clients read gzip parts; 19.09 (v4.20190615) ones write each part's bytes
    // as they come, so theirs are sent as they are (identity, as manager 19.09.4+ does).
    let gzip = ctx.version.major < 4 || ctx.version.revision.as_str() < "20190615";
    let boundary = hex::encode(rand::random::<[u8; 16]>());
    let b = boundary.clone();
    let mut queue = opened.into_iter();
    let mut current: Option<(std::fs::File, Option<GzEncoder<Vec<u8>>>)> = None;
    let mut ended = false;
    let mut buf = vec![0u8; CHUNK];
    let body = chunked_body(move || {
        use std::io::{Read, Write};
        loop {
            if let Some((mut file, gz)) = current.take() {
                let n = file.read(&mut buf)?;
                let Some(mut gz) = gz else {
                    if n == 0 {
                        return Ok(Some(b"\r\n".to_vec()));
                    }
                    let out = buf[..n].to_vec();
                    current = Some((file, None));
                    return Ok(Some(out));
                };
                if n == 0 {
                    let mut out = gz.finish()?;
                    out.extend_from_slice(b"\r\n");
                    return Ok(Some(out));
                }
                gz.write_all(&buf[..n])?;
                let out = std::mem::take(gz.get_mut());
                current = Some((file, Some(gz)));
                if !out.is_empty() {
                    return Ok(Some(out));
                }
                continue;
            }
            return Ok(match queue.next() {
                Some((file, _, name)) => {
                    let (encoder, encoding) = if gzip {
                        (
                            Some(GzEncoder::new(Vec::new(), Compression::fast())),
                            "Content-Encoding: gzip",
                        )
                    } else {
                        (None, "Content-Transfer-Encoding: binary")
                    };
                    current = Some((file, encoder));
                    Some(format!(
                        "--{b}\r\nContent-Type: application/octet-stream\r\n{encoding}\r\nContent-Disposition: attachment; filename=\"{}\"\r\n\r\n",
                        name.replace('"', "_")
                    ).into_bytes())
                }
                None if !ended => {
                    ended = true;
                    Some(format!("--{b}--\r\n").into_bytes())
                }
                None => None,
            });
        }
    });
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    if let Ok(v) = format!("multipart/mixed; boundary={boundary}").parse() {
        h.insert("content-type", v);
    }
    if let Ok(v) = total.to_string().parse() {
        h.insert("x-total-payloads-length", v);
    }
    Ok(resp)
}

/// GET /folders/{name}/download_single?file=PATH: the file itself.
pub async fn download_single(app: Arc<App>, ctx: Ctx) -> Reply {
    let body: DownloadBody = ctx.json()?;
    let (_, dir) = folder(&app, &ctx, "ro").await?;
    let rel = ctx
        .query_param("file")
        .or(body.file)
        .ok_or_else(|| ApiError::bad_params("file is required"))?;
    let (mut file, size, name) = blocking(move || vfolder::open(&dir, &rel)).await?;
    let mut buf = vec![0u8; CHUNK];
    let body = chunked_body(move || {
        use std::io::Read;
        let n = file.read(&mut buf)?;
        Ok((n > 0).then(|| buf[..n].to_vec()))
    });
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        warp::http::HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = size.to_string().parse() {
        h.insert("content-length", v);
    }
    if let Ok(v) = format!("attachment; filename=\"{}\"", name.replace('"', "_")).parse() {
        h.insert("content-disposition", v);
    }
    Ok(resp)
}

#[derive(Deserialize)]
struct InviteBody {
    #[serde(default = "rw")]
    perm: String,
    user_ids: Vec<String>,
}

fn rw() -> String {
    "rw".into()
}

/// POST /folders/{name}/invite
pub async fn invite(app: Arc<App>, ctx: Ctx) -> Reply {
    let body: InviteBody = ctx.json()?;
    let kp = me(&ctx)?;
    let (f, _) = folder(&app, &ctx, "ro").await?;
    if !matches!(body.perm.as_str(), "ro" | "rw" | "wd") {
        return Err(ApiError::bad_params("perm must be ro, rw or wd"));
    }
    if body.user_ids.is_empty() {
        return Err(ApiError::bad_params("user_ids must name at least one user"));
    }
    if f.user.as_deref() != Some(kp.user_uuid.as_str()) {
        return Err(ApiError::msg(
            Problem::VFolderNotFound,
            "only the owner of a folder invites others",
        ));
    }
    let invited = app
        .store
        .invite(&f.row.id, &kp.user_email, body.user_ids, &body.perm)
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"invited_ids": invited}),
    ))
}

/// GET /folders/invitations/list
pub async fn invitations(app: Arc<App>, ctx: Ctx) -> Reply {
    let kp = me(&ctx)?;
    let list: Vec<Value> = app
        .store
        .pending_invitations(&kp.user_email)
        .await?
        .into_iter()
        .map(|i| {
            json!({"id": i.id, "inviter": i.inviter, "perm": i.permission, "state": i.state,
                   "created_at": i.created_at, "vfolder_id": hex_id(&i.vfolder)})
        })
        .collect();
    ok_json(json!({"invitations": list}))
}

#[derive(Deserialize)]
struct InvitationBody {
    inv_id: String,
    // Client 19.6.0a1 also sends the invitee's access key; it is not needed.
    #[serde(default)]
    #[allow(dead_code)]
    inv_ak: Option<String>,
}

fn no_invitation() -> ApiError {
    ApiError::msg(Problem::GenericNotFound, "No such invitation found.")
}

/// POST /folders/invitations/accept
pub async fn accept(app: Arc<App>, ctx: Ctx) -> Reply {
    let body: InvitationBody = ctx.json()?;
    let kp = me(&ctx)?;
    let inv = app
        .store
        .invitation(&body.inv_id)
        .await?
        .filter(|i| i.state == "pending" && i.invitee == kp.user_email)
        .ok_or_else(no_invitation)?;
    match app.store.accept_invitation(&inv, &kp.user_uuid).await? {
        Ok(()) => Ok(json_response(
            StatusCode::CREATED,
            &json!({"msg": format!("User {} now can access vfolder {}.", inv.invitee, hex_id(&inv.vfolder))}),
        )),
        Err(_) => Err(ApiError::new(Problem::VFolderAlreadyExists)),
    }
}

/// DELETE /folders/invitations/delete
pub async fn reject(app: Arc<App>, ctx: Ctx) -> Reply {
    let body: InvitationBody = ctx.json()?;
    let kp = me(&ctx)?;
    let inv = app
        .store
        .invitation(&body.inv_id)
        .await?
        .filter(|i| {
            i.state == "pending" && (i.invitee == kp.user_email || i.inviter == kp.user_email)
        })
        .ok_or_else(no_invitation)?;
    app.store.reject_invitation(&inv.id).await?;
    ok_json(json!({"msg": format!("Vfolder invitation is rejected: {}.", inv.id)}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_follow_the_original_slug() {
        for good in ["a", "data", "my-folder.v2", "A_b9"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            ".hidden",
            "a/b",
            "a b",
            "..",
            &"x".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
