//! Kernels in real Docker containers, driven as the agent drives them.
//!
//! Needs a Docker engine, the Python kernel image (`BAI_TEST_IMAGE`) and the static runner
//! (`BAI_KRUNNER`); `scripts/test.sh` prepares all three.

mod common;

use backend_ai_manager::agent::docker::{DockerBackend, DockerConfig, KernelBackend, KernelSpec};
use backend_ai_manager::agent::AgentError;
use backend_ai_manager::domain::ResourceSlots;
use serde_json::{json, Value};
use std::time::Duration;

fn setting(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the README's test command (scripts/test.sh), which starts Docker, builds the kernel image and the static runner, and sets it")
    })
}

struct Agent {
    backend: DockerBackend,
    _scratch: tempfile::TempDir,
}

fn config(agent_id: &str, scratch: &std::path::Path) -> DockerConfig {
    DockerConfig {
        agent_id: agent_id.to_owned(),
        scratch_root: scratch.to_owned(),
        krunner_path: setting("BAI_KRUNNER").into(),
        network_mode: "none".into(),
        kernel_uid: 1000,
        kernel_gid: 1000,
        pids_limit: 256,
        exec_timeout: 0,
        docker_host: String::new(),
    }
}

async fn agent() -> Agent {
    let scratch = tempfile::tempdir().unwrap();
    let id = format!("i-test-{}", uuid::Uuid::new_v4().simple());
    let backend = DockerBackend::connect(config(&id, scratch.path()))
        .await
        .expect("Docker answers");
    Agent {
        backend,
        _scratch: scratch,
    }
}

fn spec(mem: &str) -> KernelSpec {
    KernelSpec {
        image: setting("BAI_TEST_IMAGE"),
        slots: ResourceSlots::from_json(&json!({"cpu": "1", "mem": mem})).unwrap(),
        environ: [("GREETING".to_owned(), "hi".to_owned())]
            .into_iter()
            .collect(),
        mounts: Vec::new(),
    }
}

/// What the manager asks an agent to create over the RPC: the test image with `slots`.
fn creation(
    slots: Value,
    environ: &[(&str, &str)],
    idle_timeout: u64,
) -> backend_ai_manager::domain::KernelCreation {
    backend_ai_manager::domain::KernelCreation {
        spec: KernelSpec {
            image: setting("BAI_TEST_IMAGE"),
            slots: ResourceSlots::from_json(&slots).unwrap(),
            environ: environ
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            mounts: Vec::new(),
        },
        registry: Default::default(),
        idle_timeout: Duration::from_secs(idle_timeout),
    }
}

async fn new_kernel(a: &Agent, mem: &str) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    a.backend
        .create_kernel(&id, &spec(mem))
        .await
        .expect("kernel starts");
    id
}

/// Runs to the end (following `continued` results); returns stdout, stderr, exit code.
async fn run(
    a: &Agent,
    id: &str,
    mode: &str,
    code: &str,
    opts: Value,
) -> (String, String, i64, String) {
    let mut r = a
        .backend
        .execute(id, None, mode, code, &opts, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    loop {
        for (kind, data) in &r.console {
            let s = data.as_str().unwrap_or_default();
            if kind == "stdout" {
                out.push_str(s)
            } else if kind == "stderr" {
                err.push_str(s)
            }
        }
        if r.status == "finished" || r.status == "exec-timeout" || r.status == "waiting-input" {
            return (out, err, r.exit_code.unwrap_or(-1), r.status);
        }
        r = a
            .backend
            .execute(
                id,
                Some(r.run_id.clone()),
                "continue",
                "",
                &json!({}),
                Some(Duration::from_secs(30)),
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn query_mode_keeps_state_orders_output_and_takes_input() {
    let a = agent().await;
    let k = new_kernel(&a, "256m").await;
    assert_eq!(run(&a, &k, "query", "x = 41", json!({})).await.2, 0);
    assert_eq!(
        run(&a, &k, "query", "print(x + 1)", json!({})).await.0,
        "42\n"
    );
    let r = a
        .backend
        .execute(
            &k,
            None,
            "query",
            "import sys\nprint('a')\nprint('b', file=sys.stderr)\nprint('c')",
            &json!({}),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(r.status, "finished");
    assert_eq!(
        r.console,
        vec![
            ("stdout".into(), json!("a\n")),
            ("stderr".into(), json!("b\n")),
            ("stdout".into(), json!("c\n"))
        ]
    );
    // input(): waiting-input, then mode=input with the text.
    let r = a
        .backend
        .execute(
            &k,
            None,
            "query",
            "print('hello', input('name? '))",
            &json!({}),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(r.status, "waiting-input");
    assert_eq!(r.options, Some(json!({"is_password": false})));
    let r = a
        .backend
        .execute(
            &k,
            Some(r.run_id),
            "input",
            "Lablup",
            &json!({}),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            r.status.as_str(),
            r.console.last().unwrap().1.as_str().unwrap()
        ),
        ("finished", "hello Lablup\n")
    );
    // The environment, the user and the sandbox.
    let (out, _, _, _) = run(&a, &k, "query", "import os\nprint(os.environ['GREETING'], os.getuid(), os.getcwd(), sorted(os.listdir('/sys/class/net')), os.path.exists('/var/run/docker.sock'))", json!({})).await;
    assert_eq!(out, "hi 1000 /home/work ['lo'] False\n");
    a.backend.destroy_kernel(&k).await.unwrap();
}

#[tokio::test]
async fn interrupting_an_endless_loop_leaves_the_kernel_usable() {
    let a = agent().await;
    let k = new_kernel(&a, "256m").await;
    run(&a, &k, "query", "kept = 'yes'", json!({})).await;
    let r = a
        .backend
        .execute(
            &k,
            None,
            "query",
            "while True: pass",
            &json!({}),
            Some(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    assert_eq!(r.status, "continued");
    a.backend.interrupt(&k).await.unwrap();
    let r = a
        .backend
        .execute(
            &k,
            Some(r.run_id),
            "continue",
            "",
            &json!({}),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(r.status, "finished");
    assert!(r
        .console
        .iter()
        .any(|(k, v)| k == "stderr" && v.as_str().unwrap().contains("KeyboardInterrupt")));
    assert_eq!(
        run(&a, &k, "query", "print(kept)", json!({})).await.0,
        "yes\n"
    );
    a.backend.destroy_kernel(&k).await.unwrap();
}

#[tokio::test]
async fn batch_mode_and_files_round_trip() {
    let a = agent().await;
    let k = new_kernel(&a, "256m").await;
    let program =
        b"import sys\nprint(open('data/input.txt').read().upper(), end='')\nsys.exit(7)\n";
    a.backend.upload_file(&k, "main.py", program).await.unwrap();
    a.backend
        .upload_file(&k, "data/input.txt", b"uploaded\n")
        .await
        .unwrap();
    let opts = json!({"clean": "", "build": "echo built > build.log", "exec": "*"});
    let mut r = a
        .backend
        .execute(&k, None, "batch", "", &opts, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    let mut statuses = vec![(r.status.clone(), r.exit_code)];
    while r.status != "finished" {
        r = a
            .backend
            .execute(
                &k,
                Some(r.run_id.clone()),
                "continue",
                "",
                &json!({}),
                Some(Duration::from_secs(30)),
            )
            .await
            .unwrap();
        statuses.push((r.status.clone(), r.exit_code));
    }
    assert_eq!(
        statuses,
        [
            ("clean-finished".into(), Some(0)),
            ("build-finished".into(), Some(0)),
            ("finished".into(), Some(7))
        ]
    );
    assert_eq!(r.console, vec![("stdout".into(), json!("UPLOADED\n"))]);
    // Files written in the container come back byte for byte; listing is the original's shape.
    assert_eq!(
        a.backend.download_file(&k, "build.log").await.unwrap(),
        b"built\n"
    );
    let blob: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    a.backend.upload_file(&k, "bin/blob", &blob).await.unwrap();
    assert_eq!(a.backend.download_file(&k, "bin/blob").await.unwrap(), blob);
    let listing = a.backend.list_files(&k, ".").await.unwrap();
    let files: Vec<Value> = serde_json::from_str(listing["files"].as_str().unwrap()).unwrap();
    let names: Vec<&str> = files
        .iter()
        .map(|f| f["filename"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"main.py") && names.contains(&"build.log") && names.contains(&"data"),
        "{names:?}"
    );
    // Escapes are refused, including a symlink the kernel's user plants.
    assert!(matches!(
        a.backend.upload_file(&k, "../escape", b"x").await,
        Err(AgentError::InvalidInput(_))
    ));
    assert!(matches!(
        a.backend.download_file(&k, "/etc/passwd").await,
        Err(AgentError::InvalidInput(_))
    ));
    run(
        &a,
        &k,
        "query",
        "import os; os.symlink('/etc', 'etc-link')",
        json!({}),
    )
    .await;
    assert!(matches!(
        a.backend.download_file(&k, "etc-link/hostname").await,
        Err(AgentError::InvalidInput(_))
    ));
    assert!(a
        .backend
        .upload_file(&k, "big", &vec![0u8; 2 << 20])
        .await
        .is_err());
    a.backend.destroy_kernel(&k).await.unwrap();
}

#[tokio::test]
async fn the_memory_limit_is_enforced_and_reported() {
    let a = agent().await;
    let k = new_kernel(&a, "96m").await;
    let (_, err, code, status) = run(
        &a,
        &k,
        "query",
        "blocks = [bytearray(16 << 20) for _ in range(64)]",
        json!({}),
    )
    .await;
    assert_eq!((status.as_str(), code), ("finished", 137), "{err}");
    assert!(err.contains("killed by signal 9"), "{err}");
    // The kernel survives with a fresh interpreter.
    assert_eq!(
        run(&a, &k, "query", "print('still here')", json!({}))
            .await
            .0,
        "still here\n"
    );
    a.backend.destroy_kernel(&k).await.unwrap();
}

#[tokio::test]
async fn a_restarted_agent_recovers_its_kernels() {
    let scratch = tempfile::tempdir().unwrap();
    let agent_id = format!("i-test-{}", uuid::Uuid::new_v4().simple());
    let first = DockerBackend::connect(config(&agent_id, scratch.path()))
        .await
        .unwrap();
    let k = uuid::Uuid::new_v4().to_string();
    first.create_kernel(&k, &spec("256m")).await.unwrap();
    first
        .execute(
            &k,
            None,
            "query",
            "survivor = 42",
            &json!({}),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    drop(first);
    let second = DockerBackend::connect(config(&agent_id, scratch.path()))
        .await
        .unwrap();
    let (recovered, ended) = second.recover().await.unwrap();
    assert_eq!((recovered, ended), (vec![k.clone()], vec![]));
    let r = second
        .execute(
            &k,
            None,
            "query",
            "print(survivor)",
            &json!({}),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(r.console, vec![("stdout".into(), json!("42\n"))]);
    second.destroy_kernel(&k).await.unwrap();
    assert!(
        !scratch.path().join(&k).exists(),
        "scratch directories are removed"
    );
    assert!(matches!(
        second
            .execute(&k, None, "query", "1", &json!({}), None)
            .await,
        Err(AgentError::NotFound(_))
    ));
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let a = agent().await;
    assert!(matches!(
        a.backend.create_kernel("../../etc", &spec("256m")).await,
        Err(AgentError::InvalidInput(_))
    ));
    let mut s = spec("256m");
    s.image = "127.0.0.1:5000/no/such-image:1".into();
    let err = a
        .backend
        .create_kernel(&uuid::Uuid::new_v4().to_string(), &s)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AgentError::InvalidInput(ref m) if m.contains("cannot pull")),
        "{err}"
    );
    let k = new_kernel(&a, "256m").await;
    let err = a
        .backend
        .execute(&k, Some("nope".into()), "continue", "", &json!({}), None)
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::InvalidInput(_)), "{err}");
    let err = a
        .backend
        .execute(&k, None, "dance", "", &json!({}), None)
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::InvalidInput(_)), "{err}");
    a.backend.destroy_kernel(&k).await.unwrap();
}

#[tokio::test]
async fn mock_gpus_are_allocated_and_released_without_leaks_under_concurrent_creates() {
    use backend_ai_manager::agent::resources::{DeviceAllocMap, DeviceSource};
    let scratch = tempfile::tempdir().unwrap();
    let map = std::sync::Arc::new(DeviceAllocMap::new(DeviceSource::Mock(3)));
    let cfg = config(
        &format!("i-test-{}", uuid::Uuid::new_v4().simple()),
        scratch.path(),
    );
    let backend = std::sync::Arc::new(
        DockerBackend::connect(cfg)
            .await
            .unwrap()
            .with_devices(map.clone()),
    );
    let mut gpu_spec = spec("128m");
    gpu_spec
        .slots
        .set("cuda.device", rust_decimal::Decimal::ONE);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (b, s) = (backend.clone(), gpu_spec.clone());
            tokio::spawn(async move {
                let id = uuid::Uuid::new_v4().to_string();
                b.create_kernel(&id, &s).await.map(|_| id)
            })
        })
        .collect();
    let mut created = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(id) => created.push(id),
            Err(AgentError::InvalidInput(m)) if m.contains("insufficient cuda.device") => {
                refused += 1
            }
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!((created.len(), refused, map.free()), (3, 5, 0));
    // Each kernel sees only its own device.
    let mut seen = Vec::new();
    for k in &created {
        let r = backend
            .execute(
                k,
                None,
                "query",
                "import os; print(os.environ['BACKENDAI_MOCK_CUDA_DEVICES'])",
                &json!({}),
                Some(Duration::from_secs(30)),
            )
            .await
            .unwrap();
        seen.push(r.console[0].1.as_str().unwrap().trim().to_owned());
    }
    seen.sort();
    assert_eq!(seen, ["mock0", "mock1", "mock2"]);
    for k in &created {
        backend.destroy_kernel(k).await.unwrap();
    }
    assert_eq!(map.free(), 3, "every device is back");
    // Without devices, a GPU request is a clear refusal.
    let plain = agent().await;
    let err = plain
        .backend
        .create_kernel(&uuid::Uuid::new_v4().to_string(), &gpu_spec)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AgentError::InvalidInput(ref m) if m.contains("no cuda.device")),
        "{err}"
    );
}

/// What an agent daemon test needs: an in-process bus with a subscriber, a backend on a
/// fresh scratch root, and an identity.
struct Fixture {
    bus: std::sync::Arc<dyn backend_ai_manager::bus::Ephemeral>,
    events: tokio::sync::mpsc::Receiver<backend_ai_manager::bus::Delivery>,
    _scratch: tempfile::TempDir,
    backend: std::sync::Arc<DockerBackend>,
    identity: backend_ai_manager::agent::daemon::AgentIdentity,
}

async fn fixture() -> Fixture {
    use backend_ai_manager::bus::{Ephemeral, InProcess};
    let bus: std::sync::Arc<dyn Ephemeral> = std::sync::Arc::new(InProcess::default());
    let events = bus.subscribe("managers", "m").await.unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let agent_id = format!("i-test-{}", uuid::Uuid::new_v4().simple());
    let backend = std::sync::Arc::new(
        DockerBackend::connect(config(&agent_id, scratch.path()))
            .await
            .unwrap(),
    );
    let identity = backend_ai_manager::agent::daemon::AgentIdentity {
        id: agent_id,
        region: "local".into(),
        addr: String::new(),
        version: "test".into(),
    };
    Fixture {
        bus,
        events,
        _scratch: scratch,
        backend,
        identity,
    }
}

/// The next event named `name` (others, such as heartbeats, are skipped).
async fn next_event(
    rx: &mut tokio::sync::mpsc::Receiver<backend_ai_manager::bus::Delivery>,
    name: &str,
) -> backend_ai_manager::bus::Event {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let d = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {name} event"))
            .unwrap();
        if d.event.name == name {
            return d.event;
        }
    }
}

#[tokio::test]
async fn the_daemon_heartbeats_reports_stats_and_kernel_ends() {
    use backend_ai_manager::agent::daemon::{AgentDaemon, AgentIdentity};
    use backend_ai_manager::bus::{Ephemeral, InProcess};
    let bus: std::sync::Arc<dyn Ephemeral> = std::sync::Arc::new(InProcess::default());
    let mut events = bus.subscribe("managers", "m").await.unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let agent_id = format!("i-test-{}", uuid::Uuid::new_v4().simple());
    let backend = std::sync::Arc::new(
        DockerBackend::connect(config(&agent_id, scratch.path()))
            .await
            .unwrap(),
    );
    let identity = AgentIdentity {
        id: agent_id.clone(),
        region: "local".into(),
        addr: "tcp://127.0.0.1:6001".into(),
        version: "test".into(),
    };
    let slots = backend_ai_manager::agent::resources::host_slots(0, 0);
    let daemon = AgentDaemon::new(backend.clone(), bus.clone(), identity, slots)
        .with_intervals(Duration::from_millis(200), Duration::from_millis(300));
    let running = daemon.start().await.unwrap();
    let started = next_event(&mut events, "instance_started").await;
    assert_eq!(started.agent_id, agent_id);

    let k = uuid::Uuid::new_v4().to_string();
    backend.create_kernel(&k, &spec("128m")).await.unwrap();
    // Heartbeats carry slots, images and the running kernels.
    let hb = loop {
        let hb = next_event(&mut events, "instance_heartbeat").await;
        if hb.args[0]["kernels"]
            .as_array()
            .is_some_and(|ks| !ks.is_empty())
        {
            break hb;
        }
    };
    assert_eq!(hb.args[0]["kernels"], json!([k]));
    assert_eq!(hb.args[0]["addr"], "tcp://127.0.0.1:6001");
    assert_eq!(hb.args[0]["resource_slots"]["mem"][0], "bytes");
    assert!(
        hb.args[0]["images"].to_string().contains("lablup/python"),
        "{}",
        hb.args[0]["images"]
    );
    // Live statistics appear in the stats store.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let stat = loop {
        if let Some(s) = bus.get_stat(&k).await.unwrap() {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "no live statistics");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        stat["mem"]["current"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0,
        "{stat}"
    );
    assert_eq!(stat["mem"]["capacity"], (128u64 << 20).to_string());
    assert!(
        bus.get_stat(&agent_id).await.unwrap().is_some(),
        "node statistics too"
    );

    // A requested destroy: last statistics returned and in the event.
    let last = running.daemon.destroy_kernel(&k).await.unwrap();
    assert!(last.is_some());
    let ev = next_event(&mut events, "kernel_terminated").await;
    assert_eq!(
        (ev.args[0].clone(), ev.args[1].clone()),
        (json!(k), json!("user-requested"))
    );
    assert!(ev.args[3]["mem"].is_object(), "{ev:?}");

    // A kernel killed behind the agent's back is reported as such and cleaned up.
    let k2 = uuid::Uuid::new_v4().to_string();
    let info = backend.create_kernel(&k2, &spec("128m")).await.unwrap();
    let killed = std::process::Command::new("docker")
        .args(["kill", &info.container_id])
        .output()
        .unwrap();
    assert!(killed.status.success());
    let ev = next_event(&mut events, "kernel_terminated").await;
    assert_eq!(
        (ev.args[0].clone(), ev.args[1].clone(), ev.args[2].clone()),
        (json!(k2), json!("killed"), json!(137))
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while backend.kernel_ids().await.contains(&k2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ended kernel is cleaned up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await;
    assert_eq!(
        next_event(&mut events, "instance_terminated").await.args,
        vec![json!("shutdown")]
    );
}

#[tokio::test]
async fn the_agent_rpc_drives_kernels_end_to_end() {
    use backend_ai_manager::agent::daemon::AgentDaemon;
    use backend_ai_manager::rpc::client::{AgentClient, Execute};
    let Fixture {
        bus,
        mut events,
        _scratch,
        backend,
        identity,
    } = fixture().await;
    let running = AgentDaemon::new(
        backend,
        bus.clone(),
        identity,
        backend_ai_manager::agent::resources::host_slots(0, 0),
    )
    .start()
    .await
    .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stop_rx.await;
    };
    let (addr, server) = backend_ai_manager::agent::rpc_server::serve(
        running.daemon.clone(),
        "127.0.0.1:0".parse().unwrap(),
        Some("s3cret".into()),
        shutdown,
    )
    .await
    .unwrap();
    let client = AgentClient::connect(&format!("tcp://{addr}"), Some("s3cret".into()))
        .await
        .unwrap();
    assert_eq!(client.ping("hello").await.unwrap(), "hello");

    let k = uuid::Uuid::new_v4().to_string();
    let cfg = creation(json!({"cpu": "1", "mem": "128m"}), &[("A", "1")], 0);
    let created = client.create_kernel(&k, &cfg).await.unwrap();
    assert_eq!(created.id, k);
    assert_eq!(
        created.service_ports,
        [
            backend_ai_manager::domain::ServicePort {
                name: "jupyter".into(),
                protocol: "http".into(),
                container_port: 8888
            },
            backend_ai_manager::domain::ServicePort {
                name: "http".into(),
                protocol: "http".into(),
                container_port: 8080
            }
        ]
    );

    // Streaming execute: every result until the end.
    let results = client
        .execute(
            &k,
            &Execute {
                run_id: None,
                mode: "query",
                code: "import os, time\nx = 41\nprint(x + 1, os.environ['A'])",
                opts: &json!({}),
                flush_timeout: Some(Duration::from_millis(200)),
                follow: true,
            },
        )
        .await
        .unwrap();
    let last = AgentClient::exec_result(results.last().unwrap()).unwrap();
    assert_eq!(last.status, "finished");
    let out: String = results
        .iter()
        .filter_map(AgentClient::exec_result)
        .flat_map(|r| r.console)
        .map(|(_, v)| v.as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(out, "42 1\n");
    // One-shot execute: a slow run answers `continued`, then `continue` picks it up.
    let first = client
        .execute(
            &k,
            &Execute {
                run_id: None,
                mode: "query",
                code: "time.sleep(1); print('slow')",
                opts: &json!({}),
                flush_timeout: Some(Duration::from_millis(100)),
                follow: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let first = AgentClient::exec_result(&first[0]).unwrap();
    assert_eq!(first.status, "continued");
    let rest = client
        .execute(
            &k,
            &Execute {
                run_id: Some(first.run_id),
                mode: "continue",
                code: "",
                opts: &json!({}),
                flush_timeout: Some(Duration::from_secs(10)),
                follow: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        AgentClient::exec_result(&rest[0]).unwrap().console,
        vec![("stdout".into(), json!("slow\n"))]
    );

    // Files, logs, completion, service.
    client
        .upload_file(&k, "notes/a.txt", b"rpc bytes".to_vec())
        .await
        .unwrap();
    assert_eq!(
        client.download_file(&k, "notes/a.txt").await.unwrap(),
        b"rpc bytes"
    );
    assert!(client.list_files(&k, "notes").await.unwrap()["files"]
        .as_str()
        .unwrap()
        .contains("a.txt"));
    assert!(matches!(
        client.download_file(&k, "../x").await,
        Err(AgentError::InvalidInput(_))
    ));
    assert!(client.get_logs(&k).await.unwrap().contains("listening"));
    assert_eq!(
        client
            .get_completions(&k, "os.getc", &json!({}))
            .await
            .unwrap(),
        vec!["os.getcwd()", "os.getcwdb()"]
    );
    assert_eq!(
        client.start_service(&k, "http").await.unwrap()["status"],
        "started"
    );
    client.refresh_idle(&k).await.unwrap();

    // Restart: same kernel and files, a fresh interpreter.
    client.restart_kernel(&k).await.unwrap();
    assert_eq!(
        client.download_file(&k, "notes/a.txt").await.unwrap(),
        b"rpc bytes"
    );
    let r = client
        .execute(
            &k,
            &Execute {
                run_id: None,
                mode: "query",
                code: "print(x)",
                opts: &json!({}),
                flush_timeout: Some(Duration::from_secs(10)),
                follow: true,
            },
        )
        .await
        .unwrap();
    assert!(r.last().unwrap().to_string().contains("NameError"));
    assert!(matches!(
        client
            .interrupt_kernel("00000000-0000-0000-0000-000000000000")
            .await,
        Err(AgentError::NotFound(_))
    ));

    let last = client.destroy_kernel(&k, "user-requested").await.unwrap();
    assert!(last.is_some_and(|s| s["mem"].is_object()));
    let ev = next_event(&mut events, "kernel_terminated").await;
    assert_eq!(
        (ev.args[0].clone(), ev.args[1].clone()),
        (json!(k), json!("user-requested"))
    );

    // Kernels idle past their idle_timeout are destroyed.
    let idle = uuid::Uuid::new_v4().to_string();
    let mut idle_cfg = cfg.clone();
    idle_cfg.idle_timeout = Duration::from_secs(1);
    client.create_kernel(&idle, &idle_cfg).await.unwrap();
    let ev = next_event(&mut events, "kernel_terminated").await;
    assert_eq!(
        (ev.args[0].clone(), ev.args[1].clone()),
        (json!(idle), json!("idle-timeout"))
    );

    // The token is checked; beyond loopback one is required.
    let intruder = AgentClient::connect(&format!("tcp://{addr}"), Some("guess".into()))
        .await
        .unwrap();
    assert!(
        matches!(intruder.ping("x").await, Err(AgentError::Failure(ref m)) if m.contains("token"))
    );
    let anonymous = AgentClient::connect(&format!("tcp://{addr}"), None)
        .await
        .unwrap();
    assert!(anonymous.ping("x").await.is_err());
    let open = backend_ai_manager::agent::rpc_server::serve(
        running.daemon.clone(),
        "0.0.0.0:0".parse().unwrap(),
        None,
        async {},
    )
    .await;
    assert!(matches!(open, Err(AgentError::InvalidInput(ref m)) if m.contains("rpc-token")));

    let _ = stop_tx.send(());
    server.await.unwrap();
    running.stop().await;
}

/// Runs the docker CLI (with `input` on stdin) and asserts it succeeded.
fn docker_cli(args: &[&str], input: Option<&str>) {
    use std::io::Write;
    let mut child = std::process::Command::new("docker")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deletes `image` (`127.0.0.1:5000/repo:tag`) from the local test registry, so test
/// tags do not pile up there.
async fn delete_from_registry(image: &str) {
    let r = backend_ai_manager::images::ImageRef::parse(image).unwrap();
    let client = reqwest::Client::new();
    let manifest = format!("http://{}/v2/{}/manifests/{}", r.registry, r.name, r.tag);
    let head = client
        .head(&manifest)
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap();
    let digest = head
        .headers()
        .get("docker-content-digest")
        .and_then(|d| d.to_str().ok())
        .map(str::to_owned);
    if let Some(digest) = digest {
        let url = format!("http://{}/v2/{}/manifests/{digest}", r.registry, r.name);
        let deleted = client.delete(&url).send().await.unwrap();
        assert!(
            deleted.status().is_success(),
            "registry delete: {}",
            deleted.status()
        );
    }
}

/// A child process that is killed when dropped, so a failing test leaves nothing running.
struct Spawned(Option<std::process::Child>);

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts the binary with `args`, waits for `port`, returns the child.
fn spawn_binary(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, String)],
    port: u16,
) -> Spawned {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_backend-ai-manager"));
    cmd.arg("--data-dir")
        .arg(dir)
        .args(args)
        .current_dir(dir)
        .env_remove("BACKEND_CONFIG_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = Spawned(Some(
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{args:?} did not listen on {port}"
        );
        let running = child
            .0
            .as_mut()
            .map(|c| c.try_wait().unwrap().is_none())
            .unwrap_or(false);
        assert!(running, "{args:?} exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn drive_over_rpc(port: u16) {
    use backend_ai_manager::rpc::client::{AgentClient, Execute};
    let client = AgentClient::connect(&format!("tcp://127.0.0.1:{port}"), None)
        .await
        .unwrap();
    let k = uuid::Uuid::new_v4().to_string();
    let cfg = creation(json!({"cpu": "1", "mem": "128m"}), &[], 0);
    client.create_kernel(&k, &cfg).await.unwrap();
    let call = Execute {
        run_id: None,
        mode: "query",
        code: "print(6 * 7)",
        opts: &json!({}),
        flush_timeout: Some(Duration::from_secs(10)),
        follow: true,
    };
    let results = client.execute(&k, &call).await.unwrap();
    assert!(
        results.last().unwrap()["console"]
            .to_string()
            .contains("42"),
        "{results:?}"
    );
    assert!(client
        .destroy_kernel(&k, "user-requested")
        .await
        .unwrap()
        .is_some());
}

/// SIGTERM, then waits (off the async runtime, so the test's own connections can close).
async fn sigterm_and_wait(mut spawned: Spawned) {
    let mut child = spawned.0.take().expect("a running child");
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "SIGTERM ends it cleanly");
}

#[tokio::test]
async fn serve_embeds_an_agent_and_the_agent_command_runs_one_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (api, rpc) = (free_port(), free_port());
    let env = vec![
        ("BACKEND_AGENT__KRUNNER_PATH", setting("BAI_KRUNNER")),
        ("BACKEND_AGENT__RPC_LISTEN_ADDR", format!("127.0.0.1:{rpc}")),
        (
            "BACKEND_AGENT__ID",
            format!("i-serve-{}", uuid::Uuid::new_v4().simple()),
        ),
    ];
    let serve = spawn_binary(
        dir.path(),
        &["serve", "--service-addr", &format!("127.0.0.1:{api}")],
        &env,
        rpc,
    );
    drive_over_rpc(rpc).await;
    sigterm_and_wait(serve).await;

    let dir = tempfile::tempdir().unwrap();
    let rpc = free_port();
    let env = vec![
        ("BACKEND_AGENT__KRUNNER_PATH", setting("BAI_KRUNNER")),
        ("BACKEND_AGENT__RPC_LISTEN_ADDR", format!("127.0.0.1:{rpc}")),
        (
            "BACKEND_AGENT__ID",
            format!("i-alone-{}", uuid::Uuid::new_v4().simple()),
        ),
    ];
    let agent = spawn_binary(
        dir.path(),
        &["agent", "--mock-cuda-devices", "2"],
        &env,
        rpc,
    );
    drive_over_rpc(rpc).await;

    // kill -9 the agent with a kernel running; a new agent process recovers it.
    use backend_ai_manager::rpc::client::{AgentClient, Execute};
    let client = AgentClient::connect(&format!("tcp://127.0.0.1:{rpc}"), None)
        .await
        .unwrap();
    let k = uuid::Uuid::new_v4().to_string();
    let cfg = creation(
        json!({"cpu": "1", "mem": "128m", "cuda.device": "1"}),
        &[],
        0,
    );
    client.create_kernel(&k, &cfg).await.unwrap();
    client
        .upload_file(&k, "kept.txt", b"before the crash".to_vec())
        .await
        .unwrap();
    drop(client);
    // kill -9: the guard's drop kills and reaps it.
    tokio::task::spawn_blocking(move || drop(agent))
        .await
        .unwrap();
    let agent = spawn_binary(
        dir.path(),
        &["agent", "--mock-cuda-devices", "2"],
        &env,
        rpc,
    );
    let client = AgentClient::connect(&format!("tcp://127.0.0.1:{rpc}"), None)
        .await
        .unwrap();
    assert_eq!(
        client.download_file(&k, "kept.txt").await.unwrap(),
        b"before the crash"
    );
    let call = Execute {
        run_id: None,
        mode: "query",
        code: "import os; print(os.environ['BACKENDAI_MOCK_CUDA_DEVICES'])",
        opts: &json!({}),
        flush_timeout: Some(Duration::from_secs(10)),
        follow: true,
    };
    let r = client.execute(&k, &call).await.unwrap();
    assert!(
        r.last().unwrap()["console"].to_string().contains("mock0"),
        "{r:?}"
    );
    // Its device is still held: a kernel asking for two finds only one free.
    let two = creation(json!({"cuda.device": "2"}), &[], 0);
    let err = client
        .create_kernel(&uuid::Uuid::new_v4().to_string(), &two)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("insufficient cuda.device"),
        "{err}"
    );
    client.destroy_kernel(&k, "user-requested").await.unwrap();
    drop(client);
    sigterm_and_wait(agent).await;
}

#[tokio::test]
async fn creation_is_announced_step_by_step_and_a_missing_image_is_pulled() {
    use backend_ai_manager::agent::daemon::AgentDaemon;
    // The engine lacks this reference; the local registry has it.
    let image = format!(
        "127.0.0.1:5000/test/pull-{}:1",
        uuid::Uuid::new_v4().simple()
    );
    docker_cli(&["tag", &setting("BAI_TEST_IMAGE"), &image], None);
    docker_cli(&["push", "--quiet", &image], None);
    docker_cli(&["rmi", &image], None);

    let Fixture {
        bus,
        mut events,
        _scratch,
        backend,
        identity,
    } = fixture().await;
    let daemon = AgentDaemon::new(
        backend.clone(),
        bus.clone(),
        identity,
        backend_ai_manager::agent::resources::host_slots(0, 0),
    );
    let k = uuid::Uuid::new_v4().to_string();
    let mut s = spec("128m");
    s.image = image.clone();
    daemon
        .create_kernel(&k, &s, Duration::ZERO, None)
        .await
        .unwrap();
    let mut names = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
        names.push(d.event.name.clone());
        if d.event.name == "kernel_pulling" {
            assert_eq!(d.event.args[..2], [json!(k), json!(image)]);
        }
    }
    names.dedup();
    assert_eq!(
        names,
        [
            "kernel_preparing",
            "kernel_pulling",
            "kernel_creating",
            "kernel_started"
        ]
    );
    let r = backend
        .execute(
            &k,
            None,
            "query",
            "print('pulled and running')",
            &json!({}),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(
        r.console,
        vec![("stdout".into(), json!("pulled and running\n"))]
    );
    backend.destroy_kernel(&k).await.unwrap();
    docker_cli(&["rmi", &image], None);
    delete_from_registry(&image).await;
}

#[tokio::test]
async fn kernel_images_on_the_local_engine_are_known_and_installed() {
    use backend_ai_manager::images::{local_engine, Catalog};
    use backend_ai_manager::shared_config::EmbeddedConfig;
    let dir = tempfile::tempdir().unwrap();
    let store = backend_ai_manager::store::Store::open(&dir.path().join("m.db")).unwrap();
    let shared = EmbeddedConfig::new(store, "local");
    let docker = local_engine("").await.expect("Docker answers");
    let catalog = Catalog {
        shared: &shared,
        docker: Some(&docker),
    };
    // No registry scan at all: the engine's kernel image is there, installed, with labels.
    let image = setting("BAI_TEST_IMAGE");
    let list = catalog.list().await.unwrap();
    let found = list
        .iter()
        .find(|i| i.canonical() == image)
        .unwrap_or_else(|| panic!("{image} not in {list:?}"));
    assert!(found.installed);
    assert_eq!(
        found
            .labels
            .get("ai.backend.runtime-type")
            .map(String::as_str),
        Some("python")
    );
    assert_eq!(
        found.resource_limits.get("mem"),
        Some(&(Some("256m".to_owned()), None))
    );
    assert!(found.size_bytes > 0 && found.digest.starts_with("sha256:"));
    // Images without the kernelspec label are not kernel images.
    assert!(list
        .iter()
        .all(|i| i.labels.contains_key("ai.backend.kernelspec")));
    // Aliases work on local images too.
    let alias = format!("py-{}", uuid::Uuid::new_v4().simple());
    catalog.alias(&alias, &image).await.unwrap();
    assert_eq!(catalog.resolve(&alias).await.unwrap().canonical(), image);
    catalog.dealias(&alias).await.unwrap();
}

#[tokio::test]
async fn rescanning_a_registry_records_only_kernel_images() {
    use backend_ai_manager::images::{scan, Catalog};
    use backend_ai_manager::shared_config::{EmbeddedConfig, SharedConfig};
    // A plain (non-Backend.AI) image beside the kernel image in the registry.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("hello.txt"), "plain").unwrap();
    let tar = tmp.path().join("plain.tar");
    let ok = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(tmp.path())
        .arg("hello.txt")
        .status()
        .unwrap();
    assert!(ok.success());
    let plain = format!(
        "127.0.0.1:5000/test/plain-{}:1",
        uuid::Uuid::new_v4().simple()
    );
    docker_cli(&["import", tar.to_str().unwrap(), &plain], None);
    docker_cli(&["push", "--quiet", &plain], None);

    let dir = tempfile::tempdir().unwrap();
    let store = backend_ai_manager::store::Store::open(&dir.path().join("m.db")).unwrap();
    let shared = EmbeddedConfig::new(store, "local");
    shared
        .put(
            "config/docker/registry/127.0.0.1%3A5000",
            "http://127.0.0.1:5000",
        )
        .await
        .unwrap();
    // A registry that cannot be reached, with an image recorded by an earlier scan.
    let dead = free_port();
    shared
        .put(
            &format!("config/docker/registry/127.0.0.1%3A{dead}"),
            &format!("http://127.0.0.1:{dead}"),
        )
        .await
        .unwrap();
    shared
        .put(
            &format!("images/127.0.0.1%3A{dead}/old%2Fimage/1"),
            "sha256:old",
        )
        .await
        .unwrap();

    let reports = scan::rescan(&shared, None, &Default::default(), &|_| {})
        .await
        .unwrap();
    let by = |name: &str| {
        reports
            .iter()
            .find(|r| r.registry == name)
            .unwrap()
            .result
            .clone()
    };
    assert!(by("127.0.0.1:5000").is_ok_and(|n| n >= 1), "{reports:?}");
    assert!(by(&format!("127.0.0.1:{dead}")).is_err(), "{reports:?}");

    let catalog = Catalog {
        shared: &shared,
        docker: None,
    };
    let list = catalog.list().await.unwrap();
    let kernel = list
        .iter()
        .find(|i| i.canonical() == setting("BAI_TEST_IMAGE"))
        .expect("the kernel image is recorded");
    assert_eq!(
        kernel
            .labels
            .get("ai.backend.runtime-type")
            .map(String::as_str),
        Some("python")
    );
    assert!(
        kernel.size_bytes > 10 << 20,
        "size = layers + config: {}",
        kernel.size_bytes
    );
    assert!(kernel.digest.starts_with("sha256:"));
    assert_eq!(
        kernel.resource_limits.get("cpu"),
        Some(&(Some("1".to_owned()), None))
    );
    assert!(
        !list.iter().any(|i| i.name.starts_with("test/plain")),
        "non-kernel images are skipped"
    );
    assert!(
        list.iter()
            .any(|i| i.canonical() == format!("127.0.0.1:{dead}/old/image:1")),
        "a failed registry keeps its images"
    );
    // Scanned images can be aliased and resolved.
    catalog
        .alias("scanned-py", &setting("BAI_TEST_IMAGE"))
        .await
        .unwrap();
    assert_eq!(
        catalog.resolve("scanned-py").await.unwrap().canonical(),
        setting("BAI_TEST_IMAGE")
    );
    assert!(matches!(
        scan::rescan(&shared, Some("nope"), &Default::default(), &|_| {}).await,
        Err(scan::ScanError::UnknownRegistry(_))
    ));
    docker_cli(&["rmi", &plain], None);
    delete_from_registry(&plain).await;
}

#[tokio::test]
async fn the_agent_pulls_with_registry_credentials() {
    use backend_ai_manager::agent::daemon::AgentDaemon;
    use backend_ai_manager::agent::docker::RegistryCredentials;
    let tmp = tempfile::tempdir().unwrap();
    let (mut registry, port) = common::auth_registry(tmp.path());
    let server = format!("127.0.0.1:{port}");
    let image = format!("{server}/team/py:{}", uuid::Uuid::new_v4().simple());
    docker_cli(
        &["login", &server, "-u", "bai", "--password-stdin"],
        Some("s3cret"),
    );
    docker_cli(&["tag", &setting("BAI_TEST_IMAGE"), &image], None);
    docker_cli(&["push", "--quiet", &image], None);
    docker_cli(&["logout", &server], None);
    docker_cli(&["rmi", &image], None);

    let Fixture {
        bus,
        events: _events,
        _scratch,
        backend,
        identity,
    } = fixture().await;
    let daemon = AgentDaemon::new(
        backend.clone(),
        bus,
        identity,
        backend_ai_manager::agent::resources::host_slots(0, 0),
    );
    let mut s = spec("128m");
    s.image = image.clone();
    let err = daemon
        .create_kernel(&uuid::Uuid::new_v4().to_string(), &s, Duration::ZERO, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AgentError::InvalidInput(ref m) if m.contains("cannot pull")),
        "{err}"
    );
    let creds = RegistryCredentials {
        username: "bai".into(),
        password: "s3cret".into(),
    };
    let k = uuid::Uuid::new_v4().to_string();
    daemon
        .create_kernel(&k, &s, Duration::ZERO, Some(&creds))
        .await
        .unwrap();
    let r = backend
        .execute(
            &k,
            None,
            "query",
            "print('pulled with credentials')",
            &json!({}),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(
        r.console,
        vec![("stdout".into(), json!("pulled with credentials\n"))]
    );
    backend.destroy_kernel(&k).await.unwrap();
    docker_cli(&["rmi", &image], None);
    let _ = registry.kill();
    let _ = registry.wait();
}
