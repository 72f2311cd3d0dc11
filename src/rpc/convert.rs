//! The one place where the agent RPC's messages become domain values and back: the client
//! and the agent's server convert here and nowhere else, so a kernel's creation, the answer
//! to it and every error are parsed once at the RPC edge.

use super::pb;
use crate::agent::AgentError;
use crate::domain::{
    ImageRegistry, KernelCreation, KernelInfo, KernelSpec, MountSpec, RegistryCredentials,
    ResourceSlots, ServicePort,
};
use serde_json::Value;
use std::time::Duration;

/// The request that asks an agent to create `kernel_id` as `creation` says.
pub fn create_request(kernel_id: &str, creation: &KernelCreation) -> pb::CreateKernelRequest {
    let KernelCreation {
        spec,
        registry,
        idle_timeout,
    } = creation;
    pb::CreateKernelRequest {
        kernel_id: kernel_id.to_owned(),
        image: spec.image.clone(),
        registry: Some(pb::ImageRegistry {
            name: registry.name.clone(),
            url: registry.url.clone(),
            credentials: registry
                .credentials
                .as_ref()
                .map(|c| pb::RegistryCredentials {
                    username: c.username.clone(),
                    password: c.password.clone(),
                }),
        }),
        resource_slots: spec.slots.to_texts().collect(),
        environ: spec
            .environ
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        mounts: spec
            .mounts
            .iter()
            .map(|m| pb::Mount {
                name: m.name.clone(),
                host_path: m.host_path.to_string_lossy().into_owned(),
                read_only: m.read_only,
                vfolder_id: m.vfolder_id.clone().unwrap_or_default(),
            })
            .collect(),
        idle_timeout: idle_timeout.as_secs(),
    }
}

/// The kernel id and creation a request asks for; what no kernel can be made of is
/// `InvalidInput`.
pub fn kernel_creation(
    req: pb::CreateKernelRequest,
) -> Result<(String, KernelCreation), AgentError> {
    if req.image.is_empty() {
        return Err(AgentError::InvalidInput("the image is required".into()));
    }
    let slots = ResourceSlots::from_texts(
        req.resource_slots
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .map_err(|e| AgentError::InvalidInput(e.to_string()))?;
    let mut mounts = Vec::with_capacity(req.mounts.len());
    for m in req.mounts {
        if m.name.is_empty() || m.host_path.is_empty() {
            return Err(AgentError::InvalidInput(
                "a mount needs a name and a host path".into(),
            ));
        }
        mounts.push(MountSpec {
            host_path: m.host_path.into(),
            name: m.name,
            read_only: m.read_only,
            vfolder_id: Some(m.vfolder_id).filter(|id| !id.is_empty()),
        });
    }
    let registry = req.registry.unwrap_or_default();
    let creation = KernelCreation {
        spec: KernelSpec {
            image: req.image,
            slots,
            environ: req.environ.into_iter().collect(),
            mounts,
        },
        registry: ImageRegistry {
            name: registry.name,
            url: registry.url,
            // An empty user name is an anonymous pull, as the original treats it.
            credentials: registry
                .credentials
                .filter(|c| !c.username.is_empty())
                .map(|c| RegistryCredentials {
                    username: c.username,
                    password: c.password,
                }),
        },
        idle_timeout: Duration::from_secs(req.idle_timeout),
    };
    Ok((req.kernel_id, creation))
}

pub fn kernel_created(info: &KernelInfo) -> pb::KernelCreated {
    pb::KernelCreated {
        id: info.id.clone(),
        container_id: info.container_id.clone(),
        service_ports: info
            .service_ports
            .iter()
            .map(|p| pb::ServicePort {
                name: p.name.clone(),
                protocol: p.protocol.clone(),
                container_port: u32::from(p.container_port),
            })
            .collect(),
    }
}

/// The created kernel an agent reports; a port no TCP port can be is the agent's fault.
pub fn kernel_info(reply: pb::KernelCreated) -> Result<KernelInfo, AgentError> {
    let service_ports = reply
        .service_ports
        .into_iter()
        .map(|p| {
            let container_port = u16::try_from(p.container_port).map_err(|_| {
                AgentError::Failure(format!(
                    "the agent answered nonsense: service port {} of {}",
                    p.container_port, p.name
                ))
            })?;
            Ok(ServicePort {
                name: p.name,
                protocol: p.protocol,
                container_port,
            })
        })
        .collect::<Result<_, AgentError>>()?;
    Ok(KernelInfo {
        id: reply.id,
        container_id: reply.container_id,
        service_ports,
    })
}

pub fn kernel_destroyed(last_stat: Option<&Value>) -> pb::KernelDestroyed {
    pb::KernelDestroyed {
        last_stat_json: last_stat.map(Value::to_string),
    }
}

/// The last statistics of a destroyed kernel.
pub fn last_stat(reply: pb::KernelDestroyed) -> Result<Option<Value>, AgentError> {
    reply
        .last_stat_json
        .map(|json| {
            serde_json::from_str(&json)
                .map_err(|e| AgentError::Failure(format!("the agent answered nonsense: {e}")))
        })
        .transpose()
}

// Errors keep their `AgentError` variant across the wire: each variant has a status code of
// its own, and the code (not the message) brings the variant back.
impl From<AgentError> for tonic::Status {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::NotFound(id) => tonic::Status::not_found(format!("no such kernel: {id}")),
            AgentError::InvalidInput(m) => tonic::Status::invalid_argument(m),
            AgentError::Timeout(m) => tonic::Status::deadline_exceeded(m),
            AgentError::Failure(m) => tonic::Status::internal(m),
        }
    }
}

impl From<tonic::Status> for AgentError {
    fn from(s: tonic::Status) -> Self {
        let msg = s.message().to_owned();
        match s.code() {
            tonic::Code::NotFound => {
                AgentError::NotFound(msg.trim_start_matches("no such kernel: ").to_owned())
            }
            tonic::Code::InvalidArgument => AgentError::InvalidInput(msg),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => AgentError::Timeout(msg),
            tonic::Code::Unauthenticated => {
                AgentError::Failure(format!("the agent refused the token: {msg}"))
            }
            _ => AgentError::Failure(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn creation() -> KernelCreation {
        KernelCreation {
            spec: KernelSpec {
                image: "127.0.0.1:5000/lablup/python:3.11".into(),
                slots: ResourceSlots::from_json(&json!({"cpu": "0.5", "mem": "256m"})).unwrap(),
                environ: [("A".to_owned(), "1".to_owned())].into_iter().collect(),
                mounts: vec![
                    MountSpec {
                        host_path: "/v/abc".into(),
                        name: "data".into(),
                        read_only: true,
                        vfolder_id: Some("abc".into()),
                    },
                    MountSpec {
                        host_path: "/srv/x".into(),
                        name: "x".into(),
                        read_only: false,
                        vfolder_id: None,
                    },
                ],
            },
            registry: ImageRegistry {
                name: "127.0.0.1:5000".into(),
                url: "http://127.0.0.1:5000".into(),
                credentials: Some(RegistryCredentials {
                    username: "u".into(),
                    password: "p".into(),
                }),
            },
            idle_timeout: Duration::from_secs(600),
        }
    }

    #[test]
    fn a_creation_crosses_the_wire_unchanged() {
        let sent = creation();
        let (id, got) = kernel_creation(create_request("k1", &sent)).unwrap();
        assert_eq!((id.as_str(), &got), ("k1", &sent));
        let mut anonymous = sent.clone();
        anonymous.registry.credentials = None;
        let (_, got) = kernel_creation(create_request("k1", &anonymous)).unwrap();
        assert_eq!(got, anonymous);
    }

    #[test]
    fn a_creation_no_kernel_can_be_made_of_is_invalid_input() {
        let mut req = create_request("k1", &creation());
        req.image.clear();
        assert!(matches!(
            kernel_creation(req),
            Err(AgentError::InvalidInput(_))
        ));
        let mut req = create_request("k1", &creation());
        req.resource_slots.insert("cpu".into(), "lots".into());
        assert!(matches!(
            kernel_creation(req),
            Err(AgentError::InvalidInput(_))
        ));
        let mut req = create_request("k1", &creation());
        req.mounts[0].host_path.clear();
        assert!(matches!(
            kernel_creation(req),
            Err(AgentError::InvalidInput(_))
        ));
    }

    #[test]
    fn replies_cross_the_wire_unchanged() {
        let info = KernelInfo {
            id: "k1".into(),
            container_id: "c1".into(),
            service_ports: vec![ServicePort {
                name: "http".into(),
                protocol: "http".into(),
                container_port: 8080,
            }],
        };
        assert_eq!(kernel_info(kernel_created(&info)).unwrap(), info);
        let mut bad = kernel_created(&info);
        bad.service_ports[0].container_port = 70_000;
        assert!(matches!(kernel_info(bad), Err(AgentError::Failure(_))));
        let stat = json!({"mem": {"current": "1", "unit_hint": "bytes"}});
        assert_eq!(
            last_stat(kernel_destroyed(Some(&stat))).unwrap(),
            Some(stat)
        );
        assert_eq!(last_stat(kernel_destroyed(None)).unwrap(), None);
    }

    #[test]
    fn every_agent_error_keeps_its_variant_across_the_wire() {
        for e in [
            AgentError::NotFound("k1".into()),
            AgentError::InvalidInput("bad".into()),
            AgentError::Timeout("slow".into()),
            AgentError::Failure("broke".into()),
        ] {
            assert_eq!(AgentError::from(tonic::Status::from(e.clone())), e);
        }
    }
}
