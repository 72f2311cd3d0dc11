//! First start: the default domain, group and resource policy every installation has, and
//! — only while the database has no user at all — a superadmin with a fresh keypair.

use super::{Store, StoreError};
use crate::domain::{
    generate_keypair, DEFAULT_DOMAIN, DEFAULT_GROUP, DEFAULT_GROUP_ID, DEFAULT_RESOURCE_POLICY,
};
use rand::distributions::{Alphanumeric, DistString};

/// Credentials of the superadmin created on first start; shown to the operator once.
pub struct InitialAdmin {
    pub email: String,
    pub password: String,
    pub access_key: String,
    pub secret_key: String,
}

impl Store {
    /// Creates whatever default rows are missing; never changes existing ones.
    pub async fn ensure_defaults(&self) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO domains (name, description) VALUES (?1, 'The default domain')",
                [DEFAULT_DOMAIN],
            )?;
            tx.execute(
                "INSERT OR IGNORE INTO groups (id, name, description, domain_name)
                 SELECT ?1, ?2, 'The default user group', ?3
                 WHERE NOT EXISTS (SELECT 1 FROM groups WHERE name = ?2 AND domain_name = ?3)",
                [DEFAULT_GROUP_ID, DEFAULT_GROUP, DEFAULT_DOMAIN],
            )?;
            tx.execute(
                "INSERT OR IGNORE INTO keypair_resource_policies
                   (name, default_for_unspecified, total_resource_slots, max_concurrent_sessions,
                    max_containers_per_session, max_vfolder_count, max_vfolder_size, idle_timeout,
                    allowed_vfolder_hosts)
                 VALUES (?1, 'UNLIMITED', '{}', 30, 1, 10, 0, 600, '[\"local\"]')",
                [DEFAULT_RESOURCE_POLICY],
            )?;
            Ok(())
        })
        .await
    }

    /// With no user in the database, creates a superadmin (in the default domain and group)
    /// with a random password and keypair, and returns them. Otherwise `None`.
    pub async fn create_initial_admin(
        &self,
        email: &str,
    ) -> Result<Option<InitialAdmin>, StoreError> {
        let password = Alphanumeric.sample_string(&mut rand::rngs::OsRng, 20);
        let hash = crate::password::hash_password(&password)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let (ak, sk) = generate_keypair();
        let email = email.to_owned();
        let admin = InitialAdmin {
            email: email.clone(),
            password,
            access_key: ak.to_string(),
            secret_key: sk.clone(),
        };
        let created = self
            .write(move |tx| {
                let users: i64 = tx.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?;
                if users > 0 {
                    return Ok(false);
                }
                let uuid = uuid::Uuid::new_v4().to_string();
                // The e-mail doubles as the username: it is unique already, so fixtures
                // with their own "admin" user load on top of a bootstrapped database.
                let username = email.clone();
                tx.execute(
                    "INSERT INTO users (uuid, username, email, password, need_password_change, full_name,
                                        description, is_active, domain_name, role)
                     VALUES (?1, ?2, ?3, ?4, 0, 'Administrator', 'Created on first start', 1, ?5, 'superadmin')",
                    rusqlite::params![uuid, username, email, hash, DEFAULT_DOMAIN],
                )?;
                tx.execute(
                    "INSERT INTO association_groups_users (user_id, group_id)
                     SELECT ?1, id FROM groups WHERE name = ?2 AND domain_name = ?3",
                    rusqlite::params![uuid, DEFAULT_GROUP, DEFAULT_DOMAIN],
                )?;
                tx.execute(
                    "INSERT INTO keypairs (user_id, access_key, secret_key, is_active, is_admin, rate_limit,
                                           \"user\", resource_policy)
                     VALUES (?1, ?2, ?3, 1, 1, 30000, ?4, ?5)",
                    rusqlite::params![email, ak.as_str(), sk, uuid, DEFAULT_RESOURCE_POLICY],
                )?;
                Ok::<_, StoreError>(true)
            })
            .await?;
        Ok(created.then_some(admin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn creates_the_admin_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.db")).unwrap();
        store.ensure_defaults().await.unwrap();
        store.ensure_defaults().await.unwrap();
        let admin = store
            .create_initial_admin("root@example.org")
            .await
            .unwrap()
            .expect("first start");
        assert!(store
            .create_initial_admin("root@example.org")
            .await
            .unwrap()
            .is_none());
        let kp = store
            .active_keypair(&admin.access_key)
            .await
            .unwrap()
            .expect("usable keypair");
        assert!(kp.is_admin);
        assert_eq!(kp.user_role, crate::domain::UserRole::Superadmin);
        assert_eq!(kp.secret_key, admin.secret_key);
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../config/fixtures/example-keypairs.json"))
                .unwrap();
        store
            .populate_fixture(&fixture)
            .await
            .expect("the example fixture loads after a first start");
    }
}
