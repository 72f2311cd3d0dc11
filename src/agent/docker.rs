//! Kernels as Docker containers, through bollard.
//!
//! Each kernel gets scratch directories `{scratch}/{id}/work` (mounted at `/home/work`) and
//! `{scratch}/{id}/ipc` (at `/opt/backend.ai/ipc`, where the runner listens), owned by the
//! unprivileged kernel user; the static runner is bind-mounted read-only as the entrypoint.
//! Containers run without capabilities, with `no-new-privileges`, memory (no swap), CPU and
//! pids limits, and network mode `none` unless configured otherwise. Labels carry the kernel
//! and agent ids, so a restarted agent recovers its kernels.
//!
//! Kernel ends come from the engine's event stream and, as a check on it, from comparing
//! the kernels the agent believes alive with the engine's containers ("reconciling"): at
//! every (re)connection and every [`RECONCILE_PERIOD`]. When the engine goes away (a restart,
//! a dropped connection) the stream is subscribed to again with a bounded back-off; each end
//! is reported once, whichever source sees it first.

pub use super::backend::{
    KernelBackend, KernelInfo, KernelSpec, MountSpec, RegistryCredentials, ServicePort, Termination,
};
use super::resources::{DeviceAllocMap, DeviceSource, CUDA_SLOT};
use super::runner::{ExecResult, RunnerClient};
use super::{files, AgentError};
use crate::domain::ResourceSlots;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, KillContainerOptions,
    ListContainersOptions, ListImagesOptions, LogsOptions, RemoveContainerOptions, StatsOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use rust_decimal::prelude::ToPrimitive;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

pub const LABEL_KERNEL_ID: &str = "ai.backend.kernel-id";
pub const LABEL_AGENT_ID: &str = "ai.backend.agent-id";
const RUNNER_IN_CONTAINER: &str = "/opt/backend.ai/bin/backend-ai-krunner";
const IPC_IN_CONTAINER: &str = "/opt/backend.ai/ipc";
/// Largest single file moved in or out of a kernel.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct DockerConfig {
    pub agent_id: String,
    pub scratch_root: PathBuf,
    /// The static runner binary on this host.
    pub krunner_path: PathBuf,
    /// `none` (default), `host`, or the name of a network the operator created.
    pub network_mode: String,
    pub kernel_uid: u32,
    pub kernel_gid: u32,
    pub pids_limit: i64,
    /// Seconds a single run may take (0 = unlimited).
    pub exec_timeout: u64,
    /// The engine: `unix:///path/to/docker.sock`, `tcp://host:port`; empty = the local
    /// default socket.
    pub docker_host: String,
}

struct Kernel {
    info: KernelInfo,
    dir: PathBuf,
    runner: Mutex<Option<Arc<RunnerClient>>>,
    /// What it was created with, for restarts (also kept in a container label).
    spec: KernelSpec,
    devices: Vec<String>,
}

const LABEL_SPEC: &str = "ai.backend.spec";

pub struct DockerBackend {
    docker: Docker,
    cfg: DockerConfig,
    kernels: Mutex<HashMap<String, Arc<Kernel>>>,
    devices: Option<Arc<DeviceAllocMap>>,
    /// What tells kernel ends apart and keeps them from being reported twice; one lock, so
    /// the event stream and a reconcile never both report an end.
    ends: std::sync::Mutex<Ends>,
}

#[derive(Default)]
struct Ends {
    /// Kernels being destroyed on request, with the reason their end is reported with.
    destroying: HashMap<String, String>,
    /// Kernels being restarted: their container's end is not the kernel's.
    restarting: HashSet<String>,
    /// Containers whose end was reported (by the event stream or a reconcile), and when.
    /// Kept for [`REPORTED_TTL`]: a re-subscription replays events of the last second or
    /// so, and an end reported once must not be reported again.
    reported: HashMap<String, Instant>,
}

/// How long a reported container end is remembered (far longer than any replay reaches).
const REPORTED_TTL: Duration = Duration::from_secs(600);
/// Back-off between attempts to reach the engine again: from the first to the last,
/// doubling. Short at first (a dropped connection is usually back at once), bounded so a
/// restarted engine is noticed within seconds.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_LAST: Duration = Duration::from_secs(5);
/// Reconciling also runs this often while the event stream looks healthy. The stream can
/// lose ends without ending itself (the engine drops events for a slow subscriber; a
/// connection to a remote engine can go half-open), and this bounds how long such a kernel
/// keeps its session and slots. A pass is one filtered container list (plus an inspect per
/// ended kernel), so 15 s costs next to nothing and is well under the minute a user would
/// otherwise wait on a dead session.
pub const RECONCILE_PERIOD: Duration = Duration::from_secs(15);
/// How long a reconcile may take before the engine counts as unreachable.
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(10);
/// Events are asked for from this long before a (re)subscription, so that an end between
/// the reconcile and the moment the engine takes the subscription is not missed.
const REPLAY: Duration = Duration::from_secs(1);

const LABEL_DEVICES: &str = "ai.backend.devices";

fn docker_err(what: &str, e: bollard::errors::Error) -> AgentError {
    if engine_unreachable(&e) {
        return AgentError::Failure(format!("{what}: the container engine is unavailable: {e}"));
    }
    AgentError::Failure(format!("{what}: {e}"))
}

/// A client for the engine at `host` (`unix:///…`, `tcp://…` or `http://…`; empty = the
/// local default socket). A socket must exist; nothing is sent until the first request.
pub fn engine_client(host: &str) -> Result<Docker, bollard::errors::Error> {
    const TIMEOUT_SECS: u64 = 120;
    if host.is_empty() {
        Docker::connect_with_local_defaults()
    } else if host.starts_with("unix://") {
        Docker::connect_with_unix(host, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(host, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
    } else {
        Err(bollard::errors::Error::UnsupportedURISchemeError {
            uri: host.to_owned(),
        })
    }
}

/// Whether an engine call failed because the engine could not be reached (as opposed to
/// the engine answering with an error).
pub fn engine_unreachable(e: &bollard::errors::Error) -> bool {
    use bollard::errors::Error as E;
    matches!(
        e,
        E::IOError { .. }
            | E::HyperResponseError { .. }
            | E::HyperLegacyError { .. }
            | E::RequestTimeoutError
            | E::SocketNotFoundError(_)
    )
}

/// The reason a container's end is reported with, from its exit code and whether the
/// kernel ran out of memory: ended by a signal (128 + n) or the OOM killer is `killed`.
fn end_reason(exit_code: Option<i64>, oom_killed: bool) -> &'static str {
    if oom_killed || exit_code.is_some_and(|c| c > 128) {
        "killed"
    } else {
        "self-terminated"
    }
}

/// Docker's `since` for events from [`REPLAY`] before now (seconds.nanoseconds).
fn replay_since() -> String {
    let t = std::time::SystemTime::now()
        .checked_sub(REPLAY)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
}

/// Waits `d`, or until nobody receives kernel ends any more (then false).
async fn pause(tx: &tokio::sync::mpsc::Sender<Termination>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = tx.closed() => false,
    }
}

/// Sends every end; false when nobody receives them any more.
async fn send_all(tx: &tokio::sync::mpsc::Sender<Termination>, ended: Vec<Termination>) -> bool {
    for t in ended {
        if tx.send(t).await.is_err() {
            return false;
        }
    }
    true
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// `kernel.{image name}.{id}`: the image's short name, as far as a container name allows.
fn container_name(id: &str, image: &str) -> String {
    let short = image
        .rsplit('/')
        .next()
        .unwrap_or("kernel")
        .split(':')
        .next()
        .unwrap_or("kernel");
    let short: String = short
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    format!("kernel.{short}.{id}")
}

/// `name:protocol:port` entries of the `ai.backend.service-ports` label.
pub fn parse_service_ports(label: &str) -> Vec<ServicePort> {
    label
        .split(',')
        .filter_map(|item| {
            let mut p = item.trim().split(':');
            let (name, protocol, port) = (p.next()?, p.next()?, p.next()?.parse::<u16>().ok()?);
            (!name.is_empty() && matches!(protocol, "tcp" | "http" | "pty") && port > 1024).then(
                || ServicePort {
                    name: name.to_owned(),
                    protocol: protocol.to_owned(),
                    container_port: port,
                },
            )
        })
        .collect()
}

impl DockerBackend {
    /// Connects to the local Docker engine and checks that it answers.
    pub async fn connect(mut cfg: DockerConfig) -> Result<Self, AgentError> {
        let docker =
            engine_client(&cfg.docker_host).map_err(|e| docker_err("cannot reach Docker", e))?;
        docker
            .ping()
            .await
            .map_err(|e| docker_err("the Docker engine does not answer", e))?;
        if !cfg.krunner_path.is_file() {
            return Err(AgentError::Failure(format!(
                "the kernel runner {} does not exist (build it with packaging/build-krunner.sh)",
                cfg.krunner_path.display()
            )));
        }
        // Docker takes a relative bind-mount source for a volume name: paths go absolute.
        let absolute = |p: &Path| {
            std::path::absolute(p).map_err(|e| AgentError::Failure(format!("{}: {e}", p.display())))
        };
        cfg.scratch_root = absolute(&cfg.scratch_root)?;
        cfg.krunner_path = absolute(&cfg.krunner_path)?;
        std::fs::create_dir_all(&cfg.scratch_root).map_err(|e| {
            AgentError::Failure(format!("scratch root {}: {e}", cfg.scratch_root.display()))
        })?;
        Ok(DockerBackend {
            docker,
            cfg,
            kernels: Mutex::new(HashMap::new()),
            devices: None,
            ends: std::sync::Mutex::new(Ends::default()),
        })
    }

    /// Gives this backend accelerator devices (`cuda.device`) to hand out.
    pub fn with_devices(mut self, devices: Arc<DeviceAllocMap>) -> Self {
        self.devices = Some(devices);
        self
    }

    pub fn config(&self) -> &DockerConfig {
        &self.cfg
    }

    async fn kernel(&self, id: &str) -> Result<Arc<Kernel>, AgentError> {
        self.kernels
            .lock()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| AgentError::NotFound(id.to_owned()))
    }

    /// Pulls the image if the engine lacks it; returns its labels.
    async fn ensure_image(&self, image: &str) -> Result<HashMap<String, String>, AgentError> {
        if !self.has_image(image).await {
            self.pull_image(image, None, &mut |_| {}).await?;
        }
        let inspected = self
            .docker
            .inspect_image(image)
            .await
            .map_err(|e| docker_err("image", e))?;
        Ok(inspected.config.and_then(|c| c.labels).unwrap_or_default())
    }

    fn kernel_dir(&self, id: &str) -> PathBuf {
        self.cfg.scratch_root.join(id)
    }

    fn make_dirs(&self, dir: &Path) -> Result<(), AgentError> {
        use std::os::unix::fs::PermissionsExt;
        let fail = |e: std::io::Error| {
            AgentError::Failure(format!("scratch directory {}: {e}", dir.display()))
        };
        for sub in ["work", "ipc"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(fail)?;
            std::os::unix::fs::chown(&p, Some(self.cfg.kernel_uid), Some(self.cfg.kernel_gid))
                .map_err(fail)?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o750)).map_err(fail)?;
        }
        Ok(())
    }

    /// Creates and starts the kernel's container from `spec` and its image's `labels`, with
    /// `devices` (accelerators already allocated to it) and `dir` (its scratch directories);
    /// returns once the runner inside answers.
    async fn start_container(
        &self,
        id: &str,
        spec: &KernelSpec,
        labels: &HashMap<String, String>,
        dir: &Path,
        devices: &[String],
    ) -> Result<KernelInfo, AgentError> {
        let mut env = self.kernel_env(spec, labels);
        let binds = self.binds(spec, dir)?;
        let device_requests = self.device_requests(devices, &mut env);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: Some(vec![RUNNER_IN_CONTAINER.into()]),
            cmd: Some(Vec::new()),
            env: Some(env),
            labels: Some(self.container_labels(id, spec, devices)),
            user: Some(format!("{}:{}", self.cfg.kernel_uid, self.cfg.kernel_gid)),
            working_dir: Some("/home/work".into()),
            host_config: Some(self.host_config(spec, binds, device_requests)),
            ..Default::default()
        };
        let container_id = self
            .create_and_start(container_name(id, &spec.image), body)
            .await?;
        let info = KernelInfo {
            id: id.to_owned(),
            container_id,
            service_ports: labels
                .get("ai.backend.service-ports")
                .map(|l| parse_service_ports(l))
                .unwrap_or_default(),
        };
        let kernel = Arc::new(Kernel {
            info: info.clone(),
            dir: dir.to_path_buf(),
            runner: Mutex::new(None),
            spec: spec.clone(),
            devices: devices.to_vec(),
        });
        self.kernels
            .lock()
            .await
            .insert(id.to_owned(), kernel.clone());
        self.wait_ready(id, &kernel).await?;
        Ok(info)
    }

    /// The kernel's environment: the spec's, then what the runner needs, then the core count
    /// under the names the image's label gives.
    fn kernel_env(&self, spec: &KernelSpec, labels: &HashMap<String, String>) -> Vec<String> {
        let runtime = labels
            .get("ai.backend.runtime-path")
            .cloned()
            .unwrap_or_else(|| "python3".into());
        // The runner picks the language (driver, compiler, batch heuristics) by this label.
        let runtime_type = labels
            .get("ai.backend.runtime-type")
            .cloned()
            .unwrap_or_else(|| "python".into());
        let mut env: Vec<String> = spec
            .environ
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.extend([
            format!("BACKENDAI_RUNTIME_TYPE={runtime_type}"),
            format!("BACKENDAI_RUNTIME_PATH={runtime}"),
            "BACKENDAI_WORKDIR=/home/work".into(),
            format!("BACKENDAI_IPC_DIR={IPC_IN_CONTAINER}"),
            format!("BACKENDAI_EXEC_TIMEOUT={}", self.cfg.exec_timeout),
            "HOME=/home/work".into(),
        ]);
        if let Some(names) = labels.get("ai.backend.envs.corecount") {
            let cores = spec.slots.get("cpu").ceil().to_i64().unwrap_or(1).max(1);
            env.extend(
                names
                    .split(',')
                    .filter(|n| !n.is_empty())
                    .map(|n| format!("{}={cores}", n.trim())),
            );
        }
        env
    }

    /// The runner (read-only), the work and IPC directories, and each mount under
    /// `/home/work/{name}`; a name that could leave the work directory is refused.
    fn binds(&self, spec: &KernelSpec, dir: &Path) -> Result<Vec<String>, AgentError> {
        let mut binds = vec![
            format!(
                "{}:{RUNNER_IN_CONTAINER}:ro",
                self.cfg.krunner_path.display()
            ),
            format!("{}:/home/work:rw", dir.join("work").display()),
            format!("{}:{IPC_IN_CONTAINER}:rw", dir.join("ipc").display()),
        ];
        for m in &spec.mounts {
            if m.name.is_empty() || m.name.contains('/') || m.name.starts_with('.') {
                return Err(AgentError::InvalidInput(format!(
                    "invalid mount name '{}'",
                    m.name
                )));
            }
            let source = std::path::absolute(&m.host_path).map_err(|e| {
                AgentError::InvalidInput(format!("mount {}: {e}", m.host_path.display()))
            })?;
            binds.push(format!(
                "{}:/home/work/{}:{}",
                source.display(),
                m.name,
                if m.read_only { "ro" } else { "rw" }
            ));
        }
        Ok(binds)
    }

    /// How the kernel gets its accelerators: NVIDIA devices through the engine; mock ones
    /// (tests) named in an environment variable added to `env`.
    fn device_requests(
        &self,
        devices: &[String],
        env: &mut Vec<String>,
    ) -> Option<Vec<DeviceRequest>> {
        match self.devices.as_ref().map(|d| &d.source) {
            Some(DeviceSource::Nvidia(_)) if !devices.is_empty() => Some(vec![DeviceRequest {
                driver: Some("nvidia".into()),
                device_ids: Some(devices.to_vec()),
                capabilities: Some(vec![vec!["gpu".into()]]),
                ..Default::default()
            }]),
            Some(DeviceSource::Mock(_)) if !devices.is_empty() => {
                env.push(format!("BACKENDAI_MOCK_CUDA_DEVICES={}", devices.join(",")));
                None
            }
            _ => None,
        }
    }

    /// The container's limits (memory without swap, CPU, pids) and confinement (no
    /// capabilities, no new privileges, the configured network).
    fn host_config(
        &self,
        spec: &KernelSpec,
        binds: Vec<String>,
        device_requests: Option<Vec<DeviceRequest>>,
    ) -> HostConfig {
        let cpus = spec.slots.get("cpu");
        let mem = spec.slots.get("mem").to_i64().unwrap_or(0);
        HostConfig {
            device_requests,
            binds: Some(binds),
            network_mode: Some(self.cfg.network_mode.clone()),
            memory: (mem > 0).then_some(mem),
            memory_swap: (mem > 0).then_some(mem),
            nano_cpus: (cpus > rust_decimal::Decimal::ZERO).then(|| {
                (cpus * rust_decimal::Decimal::from(1_000_000_000))
                    .to_i64()
                    .unwrap_or(0)
            }),
            pids_limit: Some(self.cfg.pids_limit),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            privileged: Some(false),
            ..Default::default()
        }
    }

    /// The kernel's and agent's ids, its image and slots, and what a restarted agent needs
    /// to take the kernel over: its devices and spec.
    fn container_labels(
        &self,
        id: &str,
        spec: &KernelSpec,
        devices: &[String],
    ) -> HashMap<String, String> {
        let mut labels = HashMap::new();
        labels.insert(LABEL_KERNEL_ID.to_owned(), id.to_owned());
        labels.insert(LABEL_AGENT_ID.to_owned(), self.cfg.agent_id.clone());
        labels.insert("ai.backend.image".to_owned(), spec.image.clone());
        labels.insert(
            "ai.backend.slots".to_owned(),
            spec.slots.to_json().to_string(),
        );
        labels.insert(
            LABEL_DEVICES.to_owned(),
            serde_json::Value::from(devices.to_vec()).to_string(),
        );
        labels.insert(
            LABEL_SPEC.to_owned(),
            serde_json::to_string(spec).unwrap_or_default(),
        );
        labels
    }

    /// Creates the container and starts it; returns its id.
    async fn create_and_start(
        &self,
        name: String,
        body: ContainerCreateBody,
    ) -> Result<String, AgentError> {
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| docker_err("cannot create the container", e))?;
        self.docker
            .start_container(
                &created.id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|e| docker_err("cannot start the container", e))?;
        Ok(created.id)
    }

    /// Ready means the runner answers; when it does not, the error carries the kernel's log.
    async fn wait_ready(&self, id: &str, kernel: &Kernel) -> Result<(), AgentError> {
        if let Err(e) = self.runner_of(kernel).await {
            let logs = self.logs(id).await.unwrap_or_default();
            return Err(AgentError::Failure(format!(
                "the kernel did not start: {e}; its log: {}",
                logs.trim()
            )));
        }
        Ok(())
    }

    async fn runner_of(&self, kernel: &Kernel) -> Result<Arc<RunnerClient>, AgentError> {
        let mut slot = kernel.runner.lock().await;
        if let Some(r) = slot.as_ref() {
            return Ok(r.clone());
        }
        let sock = kernel.dir.join("ipc").join(backend_ai_krunner::SOCKET_NAME);
        let client = Arc::new(RunnerClient::connect(&sock, Duration::from_secs(30)).await?);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Drops a broken runner connection so the next call reconnects.
    async fn forget_runner(&self, id: &str) {
        if let Ok(k) = self.kernel(id).await {
            *k.runner.lock().await = None;
        }
    }

    /// Kills and removes a container with its anonymous volumes; one already gone is fine.
    async fn remove_container(&self, container_id: &str) -> Result<(), bollard::errors::Error> {
        let opts = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(container_id, Some(opts)).await {
            Err(e) if !is_not_found(&e) => Err(e),
            _ => Ok(()),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), AgentError> {
        if let Some(map) = &self.devices {
            map.release(id);
        }
        let kernel = self.kernels.lock().await.remove(id);
        if let Some(k) = &kernel {
            if let Err(e) = self.remove_container(&k.info.container_id).await {
                tracing::warn!("cannot remove container of kernel {id}: {e}");
            }
        }
        let dir = self.kernel_dir(id);
        tokio::task::spawn_blocking(move || {
            if dir.exists() {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!("cannot remove {}: {e}", dir.display());
                }
            }
        })
        .await
        .map_err(|e| AgentError::Failure(e.to_string()))
    }

    fn ends(&self) -> std::sync::MutexGuard<'_, Ends> {
        self.ends.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The end a `die` event tells of, unless it was reported already.
    fn end_from_event(&self, ev: bollard::models::EventMessage) -> Option<Termination> {
        let actor = ev.actor?;
        let attrs = actor.attributes.unwrap_or_default();
        let kernel_id = attrs.get(LABEL_KERNEL_ID)?.clone();
        let exit_code = attrs.get("exitCode").and_then(|c| c.parse::<i64>().ok());
        let mut ends = self.ends();
        if let Some(container) = actor.id.filter(|c| !c.is_empty()) {
            if ends.reported.insert(container, Instant::now()).is_some() {
                return None;
            }
        }
        let restarting = ends.restarting.remove(&kernel_id);
        let requested = ends.destroying.remove(&kernel_id);
        let reason = match requested {
            _ if restarting => "restarting".to_owned(),
            Some(why) => why,
            None => end_reason(exit_code, false).to_owned(),
        };
        Some(Termination {
            kernel_id,
            exit_code,
            reason,
        })
    }

    /// Compares the kernels this agent believes alive with the engine's containers and
    /// returns the ends not reported yet, marking them reported: a container that exited
    /// (`killed` or `self-terminated`, by its exit code) or no longer exists (`vanished`).
    /// An error: the engine did not answer.
    async fn reconcile(&self) -> Result<Vec<Termination>, bollard::errors::Error> {
        // Listed after this snapshot: each of its containers existed before the list.
        let believed: Vec<Arc<Kernel>> = self.kernels.lock().await.values().cloned().collect();
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_owned(),
            vec![format!("{LABEL_AGENT_ID}={}", self.cfg.agent_id)],
        );
        let listed = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await?;
        let states: HashMap<String, String> = listed
            .into_iter()
            .filter_map(|c| Some((c.id?, c.state.map(|s| s.to_string()).unwrap_or_default())))
            .collect();
        let mut out = Vec::new();
        for k in believed {
            let container = &k.info.container_id;
            let (exit_code, reason) = match states.get(container).map(String::as_str) {
                None => (None, "vanished"),
                Some("exited" | "dead" | "removing") => match self
                    .docker
                    .inspect_container(
                        container,
                        None::<bollard::query_parameters::InspectContainerOptions>,
                    )
                    .await
                {
                    Ok(c) => {
                        let state = c.state.unwrap_or_default();
                        let oom = state.oom_killed.unwrap_or(false);
                        (state.exit_code, end_reason(state.exit_code, oom))
                    }
                    Err(e) if is_not_found(&e) => (None, "vanished"),
                    Err(e) => return Err(e),
                },
                Some(_) => continue,
            };
            // Destroyed, restarted or forgotten since the snapshot: not this pass's to report.
            let current = self.kernels.lock().await.get(&k.info.id).cloned();
            if !current.is_some_and(|c| Arc::ptr_eq(&c, &k)) {
                continue;
            }
            let mut ends = self.ends();
            if ends.restarting.contains(&k.info.id) || ends.reported.contains_key(container) {
                continue;
            }
            ends.reported.insert(container.clone(), Instant::now());
            let reason = ends
                .destroying
                .remove(&k.info.id)
                .unwrap_or_else(|| reason.to_owned());
            out.push(Termination {
                kernel_id: k.info.id.clone(),
                exit_code,
                reason,
            });
        }
        self.ends()
            .reported
            .retain(|_, at| at.elapsed() < REPORTED_TTL);
        Ok(out)
    }

    /// [`Self::reconcile`] within [`RECONCILE_TIMEOUT`]; an error says why the engine
    /// counts as unreachable.
    async fn reconcile_bounded(&self) -> Result<Vec<Termination>, String> {
        match tokio::time::timeout(RECONCILE_TIMEOUT, self.reconcile()).await {
            Ok(Ok(ended)) => Ok(ended),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer within {} s",
                RECONCILE_TIMEOUT.as_secs()
            )),
        }
    }

    /// Reports kernel ends on `tx` until it closes: follows the engine's `die` events,
    /// reconciles at every (re)subscription and every [`RECONCILE_PERIOD`], and when the
    /// engine goes away tries again with a back-off from [`BACKOFF_FIRST`] to
    /// [`BACKOFF_LAST`].
    async fn watch_ends(self: Arc<Self>, tx: tokio::sync::mpsc::Sender<Termination>) {
        let mut filters = HashMap::new();
        filters.insert("type".to_owned(), vec!["container".to_owned()]);
        filters.insert("event".to_owned(), vec!["die".to_owned()]);
        filters.insert(
            "label".to_owned(),
            vec![format!("{LABEL_AGENT_ID}={}", self.cfg.agent_id)],
        );
        let mut backoff = BACKOFF_FIRST;
        // When the engine was lost; `connect` has just heard it.
        let mut lost: Option<Instant> = None;
        loop {
            // The subscription reaches the engine only when the stream is first polled,
            // after the reconcile below: events from just before it are asked for too (an
            // end the reconcile reported already is not reported again).
            let mut events = self.docker.events(Some(EventsOptions {
                since: Some(replay_since()),
                filters: Some(filters.clone()),
                ..Default::default()
            }));
            match self.reconcile_bounded().await {
                Ok(ended) => {
                    if let Some(at) = lost.take() {
                        tracing::info!(
                            "the container engine answers again after {:.1} s; {} kernel(s) ended meanwhile",
                            at.elapsed().as_secs_f64(),
                            ended.len()
                        );
                    }
                    if !send_all(&tx, ended).await {
                        return;
                    }
                }
                Err(why) => {
                    match lost {
                        None => {
                            tracing::warn!("the container engine is unreachable: {why}; retrying");
                            lost = Some(Instant::now());
                        }
                        Some(_) => {
                            tracing::debug!("the container engine is still unreachable: {why}")
                        }
                    }
                    if !pause(&tx, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_LAST);
                    continue;
                }
            }
            let subscribed = Instant::now();
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::now() + RECONCILE_PERIOD,
                RECONCILE_PERIOD,
            );
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let why = loop {
                tokio::select! {
                    ev = events.next() => match ev {
                        Some(Ok(ev)) => {
                            if let Some(t) = self.end_from_event(ev) {
                                if tx.send(t).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Some(Err(e)) => break format!("its event stream failed: {e}"),
                        None => break "its event stream ended".to_owned(),
                    },
                    _ = tick.tick() => match self.reconcile_bounded().await {
                        Ok(ended) => {
                            if !send_all(&tx, ended).await {
                                return;
                            }
                        }
                        Err(why) => break why,
                    },
                    _ = tx.closed() => return,
                }
            };
            tracing::warn!("lost the container engine: {why}; reconnecting");
            lost = Some(Instant::now());
            // A subscription that held a while was a working connection: this is a new
            // outage, tried again soon.
            if subscribed.elapsed() >= BACKOFF_LAST {
                backoff = BACKOFF_FIRST;
            }
            if !pause(&tx, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_LAST);
        }
    }
}

#[async_trait::async_trait]
impl KernelBackend for DockerBackend {
    fn devices(&self) -> Option<&Arc<DeviceAllocMap>> {
        self.devices.as_ref()
    }

    /// Whether the engine has the image locally.
    async fn has_image(&self, image: &str) -> bool {
        self.docker.inspect_image(image).await.is_ok()
    }

    /// Pulls an image, calling `progress` with each status line Docker reports.
    async fn pull_image(
        &self,
        image: &str,
        credentials: Option<&RegistryCredentials>,
        progress: &mut (dyn FnMut(String) + Send),
    ) -> Result<(), AgentError> {
        tracing::info!("pulling {image}");
        let opts = CreateImageOptions {
            from_image: Some(image.to_owned()),
            ..Default::default()
        };
        let auth = credentials.map(|c| bollard::auth::DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            serveraddress: Some(image.split('/').next().unwrap_or_default().to_owned()),
            ..Default::default()
        });
        let mut pull = self.docker.create_image(Some(opts), None, auth);
        while let Some(step) = pull.next().await {
            let info = step.map_err(|e| {
                if engine_unreachable(&e) {
                    AgentError::Failure(format!(
                        "cannot pull {image}: the container engine is unavailable: {e}"
                    ))
                } else {
                    AgentError::InvalidInput(format!("cannot pull {image}: {e}"))
                }
            })?;
            let line = [info.status, info.progress]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            if !line.is_empty() {
                progress(line);
            }
        }
        Ok(())
    }

    /// Creates and starts a kernel, and waits until its runner answers.
    async fn create_kernel(&self, id: &str, spec: &KernelSpec) -> Result<KernelInfo, AgentError> {
        let kid = uuid::Uuid::parse_str(id)
            .map_err(|_| AgentError::InvalidInput(format!("'{id}' is not a kernel id")))?;
        let id = kid.hyphenated().to_string();
        if self.kernels.lock().await.contains_key(&id) {
            return Err(AgentError::InvalidInput(format!(
                "kernel {id} exists already"
            )));
        }
        let labels = self.ensure_image(&spec.image).await?;
        if !labels.contains_key("ai.backend.kernelspec") {
            return Err(AgentError::InvalidInput(format!(
                "{} is not a Backend.AI kernel image (no ai.backend.kernelspec label)",
                spec.image
            )));
        }
        // Devices are taken before anything else exists, so concurrent creations cannot
        // overcommit them; every failure below gives them back.
        let wanted = spec.slots.get(CUDA_SLOT);
        let devices = if wanted > rust_decimal::Decimal::ZERO {
            let map = self.devices.as_ref().ok_or_else(|| {
                AgentError::InvalidInput(format!("this agent has no {CUDA_SLOT}"))
            })?;
            map.allocate(&id, wanted)?
        } else {
            Vec::new()
        };
        let dir = self.kernel_dir(&id);
        let started = match self.make_dirs(&dir) {
            Ok(()) => {
                self.start_container(&id, spec, &labels, &dir, &devices)
                    .await
            }
            Err(e) => Err(e),
        };
        match started {
            Ok(info) => Ok(info),
            Err(e) => {
                let _ = self.remove(&id).await;
                Err(e)
            }
        }
    }

    async fn execute(
        &self,
        id: &str,
        run_id: Option<String>,
        mode: &str,
        code: &str,
        opts: &Value,
        flush_timeout: Option<Duration>,
    ) -> Result<ExecResult, AgentError> {
        let kernel = self.kernel(id).await?;
        let runner = self.runner_of(&kernel).await?;
        let r = runner
            .execute(run_id, mode, code, opts, flush_timeout)
            .await;
        if matches!(r, Err(AgentError::Failure(_))) {
            self.forget_runner(id).await;
        }
        r
    }

    async fn interrupt(&self, id: &str) -> Result<(), AgentError> {
        let kernel = self.kernel(id).await?;
        self.runner_of(&kernel).await?.interrupt().await
    }

    async fn complete(
        &self,
        id: &str,
        code: &str,
        opts: &Value,
    ) -> Result<Vec<String>, AgentError> {
        let kernel = self.kernel(id).await?;
        self.runner_of(&kernel).await?.complete(code, opts).await
    }

    async fn start_service(&self, id: &str, service: &str) -> Result<Value, AgentError> {
        let kernel = self.kernel(id).await?;
        let port = kernel
            .info
            .service_ports
            .iter()
            .find(|p| p.name == service)
            .ok_or_else(|| {
                AgentError::InvalidInput(format!("the kernel has no service '{service}'"))
            })?;
        self.runner_of(&kernel)
            .await?
            .start_service(service, port.container_port, &port.protocol)
            .await
    }

    /// Opens a connection of `kind` (`pty`, `connect`) to the kernel's runner and waits for
    /// its `connected` answer; the stream is the caller's from then on.
    async fn open_runner_stream(
        &self,
        id: &str,
        kind: &str,
        payload: &[u8],
    ) -> Result<tokio::net::UnixStream, AgentError> {
        use tokio::io::AsyncWriteExt;
        let kernel = self.kernel(id).await?;
        let sock = kernel.dir.join("ipc").join(backend_ai_krunner::SOCKET_NAME);
        let mut stream = tokio::net::UnixStream::connect(&sock)
            .await
            .map_err(|e| AgentError::Failure(format!("cannot reach the kernel runner: {e}")))?;
        let hello = backend_ai_krunner::encode(kind, payload)
            .map_err(|e| AgentError::InvalidInput(e.to_string()))?;
        stream
            .write_all(&hello)
            .await
            .map_err(|e| AgentError::Failure(e.to_string()))?;
        // The runner waits up to 120 s for a service to listen (its definition's
        // `start-timeout`), then answers.
        let answer = tokio::time::timeout(
            Duration::from_secs(125),
            super::runner::read_frame(&mut stream),
        )
        .await
        .map_err(|_| AgentError::Timeout("the kernel runner did not answer".into()))?
        .map_err(|e| AgentError::Failure(e.to_string()))?
        .ok_or_else(|| AgentError::Failure("the kernel runner closed the connection".into()))?;
        let v: Value = serde_json::from_slice(&answer.payload).unwrap_or(Value::Null);
        if let Some(e) = v["error"].as_str() {
            return Err(AgentError::Failure(e.to_owned()));
        }
        Ok(stream)
    }

    /// Starts a service of the kernel (if it is not running) and opens a byte stream to it.
    async fn connect_service(
        &self,
        id: &str,
        service: &str,
    ) -> Result<tokio::net::UnixStream, AgentError> {
        let kernel = self.kernel(id).await?;
        let port = kernel
            .info
            .service_ports
            .iter()
            .find(|p| p.name == service)
            .map(|p| p.container_port)
            .ok_or_else(|| {
                AgentError::InvalidInput(format!("the kernel has no service '{service}'"))
            })?;
        let started = self.start_service(id, service).await?;
        if started["status"] == "failed" {
            return Err(AgentError::Failure(format!(
                "Failed to launch the app service: {}",
                started["error"].as_str().unwrap_or("unknown error")
            )));
        }
        self.open_runner_stream(
            id,
            backend_ai_krunner::to_runner::CONNECT,
            port.to_string().as_bytes(),
        )
        .await
    }

    async fn upload_file(&self, id: &str, path: &str, data: &[u8]) -> Result<(), AgentError> {
        if data.len() as u64 > MAX_FILE_BYTES {
            return Err(AgentError::InvalidInput(format!(
                "files must be smaller than {MAX_FILE_BYTES} bytes"
            )));
        }
        let kernel = self.kernel(id).await?;
        let (root, mounts, uid_gid) = (
            kernel.dir.join("work"),
            kernel.spec.mounts.clone(),
            (self.cfg.kernel_uid, self.cfg.kernel_gid),
        );
        let (path, data) = (path.to_owned(), data.to_vec());
        files::job(move || files::write(&root, &mounts, &path, &data, Some(uid_gid))).await
    }

    async fn download_file(&self, id: &str, path: &str) -> Result<Vec<u8>, AgentError> {
        let kernel = self.kernel(id).await?;
        let (root, mounts) = (kernel.dir.join("work"), kernel.spec.mounts.clone());
        let path = path.to_owned();
        files::job(move || files::read(&root, &mounts, &path, MAX_FILE_BYTES)).await
    }

    async fn list_files(&self, id: &str, path: &str) -> Result<Value, AgentError> {
        let kernel = self.kernel(id).await?;
        let (root, mounts) = (kernel.dir.join("work"), kernel.spec.mounts.clone());
        let path = path.to_owned();
        files::job(move || files::list(&root, &mounts, &path)).await
    }

    /// The container's own log (the runner's messages).
    async fn logs(&self, id: &str) -> Result<String, AgentError> {
        let kernel = self.kernel(id).await?;
        let opts = LogsOptions {
            stdout: true,
            stderr: true,
            tail: "all".into(),
            ..Default::default()
        };
        let mut stream = self.docker.logs(&kernel.info.container_id, Some(opts));
        let mut out = String::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => out.push_str(&c.to_string()),
                Err(e) => return Err(docker_err("logs", e)),
            }
        }
        Ok(out)
    }

    /// Whether the kernel's container is still running.
    async fn is_running(&self, id: &str) -> Result<bool, AgentError> {
        let kernel = self.kernel(id).await?;
        let c = self
            .docker
            .inspect_container(
                &kernel.info.container_id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .map_err(|e| docker_err("inspect", e))?;
        Ok(c.state.and_then(|s| s.running).unwrap_or(false))
    }

    /// As [`KernelBackend::destroy_kernel`], reporting the end with `reason` (e.g. `idle-timeout`).
    async fn destroy_kernel_because(&self, id: &str, reason: &str) -> Result<(), AgentError> {
        let kernel = self.kernel(id).await?;
        self.ends()
            .destroying
            .insert(id.to_owned(), reason.to_owned());
        match self
            .docker
            .kill_container(
                &kernel.info.container_id,
                Some(KillContainerOptions {
                    signal: "SIGKILL".into(),
                }),
            )
            .await
        {
            Ok(()) => {}
            // Not running any more (409) or gone (404): nothing to kill.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => {}
            Err(e) => return Err(docker_err("cannot kill the container", e)),
        }
        self.remove(id).await
    }

    /// Replaces the kernel's container with a new one: same id, resources, devices and
    /// `/home/work`; the interpreter starts afresh.
    async fn restart_kernel(&self, id: &str) -> Result<KernelInfo, AgentError> {
        let kernel = self.kernel(id).await?;
        self.ends().restarting.insert(id.to_owned());
        if let Err(e) = self.remove_container(&kernel.info.container_id).await {
            // The kernel goes on in its old container: its end is its own again.
            self.ends().restarting.remove(id);
            return Err(docker_err("cannot stop the old container", e));
        }
        self.kernels.lock().await.remove(id);
        let labels = self.ensure_image(&kernel.spec.image).await?;
        match self
            .start_container(id, &kernel.spec, &labels, &kernel.dir, &kernel.devices)
            .await
        {
            Ok(info) => Ok(info),
            Err(e) => {
                let _ = self.remove(id).await;
                Err(e)
            }
        }
    }

    /// Forgets a kernel that ended by itself: removes its container, scratch directories
    /// and device allocations.
    async fn forget_kernel(&self, id: &str) -> Result<(), AgentError> {
        self.remove(id).await
    }

    /// After an agent restart: re-adopts this agent's running kernel containers and cleans up
    /// exited ones. Returns `(recovered, ended)` kernel ids.
    async fn recover(&self) -> Result<(Vec<String>, Vec<String>), AgentError> {
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_owned(),
            vec![format!("{LABEL_AGENT_ID}={}", self.cfg.agent_id)],
        );
        let opts = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let containers = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| docker_err("list", e))?;
        let (mut recovered, mut ended) = (Vec::new(), Vec::new());
        for c in containers {
            let labels = c.labels.clone().unwrap_or_default();
            let Some(id) = labels.get(LABEL_KERNEL_ID).cloned() else {
                continue;
            };
            let Some(container_id) = c.id.clone() else {
                continue;
            };
            let image = labels.get("ai.backend.image").cloned().unwrap_or_default();
            if let (Some(map), Some(held)) = (&self.devices, labels.get(LABEL_DEVICES)) {
                map.restore(
                    &id,
                    &serde_json::from_str::<Vec<String>>(held).unwrap_or_default(),
                );
            }
            let service_ports = match self.docker.inspect_image(&image).await {
                Ok(i) => i
                    .config
                    .and_then(|c| c.labels)
                    .and_then(|l| {
                        l.get("ai.backend.service-ports")
                            .map(|s| parse_service_ports(s))
                    })
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            let spec = labels
                .get(LABEL_SPEC)
                .and_then(|s| serde_json::from_str::<KernelSpec>(s).ok())
                .unwrap_or(KernelSpec {
                    image: image.clone(),
                    slots: ResourceSlots::new(),
                    environ: BTreeMap::new(),
                    mounts: Vec::new(),
                });
            let devices = labels
                .get(LABEL_DEVICES)
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or_default();
            let kernel = Arc::new(Kernel {
                info: KernelInfo {
                    id: id.clone(),
                    container_id,
                    service_ports,
                },
                dir: self.kernel_dir(&id),
                runner: Mutex::new(None),
                spec,
                devices,
            });
            self.kernels.lock().await.insert(id.clone(), kernel);
            if c.state.as_ref().map(|s| s.to_string()) == Some("running".into()) {
                recovered.push(id);
            } else {
                // Reported by the daemon now; a replayed event must not report it again.
                self.ends()
                    .reported
                    .insert(c.id.clone().unwrap_or_default(), Instant::now());
                self.remove(&id).await?;
                ended.push(id);
            }
        }
        Ok((recovered, ended))
    }

    async fn kernel_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.kernels.lock().await.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Kernel images on this engine (with `ai.backend.kernelspec`): `(repo tag, image id)`.
    async fn images(&self) -> Result<Vec<(String, String)>, AgentError> {
        let mut filters = HashMap::new();
        filters.insert("label".to_owned(), vec!["ai.backend.kernelspec".to_owned()]);
        let opts = ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        };
        let images = self
            .docker
            .list_images(Some(opts))
            .await
            .map_err(|e| docker_err("images", e))?;
        let mut out: Vec<(String, String)> = images
            .into_iter()
            .flat_map(|i| i.repo_tags.into_iter().map(move |t| (t, i.id.clone())))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The kernel's statistics now, as the original's metrics (`cpu_used`, `mem`, `net_rx`,
    /// `net_tx`, `io_read`, `io_write`; decimal strings).
    async fn kernel_stat(&self, id: &str) -> Result<Value, AgentError> {
        let kernel = self.kernel(id).await?;
        let opts = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let mut stream = self.docker.stats(&kernel.info.container_id, Some(opts));
        let s = match stream.next().await {
            Some(Ok(s)) => s,
            Some(Err(e)) => return Err(docker_err("stats", e)),
            None => return Err(AgentError::Failure("no statistics".into())),
        };
        let cpu_ns = s
            .cpu_stats
            .as_ref()
            .and_then(|c| c.cpu_usage.as_ref())
            .and_then(|u| u.total_usage)
            .unwrap_or(0);
        let mem = s.memory_stats.as_ref();
        let (used, limit) = (
            mem.and_then(|m| m.usage).unwrap_or(0),
            mem.and_then(|m| m.limit).unwrap_or(0),
        );
        let (mut rx, mut tx) = (0u64, 0u64);
        for n in s
            .networks
            .as_ref()
            .map(|n| n.values().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            rx += n.rx_bytes.unwrap_or(0);
            tx += n.tx_bytes.unwrap_or(0);
        }
        let (mut read, mut write) = (0u64, 0u64);
        for e in s
            .blkio_stats
            .as_ref()
            .and_then(|b| b.io_service_bytes_recursive.clone())
            .unwrap_or_default()
        {
            match e.op.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("read") => read += e.value.unwrap_or(0),
                Some("write") => write += e.value.unwrap_or(0),
                _ => {}
            }
        }
        let pct = if limit > 0 {
            format!("{:.2}", used as f64 * 100.0 / limit as f64)
        } else {
            "0".into()
        };
        Ok(serde_json::json!({
            "cpu_used": {"current": (cpu_ns / 1_000_000).to_string(), "unit_hint": "msec"},
            "mem": {"current": used.to_string(), "capacity": limit.to_string(), "pct": pct, "unit_hint": "bytes"},
            "net_rx": {"current": rx.to_string(), "unit_hint": "bytes"},
            "net_tx": {"current": tx.to_string(), "unit_hint": "bytes"},
            "io_read": {"current": read.to_string(), "unit_hint": "bytes"},
            "io_write": {"current": write.to_string(), "unit_hint": "bytes"},
        }))
    }

    /// Kernel containers of this agent that stop, as they stop: from the engine's event
    /// stream, and from reconciling with the engine's containers at every (re)connection
    /// and every [`RECONCILE_PERIOD`]. Runs until the receiver is dropped, through any
    /// number of engine restarts.
    fn terminations(self: Arc<Self>) -> tokio::sync::mpsc::Receiver<Termination> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(self.watch_ends(tx));
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend whose engine is never asked (nothing is sent before the first request).
    fn offline_backend() -> DockerBackend {
        DockerBackend {
            docker: engine_client("tcp://127.0.0.1:9").unwrap(),
            cfg: DockerConfig {
                agent_id: "i-test".into(),
                scratch_root: PathBuf::from("/nonexistent"),
                krunner_path: PathBuf::from("/nonexistent"),
                network_mode: "none".into(),
                kernel_uid: 1000,
                kernel_gid: 1000,
                pids_limit: 16,
                exec_timeout: 0,
                docker_host: String::new(),
            },
            kernels: Mutex::new(HashMap::new()),
            devices: None,
            ends: std::sync::Mutex::new(Ends::default()),
        }
    }

    fn die(container: &str, kernel: &str, exit_code: &str) -> bollard::models::EventMessage {
        bollard::models::EventMessage {
            action: Some("die".into()),
            actor: Some(bollard::models::EventActor {
                id: Some(container.into()),
                attributes: Some(
                    [
                        (LABEL_KERNEL_ID.to_owned(), kernel.to_owned()),
                        ("exitCode".to_owned(), exit_code.to_owned()),
                    ]
                    .into_iter()
                    .collect(),
                ),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn each_container_end_is_reported_once_whichever_source_sees_it_first() {
        let b = offline_backend();
        let killed = b.end_from_event(die("c1", "k1", "137")).unwrap();
        assert_eq!(
            (killed.reason.as_str(), killed.exit_code),
            ("killed", Some(137))
        );
        // The same event again (a replay after a re-subscription) is not reported again.
        assert_eq!(b.end_from_event(die("c1", "k1", "137")), None);
        // Nor one a reconcile reported already.
        b.ends().reported.insert("c2".into(), Instant::now());
        assert_eq!(b.end_from_event(die("c2", "k2", "0")), None);
        // Requested ends keep their reason; a restart's old container is not the kernel's end.
        b.ends()
            .destroying
            .insert("k3".into(), "idle-timeout".into());
        assert_eq!(
            b.end_from_event(die("c3", "k3", "137")).unwrap().reason,
            "idle-timeout"
        );
        b.ends().restarting.insert("k4".into());
        assert_eq!(
            b.end_from_event(die("c4", "k4", "137")).unwrap().reason,
            "restarting"
        );
        let clean = b.end_from_event(die("c5", "k5", "0")).unwrap();
        assert_eq!(
            (clean.reason.as_str(), clean.exit_code),
            ("self-terminated", Some(0))
        );
    }

    #[test]
    fn a_signal_or_the_oom_killer_is_killed_else_self_terminated() {
        assert_eq!(end_reason(Some(137), false), "killed");
        assert_eq!(end_reason(Some(0), true), "killed");
        assert_eq!(end_reason(Some(1), false), "self-terminated");
        assert_eq!(end_reason(None, false), "self-terminated");
    }

    #[test]
    fn engine_hosts_are_sockets_or_tcp() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(engine_client(&format!("unix://{}", sock.display())).is_ok());
        assert!(engine_client("tcp://127.0.0.1:2375").is_ok());
        assert!(engine_client("ftp://nowhere").is_err());
    }

    #[test]
    fn service_port_labels_are_parsed_strictly() {
        assert_eq!(
            parse_service_ports("http:http:8080, jupyter:http:8888,bad,ssh:tcp:22,x:udp:9000"),
            vec![
                ServicePort {
                    name: "http".into(),
                    protocol: "http".into(),
                    container_port: 8080
                },
                ServicePort {
                    name: "jupyter".into(),
                    protocol: "http".into(),
                    container_port: 8888
                },
            ]
        );
    }
}
