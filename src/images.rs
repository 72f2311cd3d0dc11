//! Kernel images as recorded in the shared config (`images/{registry}/{image}/{tag}/…`,
//! names URL-quoted) and their aliases (`images/_aliases/{alias}`).

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
}

impl ImageInfo {
    pub fn canonical(&self) -> String {
        format!("{}/{}:{}", self.registry, self.name, self.tag)
    }
}

fn unquote(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Every image with its metadata, sorted by reference.
pub async fn list(shared: &dyn SharedConfig) -> Result<Vec<ImageInfo>, SharedConfigError> {
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
    for (alias, target) in aliases {
        if let Some(info) = images.values_mut().find(|i| i.canonical() == target) {
            info.aliases.push(alias);
        }
    }
    Ok(images
        .into_values()
        .filter(|i| !i.digest.is_empty())
        .collect())
}
