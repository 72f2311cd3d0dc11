//! Reads and writes the authentication path needs: keypair lookup for signed requests,
//! e-mail/password login, and the batched `last_used`/`num_queries` bookkeeping.

use super::{Store, StoreError};
use crate::domain::{DefaultForUnspecified, ResourceSlots, UserRole};
use rusqlite::{Connection, OptionalExtension};
use std::collections::HashMap;

/// The keypair resource policy attached to a keypair.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResourcePolicy {
    pub name: String,
    pub default_for_unspecified: DefaultForUnspecified,
    pub total_resource_slots: ResourceSlots,
    pub max_concurrent_sessions: i64,
    pub max_containers_per_session: i64,
    pub max_vfolder_count: i64,
    pub max_vfolder_size: i64,
    pub idle_timeout: i64,
    pub allowed_vfolder_hosts: Vec<String>,
}

/// An active keypair with its user and policy, as authentication needs them.
/// `secret_key` is only for verifying the signature; it is never logged or returned.
#[derive(Clone)]
pub struct KeypairRecord {
    pub access_key: String,
    pub secret_key: String,
    pub is_admin: bool,
    pub rate_limit: i64,
    pub user_uuid: String,
    pub user_email: String,
    pub user_role: UserRole,
    pub user_active: bool,
    pub domain_name: Option<String>,
    pub policy: ResourcePolicy,
}

impl std::fmt::Debug for KeypairRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeypairRecord")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<hidden>")
            .field("is_admin", &self.is_admin)
            .field("user_email", &self.user_email)
            .field("user_role", &self.user_role)
            .finish()
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

pub(super) fn load_active_keypair(
    conn: &Connection,
    access_key: &str,
) -> Result<Option<KeypairRecord>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT k.access_key, k.secret_key, k.is_admin, k.rate_limit,
                u.uuid, u.email, u.role, u.is_active, u.domain_name,
                p.name, p.default_for_unspecified, p.total_resource_slots, p.max_concurrent_sessions,
                p.max_containers_per_session, p.max_vfolder_count, p.max_vfolder_size, p.idle_timeout,
                p.allowed_vfolder_hosts
         FROM keypairs k
         JOIN users u ON k.\"user\" = u.uuid
         JOIN keypair_resource_policies p ON k.resource_policy = p.name
         WHERE k.access_key = ?1 AND k.is_active",
    )?;
    let row = st
        .query_row([access_key], |r| {
            Ok((
                (
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, i64>(3)?,
                ),
                (
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, bool>(7)?,
                    r.get::<_, Option<String>>(8)?,
                ),
                (
                    r.get::<_, String>(9)?,
                    r.get::<_, String>(10)?,
                    r.get::<_, String>(11)?,
                    [
                        r.get::<_, i64>(12)?,
                        r.get::<_, i64>(13)?,
                        r.get::<_, i64>(14)?,
                        r.get::<_, i64>(15)?,
                        r.get::<_, i64>(16)?,
                    ],
                    r.get::<_, String>(17)?,
                ),
            ))
        })
        .optional()?;
    let Some((k, u, p)) = row else {
        return Ok(None);
    };
    let slots_json: serde_json::Value =
        serde_json::from_str(&p.2).map_err(|e| corrupt("policy slots", e))?;
    let policy = ResourcePolicy {
        name: p.0,
        default_for_unspecified: p.1.parse().map_err(|e| corrupt("policy", e))?,
        total_resource_slots: ResourceSlots::from_json(&slots_json)
            .map_err(|e| corrupt("policy slots", e))?,
        max_concurrent_sessions: p.3[0],
        max_containers_per_session: p.3[1],
        max_vfolder_count: p.3[2],
        max_vfolder_size: p.3[3],
        idle_timeout: p.3[4],
        allowed_vfolder_hosts: serde_json::from_str(&p.4)
            .map_err(|e| corrupt("policy hosts", e))?,
    };
    Ok(Some(KeypairRecord {
        access_key: k.0,
        secret_key: k.1,
        is_admin: k.2,
        rate_limit: k.3,
        user_uuid: u.0,
        user_email: u.1,
        user_role: u.2.parse().map_err(|e| corrupt("user role", e))?,
        user_active: u.3,
        domain_name: u.4,
        policy,
    }))
}

/// A user found by e-mail and domain for password login.
#[derive(Clone)]
pub struct LoginCandidate {
    pub user_uuid: String,
    pub password_hash: Option<String>,
    pub is_active: bool,
    pub role: UserRole,
}

/// Longest time a keypair read is reused (changes committed by this process end it sooner;
/// this bounds how long another process's changes, such as the CLI's, go unseen).
const KEYPAIR_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// Most access keys remembered (unknown keys included); the cache starts over past it.
const KEYPAIR_CACHE_MAX: usize = 10_000;

/// A keypair as read at an auth version.
pub(super) struct CachedKeypair {
    record: Option<KeypairRecord>,
    auth_version: u64,
    read_at: std::time::Instant,
}

impl Store {
    /// The active keypair with this access key, or `None`. Every signed request asks, so an
    /// answer is kept until this process commits a change to a keypair, user or resource
    /// policy, and for [`KEYPAIR_CACHE_TTL`] at most (another process may write too).
    pub async fn active_keypair(
        &self,
        access_key: &str,
    ) -> Result<Option<KeypairRecord>, StoreError> {
        use std::sync::atomic::Ordering;
        let auth_version = self.inner.auth_version.load(Ordering::SeqCst);
        {
            let cache = self.inner.keypairs.lock().map_err(|_| StoreError::Closed)?;
            if let Some(c) = cache.get(access_key) {
                if c.auth_version == auth_version && c.read_at.elapsed() < KEYPAIR_CACHE_TTL {
                    return Ok(c.record.clone());
                }
            }
        }
        let ak = access_key.to_owned();
        let record = self.read(move |c| load_active_keypair(c, &ak)).await?;
        let mut cache = self.inner.keypairs.lock().map_err(|_| StoreError::Closed)?;
        if cache.len() >= KEYPAIR_CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            access_key.to_owned(),
            CachedKeypair {
                record: record.clone(),
                auth_version,
                read_at: std::time::Instant::now(),
            },
        );
        Ok(record)
    }

    pub async fn login_candidate(
        &self,
        domain: &str,
        email: &str,
    ) -> Result<Option<LoginCandidate>, StoreError> {
        let (domain, email) = (domain.to_owned(), email.to_owned());
        self.read(move |c| {
            let row = c
                .query_row(
                    "SELECT uuid, password, is_active, role FROM users WHERE email = ?1 AND domain_name = ?2",
                    [&email, &domain],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, bool>(2)?, r.get::<_, String>(3)?)),
                )
                .optional()?;
            row.map(|(uuid, hash, active, role)| {
                Ok(LoginCandidate {
                    user_uuid: uuid,
                    password_hash: hash,
                    is_active: active,
                    role: role.parse().map_err(|e| corrupt("user role", e))?,
                })
            })
            .transpose()
        })
        .await
    }

    /// The user's keypair for password login: an active one first, the oldest first.
    pub async fn keypair_of_user(
        &self,
        user_uuid: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let uuid = user_uuid.to_owned();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT access_key, secret_key FROM keypairs WHERE \"user\" = ?1
                 ORDER BY is_active DESC, created_at ASC LIMIT 1",
                [&uuid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
        })
        .await
    }

    /// Applies accumulated request counts: per keypair `access_key → (last_used, queries)`,
    /// and per kernel `(id, queries)`.
    pub async fn record_usage(
        &self,
        keypairs: HashMap<String, (String, i64)>,
        kernels: Vec<(String, i64)>,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            let mut st = tx.prepare_cached(
                "UPDATE keypairs SET last_used = ?2, num_queries = num_queries + ?3 WHERE access_key = ?1",
            )?;
            for (ak, (last_used, n)) in keypairs {
                st.execute(rusqlite::params![ak, last_used, n])?;
            }
            let mut st = tx.prepare_cached(
                "UPDATE kernels SET num_queries = num_queries + ?2 WHERE id = ?1",
            )?;
            for (id, n) in kernels {
                st.execute(rusqlite::params![id, n])?;
            }
            Ok(())
        })
        .await
    }
}
