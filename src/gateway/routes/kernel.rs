//! `/kernel`: create, look up, execute in, and end compute sessions (manager-inventory §1.4).
//! Sessions are named by the client's session token, scoped to the caller's keypair, or to
//! `?owner_access_key=` for admins.

use crate::domain::{AgentStatus, KernelStatus, MountSpec, ResourceSlots, SessionSpec, UserRole};
use crate::gateway::error::agent_error;
use crate::gateway::error::{ApiError, Problem};
use crate::gateway::router::{json_response, no_content, ok_json, Ctx};
use crate::images::ImageError;
use crate::registry::ops;
use crate::registry::sessions::{self, Enqueued, Live, NewSession, Refusal};
use crate::registry::KernelWatch;
use crate::rpc::client::Execute;
use crate::server::App;
use crate::store::auth::KeypairRecord;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use warp::http::{Response, StatusCode};
use warp::hyper::Body;

type Reply = Result<Response<Body>, ApiError>;

/// `^(?=.{4,64}$)\w[\w.-]*\w$` (ASCII), the original's session-token rule.
pub fn valid_token(t: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    (4..=64).contains(&t.len())
        && t.chars().all(|c| word(c) || c == '.' || c == '-')
        && t.chars().next().is_some_and(word)
        && t.chars().last().is_some_and(word)
}

/// The keypair a session call acts for: the caller's, or (admins only) `owner_access_key`.
pub async fn owner(app: &App, ctx: &Ctx) -> Result<KeypairRecord, ApiError> {
    let caller = ctx.caller()?;
    let Some(owner) = ctx
        .query_param("owner_access_key")
        .filter(|o| !o.is_empty())
    else {
        return Ok(caller.keypair.clone());
    };
    if owner == caller.keypair.access_key {
        return Ok(caller.keypair.clone());
    }
    if !caller.is_admin() {
        return Err(ApiError::msg(
            Problem::GenericForbidden,
            "only administrators may act for another keypair (owner_access_key)",
        ));
    }
    let record =
        app.store.active_keypair(&owner).await?.ok_or_else(|| {
            ApiError::msg(Problem::InvalidApiParameters, "no such owner access key")
        })?;
    if !caller.is_superadmin()
        && (record.domain_name != caller.keypair.domain_name
            || record.user_role == UserRole::Superadmin)
    {
        return Err(ApiError::msg(
            Problem::GenericForbidden,
            "the owner keypair is outside your domain",
        ));
    }
    Ok(record)
}

/// The caller's (or owner's) live session named in the path.
async fn session(app: &App, ctx: &Ctx) -> Result<(KeypairRecord, Live), ApiError> {
    let owner = owner(app, ctx).await?;
    let live = sessions::find(&app.store, ctx.param("sess_id"), &owner.access_key)
        .await?
        .ok_or_else(|| ApiError::new(Problem::KernelNotFound))?;
    Ok((owner, live))
}

/// The caller's live session named in the path, counted as one query against it (as the
/// original counts every call that uses a session); `num_queries` is the count before it.
async fn counted_session(app: &App, ctx: &Ctx) -> Result<Live, ApiError> {
    let (_, mut live) = session(app, ctx).await?;
    live.num_queries = app.usage.count_query(&live.id, live.num_queries);
    Ok(live)
}

/// The create body. Keys later clients add (`type`, `startupCommand`, ...) are ignored, as
/// the cluster size is: a session is one container here.
#[derive(Deserialize)]
struct CreateBody {
    #[serde(rename = "clientSessionToken")]
    token: Option<String>,
    #[serde(alias = "lang")]
    image: Option<String>,
    #[serde(alias = "groupName", alias = "group_name")]
    group: Option<String>,
    #[serde(alias = "domainName", alias = "domain_name")]
    domain: Option<String>,
    #[serde(default)]
    config: Option<Value>,
    tag: Option<String>,
    #[serde(rename = "enqueueOnly", default)]
    enqueue_only: Option<bool>,
    #[serde(rename = "maxWaitSeconds", default)]
    max_wait: Option<f64>,
}

/// The requested slots from the new-style `resources` or the legacy `instance*` keys, with
/// unspecified or zero slots filled from the image's minimum.
fn requested_slots(
    config: &serde_json::Map<String, Value>,
    known: &[String],
    image_min: &ResourceSlots,
) -> Result<ResourceSlots, ApiError> {
    for legacy in ["instanceGPUs", "instanceTPUs"] {
        if config.get(legacy).is_some_and(|v| !v.is_null()) {
            return Err(ApiError::bad_params(
                "Client upgrade required to use GPUs/TPUs (v19.03+).",
            ));
        }
    }
    let mut given = ResourceSlots::new();
    match config.get("resources") {
        Some(Value::Object(res)) => {
            for (slot, v) in res {
                if !known.contains(slot) {
                    return Err(ApiError::bad_params(format!(
                        "Unknown requested resource slot: {slot}"
                    )));
                }
                if v.is_null() {
                    continue;
                }
                let q = ResourceSlots::parse_quantity(slot, v)
                    .map_err(|e| ApiError::bad_params(e.to_string()))?;
                given.set(slot.clone(), q);
            }
        }
        None | Some(Value::Null) => {
            if let Some(c) = config.get("instanceCores").filter(|v| !v.is_null()) {
                let q = ResourceSlots::parse_quantity("cpu", c)
                    .map_err(|e| ApiError::bad_params(e.to_string()))?;
                given.set("cpu", q);
            }
            if let Some(m) = config.get("instanceMemory").filter(|v| !v.is_null()) {
                let gib = ResourceSlots::parse_quantity("cpu", m)
                    .map_err(|e| ApiError::bad_params(e.to_string()))?;
                given.set("mem", (gib * Decimal::from(1u64 << 30)).trunc());
            }
        }
        Some(_) => return Err(ApiError::bad_params("config.resources must be an object")),
    }
    let mut out = ResourceSlots::new();
    for slot in known {
        let q = given.get(slot);
        out.set(
            slot.clone(),
            if q.is_zero() { image_min.get(slot) } else { q },
        );
    }
    Ok(out)
}

/// The image's minimum and maximum slots (labels or limits set by hand); without a
/// minimum a session gets one CPU core and 256 MiB.
fn image_bounds(image: &crate::images::ImageInfo) -> (ResourceSlots, ResourceSlots) {
    let mut min = ResourceSlots::new();
    min.set("cpu", Decimal::ONE);
    min.set("mem", Decimal::from(256u64 << 20));
    let mut max = ResourceSlots::new();
    for (slot, (lo, hi)) in &image.resource_limits {
        if let Some(q) = lo
            .as_ref()
            .and_then(|v| ResourceSlots::parse_quantity(slot, &json!(v)).ok())
        {
            min.set(slot.clone(), q);
        }
        if let Some(q) = hi
            .as_ref()
            .and_then(|v| ResourceSlots::parse_quantity(slot, &json!(v)).ok())
        {
            max.set(slot.clone(), q);
        }
    }
    (min, max)
}

/// The group (by name, in the domain) a session goes to, checking membership.
async fn session_group(
    app: &App,
    owner: &KeypairRecord,
    domain: &str,
    group: &str,
) -> Result<Option<String>, ApiError> {
    let superadmin = owner.user_role == UserRole::Superadmin;
    let found = app.store.read_now(|c| {
        crate::store::sessions::session_group(c, group, domain, &owner.user_uuid, superadmin)
    })?;
    Ok(found)
}

/// The mount of each folder name (any folder the owner can reach; read-only where it may
/// only read).
async fn resolve_mounts(
    app: &App,
    owner: &KeypairRecord,
    names: &[String],
) -> Result<Vec<MountSpec>, ApiError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let admin = owner.user_role == UserRole::Admin;
    let folders = app
        .store
        .accessible_vfolders(&owner.user_uuid, admin, false)
        .await?;
    let hosts =
        crate::vfolder::Hosts::load(app.shared.as_ref(), &app.config.manager.data_dir).await?;
    let mut out = Vec::new();
    for name in names {
        let Some(f) = folders.iter().find(|f| &f.row.name == name) else {
            return Err(ApiError::msg(Problem::VFolderNotFound, name.clone()));
        };
        out.push(MountSpec {
            host_path: hosts.folder_dir(&f.row.host, &f.row.id),
            name: name.clone(),
            read_only: f.permission == "ro",
            vfolder_id: Some(f.row.id.replace('-', "")),
        });
    }
    Ok(out)
}

fn service_ports(live: &Live) -> Value {
    live.service_ports
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_else(|| json!([]))
}

fn created_reply(live: &Live, created: bool) -> Reply {
    let mut body = json!({
        "kernelId": live.sess_id,
        "servicePorts": service_ports(live),
        "created": created,
        "status": live.status,
    });
    if live.status != KernelStatus::Running {
        body["statusInfo"] = json!(live.status_info);
    }
    Ok(json_response(StatusCode::CREATED, &body))
}

/// A create request as parsed from its body, before anything is looked up.
struct CreateRequest {
    token: String,
    /// The image reference as given (name, alias, or canonical).
    reference: String,
    domain: String,
    group: String,
    tag: Option<String>,
    /// The body's `config`, for the slots (which need the image to be parsed).
    config: serde_json::Map<String, Value>,
    /// In the request's order (the session's `environ` column keeps it).
    environ: Vec<(String, String)>,
    mount_names: Vec<String>,
    /// How long the call waits for the session to start.
    wait: Duration,
}

/// POST /kernel, /kernel/create: parse, resolve the image, check the limits, build the
/// session's spec, enqueue it, and wait (up to the asked time) for it to start.
pub async fn create(app: Arc<App>, ctx: Ctx) -> Reply {
    let body: CreateBody = ctx.json()?;
    let owner = owner(&app, &ctx).await?;
    let req = parse_create(body, app.config.scheduler.create_timeout)?;
    let image = resolve_image(&app, &req).await?;
    let (group_id, requested) = check_limits(&app, &owner, &req, &image).await?;
    let spec = build_spec(&app, &owner, &req).await?;
    let new = NewSession {
        kernel_id: String::new(),
        sess_id: req.token.clone(),
        access_key: owner.access_key.clone(),
        user_uuid: owner.user_uuid.clone(),
        domain_name: req.domain.clone(),
        group_id,
        image: image.canonical(),
        registry: image.registry.clone(),
        tag: req.tag.clone(),
        requested,
        environ: req
            .environ
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        creation_config: spec,
    };
    let (kernel_id, created, watch) = enqueue(&app, &owner, new).await?;
    wait_for_start(&app, &kernel_id, created, watch, req.wait).await
}

/// The body's own rules: a valid session token, an image named, a config of the right
/// shape; and how long the call may wait.
fn parse_create(body: CreateBody, create_timeout: f64) -> Result<CreateRequest, ApiError> {
    let token = body
        .token
        .ok_or_else(|| ApiError::bad_params("clientSessionToken is required"))?;
    if !valid_token(&token) {
        return Err(ApiError::bad_params(
            "clientSessionToken must be 4 to 64 letters, digits, '_', '-' or '.', starting and ending with a letter, digit or '_'",
        ));
    }
    let reference = body
        .image
        .ok_or_else(|| ApiError::bad_params("image (or lang) is required"))?;
    let config = match body.config {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ApiError::bad_params("config must be an object")),
    };
    let environ = match config.get("environ") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                let v = v
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string());
                (k.clone(), v)
            })
            .collect(),
        Some(_) => return Err(ApiError::bad_params("config.environ must be an object")),
    };
    let not_names = || ApiError::bad_params("config.mounts must be a list of folder names");
    let mount_names = match config.get("mounts") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(not_names)?,
        Some(_) => return Err(not_names()),
    };
    let wait = if body.enqueue_only.unwrap_or(false) {
        Duration::ZERO
    } else {
        // As the 19.09 manager, whose clients send 0 by default: 0 means "until it has
        // started" (here: for at most the server's own create timeout), not "don't wait";
        // `enqueueOnly` is how a client asks not to wait.
        Duration::from_secs_f64(
            body.max_wait
                .filter(|w| w.is_finite() && *w > 0.0)
                .unwrap_or(create_timeout)
                .min(create_timeout),
        )
    };
    Ok(CreateRequest {
        token,
        reference,
        domain: body.domain.unwrap_or_else(|| "default".into()),
        group: body.group.unwrap_or_else(|| "default".into()),
        tag: body.tag,
        config,
        environ,
        mount_names,
        wait,
    })
}

async fn resolve_image(
    app: &App,
    req: &CreateRequest,
) -> Result<crate::images::ImageInfo, ApiError> {
    let reference = &req.reference;
    app.images().resolve(reference).await.map_err(|e| match e {
        ImageError::NotFound(_) => ApiError::msg(
            Problem::ImageNotFound,
            format!("Unknown image reference: {reference}"),
        ),
        ImageError::Invalid(m) => ApiError::bad_params(m),
        ImageError::EngineUnavailable(m) => {
            tracing::warn!("creating {}: {m}", req.token);
            ApiError::msg(
                Problem::ContainerEngineUnavailable,
                "the image cannot be looked up; try again later",
            )
        }
        ImageError::Config(e) => e.into(),
    })
}

/// The session's group (the owner must be in it) and its slots, within the image's
/// minimum and maximum. The keypair's, group's and domain's quotas are checked when it is
/// queued, in the same transaction.
async fn check_limits(
    app: &App,
    owner: &KeypairRecord,
    req: &CreateRequest,
    image: &crate::images::ImageInfo,
) -> Result<(String, ResourceSlots), ApiError> {
    let (domain, group) = (&req.domain, &req.group);
    let group_id = session_group(app, owner, domain, group)
        .await?
        .ok_or_else(|| {
            ApiError::bad_params(format!(
                "{group}: no such group in domain {domain} (or you are not a member of it)"
            ))
        })?;
    let known: Vec<String> = super::config::known_slots(app)
        .await?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let (min, max) = image_bounds(image);
    let requested = requested_slots(&req.config, &known, &min)?;
    if requested.iter().any(|(slot, q)| q < min.get(slot)) {
        return Err(ApiError::bad_params(format!(
            "Your resource request is smaller than the minimum required by the image. ({})",
            min.humanize()
        )));
    }
    if requested
        .iter()
        .any(|(slot, q)| max.get_opt(slot).is_some_and(|m| q > m))
    {
        return Err(ApiError::bad_params(format!(
            "Your resource request is larger than the maximum allowed by the image. ({})",
            max.humanize()
        )));
    }
    Ok((group_id, requested))
}

/// What the session's kernel gets beyond its image and slots: its environment and the
/// folders it mounts.
async fn build_spec(
    app: &App,
    owner: &KeypairRecord,
    req: &CreateRequest,
) -> Result<SessionSpec, ApiError> {
    Ok(SessionSpec {
        environ: req.environ.iter().cloned().collect(),
        mounts: resolve_mounts(app, owner, &req.mount_names).await?,
    })
}

/// Queues `new` (unless some agent could never hold it); returns the kernel the call is
/// about (the new one, or the live session of the same token), whether it is new, and a
/// watch on it.
async fn enqueue<'a>(
    app: &'a App,
    owner: &KeypairRecord,
    mut new: NewSession,
) -> Result<(String, bool, KernelWatch<'a>), ApiError> {
    ensure_some_agent_fits(app, &new.requested).await?;
    // The new kernel's id is chosen here so that its watch starts before it exists: no
    // change is missed, and the create need not read the session it has just queued. It is
    // time-ordered (UUID version 7), so the rows and index entries a batch of creates adds
    // sit together at the end of the id index rather than on a random page each.
    new.kernel_id = uuid::Uuid::now_v7().to_string();
    let new_watch = app.registry.watch(&new.kernel_id);
    match sessions::enqueue(&app.store, new, &owner.policy).await? {
        Ok(Enqueued::New { kernel_id }) => Ok((kernel_id, true, new_watch)),
        Ok(Enqueued::Existing { kernel_id }) => {
            drop(new_watch);
            let watch = app.registry.watch(&kernel_id);
            Ok((kernel_id, false, watch))
        }
        Err(Refusal::Concurrency(max)) => Err(ApiError::msg(
            Problem::QuotaExceeded,
            format!("You cannot run more than {max} concurrent sessions"),
        )),
        Err(Refusal::DifferentImage) => Err(ApiError::new(Problem::KernelAlreadyExists)),
        Err(Refusal::Quota(m)) => Err(ApiError::bad_params(m)),
    }
}

/// Answers once the session runs, fails, or `wait` has passed (at once for zero).
async fn wait_for_start(
    app: &App,
    kernel_id: &str,
    created: bool,
    watch: KernelWatch<'_>,
    wait: Duration,
) -> Reply {
    let deadline = tokio::time::Instant::now() + wait;
    // A session queued just now is PENDING: the first look waits for its first change.
    let mut look = !created || wait.is_zero();
    loop {
        if look {
            let live = sessions::kernel(&app.store, kernel_id)
                .await?
                .ok_or_else(|| ApiError::internal("create", "the new session vanished"))?;
            match live.status {
                KernelStatus::Running => return created_reply(&live, created),
                KernelStatus::Terminated | KernelStatus::Error => {
                    let why = live.status_info.clone().unwrap_or_default();
                    return Err(
                        ApiError::msg(Problem::KernelCreationFailed, live.sess_id.clone())
                            .with_data(json!({"agent-details": why})),
                    );
                }
                _ if wait.is_zero() || tokio::time::Instant::now() >= deadline => {
                    return created_reply(&live, created)
                }
                _ => {}
            }
        }
        // Wait for this kernel's next change (or the deadline), then look again; a change
        // to a status on the way to RUNNING needs no look.
        look = match tokio::time::timeout_at(deadline, watch.changed()).await {
            Ok(status) => !matches!(
                status,
                Some(KernelStatus::Pending | KernelStatus::Preparing | KernelStatus::Pulling)
            ),
            Err(_) => true,
        };
    }
}

/// Refuses at once what no ALIVE agent could ever hold (503), instead of queueing it.
/// What was read is reused for a second when it says yes (a session queued for an agent
/// that has just gone is no worse off than one whose agent goes right after the check);
/// a no is always read afresh.
async fn ensure_some_agent_fits(app: &App, requested: &ResourceSlots) -> Result<(), ApiError> {
    let fits = |capacities: &[ResourceSlots]| capacities.iter().any(|c| requested.fits_in(c));
    if app.registry.recent_capacities().is_some_and(|c| fits(&c)) {
        return Ok(());
    }
    let (agents, _) = app
        .store
        .agents(Some(AgentStatus::Alive.to_string()), 10_000, 0)
        .await?;
    let capacities: Vec<ResourceSlots> = agents
        .iter()
        .filter_map(|a| sessions::parse_slots(&a.available_slots).ok())
        .collect();
    let fit = fits(&capacities);
    app.registry.remember_capacities(capacities);
    if fit {
        Ok(())
    } else if agents.is_empty() {
        Err(ApiError::msg(
            Problem::InstanceNotAvailable,
            "no agent is running",
        ))
    } else {
        Err(ApiError::msg(
            Problem::InstanceNotAvailable,
            format!("no agent is large enough for {}", requested.humanize()),
        ))
    }
}

/// GET /kernel/{sess_id}
pub async fn info(app: Arc<App>, ctx: Ctx) -> Reply {
    let live = counted_session(&app, &ctx).await?;
    let slots = sessions::parse_slots(&live.occupied_slots)?;
    let stat = app.bus.get_stat(&live.id).await.ok().flatten();
    let metric = |name: &str, field: &str| -> Option<f64> {
        stat.as_ref()?[name][field].as_str()?.parse().ok()
    };
    let age_ms = chrono::DateTime::parse_from_rfc3339(&live.created_at)
        .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_milliseconds())
        .unwrap_or(0);
    let mem_limit_kib = (slots.get("mem") / Decimal::from(1024)).trunc();
    ok_json(json!({
        "lang": live.image,
        "image": live.image,
        "registry": live.registry,
        "tag": live.tag,
        "status": live.status,
        "statusInfo": live.status_info,
        "age": age_ms,
        "createdAt": live.created_at,
        "occupiedSlots": slots.to_json(),
        "queryTimeout": -1,
        "idleTimeout": -1,
        "maxCpuCredit": -1,
        "idle": -1,
        "memoryLimit": mem_limit_kib.to_string().parse::<i64>().unwrap_or(0),
        "memoryUsed": metric("mem", "current").map(|b| (b as i64) >> 10).unwrap_or(-1),
        "cpuCreditUsed": metric("cpu_used", "current").unwrap_or(-1.0),
        "numQueriesExecuted": live.num_queries + 1,
        "servicePorts": service_ports(&live),
    }))
}

/// DELETE /kernel/{sess_id}; with `?forced=true` the session's record ends whatever its
/// agent says (admins, or the owner of a session whose agent is gone).
pub async fn destroy(app: Arc<App>, ctx: Ctx) -> Reply {
    let (_, live) = session(&app, &ctx).await?;
    let forced = matches!(
        ctx.query_param("forced").as_deref(),
        Some("true" | "1" | "yes")
    );
    if forced {
        let agent_gone = live.agent_status != Some(AgentStatus::Alive);
        if !ctx.caller()?.is_admin() && !agent_gone {
            return Err(ApiError::msg(
                Problem::GenericForbidden,
                "only admins may force the end of a session whose agent is alive",
            ));
        }
        let stats = ops::destroy_forced(&app.registry, &live, "force-terminated").await?;
        return ok_json(json!({"stats": stats.map(versioned_stats)}));
    }
    let stats = ops::destroy(&app.registry, &live, "user-requested").await?;
    ok_json(json!({"stats": stats.map(versioned_stats)}))
}

/// Marks statistics in the per-metric shape (`{metric: {current, unit_hint, …}}`) as
/// `"version": 2`, as the original agent did: clients print the old flat shape otherwise,
/// and 19.6.0a1 fails on it (`run -s`, `rm -s`).
fn versioned_stats(mut stats: Value) -> Value {
    if let Value::Object(m) = &mut stats {
        let per_metric = !m.is_empty()
            && m.iter()
                .all(|(k, v)| k == "version" || v.get("unit_hint").is_some());
        if per_metric && !m.contains_key("version") {
            m.insert("version".into(), json!(2));
        }
    }
    stats
}

/// PATCH /kernel/{sess_id}
pub async fn restart(app: Arc<App>, ctx: Ctx) -> Reply {
    let live = counted_session(&app, &ctx).await?;
    ops::restart(&app.registry, &live).await?;
    no_content()
}

const MODES: &[&str] = &["query", "batch", "complete", "continue", "input"];

/// POST /kernel/{sess_id}
pub async fn execute(app: Arc<App>, ctx: Ctx) -> Reply {
    let body: serde_json::Map<String, Value> = ctx.json()?;
    let live = counted_session(&app, &ctx).await?;
    let v1 = ctx.version.major < 2;
    let code = match body.get("code") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::bad_params("code must be a string")),
    };
    let run_id = match body.get("runId") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) => None,
        None if v1 => None,
        None => {
            return Err(ApiError::bad_params(
                "runId is missing (send null for a new run)",
            ))
        }
        Some(_) => return Err(ApiError::bad_params("runId must be a string or null")),
    };
    let mode = if v1 {
        "query".to_owned()
    } else {
        match body.get("mode").and_then(Value::as_str) {
            Some(m) if MODES.contains(&m) => m.to_owned(),
            Some(m) => return Err(ApiError::bad_params(format!("unknown mode '{m}'"))),
            None => return Err(ApiError::bad_params("mode is missing")),
        }
    };
    if (mode == "continue" || mode == "input") && run_id.is_none() {
        return Err(ApiError::bad_params(format!("mode '{mode}' needs a runId")));
    }
    let opts = body
        .get("options")
        .cloned()
        .filter(|o| !o.is_null())
        .unwrap_or_else(|| json!({}));
    let client = ops::client(&app.registry, &live).await?;
    if mode == "complete" {
        let items = client
            .get_completions(&live.id, &code, &opts)
            .await
            .map_err(|e| agent_error(Problem::KernelExecutionFailed, e))?;
        return ok_json(json!({"result": {"status": "finished", "completions": items}}));
    }
    let run_id = run_id.unwrap_or_else(|| hex::encode(rand::random::<[u8; 8]>()));
    let results = client
        .execute(
            &live.id,
            &Execute {
                run_id: Some(run_id.clone()),
                mode: &mode,
                code: &code,
                opts: &opts,
                flush_timeout: Some(Duration::from_secs(2)),
                follow: false,
            },
        )
        .await
        .map_err(|e| agent_error(Problem::KernelExecutionFailed, e))?;
    let mut result = results.into_iter().last().unwrap_or_else(|| {
        json!({"status": "finished", "runId": run_id, "exitCode": 130, "options": {}, "files": [], "console": []})
    });
    if v1 {
        result = v1_result(result);
    }
    ok_json(json!({"result": result}))
}

/// The API v1 result shape: `stdout`, `stderr`, `media`, `html` instead of `console`.
fn v1_result(mut r: Value) -> Value {
    let (mut out, mut err, mut media, mut html) =
        (String::new(), String::new(), Vec::new(), Vec::new());
    for item in r["console"].as_array().cloned().unwrap_or_default() {
        match item[0].as_str() {
            Some("stdout") => out.push_str(item[1].as_str().unwrap_or_default()),
            Some("stderr") => err.push_str(item[1].as_str().unwrap_or_default()),
            Some("media") => media.push(item[1].clone()),
            Some("html") => html.push(item[1].clone()),
            _ => {}
        }
    }
    if let Some(o) = r.as_object_mut() {
        o.remove("console");
        o.insert("stdout".into(), json!(out));
        o.insert("stderr".into(), json!(err));
        o.insert("media".into(), json!(media));
        o.insert("html".into(), json!(html));
    }
    r
}

/// POST /kernel/{sess_id}/interrupt
pub async fn interrupt(app: Arc<App>, ctx: Ctx) -> Reply {
    let live = counted_session(&app, &ctx).await?;
    ops::client(&app.registry, &live)
        .await?
        .interrupt_kernel(&live.id)
        .await
        .map_err(|e| agent_error(Problem::KernelExecutionFailed, e))?;
    no_content()
}

#[derive(Deserialize)]
struct CompleteBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    options: Option<Value>,
}

/// POST /kernel/{sess_id}/complete
pub async fn complete(app: Arc<App>, ctx: Ctx) -> Reply {
    let body: CompleteBody = ctx.json()?;
    let live = counted_session(&app, &ctx).await?;
    let opts = body.options.unwrap_or_else(|| json!({}));
    let items = ops::client(&app.registry, &live)
        .await?
        .get_completions(&live.id, &body.code, &opts)
        .await
        .map_err(|e| agent_error(Problem::KernelExecutionFailed, e))?;
    ok_json(json!({"result": {"status": "finished", "completions": items}}))
}

/// GET /kernel/{sess_id}/logs
pub async fn logs(app: Arc<App>, ctx: Ctx) -> Reply {
    let live = counted_session(&app, &ctx).await?;
    let logs = ops::client(&app.registry, &live)
        .await?
        .get_logs(&live.id)
        .await
        .map_err(|e| agent_error(Problem::KernelExecutionFailed, e))?;
    ok_json(json!({"result": {"logs": logs}}))
}

#[derive(Deserialize)]
struct FilesBody {
    #[serde(default = "dot")]
    path: String,
}

fn dot() -> String {
    ".".into()
}

/// How a failed file operation is answered: bad paths and special files are the caller's
/// (400), too much file work under way or a job past its time is 503.
fn file_error(e: crate::agent::AgentError) -> ApiError {
    match e {
        crate::agent::AgentError::Timeout(m) => ApiError::msg(Problem::ServiceUnavailable, m),
        other => agent_error(Problem::KernelExecutionFailed, other),
    }
}

/// GET /kernel/{sess_id}/files: the work directory, or (for a path under a mount) the
/// mounted folder.
pub async fn list_files(app: Arc<App>, ctx: Ctx) -> Reply {
    let body: FilesBody = ctx.json()?;
    let live = counted_session(&app, &ctx).await?;
    let result = ops::client(&app.registry, &live)
        .await?
        .list_files(&live.id, &body.path)
        .await
        .map_err(file_error)?;
    ok_json(result)
}

const MAX_UPLOAD_FILES: usize = 20;
const MAX_UPLOAD_FILE: usize = 1 << 20;

/// POST /kernel/{sess_id}/upload: multipart, one part per file (≤20, each < 1 MiB), the
/// part's filename (percent-decoded) being the path under /home/work; a path under a
/// mounted folder is stored in the folder.
pub async fn upload(app: Arc<App>, ctx: Ctx) -> Reply {
    let live = counted_session(&app, &ctx).await?;
    let files =
        crate::gateway::multipart::small_files(&ctx, MAX_UPLOAD_FILES, MAX_UPLOAD_FILE).await?;
    let client = ops::client(&app.registry, &live).await?;
    for (name, data) in files {
        client
            .upload_file(&live.id, &name, data)
            .await
            .map_err(file_error)?;
    }
    no_content()
}

#[derive(Deserialize)]
struct DownloadBody {
    files: Vec<String>,
}

/// A tar archive holding one file under its base name (what the original agent sent).
fn tar_of(path: &str, data: &[u8]) -> Result<Vec<u8>, ApiError> {
    let name = path.rsplit('/').find(|p| !p.is_empty()).unwrap_or("file");
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_data(&mut header, name, data)
        .and_then(|_| builder.into_inner())
        .map_err(|e| ApiError::internal("download", e))
}

/// GET /kernel/{sess_id}/download: `multipart/mixed`, one tar archive per requested file.
pub async fn download(app: Arc<App>, ctx: Ctx) -> Reply {
    let body: DownloadBody = ctx.json()?;
    let (_, live) = session(&app, &ctx).await?;
    if body.files.is_empty() || body.files.len() > 5 {
        return Err(ApiError::bad_params("download 1 to 5 files at a time"));
    }
    app.count_query(&live.id)?;
    let client = ops::client(&app.registry, &live).await?;
    let boundary = hex::encode(rand::random::<[u8; 16]>());
    let mut out = Vec::new();
    for path in &body.files {
        let data = client
            .download_file(&live.id, path)
            .await
            .map_err(file_error)?;
        let tar = tar_of(path, &data)?;
        out.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
                tar.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(&tar);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let mut resp = Response::new(Body::from(out));
    if let Ok(v) = format!("multipart/mixed; boundary={boundary}").parse() {
        resp.headers_mut().insert("content-type", v);
    }
    Ok(resp)
}
