//! Password hashing: Argon2id with the crate's recommended parameters, PHC strings at rest.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;

#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

pub fn hash_password(plain: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(plain.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `stored` is already a hash this module wrote (so fixtures may carry hashes).
pub fn is_hashed(stored: &str) -> bool {
    stored.starts_with("$argon2") && PasswordHash::new(stored).is_ok()
}

/// Constant-time verification; a malformed stored hash never matches.
pub fn verify_password(plain: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(plain.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash_password("wJalrXUt").unwrap();
        let b = hash_password("wJalrXUt").unwrap();
        assert_ne!(a, b);
        assert!(is_hashed(&a));
        assert!(verify_password("wJalrXUt", &a));
        assert!(!verify_password("wJalrXUT", &a));
        assert!(!verify_password("wJalrXUt", "plain-text-in-db"));
    }
}
