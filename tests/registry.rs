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
