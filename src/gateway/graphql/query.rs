//! Query roots: `QueryForAdmin` (admin keypairs) and `QueryForUser` (everyone else).
//! Both call the same scoped resolver functions; the scope comes from the caller.

use super::types::*;
use super::{forbidden, Context};
use crate::domain::{KernelStatus, UserRole};
use crate::store::sessions::{KernelFilter, UNPAGED_LIMIT};
use juniper::{graphql_object, FieldError, FieldResult};

/// The largest page a paged list returns; larger `limit`s are clamped to it (clients of
/// the 19.x series ask for more than this).
pub const MAX_PAGE: i32 = 100;

/// Validates a status filter (`None` or "ALL" means any status).
/// A session list's status filter: one status, or (19.09) a comma-separated list of them.
/// `CANCELLED`, a 19.09 status no session here ever has, matches nothing.
pub fn status_filter(status: Option<String>) -> FieldResult<Option<Vec<KernelStatus>>> {
    let Some(s) = status.filter(|s| !s.eq_ignore_ascii_case("all")) else {
        return Ok(None);
    };
    let mut wanted = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part.eq_ignore_ascii_case("CANCELLED") {
            continue;
        }
        let parsed: KernelStatus = part
            .parse()
            .map_err(|e: crate::domain::UnknownVariant| FieldError::from(e.to_string()))?;
        if !wanted.contains(&parsed) {
            wanted.push(parsed);
        }
    }
    Ok(Some(wanted))
}

fn page(limit: i32, offset: i32) -> FieldResult<(i64, i64)> {
    if limit < 1 || offset < 0 {
        return Err(FieldError::from(
            "limit must be positive and offset non-negative",
        ));
    }
    Ok((i64::from(limit.min(MAX_PAGE)), i64::from(offset)))
}

// ---- resolvers shared by both schemas ------------------------------------------------------

async fn domain(ctx: &Context, name: Option<String>) -> FieldResult<Option<Domain>> {
    let own = ctx.domain();
    let name = match (name, ctx.is_superadmin()) {
        (Some(n), true) => n,
        (Some(n), false) if Some(n.as_str()) == own => n,
        (Some(_), false) => return Err(FieldError::from("no such domain")),
        (None, _) => match own {
            Some(d) => d.to_owned(),
            None => return Ok(None),
        },
    };
    Ok(ctx.app.store.domain(&name).await?.map(Domain))
}

async fn group(ctx: &Context, id: String) -> FieldResult<Option<Group>> {
    let Some(g) = ctx.app.store.group(&id).await? else {
        return Ok(None);
    };
    if ctx.is_superadmin() {
        return Ok(Some(Group(g)));
    }
    if ctx.is_domain_admin() {
        return Ok((Some(g.domain_name.as_str()) == ctx.domain()).then_some(Group(g)));
    }
    let mine = ctx
        .app
        .store
        .groups(None, None, Some(ctx.user_uuid().to_owned()))
        .await?;
    Ok(mine.into_iter().find(|m| m.id == g.id).map(Group))
}

async fn groups(
    ctx: &Context,
    domain_name: Option<String>,
    all: Option<bool>,
    is_active: Option<bool>,
) -> FieldResult<Vec<Group>> {
    let own = ctx.domain().map(str::to_owned);
    let rows = if ctx.is_superadmin() {
        let domain = if all == Some(true) {
            None
        } else {
            domain_name.or(own)
        };
        ctx.app.store.groups(domain, is_active, None).await?
    } else if ctx.is_domain_admin() {
        ctx.app.store.groups(own, is_active, None).await?
    } else {
        ctx.app
            .store
            .groups(own, is_active, Some(ctx.user_uuid().to_owned()))
            .await?
    };
    Ok(rows.into_iter().map(Group).collect())
}

async fn user(ctx: &Context, email: Option<String>) -> FieldResult<Option<User>> {
    let key = email.unwrap_or_else(|| ctx.caller.keypair.user_email.clone());
    let Some(u) = ctx.app.store.user_by_email(&key).await? else {
        return Ok(None);
    };
    let visible = ctx.is_superadmin()
        || u.uuid == ctx.user_uuid()
        || (ctx.is_domain_admin() && u.domain_name.as_deref() == ctx.domain());
    Ok(visible.then_some(User(u)))
}

async fn keypair(ctx: &Context, access_key: Option<String>) -> FieldResult<Option<KeyPair>> {
    let ak = access_key.unwrap_or_else(|| ctx.caller.keypair.access_key.clone());
    let Some(row) = ctx.app.store.keypair(&ak).await? else {
        return Ok(None);
    };
    let visible = ctx.is_superadmin() || row.user == ctx.user_uuid() || {
        // A domain admin sees keypairs of its domain's users, never a superadmin's.
        ctx.is_domain_admin()
            && ctx
                .app
                .store
                .user_by_email(&row.user)
                .await?
                .is_some_and(|owner| {
                    owner.domain_name.as_deref() == ctx.domain()
                        && owner.role != UserRole::Superadmin
                })
    };
    Ok(visible.then(|| KeyPair::for_caller(row, ctx)))
}

async fn keypairs(
    ctx: &Context,
    user_id: Option<String>,
    is_active: Option<bool>,
) -> FieldResult<Vec<KeyPair>> {
    let store = &ctx.app.store;
    let rows = if ctx.is_superadmin() {
        store
            .keypairs(user_id, is_active, None, false, UNPAGED_LIMIT)
            .await?
    } else if ctx.is_domain_admin() {
        let domain = ctx.domain().map(str::to_owned);
        store
            .keypairs(user_id, is_active, domain, true, UNPAGED_LIMIT)
            .await?
    } else {
        let me = ctx.caller.keypair.user_email.clone();
        if user_id.as_ref().is_some_and(|u| *u != me) {
            return Err(forbidden("users can only list their own keypairs"));
        }
        store
            .keypairs(Some(me), is_active, None, false, UNPAGED_LIMIT)
            .await?
    };
    Ok(rows
        .into_iter()
        .map(|r| KeyPair::for_caller(r, ctx))
        .collect())
}

async fn policy(ctx: &Context, name: Option<String>) -> FieldResult<Option<KeyPairResourcePolicy>> {
    let name = name.unwrap_or_else(|| ctx.caller.keypair.policy.name.clone());
    if !ctx.is_admin() {
        let mine = ctx
            .app
            .store
            .policies(Some(ctx.user_uuid().to_owned()))
            .await?;
        return Ok(mine
            .into_iter()
            .find(|p| p.name == name)
            .map(KeyPairResourcePolicy));
    }
    Ok(ctx
        .app
        .store
        .policy(&name)
        .await?
        .map(KeyPairResourcePolicy))
}

async fn policies(ctx: &Context) -> FieldResult<Vec<KeyPairResourcePolicy>> {
    let scope = if ctx.is_admin() {
        None
    } else {
        Some(ctx.user_uuid().to_owned())
    };
    Ok(ctx
        .app
        .store
        .policies(scope)
        .await?
        .into_iter()
        .map(KeyPairResourcePolicy)
        .collect())
}

async fn vfolders(ctx: &Context, access_key: Option<String>) -> FieldResult<Vec<VirtualFolder>> {
    let owner = match access_key {
        None => ctx.user_uuid().to_owned(),
        Some(ak) => match keypair(ctx, Some(ak)).await? {
            Some(kp) => kp.row.user,
            None => return Ok(Vec::new()),
        },
    };
    Ok(ctx
        .app
        .store
        .vfolders_of_user(&owner)
        .await?
        .into_iter()
        .map(VirtualFolder)
        .collect())
}

/// The session filter a caller may use: admins see their scope, users their own key.
fn session_scope(ctx: &Context, access_key: Option<String>) -> FieldResult<KernelFilter> {
    let mut f = KernelFilter::default();
    if ctx.is_superadmin() {
        f.access_key = access_key;
    } else if ctx.is_domain_admin() {
        f.access_key = access_key;
        f.domain = ctx.domain().map(str::to_owned);
    } else {
        let mine = ctx.caller.keypair.access_key.clone();
        if access_key.as_ref().is_some_and(|ak| *ak != mine) {
            return Err(forbidden("users can only see their own sessions"));
        }
        f.access_key = Some(mine);
    }
    Ok(f)
}

async fn session_list(
    ctx: &Context,
    limit: i32,
    offset: i32,
    access_key: Option<String>,
    status: Option<String>,
    group_id: Option<String>,
) -> FieldResult<ComputeSessionList> {
    let (limit, offset) = page(limit, offset)?;
    let mut f = session_scope(ctx, access_key)?;
    f.role = Some("master");
    f.status = status_filter(status)?;
    f.group_id = group_id;
    let (rows, total) = ctx.app.store.kernels(f, limit, offset).await?;
    Ok(ComputeSessionList {
        items: rows.into_iter().map(ComputeSession::from).collect(),
        total_count: total,
    })
}

async fn sessions(
    ctx: &Context,
    access_key: Option<String>,
    status: Option<String>,
    group_id: Option<String>,
) -> FieldResult<Vec<ComputeSession>> {
    let mut f = session_scope(ctx, access_key)?;
    f.role = Some("master");
    f.status = status_filter(status)?;
    f.group_id = group_id;
    Ok(ctx
        .app
        .store
        .kernels(f, UNPAGED_LIMIT, 0)
        .await?
        .0
        .into_iter()
        .map(ComputeSession::from)
        .collect())
}

async fn session(ctx: &Context, sess_id: Option<String>) -> FieldResult<Option<ComputeSession>> {
    let Some(sess_id) = sess_id else {
        return Ok(None);
    };
    let mut f = session_scope(ctx, None)?;
    f.role = Some("master");
    f.sess_id = Some(sess_id);
    // The live session if there is one, else the newest ended one.
    let (rows, _) = ctx.app.store.kernels(f, UNPAGED_LIMIT, 0).await?;
    let pick = rows
        .iter()
        .position(|r| r.status != KernelStatus::Terminated.as_str())
        .or(if rows.is_empty() { None } else { Some(0) });
    Ok(pick.map(|i| ComputeSession::from(rows[i].clone())))
}

async fn workers(
    ctx: &Context,
    sess_id: String,
    status: Option<String>,
) -> FieldResult<Vec<ComputeWorker>> {
    let mut f = session_scope(ctx, None)?;
    f.role = Some("worker");
    f.sess_id = Some(sess_id);
    f.status = status_filter(status)?;
    Ok(ctx
        .app
        .store
        .kernels(f, UNPAGED_LIMIT, 0)
        .await?
        .0
        .into_iter()
        .map(ComputeWorker::from)
        .collect())
}

async fn images(ctx: &Context) -> FieldResult<Vec<Image>> {
    let list = ctx.app.images().list().await?;
    Ok(list.into_iter().map(image_object).collect())
}

async fn image(ctx: &Context, reference: String) -> FieldResult<Option<Image>> {
    match ctx.app.images().resolve(&reference).await {
        Ok(info) => Ok(Some(image_object(info))),
        Err(crate::images::ImageError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn image_object(i: crate::images::ImageInfo) -> Image {
    Image {
        humanized_name: Some(i.name.clone()),
        name: Some(i.name.clone()),
        tag: Some(i.tag.clone()),
        registry: Some(i.registry.clone()),
        hash: Some(i.digest.clone()),
        digest: Some(i.digest.clone()),
        labels: Some(
            i.labels
                .iter()
                .map(|(k, v)| {
                    Some(KvPair {
                        key: Some(k.clone()),
                        value: Some(v.clone()),
                    })
                })
                .collect(),
        ),
        aliases: Some(i.aliases.iter().cloned().map(Some).collect()),
        size_bytes: Some(super::scalars::BigInt(i.size_bytes)),
        resource_limits: Some(
            i.resource_limits
                .iter()
                .map(|(k, (min, max))| {
                    Some(ResourceLimit {
                        key: Some(k.clone()),
                        min: min.clone(),
                        max: Some(max.clone().unwrap_or_else(|| "Infinity".into())),
                    })
                })
                .collect(),
        ),
        supported_accelerators: Some(i.accelerators.iter().cloned().map(Some).collect()),
        installed: Some(i.installed),
    }
}

/// An unpaged list as the schema types it, cut at [`UNPAGED_LIMIT`] rows (the store
/// already limits the long ones; this holds for every list).
fn opt_list<T>(v: Vec<T>) -> Option<Vec<Option<T>>> {
    Some(capped(v).into_iter().map(Some).collect())
}

/// At most [`UNPAGED_LIMIT`] items.
pub fn capped<T>(mut v: Vec<T>) -> Vec<T> {
    v.truncate(usize::try_from(UNPAGED_LIMIT).unwrap_or(usize::MAX));
    v
}

// ---- the two roots -------------------------------------------------------------------------

pub struct QueryForAdmin;

#[graphql_object(context = Context, rename_all = "none")]
impl QueryForAdmin {
    async fn agent(ctx: &Context, agent_id: String) -> FieldResult<Option<Agent>> {
        ctx.require_superadmin()?;
        Ok(ctx.app.store.agent(&agent_id).await?.map(Agent::from))
    }
    async fn agent_list(
        ctx: &Context,
        limit: i32,
        offset: i32,
        status: Option<String>,
    ) -> FieldResult<Option<AgentList>> {
        ctx.require_superadmin()?;
        let (limit, offset) = page(limit, offset)?;
        let (rows, total) = ctx
            .app
            .store
            .agents(agent_status(status)?, limit, offset)
            .await?;
        Ok(Some(AgentList {
            items: rows.into_iter().map(Agent::from).collect(),
            total_count: total,
        }))
    }
    async fn agents(
        ctx: &Context,
        status: Option<String>,
    ) -> FieldResult<Option<Vec<Option<Agent>>>> {
        ctx.require_superadmin()?;
        let (rows, _) = ctx
            .app
            .store
            .agents(agent_status(status)?, UNPAGED_LIMIT, 0)
            .await?;
        Ok(opt_list(rows.into_iter().map(Agent::from).collect()))
    }
    async fn domain(ctx: &Context, name: Option<String>) -> FieldResult<Option<Domain>> {
        domain(ctx, name).await
    }
    async fn domains(
        ctx: &Context,
        is_active: Option<bool>,
    ) -> FieldResult<Option<Vec<Option<Domain>>>> {
        ctx.require_superadmin()?;
        Ok(opt_list(
            ctx.app
                .store
                .domains(is_active)
                .await?
                .into_iter()
                .map(Domain)
                .collect(),
        ))
    }
    async fn group(ctx: &Context, id: String) -> FieldResult<Option<Group>> {
        group(ctx, id).await
    }
    async fn groups(
        ctx: &Context,
        domain_name: Option<String>,
        all: Option<bool>,
        is_active: Option<bool>,
    ) -> FieldResult<Option<Vec<Option<Group>>>> {
        Ok(opt_list(groups(ctx, domain_name, all, is_active).await?))
    }
    async fn image(ctx: &Context, reference: String) -> FieldResult<Option<Image>> {
        image(ctx, reference).await
    }
    async fn images(ctx: &Context) -> FieldResult<Option<Vec<Option<Image>>>> {
        Ok(opt_list(images(ctx).await?))
    }
    async fn user(ctx: &Context, email: Option<String>) -> FieldResult<Option<User>> {
        user(ctx, email).await
    }
    async fn users(
        ctx: &Context,
        is_active: Option<bool>,
    ) -> FieldResult<Option<Vec<Option<User>>>> {
        let domain = if ctx.is_superadmin() {
            None
        } else {
            ctx.domain().map(str::to_owned)
        };
        Ok(opt_list(
            ctx.app
                .store
                .users(domain, is_active, UNPAGED_LIMIT)
                .await?
                .into_iter()
                .map(User)
                .collect(),
        ))
    }
    async fn keypair(ctx: &Context, access_key: Option<String>) -> FieldResult<Option<KeyPair>> {
        keypair(ctx, access_key).await
    }
    async fn keypairs(
        ctx: &Context,
        user_id: Option<String>,
        is_active: Option<bool>,
    ) -> FieldResult<Option<Vec<Option<KeyPair>>>> {
        Ok(opt_list(keypairs(ctx, user_id, is_active).await?))
    }
    async fn keypair_resource_policy(
        ctx: &Context,
        name: Option<String>,
    ) -> FieldResult<Option<KeyPairResourcePolicy>> {
        policy(ctx, name).await
    }
    async fn keypair_resource_policies(
        ctx: &Context,
    ) -> FieldResult<Option<Vec<Option<KeyPairResourcePolicy>>>> {
        Ok(opt_list(policies(ctx).await?))
    }
    async fn resource_preset(
        ctx: &Context,
        name: Option<String>,
    ) -> FieldResult<Option<ResourcePreset>> {
        Ok(match name {
            Some(n) => ctx.app.store.preset(&n).await?.map(ResourcePreset),
            None => None,
        })
    }
    async fn resource_presets(ctx: &Context) -> FieldResult<Option<Vec<Option<ResourcePreset>>>> {
        Ok(opt_list(
            ctx.app
                .store
                .presets()
                .await?
                .into_iter()
                .map(ResourcePreset)
                .collect(),
        ))
    }
    async fn vfolders(
        ctx: &Context,
        access_key: Option<String>,
    ) -> FieldResult<Option<Vec<Option<VirtualFolder>>>> {
        Ok(opt_list(vfolders(ctx, access_key).await?))
    }
    async fn compute_session_list(
        ctx: &Context,
        limit: i32,
        offset: i32,
        access_key: Option<String>,
        status: Option<String>,
        group_id: Option<String>,
    ) -> FieldResult<Option<ComputeSessionList>> {
        Ok(Some(
            session_list(ctx, limit, offset, access_key, status, group_id).await?,
        ))
    }
    async fn compute_sessions(
        ctx: &Context,
        access_key: Option<String>,
        status: Option<String>,
        group_id: Option<String>,
    ) -> FieldResult<Option<Vec<Option<ComputeSession>>>> {
        Ok(opt_list(sessions(ctx, access_key, status, group_id).await?))
    }
    async fn compute_session(
        ctx: &Context,
        sess_id: Option<String>,
    ) -> FieldResult<Option<ComputeSession>> {
        session(ctx, sess_id).await
    }
    async fn compute_workers(
        ctx: &Context,
        sess_id: String,
        status: Option<String>,
    ) -> FieldResult<Option<Vec<Option<ComputeWorker>>>> {
        Ok(opt_list(workers(ctx, sess_id, status).await?))
    }
}

fn agent_status(status: Option<String>) -> FieldResult<Option<String>> {
    match status {
        None => Ok(None),
        Some(s) => {
            let parsed: crate::domain::AgentStatus = s
                .parse()
                .map_err(|e: crate::domain::UnknownVariant| FieldError::from(e.to_string()))?;
            Ok(Some(parsed.as_str().to_owned()))
        }
    }
}

pub struct QueryForUser;

#[graphql_object(context = Context, rename_all = "none")]
impl QueryForUser {
    async fn domain(ctx: &Context, name: Option<String>) -> FieldResult<Option<Domain>> {
        domain(ctx, name).await
    }
    async fn group(ctx: &Context, id: String) -> FieldResult<Option<Group>> {
        group(ctx, id).await
    }
    async fn groups(
        ctx: &Context,
        domain_name: Option<String>,
        is_active: Option<bool>,
    ) -> FieldResult<Option<Vec<Option<Group>>>> {
        Ok(opt_list(groups(ctx, domain_name, None, is_active).await?))
    }
    async fn image(ctx: &Context, reference: String) -> FieldResult<Option<Image>> {
        image(ctx, reference).await
    }
    async fn images(ctx: &Context) -> FieldResult<Option<Vec<Option<Image>>>> {
        Ok(opt_list(images(ctx).await?))
    }
    async fn user(ctx: &Context) -> FieldResult<Option<User>> {
        user(ctx, None).await
    }
    async fn keypair(ctx: &Context) -> FieldResult<Option<KeyPair>> {
        keypair(ctx, None).await
    }
    async fn keypairs(
        ctx: &Context,
        user_id: Option<String>,
        is_active: Option<bool>,
    ) -> FieldResult<Option<Vec<Option<KeyPair>>>> {
        Ok(opt_list(keypairs(ctx, user_id, is_active).await?))
    }
    async fn keypair_resource_policy(
        ctx: &Context,
        name: Option<String>,
    ) -> FieldResult<Option<KeyPairResourcePolicy>> {
        policy(ctx, name).await
    }
    async fn keypair_resource_policies(
        ctx: &Context,
    ) -> FieldResult<Option<Vec<Option<KeyPairResourcePolicy>>>> {
        Ok(opt_list(policies(ctx).await?))
    }
    async fn resource_preset(
        ctx: &Context,
        name: Option<String>,
    ) -> FieldResult<Option<ResourcePreset>> {
        Ok(match name {
            Some(n) => ctx.app.store.preset(&n).await?.map(ResourcePreset),
            None => None,
        })
    }
    async fn resource_presets(ctx: &Context) -> FieldResult<Option<Vec<Option<ResourcePreset>>>> {
        Ok(opt_list(
            ctx.app
                .store
                .presets()
                .await?
                .into_iter()
                .map(ResourcePreset)
                .collect(),
        ))
    }
    async fn vfolders(ctx: &Context) -> FieldResult<Option<Vec<Option<VirtualFolder>>>> {
        Ok(opt_list(vfolders(ctx, None).await?))
    }
    async fn compute_session_list(
        ctx: &Context,
        limit: i32,
        offset: i32,
        access_key: Option<String>,
        status: Option<String>,
        group_id: Option<String>,
    ) -> FieldResult<Option<ComputeSessionList>> {
        Ok(Some(
            session_list(ctx, limit, offset, access_key, status, group_id).await?,
        ))
    }
    async fn compute_sessions(
        ctx: &Context,
        status: Option<String>,
    ) -> FieldResult<Option<Vec<Option<ComputeSession>>>> {
        Ok(opt_list(sessions(ctx, None, status, None).await?))
    }
    async fn compute_session(
        ctx: &Context,
        sess_id: Option<String>,
    ) -> FieldResult<Option<ComputeSession>> {
        session(ctx, sess_id).await
    }
    async fn compute_workers(
        ctx: &Context,
        sess_id: String,
        status: Option<String>,
    ) -> FieldResult<Option<Vec<Option<ComputeWorker>>>> {
        Ok(opt_list(workers(ctx, sess_id, status).await?))
    }
}
