//! The running manager: its state ([`App`]) and the start-up/shutdown sequence shared by
//! `serve` and the integration tests.

use crate::bus::{self, EphemeralHandle, RATE_LIMIT_WINDOW_SECS};
use crate::config::ManagerConfig;
use crate::domain::ManagerStatus;
use crate::gateway::error::{ApiError, Problem};
use crate::gateway::metrics::Metrics;
use crate::gateway::router::{Gate, Router};
use crate::shared_config::{self, keys, SharedConfigHandle, WatchEvent};
use crate::store::auth::KeypairRecord;
use crate::store::bootstrap::InitialAdmin;
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct App {
    pub config: ManagerConfig,
    pub store: Store,
    pub shared: SharedConfigHandle,
    pub bus: EphemeralHandle,
    pub status: StatusCache,
    pub metrics: Metrics,
    pub usage: UsageBatcher,
    pub router: Router,
    pub graphql: crate::gateway::graphql::Schemas,
    /// The local Docker engine, when one answered at start (its kernel images count as
    /// installed).
    pub docker: Option<bollard::Docker>,
    pub started: Instant,
    /// Sessions: lifecycle events, the scheduler's wake-up, agent connections.
    pub registry: Arc<crate::registry::Registry>,
    /// The TLS certificate, when the gateway serves HTTPS.
    pub tls: Option<Arc<crate::gateway::tls::CertStore>>,
    /// The open browser apps and their pending launches.
    pub apps: crate::gateway::apps::Apps,
}

impl App {
    /// The images this manager knows (registry scans and the local engine).
    pub fn images(&self) -> crate::images::Catalog<'_> {
        crate::images::Catalog {
            shared: self.shared.as_ref(),
            docker: self.docker.as_ref(),
        }
    }

    /// Counts a request against the caller's rolling window: the `X-RateLimit-*` headers,
    /// or 429 past the keypair's limit. If the counter store is unreachable the request
    /// goes through (and a warning is logged): rate limiting must not take the API down.
    pub async fn rate_limit(
        &self,
        kp: &KeypairRecord,
    ) -> Result<Vec<(&'static str, String)>, ApiError> {
        let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        match self
            .bus
            .rate_limit_hit(&kp.access_key, now_ms, RATE_LIMIT_WINDOW_SECS)
            .await
        {
            Ok(count) => {
                let limit = kp.rate_limit.max(0) as u64;
                if count > limit {
                    self.metrics.rate_limited();
                    return Err(ApiError::new(Problem::RateLimitExceeded));
                }
                Ok(vec![
                    ("x-ratelimit-limit", limit.to_string()),
                    ("x-ratelimit-remaining", (limit - count).to_string()),
                    ("x-ratelimit-window", RATE_LIMIT_WINDOW_SECS.to_string()),
                ])
            }
            Err(e) => {
                tracing::warn!("rate limit not counted: {e}");
                Ok(Vec::new())
            }
        }
    }

    pub async fn check_gate(&self, gate: Gate) -> Result<(), ApiError> {
        let status = self.status.current().await;
        let ok = match gate {
            Gate::Any => true,
            Gate::Read => matches!(status, ManagerStatus::Running | ManagerStatus::Frozen),
            Gate::All => status == ManagerStatus::Running,
        };
        match (ok, status) {
            (true, _) => Ok(()),
            (false, ManagerStatus::Frozen) => Err(ApiError::new(Problem::ServerFrozen)),
            (false, _) => Err(ApiError::new(Problem::ServiceUnavailable)),
        }
    }

    /// Counts a query against a session (`num_queries`; written with the next usage flush).
    pub fn count_query(&self, kernel_id: &str) -> Result<(), StoreError> {
        let stored = self
            .store
            .read_now(|c| crate::store::kernels::num_queries(c, kernel_id))?;
        if let Some(stored) = stored {
            self.usage.count_query(kernel_id, stored);
        }
        Ok(())
    }

    /// Sessions (master kernels) not yet terminated.
    pub async fn active_sessions(&self) -> Result<i64, StoreError> {
        self.store.read(crate::store::sessions::live_count).await
    }
}

/// The manager status, cached for two seconds and kept fresh by a watch on its key.
pub struct StatusCache {
    shared: SharedConfigHandle,
    cached: RwLock<(ManagerStatus, Instant)>,
}

const STATUS_TTL: Duration = Duration::from_secs(2);

impl StatusCache {
    fn new(shared: SharedConfigHandle, initial: ManagerStatus) -> Self {
        StatusCache {
            shared,
            cached: RwLock::new((initial, Instant::now())),
        }
    }

    fn store_local(&self, s: ManagerStatus) {
        *self.cached.write().unwrap_or_else(|p| p.into_inner()) = (s, Instant::now());
    }

    fn parse(raw: Option<String>) -> ManagerStatus {
        match raw {
            None => ManagerStatus::Running,
            Some(s) => s.trim().parse().unwrap_or_else(|_| {
                tracing::warn!("ignoring unknown manager status '{s}' in the shared config");
                ManagerStatus::Preparing
            }),
        }
    }

    pub async fn current(&self) -> ManagerStatus {
        let (status, at) = *self.cached.read().unwrap_or_else(|p| p.into_inner());
        if at.elapsed() < STATUS_TTL {
            return status;
        }
        match self.shared.get(keys::MANAGER_STATUS).await {
            Ok(raw) => {
                let fresh = Self::parse(raw);
                self.store_local(fresh);
                fresh
            }
            Err(e) => {
                tracing::warn!("cannot refresh the manager status, keeping '{status}': {e}");
                status
            }
        }
    }

    pub async fn set(&self, s: ManagerStatus) -> Result<(), shared_config::SharedConfigError> {
        self.shared.put(keys::MANAGER_STATUS, s.as_str()).await?;
        self.store_local(s);
        Ok(())
    }
}

/// Accumulates `last_used`/`num_queries` per keypair and the query count of each session,
/// and writes them once a second (and at shutdown), so a burst of requests costs one small
/// transaction instead of one write per request. A manager killed outright loses at most
/// that last second of counts.
#[derive(Default)]
pub struct UsageBatcher {
    /// Per access key: when it was last used, and how many requests since the last flush.
    pending: Mutex<HashMap<String, (chrono::DateTime<chrono::Utc>, i64)>>,
    /// Per kernel counted since start-up and not yet written (or being written).
    kernels: Mutex<HashMap<String, QueryCount>>,
}

#[derive(Default)]
struct QueryCount {
    /// The count as this process knows it: the highest stored count seen, plus what was
    /// counted after it.
    known: i64,
    /// Counted and not yet written.
    unstored: i64,
}

impl UsageBatcher {
    /// Every signed request calls this, so it only counts (the time is formatted at flush).
    pub fn record(&self, access_key: &str) {
        let now = chrono::Utc::now();
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match p.get_mut(access_key) {
            Some(e) => *e = (now, e.1 + 1),
            None => {
                p.insert(access_key.to_owned(), (now, 1));
            }
        }
    }

    fn kernels(&self) -> std::sync::MutexGuard<'_, HashMap<String, QueryCount>> {
        self.kernels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one query against a kernel whose stored count was just read as `stored`, and
    /// returns the count before this one (what the stored count will be once written).
    pub fn count_query(&self, kernel_id: &str, stored: i64) -> i64 {
        let mut kernels = self.kernels();
        let count = match kernels.get_mut(kernel_id) {
            Some(c) => c,
            None => kernels.entry(kernel_id.to_owned()).or_default(),
        };
        count.known = count.known.max(stored);
        let before = count.known;
        count.known += 1;
        count.unstored += 1;
        before
    }

    pub async fn flush(&self, store: &Store) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let keypairs: HashMap<String, (String, i64)> = pending
            .into_iter()
            .map(|(k, (at, n))| (k, (crate::store::time_text(at), n)))
            .collect();
        let kernels: Vec<(String, i64)> = self
            .kernels()
            .iter_mut()
            .filter(|(_, c)| c.unstored > 0)
            .map(|(id, c)| (id.clone(), std::mem::take(&mut c.unstored)))
            .collect();
        if keypairs.is_empty() && kernels.is_empty() {
            return;
        }
        match store.record_usage(keypairs, kernels.clone()).await {
            // What is written is read from the database from now on; counts made during
            // the write stay until the next flush.
            Ok(()) => self.kernels().retain(|_, c| c.unstored > 0),
            Err(e) => {
                tracing::warn!("cannot record usage counts (kept for the next try): {e}");
                let mut all = self.kernels();
                for (id, n) in kernels {
                    all.entry(id).or_default().unstored += n;
                }
            }
        }
    }
}

/// Why the server could not start; each is one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("shared config: {0}")]
    SharedConfig(#[from] shared_config::SharedConfigError),
    #[error("event bus: {0}")]
    Bus(#[from] bus::BusError),
    #[error("cannot listen on {addr}: {msg}")]
    Bind { addr: SocketAddr, msg: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot write the pid file {path}: {source}")]
    PidFile {
        path: String,
        source: std::io::Error,
    },
}

/// A started server.
pub struct Running {
    pub app: Arc<App>,
    pub addr: SocketAddr,
    pub initial_admin: Option<InitialAdmin>,
    /// The embedded agent, or why there is none.
    pub agent: Result<crate::agent::launch::LaunchedAgent, String>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _lock: crate::store::backup::ServerLock,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, flushes state and marks the
    /// manager terminated in the shared config.
    pub async fn stop(self) {
        // Streams say goodbye first (a close frame, or server-restarting for executions).
        self.app.registry.close_streams();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(agent) = self.agent {
            agent.stop().await;
        }
        let _ = self.shutdown.send(true);
        // Requests in flight get a bound to finish, then the rest is cut off.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        for mut t in self.tasks {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                tracing::warn!("shutdown: a server task did not finish in time; closing it");
                t.abort();
            }
        }
        self.app.usage.flush(&self.app.store).await;
        if let Err(e) = self
            .app
            .shared
            .put(keys::MANAGER_STATUS, ManagerStatus::Terminated.as_str())
            .await
        {
            tracing::warn!("cannot mark the manager terminated: {e}");
        }
        let pid = &self.app.config.manager.pid_file;
        if !pid.is_empty() {
            let _ = std::fs::remove_file(pid);
        }
    }
}

/// Resolves once shutdown is requested (or the sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn instance_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("i-{}", if host.is_empty() { "localhost" } else { &host })
}

/// Opens the store (migrating it), bootstraps defaults, connects the shared config and
/// the event bus, and starts serving: the gateway, the registry's tasks, the usage flush
/// and the local agent, each a step below.
pub async fn start(config: ManagerConfig) -> Result<Running, StartError> {
    let (lock, store, initial_admin) = open_database(&config).await?;
    let app = build_app(config, store).await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let addr = serve_gateway(&app, &shutdown_rx, &mut tasks)?;
    follow_manager_status(&app, &shutdown_rx, &mut tasks).await?;
    start_registry(&app, &shutdown_rx, &mut tasks).await?;
    tasks.push(tokio::spawn(flush_usage(app.clone(), shutdown_rx.clone())));
    announce_running(&app).await?;
    let agent = launch_local_agent(&app).await;
    tracing::info!("backend-ai-manager listening on http://{addr}");
    Ok(Running {
        app,
        addr,
        initial_admin,
        agent,
        shutdown: shutdown_tx,
        tasks,
        _lock: lock,
    })
}

/// Takes the database's server lock (one server per database; `db restore` checks the
/// same lock), opens and migrates it off the async threads, and bootstraps its defaults
/// and, on an empty database, the first superadmin.
async fn open_database(
    config: &ManagerConfig,
) -> Result<
    (
        crate::store::backup::ServerLock,
        Store,
        Option<InitialAdmin>,
    ),
    StartError,
> {
    let db_path = config.db_path();
    let lock = crate::store::backup::ServerLock::acquire(&db_path)?;
    let store = tokio::task::spawn_blocking(move || Store::open(&db_path))
        .await
        .map_err(|_| StoreError::Closed)??;
    store.ensure_defaults().await?;
    let initial_admin = store
        .create_initial_admin(&config.manager.bootstrap_admin_email)
        .await?;
    Ok((lock, store, initial_admin))
}

/// Connects the shared config and the event bus and assembles the application state.
async fn build_app(config: ManagerConfig, store: Store) -> Result<Arc<App>, StartError> {
    // The server's reads of the image catalogue and slot/registry config go through a
    // cache kept honest by watches (see shared_config::CachedConfig).
    let shared: SharedConfigHandle =
        shared_config::CachedConfig::new(shared_config::connect(&config, &store).await?).await;
    shared
        .put(keys::MANAGER_STATUS, ManagerStatus::Preparing.as_str())
        .await?;
    let bus = bus::connect(shared.as_ref()).await?;
    tracing::info!(
        "shared config: {}; ephemeral state: {}",
        shared.describe(),
        bus.describe()
    );
    let docker = if config.manager.local_engine_images {
        crate::images::local_engine(&config.agent.docker_host).await
    } else {
        None
    };
    let tls = if config.manager.ssl_enabled {
        Some(
            crate::gateway::tls::CertStore::open(
                &config.manager.ssl_cert,
                &config.manager.ssl_privkey,
            )
            .map_err(StartError::Tls)?,
        )
    } else {
        None
    };
    // Checked when the configuration was read.
    let config_ports = config
        .manager
        .app_ports
        .parse()
        .unwrap_or(crate::gateway::apps::PortRange { first: 0, last: 0 });
    let registry = Arc::new(crate::registry::Registry::new(
        config.clone(),
        store.clone(),
        shared.clone(),
        bus.clone(),
    ));
    Ok(Arc::new(App {
        status: StatusCache::new(shared.clone(), ManagerStatus::Preparing),
        config,
        store,
        shared,
        bus,
        metrics: Metrics::default(),
        usage: UsageBatcher::default(),
        router: crate::gateway::route_table(),
        graphql: crate::gateway::graphql::Schemas::new(),
        docker,
        started: Instant::now(),
        registry,
        tls,
        apps: crate::gateway::apps::Apps::new(config_ports),
    }))
}

/// Binds the gateway on `service-addr` and serves it until shutdown; with TLS, SIGHUP reads
/// the certificate again. Returns the bound address.
fn serve_gateway(
    app: &Arc<App>,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<SocketAddr, StartError> {
    let mut rx = shutdown.clone();
    let signal = async move { stopped(&mut rx).await };
    let (addr, server) = crate::gateway::bind(app.clone(), app.config.manager.service_addr, signal)
        .map_err(|msg| StartError::Bind {
            addr: app.config.manager.service_addr,
            msg,
        })?;
    tasks.push(tokio::spawn(server));
    if let Some(certs) = app.tls.clone() {
        let mut rx = shutdown.clone();
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        s = hup.recv() => {
                            if s.is_none() { break }
                            match certs.reload() {
                                Ok(()) => tracing::info!("SIGHUP: reloaded the TLS certificate"),
                                Err(e) => tracing::error!("SIGHUP: kept the current TLS certificate: {e}"),
                            }
                        }
                        _ = stopped(&mut rx) => break,
                    }
                }
            }));
        }
    }
    Ok(addr)
}

/// Follows status changes made elsewhere (another manager process, the etcd CLI).
async fn follow_manager_status(
    app: &Arc<App>,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<(), StartError> {
    let mut watch = app.shared.watch(keys::MANAGER_STATUS, false).await?;
    let (app, mut rx) = (app.clone(), shutdown.clone());
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = watch.recv() => match ev {
                    Some(WatchEvent::Put { value, .. }) => app.status.store_local(StatusCache::parse(Some(value))),
                    Some(WatchEvent::Delete { .. }) => app.status.store_local(ManagerStatus::Running),
                    None => break,
                },
                _ = stopped(&mut rx) => break,
            }
        }
    }));
    Ok(())
}

/// The registry's tasks: agent events (registration, heartbeats, lost agents, ended
/// kernels), then, once what a previous run left half-done is settled, the scheduler.
async fn start_registry(
    app: &Arc<App>,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<(), StartError> {
    let events = app
        .bus
        .subscribe(crate::registry::agents::GROUP, &instance_id())
        .await?;
    tasks.push(tokio::spawn(crate::registry::agents::run(
        app.registry.clone(),
        events,
        shutdown.clone(),
    )));
    let settled = crate::registry::sessions::settle_interrupted(&app.registry, &app.store).await?;
    if settled > 0 {
        tracing::warn!("{settled} session(s) were being started when the manager last stopped");
    }
    crate::registry::sessions::recount_concurrency(&app.store).await?;
    tasks.push(tokio::spawn(crate::registry::scheduler::run(
        app.registry.clone(),
        shutdown.clone(),
    )));
    Ok(())
}

/// Writes the batched keypair usage and query counts every second until shutdown.
async fn flush_usage(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => app.usage.flush(&app.store).await,
            _ = stopped(&mut shutdown) => break,
        }
    }
}

/// Marks this manager RUNNING in the shared config and writes the pid file.
async fn announce_running(app: &App) -> Result<(), StartError> {
    app.shared.put(keys::MANAGER_NODE, &instance_id()).await?;
    app.status.set(ManagerStatus::Running).await?;
    let pid = &app.config.manager.pid_file;
    if !pid.is_empty() {
        std::fs::write(pid, format!("{}\n", std::process::id())).map_err(|source| {
            StartError::PidFile {
                path: pid.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Starts the agent inside this process, or says why there is none.
async fn launch_local_agent(app: &App) -> Result<crate::agent::launch::LaunchedAgent, String> {
    let agent = if app.config.agent.enabled {
        crate::agent::launch::start(&app.config, app.bus.clone())
            .await
            .map_err(|e| e.to_string())
    } else {
        Err("disabled by agent.enabled = false".to_owned())
    };
    match &agent {
        Ok(a) => {
            app.registry.adopt_in_process(a.id());
            tracing::info!("local agent {} running (RPC on {})", a.id(), a.rpc_addr)
        }
        Err(why) => tracing::warn!("no local agent: {why}"),
    }
    agent
}
