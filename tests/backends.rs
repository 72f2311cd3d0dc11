//! One suite, two backends: the shared config against a real etcd and the embedded store,
//! and rate limiting against a real Redis and in-process.

mod common;

use backend_ai_manager::bus::{Ephemeral, InProcess, RedisBus};
use backend_ai_manager::config::ManagerConfig;
use backend_ai_manager::shared_config::{
    nest, EmbeddedConfig, EtcdConfig, SharedConfig, WatchEvent,
};
use backend_ai_manager::store::Store;
use common::*;
use serde_json::json;
use std::time::Duration;

async fn exercise(cfg: &dyn SharedConfig) {
    // get / put / overwrite
    assert_eq!(cfg.get("config/redis/addr").await.unwrap(), None);
    cfg.put("config/redis/addr", "127.0.0.1:6379")
        .await
        .unwrap();
    cfg.put("config/redis/addr", "127.0.0.1:6380")
        .await
        .unwrap();
    assert_eq!(
        cfg.get("config/redis/addr").await.unwrap().as_deref(),
        Some("127.0.0.1:6380")
    );

    // put_many is atomic and prefix reads nest, excluding look-alike siblings
    let pairs: Vec<(String, String)> = [
        ("volumes", "root"),
        ("volumes/_mount", "/mnt"),
        ("volumes/local/path", "/data"),
        ("volumes/local/fstype", "ext4"),
        ("volumes-extra/x", "not under volumes/"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    cfg.put_many(&pairs).await.unwrap();
    let got = cfg.get_prefix("volumes").await.unwrap();
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(
        nest("volumes", &got),
        json!({"": "root", "_mount": "/mnt", "local": {"fstype": "ext4", "path": "/data"}})
    );

    // watch sees puts and deletes below the prefix, and nothing else
    let mut w = cfg.watch("volumes", true).await.unwrap();
    cfg.put("volumes-extra/y", "ignored").await.unwrap();
    cfg.put("volumes/local/path", "/srv").await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), w.recv())
        .await
        .expect("watch event")
        .unwrap();
    assert_eq!(
        ev,
        WatchEvent::Put {
            key: "volumes/local/path".into(),
            value: "/srv".into()
        }
    );

    // delete one key, then a whole prefix (which leaves the sibling alone)
    cfg.delete("volumes/_mount").await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), w.recv())
        .await
        .expect("watch event")
        .unwrap();
    assert_eq!(
        ev,
        WatchEvent::Delete {
            key: "volumes/_mount".into()
        }
    );
    cfg.delete_prefix("volumes").await.unwrap();
    assert!(cfg.get_prefix("volumes").await.unwrap().is_empty());
    assert_eq!(
        cfg.get("volumes-extra/x").await.unwrap().as_deref(),
        Some("not under volumes/")
    );

    // a single-key watch
    let mut one = cfg.watch("manager/status", false).await.unwrap();
    cfg.put("manager/status-other", "x").await.unwrap();
    cfg.put("manager/status", "frozen").await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), one.recv())
        .await
        .expect("watch event")
        .unwrap();
    assert_eq!(
        ev,
        WatchEvent::Put {
            key: "manager/status".into(),
            value: "frozen".into()
        }
    );

    // invalid keys are refused before reaching the backend
    assert!(cfg.put("/absolute", "x").await.is_err());
    assert!(cfg.get("").await.is_err());
}

#[tokio::test]
async fn shared_config_on_real_etcd() {
    let etcd = etcd();
    let mut cfg = ManagerConfig::default();
    cfg.etcd.addr = etcd.addr.clone();
    cfg.etcd.namespace = unique_namespace();
    let backend = EtcdConfig::connect(&cfg.etcd)
        .await
        .expect("etcd reachable");
    exercise(&backend).await;
    // Keys really live under /sorna/{namespace}/ in etcd.
    let mut raw = etcd_client::Client::connect([format!("http://{}", etcd.addr)], None)
        .await
        .unwrap();
    backend.put("config/probe", "1").await.unwrap();
    let r = raw
        .get(format!("/sorna/{}/config/probe", cfg.etcd.namespace), None)
        .await
        .unwrap();
    assert_eq!(r.kvs().len(), 1);
}

#[tokio::test]
async fn shared_config_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("m.db")).unwrap();
    let backend = EmbeddedConfig::new(store.clone(), "local");
    exercise(&backend).await;
    // Namespaces are separate.
    let other = EmbeddedConfig::new(store, "other");
    assert_eq!(other.get("manager/status").await.unwrap(), None);
}

#[tokio::test]
async fn embedded_watch_sees_writes_from_another_process_handle() {
    // Two stores on one file stand for `serve` and the `etcd` CLI.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let server = EmbeddedConfig::new(Store::open(&path).unwrap(), "local");
    let cli = EmbeddedConfig::new(Store::open(&path).unwrap(), "local");
    let mut w = server.watch("manager/status", false).await.unwrap();
    cli.put("manager/status", "frozen").await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), w.recv())
        .await
        .expect("seen by polling")
        .unwrap();
    assert_eq!(
        ev,
        WatchEvent::Put {
            key: "manager/status".into(),
            value: "frozen".into()
        }
    );
}

async fn rate_limit_window(bus: &dyn Ephemeral, key: &str) {
    let t0 = 1_700_000_000_000u64;
    for i in 1..=5u64 {
        assert_eq!(bus.rate_limit_hit(key, t0 + i, 900).await.unwrap(), i);
    }
    // Another key counts separately.
    assert_eq!(
        bus.rate_limit_hit(&format!("{key}-b"), t0 + 6, 900)
            .await
            .unwrap(),
        1
    );
    // 15 minutes after the first hits, they have rolled out of the window.
    assert_eq!(
        bus.rate_limit_hit(key, t0 + 900_000 + 3, 900)
            .await
            .unwrap(),
        3
    );
}

#[tokio::test]
async fn rate_limit_window_on_real_redis() {
    let redis = redis();
    let bus = RedisBus::connect(&redis.addr, None)
        .await
        .expect("redis reachable");
    rate_limit_window(&bus, &unique_namespace()).await;
}

#[tokio::test]
async fn rate_limit_window_in_process() {
    rate_limit_window(&InProcess::default(), "AKIATEST").await;
}

#[tokio::test]
async fn server_with_etcd_and_redis_limits_requests() {
    let etcd = etcd();
    let redis = redis();
    let ns = unique_namespace();
    // The manager finds Redis through the shared config, as agents do.
    let mut cfg = ManagerConfig::default();
    cfg.etcd.addr = etcd.addr.clone();
    cfg.etcd.namespace = ns.clone();
    EtcdConfig::connect(&cfg.etcd)
        .await
        .unwrap()
        .put("config/redis/addr", &redis.addr)
        .await
        .unwrap();
    let s = TestServer::start_with(|c| {
        c.etcd.addr = etcd.addr.clone();
        c.etcd.namespace = ns.clone();
    })
    .await;
    assert!(s.app().bus.describe().contains(&redis.addr));
    assert!(s.app().shared.describe().contains("etcd"));
    s.app()
        .store
        .write(|tx| -> Result<_, backend_ai_manager::store::StoreError> {
            tx.execute(
                "UPDATE keypairs SET rate_limit = 3 WHERE access_key = ?1",
                [USER.0],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let echo = json!({"echo": "x"});
    for remaining in ["2", "1", "0"] {
        let r = s
            .request("GET", "/auth")
            .json(&echo)
            .signed(&creds(USER))
            .send()
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-remaining"), Some(remaining));
    }
    let r = s
        .request("GET", "/auth")
        .json(&echo)
        .signed(&creds(USER))
        .send()
        .await;
    r.assert_problem(429, "rate-limit-exceeded");
    // Other keypairs are not affected.
    assert_eq!(
        s.request("GET", "/auth")
            .json(&echo)
            .signed(&creds(ADMIN))
            .send()
            .await
            .status,
        200
    );
    // The manager status lives in etcd, where another manager process would see it.
    let r = s
        .request("PUT", "/manager/status")
        .json(&json!({"status": "frozen"}))
        .signed(&creds(ADMIN))
        .send()
        .await;
    assert_eq!(r.status, 204);
    let etcd_cfg = EtcdConfig::connect(&cfg.etcd).await.unwrap();
    assert_eq!(
        etcd_cfg.get("manager/status").await.unwrap().as_deref(),
        Some("frozen")
    );
    s.stop().await;
    assert_eq!(
        etcd_cfg.get("manager/status").await.unwrap().as_deref(),
        Some("terminated")
    );
}

async fn stats_expire(bus: &dyn Ephemeral, id: &str) {
    let stat = json!({"cpu_util": {"pct": "12.5"}, "mem": {"current": "1048576"}});
    assert_eq!(bus.get_stat(id).await.unwrap(), None);
    bus.put_stat(id, &stat, 1).await.unwrap();
    assert_eq!(bus.get_stat(id).await.unwrap(), Some(stat));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        bus.get_stat(id).await.unwrap(),
        None,
        "live statistics expire with their TTL"
    );
}

#[tokio::test]
async fn live_stats_expire_on_real_redis() {
    let redis = redis();
    let bus = RedisBus::connect(&redis.addr, None).await.unwrap();
    stats_expire(&bus, &unique_namespace()).await;
}

#[tokio::test]
async fn live_stats_expire_in_process() {
    stats_expire(&InProcess::default(), "kernel-1").await;
}

async fn events_reach_every_group(bus: &dyn Ephemeral, group: &str) {
    use backend_ai_manager::bus::Event;
    let mut a = bus.subscribe(group, "m1").await.unwrap();
    let mut b = bus
        .subscribe(&format!("{group}-other"), "m1")
        .await
        .unwrap();
    for i in 0..3 {
        bus.publish(&Event::new(
            "kernel_started",
            "i-agent",
            vec![json!(format!("k{i}"))],
        ))
        .await
        .unwrap();
    }
    for rx in [&mut a, &mut b] {
        for i in 0..3 {
            let d = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("event arrives")
                .unwrap();
            assert_eq!(
                d.event,
                Event::new("kernel_started", "i-agent", vec![json!(format!("k{i}"))])
            );
            bus.ack(group, &d.id).await.unwrap();
        }
    }
}

#[tokio::test]
async fn events_in_process() {
    events_reach_every_group(&InProcess::default(), "managers").await;
}

#[tokio::test]
async fn events_on_redis_streams_survive_a_consumer_restart() {
    use backend_ai_manager::bus::Event;
    let redis = redis();
    let bus = RedisBus::connect(&redis.addr, None).await.unwrap();
    let group = unique_namespace();
    events_reach_every_group(&bus, &group).await;
    // A consumer that takes an event and stops before acknowledging it gets it again.
    let mut rx = bus.subscribe(&group, "m2").await.unwrap();
    bus.publish(&Event::new(
        "kernel_terminated",
        "i-agent",
        vec![json!("k9"), json!("self-terminated")],
    ))
    .await
    .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    drop(rx);
    let mut again = bus.subscribe(&group, "m2").await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), again.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (second.id.clone(), second.event.clone()),
        (first.id, first.event)
    );
    bus.ack(&group, &second.id).await.unwrap();
    drop(again);
    // Once acknowledged, it is not delivered a third time.
    let mut third = bus.subscribe(&group, "m2").await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(2500), third.recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_registry_refusing_the_credentials_is_reported_and_keeps_its_images() {
    use backend_ai_manager::images::scan;
    let dir = tempfile::tempdir().unwrap();
    let (mut registry, port) = auth_registry(dir.path());
    let store = Store::open(&dir.path().join("m.db")).unwrap();
    let shared = EmbeddedConfig::new(store, "local");
    let key = format!("config/docker/registry/127.0.0.1%3A{port}");
    shared
        .put(&key, &format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    shared.put(&format!("{key}/username"), "bai").await.unwrap();
    shared
        .put(&format!("{key}/password"), "wrong")
        .await
        .unwrap();
    let stored = format!("images/127.0.0.1%3A{port}/team%2Fpy/1");
    shared.put(&stored, "sha256:kept").await.unwrap();

    let reports = scan::rescan(&shared, None, &Default::default(), &|_| {})
        .await
        .unwrap();
    let err = reports[0].result.clone().unwrap_err();
    assert!(err.contains("401") && err.contains("credentials"), "{err}");
    assert_eq!(
        shared.get(&stored).await.unwrap().as_deref(),
        Some("sha256:kept"),
        "stored images stay intact"
    );

    shared
        .put(&format!("{key}/password"), "s3cret")
        .await
        .unwrap();
    let reports = scan::rescan(&shared, None, &Default::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!(reports[0].result, Ok(0), "basic authentication works");
    let _ = registry.kill();
    let _ = registry.wait();
}

#[tokio::test]
async fn registry_tls_is_verified_the_right_way_round() {
    use backend_ai_manager::config::DockerRegistryConfig;
    use backend_ai_manager::images::scan;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // A test CA and a certificate for 127.0.0.1 signed by it.
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let port = free_port();
    let cfg = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\nhttp:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {d}/server.pem\n    key: {d}/server.key\n",
        d = d.display()
    );
    std::fs::write(d.join("registry.yml"), cfg).unwrap();
    let mut registry = std::process::Command::new("docker-registry")
        .args(["serve", d.join("registry.yml").to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker-registry is installed");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let store = Store::open(&d.join("m.db")).unwrap();
    let shared = EmbeddedConfig::new(store, "local");
    shared
        .put(
            &format!("config/docker/registry/127.0.0.1%3A{port}"),
            &format!("https://127.0.0.1:{port}"),
        )
        .await
        .unwrap();

    // Verification on and the CA unknown: refused.
    let r = scan::rescan(&shared, None, &DockerRegistryConfig::default(), &|_| {})
        .await
        .unwrap();
    assert!(
        r[0].result.as_ref().is_err_and(
            |e| e.to_lowercase().contains("certificate") || e.contains("error sending request")
        ),
        "{r:?}"
    );
    // The CA trusted: accepted.
    let trusted = DockerRegistryConfig {
        ssl_verify: true,
        ca_file: d.join("ca.pem"),
    };
    let r = scan::rescan(&shared, None, &trusted, &|_| {})
        .await
        .unwrap();
    assert_eq!(r[0].result, Ok(0), "{r:?}");
    // Verification off: accepted without the CA.
    let off = DockerRegistryConfig {
        ssl_verify: false,
        ca_file: Default::default(),
    };
    let r = scan::rescan(&shared, None, &off, &|_| {}).await.unwrap();
    assert_eq!(r[0].result, Ok(0), "{r:?}");
    let _ = registry.kill();
    let _ = registry.wait();
}

#[tokio::test]
async fn bearer_token_challenges_are_answered() {
    use backend_ai_manager::images::scan;
    use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
    use std::sync::Arc;
    use warp::Filter;
    // A registry double speaking the token protocol (as Docker Hub does).
    let port = Arc::new(AtomicU16::new(0));
    let token_hits = Arc::new(AtomicUsize::new(0));
    let hits = token_hits.clone();
    let token = warp::path("token")
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .and(warp::header::optional::<String>("authorization"))
        .map(
            move |q: std::collections::HashMap<String, String>, auth: Option<String>| {
                hits.fetch_add(1, Ordering::SeqCst);
                // basic bai:pw
                let ok = auth.as_deref() == Some("Basic YmFpOnB3")
                    && q.get("service").map(String::as_str) == Some("test-registry")
                    && q.get("scope").map(String::as_str) == Some("registry:catalog:*");
                let body = if ok {
                    json!({"token": "tok123"})
                } else {
                    json!({"error": "bad request"})
                };
                warp::reply::json(&body)
            },
        );
    let p = port.clone();
    let catalog = warp::path!("v2" / "_catalog").and(warp::header::optional::<String>("authorization")).map(move |auth: Option<String>| {
        if auth.as_deref() == Some("Bearer tok123") {
            warp::http::Response::builder().status(200).body(r#"{"repositories": []}"#.to_owned()).unwrap()
        } else {
            let challenge = format!(
                r#"Bearer realm="http://127.0.0.1:{}/token",service="test-registry",scope="registry:catalog:*""#,
                p.load(Ordering::SeqCst)
            );
            warp::http::Response::builder().status(401).header("www-authenticate", challenge).body(String::new()).unwrap()
        }
    });
    let (addr, server) = warp::serve(token.or(catalog)).bind_ephemeral(([127, 0, 0, 1], 0));
    port.store(addr.port(), Ordering::SeqCst);
    let server = tokio::spawn(server);

    let dir = tempfile::tempdir().unwrap();
    let shared = EmbeddedConfig::new(Store::open(&dir.path().join("m.db")).unwrap(), "local");
    let key = format!("config/docker/registry/127.0.0.1%3A{}", addr.port());
    shared.put(&key, &format!("http://{addr}")).await.unwrap();
    shared.put(&format!("{key}/username"), "bai").await.unwrap();
    shared.put(&format!("{key}/password"), "pw").await.unwrap();
    let reports = scan::rescan(&shared, None, &Default::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!(reports[0].result, Ok(0), "{reports:?}");
    assert_eq!(
        token_hits.load(Ordering::SeqCst),
        1,
        "one token for the scan"
    );
    server.abort();
}
