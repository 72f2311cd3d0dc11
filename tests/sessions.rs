//! Compute sessions through the gateway, on a real agent running real Docker containers:
//! policy checks, the scheduler under concurrent creates, the lifecycle across agent loss,
//! manager restarts and idle timeouts.
//!
//! Needs Docker, the Python kernel image (`BAI_TEST_IMAGE`) and the static runner
//! (`BAI_KRUNNER`); `scripts/test.sh` prepares them.

mod common;

use backend_ai_manager::config::ManagerConfig;
use backend_ai_manager::registry::sessions::parse_slots;
use backend_ai_manager::server::App;
use backend_ai_manager::store::StoreError;
use common::{
    creds, session_rows as sessions, setting, sql, wait_for_sessions, Containers, Resp, TestServer,
    USER,
};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn containers_of(agent_id: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=ai.backend.agent-id={agent_id}"),
        ])
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

async fn start(adjust: impl FnOnce(&mut ManagerConfig)) -> (TestServer, Containers) {
    let s = TestServer::start_with_agent(adjust).await;
    let id = s.app().config.agent.id.clone();
    (s, Containers(id))
}

async fn create(s: &TestServer, body: Value) -> Resp {
    s.request("POST", "/kernel")
        .json(&body)
        .signed(&creds(USER))
        .send()
        .await
}

fn body(token: &str, extra: Value) -> Value {
    let mut b = json!({"clientSessionToken": token, "image": setting("BAI_TEST_IMAGE"),
                       "group_name": "default", "domain_name": "default"});
    if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    b
}

async fn status(app: &App, token: &str) -> (String, Option<String>) {
    sessions(app)
        .await
        .into_iter()
        .rev()
        .find(|(t, _, _)| t == token)
        .map(|(_, s, i)| (s, i))
        .unwrap_or_else(|| panic!("no session {token}"))
}

async fn wait_until<F, Fut>(what: &str, secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The agent's `(available, occupied)` slots.
async fn agent_slots(
    app: &App,
) -> (
    backend_ai_manager::domain::ResourceSlots,
    backend_ai_manager::domain::ResourceSlots,
) {
    let (agents, _) = app.store.agents(None, 10, 0).await.unwrap();
    let a = &agents[0];
    (
        parse_slots(&a.available_slots).unwrap(),
        parse_slots(&a.occupied_slots).unwrap(),
    )
}

async fn concurrency_used(app: &App) -> i64 {
    app.store
        .read(|c| -> Result<_, StoreError> {
            Ok(c.query_row(
                "SELECT concurrency_used FROM keypairs WHERE access_key = ?1",
                [USER.0],
                |r| r.get(0),
            )?)
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn bad_requests_and_policy_limits_get_the_original_errors() {
    let (s, _c) = start(|_| {}).await;
    let app = s.app();
    sql(
        &app,
        "UPDATE keypair_resource_policies SET max_concurrent_sessions = 1",
    )
    .await;

    create(&s, body("x", json!({})))
        .await
        .assert_problem(400, "invalid-api-params");
    create(&s, body("has space", json!({})))
        .await
        .assert_problem(400, "invalid-api-params");
    create(
        &s,
        body(
            "nosuchimg",
            json!({"image": "127.0.0.1:5000/nothing/here:1"}),
        ),
    )
    .await
    .assert_problem(404, "image-not-found");
    create(
        &s,
        body("slots1", json!({"config": {"resources": {"tpu": 1}}})),
    )
    .await
    .assert_problem(400, "invalid-api-params");
    let r = create(
        &s,
        body(
            "toosmall",
            json!({"config": {"resources": {"cpu": "0.1", "mem": "64m"}}}),
        ),
    )
    .await;
    r.assert_problem(400, "invalid-api-params");
    assert!(
        r.json()["title"]
            .as_str()
            .unwrap()
            .contains("smaller than the minimum"),
        "{}",
        r.json()
    );
    create(
        &s,
        body("legacygpu", json!({"config": {"instanceGPUs": 1}})),
    )
    .await
    .assert_problem(400, "invalid-api-params");
    create(&s, body("nogroup", json!({"group_name": "nosuchgroup"})))
        .await
        .assert_problem(400, "invalid-api-params");
    let r = create(
        &s,
        body(
            "enormous",
            json!({"config": {"resources": {"cpu": "100000"}}}),
        ),
    )
    .await;
    r.assert_problem(503, "instance-not-available");

    // The first session is taken; the second goes over max_concurrent_sessions.
    let r = create(
        &s,
        body(
            "first",
            json!({"config": {"resources": {"cpu": 1, "mem": "256m"}}}),
        ),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(r.json()["kernelId"], "first");
    assert_eq!(r.json()["created"], true);
    assert_eq!(r.json()["status"], "RUNNING");
    create(&s, body("second", json!({})))
        .await
        .assert_problem(412, "quota-exceeded");
    // The same token and image is the same session.
    let r = create(&s, body("first", json!({}))).await;
    assert_eq!((r.status, r.json()["created"].clone()), (201, json!(false)));
    // Nobody else sees it.
    let other = s
        .request("GET", "/kernel/first")
        .signed(&creds(common::DOMAIN_ADMIN))
        .send()
        .await;
    other.assert_problem(404, "kernel-not-found");

    // Info, execute (query mode; v4 console), and the query counter.
    let info = s
        .request("GET", "/kernel/first")
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(info.status, 200);
    assert_eq!(info.json()["image"], setting("BAI_TEST_IMAGE"));
    assert_eq!(info.json()["memoryLimit"], 256 * 1024);
    let run = s
        .request("POST", "/kernel/first")
        .json(&json!({"mode": "query", "code": "print(6*7)", "runId": null}))
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(run.status, 200, "{}", run.json());
    assert_eq!(run.json()["result"]["status"], "finished");
    assert!(
        run.json()["result"]["console"].to_string().contains("42"),
        "{}",
        run.json()
    );
    let bad = s
        .request("POST", "/kernel/first")
        .json(&json!({"mode": "continue", "code": "", "runId": null}))
        .signed(&creds(USER))
        .send()
        .await;
    bad.assert_problem(400, "invalid-api-params");
    let info = s
        .request("GET", "/kernel/first")
        .signed(&creds(USER))
        .send()
        .await;
    assert!(
        info.json()["numQueriesExecuted"].as_i64().unwrap() >= 3,
        "{}",
        info.json()
    );

    // API v1 gets the v1 result shape (stdout/stderr instead of console).
    let v1 = s
        .request("POST", "/v1/kernel/first")
        .json(&json!({"code": "print('v' + '1')"}))
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(v1.status, 200, "{}", v1.json());
    assert_eq!(v1.json()["result"]["stdout"], "v1\n");
    // Admins act for another keypair; users cannot.
    let as_admin = s
        .request("GET", &format!("/kernel/first?owner_access_key={}", USER.0))
        .signed(&creds(common::ADMIN))
        .send()
        .await;
    assert_eq!(as_admin.status, 200, "{}", as_admin.json());
    s.request(
        "GET",
        &format!("/kernel/first?owner_access_key={}", common::ADMIN.0),
    )
    .signed(&creds(USER))
    .send()
    .await
    .assert_problem(403, "generic-forbidden");
    // A restart keeps the session (and its files), with a fresh interpreter.
    let set = json!({"mode": "query", "code": "open('keep.txt', 'w').write('kept'); x = 1", "runId": null});
    s.request("POST", "/kernel/first")
        .json(&set)
        .signed(&creds(USER))
        .send()
        .await;
    let restarted = s
        .request("PATCH", "/kernel/first")
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(restarted.status, 204, "{}", restarted.json());
    assert_eq!(status(&app, "first").await.0, "RUNNING");
    let after = json!({"mode": "query", "code": "print(open('keep.txt').read(), 'x' in globals())", "runId": null});
    let run = s
        .request("POST", "/kernel/first")
        .json(&after)
        .signed(&creds(USER))
        .send()
        .await;
    assert!(
        run.json()["result"]["console"]
            .to_string()
            .contains("kept False"),
        "{}",
        run.json()
    );

    // Resource presets and what the caller can still allocate.
    let check = s
        .request("POST", "/resource/check-presets")
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(check.status, 200, "{}", check.json());
    assert_eq!(check.json()["keypair_using"]["cpu"], "1");
    assert_eq!(check.json()["keypair_limits"]["cpu"], "Infinity");

    // Destroy returns the last statistics and frees everything.
    let d = s
        .request("DELETE", "/kernel/first")
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(d.status, 200, "{}", d.json());
    assert!(d.json().get("stats").is_some());
    assert_eq!(status(&app, "first").await.0, "TERMINATED");
    assert_eq!(concurrency_used(&app).await, 0);
    let (_, occupied) = agent_slots(&app).await;
    assert!(occupied.iter().all(|(_, v)| v.is_zero()), "{occupied:?}");
    s.request("DELETE", "/kernel/first")
        .signed(&creds(USER))
        .send()
        .await
        .assert_problem(404, "kernel-not-found");

    // The ended session is in this month's usage report (superadmins only).
    let month = chrono::Utc::now().format("%Y%m").to_string();
    let usage = s
        .request("GET", "/resource/usage/month")
        .json(&json!({"month": month, "group_ids": []}))
        .signed(&creds(common::ADMIN))
        .send()
        .await;
    assert_eq!(usage.status, 200, "{}", usage.json());
    let groups = usage.json();
    assert_eq!(groups[0]["g_name"], "default");
    assert!(
        groups[0]["c_infos"].to_string().contains("\"first\""),
        "{groups}"
    );
    assert_eq!(groups[0]["g_smp"], 1.0);
    let legacy = s
        .request("GET", &format!("/kernel/usage/{month}"))
        .signed(&creds(common::ADMIN))
        .send()
        .await;
    assert_eq!(legacy.json(), groups);
    let refused = s
        .request("GET", "/resource/usage/month")
        .json(&json!({"month": month}))
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(refused.status, 401);
    s.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_creates_on_room_for_ten_place_exactly_ten() {
    let (s, _c) = start(|_| {}).await;
    let app = s.app();
    sql(
        &app,
        "UPDATE keypair_resource_policies SET max_concurrent_sessions = 100",
    )
    .await;
    // Ten sessions fill the agent's CPU exactly; memory is plentiful.
    let (available, _) = agent_slots(&app).await;
    let cpu = available.get("cpu") / Decimal::from(10);
    app.images()
        .set_resource_limit(&setting("BAI_TEST_IMAGE"), "cpu", Some("0.01"), None)
        .await
        .unwrap();
    let resources = json!({"cpu": cpu.to_string(), "mem": "256m"});
    let creates = (0..50).map(|i| {
        let s = &s;
        let b = body(
            &format!("crowd{i:02}"),
            json!({"enqueueOnly": true, "config": {"resources": resources}}),
        );
        async move { create(s, b).await }
    });
    for r in futures_util::future::join_all(creates).await {
        assert_eq!(r.status, 201, "{}", r.json());
    }
    wait_for_sessions(&app, "ten RUNNING sessions", 180, |all| {
        all.iter().filter(|(_, st, _)| st == "RUNNING").count() == 10
    })
    .await;
    // Give the scheduler a few more passes: still exactly ten placed, no overcommit.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = sessions(&app).await;
    let placed = all.iter().filter(|(_, st, _)| st != "PENDING").count();
    assert_eq!(placed, 10, "{all:?}");
    for (t, st, info) in &all {
        if st == "PENDING" {
            let info = info.as_deref().unwrap_or_default();
            assert!(
                info.starts_with("waiting for capacity") || info.starts_with("queued behind"),
                "{t}: {info}"
            );
        }
    }
    let (available, occupied) = agent_slots(&app).await;
    assert!(occupied.fits_in(&available), "{occupied:?} > {available:?}");
    assert_eq!(occupied.get("cpu"), cpu * Decimal::from(10));
    assert_eq!(containers_of(&app.config.agent.id).len(), 10);
    assert_eq!(concurrency_used(&app).await, 50);

    // Placed in arrival order: the ten running are the first ten that arrived.
    let arrival: Vec<String> = all.iter().map(|(t, _, _)| t.clone()).collect();
    for (t, st, _) in &all[..10] {
        assert_eq!(st, "RUNNING", "{t} arrived among the first ten: {all:?}");
    }
    // Ending them lets the next ten in, again in arrival order.
    for t in &arrival[..10] {
        let d = s
            .request("DELETE", &format!("/kernel/{t}"))
            .signed(&creds(USER))
            .send()
            .await;
        assert_eq!(d.status, 200, "{}", d.json());
    }
    let next: Vec<String> = arrival[10..20].to_vec();
    wait_for_sessions(&app, "the next ten to start", 180, |all| {
        next.iter()
            .all(|n| all.iter().any(|(t, st, _)| t == n && st == "RUNNING"))
    })
    .await;
    // Pending sessions are cancelled at once; everything is released exactly once.
    for t in &arrival[10..] {
        let d = s
            .request("DELETE", &format!("/kernel/{t}"))
            .signed(&creds(USER))
            .send()
            .await;
        assert_eq!(d.status, 200, "{}", d.json());
    }
    assert!(sessions(&app)
        .await
        .iter()
        .all(|(_, st, _)| st == "TERMINATED"));
    let (_, occupied) = agent_slots(&app).await;
    assert!(occupied.iter().all(|(_, v)| v.is_zero()), "{occupied:?}");
    assert_eq!(concurrency_used(&app).await, 0);
    wait_until("containers to go", 30, || async {
        containers_of(&app.config.agent.id).is_empty()
    })
    .await;
    s.stop().await;
}

#[tokio::test]
async fn idle_sessions_are_terminated_and_release_their_slots() {
    let (s, _c) = start(|_| {}).await;
    let app = s.app();
    sql(
        &app,
        "UPDATE keypair_resource_policies SET idle_timeout = 2",
    )
    .await;
    let r = create(&s, body("idler", json!({}))).await;
    assert_eq!(r.status, 201, "{}", r.json());
    wait_until("the idle timeout", 30, || async {
        status(&app, "idler").await.0 == "TERMINATED"
    })
    .await;
    assert_eq!(
        status(&app, "idler").await.1.as_deref(),
        Some("idle-timeout")
    );
    let (_, occupied) = agent_slots(&app).await;
    assert!(occupied.iter().all(|(_, v)| v.is_zero()), "{occupied:?}");
    assert_eq!(concurrency_used(&app).await, 0);
    s.stop().await;
}

#[tokio::test]
async fn a_manager_restart_mid_flight_is_reconciled() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TestServer::config(dir.path());
    common::agent_config(&mut cfg);
    let _c = Containers(cfg.agent.id.clone());
    let s = TestServer::start_in(dir, cfg.clone()).await;
    s.wait_for_agents(1).await;
    let app = s.app();
    let r = create(&s, body("steady", json!({}))).await;
    assert_eq!(r.status, 201);
    // Five more in flight when the manager stops.
    for i in 0..5 {
        let r = create(
            &s,
            body(&format!("flight{i}"), json!({"enqueueOnly": true})),
        )
        .await;
        assert_eq!(r.status, 201);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dir = s.stop().await;
    drop(app);

    let s = TestServer::start_in(dir, cfg.clone()).await;
    s.wait_for_agents(1).await;
    let app = s.app();
    // Settled: every session is RUNNING with its container, waiting with a reason (the
    // agent has room for as many as it has cores), or ended; the agent's containers are
    // exactly the running sessions; the slots add up.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = sessions(&app).await;
        let running = all.iter().filter(|(_, st, _)| st == "RUNNING").count();
        let settled = all.iter().all(|(_, st, info)| {
            st == "RUNNING" || st == "TERMINATED" || (st == "PENDING" && info.is_some())
        });
        let containers = containers_of(&cfg.agent.id);
        if settled && containers.len() == running {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not consistent: {all:?}; containers {containers:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status(&app, "steady").await.0, "RUNNING");
    for (t, st, info) in sessions(&app).await {
        if st == "TERMINATED" {
            assert!(
                info.as_deref()
                    .unwrap_or_default()
                    .starts_with("creation-interrupted"),
                "{t}: {info:?}"
            );
        }
    }
    let live = sessions(&app)
        .await
        .into_iter()
        .filter(|(_, st, _)| st == "RUNNING")
        .count();
    let (_, occupied) = agent_slots(&app).await;
    assert_eq!(occupied.get("cpu"), Decimal::from(live as u64));
    let not_ended = sessions(&app)
        .await
        .into_iter()
        .filter(|(_, st, _)| st != "TERMINATED")
        .count();
    assert_eq!(concurrency_used(&app).await, not_ended as i64);
    // The session survived the restart and still runs code.
    let run = s
        .request("POST", "/kernel/steady")
        .json(&json!({"mode": "query", "code": "print('still here')", "runId": null}))
        .signed(&creds(USER))
        .send()
        .await;
    assert!(
        run.json()["result"]["console"]
            .to_string()
            .contains("still here"),
        "{}",
        run.json()
    );
    s.stop().await;
}

/// The manager with etcd and Redis, and the agent as a separate process that is killed.
#[tokio::test]
async fn a_killed_agent_is_lost_and_its_sessions_marked() {
    let common::Halfstack {
        server: s,
        etcd,
        redis: _redis,
        ns,
    } = common::halfstack().await;
    let app: Arc<App> = s.app();
    let agent_id = format!("i-killed-{}", uuid::Uuid::new_v4().simple());
    let _c = Containers(agent_id.clone());
    let scratch = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut agent = std::process::Command::new(env!("CARGO_BIN_EXE_backend-ai-manager"))
        .args(["--data-dir", scratch.path().to_str().unwrap(), "agent"])
        .env_remove("BACKEND_CONFIG_FILE")
        .env("BACKEND_ETCD__ADDR", &etcd.addr)
        .env("BACKEND_ETCD__NAMESPACE", &ns)
        .env("BACKEND_AGENT__ID", &agent_id)
        .env("BACKEND_AGENT__KRUNNER_PATH", setting("BAI_KRUNNER"))
        .env(
            "BACKEND_AGENT__RPC_LISTEN_ADDR",
            format!("127.0.0.1:{port}"),
        )
        .env("BACKEND_AGENT__HEARTBEAT_INTERVAL", "0.3")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    s.wait_for_agents(1).await;
    let r = create(&s, body("doomed", json!({}))).await;
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(status(&app, "doomed").await.0, "RUNNING");

    agent.kill().unwrap(); // SIGKILL: no goodbye
    agent.wait().unwrap();
    wait_until("the agent to be LOST", 20, || async {
        app.store
            .agent(&agent_id)
            .await
            .unwrap()
            .is_some_and(|a| a.status == "LOST")
    })
    .await;
    assert_eq!(
        status(&app, "doomed").await,
        ("ERROR".into(), Some("agent-lost".into()))
    );
    // New sessions have nowhere to go, and say so.
    create(&s, body("homeless", json!({})))
        .await
        .assert_problem(503, "instance-not-available");
    // The lost session can still be closed; its slots are released.
    let d = s
        .request("DELETE", "/kernel/doomed")
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(d.status, 200, "{}", d.json());
    let (st, info) = status(&app, "doomed").await;
    assert_eq!(st, "TERMINATED");
    assert!(info.unwrap_or_default().contains("lost"));
    let (_, occupied) = agent_slots(&app).await;
    assert!(occupied.iter().all(|(_, v)| v.is_zero()), "{occupied:?}");
    s.stop().await;
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A signed WebSocket handshake, as the client signs it (content type octet-stream).
async fn ws_connect(
    s: &TestServer,
    path: &str,
    who: (&str, &str),
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let host = s.host();
    let (date, auth) = backend_ai_manager::signing::client_headers(
        &creds(who),
        "GET",
        path,
        &host,
        "application/octet-stream",
        chrono::Utc::now(),
    );
    let mut req = format!("ws://{host}{path}").into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert("Date", date.parse().unwrap());
    h.insert("Authorization", auth.parse().unwrap());
    h.insert("Content-Type", "application/octet-stream".parse().unwrap());
    h.insert("X-BackendAI-Version", "v4.20190315".parse().unwrap());
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

#[tokio::test]
async fn terminal_service_proxy_and_event_streams() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (s, _c) = start(|_| {}).await;
    let app = s.app();

    // The event stream (SSE) of the caller's sessions, opened before the session exists.
    let host = s.host();
    let path = "/stream/kernel/_/events?sessionId=streams";
    let (date, auth) = backend_ai_manager::signing::client_headers(
        &creds(USER),
        "GET",
        path,
        &host,
        "text/plain",
        chrono::Utc::now(),
    );
    let sse = hyper::Client::new()
        .request(
            hyper::Request::get(format!("http://{host}{path}"))
                .header("Date", date)
                .header("Authorization", auth)
                .header("Content-Type", "text/plain")
                .header("X-BackendAI-Version", "v4.20190315")
                .body(hyper::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let sse_body =
        tokio::spawn(async move { hyper::body::to_bytes(sse.into_body()).await.unwrap() });

    let r = create(&s, body("streams", json!({}))).await;
    assert_eq!(r.status, 201, "{}", r.json());
    assert!(
        r.json()["servicePorts"].to_string().contains("http"),
        "{}",
        r.json()
    );

    // Without a signature there is no stream.
    let unsigned =
        tokio_tungstenite::connect_async(format!("ws://{host}/stream/kernel/streams/pty")).await;
    assert!(unsigned.is_err());
    // Another user's session does not exist for this caller.
    assert!(
        ws_connect(&s, "/stream/kernel/streams/pty", common::DOMAIN_ADMIN)
            .await
            .is_err()
    );

    // A terminal: what is typed runs in a shell, and its output comes back.
    let mut pty = ws_connect(&s, "/stream/kernel/streams/pty", USER)
        .await
        .expect("pty opens");
    let stdin = |text: &str| {
        use data_encoding::BASE64;
        Message::text(json!({"type": "stdin", "chars": BASE64.encode(text.as_bytes())}).to_string())
    };
    pty.send(Message::text(
        json!({"type": "resize", "rows": 30, "cols": 100}).to_string(),
    ))
    .await
    .unwrap();
    pty.send(stdin("echo pty-$((6*7)); stty size\n"))
        .await
        .unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(seen.contains("pty-42") && seen.contains("30 100")) {
        assert!(Instant::now() < deadline, "terminal output: {seen:?}");
        let msg = tokio::time::timeout(Duration::from_secs(20), pty.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        assert_eq!(v["type"], "out");
        let bytes = data_encoding::BASE64
            .decode(v["data"].as_str().unwrap().as_bytes())
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&bytes));
    }

    // The image's HTTP service, started on demand and reached through the proxy.
    let mut proxy = ws_connect(&s, "/stream/kernel/streams/httpproxy?app=http", USER)
        .await
        .expect("proxy opens");
    proxy
        .send(Message::binary(
            b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n".to_vec(),
        ))
        .await
        .unwrap();
    let mut reply = Vec::new();
    while let Some(Ok(msg)) = tokio::time::timeout(Duration::from_secs(20), proxy.next())
        .await
        .unwrap()
    {
        if msg.is_close() {
            break;
        }
        reply.extend_from_slice(&msg.into_data());
    }
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    assert!(reply.contains("Directory listing"), "{reply}");
    // An unknown service is refused before the upgrade.
    assert!(
        ws_connect(&s, "/stream/kernel/streams/httpproxy?app=nope", USER)
            .await
            .is_err()
    );

    // Terminating the session closes its terminal and ends the event stream.
    let d = s
        .request("DELETE", "/kernel/streams")
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(d.status, 200);
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = pty.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the terminal closes with its session");
    let events = String::from_utf8(
        tokio::time::timeout(Duration::from_secs(10), sse_body)
            .await
            .unwrap()
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    for name in [
        "session_preparing",
        "session_started",
        "session_terminating",
        "session_terminated",
    ] {
        assert!(
            events.contains(&format!("event: {name}")),
            "{name} missing in {events}"
        );
    }
    assert!(!events.contains("pending\""), "{events}");

    // A server shutting down closes open terminals politely (1001, going away).
    let r = create(&s, body("lastone", json!({}))).await;
    assert_eq!(r.status, 201, "{}", r.json());
    let mut pty = ws_connect(&s, "/stream/kernel/lastone/pty", USER)
        .await
        .expect("pty opens");
    let stopping = tokio::spawn(async move { s.stop().await });
    let code = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = pty.next().await {
            if let Message::Close(frame) = m {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("the terminal closes when the server stops");
    assert_eq!(code, Some(1001));
    stopping.await.unwrap();
    let _ = app;
}
