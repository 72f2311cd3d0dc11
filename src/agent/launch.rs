//! Starting an agent from the configuration: Docker backend, devices, daemon.

use super::daemon::{AgentDaemon, AgentIdentity, RunningAgent};
use super::docker::{DockerBackend, DockerConfig};
use super::resources::{detect_nvidia, host_slots, DeviceAllocMap, DeviceSource};
use super::AgentError;
use crate::bus::EphemeralHandle;
use crate::config::ManagerConfig;
use std::sync::Arc;
use std::time::Duration;

/// The agent id: configured, else `i-{hostname}`.
pub fn agent_id(cfg: &ManagerConfig) -> String {
    if !cfg.agent.id.is_empty() {
        return cfg.agent.id.clone();
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("i-{}", if host.is_empty() { "localhost" } else { &host })
}

/// Connects to Docker, finds devices and starts the daemon. An error says why no agent
/// could run (no Docker engine, no runner binary, …).
pub async fn start(cfg: &ManagerConfig, bus: EphemeralHandle) -> Result<RunningAgent, AgentError> {
    let a = &cfg.agent;
    let id = agent_id(cfg);
    let docker_cfg = DockerConfig {
        agent_id: id.clone(),
        scratch_root: cfg.scratch_root(),
        krunner_path: a.krunner_path.clone(),
        network_mode: a.network_mode.clone(),
        kernel_uid: a.kernel_uid,
        kernel_gid: a.kernel_gid,
        pids_limit: a.pids_limit,
        exec_timeout: a.exec_timeout,
    };
    let mut backend = DockerBackend::connect(docker_cfg).await?;
    let source = if a.mock_cuda_devices > 0 {
        Some(DeviceSource::Mock(a.mock_cuda_devices))
    } else {
        match detect_nvidia() {
            Ok(gpus) if !gpus.is_empty() => {
                for g in &gpus {
                    tracing::info!(
                        "GPU {}: {} ({} MiB, {})",
                        g.index,
                        g.name,
                        g.memory_bytes >> 20,
                        g.uuid
                    );
                }
                Some(DeviceSource::Nvidia(gpus))
            }
            Ok(_) => None,
            Err(why) => {
                tracing::info!("no cuda.device slots: {why}");
                None
            }
        }
    };
    if let Some(s) = source {
        backend = backend.with_devices(Arc::new(DeviceAllocMap::new(s)));
    }
    let identity = AgentIdentity {
        id,
        region: a.region.clone(),
        addr: a.advertised_addr.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let hb = Duration::from_secs_f64(a.heartbeat_interval);
    let daemon = AgentDaemon::new(
        Arc::new(backend),
        bus,
        identity,
        host_slots(a.reserved_cpu, a.reserved_mem),
    )
    .with_intervals(hb, Duration::from_secs(2));
    daemon.start().await
}
