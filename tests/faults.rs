//! Faults, each on loopback and stopping by itself: etcd stopped and started again (with
//! sessions running on a real Docker agent), and a folder host whose disk fills up. After each: no lost or duplicated session, no leaked slots, every
//! session in a truthful state, the API still answering.
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
        let _ = std::process::Command::new("umount").arg(&self.0).status();
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
