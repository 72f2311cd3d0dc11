//! The agent daemon: announces itself, heart-beats, keeps live statistics fresh, and turns
//! kernel ends into `kernel_terminated` events — all through the ephemeral-state bus, with
//! the original's event names and arguments.

use super::backend::{KernelBackend, KernelInfo, KernelSpec, RegistryCredentials};
use super::resources::CUDA_SLOT;
use super::AgentError;
use crate::bus::{EphemeralHandle, Event, STAT_TTL_SECS};
use crate::domain::ResourceSlots;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct AgentIdentity {
    pub id: String,
    pub region: String,
    /// Where the manager reaches this agent's RPC.
    pub addr: String,
    pub version: String,
}

pub struct AgentDaemon {
    pub backend: Arc<dyn KernelBackend>,
    bus: EphemeralHandle,
    identity: AgentIdentity,
    slots: ResourceSlots,
    heartbeat: Duration,
    stats: Duration,
    /// kernel → (last used, idle timeout); zero timeouts are never idle.
    idle: std::sync::Mutex<HashMap<String, (std::time::Instant, Duration)>>,
}

/// A started daemon; [`RunningAgent::stop`] ends it politely.
pub struct RunningAgent {
    pub daemon: Arc<AgentDaemon>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Busy and total jiffies from `/proc/stat`.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let nums: Vec<u64> = text
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    let total: u64 = nums.iter().sum();
    let idle = nums.get(3).copied().unwrap_or(0) + nums.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

fn mem_used_total() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    };
    let (total, avail) = (field("MemTotal:")?, field("MemAvailable:")?);
    Some((total - avail, total))
}

impl AgentDaemon {
    pub fn new(
        backend: Arc<dyn KernelBackend>,
        bus: EphemeralHandle,
        identity: AgentIdentity,
        mut slots: ResourceSlots,
    ) -> Self {
        if let Some(map) = backend.devices() {
            slots.set(
                CUDA_SLOT,
                rust_decimal::Decimal::from(map.capacity() as u64),
            );
        }
        AgentDaemon {
            backend,
            bus,
            identity,
            slots,
            heartbeat: Duration::from_secs(3),
            stats: Duration::from_secs(2),
            idle: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Shorter intervals (for tests and demos).
    pub fn with_intervals(mut self, heartbeat: Duration, stats: Duration) -> Self {
        self.heartbeat = heartbeat;
        self.stats = stats;
        self
    }

    pub fn identity(&self) -> &AgentIdentity {
        &self.identity
    }

    async fn emit(&self, name: &str, args: Vec<Value>) {
        if let Err(e) = self
            .bus
            .publish(&Event::new(name, &self.identity.id, args))
            .await
        {
            tracing::warn!("cannot send {name}: {e}");
        }
    }

    /// The heartbeat payload: who and where this agent is, its slots, images and kernels.
    pub async fn agent_info(&self) -> Value {
        let slots: serde_json::Map<String, Value> = self
            .slots
            .iter()
            .map(|(k, v)| {
                (
                    k.to_owned(),
                    json!([if k == "mem" { "bytes" } else { "count" }, v.to_string()]),
                )
            })
            .collect();
        // An engine that does not answer must not hold up the heartbeat (the agent would
        // look lost): it waits for the images no longer than one period (a second at
        // most), and reports none without them.
        let wait = self.heartbeat.min(Duration::from_secs(1));
        let images = tokio::time::timeout(wait, self.backend.images())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let devices = self
            .backend
            .devices()
            .map(|d| format!("{:?}", d.source))
            .unwrap_or_default();
        json!({
            "ip": self.identity.addr.split("://").nth(1).and_then(|a| a.rsplit_once(':')).map(|(h, _)| h).unwrap_or(""),
            "region": self.identity.region,
            "addr": self.identity.addr,
            "resource_slots": slots,
            "version": self.identity.version,
            "compute_plugins": {"cpu": {"version": self.identity.version}, "mem": {"version": self.identity.version},
                                "cuda": {"devices": devices}},
            "images": images,
            "kernels": self.backend.kernel_ids().await,
        })
    }

    /// Starts counting idleness for a kernel (`timeout` zero: never idle).
    pub fn track_idle(&self, id: &str, timeout: Duration) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), (std::time::Instant::now(), timeout));
    }

    /// Records use of a kernel (any call touching it, and `refresh_idle`).
    pub fn touch(&self, id: &str) {
        if let Some(e) = self
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(id)
        {
            e.0 = std::time::Instant::now();
        }
    }

    /// Creates a kernel as the original agent did, announcing each step:
    /// `kernel_preparing`, `kernel_pulling` (with progress, when the image is missing),
    /// `kernel_creating`, `kernel_started`.
    pub async fn create_kernel(
        &self,
        id: &str,
        spec: &KernelSpec,
        idle_timeout: Duration,
        credentials: Option<&RegistryCredentials>,
    ) -> Result<KernelInfo, AgentError> {
        self.emit("kernel_preparing", vec![json!(id)]).await;
        if !self.backend.has_image(&spec.image).await {
            self.emit(
                "kernel_pulling",
                vec![json!(id), json!(spec.image), Value::Null],
            )
            .await;
            // Progress lines, at most one event a second.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            let forward = async {
                let mut last = std::time::Instant::now();
                while let Some(line) = rx.recv().await {
                    if last.elapsed() >= Duration::from_secs(1) {
                        last = std::time::Instant::now();
                        self.emit(
                            "kernel_pulling",
                            vec![json!(id), json!(spec.image), json!(line)],
                        )
                        .await;
                    }
                }
            };
            let pull = async {
                let mut progress = move |line| {
                    let _ = tx.send(line);
                };
                self.backend
                    .pull_image(&spec.image, credentials, &mut progress)
                    .await
                // `progress`, and with it the sender, is dropped here: `forward` ends.
            };
            let (pulled, ()) = tokio::join!(pull, forward);
            pulled?;
        }
        self.emit("kernel_creating", vec![json!(id)]).await;
        let info = self.backend.create_kernel(id, spec).await?;
        self.track_idle(&info.id, idle_timeout);
        self.emit("kernel_started", vec![json!(info.id)]).await;
        Ok(info)
    }

    /// Destroys a kernel on request; returns its last statistics (also in the event).
    pub async fn destroy_kernel(&self, id: &str) -> Result<Option<Value>, AgentError> {
        self.destroy_kernel_because(id, "user-requested").await
    }

    /// Destroys a kernel whose end is reported with `reason` (the manager's: a forced
    /// termination, an idle timeout, …).
    pub async fn destroy_kernel_because(
        &self,
        id: &str,
        reason: &str,
    ) -> Result<Option<Value>, AgentError> {
        let last = self.backend.kernel_stat(id).await.ok();
        if let Some(stat) = &last {
            let _ = self.bus.put_stat(id, stat, STAT_TTL_SECS).await;
        }
        self.backend.destroy_kernel_because(id, reason).await?;
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(last)
    }

    /// A tick every `period`, the first within one period, at a point of it that depends on
    /// the agent's id: agents started together (a rack powered on at once, or many agents
    /// in one process) spread their heartbeats and statistics over the period instead of
    /// sending them all in the same instant, every period.
    fn periodic(&self, period: Duration) -> tokio::time::Interval {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.identity.id.hash(&mut h);
        let phase = period.mul_f64((h.finish() % 1024) as f64 / 1024.0);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    }

    /// Recovers kernels, announces the agent and starts its loops.
    pub async fn start(self) -> Result<RunningAgent, AgentError> {
        let daemon = Arc::new(self);
        daemon.recover_and_announce().await?;
        let (stop, rx) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(daemon.clone().heartbeat_loop(rx.clone())),
            tokio::spawn(daemon.clone().stats_loop(rx.clone())),
            tokio::spawn(daemon.clone().idle_loop(rx.clone())),
            tokio::spawn(daemon.clone().termination_loop(rx)),
        ];
        Ok(RunningAgent {
            daemon,
            stop,
            tasks,
        })
    }

    /// Takes over the kernels the backend still runs, announces the agent, and reports the
    /// kernels that ended while no agent watched them.
    async fn recover_and_announce(&self) -> Result<(), AgentError> {
        let (recovered, ended) = self.backend.recover().await?;
        if !recovered.is_empty() {
            tracing::info!("recovered {} running kernel(s)", recovered.len());
        }
        self.emit("instance_started", vec![json!("self-started")])
            .await;
        for id in ended {
            self.emit(
                "kernel_terminated",
                vec![
                    json!(id),
                    json!("self-terminated"),
                    Value::Null,
                    Value::Null,
                ],
            )
            .await;
        }
        Ok(())
    }

    /// The first heartbeat goes at once (it registers the agent); the later ones at this
    /// agent's own phase of the period.
    async fn heartbeat_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        self.emit("instance_heartbeat", vec![self.agent_info().await])
            .await;
        let mut tick = self.periodic(self.heartbeat);
        loop {
            tokio::select! {
                _ = tick.tick() => self.emit("instance_heartbeat", vec![self.agent_info().await]).await,
                _ = stopped(&mut stop) => break,
            }
        }
    }

    /// Per-kernel statistics (with the peak memory seen) and the node's own, each period.
    async fn stats_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = self.periodic(self.stats);
        let mut prev_cpu = cpu_jiffies();
        let mut mem_max: HashMap<String, u64> = HashMap::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped(&mut stop) => break,
            }
            self.put_kernel_stats(&mut mem_max).await;
            let cpu = cpu_jiffies();
            let pct = match (prev_cpu, cpu) {
                (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                    (b1 - b0) as f64 * 100.0 / (t1 - t0) as f64
                }
                _ => 0.0,
            };
            prev_cpu = cpu;
            let (used, total) = mem_used_total().unwrap_or((0, 0));
            let node = json!({"node": {"cpu_util": {"pct": format!("{pct:.2}")},
                                       "mem": {"current": used.to_string(), "capacity": total.to_string()}},
                              "devices": {}});
            let _ = self
                .bus
                .put_stat(&self.identity.id, &node, STAT_TTL_SECS)
                .await;
        }
    }

    async fn put_kernel_stats(&self, mem_max: &mut HashMap<String, u64>) {
        let ids = self.backend.kernel_ids().await;
        mem_max.retain(|k, _| ids.contains(k));
        for id in ids {
            let Ok(mut stat) = self.backend.kernel_stat(&id).await else {
                continue;
            };
            let cur = stat["mem"]["current"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            let max = mem_max.entry(id.clone()).or_insert(0);
            *max = (*max).max(cur);
            stat["mem"]["stats.max"] = json!(max.to_string());
            let _ = self.bus.put_stat(&id, &stat, STAT_TTL_SECS).await;
        }
    }

    /// Idle kernels are destroyed with reason idle-timeout (their last statistics kept).
    async fn idle_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped(&mut stop) => break,
            }
            let expired: Vec<String> = {
                let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                idle.iter()
                    .filter(|(_, (last, timeout))| !timeout.is_zero() && last.elapsed() >= *timeout)
                    .map(|(id, _)| id.clone())
                    .collect()
            };
            for id in expired {
                self.idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                if let Ok(stat) = self.backend.kernel_stat(&id).await {
                    let _ = self.bus.put_stat(&id, &stat, STAT_TTL_SECS).await;
                }
                if let Err(e) = self
                    .backend
                    .destroy_kernel_because(&id, "idle-timeout")
                    .await
                {
                    tracing::warn!("idle kernel {id}: {e}");
                }
            }
        }
    }

    /// Reports every kernel the backend saw end (except restarts) with its last
    /// statistics, and forgets those the agent did not end itself.
    async fn termination_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut ends = self.backend.clone().terminations();
        loop {
            let t = tokio::select! {
                t = ends.recv() => t,
                _ = stopped(&mut stop) => break,
            };
            let Some(t) = t else { break };
            let last = self
                .bus
                .get_stat(&t.kernel_id)
                .await
                .ok()
                .flatten()
                .unwrap_or(Value::Null);
            if t.reason == "restarting" {
                continue;
            }
            if t.reason != "user-requested" && t.reason != "idle-timeout" {
                if let Err(e) = self.backend.forget_kernel(&t.kernel_id).await {
                    tracing::warn!("cleaning up kernel {}: {e}", t.kernel_id);
                }
            }
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&t.kernel_id);
            self.emit(
                "kernel_terminated",
                vec![
                    json!(t.kernel_id),
                    json!(t.reason),
                    json!(t.exit_code),
                    last,
                ],
            )
            .await;
        }
    }
}

impl RunningAgent {
    /// Stops the loops and announces `instance_terminated`. Kernels keep running; a
    /// restarted agent recovers them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.daemon
            .emit("instance_terminated", vec![json!("shutdown")])
            .await;
    }
}
