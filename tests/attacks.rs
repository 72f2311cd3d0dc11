//! One user trying to reach another user's session, folder and keypair through every route
//! of the table (and every legacy `/v{N}/` twin), with and without `owner_access_key`.

mod common;

use backend_ai_manager::gateway::route_table;
use backend_ai_manager::gateway::router::Access;
use common::{creds, setting, TestServer, USER};
use serde_json::json;

const MONITOR: (&str, &str) = (
    "AKIANAMONITOREXAMPLE",
    "7tuEwF1J7FfK41vOM4uSSyWCUWjPBolpVwvgkSBu",
);

#[tokio::test]
async fn no_route_reaches_another_users_session_or_folder() {
    let s = TestServer::start_with_agent(|_| {}).await;
    let r = s
        .request("POST", "/kernel")
        .json(&json!({"clientSessionToken": "victim", "image": setting("BAI_TEST_IMAGE")}))
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let r = s
        .request("POST", "/folders")
        .json(&json!({"name": "vault"}))
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json());

    let table = route_table();
    let mut tried = 0;
    for route in table.routes() {
        let full = route.full_path();
        let targets_victim = full.contains("{sess_id}") || full.contains("{name}");
        if route.access == Access::Public || !targets_victim {
            continue;
        }
        let concrete = full
            .replace("{sess_id}", "victim")
            .replace("{name}", "vault");
        let mut paths = vec![concrete.clone()];
        for v in route.versions {
            paths.push(format!("/v{v}{concrete}"));
        }
        for path in paths {
            for (suffix, allowed) in [
                ("", [404u16, 404]),
                ("?owner_access_key=AKIANABBDUSEREXAMPLE", [403, 404]),
            ] {
                let p = format!("{path}{suffix}");
                let resp = s
                    .request(route.method.as_str(), &p)
                    .json(&json!({"files": ["secret.txt"], "file": "secret.txt", "path": ".", "code": "print(1)", "mode": "query",
                                  "runId": null, "new_name": "stolen", "perm": "wd",
                                  "user_ids": ["monitor@lablup.com"]}))
                    .signed(&creds(MONITOR))
                    .send()
                    .await;
                assert!(
                    allowed.contains(&resp.status),
                    "{} {p} answered {} to another user: {}",
                    route.method,
                    resp.status,
                    String::from_utf8_lossy(&resp.body)
                );
                tried += 1;
            }
        }
    }
    assert!(tried > 40, "only {tried} attempts");

    // Nothing happened to the victim's things.
    let info = s
        .request("GET", "/kernel/victim")
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(info.status, 200);
    assert_eq!(info.json()["status"], "RUNNING");
    let f = s
        .request("GET", "/folders/vault")
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(f.json()["name"], "vault");
    let inv = s
        .request("GET", "/folders/invitations/list")
        .signed(&creds(MONITOR))
        .send()
        .await;
    assert_eq!(inv.json()["invitations"], json!([]));

    // Nor through GraphQL: the keypair list of a user shows only its own keypair, never
    // another's secret.
    let q = json!({"query": "{ keypairs { access_key secret_key } }"});
    let r = s
        .request("POST", "/admin/graphql")
        .json(&q)
        .signed(&creds(MONITOR))
        .send()
        .await;
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(!text.contains(USER.0) && !text.contains(USER.1), "{text}");
    let q = json!({"query": "{ compute_sessions { sess_id } }"});
    let r = s
        .request("POST", "/admin/graphql")
        .json(&q)
        .signed(&creds(MONITOR))
        .send()
        .await;
    assert!(!String::from_utf8_lossy(&r.body).contains("victim"));

    let d = s
        .request("DELETE", "/kernel/victim")
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(d.status, 200);
    s.stop().await;
}

/// What `docker inspect` says about a session's container, and what code inside it sees.
#[tokio::test]
async fn a_session_container_has_no_way_out() {
    let s = TestServer::start_with_agent(|_| {}).await;
    let app = s.app();
    let r = s
        .request("POST", "/kernel")
        .json(&json!({"clientSessionToken": "jail", "image": setting("BAI_TEST_IMAGE")}))
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=ai.backend.agent-id={}", app.config.agent.id),
        ])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!id.is_empty());
    let out = std::process::Command::new("docker")
        .args(["inspect", &id])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let host = &info[0]["HostConfig"];
    assert_eq!(host["Privileged"], false);
    assert_eq!(host["NetworkMode"], "none");
    assert_eq!(host["CapDrop"], json!(["ALL"]));
    assert!(
        host["SecurityOpt"]
            .to_string()
            .contains("no-new-privileges"),
        "{host}"
    );
    assert_eq!(info[0]["Config"]["User"], "1000:1000");
    // Bind mounts: only this kernel's scratch directories and the read-only runner.
    let scratch = app.config.scratch_root();
    for m in info[0]["Mounts"].as_array().unwrap() {
        let src = m["Source"].as_str().unwrap();
        assert!(
            !src.contains("docker.sock"),
            "the Docker socket is mounted: {m}"
        );
        let runner = src == setting("BAI_KRUNNER");
        assert!(
            src.starts_with(scratch.to_str().unwrap()) || runner,
            "a host path beyond its own: {m}"
        );
        if runner {
            assert_eq!(m["RW"], false, "{m}");
        }
    }
    // From inside: an unprivileged user, no socket, no network.
    // (No connection is attempted: the container's network devices are listed instead.)
    let code = "import os\nprint('uid', os.getuid(), os.path.exists('/var/run/docker.sock'), sorted(os.listdir('/sys/class/net')))";
    let run = s
        .request("POST", "/kernel/jail")
        .json(&json!({"mode": "query", "code": code, "runId": null}))
        .signed(&creds(USER))
        .send()
        .await;
    let console = run.json()["result"]["console"].to_string();
    assert!(console.contains("uid 1000 False ['lo']"), "{console}");
    let d = s
        .request("DELETE", "/kernel/jail")
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(d.status, 200);
    s.stop().await;
}
