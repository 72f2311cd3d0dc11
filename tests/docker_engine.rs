//! The agent across Docker engine outages: kernels that end while the engine is away are
//! reported when it is back, heartbeats go on, and a create while it is away says so. The
//! engine "goes away" behind a Unix-socket proxy the test controls (`agent.docker-host`
//! points at it); the real engine is never touched, except to kill or remove a test's own
//! container.
//!
//! Needs Docker, the Python kernel image (`BAI_TEST_IMAGE`) and the static runner
//! (`BAI_KRUNNER`); `scripts/test.sh` prepares them.

mod common;

use backend_ai_manager::registry::sessions::parse_slots;
use backend_ai_manager::server::App;
use common::{creds, session_rows, setting, Containers, Resp, TestServer, USER};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The real engine's socket.
fn engine_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

/// What the proxied engine does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Answers: connections go through to the real engine.
    Up,
    /// Stopped: every connection cut, the socket gone (new connections fail).
    Down,
    /// Hung: every connection cut; new ones are taken and never answered.
    Hung,
}

/// A Unix socket in front of the real engine, in the [`Mode`] the test sets.
struct EngineProxy {
    path: PathBuf,
    wanted: watch::Sender<Mode>,
    reached: watch::Receiver<Mode>,
    _dir: tempfile::TempDir,
}

impl EngineProxy {
    async fn start() -> EngineProxy {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let (wanted, wanted_rx) = watch::channel(Mode::Up);
        let (reached_tx, reached) = watch::channel(Mode::Down);
        tokio::spawn(serve(path.clone(), engine_socket(), wanted_rx, reached_tx));
        let mut p = EngineProxy {
            path,
            wanted,
            reached,
            _dir: dir,
        };
        p.set(Mode::Up).await;
        p
    }

    fn url(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Returns once the proxy is in `mode` (connections of the previous mode all cut).
    async fn set(&mut self, mode: Mode) {
        self.wanted.send(mode).unwrap();
        tokio::time::timeout(
            Duration::from_secs(10),
            self.reached.wait_for(|m| *m == mode),
        )
        .await
        .expect("the proxy follows")
        .unwrap();
    }
}

async fn serve(
    path: PathBuf,
    upstream: PathBuf,
    mut wanted: watch::Receiver<Mode>,
    reached: watch::Sender<Mode>,
) {
    loop {
        let mode = *wanted.borrow_and_update();
        if mode == Mode::Down {
            let _ = reached.send(Mode::Down);
            if wanted.changed().await.is_err() {
                return;
            }
            continue;
        }
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("the proxy listens");
        let _ = reached.send(mode);
        let mut conns = JoinSet::new();
        let stop = loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut client, _)) = accepted else { continue };
                    let upstream = upstream.clone();
                    conns.spawn(async move {
                        if mode == Mode::Hung {
                            // Held open, never answered, until the mode changes.
                            std::future::pending::<()>().await;
                        }
                        if let Ok(mut engine) = UnixStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                        }
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                changed = wanted.changed() => {
                    if changed.is_err() {
                        break true;
                    }
                    if *wanted.borrow_and_update() != mode {
                        break false;
                    }
                }
            }
        };
        drop(listener);
        let _ = std::fs::remove_file(&path);
        conns.abort_all();
        while conns.join_next().await.is_some() {}
        if stop {
            return;
        }
    }
}

/// A server whose embedded agent (and image catalogue) reach the engine through `proxy`.
async fn start(proxy: &EngineProxy) -> (TestServer, Containers) {
    let url = proxy.url();
    let s = TestServer::start_with_agent(|cfg| {
        cfg.agent.docker_host = url;
        // An agent whose heartbeats stall is soon LOST.
        cfg.manager.heartbeat_timeout = 3.0;
    })
    .await;
    let id = s.app().config.agent.id.clone();
    (s, Containers(id))
}

async fn create(s: &TestServer, token: &str) -> Resp {
    s.request("POST", "/kernel")
        .json(
            &json!({"clientSessionToken": token, "image": setting("BAI_TEST_IMAGE"),
                      "group_name": "default", "domain_name": "default",
                      "config": {"resources": {"cpu": 1, "mem": "256m"}}}),
        )
        .signed(&creds(USER))
        .send()
        .await
}

/// A running session's container, through the real engine.
async fn container_of(agent_id: &str) -> String {
    let out = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=ai.backend.agent-id={agent_id}"),
    ])
    .await;
    let ids: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(ids.len(), 1, "one running kernel: {ids:?}");
    ids[0].to_owned()
}

async fn docker(args: &[&str]) -> String {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .expect("docker runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn occupied_cpu(app: &App) -> Decimal {
    let (agents, _) = app.store.agents(None, 10, 0).await.unwrap();
    parse_slots(&agents[0].occupied_slots).unwrap().get("cpu")
}

async fn agent_status(app: &App) -> String {
    let (agents, _) = app.store.agents(None, 10, 0).await.unwrap();
    agents[0].status.clone()
}

/// Waits (at most 15 s) until `token` is TERMINATED and its slots are free; returns why it
/// ended.
async fn wait_for_end(app: &App, token: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows = session_rows(app).await;
        let row = rows.iter().find(|(t, _, _)| t == token).cloned();
        let cpu = occupied_cpu(app).await;
        if let Some((_, status, info)) = &row {
            if status == "TERMINATED" && cpu.is_zero() {
                return info.clone().unwrap_or_default();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the session did not end with its slots freed: {row:?}, cpu occupied {cpu}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The engine stays away this long after the test changed a container behind its back, as
/// a restarting engine does. More than the second of past events a reconnecting agent asks
/// for, so that only reconciling can find the change.
const OUTAGE_AFTER_CHANGE: Duration = Duration::from_secs(2);

async fn running_session(s: &TestServer, token: &str) -> String {
    let r = create(s, token).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["status"], "RUNNING");
    assert_eq!(occupied_cpu(&s.app()).await, Decimal::ONE);
    container_of(&s.app().config.agent.id).await
}

#[tokio::test]
async fn a_kernel_killed_while_the_engine_is_away_is_reported_killed_when_it_is_back() {
    let mut proxy = EngineProxy::start().await;
    let (s, _c) = start(&proxy).await;
    let app = s.app();
    let container = running_session(&s, "victim").await;

    proxy.set(Mode::Down).await;
    docker(&["kill", &container]).await;
    tokio::time::sleep(OUTAGE_AFTER_CHANGE).await;
    proxy.set(Mode::Up).await;

    assert_eq!(wait_for_end(&app, "victim").await, "killed");
    assert_eq!(agent_status(&app).await, "ALIVE");
}

#[tokio::test]
async fn a_kernel_removed_while_the_engine_is_away_is_reported_vanished() {
    let mut proxy = EngineProxy::start().await;
    let (s, _c) = start(&proxy).await;
    let app = s.app();
    let container = running_session(&s, "gone").await;

    proxy.set(Mode::Down).await;
    docker(&["rm", "-f", &container]).await;
    tokio::time::sleep(OUTAGE_AFTER_CHANGE).await;
    proxy.set(Mode::Up).await;

    assert_eq!(wait_for_end(&app, "gone").await, "vanished");
}

#[tokio::test]
async fn creating_while_the_engine_is_away_says_so_at_once() {
    let mut proxy = EngineProxy::start().await;
    let (s, _c) = start(&proxy).await;

    proxy.set(Mode::Down).await;
    let asked = Instant::now();
    let r = create(&s, "meanwhile").await;
    r.assert_problem(503, "container-engine-unavailable");
    let title: Value = r.json()["title"].clone();
    assert!(
        title.as_str().unwrap().contains("container engine"),
        "{title}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        asked.elapsed()
    );

    // Back, it serves as before.
    proxy.set(Mode::Up).await;
    let r = create(&s, "afterwards").await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["status"], "RUNNING");
}

#[tokio::test]
async fn a_hung_engine_does_not_stop_the_heartbeats() {
    let mut proxy = EngineProxy::start().await;
    let (s, _c) = start(&proxy).await;
    let app = s.app();

    proxy.set(Mode::Hung).await;
    // Twice the heartbeat timeout: an agent whose heartbeats waited on the engine would be
    // LOST by then.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        assert_eq!(agent_status(&app).await, "ALIVE");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.set(Mode::Up).await;
}
