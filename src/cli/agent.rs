//! `agent`: run an agent alone (on this host or another), joined to a manager through the
//! shared configuration and Redis.

use backend_ai_manager::config::{KernelBackendKind, ManagerConfig};
use backend_ai_manager::{agent, bus, shared_config};
use clap::Args;
use std::process::ExitCode;

/// The long help of `agent`.
pub const LONG_ABOUT: &str =
    "Run an agent: it owns this host's kernels (Docker containers) and reports to the manager.

To join a manager on another host, give the agent the manager's etcd in its configuration
([etcd] addr and namespace, e.g. config/halfstack.toml); it reads the Redis address from the
etcd key config/redis/addr, announces itself there with heartbeats every few seconds (slots,
images, running kernels) and sends kernel events. Set [agent] id, region and
advertised-addr so the manager can tell agents apart and reach this one. A Docker engine and
the static kernel runner ([agent] krunner-path; packaging/build-krunner.sh builds it) are
required, unless the agent uses the no-op backend (--backend noop, or [agent] backend =
\"noop\"): its kernels are records that run no code, for scale and fault tests of a manager.
`serve` runs an agent like this one inside itself unless [agent] enabled = false.";

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Offer this many fake cuda.device slots (overrides agent.mock-cuda-devices).
    #[arg(long, value_name = "N")]
    pub mock_cuda_devices: Option<u32>,
    /// What runs kernels (overrides agent.backend): Docker containers, or no-op records.
    #[arg(long, value_name = "KIND", value_parser = ["docker", "noop"])]
    pub backend: Option<String>,
}

pub async fn run(mut cfg: ManagerConfig, args: AgentArgs) -> anyhow::Result<ExitCode> {
    if let Some(n) = args.mock_cuda_devices {
        cfg.agent.mock_cuda_devices = n;
    }
    match args.backend.as_deref() {
        Some("noop") => cfg.agent.backend = KernelBackendKind::Noop,
        Some("docker") => cfg.agent.backend = KernelBackendKind::Docker,
        _ => {}
    }
    let store = super::open_store(&cfg).await?;
    let shared = shared_config::connect(&cfg, &store).await?;
    let events = bus::connect(shared.as_ref()).await?;
    if cfg.etcd.addr.is_empty() {
        eprintln!("note: no [etcd] addr is configured, so only a manager using this data directory ({}) sees this agent", cfg.manager.data_dir.display());
    }
    super::serve::arm_shutdown_deadline();
    let running = agent::launch::start(&cfg, events.clone()).await?;
    println!(
        "agent {} running: RPC on {}, shared config: {}, events: {}",
        running.id(),
        running.rpc_addr,
        shared.describe(),
        events.describe()
    );
    super::serve::shutdown_signal().await;
    running.stop().await;
    Ok(ExitCode::SUCCESS)
}
