//! The manager following agents through their events (a real server, events published on
//! its bus as an agent sends them).

mod common;

use backend_ai_manager::bus::Event;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

async fn agent_row(s: &TestServer, id: &str) -> Value {
    let q = "query($id: String!) { agent(agent_id: $id) { id status lost_at cpu_slots mem_slots gpu_slots region addr } }";
    let r = s
        .request("POST", "/admin/graphql")
        .json(&json!({"query": q, "variables": {"id": id}}))
        .signed(&creds(ADMIN))
        .send()
        .await;
    r.json()["agent"].clone()
}

async fn wait_for(s: &TestServer, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let row = agent_row(s, id).await;
        if row["status"] == status {
            return row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent {id} never became {status}: {row}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn heartbeat(id: &str) -> Event {
    let info = json!({
        "ip": "127.0.0.2", "region": "local", "addr": "tcp://127.0.0.2:6001", "version": "0.1.0",
        "resource_slots": {"cpu": ["count", "8"], "mem": ["bytes", "17179869184"], "cuda.device": ["count", "2"]},
        "compute_plugins": {}, "images": [], "kernels": []
    });
    Event::new("instance_heartbeat", id, vec![info])
}

#[tokio::test]
async fn heartbeats_register_agents_and_silence_makes_them_lost() {
    let s = TestServer::start_with(|c| c.manager.heartbeat_timeout = 1.0).await;
    let bus = s.app().bus.clone();
    bus.publish(&heartbeat("i-node1")).await.unwrap();
    let row = wait_for(&s, "i-node1", "ALIVE").await;
    assert_eq!(
        (
            row["cpu_slots"].clone(),
            row["mem_slots"].clone(),
            row["gpu_slots"].clone(),
            row["addr"].clone()
        ),
        (
            json!(8.0),
            json!(16384),
            json!(2.0),
            json!("tcp://127.0.0.2:6001")
        )
    );
    // A new slot type becomes known.
    let r = s.request("GET", "/config/resource-slots").send().await;
    assert_eq!(r.json()["cuda.device"], "count");
    // No more heartbeats: LOST after the timeout, with the time it was lost.
    let row = wait_for(&s, "i-node1", "LOST").await;
    assert!(row["lost_at"].is_string(), "{row}");
    // It comes back.
    bus.publish(&heartbeat("i-node1")).await.unwrap();
    let row = wait_for(&s, "i-node1", "ALIVE").await;
    assert_eq!(row["lost_at"], Value::Null);
    // And says goodbye.
    bus.publish(&Event::new(
        "instance_terminated",
        "i-node1",
        vec![json!("shutdown")],
    ))
    .await
    .unwrap();
    wait_for(&s, "i-node1", "TERMINATED").await;
    // Duplicated deliveries change nothing.
    bus.publish(&Event::new(
        "instance_terminated",
        "i-node1",
        vec![json!("shutdown")],
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(agent_row(&s, "i-node1").await["status"], "TERMINATED");
}

#[tokio::test]
async fn kernel_terminated_closes_the_kernels_record_with_its_last_stats() {
    let s = TestServer::start().await;
    let app = s.app();
    app.store
        .write(|tx| -> Result<_, backend_ai_manager::store::StoreError> {
            tx.execute(
                "INSERT INTO kernels (id, sess_id, domain_name, group_id, user_uuid, access_key, image, status)
                 VALUES ('00000000-0000-0000-0000-0000000000aa', 'job', 'default', '2de2b969-1d04-48a6-af16-0bc8adb3c831',
                         'dfa9da54-4b28-432f-be29-c0d680c7a412', ?1, 'python', 'RUNNING')",
                [USER.0],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let stat = json!({"mem": {"current": "1024", "stats.max": "4096"}});
    let ev = Event::new(
        "kernel_terminated",
        "i-node1",
        vec![
            json!("00000000-0000-0000-0000-0000000000aa"),
            json!("idle-timeout"),
            json!(0),
            stat,
        ],
    );
    app.bus.publish(&ev).await.unwrap();
    let q =
        "{ compute_session(sess_id: \"job\") { status status_info terminated_at mem_max_bytes } }";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = s
            .request("POST", "/admin/graphql")
            .json(&json!({"query": q}))
            .signed(&creds(USER))
            .send()
            .await;
        let sess = r.json()["compute_session"].clone();
        if sess["status"] == "TERMINATED" {
            assert_eq!(sess["status_info"], "idle-timeout");
            assert_eq!(sess["mem_max_bytes"], 4096.0);
            assert!(sess["terminated_at"].is_string());
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{sess}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_agent_inside_the_process_is_not_lost_when_its_heartbeats_stall() {
    let scratch = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(|c| {
        c.manager.heartbeat_timeout = 1.0;
        c.agent.enabled = true;
        c.agent.backend = backend_ai_manager::config::KernelBackendKind::Noop;
        c.agent.id = "i-in-process".into();
        c.agent.rpc_listen_addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        c.agent.scratch_root = scratch.path().to_owned();
        // The first beat registers it; the next would come in an hour: a heartbeat task
        // stalled by a busy machine, as far as the manager can tell.
        c.agent.heartbeat_interval = 3600.0;
    })
    .await;
    wait_for(&s, "i-in-process", "ALIVE").await;
    // A remote agent, silent after one beat, is judged by its heartbeats: once it is LOST,
    // the check has run past the timeout for the agent in this process too.
    s.app().bus.publish(&heartbeat("i-remote")).await.unwrap();
    wait_for(&s, "i-remote", "ALIVE").await;
    wait_for(&s, "i-remote", "LOST").await;
    assert_eq!(agent_row(&s, "i-in-process").await["status"], "ALIVE");
}

#[tokio::test]
async fn an_agent_is_lost_in_the_same_transaction_as_its_sessions() {
    let s = TestServer::start_with(|c| c.manager.heartbeat_timeout = 1.0).await;
    let app = s.app();
    let kernel = "00000000-0000-0000-0000-0000000000bb";
    let mut beat = heartbeat("i-node2");
    beat.args[0]["kernels"] = json!([kernel]);
    app.bus.publish(&beat).await.unwrap();
    wait_for(&s, "i-node2", "ALIVE").await;
    app.store
        .write(move |tx| -> Result<_, backend_ai_manager::store::StoreError> {
            tx.execute(
                "INSERT INTO kernels (id, sess_id, domain_name, group_id, user_uuid, access_key, image, status, agent)
                 VALUES (?1, 'held', 'default', '2de2b969-1d04-48a6-af16-0bc8adb3c831',
                         'dfa9da54-4b28-432f-be29-c0d680c7a412', ?2, 'python', 'RUNNING', 'i-node2')",
                [kernel, USER.0],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    // Read both statuses in one snapshot, as often as the store allows, until the agent is
    // LOST: no snapshot may show it LOST with its session still RUNNING.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let seen = loop {
        let pair = app
            .store
            .read(
                move |c| -> Result<_, backend_ai_manager::store::StoreError> {
                    Ok(c.query_row(
                        "SELECT a.status, k.status, k.status_info FROM agents a, kernels k
                     WHERE a.id = 'i-node2' AND k.id = ?1",
                        [kernel],
                        |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, Option<String>>(2)?,
                            ))
                        },
                    )?)
                },
            )
            .await
            .unwrap();
        if pair.0 == "LOST" {
            break pair;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never LOST: {pair:?}"
        );
        tokio::task::yield_now().await;
    };
    assert_eq!(
        seen,
        ("LOST".into(), "ERROR".into(), Some("agent-lost".into()))
    );
}

#[tokio::test]
async fn a_freeze_with_force_kill_terminates_every_live_session_and_frees_their_slots() {
    let s = TestServer::start().await;
    let app = s.app();
    register_noop_image(app.shared.as_ref()).await;
    let _agents = noop_agents(&s, 1, "4", "4g", |_| {}).await;
    for token in ["first", "second"] {
        let r = s
            .request("POST", "/kernel")
            .json(&noop_session(token, "1"))
            .signed(&creds(USER))
            .send()
            .await;
        assert_eq!(r.status, 201, "{}", r.json());
    }
    let r = s
        .request("PUT", "/manager/status")
        .json(&json!({"status": "frozen", "force_kill": true}))
        .signed(&creds(ADMIN))
        .send()
        .await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let rows = session_rows(&app).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (token, status, info) in &rows {
        assert_eq!(
            (status.as_str(), info.as_deref()),
            ("TERMINATED", Some("force-terminated")),
            "{token}"
        );
    }
    let (agents, _) = app.store.agents(None, 10, 0).await.unwrap();
    let occupied =
        backend_ai_manager::registry::sessions::parse_slots(&agents[0].occupied_slots).unwrap();
    assert!(occupied.iter().all(|(_, v)| v.is_zero()), "{occupied:?}");
    // Frozen: nothing new starts.
    s.request("POST", "/kernel")
        .json(&noop_session("third", "1"))
        .signed(&creds(USER))
        .send()
        .await
        .assert_problem(503, "server-frozen");
}

#[tokio::test]
async fn a_forced_destroy_ends_a_stuck_session_once_for_admins_and_for_owners_of_a_gone_agent() {
    let s = TestServer::start().await;
    let app = s.app();
    register_noop_image(app.shared.as_ref()).await;
    let mut agents = noop_agents(&s, 1, "4", "4g", |_| {}).await;
    for token in ["stuck", "orphan"] {
        let r = s
            .request("POST", "/kernel")
            .json(&noop_session(token, "1"))
            .signed(&creds(USER))
            .send()
            .await;
        assert_eq!(r.status, 201, "{}", r.json());
    }
    // A destruction that never finished: TERMINATING on an agent that is alive.
    sql(
        &app,
        "UPDATE kernels SET status = 'TERMINATING' WHERE sess_id = 'stuck'",
    )
    .await;
    let forced = |path: &str, key| {
        s.request("DELETE", &format!("/kernel/{path}?forced=true"))
            .signed(&creds(key))
    };
    forced("stuck", USER)
        .send()
        .await
        .assert_problem(403, "generic-forbidden");
    let r = s
        .request(
            "DELETE",
            &format!("/kernel/stuck?forced=true&owner_access_key={}", USER.0),
        )
        .signed(&creds(ADMIN))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    // The owner of a session whose agent went away may force it too.
    let agent = agents.pop().unwrap();
    agent.stop().await;
    wait_for_sessions(&app, "the orphan to be in ERROR", 20, |rows| {
        rows.iter().any(|(t, st, _)| t == "orphan" && st == "ERROR")
    })
    .await;
    let r = forced("orphan", USER).send().await;
    assert_eq!(r.status, 200, "{}", r.json());
    let rows = session_rows(&app).await;
    for (token, status, info) in &rows {
        assert_eq!(
            (status.as_str(), info.as_deref()),
            ("TERMINATED", Some("force-terminated")),
            "{token}"
        );
    }
    // Slots released exactly once: the agent holds nothing (not less than nothing).
    let (rows, _) = app.store.agents(None, 10, 0).await.unwrap();
    let occupied =
        backend_ai_manager::registry::sessions::parse_slots(&rows[0].occupied_slots).unwrap();
    assert!(occupied.iter().all(|(_, v)| v.is_zero()), "{occupied:?}");
    // Gone for good.
    forced("stuck", USER)
        .send()
        .await
        .assert_problem(404, "kernel-not-found");
}

#[tokio::test]
async fn max_wait_seconds_zero_waits_until_the_session_started_as_in_19_09() {
    let s = TestServer::start().await;
    let app = s.app();
    register_noop_image(app.shared.as_ref()).await;
    // Each creation takes a moment, so an answer that did not wait sees PREPARING.
    let _agents = noop_agents(&s, 1, "4", "4g", |c| {
        c.agent.noop_create_delay = 0.5;
    })
    .await;
    let mut body = noop_session("waited", "1");
    body["enqueueOnly"] = json!(false);
    body["maxWaitSeconds"] = json!(0);
    let r = s
        .request("POST", "/kernel")
        .json(&body)
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let rows = session_rows(&app).await;
    assert_eq!(rows[0].1, "RUNNING", "{rows:?}");
}
