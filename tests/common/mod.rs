//! Test kit: real etcd and Redis on loopback, a real server on an ephemeral port, and a
//! client that signs requests with the crate's own signing code.
//!
//! Services: `BAI_TEST_ETCD` / `BAI_TEST_REDIS` (host:port) point at ones already running
//! (the test script starts them); otherwise each test starts its own and stops it on drop.
#![allow(dead_code)] // each test binary uses a different part of the kit

pub mod browser;

use backend_ai_manager::config::ManagerConfig;
use backend_ai_manager::server::{self, Running};
use backend_ai_manager::signing::{client_headers_for, Credentials, HashAlg};
use hyper::{Body, Client, Method, Request};
use serde_json::Value;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const ADMIN: (&str, &str) = (
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
);
pub const DOMAIN_ADMIN: (&str, &str) = (
    "AKIAHUKCHDEZGEXAMPLE",
    "cWbsM_vBB4CzTW7JdORRMx8SjGI3-wEXAMPLEKEY",
);
pub const USER: (&str, &str) = (
    "AKIANABBDUSEREXAMPLE",
    "C8qnIo29EZvXkPK_MXcuAakYTy4NYrxwmCEyNPlf",
);

pub fn creds(kp: (&str, &str)) -> Credentials {
    Credentials {
        access_key: kp.0.into(),
        secret_key: kp.1.into(),
        alg: HashAlg::Sha256,
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_for_port(addr: &str, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early ({status}) while starting on {addr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not start listening on {addr} within 20 s");
}

/// A service process this test started (killed on drop), or one already running.
pub struct Service {
    pub addr: String,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
    /// How it was started: program and arguments (for restarts).
    how: Option<(String, Vec<String>)>,
}

impl Service {
    /// Kills (SIGKILL) a service this test started.
    pub fn kill(&mut self) {
        let child = self
            .child
            .as_mut()
            .expect("only services a test started are killed");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts a killed service again, same arguments, same address, same data directory.
    pub fn restart(&mut self) {
        let (program, args) = self.how.clone().expect("a service this test started");
        let mut child = Command::new(&program)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the service starts again");
        wait_for_port(&self.addr, &mut child, &program);
        self.child = Some(child);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(
    program: &str,
    package: &str,
    args: Vec<String>,
    addr: String,
    dir: tempfile::TempDir,
) -> Service {
    let mut child = Command::new(program)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {program} ({e}): install the Debian package {package}, or run the README's test command (scripts/test.sh), which installs and starts it")
        });
    wait_for_port(&addr, &mut child, program);
    Service {
        addr,
        child: Some(child),
        _dir: Some(dir),
        how: Some((program.to_owned(), args)),
    }
}

/// A process of this test's own, started as `program args` and waited for on `addr`.
pub fn spawn_service(program: &str, package: &str, args: Vec<String>, addr: String) -> Service {
    spawn(
        program,
        package,
        args,
        addr,
        tempfile::tempdir().expect("temp dir"),
    )
}

pub fn etcd() -> Service {
    if let Ok(addr) = std::env::var("BAI_TEST_ETCD") {
        return Service {
            addr,
            child: None,
            _dir: None,
            how: None,
        };
    }
    own_etcd()
}

/// An etcd of this test's own (for tests that stop it).
pub fn own_etcd() -> Service {
    let dir = tempfile::tempdir().expect("temp dir");
    let (client, peer) = (free_port(), free_port());
    let addr = format!("127.0.0.1:{client}");
    let args = vec![
        "--data-dir".into(),
        dir.path().join("etcd").display().to_string(),
        "--listen-client-urls".into(),
        format!("http://{addr}"),
        "--advertise-client-urls".into(),
        format!("http://{addr}"),
        "--listen-peer-urls".into(),
        format!("http://127.0.0.1:{peer}"),
        "--initial-advertise-peer-urls".into(),
        format!("http://127.0.0.1:{peer}"),
        "--initial-cluster".into(),
        format!("default=http://127.0.0.1:{peer}"),
    ];
    spawn("etcd", "etcd-server", args, addr, dir)
}

pub fn redis() -> Service {
    if let Ok(addr) = std::env::var("BAI_TEST_REDIS") {
        return Service {
            addr,
            child: None,
            _dir: None,
            how: None,
        };
    }
    own_redis()
}

/// A Redis of this test's own (for tests that kill it).
pub fn own_redis() -> Service {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let args = vec![
        "--port".into(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        String::new(),
        "--appendonly".into(),
        "no".into(),
        "--dir".into(),
        dir.path().display().to_string(),
    ];
    spawn("redis-server", "redis-server", args, addr, dir)
}

/// A unique etcd namespace, so tests sharing one etcd do not see each other's keys.
pub fn unique_namespace() -> String {
    format!("test{}", uuid::Uuid::new_v4().simple())
}

/// Removes the containers an agent id left behind, however the test ends.
pub struct Containers(pub String);

impl Drop for Containers {
    fn drop(&mut self) {
        let ids = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=ai.backend.agent-id={}", self.0))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
}

/// A server running in this process on an ephemeral loopback port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub fn config(dir: &std::path::Path) -> ManagerConfig {
        let mut cfg = ManagerConfig::default();
        cfg.manager.data_dir = dir.to_owned();
        cfg.manager.service_addr = "127.0.0.1:0".parse().expect("addr");
        cfg.etcd.namespace = unique_namespace();
        // API tests do not run kernels; the agent has tests of its own.
        cfg.agent.enabled = false;
        cfg.manager.local_engine_images = false;
        cfg
    }

    /// With the embedded agent running kernels in Docker (the kernel image and the static
    /// runner from the test script), heart-beating often; returns once it registered.
    pub async fn start_with_agent(adjust: impl FnOnce(&mut ManagerConfig)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = Self::config(dir.path());
        agent_config(&mut cfg);
        adjust(&mut cfg);
        let s = Self::start_in(dir, cfg).await;
        s.wait_for_agents(1).await;
        s
    }

    /// Waits until `n` agents are ALIVE.
    pub async fn wait_for_agents(&self, n: usize) {
        let app = self.app();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (alive, _) = app
                .store
                .agents(Some("ALIVE".into()), 1000, 0)
                .await
                .unwrap();
            if alive.len() >= n {
                return;
            }
            assert!(Instant::now() < deadline, "{n} agent(s) did not register");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts with the embedded shared config and the example fixture loaded.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut ManagerConfig)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = Self::config(dir.path());
        adjust(&mut cfg);
        Self::start_in(dir, cfg).await
    }

    pub async fn start_in(dir: tempfile::TempDir, cfg: ManagerConfig) -> TestServer {
        let running = server::start(cfg).await.expect("server starts");
        let fixture: Value =
            serde_json::from_str(include_str!("../../config/fixtures/example-keypairs.json"))
                .unwrap();
        running
            .app
            .store
            .populate_fixture(&fixture)
            .await
            .expect("example fixture loads");
        TestServer {
            addr: running.addr,
            running: Some(running),
            dir,
        }
    }

    pub fn app(&self) -> Arc<backend_ai_manager::server::App> {
        self.running.as_ref().expect("running").app.clone()
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn request(&self, method: &str, path: &str) -> Req {
        Req::new(self.addr, method, path)
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        self.dir
    }
}

/// A manager using etcd and Redis (halfstack), with Redis's address put in etcd first as an
/// operator would, and the services it runs on (kept alive as long as this is).
pub struct Halfstack {
    pub server: TestServer,
    pub etcd: Service,
    pub redis: Service,
    /// The etcd namespace agents must share with the manager.
    pub ns: String,
}

pub async fn halfstack() -> Halfstack {
    halfstack_on(etcd(), redis(), |_| {}).await
}

/// A halfstack on the given services, with the manager configuration adjusted.
pub async fn halfstack_on(
    etcd: Service,
    redis: Service,
    adjust: impl FnOnce(&mut ManagerConfig),
) -> Halfstack {
    let ns = unique_namespace();
    let put = Command::new(env!("CARGO_BIN_EXE_backend-ai-manager"))
        .args(["etcd", "put", "config/redis/addr", &redis.addr])
        .env("BACKEND_ETCD__ADDR", &etcd.addr)
        .env("BACKEND_ETCD__NAMESPACE", &ns)
        .env_remove("BACKEND_CONFIG_FILE")
        .output()
        .expect("the manager binary runs");
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let server = TestServer::start_with(|c| {
        c.etcd.addr = etcd.addr.clone();
        c.etcd.namespace = ns.clone();
        c.manager.heartbeat_timeout = 2.0;
        c.manager.local_engine_images = true;
        adjust(c);
    })
    .await;
    Halfstack {
        server,
        etcd,
        redis,
        ns,
    }
}

/// Runs SQL statements on the server's database (to set up what no API sets).
pub async fn sql(app: &backend_ai_manager::server::App, statement: &str) {
    let st = statement.to_owned();
    app.store
        .write(
            move |tx| -> Result<_, backend_ai_manager::store::StoreError> {
                Ok(tx.execute_batch(&st)?)
            },
        )
        .await
        .unwrap();
}

/// The image sessions on no-op agents use; [`register_noop_image`] records it.
pub const NOOP_IMAGE: &str = "index.docker.io/lablup/noop:1.0";

/// The body of a create for a session of [`NOOP_IMAGE`] with `cpu` cores and 64 MiB.
pub fn noop_session(token: &str, cpu: &str) -> Value {
    serde_json::json!({"clientSessionToken": token, "image": NOOP_IMAGE,
                       "config": {"resources": {"cpu": cpu, "mem": "64m"}}})
}

/// Records [`NOOP_IMAGE`] in the shared config as a registry scan would, with small
/// minimum resources (no engine has it: no-op agents need none).
pub async fn register_noop_image(shared: &dyn backend_ai_manager::shared_config::SharedConfig) {
    let labels: std::collections::BTreeMap<String, String> = [
        ("ai.backend.kernelspec", "1"),
        ("ai.backend.features", "query batch uid-match"),
        ("ai.backend.resource.min.cpu", "0.1"),
        ("ai.backend.resource.min.mem", "64m"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let pairs = backend_ai_manager::images::scan::image_pairs(
        "index.docker.io",
        "lablup/noop",
        "1.0",
        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        0,
        &labels,
    );
    shared.put_many(&pairs).await.unwrap();
}

/// `n` agents with the no-op kernel backend in this process, joined to `s` (its bus), each
/// offering `cpu` cores and `mem` and listening on its own loopback port; returns once all
/// of them are ALIVE.
pub async fn noop_agents(
    s: &TestServer,
    n: usize,
    cpu: &str,
    mem: &str,
    adjust: impl Fn(&mut ManagerConfig),
) -> Vec<backend_ai_manager::agent::launch::LaunchedAgent> {
    let app = s.app();
    let scratch = s.dir.path().join("noop-scratch");
    let agents = noop_agents_on(&app.config, app.bus.clone(), &scratch, n, cpu, mem, adjust).await;
    s.wait_for_agents(n).await;
    agents
}

/// As [`noop_agents`], for any manager: the agents start from `base` (its etcd) and send
/// their events through `bus`; they are not waited for.
pub async fn noop_agents_on(
    base: &ManagerConfig,
    bus: backend_ai_manager::bus::EphemeralHandle,
    scratch: &std::path::Path,
    n: usize,
    cpu: &str,
    mem: &str,
    adjust: impl Fn(&mut ManagerConfig),
) -> Vec<backend_ai_manager::agent::launch::LaunchedAgent> {
    let mut agents = Vec::with_capacity(n);
    for i in 0..n {
        let mut cfg = base.clone();
        cfg.agent.enabled = true;
        cfg.agent.backend = backend_ai_manager::config::KernelBackendKind::Noop;
        cfg.agent.id = format!("i-noop-{i}-{}", uuid::Uuid::new_v4().simple());
        cfg.agent.rpc_listen_addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        cfg.agent.scratch_root = scratch.to_owned();
        cfg.agent.heartbeat_interval = 1.0;
        cfg.agent.slots = [("cpu", cpu), ("mem", mem)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        adjust(&mut cfg);
        let agent = backend_ai_manager::agent::launch::start(&cfg, bus.clone())
            .await
            .expect("a no-op agent starts");
        agents.push(agent);
    }
    agents
}

/// `(token, status, status_info)` of every session, oldest first.
pub type SessionRows = Vec<(String, String, Option<String>)>;

pub async fn session_rows(app: &backend_ai_manager::server::App) -> SessionRows {
    app.store
        .read(|c| -> Result<_, backend_ai_manager::store::StoreError> {
            let mut st = c.prepare(
                "SELECT sess_id, status, status_info FROM kernels ORDER BY created_at, rowid",
            )?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
        .expect("the sessions can be read")
}

/// Waits up to `secs` until the sessions satisfy `check`; on timeout, shows them.
pub async fn wait_for_sessions(
    app: &backend_ai_manager::server::App,
    what: &str,
    secs: u64,
    check: impl Fn(&SessionRows) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let all = session_rows(app).await;
        if check(&all) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A test setting the test script exports, or a panic saying how to get it.
pub fn setting(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the README's test command (scripts/test.sh), which starts Docker, builds the kernel image and the static runner, and sets it")
    })
}

/// An embedded agent of its own (unique id, port and scratch) for a test server.
pub fn agent_config(cfg: &mut ManagerConfig) {
    cfg.agent.enabled = true;
    cfg.agent.id = format!("i-test-{}", uuid::Uuid::new_v4().simple());
    cfg.agent.krunner_path = setting("BAI_KRUNNER").into();
    cfg.agent.rpc_listen_addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    cfg.agent.heartbeat_interval = 0.3;
    cfg.manager.local_engine_images = true;
}

/// A request under construction.
pub struct Req {
    addr: SocketAddr,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    content_type: String,
}

/// What came back.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Asserts a problem+json error with this status and type slug.
    pub fn assert_problem(&self, status: u16, slug: &str) {
        assert_eq!(
            self.status,
            status,
            "status; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(
            self.json()["type"],
            format!("https://api.backend.ai/probs/{slug}")
        );
    }
}

impl Req {
    pub fn new(addr: SocketAddr, method: &str, path: &str) -> Req {
        Req {
            addr,
            method: method.into(),
            path: path.into(),
            headers: vec![("X-BackendAI-Version".into(), "v4.20190315".into())],
            body: Vec::new(),
            content_type: "text/plain".into(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn header(mut self, k: &str, v: &str) -> Req {
        self.headers.retain(|(hk, _)| !hk.eq_ignore_ascii_case(k));
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn without_header(mut self, k: &str) -> Req {
        self.headers.retain(|(hk, _)| !hk.eq_ignore_ascii_case(k));
        self
    }

    pub fn json(mut self, v: &Value) -> Req {
        self.body = v.to_string().into_bytes();
        self.content_type = "application/json".into();
        self
    }

    pub fn raw_body(mut self, body: Vec<u8>, content_type: &str) -> Req {
        self.body = body;
        self.content_type = content_type.into();
        self
    }

    /// Signs as client 19.6.0a1 does, at `now`.
    pub fn signed_at(self, c: &Credentials, now: chrono::DateTime<chrono::Utc>) -> Req {
        let host = self.addr.to_string();
        let version = self.header_value("X-BackendAI-Version");
        let (date, auth) = client_headers_for(
            c,
            &self.method,
            &self.path,
            &host,
            &self.content_type,
            &version,
            now,
        );
        self.header("Date", &date).header("Authorization", &auth)
    }

    pub fn signed(self, c: &Credentials) -> Req {
        self.signed_at(c, chrono::Utc::now())
    }

    pub fn header_value(&self, k: &str) -> String {
        self.headers
            .iter()
            .find(|(hk, _)| hk.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// The request as a `wrk` Lua script sets it up (method, headers, body), for load
    /// generators that replay one request from a process of their own.
    pub fn wrk_script(&self) -> String {
        let quote = |s: &str| format!("{s:?}");
        let mut out = format!(
            "wrk.method = {}\nwrk.path = {}\nwrk.body = {}\n",
            quote(&self.method),
            quote(&self.path),
            quote(&String::from_utf8_lossy(&self.body))
        );
        let mut headers = self.headers.clone();
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            headers.push(("Content-Type".into(), self.content_type.clone()));
        }
        for (k, v) in headers {
            out.push_str(&format!("wrk.headers[{}] = {}\n", quote(&k), quote(&v)));
        }
        out
    }

    /// Sends with `wire_method` on the wire and the signed method in `X-Method-Override`.
    pub async fn send_as(mut self, wire_method: &str) -> Resp {
        let signed = std::mem::replace(&mut self.method, wire_method.into());
        self.header("X-Method-Override", &signed).send().await
    }

    pub async fn send(self) -> Resp {
        self.try_send().await.expect("server answers")
    }

    /// Sends, reporting a refused or broken connection instead of panicking.
    pub async fn try_send(self) -> Result<Resp, hyper::Error> {
        self.try_send_with(&Client::new()).await
    }

    /// Sends on `client`'s kept-alive connections (load generators reuse one client).
    pub async fn try_send_with(
        self,
        client: &Client<hyper::client::HttpConnector>,
    ) -> Result<Resp, hyper::Error> {
        let uri = format!("http://{}{}", self.addr, self.path);
        let mut b = Request::builder()
            .method(Method::from_bytes(self.method.as_bytes()).expect("method"))
            .uri(uri);
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        if !self
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            b = b.header("Content-Type", self.content_type.as_str());
        }
        let req = b.body(Body::from(self.body)).expect("request");
        let resp = client.request(req).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = hyper::body::to_bytes(resp.into_body()).await?.to_vec();
        Ok(Resp {
            status,
            headers,
            body,
        })
    }
}

/// A Docker registry with basic authentication (user `bai`, password `s3cret`) on loopback.
pub fn auth_registry(dir: &std::path::Path) -> (std::process::Child, u16) {
    let hash = std::process::Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt; print(crypt.crypt('s3cret', crypt.mksalt(crypt.METHOD_BLOWFISH)))",
        ])
        .output()
        .expect("python3 runs");
    std::fs::write(
        dir.join("htpasswd"),
        format!("bai:{}", String::from_utf8_lossy(&hash.stdout).trim()),
    )
    .unwrap();
    let port = free_port();
    let cfg = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: test\n    path: {d}/htpasswd\n",
        d = dir.display()
    );
    std::fs::write(dir.join("registry.yml"), cfg).unwrap();
    let child = std::process::Command::new("docker-registry")
        .args(["serve", dir.join("registry.yml").to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker-registry is installed (Debian package docker-registry; scripts/test.sh installs it)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the registry did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (child, port)
}
