//! Request signing, the one implementation shared by the gateway, the tests and the
//! benchmark client.
//!
//! The algorithm is the original's (reference: manager-inventory §2, client-compat §4):
//! the key is derived from the secret, the date (`YYYYMMDD` in the header's timezone) and the
//! host, then the seven-line string to sign is MACed; the result is lowercase hex.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use sha2::Digest;
use std::str::FromStr;

/// The hash functions accepted in `signMethod=HMAC-<HASH>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlg {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl FromStr for HashAlg {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "sha1" => Ok(HashAlg::Sha1),
            "sha224" => Ok(HashAlg::Sha224),
            "sha256" => Ok(HashAlg::Sha256),
            "sha384" => Ok(HashAlg::Sha384),
            "sha512" => Ok(HashAlg::Sha512),
            _ => Err(()),
        }
    }
}

impl HashAlg {
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "SHA1",
            HashAlg::Sha224 => "SHA224",
            HashAlg::Sha256 => "SHA256",
            HashAlg::Sha384 => "SHA384",
            HashAlg::Sha512 => "SHA512",
        }
    }

    pub fn hmac(self, key: &[u8], msg: &[u8]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], msg: &[u8]) -> Vec<u8> {
            // HMAC accepts keys of any length, so this cannot fail.
            match <M as hmac::digest::KeyInit>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(msg);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            }
        }
        match self {
            HashAlg::Sha1 => run::<Hmac<sha1::Sha1>>(key, msg),
            HashAlg::Sha224 => run::<Hmac<sha2::Sha224>>(key, msg),
            HashAlg::Sha256 => run::<Hmac<sha2::Sha256>>(key, msg),
            HashAlg::Sha384 => run::<Hmac<sha2::Sha384>>(key, msg),
            HashAlg::Sha512 => run::<Hmac<sha2::Sha512>>(key, msg),
        }
    }

    /// Lowercase hex of the plain hash of `data`.
    pub fn hex_digest(self, data: &[u8]) -> String {
        match self {
            HashAlg::Sha1 => hex::encode(sha1::Sha1::digest(data)),
            HashAlg::Sha224 => hex::encode(sha2::Sha224::digest(data)),
            HashAlg::Sha256 => hex::encode(sha2::Sha256::digest(data)),
            HashAlg::Sha384 => hex::encode(sha2::Sha384::digest(data)),
            HashAlg::Sha512 => hex::encode(sha2::Sha512::digest(data)),
        }
    }
}

/// Everything the signature covers.
#[derive(Debug, Clone)]
pub struct SigningInput<'a> {
    /// Upper-case method, after `X-Method-Override`.
    pub method: &'a str,
    /// The request target exactly as sent: path plus `?query`.
    pub path_and_query: &'a str,
    /// The date header's exact text.
    pub raw_date: &'a str,
    /// The date, in the header's own timezone (its `YYYYMMDD` feeds the key).
    pub date: DateTime<FixedOffset>,
    /// The `Host` header verbatim.
    pub host: &'a str,
    /// The media type without parameters.
    pub content_type: &'a str,
    /// `x-backendai-version` or the legacy `x-sorna-version`.
    pub version_label: &'a str,
    pub version: &'a str,
    /// Hex hash of the body (of the empty string for v4.20181215 and later).
    pub body_hash: &'a str,
}

impl SigningInput<'_> {
    pub fn string_to_sign(&self) -> String {
        format!(
            "{}\n{}\n{}\nhost:{}\ncontent-type:{}\n{}:{}\n{}",
            self.method,
            self.path_and_query,
            self.raw_date,
            self.host,
            self.content_type,
            self.version_label,
            self.version,
            self.body_hash
        )
    }

    /// The raw signature bytes for `secret_key`.
    pub fn signature(&self, alg: HashAlg, secret_key: &str) -> Vec<u8> {
        let day = self.date.format("%Y%m%d").to_string();
        let k1 = alg.hmac(secret_key.as_bytes(), day.as_bytes());
        let k2 = alg.hmac(&k1, self.host.as_bytes());
        alg.hmac(&k2, self.string_to_sign().as_bytes())
    }

    /// Checks a hex signature in constant time.
    pub fn verify(&self, alg: HashAlg, secret_key: &str, signature_hex: &str) -> bool {
        use subtle::ConstantTimeEq;
        let Ok(given) = hex::decode(signature_hex) else {
            return false;
        };
        let expected = self.signature(alg, secret_key);
        given.len() == expected.len() && bool::from(expected.ct_eq(&given))
    }
}

/// A keypair as a client holds it.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub alg: HashAlg,
}

/// The client side: headers for a request signed the way client 19.6.0a1 signs it.
/// Returns `(Date, Authorization)` header values.
pub fn client_headers(
    creds: &Credentials,
    method: &str,
    path_and_query: &str,
    host: &str,
    content_type: &str,
    now: DateTime<Utc>,
) -> (String, String) {
    client_headers_for(
        creds,
        method,
        path_and_query,
        host,
        content_type,
        crate::domain::LATEST_API_VERSION,
        now,
    )
}

/// As [`client_headers`], for a request sending `version` in `X-BackendAI-Version`.
pub fn client_headers_for(
    creds: &Credentials,
    method: &str,
    path_and_query: &str,
    host: &str,
    content_type: &str,
    version: &str,
    now: DateTime<Utc>,
) -> (String, String) {
    let raw_date = now.to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
    let alg = creds.alg;
    let body_hash = alg.hex_digest(b"");
    let input = SigningInput {
        method,
        path_and_query,
        raw_date: &raw_date,
        date: now.fixed_offset(),
        host,
        content_type,
        version_label: "x-backendai-version",
        version,
        body_hash: &body_hash,
    };
    let sig = hex::encode(input.signature(alg, &creds.secret_key));
    let auth = format!(
        "BackendAI signMethod=HMAC-{}, credential={}:{}",
        alg.name(),
        creds.access_key,
        sig
    );
    (raw_date, auth)
}

/// Parses a request date the way the original's lenient parser did for the forms clients
/// send: ISO-8601/RFC 3339 (with `T` or a space, with or without an offset; no offset means
/// UTC) and RFC 2822 / HTTP dates.
pub fn parse_date(raw: &str) -> Option<DateTime<FixedOffset>> {
    let raw = raw.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(raw) {
        return Some(d);
    }
    if let Ok(d) = DateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Some(d);
    }
    if let Ok(d) = DateTime::parse_from_rfc2822(raw) {
        return Some(d);
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%a, %d %b %Y %H:%M:%S GMT",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(raw, fmt) {
            return Some(Utc.from_utc_datetime(&n).fixed_offset());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector from client-compat §4, computed with the official client.
    #[test]
    fn matches_the_official_client_test_vector() {
        let raw_date = "2019-06-26T06:00:00+00:00";
        let body_hash = HashAlg::Sha256.hex_digest(b"");
        assert_eq!(
            body_hash,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let input = SigningInput {
            method: "GET",
            path_and_query: "/kernel/mysess?owner_access_key=OWNERAK",
            raw_date,
            date: parse_date(raw_date).unwrap(),
            host: "127.0.0.1:8081",
            content_type: "text/plain",
            version_label: "x-backendai-version",
            version: "v4.20190315",
            body_hash: &body_hash,
        };
        let sig = hex::encode(
            input.signature(HashAlg::Sha256, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        );
        assert_eq!(
            sig,
            "5b440a6713bccc793173ddecacc42b01a7345f28a331daac053cd33052043a54"
        );
        assert!(input.verify(
            HashAlg::Sha256,
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            &sig
        ));
        assert!(!input.verify(HashAlg::Sha256, "wrong-secret", &sig));
        assert!(!input.verify(
            HashAlg::Sha256,
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "zz"
        ));
    }

    #[test]
    fn key_uses_the_date_in_the_headers_own_timezone() {
        // 23:30 on the 25th in UTC is already the 26th in Seoul: the derived keys differ.
        let a = parse_date("2019-06-25T23:30:00+00:00").unwrap();
        let b = parse_date("2019-06-26T08:30:00+09:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.format("%Y%m%d").to_string(), "20190625");
        assert_eq!(b.format("%Y%m%d").to_string(), "20190626");
    }

    #[test]
    fn parses_the_date_forms_clients_send() {
        for raw in [
            "2019-06-26T06:09:42.123456+00:00",
            "2019-06-26T06:09:42Z",
            "2019-06-26 06:09:42",
            "Wed, 26 Jun 2019 06:09:42 GMT",
            "Wed, 26 Jun 2019 06:09:42 +0000",
        ] {
            let d = parse_date(raw).unwrap_or_else(|| panic!("{raw}"));
            assert_eq!(
                d.with_timezone(&Utc).format("%H:%M:%S").to_string(),
                "06:09:42"
            );
        }
        assert!(parse_date("yesterday").is_none());
    }
}
