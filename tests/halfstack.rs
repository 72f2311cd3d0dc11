//! The halfstack: one manager with real etcd and Redis, three agents as separate processes
//! on different loopback addresses (127.0.0.2–4), all running kernels in the same Docker
//! engine. Sessions spread across the agents; a killed agent's sessions are marked while
//! the others carry on, and new sessions avoid it.

mod common;

use backend_ai_manager::server::App;
use backend_ai_manager::store::StoreError;
use common::{creds, setting, TestServer, USER};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Agent {
    id: String,
    child: Child,
    _scratch: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Kernels outlive their agent; these are the test's to remove.
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=ai.backend.agent-id={}", self.id),
            ])
            .output();
        if let Ok(out) = out {
            let ids = String::from_utf8_lossy(&out.stdout).to_string();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

fn spawn_agent(host: &str, etcd: &str, ns: &str) -> Agent {
    let scratch = tempfile::tempdir().unwrap();
    let id = format!(
        "i-{}-{}",
        host.replace('.', "-"),
        uuid::Uuid::new_v4().simple()
    );
    let port = common::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_backend-ai-manager"))
        .args(["--data-dir", scratch.path().to_str().unwrap(), "agent"])
        .env_remove("BACKEND_CONFIG_FILE")
        .env("BACKEND_ETCD__ADDR", etcd)
        .env("BACKEND_ETCD__NAMESPACE", ns)
        .env("BACKEND_AGENT__ID", &id)
        .env("BACKEND_AGENT__KRUNNER_PATH", setting("BAI_KRUNNER"))
        .env("BACKEND_AGENT__RPC_LISTEN_ADDR", format!("{host}:{port}"))
        .env("BACKEND_AGENT__HEARTBEAT_INTERVAL", "0.3")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Agent {
        id,
        child,
        _scratch: scratch,
    }
}

/// `(token, status, status_info, agent)` of every session.
async fn sessions(app: &App) -> Vec<(String, String, Option<String>, Option<String>)> {
    app.store
        .read(|c| -> Result<_, StoreError> {
            let mut st = c.prepare(
                "SELECT sess_id, status, status_info, agent FROM kernels ORDER BY created_at",
            )?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
        .unwrap()
}

async fn create(s: &TestServer, token: &str) -> common::Resp {
    s.request("POST", "/kernel")
        .json(
            &json!({"clientSessionToken": token, "image": setting("BAI_TEST_IMAGE"),
                      "config": {"resources": {"cpu": "0.5", "mem": "256m"}}}),
        )
        .signed(&creds(USER))
        .send()
        .await
}

#[tokio::test]
async fn three_agents_share_the_sessions_and_one_lost_leaves_the_others_untouched() {
    let common::Halfstack {
        server: s,
        etcd,
        redis: _redis,
        ns,
    } = common::halfstack().await;
    let app = s.app();
    app.images()
        .set_resource_limit(&setting("BAI_TEST_IMAGE"), "cpu", Some("0.1"), None)
        .await
        .unwrap();
    let mut agents: Vec<Agent> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .map(|h| spawn_agent(h, &etcd.addr, &ns))
        .collect();
    s.wait_for_agents(3).await;
    let (registered, _) = app.store.agents(Some("ALIVE".into()), 10, 0).await.unwrap();
    for host in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        assert!(
            registered.iter().any(|a| a.addr.contains(host)),
            "no agent at {host}: {registered:?}"
        );
    }

    // Dispersed placement: one session on each agent.
    for i in 0..3 {
        let r = create(&s, &format!("spread{i}")).await;
        assert_eq!(r.status, 201, "{}", r.json());
        assert_eq!(r.json()["status"], "RUNNING");
    }
    let all = sessions(&app).await;
    let mut used: Vec<&str> = all.iter().filter_map(|(_, _, _, a)| a.as_deref()).collect();
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 3, "{all:?}");

    // Kill one agent outright.
    let victim = agents.remove(1);
    let victim_id = victim.id.clone();
    let mut victim = victim;
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let agent = app.store.agent(&victim_id).await.unwrap();
        if agent.is_some_and(|a| a.status == "LOST") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed agent was not marked LOST"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (t, st, info, agent) in sessions(&app).await {
        if agent.as_deref() == Some(victim_id.as_str()) {
            assert_eq!(
                (st.as_str(), info.as_deref()),
                ("ERROR", Some("agent-lost")),
                "{t}"
            );
        } else {
            assert_eq!(st, "RUNNING", "{t} on a living agent was touched");
        }
    }
    // The survivors still run code; new sessions avoid the lost agent.
    for (t, _, _, agent) in sessions(&app).await {
        if agent.as_deref() != Some(victim_id.as_str()) {
            let run = s
                .request("POST", &format!("/kernel/{t}"))
                .json(&json!({"mode": "query", "code": "print(1 + 1)", "runId": null}))
                .signed(&creds(USER))
                .send()
                .await;
            assert!(
                run.json()["result"]["console"].to_string().contains('2'),
                "{}",
                run.json()
            );
        }
    }
    for i in 0..3 {
        let r = create(&s, &format!("after{i}")).await;
        assert_eq!(r.status, 201, "{}", r.json());
    }
    for (t, _, _, agent) in sessions(&app).await {
        if t.starts_with("after") {
            assert_ne!(
                agent.as_deref(),
                Some(victim_id.as_str()),
                "{t} went to the lost agent"
            );
        }
    }
    // Everything can be closed, the lost agent's session included; no slots stay taken.
    for (t, _, _, _) in sessions(&app).await {
        let d = s
            .request("DELETE", &format!("/kernel/{t}"))
            .signed(&creds(USER))
            .send()
            .await;
        assert_eq!(d.status, 200, "{t}: {}", d.json());
    }
    let (all_agents, _) = app.store.agents(None, 10, 0).await.unwrap();
    for a in all_agents {
        let occupied =
            backend_ai_manager::registry::sessions::parse_slots(&a.occupied_slots).unwrap();
        assert!(
            occupied.iter().all(|(_, v)| v.is_zero()),
            "{}: {occupied:?}",
            a.id
        );
    }
    drop(victim);
    drop(agents);
    s.stop().await;
}
