//! Manager configuration: embedded defaults ← `manager.toml` ← `BACKEND_*` environment.
//!
//! The file is the first found of: the explicit `-f/--config`, `$BACKEND_CONFIG_FILE`,
//! `./manager.toml`, `~/.config/backend.ai/manager.toml`, `/etc/backend.ai/manager.toml`.
//! None found means embedded defaults. Environment: `BACKEND_<SECTION>__<KEY>` for any key
//! (`BACKEND_MANAGER__SERVICE_ADDR=127.0.0.1:9000`), plus the original's names
//! (`BACKEND_NAMESPACE`, `BACKEND_ETCD_ADDR`, …). Unknown keys are errors, so typos are caught.

use crate::domain::ResourceSlots;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ManagerConfig {
    pub etcd: EtcdConfig,
    pub db: DbConfig,
    pub manager: ServerConfig,
    pub logging: LoggingConfig,
    pub debug: DebugConfig,
    pub agent: AgentConfig,
    pub docker_registry: DockerRegistryConfig,
    pub scheduler: SchedulerConfig,
}

/// How pending sessions are placed on agents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SchedulerConfig {
    /// `dispersed` (the agent with the most free capacity first) or `concentrated`
    /// (the fullest agent that still fits first).
    pub strategy: Strategy,
    /// Seconds after which a session that does not fit stops letting later, smaller
    /// sessions pass it (so large sessions are not starved).
    pub hold_after: f64,
    /// Seconds between scheduling passes when nothing wakes the scheduler.
    pub sweep_interval: f64,
    /// Seconds a create request waits for its session to be RUNNING before answering
    /// with the session still on its way (`enqueueOnly` answers at once).
    pub create_timeout: f64,
    /// Seconds the manager waits for an agent to create a kernel (image pulls included)
    /// before it gives the session up as failed.
    pub agent_create_timeout: f64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Dispersed,
    Concentrated,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            strategy: Strategy::Dispersed,
            hold_after: 30.0,
            sweep_interval: 2.0,
            create_timeout: 300.0,
            agent_create_timeout: 600.0,
        }
    }
}

/// Talking to image registries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DockerRegistryConfig {
    /// Verify registries' TLS certificates (turn off only for a registry you trust on a
    /// network you trust).
    pub ssl_verify: bool,
    /// A PEM file of extra certificate authorities to trust (a private registry's CA);
    /// empty = only the system's.
    pub ca_file: PathBuf,
}

impl Default for DockerRegistryConfig {
    /// Verification on, system authorities only.
    fn default() -> Self {
        DockerRegistryConfig {
            ssl_verify: true,
            ca_file: PathBuf::new(),
        }
    }
}

/// The agent: embedded in `serve`, or run alone with `backend-ai-manager agent`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentConfig {
    /// Run a local agent inside `serve` when a Docker engine is reachable.
    pub enabled: bool,
    /// Agent id; empty = `i-{hostname}`.
    pub id: String,
    pub region: String,
    /// Where the agent RPC listens (the manager calls it there).
    pub rpc_listen_addr: SocketAddr,
    /// Shared secret the manager presents on every RPC; required when the RPC listens
    /// beyond loopback.
    pub rpc_token: String,
    /// The address the manager uses to reach this agent, as reported in heartbeats;
    /// empty = `tcp://{rpc-listen-addr}`.
    pub advertised_addr: String,
    /// Per-kernel scratch directories; empty = `{manager.data-dir}/scratches`.
    pub scratch_root: PathBuf,
    /// The static kernel runner (`packaging/build-krunner.sh` builds it).
    pub krunner_path: PathBuf,
    /// Container network: `none` (default, no network at all), the name of a Docker network
    /// the operator created, or `host` — which lets user code reach this host's loopback
    /// services (etcd, Redis, the API) and is only for a trusted single-user laptop.
    pub network_mode: String,
    pub kernel_uid: u32,
    pub kernel_gid: u32,
    pub pids_limit: i64,
    /// Seconds one run may take; 0 = no limit.
    pub exec_timeout: u64,
    /// The Docker engine kernels run on, and whose images `manager.local-engine-images`
    /// counts: `unix:///path/docker.sock` or `tcp://host:port`; empty = the local default
    /// socket.
    pub docker_host: String,
    /// CPU cores and memory bytes kept for the host.
    pub reserved_cpu: u32,
    pub reserved_mem: u64,
    /// Fake `cuda.device`s to offer (for testing GPU scheduling without GPUs); 0 = detect
    /// real NVIDIA GPUs through NVML.
    pub mock_cuda_devices: u32,
    /// Seconds between heartbeats.
    pub heartbeat_interval: f64,
    /// What runs kernels: `docker`, or `noop` (kernels are records that run no code, for
    /// scale and fault tests of the manager; needs no Docker engine).
    pub backend: KernelBackendKind,
    /// With the `noop` backend: seconds each kernel creation takes.
    pub noop_create_delay: f64,
    /// Resource slots to offer instead of the detected host's (e.g. `cpu = "64"`,
    /// `mem = "256g"`); empty = detect.
    pub slots: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KernelBackendKind {
    Docker,
    Noop,
}

impl AgentConfig {
    /// The configured `agent.slots`, checked; `None` when the host's are to be detected.
    pub fn offered_slots(&self) -> Result<Option<ResourceSlots>, ConfigError> {
        if self.slots.is_empty() {
            return Ok(None);
        }
        let mut out = ResourceSlots::new();
        for (slot, value) in &self.slots {
            let qty =
                ResourceSlots::parse_quantity(slot, &serde_json::Value::String(value.clone()))
                    .map_err(|e| ConfigError::Invalid(format!("agent.slots.{slot}: {e}")))?;
            out.set(slot.clone(), qty);
        }
        Ok(Some(out))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EtcdConfig {
    /// All keys live under `/sorna/{namespace}/`.
    pub namespace: String,
    /// `host:port` of etcd. Empty: the shared config is kept in the embedded database.
    pub addr: String,
    pub user: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DbConfig {
    /// SQLite database file. Empty: `{data-dir}/manager.db`.
    pub path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerConfig {
    /// Where the appliance keeps its state.
    pub data_dir: PathBuf,
    /// The gateway's listening address (API, UI and metrics on one port).
    pub service_addr: SocketAddr,
    /// The `Host` used in signatures when a request has no `Host` header.
    pub hostname: String,
    /// Largest request body accepted by the JSON API, in bytes.
    pub max_body_size: u64,
    /// Largest folder upload (one request), in bytes.
    pub max_upload_size: u64,
    /// Seconds without a heartbeat after which a remote agent is marked LOST (the agent
    /// inside this process never is). The default, 20 s, is about six missed beats at the
    /// agents' 3 s interval: on a 2-core host at load 7-8 beats were seen 5.7 s apart.
    pub heartbeat_timeout: f64,
    /// Write the server's PID here ("" = don't).
    pub pid_file: String,
    /// Serve HTTPS on service-addr with ssl-cert and ssl-privkey (PEM; read again on SIGHUP).
    pub ssl_enabled: bool,
    pub ssl_cert: PathBuf,
    pub ssl_privkey: PathBuf,
    /// E-mail of the superadmin created on first start with an empty database.
    pub bootstrap_admin_email: String,
    /// Count the kernel images of the local Docker engine as known, installed images.
    pub local_engine_images: bool,
    /// Seconds a web UI login stays valid without being used (each use extends it).
    pub ui_session_ttl: u64,
    /// Ports for browser apps, each open app on one of its own (`FIRST-LAST`, or `0` for
    /// any free port). Open them in the firewall to users who run apps.
    pub app_ports: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LoggingConfig {
    /// A `tracing` filter: `info`, `debug`, `backend_ai_manager=debug,warp=info`…
    pub level: String,
    /// `human` or `json`.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DebugConfig {
    pub enabled: bool,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            etcd: EtcdConfig {
                namespace: "local".into(),
                addr: String::new(),
                user: String::new(),
                password: String::new(),
            },
            db: DbConfig {
                path: String::new(),
            },
            manager: ServerConfig {
                data_dir: PathBuf::from("./data"),
                service_addr: SocketAddr::from(([127, 0, 0, 1], 8081)),
                hostname: "localhost".into(),
                max_body_size: 1 << 20,
                max_upload_size: 16 << 30,
                heartbeat_timeout: 20.0,
                pid_file: String::new(),
                ssl_enabled: false,
                ssl_cert: PathBuf::new(),
                ssl_privkey: PathBuf::new(),
                bootstrap_admin_email: "admin@localhost".into(),
                local_engine_images: true,
                ui_session_ttl: 12 * 3600,
                app_ports: "30000-30099".into(),
            },
            logging: LoggingConfig {
                level: "info".into(),
                format: LogFormat::Human,
            },
            debug: DebugConfig { enabled: false },
            docker_registry: DockerRegistryConfig::default(),
            scheduler: SchedulerConfig::default(),
            agent: AgentConfig {
                enabled: true,
                id: String::new(),
                region: "local".into(),
                rpc_listen_addr: SocketAddr::from(([127, 0, 0, 1], 6001)),
                rpc_token: String::new(),
                advertised_addr: String::new(),
                scratch_root: PathBuf::new(),
                krunner_path: PathBuf::from("/usr/lib/backend-ai/backend-ai-krunner"),
                network_mode: "none".into(),
                kernel_uid: 1000,
                kernel_gid: 1000,
                pids_limit: 1024,
                exec_timeout: 0,
                docker_host: String::new(),
                reserved_cpu: 0,
                reserved_mem: 1 << 30,
                mock_cuda_devices: 0,
                heartbeat_interval: 3.0,
                backend: KernelBackendKind::Docker,
                noop_create_delay: 0.0,
                slots: BTreeMap::new(),
            },
        }
    }
}

/// The original's environment names, mapped onto our keys.
const LEGACY_ENV: &[(&str, &str)] = &[
    ("BACKEND_NAMESPACE", "etcd.namespace"),
    ("BACKEND_ETCD_ADDR", "etcd.addr"),
    ("BACKEND_ETCD_USER", "etcd.user"),
    ("BACKEND_ETCD_PASSWORD", "etcd.password"),
    ("BACKEND_PID_FILE", "manager.pid-file"),
];

/// The config file to read, if any: explicit path (must exist), then the search path.
pub fn find_config_file(explicit: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(Some(p.to_owned()))
        } else {
            Err(ConfigError::MissingFile(p.to_owned()))
        };
    }
    if let Some(p) = std::env::var_os("BACKEND_CONFIG_FILE").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(Some(p))
        } else {
            Err(ConfigError::MissingFile(p))
        };
    }
    let mut candidates = vec![PathBuf::from("manager.toml")];
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".config/backend.ai/manager.toml"));
    }
    candidates.push(PathBuf::from("/etc/backend.ai/manager.toml"));
    Ok(candidates.into_iter().find(|p| p.is_file()))
}

impl ManagerConfig {
    /// Loads defaults ← `file` ← environment, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(ManagerConfig::default()));
        if let Some(f) = file {
            fig = fig.merge(Toml::file(f));
        }
        // BACKEND_SECTION__SOME_KEY → section.some-key. Only double-underscore names are
        // taken, so the client's BACKEND_ENDPOINT/ACCESS_KEY in the same shell are ignored.
        fig = fig.merge(
            Env::prefixed("BACKEND_")
                .filter(|k| k.as_str().contains("__"))
                .map(|k| k.as_str().replace("__", ".").replace('_', "-").into()),
        );
        for (var, key) in LEGACY_ENV {
            if let Ok(v) = std::env::var(var) {
                fig = fig.merge((*key, v));
            }
        }
        let cfg: ManagerConfig = fig
            .extract()
            .map_err(|e| ConfigError::Invalid(one_line(e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let ns = &self.etcd.namespace;
        if ns.is_empty()
            || !ns
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::Invalid(format!(
                "etcd.namespace: '{ns}' must be non-empty letters, digits, '-' or '_'"
            )));
        }
        if !self.etcd.addr.is_empty() && parse_host_port(&self.etcd.addr).is_none() {
            return Err(ConfigError::Invalid(format!(
                "etcd.addr: '{}' is not host:port",
                self.etcd.addr
            )));
        }
        let hb = self.manager.heartbeat_timeout;
        if hb.is_nan() || hb < 1.0 {
            return Err(ConfigError::Invalid(
                "manager.heartbeat-timeout: must be at least 1.0 seconds".into(),
            ));
        }
        if !(60..=30 * 24 * 3600).contains(&self.manager.ui_session_ttl) {
            return Err(ConfigError::Invalid(
                "manager.ui-session-ttl: must be between 60 seconds and 30 days".into(),
            ));
        }
        if let Err(e) = self
            .manager
            .app_ports
            .parse::<crate::gateway::apps::PortRange>()
        {
            return Err(ConfigError::Invalid(format!("manager.app-ports: {e}")));
        }
        if self.manager.ssl_enabled
            && (self.manager.ssl_cert.as_os_str().is_empty()
                || self.manager.ssl_privkey.as_os_str().is_empty())
        {
            return Err(ConfigError::Invalid(
                "manager.ssl-enabled: needs manager.ssl-cert and manager.ssl-privkey (PEM files)"
                    .into(),
            ));
        }
        if self.manager.max_body_size < 1024 {
            return Err(ConfigError::Invalid(
                "manager.max-body-size: must be at least 1024 bytes".into(),
            ));
        }
        if !self.manager.bootstrap_admin_email.contains('@') {
            return Err(ConfigError::Invalid(
                "manager.bootstrap-admin-email: must be an e-mail address".into(),
            ));
        }
        let hb = self.agent.heartbeat_interval;
        if hb.is_nan() || !(0.1..=60.0).contains(&hb) {
            return Err(ConfigError::Invalid(
                "agent.heartbeat-interval: must be between 0.1 and 60 seconds".into(),
            ));
        }
        let delay = self.agent.noop_create_delay;
        if delay.is_nan() || !(0.0..=3600.0).contains(&delay) {
            return Err(ConfigError::Invalid(
                "agent.noop-create-delay: must be between 0 and 3600 seconds".into(),
            ));
        }
        self.agent.offered_slots()?;
        let host = &self.agent.docker_host;
        if !(host.is_empty()
            || ["unix://", "tcp://", "http://"]
                .iter()
                .any(|s| host.starts_with(s)))
        {
            return Err(ConfigError::Invalid(
                "agent.docker-host: must be empty, unix:///path/to/docker.sock or tcp://host:port"
                    .into(),
            ));
        }
        if self.agent.network_mode.is_empty() {
            return Err(ConfigError::Invalid(
                "agent.network-mode: must be none, host or a network name".into(),
            ));
        }
        if self.agent.network_mode == "bridge" || self.agent.network_mode == "default" {
            return Err(ConfigError::Invalid(
                "agent.network-mode: Docker's default bridge is not used; create a network for kernels and name it here".into(),
            ));
        }
        let sc = &self.scheduler;
        for (key, v, min) in [
            ("hold-after", sc.hold_after, 0.0),
            ("sweep-interval", sc.sweep_interval, 0.05),
            ("create-timeout", sc.create_timeout, 0.0),
            ("agent-create-timeout", sc.agent_create_timeout, 1.0),
        ] {
            if v.is_nan() || v < min || v > 86400.0 {
                return Err(ConfigError::Invalid(format!(
                    "scheduler.{key}: must be between {min} and 86400 seconds"
                )));
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.logging.level).map_err(|e| {
            ConfigError::Invalid(format!(
                "logging.level: '{}' is not a valid filter: {e}",
                self.logging.level
            ))
        })?;
        Ok(())
    }

    pub fn scratch_root(&self) -> PathBuf {
        if self.agent.scratch_root.as_os_str().is_empty() {
            self.manager.data_dir.join("scratches")
        } else {
            self.agent.scratch_root.clone()
        }
    }

    pub fn db_path(&self) -> PathBuf {
        if self.db.path.is_empty() {
            self.manager.data_dir.join("manager.db")
        } else {
            PathBuf::from(&self.db.path)
        }
    }
}

/// `host:port` with a non-empty host and a numeric port.
pub fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), port.parse().ok()?))
}

/// figment errors can span lines and repeat; keep the first, naming the key.
fn one_line(e: figment::Error) -> String {
    let first = e.into_iter().next();
    match first {
        Some(err) => {
            let key = err.path.join(".");
            let msg = err.kind.to_string();
            let origin = err
                .metadata
                .as_ref()
                .map(|m| m.name.to_string())
                .unwrap_or_default();
            let mut out = if key.is_empty() {
                msg
            } else {
                format!("{key}: {msg}")
            };
            if !origin.is_empty() {
                out.push_str(&format!(" (from {origin})"));
            }
            out.replace('\n', " ")
        }
        None => "invalid configuration".into(),
    }
}

#[cfg(test)]
// figment's Jail closures return figment::Error, which is large by the library's design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_run_without_any_file() {
        Jail::expect_with(|_| {
            let cfg = ManagerConfig::load(None).unwrap();
            assert_eq!(cfg.manager.service_addr.to_string(), "127.0.0.1:8081");
            assert_eq!(cfg.db_path(), PathBuf::from("./data/manager.db"));
            assert!(cfg.etcd.addr.is_empty());
            Ok(())
        });
    }

    #[test]
    fn file_then_environment_override() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "m.toml",
                "[etcd]\nnamespace = \"lab\"\n[manager]\nservice-addr = \"127.0.0.1:9000\"\n",
            )?;
            jail.set_env("BACKEND_MANAGER__MAX_BODY_SIZE", "4096");
            jail.set_env("BACKEND_ETCD_ADDR", "127.0.0.1:2379");
            jail.set_env("BACKEND_ACCESS_KEY", "client-setting-is-ignored");
            let cfg = ManagerConfig::load(Some(Path::new("m.toml"))).unwrap();
            assert_eq!(cfg.etcd.namespace, "lab");
            assert_eq!(cfg.manager.service_addr.port(), 9000);
            assert_eq!(cfg.manager.max_body_size, 4096);
            assert_eq!(cfg.etcd.addr, "127.0.0.1:2379");
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_one_line_naming_the_key() {
        Jail::expect_with(|jail| {
            jail.create_file("m.toml", "[manager]\nservice-addr = \"nowhere\"\n")?;
            let err = ManagerConfig::load(Some(Path::new("m.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("manager.service-addr:"), "{err}");
            assert!(!err.contains('\n'));
            jail.create_file("b.toml", "[agent]\nnetwork-mode = \"bridge\"\n")?;
            let err = ManagerConfig::load(Some(Path::new("b.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("agent.network-mode:"), "{err}");
            jail.create_file("t.toml", "[manager]\nservice-adr = \"127.0.0.1:1\"\n")?;
            let err = ManagerConfig::load(Some(Path::new("t.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("service-adr"), "{err}");
            Ok(())
        });
    }
}
