//! The gateway against a real server: signing, versions, routing, errors, status gate,
//! configuration API and password login.

mod common;

use backend_ai_manager::signing::HashAlg;
use chrono::{Duration, Utc};
use common::*;
use serde_json::json;

#[tokio::test]
async fn hello_answers_without_auth_with_server_header() {
    let s = TestServer::start().await;
    let r = s
        .request("GET", "/")
        .without_header("X-BackendAI-Version")
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"version": "v4.20190315", "manager": "19.06.0a1"})
    );
    assert_eq!(r.header("server"), Some("BackendAI"));
}

#[tokio::test]
async fn accepts_a_correctly_signed_request_and_echoes() {
    let s = TestServer::start().await;
    let r = s
        .request("POST", "/auth")
        .json(&json!({"echo": "hi"}))
        .signed(&creds(ADMIN))
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json(), json!({"authorized": "yes", "echo": "hi"}));
    assert_eq!(r.header("x-ratelimit-limit"), Some("30000"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("29999"));
    assert_eq!(r.header("x-ratelimit-window"), Some("900"));
    // GET with a JSON body (as the client sends) and SHA-1 signing work too.
    let mut sha1 = creds(USER);
    sha1.alg = HashAlg::Sha1;
    let r = s
        .request("GET", "/auth/test")
        .json(&json!({"echo": "x"}))
        .signed(&sha1)
        .send()
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn rejects_a_signature_made_with_the_wrong_secret() {
    let s = TestServer::start().await;
    let wrong = creds((ADMIN.0, "not-the-secret-key-at-all-0000000000000"));
    let r = s
        .request("GET", "/auth")
        .json(&json!({"echo": "x"}))
        .signed(&wrong)
        .send()
        .await;
    r.assert_problem(401, "auth-failed");
}

#[tokio::test]
async fn rejects_a_signature_over_a_different_path() {
    let s = TestServer::start().await;
    // Signed for /auth/test, sent to /auth: the signature no longer covers the request.
    let signed = s
        .request("GET", "/auth/test")
        .json(&json!({"echo": "x"}))
        .signed(&creds(ADMIN));
    let mut r = s.request("GET", "/auth").json(&json!({"echo": "x"}));
    for h in ["Date", "Authorization"] {
        r = r.header(h, &signed.header_value(h));
    }
    r.send().await.assert_problem(401, "auth-failed");
}

#[tokio::test]
async fn rejects_signature_older_than_15_minutes_and_from_the_future() {
    let s = TestServer::start().await;
    for skew in [Duration::minutes(-16), Duration::minutes(16)] {
        let r = s
            .request("GET", "/auth")
            .json(&json!({"echo": "x"}))
            .signed_at(&creds(ADMIN), Utc::now() + skew)
            .send()
            .await;
        r.assert_problem(400, "invalid-auth-params");
        assert!(r.json()["title"]
            .as_str()
            .unwrap()
            .contains("Date/time sync error"));
    }
    let r = s
        .request("GET", "/auth")
        .json(&json!({"echo": "x"}))
        .signed_at(&creds(ADMIN), Utc::now() - Duration::minutes(14))
        .send()
        .await;
    assert_eq!(r.status, 200, "14 minutes old is still inside the window");
}

#[tokio::test]
async fn rejects_unknown_and_inactive_access_keys() {
    let s = TestServer::start().await;
    let r = s
        .request("GET", "/auth")
        .json(&json!({"echo": "x"}))
        .signed(&creds(("AKIAUNKNOWNKEY000000", "x")))
        .send()
        .await;
    r.assert_problem(401, "auth-failed");
    assert!(r.json()["title"]
        .as_str()
        .unwrap()
        .contains("Access key not found"));

    let echo = || {
        s.request("GET", "/auth")
            .json(&json!({"echo": "x"}))
            .signed(&creds(USER))
            .send()
    };
    // The key works (and its keypair is now cached)...
    assert_eq!(echo().await.status, 200);
    // ...bookkeeping on it (as every session start does) changes nothing...
    let app = s.app();
    common::sql(
        &app,
        &format!(
            "UPDATE keypairs SET concurrency_used = concurrency_used + 1,
                num_queries = num_queries + 1 WHERE access_key = '{}'",
            USER.0
        ),
    )
    .await;
    assert_eq!(echo().await.status, 200);
    // ...and once it is deactivated, the very next request is refused.
    common::sql(
        &app,
        &format!(
            "UPDATE keypairs SET is_active = 0 WHERE access_key = '{}'",
            USER.0
        ),
    )
    .await;
    echo().await.assert_problem(401, "auth-failed");
}

#[tokio::test]
async fn rejects_malformed_authorization_headers() {
    let s = TestServer::start().await;
    let date = Utc::now().to_rfc3339();
    let cases = [
        ("Bearer abc", "Invalid authorization type name"),
        ("BackendAI", "Malformed authorization header"),
        (
            "BackendAI signMethod=HMAC-SHA256",
            "Missing or malformed authorization parameters",
        ),
        (
            "BackendAI signMethod=HMAC-MD4, credential=AKIAIOSFODNN7EXAMPLE:00",
            "Unsupported request signing method",
        ),
    ];
    for (header, title) in cases {
        let r = s
            .request("GET", "/auth")
            .header("Date", &date)
            .header("Authorization", header)
            .send()
            .await;
        r.assert_problem(400, "invalid-auth-params");
        assert!(
            r.json()["title"].as_str().unwrap().contains(title),
            "{header}: {}",
            r.json()
        );
    }
    // A signed request without the version header cannot be verified.
    let r = s
        .request("GET", "/auth")
        .json(&json!({"echo": "x"}))
        .signed(&creds(ADMIN))
        .without_header("X-BackendAI-Version")
        .send()
        .await;
    r.assert_problem(400, "invalid-auth-params");
    assert!(r.json()["title"]
        .as_str()
        .unwrap()
        .contains("API version missing"));
    // No Authorization header at all on a protected route: 401.
    let r = s.request("GET", "/auth").header("Date", &date).send().await;
    r.assert_problem(401, "auth-failed");
}

#[tokio::test]
async fn records_last_used_and_query_counts() {
    let s = TestServer::start().await;
    for _ in 0..3 {
        let r = s
            .request("GET", "/auth")
            .json(&json!({"echo": "x"}))
            .signed(&creds(USER))
            .send()
            .await;
        assert_eq!(r.status, 200);
    }
    let app = s.app();
    app.usage.flush(&app.store).await;
    let (n, last): (i64, Option<String>) = app
        .store
        .read(|c| -> Result<_, backend_ai_manager::store::StoreError> {
            Ok(c.query_row(
                "SELECT num_queries, last_used FROM keypairs WHERE access_key = ?1",
                [USER.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(n, 3);
    assert!(last.is_some());
}

/// A session's query count goes up by one per call at once, is written with the usage
/// flush, and carries on from what was written.
#[tokio::test]
async fn counts_session_queries_in_memory_and_writes_them_with_the_flush() {
    let s = TestServer::start().await;
    let app = s.app();
    common::register_noop_image(app.shared.as_ref()).await;
    let agents = common::noop_agents(&s, 1, "4", "8g", |_| {}).await;
    let r = s
        .request("POST", "/kernel")
        .json(&common::noop_session("counted", "1"))
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let info = || async {
        let r = s
            .request("GET", "/kernel/counted")
            .signed(&creds(USER))
            .send()
            .await;
        assert_eq!(r.status, 200, "{}", r.json());
        r.json()["numQueriesExecuted"].as_i64().unwrap()
    };
    let stored = || async {
        app.store
            .read(|c| -> Result<i64, backend_ai_manager::store::StoreError> {
                Ok(c.query_row(
                    "SELECT num_queries FROM kernels WHERE sess_id = 'counted'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .await
            .unwrap()
    };
    // (The server also flushes once a second on its own; the counts agree whenever.)
    assert_eq!(info().await, 1);
    assert_eq!(info().await, 2);
    app.usage.flush(&app.store).await;
    assert_eq!(stored().await, 2);
    assert_eq!(info().await, 3);
    app.usage.flush(&app.store).await;
    app.usage.flush(&app.store).await;
    assert_eq!(stored().await, 3, "a count is written once");
    // Counted after the flush forgot it: the next count starts from the stored one.
    assert_eq!(info().await, 4);
    app.usage.flush(&app.store).await;
    assert_eq!(stored().await, 4);
    for a in agents {
        a.stop().await;
    }
    s.stop().await;
}

#[tokio::test]
async fn versions_legacy_paths_and_method_override() {
    let s = TestServer::start().await;
    let r = s
        .request("GET", "/")
        .header("X-BackendAI-Version", "v9.20990101")
        .send()
        .await;
    r.assert_problem(400, "generic-bad-request");
    assert!(r.json()["title"]
        .as_str()
        .unwrap()
        .contains("Unsupported API major version."));
    // Client 19.09 announces v4.20190615; legacy X-Sorna-Version is understood.
    assert_eq!(
        s.request("GET", "/")
            .header("X-BackendAI-Version", "v4.20190615")
            .send()
            .await
            .status,
        200
    );
    assert_eq!(
        s.request("GET", "/")
            .without_header("X-BackendAI-Version")
            .header("X-Sorna-Version", "v3.20170615")
            .send()
            .await
            .status,
        200
    );
    // /v{N}/… twins; module roots take a trailing slash.
    let r = s
        .request("POST", "/v3/auth/")
        .json(&json!({"echo": "legacy"}))
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        s.request("GET", "/v2/manager/status").send().await.status,
        200
    );
    s.request("GET", "/v2/config/resource-slots")
        .send()
        .await
        .assert_problem(404, "generic-not-found");
    // X-Method-Override: a POST carrying PUT is routed (and signed) as PUT.
    let r = s
        .request("PUT", "/manager/status")
        .json(&json!({"status": "running"}))
        .signed(&creds(ADMIN))
        .send_as("POST")
        .await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test]
async fn unknown_paths_wrong_methods_and_cors() {
    let s = TestServer::start().await;
    s.request("GET", "/no/such/path")
        .send()
        .await
        .assert_problem(404, "generic-not-found");
    s.request("DELETE", "/manager/status")
        .send()
        .await
        .assert_problem(405, "method-not-allowed");
    let r = s
        .request("OPTIONS", "/auth")
        .header("Origin", "http://ui.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization, date")
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r
        .header("access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    let r = s
        .request("GET", "/")
        .header("Origin", "http://ui.example")
        .send()
        .await;
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    // Legacy routes have no CORS.
    let r = s
        .request("GET", "/v2/manager/status")
        .header("Origin", "http://ui.example")
        .send()
        .await;
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let s = TestServer::start_with(|c| c.manager.max_body_size = 4096).await;
    let big = json!({"echo": "x".repeat(10_000)});
    let r = s
        .request("POST", "/auth")
        .json(&big)
        .signed(&creds(ADMIN))
        .send()
        .await;
    r.assert_problem(413, "generic-bad-request");
    let r = s
        .request("POST", "/auth")
        .json(&json!({"echo": "{"}))
        .signed(&creds(ADMIN))
        .send()
        .await;
    assert_eq!(r.status, 200);
    let r = s
        .request("POST", "/auth")
        .raw_body(b"{not json".to_vec(), "application/json")
        .signed(&creds(ADMIN))
        .send()
        .await;
    r.assert_problem(400, "invalid-api-params");
    assert!(r.json()["title"]
        .as_str()
        .unwrap()
        .contains("Malformed body"));
    let r = s
        .request("POST", "/auth")
        .json(&json!({"nope": 1}))
        .signed(&creds(ADMIN))
        .send()
        .await;
    r.assert_problem(400, "invalid-api-params");
}

#[tokio::test]
async fn freeze_blocks_changes_and_unfreeze_restores() {
    let s = TestServer::start().await;
    let r = s.request("GET", "/manager/status").send().await;
    assert_eq!(r.json(), json!({"status": "running", "active_sessions": 0}));
    // Users cannot freeze; admins can.
    let r = s
        .request("PUT", "/manager/status")
        .json(&json!({"status": "frozen"}))
        .signed(&creds(USER))
        .send()
        .await;
    r.assert_problem(401, "auth-failed");
    let r = s
        .request("PUT", "/manager/status")
        .json(&json!({"status": "frozen"}))
        .signed(&creds(ADMIN))
        .send()
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        s.request("GET", "/manager/status").send().await.json()["status"],
        "frozen"
    );
    assert_eq!(
        s.app()
            .check_gate(backend_ai_manager::gateway::router::Gate::All)
            .await
            .unwrap_err()
            .body()["type"],
        "https://api.backend.ai/probs/server-frozen"
    );
    assert!(s
        .app()
        .check_gate(backend_ai_manager::gateway::router::Gate::Read)
        .await
        .is_ok());
    let r = s
        .request("PUT", "/manager/status")
        .json(&json!({"status": "sleeping"}))
        .signed(&creds(ADMIN))
        .send()
        .await;
    r.assert_problem(400, "invalid-api-params");
    let r = s
        .request("PUT", "/manager/status")
        .signed(&creds(ADMIN))
        .send()
        .await;
    r.assert_problem(400, "invalid-api-params");
    let r = s
        .request("PUT", "/manager/status")
        .json(&json!({"status": "running"}))
        .signed(&creds(ADMIN))
        .send()
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        s.request("GET", "/manager/status").send().await.json()["status"],
        "running"
    );
}

#[tokio::test]
async fn config_api_is_admin_only_and_round_trips() {
    let s = TestServer::start().await;
    let r = s
        .request("POST", "/config/get")
        .json(&json!({"key": "config/x"}))
        .signed(&creds(USER))
        .send()
        .await;
    r.assert_problem(401, "auth-failed");
    let set = json!({"key": "config/docker/registry/index.docker.io", "value": {"": "https://registry-1.docker.io", "username": "lablup"}});
    let r = s
        .request("POST", "/config/set")
        .json(&set)
        .signed(&creds(ADMIN))
        .send()
        .await;
    assert_eq!(r.json(), json!({"result": "ok"}));
    let r = s
        .request("POST", "/config/get")
        .json(&json!({"key": "config/docker/registry", "prefix": true}))
        .signed(&creds(ADMIN))
        .send()
        .await;
    assert_eq!(
        r.json(),
        json!({"result": {"index.docker.io": {"": "https://registry-1.docker.io", "username": "lablup"}}})
    );
    let r = s
        .request("POST", "/config/get")
        .json(&json!({"key": "config/docker/registry/index.docker.io/username"}))
        .signed(&creds(ADMIN))
        .send()
        .await;
    assert_eq!(r.json(), json!({"result": "lablup"}));
    let r = s
        .request("POST", "/config/delete")
        .json(&json!({"key": "config/docker", "prefix": true}))
        .signed(&creds(ADMIN))
        .send()
        .await;
    assert_eq!(r.status, 200);
    let r = s
        .request("POST", "/config/get")
        .json(&json!({"key": "config/docker/registry/index.docker.io"}))
        .signed(&creds(ADMIN))
        .send()
        .await;
    assert_eq!(r.json(), json!({"result": null}));
    // More than 16 keys in one update is refused; so is a key starting with '/'.
    let many: serde_json::Map<String, serde_json::Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let r = s
        .request("POST", "/config/set")
        .json(&json!({"key": "config/many", "value": many}))
        .signed(&creds(ADMIN))
        .send()
        .await;
    r.assert_problem(400, "invalid-api-params");
    let r = s
        .request("POST", "/config/get")
        .json(&json!({"key": "/etc/passwd"}))
        .signed(&creds(ADMIN))
        .send()
        .await;
    r.assert_problem(400, "invalid-api-params");
    // Known resource slots: cpu and mem always, plus what agents registered.
    s.app()
        .shared
        .put("config/resource_slots/cuda.device", "count")
        .await
        .unwrap();
    let r = s.request("GET", "/config/resource-slots").send().await;
    assert_eq!(
        r.json(),
        json!({"cpu": "count", "mem": "bytes", "cuda.device": "count"})
    );
}

#[tokio::test]
async fn password_login_returns_the_keypair() {
    let s = TestServer::start().await;
    let body = |pw: &str| json!({"type": "keypair", "domain": "default", "username": "user@lablup.com", "password": pw});
    let r = s
        .request("POST", "/auth/authorize")
        .json(&body("C8qnIo29"))
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"data": {"access_key": USER.0, "secret_key": USER.1, "role": "user"}})
    );
    s.request("POST", "/auth/authorize")
        .json(&body("wrong"))
        .send()
        .await
        .assert_problem(401, "auth-failed");
    let r = s.request("POST", "/auth/authorize").json(&json!({"type": "keypair", "domain": "default", "username": "nobody@x", "password": "p"})).send().await;
    r.assert_problem(401, "auth-failed");
    let r = s
        .request("POST", "/auth/authorize")
        .json(&json!({"type": "jwt", "domain": "default", "username": "u", "password": "p"}))
        .send()
        .await;
    r.assert_problem(400, "invalid-api-params");
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let s = TestServer::start().await;
    s.request("GET", "/").send().await;
    let r = s.request("GET", "/metrics").send().await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    assert!(
        text.contains("backendai_http_requests_total{route=\"/\",method=\"GET\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("backendai_active_sessions 0"));
    // The server's own start-up wrote to its database.
    let counter = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .parse()
            .unwrap()
    };
    assert!(text.contains("# TYPE backendai_db_commits_total counter"));
    assert!(counter("backendai_db_commits_total") >= 1.0, "{text}");
    assert!(counter("backendai_db_writes_total") >= counter("backendai_db_commits_total"));
}
