//! The appliance against its baselines, measured in one run on one machine. Prints figures
//! and ratios; never fails on time. Run with `scripts/bench.sh` (Docker, the kernel image
//! and the static runner, as for the tests).
//!
//! - session create → RUNNING through the gateway vs `docker run` of the same image to a
//!   ready interpreter;
//! - query-mode execute round trip (`print(1)`) vs `docker exec … python3 -c 'print(1)'`;
//! - signed requests per second and p99 for `GET /kernel/{id}` and a GraphQL list, vs the
//!   unsigned `GET /` of the same server (its session on a no-op agent), the load from
//!   `wrk` in a process of its own;
//! - sessions placed per second and p99 create → placed with 100 agents on the no-op
//!   kernel backend: creates sent at 2 000/s, and 64 clients always waiting (the most it
//!   places), vs the same on one agent; each measures 10 000 creates (five seconds at
//!   2 000/s, longer than the period of anything periodic in the manager or the agents)
//!   that follow 2 000 warm-up ones under the same load;
//! - resident memory of an idle `serve`, empty and with 100 000 sessions in the database;
//! - browser apps (`apps` part): a 100 MiB download through the app proxy vs `docker exec
//!   cat` of the same file, and a small page's median time through the proxy (one kept-alive
//!   connection) vs the same request made inside the container;
//! - per interpreted runtime (`runtimes` part): the query round trip of a trivial snippet
//!   in the kept interpreter vs `docker exec <container> <interpreter> -e …` (a fresh
//!   interpreter per run), for each runtime whose image `packaging/images/build.sh` built.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{creds, setting, TestServer, USER};
use serde_json::json;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn session_start(s: &TestServer, image: &str) {
    const N: usize = 5;
    let mut ours = Vec::new();
    for i in 0..N {
        let t = Instant::now();
        let r = s
            .request("POST", "/kernel")
            .json(&json!({"clientSessionToken": format!("bench-start-{i}"), "image": image}))
            .signed(&creds(USER))
            .send()
            .await;
        assert_eq!(r.status, 201, "{}", r.json());
        ours.push(t.elapsed());
        s.request("DELETE", &format!("/kernel/bench-start-{i}"))
            .signed(&creds(USER))
            .send()
            .await;
    }
    let mut base = Vec::new();
    for _ in 0..N {
        let t = Instant::now();
        docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            image,
            "python3",
            "-c",
            "pass",
        ]);
        base.push(t.elapsed());
    }
    let (a, b) = (median(ours), median(base));
    println!(
        "session create -> RUNNING: {} (docker run to a ready python: {}) ratio {:.2} (target <= 1.3)",
        ms(a),
        ms(b),
        a.as_secs_f64() / b.as_secs_f64()
    );
}

async fn execute_round_trip(s: &TestServer, image: &str) {
    const N: usize = 20;
    let r = s
        .request("POST", "/kernel")
        .json(&json!({"clientSessionToken": "bench-exec", "image": image}))
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(r.status, 201);
    let mut ours = Vec::new();
    for _ in 0..N {
        let t = Instant::now();
        let run = s
            .request("POST", "/kernel/bench-exec")
            .json(&json!({"mode": "query", "code": "print(1)", "runId": null}))
            .signed(&creds(USER))
            .send()
            .await;
        assert_eq!(run.json()["result"]["status"], "finished");
        ours.push(t.elapsed());
    }
    let id = docker(&[
        "run",
        "-d",
        "--rm",
        "--network",
        "none",
        image,
        "sleep",
        "300",
    ]);
    let mut base = Vec::new();
    for _ in 0..N {
        let t = Instant::now();
        docker(&["exec", &id, "python3", "-c", "print(1)"]);
        base.push(t.elapsed());
    }
    docker(&["rm", "-f", &id]);
    let (a, b) = (median(ours), median(base));
    println!(
        "execute print(1): {} (docker exec python3 -c: {}) ratio {:.3} (target <= 0.25)",
        ms(a),
        ms(b),
        a.as_secs_f64() / b.as_secs_f64()
    );
}

/// Interpreted runtimes: (runtime type, snippet for a kept interpreter, fresh-interpreter
/// command line for `docker exec`).
const INTERPRETED: &[(&str, &str, &[&str])] = &[
    ("python", "print(1)", &["python3", "-c", "print(1)"]),
    (
        "nodejs",
        "console.log(1)",
        &["node", "-e", "console.log(1)"],
    ),
    ("lua", "print(1)", &["lua5.3", "-e", "print(1)"]),
    ("php", "echo 1;", &["php", "-r", "echo 1;"]),
    ("r", "cat(1)", &["Rscript", "-e", "cat(1)"]),
    (
        "octave",
        "disp(1)",
        &["octave-cli", "--norc", "--eval", "disp(1)"],
    ),
    ("scheme", "(display 1)", &["guile", "-c", "(display 1)"]),
];

async fn runtime_round_trips(s: &TestServer) {
    const N: usize = 10;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/images/build.sh");
    for (runtime, snippet, fresh) in INTERPRETED {
        let image = Command::new(&script)
            .args(["--image", runtime])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let built = Command::new("docker")
            .args(["image", "inspect", &image])
            .output()
            .is_ok_and(|o| o.status.success());
        if !built {
            println!("{runtime}: no image {image} (packaging/images/build.sh {runtime}): skipped");
            continue;
        }
        let token = format!("bench-rt-{runtime}");
        let r = s
            .request("POST", "/kernel")
            .json(&json!({"clientSessionToken": token, "image": image}))
            .signed(&creds(USER))
            .send()
            .await;
        assert_eq!(r.status, 201, "{}", r.json());
        let mut ours = Vec::new();
        // The first run may wait for the interpreter to start: not measured.
        for i in 0..=N {
            let t = Instant::now();
            let run = s
                .request("POST", &format!("/kernel/{token}"))
                .json(&json!({"mode": "query", "code": snippet, "runId": null}))
                .signed(&creds(USER))
                .send()
                .await;
            assert_eq!(run.json()["result"]["status"], "finished", "{runtime}");
            if i > 0 {
                ours.push(t.elapsed());
            }
        }
        s.request("DELETE", &format!("/kernel/{token}"))
            .signed(&creds(USER))
            .send()
            .await;
        let id = docker(&[
            "run",
            "-d",
            "--rm",
            "--network",
            "none",
            &image,
            "sleep",
            "300",
        ]);
        let mut base = Vec::new();
        for _ in 0..N {
            let t = Instant::now();
            let mut args = vec!["exec", id.as_str()];
            args.extend_from_slice(fresh);
            docker(&args);
            base.push(t.elapsed());
        }
        docker(&["rm", "-f", &id]);
        let (a, b) = (median(ours), median(base));
        println!(
            "{runtime} query round trip: {} (docker exec {}: {}) ratio {:.3} (target <= 0.25)",
            ms(a),
            fresh[0],
            ms(b),
            a.as_secs_f64() / b.as_secs_f64()
        );
    }
}

/// Requests per second and p99 latency of `req` replayed by `wrk` from a process of its
/// own (one thread, 32 kept-alive connections) for `secs` seconds. A signed request is
/// signed once, when the run starts: the server checks every copy in full (date window,
/// key, derived-key HMAC) and the date stays well inside the ±15 minutes.
fn wrk(req: &common::Req, secs: u64) -> (f64, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("request.lua");
    std::fs::write(&script, req.wrk_script()).unwrap();
    let out = Command::new("wrk")
        .args(["--threads", "1", "--connections", "32", "--latency"])
        .arg(format!("--duration={secs}s"))
        .arg("--script")
        .arg(&script)
        .arg(format!("http://{}/", req.addr()))
        .output()
        .unwrap_or_else(|e| panic!("wrk runs (scripts/bench.sh installs it): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("Non-2xx"),
        "every request must succeed: {text}"
    );
    let field = |prefix: &str| -> &str {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk's report: {text}"))
            .trim()
    };
    let rps: f64 = field("Requests/sec:").parse().unwrap();
    (rps, wrk_duration(field("99%")))
}

/// A duration as wrk prints it (`812.00us`, `1.20ms`, `2.01s`).
fn wrk_duration(s: &str) -> Duration {
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("a wrk duration: {s}"));
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => panic!("a wrk duration: {s}"),
    };
    Duration::from_secs_f64(secs)
}

/// Request rates on a server of their own, its session on a no-op agent (what is measured
/// is the gateway, not the kernel).
async fn request_rates() {
    let s = &TestServer::start().await;
    common::register_noop_image(s.app().shared.as_ref()).await;
    // Tens of thousands of requests in seconds: past the fixture keypair's rate limit.
    unlimited(s).await;
    let agents = common::noop_agents(s, 1, "4", "8g", |_| {}).await;
    let r = s
        .request("POST", "/kernel")
        .json(&common::noop_session("bench-info", "1"))
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let (base_rps, base_p99) = wrk(&common::Req::new(s.addr, "GET", "/"), 5);
    let (info_rps, info_p99) = wrk(
        &common::Req::new(s.addr, "GET", "/kernel/bench-info").signed(&creds(USER)),
        5,
    );
    let (gql_rps, gql_p99) = wrk(
        &common::Req::new(s.addr, "POST", "/admin/graphql")
            .json(&json!({"query": "{ compute_session_list(limit: 20, offset: 0) { total_count items { sess_id status } } }"}))
            .signed(&creds(USER)),
        5,
    );
    println!("unsigned GET /: {base_rps:.0} req/s, p99 {}", ms(base_p99));
    println!(
        "signed GET /kernel/{{id}}: {info_rps:.0} req/s (ratio {:.2} of GET /), p99 {} (target >= 20000 req/s)",
        info_rps / base_rps,
        ms(info_p99)
    );
    println!(
        "signed GraphQL session list: {gql_rps:.0} req/s (ratio {:.2}), p99 {}",
        gql_rps / base_rps,
        ms(gql_p99)
    );
    for a in agents {
        a.stop().await;
    }
}

/// Lets the bench user run as many sessions and requests as the load needs.
async fn unlimited(s: &TestServer) {
    common::sql(
        &s.app(),
        "UPDATE keypair_resource_policies SET max_concurrent_sessions = 1000000, total_resource_slots = '{}';
         UPDATE keypairs SET rate_limit = 1000000000",
    )
    .await;
}

/// What [`creates`] measured.
struct Placements {
    /// Sessions placed on an agent per second, and the p99 from create request to placed.
    placed_rate: f64,
    placed_p50: Duration,
    placed_p99: Duration,
    /// Create requests answered with a RUNNING session per second, and their p99.
    running_rate: f64,
    running_p99: Duration,
    /// Database writes per commit while they ran (the writer's batches).
    writes_per_commit: f64,
}

/// The `q`-th percentile of `v`.
fn percentile(v: &mut [Duration], q: usize) -> Duration {
    v.sort();
    v[v.len() * q / 100]
}

fn p99(mut v: Vec<Duration>) -> Duration {
    percentile(&mut v, 99)
}

/// How the creates of [`creates`] arrive.
#[derive(Clone, Copy)]
enum Load {
    /// This many clients, each sending its next create when the last one is answered: the
    /// most the server can place (it is always saturated).
    Clients(usize),
    /// Creates sent on a fixed schedule, this many per second, whatever is in flight (the
    /// latency at that rate, as `wrk2 -R` measures it).
    Rate(f64),
}

/// One create that waits for RUNNING; its token, when it was sent and how long it took.
async fn create_one(
    client: &hyper::Client<hyper::client::HttpConnector>,
    addr: std::net::SocketAddr,
    token: String,
) -> (String, Instant, Duration) {
    let t = Instant::now();
    let r = common::Req::new(addr, "POST", "/kernel")
        .json(&common::noop_session(&token, "0.1"))
        .signed(&creds(USER))
        .try_send_with(client)
        .await
        .expect("answer");
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    (token, t, t.elapsed())
}

/// `warm_up + n` session creates (each waiting for RUNNING) under `load`, of which the last
/// `n` are measured: the first ones open the client's connections and the manager's to
/// each agent, fill the caches and start the threads, and then the load goes on without a
/// pause. When each was placed comes from the registry's `session_preparing` events.
async fn creates(s: &TestServer, prefix: &str, warm_up: usize, n: usize, load: Load) -> Placements {
    let store = s.app().store.clone();
    let written = move || {
        let w = store.write_stats();
        (
            w.writes.load(Ordering::Relaxed),
            w.commits.load(Ordering::Relaxed),
        )
    };
    // The database's counts when the first measured create is sent.
    let at_start = Arc::new(std::sync::OnceLock::new());
    let total = warm_up + n;
    let mut events = s.app().registry.subscribe();
    let listener = tokio::spawn(async move {
        let mut placed = std::collections::HashMap::new();
        loop {
            match events.recv().await {
                Ok(ev) if ev.name == "session_preparing" => {
                    placed.insert(ev.sess_id, Instant::now());
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return placed,
            }
            if placed.len() == total {
                return placed;
            }
        }
    });
    // Each create: its index, token, when it was sent and how long it took.
    let (addr, prefix, counted, count) =
        (s.addr, prefix.to_owned(), at_start.clone(), written.clone());
    let send = move |i: usize, client: hyper::Client<hyper::client::HttpConnector>| {
        let token = format!("{prefix}-{i}");
        if i == warm_up {
            counted.get_or_init(count.clone());
        }
        async move {
            let (token, t, took) = create_one(&client, addr, token).await;
            (i, token, t, took)
        }
    };
    let mut tasks = Vec::new();
    match load {
        Load::Clients(workers) => {
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            for _ in 0..workers {
                let (next, send) = (next.clone(), send.clone());
                tasks.push(tokio::spawn(async move {
                    let client = hyper::Client::new();
                    let mut sent = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return sent;
                        }
                        sent.push(send(i, client.clone()).await);
                    }
                }));
            }
        }
        Load::Rate(per_second) => {
            let client = hyper::Client::new();
            let t0 = tokio::time::Instant::now();
            for i in 0..total {
                tokio::time::sleep_until(t0 + Duration::from_secs_f64(i as f64 / per_second)).await;
                let create = send(i, client.clone());
                tasks.push(tokio::spawn(async move { vec![create.await] }));
            }
        }
    }
    let mut sent = Vec::new();
    for t in tasks {
        sent.extend(t.await.unwrap());
    }
    // The measured part starts with the first create sent after the warm-up ones.
    sent.sort_by_key(|(i, ..)| *i);
    let measured: Vec<_> = sent.split_off(warm_up);
    let started = measured.first().expect("something was measured").2;
    let placed = tokio::time::timeout(Duration::from_secs(10), listener)
        .await
        .expect("every placement was seen")
        .unwrap();
    let mut to_placed: Vec<Duration> = measured
        .iter()
        .filter_map(|(_, token, t, _)| placed.get(token).map(|p| p.duration_since(*t)))
        .collect();
    assert_eq!(to_placed.len(), n, "every measured create was placed");
    let last_placed = measured
        .iter()
        .filter_map(|(_, token, ..)| placed.get(token))
        .max()
        .copied()
        .unwrap_or(started);
    let last_answered = measured
        .iter()
        .map(|(_, _, t, took)| *t + *took)
        .max()
        .unwrap_or(started);
    let (writes, commits) = written();
    let (writes_before, commits_before) = *at_start.get().expect("counted at the start");
    Placements {
        placed_rate: n as f64 / last_placed.duration_since(started).as_secs_f64(),
        placed_p50: percentile(&mut to_placed, 50),
        placed_p99: percentile(&mut to_placed, 99),
        writes_per_commit: (writes - writes_before) as f64
            / (commits - commits_before).max(1) as f64,
        running_rate: n as f64 / last_answered.duration_since(started).as_secs_f64(),
        running_p99: p99(measured.into_iter().map(|(.., took)| took).collect()),
    }
}

/// [`creates`] under `load` on `agents` no-op agents with room for all the sessions; also
/// how many agents the sessions were spread over.
async fn placements(agents: usize, warm_up: usize, n: usize, load: Load) -> (Placements, i64) {
    let s = TestServer::start_with(|c| c.manager.heartbeat_timeout = 30.0).await;
    common::register_noop_image(s.app().shared.as_ref()).await;
    unlimited(&s).await;
    // Room for every session on any agent count (each takes 0.1 core and 64 MiB). The
    // agents beat at the default interval (the test kit's is shorter).
    let per_agent = (warm_up + n) / agents + 1;
    let default_beat = backend_ai_manager::config::ManagerConfig::default()
        .agent
        .heartbeat_interval;
    let running_agents = common::noop_agents(
        &s,
        agents,
        &per_agent.to_string(),
        &format!("{per_agent}g"),
        |c| c.agent.heartbeat_interval = default_beat,
    )
    .await;
    let measured = creates(&s, "placed", warm_up, n, load).await;
    let rows = common::session_rows(&s.app()).await;
    let running = rows.iter().filter(|r| r.1 == "RUNNING").count();
    assert_eq!(running, warm_up + n, "every session runs");
    let used: i64 = s
        .app()
        .store
        .read(|c| -> Result<_, backend_ai_manager::store::StoreError> {
            Ok(c.query_row(
                "SELECT COUNT(DISTINCT agent) FROM kernels WHERE status = 'RUNNING'",
                [],
                |r| r.get(0),
            )?)
        })
        .await
        .unwrap();
    for a in running_agents {
        a.stop().await;
    }
    s.stop().await;
    (measured, used)
}

/// The scheduler with 100 agents on the no-op backend: creates at the target's rate (the
/// placed rate and p99 the target names), and the most it places with 64 clients always
/// waiting, against that on one agent.
async fn scheduler_throughput() {
    const N: usize = 10_000;
    const WARM_UP: usize = 2000;
    const RATE: f64 = 2000.0;
    let (at_rate, used) = placements(100, WARM_UP, N, Load::Rate(RATE)).await;
    println!(
        "scheduler, 100 no-op agents, creates sent at {RATE:.0}/s, {N} measured after {WARM_UP} \
         (spread over {used} agents): \
         {:.0} placed per second, p99 create -> placed {} (target >= 2000/s, p99 <= 20 ms), \
         p50 {}; create -> RUNNING p99 {}; {:.1} database writes per commit",
        at_rate.placed_rate,
        ms(at_rate.placed_p99),
        ms(at_rate.placed_p50),
        ms(at_rate.running_p99),
        at_rate.writes_per_commit,
    );
    let (one, _) = placements(1, WARM_UP, N, Load::Clients(64)).await;
    let (many, _) = placements(100, WARM_UP, N, Load::Clients(64)).await;
    println!(
        "scheduler, most placed with 64 clients each waiting for RUNNING: 100 agents {:.0}/s, \
         p99 create -> placed {} (one agent: {:.0}/s, p99 {}) ratio {:.2}; \
         create -> RUNNING answered {:.0}/s, p99 {} (one agent: {:.0}/s, p99 {})",
        many.placed_rate,
        ms(many.placed_p99),
        one.placed_rate,
        ms(one.placed_p99),
        many.placed_rate / one.placed_rate,
        many.running_rate,
        ms(many.running_p99),
        one.running_rate,
        ms(one.running_p99),
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn idle_rss(dir: &std::path::Path) -> u64 {
    let port = common::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_backend-ai-manager"))
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "serve",
            "--service-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .env("BACKEND_AGENT__ENABLED", "false")
        .env("BACKEND_MANAGER__LOCAL_ENGINE_IMAGES", "false")
        .env_remove("BACKEND_CONFIG_FILE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    let rss = rss_kib(child.id());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    rss
}

fn memory() {
    let dir = tempfile::tempdir().unwrap();
    let empty = idle_rss(dir.path());
    let conn = rusqlite::Connection::open(dir.path().join("manager.db")).unwrap();
    let (user, group): (String, String) = conn
        .query_row(
            "SELECT u.uuid, g.id FROM users u, groups g LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    conn.execute_batch("BEGIN").unwrap();
    {
        let mut st = conn
            .prepare(
                "INSERT INTO kernels (id, sess_id, domain_name, group_id, user_uuid, status, terminated_at, occupied_slots)
                 VALUES (?1, ?2, 'default', ?3, ?4, 'TERMINATED', '2026-01-01T00:00:00Z', '{\"cpu\": \"1\"}')",
            )
            .unwrap();
        for i in 0..100_000 {
            st.execute(rusqlite::params![
                uuid::Uuid::new_v4().to_string(),
                format!("old-{i}"),
                group,
                user
            ])
            .unwrap();
        }
    }
    conn.execute_batch("COMMIT").unwrap();
    drop(conn);
    let full = idle_rss(dir.path());
    println!(
        "idle RSS of serve: {:.1} MiB empty, {:.1} MiB with 100 000 sessions in the database (target <= 40 MiB)",
        empty as f64 / 1024.0,
        full as f64 / 1024.0
    );
}

/// Serves /home/work on the session's `http` app with a kept-alive HTTP/1.1 server.
const BENCH_SERVER: &str = r#"
import subprocess, sys, os
open('/home/work/big.bin', 'wb').write(os.urandom(100 << 20))
open('/home/work/small.txt', 'w').write('x' * 100)
src = """
import http.server, functools
class H(http.server.SimpleHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', 8080), functools.partial(H, directory='/home/work')).serve_forever()
"""
subprocess.Popen([sys.executable, '-c', src], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
# Listening before the app is opened: else the image's own `http` service would take the port.
import socket, time
deadline = time.time() + 90
while time.time() < deadline:
    try:
        socket.create_connection(('127.0.0.1', 8080), 1).close()
        print('ok')
        break
    except OSError:
        time.sleep(0.05)
"#;

/// Measures inside the container: the median of 200 requests for the small page.
const INSIDE_P50: &str = "import http.client, time
c = http.client.HTTPConnection('127.0.0.1', 8080)
ts = []
for _ in range(200):
    t = time.perf_counter(); c.request('GET', '/small.txt'); c.getresponse().read(); ts.append(time.perf_counter() - t)
ts.sort(); print(ts[100])";

async fn app_proxy(s: &TestServer) {
    let r = s
        .request("POST", "/kernel")
        .json(&json!({"clientSessionToken": "bench-app", "image": setting("BAI_TEST_IMAGE")}))
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    // Writing 100 MiB may outlast one answer: continue until the run finished.
    let mut body = json!({"mode": "query", "code": BENCH_SERVER, "runId": "bench-app"});
    let mut said = String::new();
    loop {
        let run = s
            .request("POST", "/kernel/bench-app")
            .json(&body)
            .signed(&creds(USER))
            .send()
            .await
            .json();
        said.push_str(&run.to_string());
        if run["result"]["status"] != "continued" {
            break;
        }
        body = json!({"mode": "continue", "code": "", "runId": "bench-app"});
    }
    assert!(said.contains("ok"), "{said}");
    let launched = s
        .request("POST", "/stream/kernel/bench-app/apps/http/launch")
        .signed(&creds(USER))
        .send()
        .await;
    let url = launched.json()["url"].as_str().unwrap().to_owned();
    let origin = url.split("/_bai").next().unwrap().to_owned();
    let client = hyper::Client::new();
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let get = |path: &str| {
        hyper::Request::get(format!("{origin}{path}"))
            .header("Cookie", &cookie)
            .body(hyper::Body::empty())
            .unwrap()
    };
    // Wait for the service.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client.request(get("/small.txt")).await.unwrap();
        let ok = r.status() == 200;
        let _ = hyper::body::to_bytes(r.into_body()).await;
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bench's app server did not start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let agent = format!("label=ai.backend.agent-id={}", s.app().config.agent.id);
    let container = docker(&["ps", "-q", "--filter", &agent]);
    let mut ours = Vec::new();
    let mut base = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let r = client.request(get("/big.bin")).await.unwrap();
        let n = hyper::body::to_bytes(r.into_body()).await.unwrap().len();
        assert_eq!(n, 100 << 20);
        ours.push(t.elapsed());
        let t = Instant::now();
        let out = Command::new("docker")
            .args(["exec", &container, "cat", "/home/work/big.bin"])
            .output()
            .unwrap();
        assert_eq!(out.stdout.len(), 100 << 20);
        base.push(t.elapsed());
    }
    let mib_s = |d: Duration| 100.0 / d.as_secs_f64();
    let (a, b) = (median(ours), median(base));
    println!(
        "app proxy 100 MiB download: {:.0} MiB/s (docker exec cat: {:.0} MiB/s) ratio {:.2} (target >= 0.5)",
        mib_s(a),
        mib_s(b),
        b.as_secs_f64() / a.as_secs_f64()
    );
    let mut small = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let r = client.request(get("/small.txt")).await.unwrap();
        let _ = hyper::body::to_bytes(r.into_body()).await;
        small.push(t.elapsed());
    }
    let inside: f64 = docker(&["exec", &container, "python3", "-c", INSIDE_P50])
        .parse()
        .unwrap();
    let p50 = median(small);
    println!(
        "app proxy small page p50: {} (inside the container: {}) added {} (target <= 2 ms)",
        ms(p50),
        ms(Duration::from_secs_f64(inside)),
        ms(p50.saturating_sub(Duration::from_secs_f64(inside)))
    );
    s.request("DELETE", "/kernel/bench-app")
        .signed(&creds(USER))
        .send()
        .await;
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it,
    // and then there is nothing to do (benchmarks are not tests).
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "the benchmark suite runs with `cargo bench --bench appliance` (scripts/bench.sh)"
        );
        return;
    }
    // `-- scheduler requests memory docker runtimes apps` picks parts; `docker`, `runtimes`
    // and `apps` need Docker.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |part: &str| only.is_empty() || only.iter().any(|a| a == part);
    let rt = tokio::runtime::Runtime::new().unwrap();
    if wants("scheduler") {
        rt.block_on(scheduler_throughput());
    }
    if wants("requests") {
        rt.block_on(request_rates());
    }
    if wants("memory") {
        memory();
    }
    if wants("apps") {
        rt.block_on(async {
            let s = TestServer::start_with_agent(|c| c.manager.app_ports = "0".into()).await;
            app_proxy(&s).await;
            s.stop().await;
        });
    }
    if wants("runtimes") {
        rt.block_on(async {
            let s = TestServer::start_with_agent(|c| c.agent.heartbeat_interval = 1.0).await;
            runtime_round_trips(&s).await;
            s.stop().await;
        });
    }
    if !wants("docker") {
        return;
    }
    let image = setting("BAI_TEST_IMAGE");
    rt.block_on(async {
        let s = TestServer::start_with_agent(|c| c.agent.heartbeat_interval = 1.0).await;
        session_start(&s, &image).await;
        execute_round_trip(&s, &image).await;
        s.request("DELETE", "/kernel/bench-exec")
            .signed(&creds(USER))
            .send()
            .await;
        s.stop().await;
    });
}
