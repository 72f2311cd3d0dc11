//! What a kernel is created from and what its agent answers, as typed values: the create
//! route builds a [`SessionSpec`] once from the request (stored in `kernels.creation_config`
//! as its serde JSON), the scheduler adds the image, slots and registry of the row it places
//! ([`KernelCreation`]), the RPC carries that as typed messages, and the agent's backend runs
//! the [`KernelSpec`] in it. Nothing on the way parses JSON it built itself.

use super::ResourceSlots;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A vfolder (or other host directory) mounted under `/home/work/{name}`. The kernel path
/// follows from the name (the agent checks the name, which is what keeps a mount inside
/// the work directory), so it is not a field of its own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "MountShape")]
pub struct MountSpec {
    pub host_path: PathBuf,
    pub name: String,
    pub read_only: bool,
    /// The vfolder mounted (hex, no dashes), when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vfolder_id: Option<String>,
}

/// The shapes a mount is read from: the object [`MountSpec`] writes, and the original's
/// `[name, host path, vfolder id, permission]` list, which sessions queued before the
/// config was typed have in `kernels.creation_config`.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum MountShape {
    Object {
        host_path: PathBuf,
        name: String,
        #[serde(default)]
        read_only: bool,
        #[serde(default)]
        vfolder_id: Option<String>,
    },
    List(Vec<String>),
}

impl TryFrom<MountShape> for MountSpec {
    type Error = String;

    fn try_from(shape: MountShape) -> Result<Self, String> {
        match shape {
            MountShape::Object {
                host_path,
                name,
                read_only,
                vfolder_id,
            } => Ok(MountSpec {
                host_path,
                name,
                read_only,
                vfolder_id,
            }),
            MountShape::List(parts) => {
                let mut parts = parts.into_iter();
                let (Some(name), Some(path)) = (parts.next(), parts.next()) else {
                    return Err("mounts are [name, host path, id, permission]".into());
                };
                let vfolder_id = parts.next().filter(|id| !id.is_empty());
                let read_only = parts.next().as_deref() == Some("ro");
                Ok(MountSpec {
                    host_path: path.into(),
                    name,
                    read_only,
                    vfolder_id,
                })
            }
        }
    }
}

/// What a session asks of its kernel beyond the image and the slots (which the session's
/// row keeps in columns of their own): `kernels.creation_config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionSpec {
    #[serde(default)]
    pub environ: BTreeMap<String, String>,
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
}

/// What a kernel backend runs. Also recorded in a container label (so a restarted agent can
/// restart the kernel): it never holds secrets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelSpec {
    /// Canonical image reference.
    pub image: String,
    pub slots: ResourceSlots,
    pub environ: BTreeMap<String, String>,
    pub mounts: Vec<MountSpec>,
}

/// Credentials for pulling from a registry. Kept apart from [`KernelSpec`], which is
/// recorded in container labels: secrets never are.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryCredentials({}, <hidden>)", self.username)
    }
}

/// The registry a kernel's image comes from, as the manager knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageRegistry {
    pub name: String,
    /// Empty when the manager has no such registry configured.
    pub url: String,
    pub credentials: Option<RegistryCredentials>,
}

/// Everything an agent is asked to create a kernel with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelCreation {
    pub spec: KernelSpec,
    pub registry: ImageRegistry,
    /// Zero: never destroyed for idleness.
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServicePort {
    pub name: String,
    pub protocol: String,
    pub container_port: u16,
}

/// A kernel an agent created (or restarted).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KernelInfo {
    pub id: String,
    pub container_id: String,
    pub service_ports: Vec<ServicePort>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_creation_config_stored_before_it_was_typed_still_reads() {
        let stored = r#"{"environ": {"A": "1"}, "mounts": [["data", "/v/abc", "abc", "ro"], ["w", "/v/def", "def", "rw"]]}"#;
        let spec: SessionSpec = serde_json::from_str(stored).unwrap();
        assert_eq!(spec.environ["A"], "1");
        assert_eq!(
            spec.mounts,
            [
                MountSpec {
                    host_path: "/v/abc".into(),
                    name: "data".into(),
                    read_only: true,
                    vfolder_id: Some("abc".into()),
                },
                MountSpec {
                    host_path: "/v/def".into(),
                    name: "w".into(),
                    read_only: false,
                    vfolder_id: Some("def".into()),
                },
            ]
        );
        // Older rows still: nothing, or only some keys.
        assert_eq!(
            serde_json::from_str::<SessionSpec>("{}").unwrap(),
            SessionSpec::default()
        );
        assert!(
            serde_json::from_value::<SessionSpec>(json!({"mounts": [["only-a-name"]]})).is_err()
        );
    }

    #[test]
    fn a_session_spec_reads_back_what_it_writes() {
        let spec = SessionSpec {
            environ: [("K".to_owned(), "v".to_owned())].into_iter().collect(),
            mounts: vec![MountSpec {
                host_path: "/v/x".into(),
                name: "x".into(),
                read_only: true,
                vfolder_id: None,
            }],
        };
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<SessionSpec>(&text).unwrap(), spec);
    }

    #[test]
    fn a_kernel_spec_label_written_by_an_earlier_agent_still_reads() {
        // The `ai.backend.spec` label of a container started before mounts had a vfolder id.
        let label = r#"{"image":"img:1","slots":{"cpu":"1"},"environ":{},"mounts":[{"host_path":"/v/x","name":"x","read_only":false}]}"#;
        let spec: KernelSpec = serde_json::from_str(label).unwrap();
        assert_eq!(spec.mounts[0].name, "x");
        assert_eq!(serde_json::to_string(&spec).unwrap(), label);
    }
}
