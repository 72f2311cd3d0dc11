//! Starting an agent from the configuration: kernel backend (Docker or no-op), devices,
//! daemon.

use super::backend::KernelBackend;
use super::daemon::{AgentDaemon, AgentIdentity, RunningAgent};
use super::docker::{DockerBackend, DockerConfig};
use super::noop::{NoopBackend, NoopConfig};
use super::resources::{detect_nvidia, host_slots, DeviceAllocMap, DeviceSource};
use super::AgentError;
use crate::bus::EphemeralHandle;
use crate::config::{AgentConfig, KernelBackendKind, ManagerConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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

/// A running agent with its RPC server.
pub struct LaunchedAgent {
    pub agent: RunningAgent,
    pub rpc_addr: SocketAddr,
    stop_rpc: oneshot::Sender<()>,
    rpc: JoinHandle<()>,
}

impl LaunchedAgent {
    pub fn id(&self) -> &str {
        &self.agent.daemon.identity().id
    }

    /// Stops serving RPC, then the daemon (which announces `instance_terminated`).
    pub async fn stop(self) {
        let _ = self.stop_rpc.send(());
        // In-flight calls get a bound to finish; a client holding its connection open must
        // not keep the process alive.
        let mut rpc = self.rpc;
        if tokio::time::timeout(Duration::from_secs(10), &mut rpc)
            .await
            .is_err()
        {
            tracing::warn!("agent RPC did not drain within 10 s; closing it");
            rpc.abort();
        }
        self.agent.stop().await;
    }
}

/// Connects to Docker, finds devices, starts the daemon and its RPC server. An error says
/// why no agent could run (no Docker engine, no runner binary, an unprotected RPC port…).
pub async fn start(cfg: &ManagerConfig, bus: EphemeralHandle) -> Result<LaunchedAgent, AgentError> {
    let a = &cfg.agent;
    let token = Some(a.rpc_token.clone()).filter(|t| !t.is_empty());
    if !a.rpc_listen_addr.ip().is_loopback() && token.is_none() {
        return Err(AgentError::InvalidInput(format!(
            "agent.rpc-listen-addr {} is reachable from other hosts: set agent.rpc-token",
            a.rpc_listen_addr
        )));
    }
    let agent = start_daemon(cfg, bus).await?;
    let (stop_rpc, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    match crate::agent::rpc_server::serve(agent.daemon.clone(), a.rpc_listen_addr, token, shutdown)
        .await
    {
        Ok((rpc_addr, rpc)) => {
            tracing::info!("agent RPC listening on {rpc_addr}");
            Ok(LaunchedAgent {
                agent,
                rpc_addr,
                stop_rpc,
                rpc,
            })
        }
        Err(e) => {
            agent.stop().await;
            Err(e)
        }
    }
}

/// Mock devices when configured, else the NVIDIA GPUs NVML finds, else none.
fn device_source(a: &AgentConfig) -> Option<DeviceSource> {
    if a.mock_cuda_devices > 0 {
        return Some(DeviceSource::Mock(a.mock_cuda_devices));
    }
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
}

async fn start_daemon(
    cfg: &ManagerConfig,
    bus: EphemeralHandle,
) -> Result<RunningAgent, AgentError> {
    let a = &cfg.agent;
    let id = agent_id(cfg);
    let devices = device_source(a).map(|s| Arc::new(DeviceAllocMap::new(s)));
    let backend: Arc<dyn KernelBackend> = match a.backend {
        KernelBackendKind::Docker => {
            let mut docker = DockerBackend::connect(DockerConfig {
                agent_id: id.clone(),
                scratch_root: cfg.scratch_root(),
                krunner_path: a.krunner_path.clone(),
                network_mode: a.network_mode.clone(),
                kernel_uid: a.kernel_uid,
                kernel_gid: a.kernel_gid,
                pids_limit: a.pids_limit,
                exec_timeout: a.exec_timeout,
                docker_host: a.docker_host.clone(),
            })
            .await?;
            if let Some(d) = devices {
                docker = docker.with_devices(d);
            }
            Arc::new(docker)
        }
        KernelBackendKind::Noop => {
            tracing::warn!("agent {id} uses the no-op kernel backend: its kernels run no code");
            let mut noop = NoopBackend::new(NoopConfig {
                scratch_root: cfg.scratch_root(),
                create_delay: Duration::from_secs_f64(a.noop_create_delay),
            });
            if let Some(d) = devices {
                noop = noop.with_devices(d);
            }
            Arc::new(noop)
        }
    };
    let identity = AgentIdentity {
        id,
        region: a.region.clone(),
        addr: if a.advertised_addr.is_empty() {
            format!("tcp://{}", a.rpc_listen_addr)
        } else {
            a.advertised_addr.clone()
        },
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let hb = Duration::from_secs_f64(a.heartbeat_interval);
    let slots = a
        .offered_slots()
        .map_err(|e| AgentError::InvalidInput(e.to_string()))?
        .unwrap_or_else(|| host_slots(a.reserved_cpu, a.reserved_mem));
    let daemon =
        AgentDaemon::new(backend, bus, identity, slots).with_intervals(hb, Duration::from_secs(2));
    daemon.start().await
}
