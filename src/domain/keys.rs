//! Access keys and keypair generation.

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use rand::RngCore;
use std::fmt;

/// A keypair's public identifier (`AKIA…`, at most 20 characters).
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct AccessKey(String);

impl AccessKey {
    pub fn new(s: impl Into<String>) -> Self {
        AccessKey(s.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessKey({})", self.0)
    }
}

/// A new keypair in the original's shape: `AKIA` + base32 of 10 random bytes (20 chars),
/// and a URL-safe secret made from 30 random bytes (40 chars).
pub fn generate_keypair() -> (AccessKey, String) {
    let mut rng = rand::rngs::OsRng;
    let mut ak = [0u8; 10];
    rng.fill_bytes(&mut ak);
    let mut sk = [0u8; 30];
    rng.fill_bytes(&mut sk);
    (
        AccessKey(format!("AKIA{}", BASE32_NOPAD.encode(&ak))),
        BASE64URL_NOPAD.encode(&sk),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_original_lengths() {
        let (ak, sk) = generate_keypair();
        assert_eq!(ak.as_str().len(), 20);
        assert!(ak.as_str().starts_with("AKIA"));
        assert_eq!(sk.len(), 40);
        assert_ne!(generate_keypair().1, sk);
    }
}
