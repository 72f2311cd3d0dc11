//! Kernel images: as recorded in the shared config by registry scans ([`scan`]) under
//! `images/{registry}/{image}/{tag}/…` (names URL-quoted), their aliases
//! (`images/_aliases/{alias}`), and those on the local Docker engine. Installed images
//! also answer to the short names in their `ai.backend.aliases` label (`r`, `lua`, `c`:
//! what packaging/images/build.sh stamps), unless an alias of that name was set by hand.

pub mod scan;

use crate::shared_config::{SharedConfig, SharedConfigError};
use percent_encoding::percent_decode_str;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageInfo {
    pub registry: String,
    pub name: String,
    pub tag: String,
    pub digest: String,
    pub size_bytes: i64,
    pub labels: BTreeMap<String, String>,
    pub accelerators: Vec<String>,
    /// `slot → (min, max)`; `None` where unset.
    pub resource_limits: BTreeMap<String, (Option<String>, Option<String>)>,
    pub aliases: Vec<String>,
    /// Present on the local Docker engine.
    pub installed: bool,
}

impl ImageInfo {
    pub fn canonical(&self) -> String {
        format!("{}/{}:{}", self.registry, self.name, self.tag)
    }
}

fn unquote(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Images recorded by registry scans, and the aliases `(alias, target)`.
async fn scanned(
    shared: &dyn SharedConfig,
) -> Result<(Vec<ImageInfo>, Vec<(String, String)>), SharedConfigError> {
    let pairs = shared.get_prefix("images").await?;
    let mut images: BTreeMap<(String, String, String), ImageInfo> = BTreeMap::new();
    let mut aliases: Vec<(String, String)> = Vec::new();
    for (key, value) in &pairs {
        let parts: Vec<&str> = key.split('/').collect();
        match parts.as_slice() {
            ["images", "_aliases", alias] => aliases.push((unquote(alias), value.clone())),
            ["images", reg, img, tag, rest @ ..] => {
                let id = (unquote(reg), unquote(img), (*tag).to_owned());
                let info = images.entry(id.clone()).or_insert_with(|| ImageInfo {
                    registry: id.0.clone(),
                    name: id.1.clone(),
                    tag: id.2.clone(),
                    ..Default::default()
                });
                match rest {
                    [] => info.digest = value.clone(),
                    ["size_bytes"] => info.size_bytes = value.parse().unwrap_or(0),
                    ["labels", label @ ..] => {
                        info.labels.insert(unquote(&label.join("/")), value.clone());
                    }
                    ["accels"] => {
                        info.accelerators = value
                            .split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    }
                    ["resource", slot, bound] => {
                        let e = info.resource_limits.entry((*slot).to_owned()).or_default();
                        if *bound == "min" {
                            e.0 = Some(value.clone());
                        } else if *bound == "max" {
                            e.1 = Some(value.clone());
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    // Entries without a digest hold only limits set by hand; `list` keeps them only for
    // images the local engine has.
    Ok((images.into_values().collect(), aliases))
}

/// Kernel images (with `ai.backend.kernelspec`) on a Docker engine, as installed images;
/// an error when the engine cannot be asked.
pub async fn local_images(
    docker: &bollard::Docker,
) -> Result<Vec<ImageInfo>, bollard::errors::Error> {
    let mut filters = std::collections::HashMap::new();
    filters.insert("label".to_owned(), vec!["ai.backend.kernelspec".to_owned()]);
    let opts = bollard::query_parameters::ListImagesOptions {
        filters: Some(filters),
        ..Default::default()
    };
    let summaries = docker.list_images(Some(opts)).await?;
    let mut out = Vec::new();
    for summary in summaries {
        let labels: BTreeMap<String, String> = summary.labels.clone().into_iter().collect();
        let mut limits = BTreeMap::new();
        for (k, v) in &labels {
            if let Some(slot) = k.strip_prefix("ai.backend.resource.min.") {
                limits.insert(slot.to_owned(), (Some(v.clone()), None));
            }
        }
        let accelerators: Vec<String> = labels
            .get("ai.backend.accelerators")
            .map(|a| {
                a.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        for tag in summary
            .repo_tags
            .iter()
            .filter(|t| !t.starts_with("<none>"))
        {
            let Ok(r) = ImageRef::parse(tag) else {
                continue;
            };
            out.push(ImageInfo {
                registry: r.registry,
                name: r.name,
                tag: r.tag,
                digest: summary.id.clone(),
                size_bytes: summary.size,
                labels: labels.clone(),
                accelerators: accelerators.clone(),
                resource_limits: limits.clone(),
                aliases: Vec::new(),
                installed: true,
            });
        }
    }
    Ok(out)
}

/// The short names an image's `ai.backend.aliases` label gives it (comma-separated), as
/// packaging/images/build.sh stamps them (`r`, `lua`, `c`, ...).
fn label_aliases(info: &ImageInfo) -> Vec<String> {
    info.labels
        .get("ai.backend.aliases")
        .map(|l| {
            l.split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Connects to the Docker engine at `host` (`agent.docker-host`; empty = the local default
/// socket) if one answers within two seconds.
pub async fn local_engine(host: &str) -> Option<bollard::Docker> {
    let docker = crate::agent::docker::engine_client(host).ok()?;
    match tokio::time::timeout(std::time::Duration::from_secs(2), docker.ping()).await {
        Ok(Ok(_)) => Some(docker),
        _ => None,
    }
}

/// The images a manager knows: scanned from registries (shared config) and, when it can
/// reach one, those on the local Docker engine.
pub struct Catalog<'a> {
    pub shared: &'a dyn SharedConfig,
    pub docker: Option<&'a bollard::Docker>,
}

impl Catalog<'_> {
    /// Every image, sorted by reference, with its aliases and whether it is installed.
    /// When the engine does not answer, the scanned images alone (and a warning).
    pub async fn list(&self) -> Result<Vec<ImageInfo>, SharedConfigError> {
        let (images, engine) = self.list_noting_engine().await?;
        if let Some(e) = engine {
            tracing::warn!("cannot list the Docker engine's images: {e}");
        }
        Ok(images)
    }

    /// As [`Self::list`], with the engine's error when it did not answer.
    async fn list_noting_engine(
        &self,
    ) -> Result<(Vec<ImageInfo>, Option<bollard::errors::Error>), SharedConfigError> {
        let (mut images, aliases) = scanned(self.shared).await?;
        let mut engine_error = None;
        if let Some(docker) = self.docker {
            let locals = local_images(docker).await.unwrap_or_else(|e| {
                engine_error = Some(e);
                Vec::new()
            });
            for local in locals {
                match images
                    .iter_mut()
                    .find(|i| i.canonical() == local.canonical())
                {
                    Some(known) => {
                        known.installed = true;
                        // Only limits were set by hand for an image nobody scanned: the
                        // engine knows the rest.
                        if known.digest.is_empty() {
                            let overrides = std::mem::take(&mut known.resource_limits);
                            let mut merged = local.resource_limits;
                            merged.extend(overrides);
                            *known = ImageInfo {
                                resource_limits: merged,
                                installed: true,
                                ..local
                            };
                        }
                    }
                    None => images.push(local),
                }
            }
        }
        images.retain(|i| !i.digest.is_empty() || i.installed);
        images.sort_by_key(|i| i.canonical());
        // Short names the image builder stamped on installed images (`ai.backend.aliases`),
        // unless an alias of that name was set by hand: the first image (by reference)
        // claiming a name gets it.
        let mut taken: std::collections::HashSet<String> =
            aliases.iter().map(|(a, _)| a.clone()).collect();
        for info in images.iter_mut().filter(|i| i.installed) {
            for name in label_aliases(info) {
                if taken.insert(name.clone()) {
                    info.aliases.push(name);
                }
            }
        }
        for (alias, target) in aliases {
            if let Some(info) = images.iter_mut().find(|i| i.canonical() == target) {
                info.aliases.push(alias);
            }
        }
        Ok((images, engine_error))
    }

    pub async fn resolve(&self, reference: &str) -> Result<ImageInfo, ImageError> {
        resolve_in(self, reference).await
    }

    pub async fn alias(&self, alias_name: &str, target: &str) -> Result<(), ImageError> {
        alias(self, alias_name, target).await
    }

    pub async fn dealias(&self, alias_name: &str) -> Result<(), ImageError> {
        dealias(self.shared, alias_name).await
    }

    pub async fn set_resource_limit(
        &self,
        reference: &str,
        slot: &str,
        min: Option<&str>,
        max: Option<&str>,
    ) -> Result<(), ImageError> {
        set_resource_limit(self, reference, slot, min, max).await
    }
}

/// Characters kept as they are when quoting names into keys (Python's `quote(s, safe='')`).
const QUOTE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub(crate) fn quote(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUOTE).to_string()
}

const ALIASES: &str = "images/_aliases";
/// The most alias hops followed before giving up (a cycle, most likely).
const MAX_ALIAS_HOPS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("no such image: {0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// The image is not among the scanned ones and the container engine, which may have
    /// it, does not answer.
    #[error("the container engine is unavailable: {0}")]
    EngineUnavailable(String),
    #[error(transparent)]
    Config(#[from] SharedConfigError),
}

/// `registry/name:tag`, with Docker's defaults (`index.docker.io`, `latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub name: String,
    pub tag: String,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, ImageError> {
        let s = s.trim();
        let bad = || ImageError::Invalid(format!("'{s}' is not an image reference"));
        if s.is_empty() || s.contains(char::is_whitespace) || s.contains("//") {
            return Err(bad());
        }
        let (first, rest) = match s.split_once('/') {
            Some((a, b)) => (Some(a), b),
            None => (None, s),
        };
        let (registry, path) = match first {
            Some(f) if f.contains('.') || f.contains(':') || f == "localhost" => {
                (f.to_owned(), rest.to_owned())
            }
            Some(f) => ("index.docker.io".to_owned(), format!("{f}/{rest}")),
            None => ("index.docker.io".to_owned(), rest.to_owned()),
        };
        let (name, tag) = match path.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n.to_owned(), t.to_owned()),
            _ => (path.clone(), "latest".to_owned()),
        };
        if name.is_empty() || tag.is_empty() {
            return Err(bad());
        }
        Ok(ImageRef {
            registry,
            name,
            tag,
        })
    }

    pub fn canonical(&self) -> String {
        format!("{}/{}:{}", self.registry, self.name, self.tag)
    }

    fn key(&self) -> String {
        format!(
            "images/{}/{}/{}",
            quote(&self.registry),
            quote(&self.name),
            self.tag
        )
    }
}

/// Resolves an alias (following aliases of aliases) or a reference to a known image.
async fn resolve_in(catalog: &Catalog<'_>, reference: &str) -> Result<ImageInfo, ImageError> {
    let shared = catalog.shared;
    let mut current = reference.trim().to_owned();
    let mut seen = vec![current.clone()];
    for _ in 0..MAX_ALIAS_HOPS {
        match shared
            .get(&format!("{ALIASES}/{}", quote(&current)))
            .await?
        {
            Some(target) => {
                if seen.contains(&target) {
                    return Err(ImageError::Invalid(format!(
                        "alias loop: {} -> {target}",
                        seen.join(" -> ")
                    )));
                }
                seen.push(target.clone());
                current = target;
            }
            None => break,
        }
    }
    let (images, engine_error) = catalog.list_noting_engine().await?;
    // A short name from an installed image's label (stored aliases were followed above and
    // win: `list` gives a label alias only to names nobody set by hand).
    if let Some(i) = images
        .iter()
        .find(|i| i.installed && i.aliases.contains(&current))
    {
        if label_aliases(i).contains(&current) {
            return Ok(i.clone());
        }
    }
    let wanted = ImageRef::parse(&current)?;
    match images
        .into_iter()
        .find(|i| i.registry == wanted.registry && i.name == wanted.name && i.tag == wanted.tag)
    {
        Some(found) => Ok(found),
        // The engine may well have it: saying it does not exist would mislead.
        None => Err(match engine_error {
            Some(e) => ImageError::EngineUnavailable(e.to_string()),
            None => ImageError::NotFound(reference.to_owned()),
        }),
    }
}

/// Points `alias` (any text, `:` and `/` included) at `target`, which must be a known
/// image or another alias.
async fn alias(catalog: &Catalog<'_>, alias: &str, target: &str) -> Result<(), ImageError> {
    let shared = catalog.shared;
    if alias.trim().is_empty() || alias.len() > 512 {
        return Err(ImageError::Invalid(
            "an alias is 1 to 512 characters".into(),
        ));
    }
    if alias.trim() == target.trim() {
        return Err(ImageError::Invalid(
            "an alias cannot point at itself".into(),
        ));
    }
    let resolved = catalog.resolve(target).await?;
    let stored = match shared.get(&format!("{ALIASES}/{}", quote(target))).await? {
        Some(_) => target.to_owned(), // an alias of an alias stays one (multi-hop)
        None => resolved.canonical(),
    };
    // Refuse what would loop before writing anything: the target's chain must not pass
    // through the alias being set.
    let mut hop = target.trim().to_owned();
    for _ in 0..MAX_ALIAS_HOPS {
        if hop == alias.trim() {
            return Err(ImageError::Invalid(format!(
                "{alias} -> {target} would make an alias loop"
            )));
        }
        match shared.get(&format!("{ALIASES}/{}", quote(&hop))).await? {
            Some(next) => hop = next,
            None => break,
        }
    }
    shared
        .put(&format!("{ALIASES}/{}", quote(alias)), &stored)
        .await?;
    Ok(())
}

async fn dealias(shared: &dyn SharedConfig, alias: &str) -> Result<(), ImageError> {
    let key = format!("{ALIASES}/{}", quote(alias));
    if shared.get(&key).await?.is_none() {
        return Err(ImageError::NotFound(format!("alias {alias}")));
    }
    shared.delete(&key).await?;
    Ok(())
}

/// Sets (or with `None` removes) the minimum and maximum of `slot` for an image.
async fn set_resource_limit(
    catalog: &Catalog<'_>,
    reference: &str,
    slot: &str,
    min: Option<&str>,
    max: Option<&str>,
) -> Result<(), ImageError> {
    let shared = catalog.shared;
    let image = catalog.resolve(reference).await?;
    if slot.is_empty()
        || !slot
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(ImageError::Invalid(format!("'{slot}' is not a slot name")));
    }
    let key = ImageRef {
        registry: image.registry,
        name: image.name,
        tag: image.tag,
    }
    .key();
    for (bound, value) in [("min", min), ("max", max)] {
        let k = format!("{key}/resource/{slot}/{bound}");
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            Some(v) => {
                crate::domain::ResourceSlots::parse_quantity(
                    slot,
                    &serde_json::Value::String(v.to_owned()),
                )
                .map_err(|e| ImageError::Invalid(e.to_string()))?;
                shared.put(&k, v).await?
            }
            None => shared.delete(&k).await?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_get_docker_defaults() {
        let r = ImageRef::parse("lablup/python:3.6").unwrap();
        assert_eq!(r.canonical(), "index.docker.io/lablup/python:3.6");
        assert_eq!(
            ImageRef::parse("127.0.0.1:5000/lablup/python")
                .unwrap()
                .canonical(),
            "127.0.0.1:5000/lablup/python:latest"
        );
        assert_eq!(
            ImageRef::parse("python").unwrap().canonical(),
            "index.docker.io/python:latest"
        );
        assert_eq!(
            ImageRef::parse("localhost/x/y:1").unwrap().registry,
            "localhost"
        );
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("a b").is_err());
        assert_eq!(quote("lablup/python"), "lablup%2Fpython");
        assert_eq!(quote("127.0.0.1:5000"), "127.0.0.1%3A5000");
    }
}
