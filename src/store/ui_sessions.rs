//! Web UI logins: a random token held by the browser in an HttpOnly cookie, stored here
//! only as its SHA-256, with the CSRF token the page echoes on changing requests. A login
//! lasts `ttl` seconds from its last use and ends with its keypair.

use super::auth::{load_active_keypair, KeypairRecord};
use super::{Store, StoreError};
use rusqlite::OptionalExtension;
use sha2::{Digest, Sha256};

/// A login as the gateway sees it.
#[derive(Clone)]
pub struct UiLogin {
    pub token_hash: String,
    pub csrf_token: String,
    pub expires_at: String,
}

impl std::fmt::Debug for UiLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiLogin")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

fn random_token() -> String {
    data_encoding::BASE64URL_NOPAD.encode(&rand::random::<[u8; 32]>())
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn expiry(ttl: u64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(ttl as i64))
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

impl Store {
    /// Starts a login for `access_key`; returns the cookie token and the login. Expired
    /// logins of everyone are swept on the way.
    pub async fn create_ui_login(
        &self,
        access_key: &str,
        ttl: u64,
    ) -> Result<(String, UiLogin), StoreError> {
        let ak = access_key.to_owned();
        self.write(move |tx| -> Result<_, StoreError> {
            tx.execute(
                "DELETE FROM ui_sessions WHERE expires_at < ?1",
                [super::now_text()],
            )?;
            let token = random_token();
            let login = UiLogin {
                token_hash: token_hash(&token),
                csrf_token: random_token(),
                expires_at: expiry(ttl),
            };
            tx.execute(
                "INSERT INTO ui_sessions (token_hash, access_key, csrf_token, expires_at)
                 VALUES (?1, ?2, ?3, ?4)",
                [&login.token_hash, &ak, &login.csrf_token, &login.expires_at],
            )?;
            Ok((token, login))
        })
        .await
    }

    /// The login a cookie token stands for, with its (active) keypair; `None` when the
    /// token is unknown, expired, or its keypair or user was deactivated. A login used
    /// more than a minute after it was last extended is extended to `ttl` from now.
    pub async fn ui_login(
        &self,
        token: &str,
        ttl: u64,
    ) -> Result<Option<(KeypairRecord, UiLogin)>, StoreError> {
        let hash = token_hash(token);
        let now = super::now_text();
        let found = self
            .read(move |c| -> Result<_, StoreError> {
                let row = c
                    .query_row(
                        "SELECT access_key, csrf_token, expires_at FROM ui_sessions
                         WHERE token_hash = ?1 AND expires_at > ?2",
                        [&hash, &now],
                        |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                UiLogin {
                                    token_hash: hash.clone(),
                                    csrf_token: r.get(1)?,
                                    expires_at: r.get(2)?,
                                },
                            ))
                        },
                    )
                    .optional()?;
                let Some((ak, login)) = row else {
                    return Ok(None);
                };
                Ok(load_active_keypair(c, &ak)?.map(|kp| (kp, login)))
            })
            .await?;
        let Some((kp, mut login)) = found else {
            return Ok(None);
        };
        let renewed = expiry(ttl.saturating_sub(60));
        if login.expires_at < renewed {
            login.expires_at = expiry(ttl);
            let (h, e) = (login.token_hash.clone(), login.expires_at.clone());
            self.write(move |tx| -> Result<_, StoreError> {
                tx.execute(
                    "UPDATE ui_sessions SET expires_at = ?2 WHERE token_hash = ?1",
                    [&h, &e],
                )?;
                Ok(())
            })
            .await?;
        }
        Ok(Some((kp, login)))
    }

    /// Ends a login (logout).
    pub async fn end_ui_login(&self, token_hash: &str) -> Result<(), StoreError> {
        let h = token_hash.to_owned();
        self.write(move |tx| -> Result<_, StoreError> {
            tx.execute("DELETE FROM ui_sessions WHERE token_hash = ?1", [&h])?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_login_is_found_by_its_token_only_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.db")).unwrap();
        store.ensure_defaults().await.unwrap();
        let admin = store.create_initial_admin("ui@example.org").await.unwrap();
        let ak = admin.unwrap().access_key;
        let (token, login) = store.create_ui_login(&ak, 3600).await.unwrap();
        assert_ne!(token, login.token_hash, "only the hash is stored");
        let (kp, found) = store.ui_login(&token, 3600).await.unwrap().unwrap();
        assert_eq!(kp.access_key, ak);
        assert_eq!(found.csrf_token, login.csrf_token);
        assert!(store.ui_login("not-a-token", 3600).await.unwrap().is_none());
        store.end_ui_login(&login.token_hash).await.unwrap();
        assert!(store.ui_login(&token, 3600).await.unwrap().is_none());
    }
}
