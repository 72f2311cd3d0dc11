//! Faults, each on loopback and stopping by itself: etcd stopped and started again (with
//! sessions running on a real Docker agent); a folder host whose disk fills up; the
//! manager killed with SIGKILL during a hundred concurrent creates (agents on the no-op
//! backend); an agent that answers a create after the manager's deadline. After each: no
//! lost or duplicated session, no leaked slots, every session in a truthful state, the API
//! still answering.
//!
//! Needs Docker, the kernel image and the runner (the test script provides them), and root
//! for the small tmpfs of the full-disk test.

mod common;

use backend_ai_manager::registry::sessions::parse_slots;
use backend_ai_manager::server::App;
use backend_ai_manager::store::StoreError;
use common::{
    agent_config, creds, own_etcd, own_redis, session_rows, setting, wait_for_sessions, TestServer,
    USER,
};
use serde_json::json;
use std::time::Duration;

async fn create(s: &TestServer, token: &str) -> common::Resp {
    s.request("POST", "/kernel")
        .json(
            &json!({"clientSessionToken": token, "image": setting("BAI_TEST_IMAGE"),
                      "config": {"resources": {"cpu": "0.25", "mem": "256m"}}}),
        )
        .signed(&creds(USER))
        .send()
        .await
}

/// Lets the image run with a quarter of a core, so several sessions fit on a small machine.
async fn small_sessions(s: &TestServer) {
    s.app()
        .images()
        .set_resource_limit(&setting("BAI_TEST_IMAGE"), "cpu", Some("0.1"), None)
        .await
        .unwrap();
}

fn status_of<'a>(all: &'a [(String, String, Option<String>)], token: &str) -> Vec<&'a str> {
    all.iter()
        .filter(|(t, _, _)| t == token)
        .map(|(_, s, _)| s.as_str())
        .collect()
}

/// The agents' occupied slots equal what their live sessions hold: nothing leaked, nothing
/// counted twice.
async fn slots_add_up(app: &App) {
    let (agents, _) = app.store.agents(None, 10, 0).await.unwrap();
    for a in agents {
        let occupied = parse_slots(&a.occupied_slots).unwrap();
        let id = a.id.clone();
        let held: Vec<String> = app
            .store
            .read(move |c| -> Result<_, StoreError> {
                let mut st = c.prepare(
                    "SELECT occupied_slots FROM kernels WHERE agent = ?1
                     AND status NOT IN ('PENDING', 'TERMINATED', 'CANCELLED', 'ERROR')",
                )?;
                let rows = st
                    .query_map([&id], |r| r.get(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
            .unwrap();
        let mut sum = backend_ai_manager::domain::ResourceSlots::new();
        for h in held {
            sum = sum.add(&parse_slots(&h).unwrap());
        }
        for slot in ["cpu", "mem"] {
            assert_eq!(
                occupied.get(slot),
                sum.get(slot),
                "agent {}: {slot} occupied {} but its sessions hold {}",
                a.id,
                occupied.get(slot),
                sum.get(slot)
            );
        }
    }
}

/// Every request gets an answer within `secs` (success or a problem, never a hang).
async fn answers(s: &TestServer, path: &str, secs: u64) -> u16 {
    let req = s.request("GET", path).signed(&creds(USER));
    match tokio::time::timeout(Duration::from_secs(secs), req.try_send()).await {
        Ok(Ok(r)) => {
            assert!(
                r.status != 500,
                "{path}: a 500 during the fault: {}",
                String::from_utf8_lossy(&r.body)
            );
            r.status
        }
        Ok(Err(e)) => panic!("{path}: the connection broke: {e}"),
        Err(_) => panic!("{path}: no answer within {secs} s"),
    }
}

async fn end_all(s: &TestServer, tokens: &[&str]) {
    for t in tokens {
        let r = s
            .request("DELETE", &format!("/kernel/{t}"))
            .signed(&creds(USER))
            .send()
            .await;
        assert!(matches!(r.status, 200 | 204 | 404), "{t}: {}", r.status);
    }
    let app = s.app();
    wait_for_sessions(&app, "every session to end", 60, |all| {
        all.iter()
            .all(|(_, st, _)| st == "TERMINATED" || st == "CANCELLED")
    })
    .await;
    let (agents, _) = app.store.agents(None, 10, 0).await.unwrap();
    for a in agents {
        let occ = parse_slots(&a.occupied_slots).unwrap();
        assert!(
            occ.iter().all(|(_, v)| v.is_zero()),
            "slots left on {}: {occ:?}",
            a.id
        );
    }
}

#[tokio::test]
async fn etcd_stopped_and_started_again_the_api_answers_and_sessions_survive() {
    let h = common::halfstack_on(own_etcd(), own_redis(), agent_config).await;
    let mut etcd = h.etcd;
    let s = &h.server;
    s.wait_for_agents(1).await;
    let app = s.app();
    small_sessions(s).await;
    let r = create(s, "before-etcd").await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));

    etcd.kill();
    // Reads of the database still work; what needs the shared config answers with an
    // error in bounded time (no hang, no 500).
    assert_eq!(answers(s, "/kernel/before-etcd", 30).await, 200);
    let st = s.request("GET", "/manager/status").send().await;
    assert_eq!(st.status, 200);
    let during = tokio::time::timeout(Duration::from_secs(60), create(s, "during-etcd"))
        .await
        .expect("the create answers");
    assert_ne!(
        during.status,
        500,
        "{}",
        String::from_utf8_lossy(&during.body)
    );
    // The session keeps running meanwhile.
    let exec = s
        .request("POST", "/kernel/before-etcd")
        .json(&json!({"mode": "query", "code": "print(6*7)", "runId": null}))
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(exec.status, 200);
    assert!(exec.json().to_string().contains("42"), "{}", exec.json());

    etcd.restart();
    let r = create(s, "after-etcd").await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    wait_for_sessions(&app, "the sessions to settle", 60, |all| {
        let d = status_of(all, "during-etcd");
        status_of(all, "before-etcd") == ["RUNNING"]
            && status_of(all, "after-etcd") == ["RUNNING"]
            && (d.is_empty() || d == ["RUNNING"] || d == ["TERMINATED"] || d == ["ERROR"])
    })
    .await;
    let all = session_rows(&app).await;
    for t in ["before-etcd", "during-etcd", "after-etcd"] {
        assert!(status_of(&all, t).len() <= 1, "{t} is duplicated: {all:?}");
    }
    slots_add_up(&app).await;
    end_all(s, &["before-etcd", "during-etcd", "after-etcd"]).await;
}

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        // Lazily: a server's last handle on a file there may still be closing.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_folder_host_refuses_uploads_cleanly_and_keeps_working() {
    let s = TestServer::start().await;
    let host_dir = s.dir.path().join("vfolders").join("local");
    std::fs::create_dir_all(&host_dir).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&host_dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "this test mounts a 4 MiB tmpfs as a folder host: run it as root (the test script does)"
    );
    let _mounted = Mounted(host_dir.clone());

    let r = s
        .request("POST", "/folders")
        .json(&json!({"name": "tiny"}))
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let upload = |name: &'static str, size: usize| {
        let boundary = "----bai-fault";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"src\"; filename=\"{name}\"\r\n\r\n"
        )
        .into_bytes();
        body.extend(std::iter::repeat_n(b'x', size));
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        s.request("POST", "/folders/tiny/upload")
            .raw_body(body, "multipart/form-data")
            .header(
                "Content-Type",
                &format!("multipart/form-data; boundary={boundary}"),
            )
            .signed(&creds(USER))
    };
    let full = upload("big.bin", 8 << 20).send().await;
    full.assert_problem(507, "generic-bad-request");
    assert!(
        full.json()["title"].as_str().unwrap().contains("full"),
        "{}",
        full.json()
    );
    // Nothing half-written is left behind, and the space is free again.
    let left: Vec<_> = std::fs::read_dir(host_dir.join(&id))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let small = upload("small.txt", 1000).send().await;
    assert_eq!(small.status, 201);
    let back = s
        .request("GET", "/folders/tiny/download_single?file=small.txt")
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(back.body.len(), 1000);
    s.stop().await;
}

/// One row per session: token, status, status info, agent, occupied slots.
type Row = (String, String, Option<String>, Option<String>, String);

/// A read-only look at a database another process writes.
fn read_only(db: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

fn rows_in(db: &std::path::Path) -> Vec<Row> {
    let c = read_only(db);
    let mut st = c
        .prepare("SELECT sess_id, status, status_info, agent, occupied_slots FROM kernels")
        .unwrap();
    st.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// `(agent id, status, occupied slots)` of every agent.
fn agents_in(db: &std::path::Path) -> Vec<(String, String, String)> {
    let c = read_only(db);
    let mut st = c
        .prepare("SELECT id, status, occupied_slots FROM agents")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The manager as a process of its own (so it can be killed with SIGKILL), on etcd and
/// Redis; the data directory is the caller's, so a restart finds the same database.
fn manager_process(data: &std::path::Path, etcd: &str, ns: &str) -> common::Service {
    let port = common::free_port();
    let conf = data.join("manager.toml");
    std::fs::write(
        &conf,
        format!(
            "[manager]\ndata-dir = \"{}\"\nservice-addr = \"127.0.0.1:{port}\"\nheartbeat-timeout = 3.0\nlocal-engine-images = false\n\n[etcd]\naddr = \"{etcd}\"\nnamespace = \"{ns}\"\n\n[agent]\nenabled = false\n",
            data.display()
        ),
    )
    .unwrap();
    common::spawn_service(
        env!("CARGO_BIN_EXE_backend-ai-manager"),
        "backend-ai-manager",
        vec!["-f".into(), conf.display().to_string(), "serve".into()],
        format!("127.0.0.1:{port}"),
    )
}

#[tokio::test]
async fn a_manager_killed_during_a_hundred_concurrent_creates_loses_and_duplicates_nothing() {
    let (etcd, redis) = (common::etcd(), common::redis());
    let ns = common::unique_namespace();
    let data = tempfile::tempdir().unwrap();
    let mut cfg = TestServer::config(data.path());
    cfg.etcd.addr = etcd.addr.clone();
    cfg.etcd.namespace = ns.clone();
    let db = cfg.db_path();
    // The operator's part: Redis's address in etcd, an image, users, generous limits.
    let store = backend_ai_manager::store::Store::open(&db).unwrap();
    let shared = backend_ai_manager::shared_config::connect(&cfg, &store)
        .await
        .unwrap();
    shared.put("config/redis/addr", &redis.addr).await.unwrap();
    common::register_noop_image(shared.as_ref()).await;
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("../config/fixtures/example-keypairs.json")).unwrap();
    store.populate_fixture(&fixture).await.unwrap();
    store
        .write(|tx| -> Result<_, StoreError> {
            Ok(tx.execute_batch(
                "UPDATE keypair_resource_policies SET max_concurrent_sessions = 1000",
            )?)
        })
        .await
        .unwrap();
    drop(store);

    let mut manager = manager_process(data.path(), &etcd.addr, &ns);
    // Three agents of their own (they outlive the manager), each creation taking 2 s: long
    // enough that creates are surely in flight when the manager dies, however fast the
    // machine is.
    let bus = backend_ai_manager::bus::connect(shared.as_ref())
        .await
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let agents = common::noop_agents_on(&cfg, bus, scratch.path(), 3, "16", "64g", |c| {
        c.agent.noop_create_delay = 2.0;
        c.agent.heartbeat_interval = 0.5;
    })
    .await;
    let alive = || agents_in(&db).iter().filter(|a| a.1 == "ALIVE").count();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while alive() < 3 {
        assert!(std::time::Instant::now() < deadline, "{:?}", agents_in(&db));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // One session runs before; a hundred creates come at once, and the manager is killed
    // while they are in flight.
    let addr: std::net::SocketAddr = manager.addr.parse().unwrap();
    let r = common::Req::new(addr, "POST", "/kernel")
        .json(&common::noop_session("steady", "0.1"))
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let creates: Vec<_> = (0..100)
        .map(|i| {
            tokio::spawn(async move {
                common::Req::new(addr, "POST", "/kernel")
                    .json(&common::noop_session(&format!("burst{i}"), "0.1"))
                    .signed(&creds(USER))
                    .try_send()
                    .await
                    .map(|r| r.status)
            })
        })
        .collect();
    // Killed once the burst has reached the database (its creations take 2 s each).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !rows_in(&db).iter().any(|r| r.0.starts_with("burst")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the burst never reached the database"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    manager.kill();
    let mut acknowledged = Vec::new();
    for (i, c) in creates.into_iter().enumerate() {
        if let Ok(Ok(status)) = c.await {
            assert!(status < 500, "burst{i}: {status}");
            acknowledged.push(format!("burst{i}"));
        }
    }
    let before = rows_in(&db);
    assert!(!before.is_empty(), "the burst reached the database");
    assert!(
        before
            .iter()
            .any(|r| r.1 != "RUNNING" && r.1 != "TERMINATED"),
        "the kill came while creates were in flight: {before:?}"
    );

    manager.restart();
    let addr: std::net::SocketAddr = manager.addr.parse().unwrap();
    // Settled: every session RUNNING or ended, each agent holding exactly the RUNNING
    // sessions placed on it, and its slots their sum.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rows = rows_in(&db);
        let settled = rows.iter().all(|r| r.1 == "RUNNING" || r.1 == "TERMINATED");
        let mut consistent = settled;
        for a in &agents {
            let held: std::collections::BTreeSet<String> = a
                .agent
                .daemon
                .backend
                .kernel_ids()
                .await
                .into_iter()
                .collect();
            let running: std::collections::BTreeSet<String> = {
                let c = read_only(&db);
                let mut st = c
                    .prepare("SELECT id FROM kernels WHERE status = 'RUNNING' AND agent = ?1")
                    .unwrap();
                st.query_map([a.id()], |r| r.get(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            };
            consistent &= held == running;
        }
        if consistent {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not consistent after the restart: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rows = rows_in(&db);
    // Nothing duplicated, nothing acknowledged lost, every end explained.
    let mut tokens: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    tokens.sort();
    let n = tokens.len();
    tokens.dedup();
    assert_eq!(n, tokens.len(), "a session was duplicated: {rows:?}");
    for t in &acknowledged {
        assert!(
            tokens.contains(&t.as_str()),
            "{t} was acknowledged, then lost"
        );
    }
    for r in rows.iter().filter(|r| r.1 == "TERMINATED") {
        assert!(
            r.2.as_deref().unwrap_or_default().starts_with("creation-"),
            "{r:?}"
        );
    }
    let steady: Vec<&Row> = rows.iter().filter(|r| r.0 == "steady").collect();
    assert_eq!(steady.len(), 1);
    assert_eq!(steady[0].1, "RUNNING", "the session from before survived");
    // No leaked slots: each agent's occupied CPU is the sum of its RUNNING sessions'.
    for (id, _, occupied) in agents_in(&db) {
        let held: rust_decimal::Decimal = rows
            .iter()
            .filter(|r| r.1 == "RUNNING" && r.3.as_deref() == Some(id.as_str()))
            .map(|r| parse_slots(&r.4).unwrap().get("cpu"))
            .sum();
        assert_eq!(parse_slots(&occupied).unwrap().get("cpu"), held, "{id}");
    }
    // The API answers: a survivor is there, and a new session starts.
    let r = common::Req::new(addr, "GET", "/kernel/steady")
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let r = common::Req::new(addr, "POST", "/kernel")
        .json(&common::noop_session("after", "0.1"))
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    manager.kill();
    for a in agents {
        a.stop().await;
    }
}

#[tokio::test]
async fn an_agent_answering_after_the_deadline_leaves_no_session_or_kernel_behind() {
    let s = TestServer::start_with(|c| {
        c.scheduler.agent_create_timeout = 1.0;
        c.manager.heartbeat_timeout = 5.0;
    })
    .await;
    let app = s.app();
    common::register_noop_image(app.shared.as_ref()).await;
    // The agent takes three seconds to create a kernel; the manager gives it one.
    let agents = common::noop_agents(&s, 1, "4", "8g", |c| {
        c.agent.noop_create_delay = 3.0;
        c.agent.heartbeat_interval = 0.5;
    })
    .await;
    let started = std::time::Instant::now();
    let r = s
        .request("POST", "/kernel")
        .json(&common::noop_session("slow", "1"))
        .signed(&creds(USER))
        .send()
        .await;
    // The create gives up at the deadline with the original's problem, not later.
    r.assert_problem(500, "kernel-creation-failed");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        r.json()["data"]["agent-details"]
            .as_str()
            .unwrap_or_default()
            .contains("creation-failed"),
        "{}",
        r.json()
    );
    // Its slots are free at once, while the agent is still busy creating.
    slots_add_up(&app).await;
    let all = session_rows(&app).await;
    assert_eq!(status_of(&all, "slow"), ["TERMINATED"]);
    // When the agent finally has the kernel, nobody owns it: it is destroyed.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    tokio::time::sleep(Duration::from_secs(3)).await;
    while !agents[0].agent.daemon.backend.kernel_ids().await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the late kernel stays"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = session_rows(&app).await;
    assert_eq!(status_of(&all, "slow"), ["TERMINATED"], "{all:?}");
    slots_add_up(&app).await;
    // The API still answers: the ended session is gone from it, folders are there.
    assert_eq!(answers(&s, "/kernel/slow", 2).await, 404);
    assert_eq!(answers(&s, "/folders", 2).await, 200);
    for a in agents {
        a.stop().await;
    }
    s.stop().await;
}

#[tokio::test]
async fn redis_killed_and_restarted_the_api_answers_and_agents_come_back() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,hyper=warn,h2=warn,tonic=warn")
        .try_init();
    let common::Halfstack {
        server: s,
        etcd: _etcd,
        mut redis,
        ..
    } = common::halfstack_on(common::etcd(), own_redis(), |c| {
        c.manager.heartbeat_timeout = 3.0;
    })
    .await;
    let app = s.app();
    common::register_noop_image(app.shared.as_ref()).await;
    let agents = common::noop_agents(&s, 2, "4", "8g", |c| c.agent.heartbeat_interval = 0.5).await;
    let noop = |token: &str| common::noop_session(token, "0.5");
    for t in ["before1", "before2"] {
        let r = s
            .request("POST", "/kernel")
            .json(&noop(t))
            .signed(&creds(USER))
            .send()
            .await;
        assert_eq!(r.status, 201, "{}", r.json());
    }

    redis.kill();
    // Without Redis (events, statistics, rate limits) the API still answers promptly.
    for _ in 0..3 {
        assert_eq!(answers(&s, "/kernel/before1", 5).await, 200);
        assert_eq!(answers(&s, "/folders", 5).await, 200);
    }
    // Longer than the heartbeat timeout: the agents are silent while Redis is away.
    tokio::time::sleep(Duration::from_secs(4)).await;

    redis.restart();
    // Heartbeats flow again: both agents are ALIVE, the old sessions run, and a new
    // session is placed and started through the new Redis.
    s.wait_for_agents(2).await;
    let r = s
        .request("POST", "/kernel")
        .json(&noop("after"))
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    wait_for_sessions(&app, "the sessions to run", 30, |all| {
        ["before1", "before2", "after"]
            .iter()
            .all(|t| status_of(all, t) == ["RUNNING"])
    })
    .await;
    slots_add_up(&app).await;
    end_all(&s, &["before1", "before2", "after"]).await;
    for a in agents {
        a.stop().await;
    }
    s.stop().await;
}

/// Sends `request(i)` for i = 0, 1, … until one is not a success (at most `tries`), and
/// returns that answer.
async fn first_refusal<F, Fut>(tries: usize, mut request: F) -> common::Resp
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = common::Resp>,
{
    for i in 0..tries {
        let r = request(i).await;
        if !(200..300).contains(&r.status) {
            return r;
        }
    }
    panic!("{tries} writes all succeeded on a full disk");
}

#[tokio::test]
async fn a_full_database_disk_answers_507_storage_full_everywhere_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let db_dir = dir.path().join("db");
    std::fs::create_dir_all(&db_dir).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&db_dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "this test mounts a 2 MiB tmpfs for the database: run it as root (the test script does)"
    );
    let _mounted = Mounted(db_dir.clone());
    let mut cfg = TestServer::config(dir.path());
    cfg.db.path = db_dir.join("manager.db").to_string_lossy().into_owned();
    let s = TestServer::start_in(dir, cfg).await;

    // Fill what is left of the disk.
    let filler = db_dir.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        let _ = f.write_all(&[0u8]);
    }

    let value = "v".repeat(64 << 10);
    let storage_full = |r: &common::Resp| {
        r.assert_problem(507, "storage-full");
        assert!(
            r.json()["title"].as_str().unwrap_or("").contains("full"),
            "{}",
            r.json()
        );
    };
    // The shared configuration (embedded in the database) says so, not "unreachable".
    let r = first_refusal(200, |i| {
        s.request("POST", "/config/set")
            .json(&json!({"key": format!("config/filler/{i}"), "value": value}))
            .signed(&creds(common::ADMIN))
            .send()
    })
    .await;
    storage_full(&r);
    // A REST write of the database alone: a web UI login.
    let r = first_refusal(2000, |_| {
        s.request("POST", "/auth/session")
            .json(&json!({"type": "keypair", "access_key": common::ADMIN.0, "secret_key": common::ADMIN.1}))
            .send()
    })
    .await;
    storage_full(&r);
    // A GraphQL mutation.
    let r = first_refusal(2000, |i| {
        let q = "mutation($name: String!, $input: CreateKeyPairResourcePolicyInput!) { create_keypair_resource_policy(name: $name, props: $input) { ok msg } }";
        let input = json!({"default_for_unspecified": "LIMITED", "total_resource_slots": "{}", "max_concurrent_sessions": 1,
            "max_containers_per_session": 1, "max_vfolder_count": 1, "max_vfolder_size": 1, "idle_timeout": 1, "allowed_vfolder_hosts": []});
        s.request("POST", "/admin/graphql")
            .json(&json!({"query": q, "variables": {"name": format!("full-{i}"), "input": input}}))
            .signed(&creds(common::ADMIN))
            .send()
    })
    .await;
    storage_full(&r);

    // Space freed: writes succeed again.
    std::fs::remove_file(&filler).unwrap();
    let r = s
        .request("POST", "/config/set")
        .json(&json!({"key": "config/after", "value": "ok"}))
        .signed(&creds(common::ADMIN))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    s.stop().await;
}
