//! Registry scanning over the Docker Registry HTTP API v2: catalog (paged), tags, manifests
//! (schema 2, OCI, and manifest lists resolved to linux/amd64), config blobs. Only images
//! with `ai.backend.kernelspec` are kept; their metadata goes to the shared config in the
//! original's layout. Bearer-token and basic authentication; TLS is verified unless
//! `ssl_verify` is off. A registry's entries are replaced only after its scan succeeded,
//! so a failing registry is reported and keeps what was stored before.

use super::quote;
use crate::shared_config::{SharedConfig, SharedConfigError};
use futures_util::{stream, StreamExt};
use reqwest::{header, Client, Response, StatusCode};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Concurrent manifest/blob fetches per registry.
const CONCURRENCY: usize = 8;
const MANIFEST_TYPES: &str = "application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.index.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("no registry named '{0}' is configured (config/docker/registry/...)")]
    UnknownRegistry(String),
    #[error("{registry}: {msg}")]
    Registry { registry: String, msg: String },
    #[error(transparent)]
    Config(#[from] SharedConfigError),
}

/// A configured registry.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub name: String,
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// The registries under `config/docker/registry/{quoted name}`.
pub async fn registries(shared: &dyn SharedConfig) -> Result<Vec<RegistryConfig>, ScanError> {
    let pairs = shared.get_prefix("config/docker/registry").await?;
    let mut out: BTreeMap<String, RegistryConfig> = BTreeMap::new();
    for (k, v) in pairs {
        let parts: Vec<&str> = k.split('/').collect();
        let (quoted, field) = match parts.as_slice() {
            [_, _, _, name] => (*name, None),
            [_, _, _, name, field] => (*name, Some(*field)),
            _ => continue,
        };
        let name = percent_encoding::percent_decode_str(quoted)
            .decode_utf8_lossy()
            .into_owned();
        let entry = out.entry(name.clone()).or_insert(RegistryConfig {
            name,
            url: String::new(),
            username: None,
            password: None,
        });
        match field {
            None => entry.url = v.trim_end_matches('/').to_owned(),
            Some("username") => entry.username = Some(v),
            Some("password") => entry.password = Some(v),
            Some(_) => {}
        }
    }
    Ok(out.into_values().filter(|r| !r.url.is_empty()).collect())
}

/// What one registry's scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport {
    pub registry: String,
    /// `Ok(number of kernel images stored)` or why the registry could not be scanned.
    pub result: Result<usize, String>,
}

struct Session<'a> {
    client: &'a Client,
    reg: &'a RegistryConfig,
    token: tokio::sync::Mutex<Option<String>>,
}

fn fail(reg: &RegistryConfig, msg: impl std::fmt::Display) -> ScanError {
    ScanError::Registry {
        registry: reg.name.clone(),
        msg: msg.to_string(),
    }
}

/// An HTTP error with its causes, which say what actually went wrong (an untrusted
/// certificate, a refused connection, …).
fn http_fail(reg: &RegistryConfig, e: reqwest::Error) -> ScanError {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    fail(reg, msg)
}

/// `key="value"` pairs of a `WWW-Authenticate: Bearer ...` challenge.
fn challenge(h: &str) -> Option<BTreeMap<String, String>> {
    let rest = h.strip_prefix("Bearer ")?;
    let mut out = BTreeMap::new();
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        out.insert(k.trim().to_owned(), v.trim().trim_matches('"').to_owned());
    }
    Some(out)
}

impl Session<'_> {
    fn with_auth(
        &self,
        req: reqwest::RequestBuilder,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        match (token, &self.reg.username) {
            (Some(t), _) => req.bearer_auth(t),
            (None, Some(u)) => req.basic_auth(u, self.reg.password.as_deref()),
            (None, None) => req,
        }
    }

    /// GET with the registry's authentication, fetching a bearer token on a challenge.
    async fn get(&self, path: &str, accept: Option<&str>) -> Result<Response, ScanError> {
        let url = format!("{}{path}", self.reg.url);
        for attempt in 0..2 {
            let token = self.token.lock().await.clone();
            let mut req = self.with_auth(self.client.get(&url), token.as_deref());
            if let Some(a) = accept {
                req = req.header(header::ACCEPT, a);
            }
            let resp = req.send().await.map_err(|e| http_fail(self.reg, e))?;
            if resp.status() != StatusCode::UNAUTHORIZED || attempt == 1 {
                return Ok(resp);
            }
            let bearer = resp
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|h| h.to_str().ok())
                .and_then(challenge);
            let Some(ch) = bearer else { return Ok(resp) };
            let realm = ch.get("realm").cloned().unwrap_or_default();
            let mut treq = self.client.get(&realm);
            let query: Vec<(&str, &String)> = ["service", "scope"]
                .iter()
                .filter_map(|k| ch.get(*k).map(|v| (*k, v)))
                .collect();
            treq = treq.query(&query);
            if let Some(u) = &self.reg.username {
                treq = treq.basic_auth(u, self.reg.password.as_deref());
            }
            let t: Value = treq
                .send()
                .await
                .map_err(|e| fail(self.reg, format!("token: {e}")))?
                .error_for_status()
                .map_err(|e| fail(self.reg, format!("token: {e}")))?
                .json()
                .await
                .map_err(|e| fail(self.reg, format!("token: {e}")))?;
            let token = t["token"]
                .as_str()
                .or_else(|| t["access_token"].as_str())
                .map(str::to_owned);
            *self.token.lock().await = token;
        }
        Err(fail(self.reg, "authentication failed"))
    }

    async fn json(&self, path: &str, accept: Option<&str>) -> Result<Value, ScanError> {
        let resp = self.get(path, accept).await?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(fail(
                self.reg,
                format!("access refused ({status}): check the registry's username and password"),
            ));
        }
        if !status.is_success() {
            return Err(fail(self.reg, format!("GET {path}: {status}")));
        }
        resp.json()
            .await
            .map_err(|e| fail(self.reg, format!("GET {path}: {e}")))
    }

    async fn repositories(&self) -> Result<Vec<String>, ScanError> {
        let mut out = Vec::new();
        let mut path = "/v2/_catalog?n=1000".to_owned();
        loop {
            let resp = self.get(&path, None).await?;
            let status = resp.status();
            if !status.is_success() {
                return Err(fail(
                    self.reg,
                    format!(
                        "catalog: {status}{}",
                        if status == StatusCode::UNAUTHORIZED {
                            " (check the credentials)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            // Paging: `Link: </v2/_catalog?last=x&n=1000>; rel="next"`.
            let next = resp
                .headers()
                .get(header::LINK)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| l.split(';').next())
                .map(|l| {
                    l.trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_owned()
                });
            let body: Value = resp
                .json()
                .await
                .map_err(|e| fail(self.reg, format!("catalog: {e}")))?;
            out.extend(
                body["repositories"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_str().map(str::to_owned)),
            );
            match next {
                Some(n) if n.starts_with("/v2/") => path = n,
                _ => return Ok(out),
            }
        }
    }

    /// `(config digest, size, labels)` of `repo:tag`, or `None` if it is not a kernel image.
    async fn image(
        &self,
        repo: &str,
        tag: &str,
    ) -> Result<Option<(String, u64, BTreeMap<String, String>)>, ScanError> {
        let mut manifest = self
            .json(&format!("/v2/{repo}/manifests/{tag}"), Some(MANIFEST_TYPES))
            .await?;
        if let Some(list) = manifest["manifests"].as_array() {
            let pick = list
                .iter()
                .find(|m| {
                    m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64"
                })
                .and_then(|m| m["digest"].as_str())
                .map(str::to_owned);
            let Some(digest) = pick else { return Ok(None) };
            manifest = self
                .json(
                    &format!("/v2/{repo}/manifests/{digest}"),
                    Some(MANIFEST_TYPES),
                )
                .await?;
        }
        let Some(config_digest) = manifest["config"]["digest"].as_str().map(str::to_owned) else {
            return Ok(None);
        };
        let size = manifest["config"]["size"].as_u64().unwrap_or(0)
            + manifest["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l["size"].as_u64())
                .sum::<u64>();
        let config = self
            .json(&format!("/v2/{repo}/blobs/{config_digest}"), None)
            .await?;
        let labels: BTreeMap<String, String> = config["config"]["Labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        if !labels.contains_key("ai.backend.kernelspec") {
            return Ok(None);
        }
        Ok(Some((config_digest, size, labels)))
    }
}

/// Scans one registry and returns the keys to store for it.
async fn scan_one(
    client: &Client,
    reg: &RegistryConfig,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<(String, String)>, ScanError> {
    let session = Session {
        client,
        reg,
        token: tokio::sync::Mutex::new(None),
    };
    let repos = session.repositories().await?;
    let mut tagged = Vec::new();
    for repo in &repos {
        let tags = session.json(&format!("/v2/{repo}/tags/list"), None).await?;
        for t in tags["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
        {
            tagged.push((repo.clone(), t.to_owned()));
        }
    }
    let session = &session;
    let results: Vec<_> = stream::iter(tagged)
        .map(|(repo, tag)| async move {
            let r = session.image(&repo, &tag).await;
            progress(&format!("{}/{repo}:{tag}", reg.name));
            (repo, tag, r)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut pairs = Vec::new();
    for (repo, tag, r) in results {
        let Some((digest, size, labels)) = r? else {
            continue;
        };
        pairs.extend(image_pairs(
            &reg.name,
            &repo,
            &tag,
            &digest,
            size as i64,
            &labels,
        ));
    }
    Ok(pairs)
}

/// The shared-config keys that record one scanned image: `images/{registry}/{repo}` and,
/// under `…/{tag}`, its digest, size, labels, minimum resources and accelerators.
pub fn image_pairs(
    registry: &str,
    repo: &str,
    tag: &str,
    digest: &str,
    size: i64,
    labels: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let base = format!("images/{}/{}", quote(registry), quote(repo));
    let tag_key = format!("{base}/{tag}");
    let mut pairs = vec![
        (base, "1".to_owned()),
        (tag_key.clone(), digest.to_owned()),
        (format!("{tag_key}/size_bytes"), size.to_string()),
    ];
    for (k, v) in labels {
        pairs.push((format!("{tag_key}/labels/{}", quote(k)), v.clone()));
        if let Some(slot) = k.strip_prefix("ai.backend.resource.min.") {
            pairs.push((format!("{tag_key}/resource/{slot}/min"), v.clone()));
        }
    }
    if let Some(acc) = labels.get("ai.backend.accelerators") {
        pairs.push((format!("{tag_key}/accels"), acc.clone()));
    }
    pairs
}

/// Scans `only` (or every configured registry); each registry's result is reported, and a
/// failure leaves that registry's stored images as they were. `progress` is called once
/// per image examined.
pub async fn rescan(
    shared: &dyn SharedConfig,
    only: Option<&str>,
    tls: &crate::config::DockerRegistryConfig,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<ScanReport>, ScanError> {
    let all = registries(shared).await?;
    let chosen: Vec<RegistryConfig> = match only {
        Some(name) => {
            let r = all
                .into_iter()
                .find(|r| r.name == name)
                .ok_or_else(|| ScanError::UnknownRegistry(name.to_owned()))?;
            vec![r]
        }
        None => all,
    };
    let setup = |msg: String| ScanError::Registry {
        registry: "-".into(),
        msg,
    };
    let mut builder = Client::builder();
    if !tls.ca_file.as_os_str().is_empty() {
        let pem = std::fs::read(&tls.ca_file).map_err(|e| {
            setup(format!(
                "docker-registry.ca-file {}: {e}",
                tls.ca_file.display()
            ))
        })?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| setup(format!("docker-registry.ca-file: {e}")))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder
        .danger_accept_invalid_certs(!tls.ssl_verify)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| ScanError::Registry {
            registry: "-".into(),
            msg: e.to_string(),
        })?;
    let mut reports = Vec::new();
    for reg in chosen {
        let result = match scan_one(&client, &reg, progress).await {
            Ok(pairs) => {
                // Replace what was stored for this registry, keeping admin-set maximums.
                let prefix = format!("images/{}", quote(&reg.name));
                let keep: Vec<(String, String)> = shared
                    .get_prefix(&prefix)
                    .await?
                    .into_iter()
                    .filter(|(k, _)| k.contains("/resource/") && k.ends_with("/max"))
                    .collect();
                shared.delete_prefix(&prefix).await?;
                let count = pairs
                    .iter()
                    .filter(|(k, v)| v.starts_with("sha256:") && k.matches('/').count() == 3)
                    .count();
                for chunk in pairs.chunks(crate::shared_config::MAX_KEYS_PER_UPDATE * 8) {
                    shared.put_many(chunk).await?;
                }
                if !keep.is_empty() {
                    shared.put_many(&keep).await?;
                }
                Ok(count)
            }
            Err(e) => Err(e.to_string()),
        };
        reports.push(ScanReport {
            registry: reg.name.clone(),
            result,
        });
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_are_parsed() {
        let c = challenge(r#"Bearer realm="https://auth.example/token",service="registry.example",scope="registry:catalog:*""#).unwrap();
        assert_eq!(c["realm"], "https://auth.example/token");
        assert_eq!(c["scope"], "registry:catalog:*");
        assert!(challenge("Basic realm=x").is_none());
    }
}
