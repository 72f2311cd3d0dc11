//! Mutations (admin schema only). Each returns `ok`/`msg`; a refused permission is a
//! GraphQL error, a failed change is `ok: false` with the reason.
//!
//! Scope beyond the original: a domain admin manages groups and keypairs of its own domain
//! only, and never keypairs of superadmins (that would hand it superadmin rights);
//! resource policies and presets are global, so only superadmins change them.

use super::scalars::{BigInt, JsonString};
use super::types::*;
use super::{forbidden, Context};
use crate::domain::{generate_keypair, DefaultForUnspecified, UserRole};
use crate::store::directory::{
    normalize_slots, parse_slots, valid_slug, DomainChanges, DomainRow, GroupChanges, GroupRow,
    KeypairChanges, NewUser, PolicyChanges, PresetChanges, UserChanges, UserRow,
};
use crate::store::keypairs::{KeypairRow, PolicyRow, PresetRow};
use crate::store::StoreError;
use juniper::{graphql_object, FieldResult, GraphQLInputObject, GraphQLObject};

/// A mutation's outcome: `Ok(extra)` or a message for `ok: false`.
type Outcome<T> = Result<T, String>;

fn outcome<T>(r: Result<T, StoreError>) -> FieldResult<Outcome<T>> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(StoreError::Invalid(msg)) => Ok(Err(msg)),
        Err(e) if e.is_disk_full() => Err(super::disk_full()),
        Err(e) => Err(e.into()),
    }
}

macro_rules! payload {
    ($name:ident) => {
        #[derive(GraphQLObject)]
        #[graphql(context = Context, rename_all = "none")]
        pub struct $name {
            pub ok: Option<bool>,
            pub msg: Option<String>,
        }
        impl $name {
            fn from<T>(o: Outcome<T>) -> Self {
                match o {
                    Ok(_) => $name {
                        ok: Some(true),
                        msg: Some("success".into()),
                    },
                    Err(m) => $name {
                        ok: Some(false),
                        msg: Some(m),
                    },
                }
            }
        }
    };
    ($name:ident, $field:ident: $ty:ty) => {
        #[derive(GraphQLObject)]
        #[graphql(context = Context, rename_all = "none")]
        pub struct $name {
            pub ok: Option<bool>,
            pub msg: Option<String>,
            pub $field: Option<$ty>,
        }
        impl $name {
            fn from(o: Outcome<Option<$ty>>) -> Self {
                match o {
                    Ok(v) => $name {
                        ok: Some(true),
                        msg: Some("success".into()),
                        $field: v,
                    },
                    Err(m) => $name {
                        ok: Some(false),
                        msg: Some(m),
                        $field: None,
                    },
                }
            }
        }
    };
}

payload!(CreateDomain, domain: Domain);
payload!(ModifyDomain, domain: Domain);
payload!(DeleteDomain);
payload!(CreateGroup, group: Group);
payload!(ModifyGroup, group: Group);
payload!(DeleteGroup);
payload!(CreateUser, user: User);
payload!(ModifyUser, user: User);
payload!(DeleteUser);
payload!(CreateKeyPair, keypair: KeyPair);
payload!(ModifyKeyPair);
payload!(DeleteKeyPair);
payload!(CreateKeyPairResourcePolicy, resource_policy: KeyPairResourcePolicy);
payload!(ModifyKeyPairResourcePolicy);
payload!(DeleteKeyPairResourcePolicy);
payload!(CreateResourcePreset, resource_preset: ResourcePreset);
payload!(ModifyResourcePreset);
payload!(DeleteResourcePreset);
payload!(AliasImage);
payload!(RescanImages);
payload!(DealiasImage);

#[derive(GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct DomainInput {
    description: Option<String>,
    is_active: Option<bool>,
    total_resource_slots: Option<JsonString>,
    allowed_vfolder_hosts: Option<Vec<Option<String>>>,
    allowed_docker_registries: Option<Vec<Option<String>>>,
    integration_id: Option<String>,
}

#[derive(GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct ModifyDomainInput {
    name: Option<String>,
    description: Option<String>,
    is_active: Option<bool>,
    total_resource_slots: Option<JsonString>,
    allowed_vfolder_hosts: Option<Vec<Option<String>>>,
    allowed_docker_registries: Option<Vec<Option<String>>>,
    integration_id: Option<String>,
}

#[derive(GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct GroupInput {
    description: Option<String>,
    is_active: Option<bool>,
    domain_name: String,
    total_resource_slots: Option<JsonString>,
    allowed_vfolder_hosts: Option<Vec<Option<String>>>,
    integration_id: Option<String>,
}

#[derive(GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct ModifyGroupInput {
    name: Option<String>,
    description: Option<String>,
    is_active: Option<bool>,
    domain_name: Option<String>,
    total_resource_slots: Option<JsonString>,
    allowed_vfolder_hosts: Option<Vec<Option<String>>>,
    integration_id: Option<String>,
    user_update_mode: Option<String>,
    user_uuids: Option<Vec<Option<String>>>,
}

#[derive(GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct UserInput {
    username: String,
    password: String,
    need_password_change: bool,
    full_name: Option<String>,
    description: Option<String>,
    is_active: Option<bool>,
    #[graphql(default = "default".to_owned())]
    domain_name: String,
    role: Option<String>,
    group_ids: Option<Vec<Option<String>>>,
}

#[derive(GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct ModifyUserInput {
    username: Option<String>,
    password: Option<String>,
    need_password_change: Option<bool>,
    full_name: Option<String>,
    description: Option<String>,
    is_active: Option<bool>,
    domain_name: Option<String>,
    role: Option<String>,
    group_ids: Option<Vec<Option<String>>>,
}

#[derive(GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct KeyPairInput {
    is_active: Option<bool>,
    is_admin: Option<bool>,
    resource_policy: String,
    concurrency_limit: Option<i32>,
    rate_limit: i32,
}

#[derive(GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct ModifyKeyPairInput {
    is_active: Option<bool>,
    is_admin: Option<bool>,
    resource_policy: Option<String>,
    concurrency_limit: Option<i32>,
    rate_limit: Option<i32>,
}

#[derive(GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct CreateKeyPairResourcePolicyInput {
    default_for_unspecified: String,
    total_resource_slots: JsonString,
    max_concurrent_sessions: i32,
    max_containers_per_session: i32,
    idle_timeout: BigInt,
    max_vfolder_count: i32,
    max_vfolder_size: BigInt,
    allowed_vfolder_hosts: Option<Vec<Option<String>>>,
}

#[derive(GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct ModifyKeyPairResourcePolicyInput {
    default_for_unspecified: Option<String>,
    total_resource_slots: Option<JsonString>,
    max_concurrent_sessions: Option<i32>,
    max_containers_per_session: Option<i32>,
    idle_timeout: Option<BigInt>,
    max_vfolder_count: Option<i32>,
    max_vfolder_size: Option<BigInt>,
    allowed_vfolder_hosts: Option<Vec<Option<String>>>,
}

#[derive(GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct CreateResourcePresetInput {
    resource_slots: JsonString,
}

#[derive(GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct ModifyResourcePresetInput {
    resource_slots: Option<JsonString>,
}

/// The slots of a partial update, parsed if given.
fn slots(v: Option<JsonString>) -> Result<Option<crate::domain::ResourceSlots>, StoreError> {
    v.map(|j| parse_slots(&j.0)).transpose()
}

/// `Ok` if the store changed a row, else "no such {what}: {name}".
fn found(changed: Result<bool, StoreError>, what: &str, name: &str) -> Result<(), StoreError> {
    match changed? {
        true => Ok(()),
        false => Err(StoreError::Invalid(format!("no such {what}: {name}"))),
    }
}

/// The row the store returned, else "no such {what}: {name}".
fn found_row<T>(
    row: Result<Option<T>, StoreError>,
    what: &str,
    name: &str,
) -> Result<T, StoreError> {
    row?.ok_or_else(|| StoreError::Invalid(format!("no such {what}: {name}")))
}

fn list(v: Option<Vec<Option<String>>>) -> Vec<String> {
    v.unwrap_or_default().into_iter().flatten().collect()
}

fn check_slug(kind: &str, name: &str) -> Result<(), StoreError> {
    if valid_slug(name) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!("invalid {kind} name '{name}': letters, digits, '.', '_' and '-', starting and ending with a letter or digit")))
    }
}

fn parse_role(role: &str) -> Result<UserRole, StoreError> {
    role.parse()
        .map_err(|e: crate::domain::UnknownVariant| StoreError::Invalid(e.to_string()))
}

fn hash(password: &str) -> Result<String, StoreError> {
    if password.is_empty() {
        return Err(StoreError::Invalid("the password must not be empty".into()));
    }
    crate::password::hash_password(password).map_err(|e| StoreError::Invalid(e.to_string()))
}

impl Context {
    /// Superadmins manage every group; domain admins those of their own domain.
    fn require_group_admin(&self, domain: &str) -> FieldResult<()> {
        if self.is_superadmin() || (self.is_domain_admin() && self.domain() == Some(domain)) {
            Ok(())
        } else {
            Err(forbidden(
                "only a superadmin or an admin of the group's domain may do this",
            ))
        }
    }

    /// Keypairs of `user`: superadmins any; domain admins those of non-superadmin users
    /// of their own domain.
    fn require_keypair_admin(&self, user: &UserRow) -> FieldResult<()> {
        if self.is_superadmin() {
            return Ok(());
        }
        if self.is_domain_admin()
            && user.domain_name.as_deref() == self.domain()
            && user.role != UserRole::Superadmin
        {
            return Ok(());
        }
        Err(forbidden(
            "domain admins manage only keypairs of their own domain's users",
        ))
    }

    async fn keypair_owner(&self, access_key: &str) -> FieldResult<Option<UserRow>> {
        let Some(kp) = self.app.store.keypair(access_key).await? else {
            return Ok(None);
        };
        Ok(self.app.store.user_by_email(&kp.user).await?)
    }
}

pub struct MutationForAdmin;

#[graphql_object(context = Context, rename_all = "none")]
impl MutationForAdmin {
    async fn create_domain(
        ctx: &Context,
        name: String,
        props: DomainInput,
    ) -> FieldResult<CreateDomain> {
        ctx.require_running().await?;
        ctx.require_superadmin()?;
        let r = async {
            check_slug("domain", &name)?;
            let slots = normalize_slots(
                props
                    .total_resource_slots
                    .as_ref()
                    .map(|j| j.0.as_str())
                    .unwrap_or("{}"),
            )?;
            let row = DomainRow {
                name,
                description: props.description,
                is_active: props.is_active.unwrap_or(true),
                created_at: String::new(),
                modified_at: String::new(),
                total_resource_slots: slots,
                integration_id: props.integration_id,
                allowed_vfolder_hosts: list(props.allowed_vfolder_hosts),
                allowed_docker_registries: list(props.allowed_docker_registries),
            };
            ctx.app
                .store
                .create_domain(row)
                .await
                .map(|d| Some(Domain(d)))
        }
        .await;
        Ok(CreateDomain::from(outcome(r)?))
    }

    async fn modify_domain(
        ctx: &Context,
        name: String,
        props: ModifyDomainInput,
    ) -> FieldResult<ModifyDomain> {
        ctx.require_running().await?;
        ctx.require_superadmin()?;
        let r = async {
            if let Some(n) = &props.name {
                check_slug("domain", n)?;
            }
            let c = DomainChanges {
                name: props.name,
                description: props.description,
                is_active: props.is_active,
                total_resource_slots: slots(props.total_resource_slots)?,
                integration_id: props.integration_id,
                allowed_vfolder_hosts: props.allowed_vfolder_hosts.map(|h| list(Some(h))),
                allowed_docker_registries: props.allowed_docker_registries.map(|h| list(Some(h))),
            };
            found_row(ctx.app.store.modify_domain(&name, c).await, "domain", &name)
                .map(|d| Some(Domain(d)))
        }
        .await;
        Ok(ModifyDomain::from(outcome(r)?))
    }

    /// Soft delete: the domain becomes inactive.
    async fn delete_domain(ctx: &Context, name: String) -> FieldResult<DeleteDomain> {
        ctx.require_running().await?;
        ctx.require_superadmin()?;
        let r = found_row(
            ctx.app
                .store
                .modify_domain(
                    &name,
                    DomainChanges {
                        is_active: Some(false),
                        ..Default::default()
                    },
                )
                .await,
            "domain",
            &name,
        )
        .map(|_| ());
        Ok(DeleteDomain::from(outcome(r)?))
    }

    async fn create_group(
        ctx: &Context,
        name: String,
        props: GroupInput,
    ) -> FieldResult<CreateGroup> {
        ctx.require_running().await?;
        ctx.require_group_admin(&props.domain_name)?;
        let r = async {
            check_slug("group", &name)?;
            if ctx.app.store.domain(&props.domain_name).await?.is_none() {
                return Err(StoreError::Invalid(format!(
                    "no such domain: {}",
                    props.domain_name
                )));
            }
            let slots = normalize_slots(
                props
                    .total_resource_slots
                    .as_ref()
                    .map(|j| j.0.as_str())
                    .unwrap_or("{}"),
            )?;
            let row = GroupRow {
                id: uuid::Uuid::new_v4().to_string(),
                name,
                description: props.description,
                is_active: props.is_active.unwrap_or(true),
                created_at: String::new(),
                modified_at: String::new(),
                domain_name: props.domain_name,
                total_resource_slots: slots,
                integration_id: props.integration_id,
                allowed_vfolder_hosts: list(props.allowed_vfolder_hosts),
            };
            ctx.app
                .store
                .create_group(row)
                .await
                .map(|g| Some(Group(g)))
        }
        .await;
        Ok(CreateGroup::from(outcome(r)?))
    }

    async fn modify_group(
        ctx: &Context,
        gid: String,
        props: ModifyGroupInput,
    ) -> FieldResult<ModifyGroup> {
        ctx.require_running().await?;
        let Some(existing) = ctx.app.store.group(&gid).await? else {
            return Ok(ModifyGroup::from(Err(format!("no such group: {gid}"))));
        };
        ctx.require_group_admin(&existing.domain_name)?;
        if let Some(d) = &props.domain_name {
            ctx.require_group_admin(d)?;
        }
        let r = async {
            if let Some(n) = &props.name {
                check_slug("group", n)?;
            }
            let members = match props.user_update_mode.as_deref() {
                None => None,
                Some("add") => Some((true, list(props.user_uuids))),
                Some("remove") => Some((false, list(props.user_uuids))),
                Some(other) => {
                    return Err(StoreError::Invalid(format!(
                        "user_update_mode must be 'add' or 'remove', not '{other}'"
                    )))
                }
            };
            let c = GroupChanges {
                name: props.name,
                description: props.description,
                is_active: props.is_active,
                domain_name: props.domain_name,
                total_resource_slots: slots(props.total_resource_slots)?,
                integration_id: props.integration_id,
                allowed_vfolder_hosts: props.allowed_vfolder_hosts.map(|h| list(Some(h))),
            };
            found_row(
                ctx.app.store.modify_group(&gid, c, members).await,
                "group",
                &gid,
            )
            .map(|g| Some(Group(g)))
        }
        .await;
        Ok(ModifyGroup::from(outcome(r)?))
    }

    /// Soft delete: the group becomes inactive.
    async fn delete_group(ctx: &Context, gid: String) -> FieldResult<DeleteGroup> {
        ctx.require_running().await?;
        let Some(existing) = ctx.app.store.group(&gid).await? else {
            return Ok(DeleteGroup::from::<()>(Err(format!(
                "no such group: {gid}"
            ))));
        };
        ctx.require_group_admin(&existing.domain_name)?;
        let r = ctx
            .app
            .store
            .modify_group(
                &gid,
                GroupChanges {
                    is_active: Some(false),
                    ..Default::default()
                },
                None,
            )
            .await
            .map(|_| ());
        Ok(DeleteGroup::from(outcome(r)?))
    }

    async fn create_user(
        ctx: &Context,
        email: String,
        props: UserInput,
    ) -> FieldResult<CreateUser> {
        ctx.require_running().await?;
        ctx.require_superadmin()?;
        let r = async {
            if !email.contains('@') {
                return Err(StoreError::Invalid(format!(
                    "'{email}' is not an e-mail address"
                )));
            }
            let role = parse_role(props.role.as_deref().unwrap_or("user"))?;
            let password_hash = hash(&props.password)?;
            let (ak, sk) = generate_keypair();
            let user = UserRow {
                uuid: uuid::Uuid::new_v4().to_string(),
                username: Some(if props.username.is_empty() {
                    email.clone()
                } else {
                    props.username
                }),
                email,
                need_password_change: Some(props.need_password_change),
                full_name: Some(props.full_name.unwrap_or_default()),
                description: Some(props.description.unwrap_or_default()),
                is_active: props.is_active.unwrap_or(true),
                created_at: String::new(),
                domain_name: Some(props.domain_name),
                role,
            };
            let new = NewUser {
                user,
                password_hash,
                group_ids: list(props.group_ids),
                access_key: ak.to_string(),
                secret_key: sk,
            };
            ctx.app
                .store
                .create_user(new, None)
                .await
                .map(|u| Some(User(u)))
        }
        .await;
        Ok(CreateUser::from(outcome(r)?))
    }

    async fn modify_user(
        ctx: &Context,
        email: String,
        props: ModifyUserInput,
    ) -> FieldResult<ModifyUser> {
        ctx.require_running().await?;
        ctx.require_superadmin()?;
        let r = async {
            let c = UserChanges {
                username: props.username.filter(|u| !u.is_empty()),
                password: props
                    .password
                    .filter(|p| !p.is_empty())
                    .map(|p| hash(&p))
                    .transpose()?,
                need_password_change: props.need_password_change,
                full_name: props.full_name,
                description: props.description,
                is_active: props.is_active,
                role: props.role.as_deref().map(parse_role).transpose()?,
            };
            let groups = props.group_ids.map(|g| g.into_iter().flatten().collect());
            found_row(
                ctx.app.store.modify_user(&email, c, groups, None).await,
                "user",
                &email,
            )
            .map(|u| Some(User(u)))
        }
        .await;
        Ok(ModifyUser::from(outcome(r)?))
    }

    /// Soft delete: the user and its keypairs become inactive.
    async fn delete_user(ctx: &Context, email: String) -> FieldResult<DeleteUser> {
        ctx.require_running().await?;
        ctx.require_superadmin()?;
        let r = found(ctx.app.store.deactivate_user(&email).await, "user", &email);
        Ok(DeleteUser::from(outcome(r)?))
    }

    async fn create_keypair(
        ctx: &Context,
        user_id: String,
        props: KeyPairInput,
    ) -> FieldResult<CreateKeyPair> {
        ctx.require_running().await?;
        let Some(user) = ctx.app.store.user_by_email(&user_id).await? else {
            return Ok(CreateKeyPair::from(Err(format!("no such user: {user_id}"))));
        };
        ctx.require_keypair_admin(&user)?;
        let (ak, sk) = generate_keypair();
        let row = KeypairRow {
            user_id: Some(user.email.clone()),
            access_key: ak.to_string(),
            secret_key: sk,
            is_active: props.is_active.unwrap_or(true),
            is_admin: props.is_admin.unwrap_or(false),
            resource_policy: props.resource_policy,
            created_at: String::new(),
            last_used: None,
            concurrency_used: 0,
            rate_limit: i64::from(props.rate_limit),
            num_queries: 0,
            user: user.uuid,
        };
        // The creator sees the new secret once, in this answer.
        let r = ctx.app.store.create_keypair(row).await.map(|k| {
            Some(KeyPair {
                row: k,
                reveal_secret: true,
            })
        });
        Ok(CreateKeyPair::from(outcome(r)?))
    }

    async fn modify_keypair(
        ctx: &Context,
        access_key: String,
        props: ModifyKeyPairInput,
    ) -> FieldResult<ModifyKeyPair> {
        ctx.require_running().await?;
        let Some(owner) = ctx.keypair_owner(&access_key).await? else {
            return Ok(ModifyKeyPair::from::<()>(Err(format!(
                "no such keypair: {access_key}"
            ))));
        };
        ctx.require_keypair_admin(&owner)?;
        let c = KeypairChanges {
            is_active: props.is_active,
            is_admin: props.is_admin,
            resource_policy: props.resource_policy,
            rate_limit: props.rate_limit.map(i64::from),
        };
        let r = ctx.app.store.modify_keypair(&access_key, c).await;
        Ok(ModifyKeyPair::from(outcome(r)?))
    }

    async fn delete_keypair(ctx: &Context, access_key: String) -> FieldResult<DeleteKeyPair> {
        ctx.require_running().await?;
        let Some(owner) = ctx.keypair_owner(&access_key).await? else {
            return Ok(DeleteKeyPair::from::<()>(Err(format!(
                "no such keypair: {access_key}"
            ))));
        };
        ctx.require_keypair_admin(&owner)?;
        if access_key == ctx.caller.keypair.access_key {
            return Ok(DeleteKeyPair::from::<()>(Err(
                "cannot delete the keypair making this request".into(),
            )));
        }
        let r = ctx.app.store.delete_keypair(&access_key).await;
        Ok(DeleteKeyPair::from(outcome(r)?))
    }

    async fn create_keypair_resource_policy(
        ctx: &Context,
        name: String,
        props: CreateKeyPairResourcePolicyInput,
    ) -> FieldResult<CreateKeyPairResourcePolicy> {
        ctx.require_running().await?;
        ctx.require_superadmin()?;
        let r = async {
            let dfu: DefaultForUnspecified = props
                .default_for_unspecified
                .parse()
                .map_err(|e: crate::domain::UnknownVariant| StoreError::Invalid(e.to_string()))?;
            let row = PolicyRow {
                name,
                created_at: String::new(),
                default_for_unspecified: dfu.as_str().to_owned(),
                total_resource_slots: normalize_slots(&props.total_resource_slots.0)?,
                max_concurrent_sessions: i64::from(props.max_concurrent_sessions),
                max_containers_per_session: i64::from(props.max_containers_per_session),
                max_vfolder_count: i64::from(props.max_vfolder_count),
                max_vfolder_size: props.max_vfolder_size.0,
                idle_timeout: props.idle_timeout.0,
                allowed_vfolder_hosts: list(props.allowed_vfolder_hosts),
            };
            ctx.app
                .store
                .create_policy(row)
                .await
                .map(|p| Some(KeyPairResourcePolicy(p)))
        }
        .await;
        Ok(CreateKeyPairResourcePolicy::from(outcome(r)?))
    }

    async fn modify_keypair_resource_policy(
        ctx: &Context,
        name: String,
        props: ModifyKeyPairResourcePolicyInput,
    ) -> FieldResult<ModifyKeyPairResourcePolicy> {
        ctx.require_running().await?;
        ctx.require_superadmin()?;
        let r = async {
            let c = PolicyChanges {
                default_for_unspecified: props
                    .default_for_unspecified
                    .map(|d| {
                        d.parse::<DefaultForUnspecified>()
                            .map_err(|e| StoreError::Invalid(e.to_string()))
                    })
                    .transpose()?,
                total_resource_slots: slots(props.total_resource_slots)?,
                max_concurrent_sessions: props.max_concurrent_sessions.map(i64::from),
                max_containers_per_session: props.max_containers_per_session.map(i64::from),
                idle_timeout: props.idle_timeout.map(|b| b.0),
                max_vfolder_count: props.max_vfolder_count.map(i64::from),
                max_vfolder_size: props.max_vfolder_size.map(|b| b.0),
                allowed_vfolder_hosts: props.allowed_vfolder_hosts.map(|h| list(Some(h))),
            };
            found(
                ctx.app.store.modify_policy(&name, c).await,
                "resource policy",
                &name,
            )
        }
        .await;
        Ok(ModifyKeyPairResourcePolicy::from(outcome(r)?))
    }

    async fn delete_keypair_resource_policy(
        ctx: &Context,
        name: String,
    ) -> FieldResult<DeleteKeyPairResourcePolicy> {
        ctx.require_running().await?;
        ctx.require_superadmin()?;
        let r = found(
            ctx.app.store.delete_policy(&name).await,
            "resource policy",
            &name,
        );
        Ok(DeleteKeyPairResourcePolicy::from(outcome(r)?))
    }

    async fn create_resource_preset(
        ctx: &Context,
        name: String,
        props: CreateResourcePresetInput,
    ) -> FieldResult<CreateResourcePreset> {
        ctx.require_running().await?;
        ctx.require_superadmin()?;
        let r = async {
            let row = PresetRow {
                name,
                resource_slots: normalize_slots(&props.resource_slots.0)?,
            };
            ctx.app
                .store
                .create_preset(row)
                .await
                .map(|p| Some(ResourcePreset(p)))
        }
        .await;
        Ok(CreateResourcePreset::from(outcome(r)?))
    }

    async fn modify_resource_preset(
        ctx: &Context,
        name: String,
        props: ModifyResourcePresetInput,
    ) -> FieldResult<ModifyResourcePreset> {
        ctx.require_running().await?;
        ctx.require_superadmin()?;
        let r = async {
            let c = PresetChanges {
                resource_slots: slots(props.resource_slots)?,
            };
            found(
                ctx.app.store.modify_preset(&name, c).await,
                "resource preset",
                &name,
            )
        }
        .await;
        Ok(ModifyResourcePreset::from(outcome(r)?))
    }

    async fn delete_resource_preset(
        ctx: &Context,
        name: String,
    ) -> FieldResult<DeleteResourcePreset> {
        ctx.require_running().await?;
        ctx.require_superadmin()?;
        let r = found(
            ctx.app.store.delete_preset(&name).await,
            "resource preset",
            &name,
        );
        Ok(DeleteResourcePreset::from(outcome(r)?))
    }

    /// Points an alias (`:` and `/` allowed) at an image or another alias.
    async fn alias_image(ctx: &Context, alias: String, target: String) -> FieldResult<AliasImage> {
        ctx.require_running().await?;
        ctx.require_superadmin()?;
        let r = ctx.app.images().alias(&alias, &target).await;
        Ok(AliasImage::from(r.map_err(|e| e.to_string())))
    }

    async fn dealias_image(ctx: &Context, alias: String) -> FieldResult<DealiasImage> {
        ctx.require_running().await?;
        ctx.require_superadmin()?;
        let r = ctx.app.images().dealias(&alias).await;
        Ok(DealiasImage::from(r.map_err(|e| e.to_string())))
    }

    /// Scans one registry (or all configured ones) for kernel images.
    async fn rescan_images(ctx: &Context, registry: Option<String>) -> FieldResult<RescanImages> {
        ctx.require_running().await?;
        ctx.require_superadmin()?;
        let r = crate::images::scan::rescan(
            ctx.app.shared.as_ref(),
            registry.as_deref(),
            &ctx.app.config.docker_registry,
            &|_| {},
        )
        .await;
        let outcome = match r {
            Ok(reports) => {
                let failed: Vec<String> = reports
                    .iter()
                    .filter_map(|r| r.result.as_ref().err().map(|e| e.to_string()))
                    .collect();
                if failed.is_empty() {
                    Ok(())
                } else {
                    Err(failed.join("; "))
                }
            }
            Err(e) => Err(e.to_string()),
        };
        Ok(RescanImages::from(outcome))
    }
}
