//! GraphQL object types: thin views over store rows, named and shaped as the original's.

use super::scalars::{BigInt, DateTime, JsonString, Uuid};
use super::Context;
use crate::domain::KernelStatus;
use crate::store::directory::{DomainRow, GroupRow, UserRow};
use crate::store::keypairs::{KeypairRow, PolicyRow, PresetRow};
use crate::store::sessions::{AgentRow, KernelFilter, KernelRow, UNPAGED_LIMIT};
use crate::store::vfolders::VFolderRow;
use juniper::{graphql_object, FieldResult, GraphQLObject};
use rust_decimal::prelude::ToPrimitive;
use serde_json::Value;
use tokio::sync::OnceCell;

fn dt(s: &str) -> Option<DateTime> {
    Some(DateTime::from_stored(s))
}

fn json(s: &str) -> Option<JsonString> {
    Some(JsonString(s.to_owned()))
}

/// A list of names as GraphQL's `[String]`.
fn names(v: &[String]) -> Option<Vec<Option<String>>> {
    Some(v.iter().cloned().map(Some).collect())
}

fn slot(json_text: &str, name: &str) -> Option<f64> {
    let v: Value = serde_json::from_str(json_text).ok()?;
    let slots = crate::domain::ResourceSlots::from_json(&v).ok()?;
    slots.get(name).to_f64()
}

pub struct Domain(pub DomainRow);

#[graphql_object(context = Context, rename_all = "none")]
impl Domain {
    fn name(&self) -> Option<&str> {
        Some(&self.0.name)
    }
    fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    fn is_active(&self) -> Option<bool> {
        Some(self.0.is_active)
    }
    fn created_at(&self) -> Option<DateTime> {
        dt(&self.0.created_at)
    }
    fn modified_at(&self) -> Option<DateTime> {
        dt(&self.0.modified_at)
    }
    fn total_resource_slots(&self) -> Option<JsonString> {
        json(&self.0.total_resource_slots)
    }
    fn integration_id(&self) -> Option<&str> {
        self.0.integration_id.as_deref()
    }
    fn allowed_vfolder_hosts(&self) -> Option<Vec<Option<String>>> {
        names(&self.0.allowed_vfolder_hosts)
    }
    fn allowed_docker_registries(&self) -> Option<Vec<Option<String>>> {
        names(&self.0.allowed_docker_registries)
    }
}

pub struct Group(pub GroupRow);

#[graphql_object(context = Context, rename_all = "none")]
impl Group {
    fn id(&self) -> Option<Uuid> {
        Some(Uuid(self.0.id.clone()))
    }
    fn name(&self) -> Option<&str> {
        Some(&self.0.name)
    }
    fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    fn is_active(&self) -> Option<bool> {
        Some(self.0.is_active)
    }
    fn created_at(&self) -> Option<DateTime> {
        dt(&self.0.created_at)
    }
    fn modified_at(&self) -> Option<DateTime> {
        dt(&self.0.modified_at)
    }
    fn domain_name(&self) -> Option<&str> {
        Some(&self.0.domain_name)
    }
    fn total_resource_slots(&self) -> Option<JsonString> {
        json(&self.0.total_resource_slots)
    }
    fn integration_id(&self) -> Option<&str> {
        self.0.integration_id.as_deref()
    }
    fn allowed_vfolder_hosts(&self) -> Option<Vec<Option<String>>> {
        names(&self.0.allowed_vfolder_hosts)
    }
}

#[derive(GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct UserGroup {
    pub id: Option<Uuid>,
    pub name: Option<String>,
}

pub struct User(pub UserRow);

#[graphql_object(context = Context, rename_all = "none")]
impl User {
    fn uuid(&self) -> Option<Uuid> {
        Some(Uuid(self.0.uuid.clone()))
    }
    fn username(&self) -> Option<&str> {
        self.0.username.as_deref()
    }
    fn email(&self) -> Option<&str> {
        Some(&self.0.email)
    }
    /// Always null: password hashes never leave the server.
    fn password(&self) -> Option<String> {
        None
    }
    fn need_password_change(&self) -> Option<bool> {
        self.0.need_password_change
    }
    fn full_name(&self) -> Option<&str> {
        self.0.full_name.as_deref()
    }
    fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    fn is_active(&self) -> Option<bool> {
        Some(self.0.is_active)
    }
    fn created_at(&self) -> Option<DateTime> {
        dt(&self.0.created_at)
    }
    fn domain_name(&self) -> Option<&str> {
        self.0.domain_name.as_deref()
    }
    fn role(&self) -> Option<&str> {
        Some(self.0.role.as_str())
    }
    async fn groups(&self, ctx: &Context) -> FieldResult<Option<Vec<Option<UserGroup>>>> {
        let groups = ctx.app.store.user_groups(&self.0.uuid).await?;
        Ok(Some(
            super::query::capped(groups)
                .into_iter()
                .map(|(id, name)| {
                    Some(UserGroup {
                        id: Some(Uuid(id)),
                        name: Some(name),
                    })
                })
                .collect(),
        ))
    }
}

/// A keypair; the secret is shown only to its owner (or right after creation).
pub struct KeyPair {
    pub row: KeypairRow,
    pub reveal_secret: bool,
}

impl KeyPair {
    pub fn for_caller(row: KeypairRow, ctx: &Context) -> KeyPair {
        // A web UI login never hands the secret key to page scripts.
        let reveal_secret =
            row.access_key == ctx.caller.keypair.access_key && ctx.caller.ui.is_none();
        KeyPair { row, reveal_secret }
    }
}

#[graphql_object(context = Context, rename_all = "none")]
impl KeyPair {
    fn user_id(&self) -> Option<&str> {
        self.row.user_id.as_deref()
    }
    fn access_key(&self) -> Option<&str> {
        Some(&self.row.access_key)
    }
    fn secret_key(&self) -> Option<&str> {
        self.reveal_secret.then_some(self.row.secret_key.as_str())
    }
    fn is_active(&self) -> Option<bool> {
        Some(self.row.is_active)
    }
    fn is_admin(&self) -> Option<bool> {
        Some(self.row.is_admin)
    }
    fn resource_policy(&self) -> Option<&str> {
        Some(&self.row.resource_policy)
    }
    fn created_at(&self) -> Option<DateTime> {
        dt(&self.row.created_at)
    }
    fn last_used(&self) -> Option<DateTime> {
        self.row.last_used.as_deref().and_then(dt)
    }
    fn concurrency_used(&self) -> Option<i32> {
        i32::try_from(self.row.concurrency_used).ok()
    }
    fn rate_limit(&self) -> Option<i32> {
        i32::try_from(self.row.rate_limit).ok()
    }
    fn num_queries(&self) -> Option<i32> {
        i32::try_from(self.row.num_queries).ok()
    }
    fn user(&self) -> Option<Uuid> {
        Some(Uuid(self.row.user.clone()))
    }
    /// Deprecated in the original; always 0.
    fn concurrency_limit(&self) -> Option<i32> {
        Some(0)
    }
    async fn vfolders(&self, ctx: &Context) -> FieldResult<Option<Vec<Option<VirtualFolder>>>> {
        let rows = ctx.app.store.vfolders_of_user(&self.row.user).await?;
        Ok(Some(
            super::query::capped(rows)
                .into_iter()
                .map(|r| Some(VirtualFolder(r)))
                .collect(),
        ))
    }
    async fn compute_sessions(
        &self,
        ctx: &Context,
        status: Option<String>,
    ) -> FieldResult<Option<Vec<Option<ComputeSession>>>> {
        let f = KernelFilter {
            role: Some("master"),
            access_key: Some(self.row.access_key.clone()),
            status: super::query::status_filter(status)?,
            ..Default::default()
        };
        let (rows, _) = ctx.app.store.kernels(f, UNPAGED_LIMIT, 0).await?;
        Ok(Some(
            rows.into_iter()
                .map(|r| Some(ComputeSession::from(r)))
                .collect(),
        ))
    }
}

pub struct KeyPairResourcePolicy(pub PolicyRow);

#[graphql_object(context = Context, rename_all = "none")]
impl KeyPairResourcePolicy {
    fn name(&self) -> Option<&str> {
        Some(&self.0.name)
    }
    fn created_at(&self) -> Option<DateTime> {
        dt(&self.0.created_at)
    }
    fn default_for_unspecified(&self) -> Option<&str> {
        Some(&self.0.default_for_unspecified)
    }
    fn total_resource_slots(&self) -> Option<JsonString> {
        json(&self.0.total_resource_slots)
    }
    fn max_concurrent_sessions(&self) -> Option<i32> {
        i32::try_from(self.0.max_concurrent_sessions).ok()
    }
    fn max_containers_per_session(&self) -> Option<i32> {
        i32::try_from(self.0.max_containers_per_session).ok()
    }
    fn idle_timeout(&self) -> Option<BigInt> {
        Some(BigInt(self.0.idle_timeout))
    }
    fn max_vfolder_count(&self) -> Option<i32> {
        i32::try_from(self.0.max_vfolder_count).ok()
    }
    fn max_vfolder_size(&self) -> Option<BigInt> {
        Some(BigInt(self.0.max_vfolder_size))
    }
    fn allowed_vfolder_hosts(&self) -> Option<Vec<Option<String>>> {
        names(&self.0.allowed_vfolder_hosts)
    }
}

pub struct ResourcePreset(pub PresetRow);

#[graphql_object(context = Context, rename_all = "none")]
impl ResourcePreset {
    fn name(&self) -> Option<&str> {
        Some(&self.0.name)
    }
    fn resource_slots(&self) -> Option<JsonString> {
        json(&self.0.resource_slots)
    }
}

pub struct VirtualFolder(pub VFolderRow);

#[graphql_object(context = Context, rename_all = "none")]
impl VirtualFolder {
    fn id(&self) -> Option<Uuid> {
        Some(Uuid(self.0.id.clone()))
    }
    fn host(&self) -> Option<&str> {
        Some(&self.0.host)
    }
    fn name(&self) -> Option<&str> {
        Some(&self.0.name)
    }
    fn max_files(&self) -> Option<i32> {
        i32::try_from(self.0.max_files).ok()
    }
    /// KiB.
    fn max_size(&self) -> Option<i32> {
        i32::try_from(self.0.max_size).ok()
    }
    fn created_at(&self) -> Option<DateTime> {
        dt(&self.0.created_at)
    }
    fn last_used(&self) -> Option<DateTime> {
        self.0.last_used.as_deref().and_then(dt)
    }
    fn num_files(&self) -> Option<i32> {
        i32::try_from(self.0.num_files).ok()
    }
    fn cur_size(&self) -> Option<i32> {
        i32::try_from(self.0.cur_size).ok()
    }
}

pub struct Agent {
    pub row: AgentRow,
    live: OnceCell<Option<Value>>,
}

impl From<AgentRow> for Agent {
    fn from(row: AgentRow) -> Self {
        Agent {
            row,
            live: OnceCell::new(),
        }
    }
}

impl Agent {
    async fn live(&self, ctx: &Context) -> Option<Value> {
        self.live
            .get_or_init(|| ctx.live_stat(&self.row.id))
            .await
            .clone()
    }
}

#[graphql_object(context = Context, rename_all = "none")]
impl Agent {
    fn id(&self) -> Option<juniper::ID> {
        Some(juniper::ID::new(self.row.id.clone()))
    }
    fn status(&self) -> Option<&str> {
        Some(&self.row.status)
    }
    fn region(&self) -> Option<&str> {
        Some(&self.row.region)
    }
    fn available_slots(&self) -> Option<JsonString> {
        json(&self.row.available_slots)
    }
    fn occupied_slots(&self) -> Option<JsonString> {
        json(&self.row.occupied_slots)
    }
    fn addr(&self) -> Option<&str> {
        Some(&self.row.addr)
    }
    fn first_contact(&self) -> Option<DateTime> {
        dt(&self.row.first_contact)
    }
    fn lost_at(&self) -> Option<DateTime> {
        self.row.lost_at.as_deref().and_then(dt)
    }
    fn version(&self) -> Option<&str> {
        Some(&self.row.version)
    }
    fn compute_plugins(&self) -> Option<JsonString> {
        json(&self.row.compute_plugins)
    }
    /// Live statistics reported by the agent (`{"node": {...}, "devices": {...}}`).
    async fn live_stat(&self, ctx: &Context) -> Option<JsonString> {
        self.live(ctx).await.map(|v| JsonString(v.to_string()))
    }
    async fn cpu_cur_pct(&self, ctx: &Context) -> Option<f64> {
        stat_value(&self.live(ctx).await?["node"], "cpu_util", "pct")
    }
    async fn mem_cur_bytes(&self, ctx: &Context) -> Option<f64> {
        stat_value(&self.live(ctx).await?["node"], "mem", "current")
    }
    /// MiB.
    fn mem_slots(&self) -> Option<i32> {
        slot(&self.row.available_slots, "mem").map(|b| (b / 1_048_576.0) as i32)
    }
    fn cpu_slots(&self) -> Option<f64> {
        slot(&self.row.available_slots, "cpu")
    }
    fn gpu_slots(&self) -> Option<f64> {
        slot(&self.row.available_slots, "cuda.device")
    }
    fn tpu_slots(&self) -> Option<f64> {
        slot(&self.row.available_slots, "tpu.device")
    }
    fn used_mem_slots(&self) -> Option<i32> {
        slot(&self.row.occupied_slots, "mem").map(|b| (b / 1_048_576.0) as i32)
    }
    fn used_cpu_slots(&self) -> Option<f64> {
        slot(&self.row.occupied_slots, "cpu")
    }
    fn used_gpu_slots(&self) -> Option<f64> {
        slot(&self.row.occupied_slots, "cuda.device")
    }
    fn used_tpu_slots(&self) -> Option<f64> {
        slot(&self.row.occupied_slots, "tpu.device")
    }
    async fn computations(
        &self,
        ctx: &Context,
        status: Option<String>,
    ) -> FieldResult<Option<Vec<Option<Computation>>>> {
        let f = KernelFilter {
            status: super::query::status_filter(status)?,
            ..Default::default()
        };
        let (rows, _) = ctx.app.store.kernels(f, UNPAGED_LIMIT, 0).await?;
        let mine = rows
            .into_iter()
            .filter(|r| r.agent.as_deref() == Some(self.row.id.as_str()));
        Ok(Some(mine.map(|r| Some(Computation::from(r))).collect()))
    }
}

pub struct AgentList {
    pub items: Vec<Agent>,
    pub total_count: i64,
}

#[graphql_object(context = Context, rename_all = "none")]
impl AgentList {
    fn items(&self) -> &[Agent] {
        &self.items
    }
    fn total_count(&self) -> i32 {
        i32::try_from(self.total_count).unwrap_or(i32::MAX)
    }
}

/// A number in a statistics document, e.g. `("mem", "stats.max")` (decimal strings or numbers).
fn stat_value(v: &Value, metric: &str, field: &str) -> Option<f64> {
    let x = &v[metric][field];
    x.as_f64()
        .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
}

/// A kernel's statistics: live ones while it runs, the last recorded ones otherwise.
async fn kernel_stat(
    row: &KernelRow,
    live: &OnceCell<Option<Value>>,
    ctx: &Context,
) -> Option<Value> {
    if matches!(
        row.status.parse(),
        Ok(KernelStatus::Running | KernelStatus::Building)
    ) {
        live.get_or_init(|| ctx.live_stat(&row.id)).await.clone()
    } else {
        serde_json::from_str(row.last_stat.as_deref()?).ok()
    }
}

/// The fields compute sessions, workers and computations share (`SessionCommons`).
macro_rules! session_object {
    ($name:ident { $($extra:tt)* }) => {
        pub struct $name {
            pub row: KernelRow,
            live: OnceCell<Option<Value>>,
        }

        impl From<KernelRow> for $name {
            fn from(row: KernelRow) -> Self {
                $name { row, live: OnceCell::new() }
            }
        }

        impl $name {
            /// A metric of the live (or last) statistics; 0 before the first report, as
            /// clients do arithmetic on these fields.
            async fn metric(&self, ctx: &Context, metric: &str, field: &str) -> Option<f64> {
                let stat = kernel_stat(&self.row, &self.live, ctx).await;
                Some(stat.and_then(|s| stat_value(&s, metric, field)).unwrap_or(0.0))
            }
        }

        #[graphql_object(context = Context, rename_all = "none")]
        impl $name {
            fn sess_id(&self) -> Option<&str> { Some(&self.row.sess_id) }
            fn id(&self) -> Option<juniper::ID> { Some(juniper::ID::new(self.row.id.clone())) }
            fn role(&self) -> Option<&str> { Some(&self.row.role) }
            fn image(&self) -> Option<&str> { self.row.image.as_deref() }
            fn registry(&self) -> Option<&str> { self.row.registry.as_deref() }
            fn domain_name(&self) -> Option<&str> { Some(&self.row.domain_name) }
            fn group_id(&self) -> Option<Uuid> { Some(Uuid(self.row.group_id.clone())) }
            fn group_name(&self) -> Option<&str> { self.row.group_name.as_deref() }
            fn user_uuid(&self) -> Option<Uuid> { Some(Uuid(self.row.user_uuid.clone())) }
            fn access_key(&self) -> Option<&str> { self.row.access_key.as_deref() }
            fn status(&self) -> Option<&str> { Some(&self.row.status) }
            fn status_info(&self) -> Option<&str> { self.row.status_info.as_deref() }
            fn status_changed(&self) -> Option<DateTime> { self.row.status_changed.as_deref().and_then(dt) }
            /// 19.09: every session here is interactive (no batch sessions yet).
            fn sess_type(&self) -> Option<&str> { Some("INTERACTIVE") }
            /// 19.09: the result of a batch session; interactive ones have none.
            fn result(&self) -> Option<&str> { Some("UNDEFINED") }
            fn created_at(&self) -> Option<DateTime> { dt(&self.row.created_at) }
            fn terminated_at(&self) -> Option<DateTime> { self.row.terminated_at.as_deref().and_then(dt) }
            fn agent(&self) -> Option<&str> { self.row.agent.as_deref() }
            fn container_id(&self) -> Option<&str> { self.row.container_id.as_deref() }
            fn service_ports(&self) -> Option<JsonString> { self.row.service_ports.as_deref().and_then(json) }
            fn occupied_slots(&self) -> Option<JsonString> { json(&self.row.occupied_slots) }
            fn occupied_shares(&self) -> Option<JsonString> { json(&self.row.occupied_shares) }
            fn num_queries(&self) -> Option<BigInt> { Some(BigInt(self.row.num_queries)) }
            /// Live statistics, while the kernel runs and its agent reports them.
            async fn live_stat(&self, ctx: &Context) -> Option<JsonString> {
                if !matches!(
                    self.row.status.parse(),
                    Ok(KernelStatus::Running | KernelStatus::Building)
                ) {
                    return None;
                }
                kernel_stat(&self.row, &self.live, ctx).await.map(|v| JsonString(v.to_string()))
            }
            fn last_stat(&self) -> Option<JsonString> { self.row.last_stat.as_deref().and_then(json) }
            fn lang(&self) -> Option<&str> { self.row.image.as_deref() }
            /// MiB.
            fn mem_slot(&self) -> Option<i32> { slot(&self.row.occupied_slots, "mem").map(|b| (b / 1_048_576.0) as i32) }
            fn cpu_slot(&self) -> Option<f64> { slot(&self.row.occupied_slots, "cpu") }
            fn gpu_slot(&self) -> Option<f64> { slot(&self.row.occupied_slots, "cuda.device") }
            fn tpu_slot(&self) -> Option<f64> { slot(&self.row.occupied_slots, "tpu.device") }
            async fn cpu_used(&self, ctx: &Context) -> Option<f64> { self.metric(ctx, "cpu_used", "current").await }
            async fn cpu_using(&self, ctx: &Context) -> Option<f64> { self.metric(ctx, "cpu_util", "pct").await }
            async fn mem_max_bytes(&self, ctx: &Context) -> Option<f64> { self.metric(ctx, "mem", "stats.max").await }
            async fn mem_cur_bytes(&self, ctx: &Context) -> Option<f64> { self.metric(ctx, "mem", "current").await }
            async fn net_rx_bytes(&self, ctx: &Context) -> Option<f64> { self.metric(ctx, "net_rx", "stats.rate").await }
            async fn net_tx_bytes(&self, ctx: &Context) -> Option<f64> { self.metric(ctx, "net_tx", "stats.rate").await }
            async fn io_read_bytes(&self, ctx: &Context) -> Option<f64> { self.metric(ctx, "io_read", "current").await }
            async fn io_write_bytes(&self, ctx: &Context) -> Option<f64> { self.metric(ctx, "io_write", "current").await }
            async fn io_max_scratch_size(&self, ctx: &Context) -> Option<f64> { self.metric(ctx, "io_scratch_size", "stats.max").await }
            async fn io_cur_scratch_size(&self, ctx: &Context) -> Option<f64> { self.metric(ctx, "io_scratch_size", "current").await }
            $($extra)*
        }
    };
}

session_object!(ComputeWorker {});
session_object!(Computation {});
session_object!(ComputeSession {
    fn tag(&self) -> Option<&str> {
        self.row.tag.as_deref()
    }
    async fn workers(&self, ctx: &Context, status: Option<String>) -> FieldResult<Option<Vec<Option<ComputeWorker>>>> {
        let f = KernelFilter {
            role: Some("worker"),
            sess_id: Some(self.row.sess_id.clone()),
            access_key: self.row.access_key.clone(),
            status: super::query::status_filter(status)?,
            ..Default::default()
        };
        let (rows, _) = ctx.app.store.kernels(f, UNPAGED_LIMIT, 0).await?;
        Ok(Some(rows.into_iter().map(|r| Some(ComputeWorker::from(r))).collect()))
    }
});

pub struct ComputeSessionList {
    pub items: Vec<ComputeSession>,
    pub total_count: i64,
}

#[graphql_object(context = Context, rename_all = "none")]
impl ComputeSessionList {
    fn items(&self) -> &[ComputeSession] {
        &self.items
    }
    fn total_count(&self) -> i32 {
        i32::try_from(self.total_count).unwrap_or(i32::MAX)
    }
}

#[derive(GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct KvPair {
    pub key: Option<String>,
    pub value: Option<String>,
}

#[derive(GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct ResourceLimit {
    pub key: Option<String>,
    pub min: Option<String>,
    pub max: Option<String>,
}

/// An image known from registry scans (the `images/…` keys of the shared config).
#[derive(GraphQLObject)]
#[graphql(name = "Image", rename_all = "none")]
pub struct Image {
    pub name: Option<String>,
    pub humanized_name: Option<String>,
    pub tag: Option<String>,
    pub registry: Option<String>,
    pub digest: Option<String>,
    pub labels: Option<Vec<Option<KvPair>>>,
    pub aliases: Option<Vec<Option<String>>>,
    pub size_bytes: Option<BigInt>,
    pub resource_limits: Option<Vec<Option<ResourceLimit>>>,
    pub supported_accelerators: Option<Vec<Option<String>>>,
    pub installed: Option<bool>,
    pub hash: Option<String>,
}
