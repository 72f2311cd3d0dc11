//! The GraphQL bounds against a real server (issue 25, "No user can take the appliance
//! down"): documents that used to overflow the stack, run for ever or build answers of
//! hundreds of megabytes are refused quickly with a 400 `graphql-error`, unpaged lists are
//! capped at 100 rows, paged ones clamp their `limit`, and other requests keep answering
//! while attacks are in flight.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Long enough for a loaded machine, far shorter than the attacks took before.
const QUICK: Duration = Duration::from_secs(5);

async fn gql(s: &TestServer, who: (&str, &str), query: &str, vars: Value) -> Resp {
    s.request("POST", "/admin/graphql")
        .json(&json!({"query": query, "variables": vars}))
        .signed(&creds(who))
        .send()
        .await
}

/// Sends `query`, expects a quick 400 `graphql-error`, returns its message(s).
async fn refused_quickly(s: &TestServer, who: (&str, &str), query: &str) -> String {
    let started = Instant::now();
    let r = gql(s, who, query, Value::Null).await;
    let took = started.elapsed();
    r.assert_problem(400, "graphql-error");
    assert!(took < QUICK, "took {took:?}");
    r.json()["data"].to_string()
}

/// `{ compute_session_list(…) { total_count { total_count … } } }`, `levels` deep.
fn deep(levels: usize) -> String {
    format!(
        "{{ compute_session_list(limit:1, offset:0) {}{}",
        "{ total_count ".repeat(levels),
        "}".repeat(levels + 1)
    )
}

/// `F0` spreads `F1` twice, `F1` spreads `F2` twice, …: 2^n session lists when expanded.
fn fragment_bomb(n: usize) -> String {
    let mut doc = "query{...F0}".to_owned();
    for i in 0..n {
        doc.push_str(&format!(
            " fragment F{i} on QueryForUser{{...F{j} ...F{j}}}",
            j = i + 1
        ));
    }
    doc.push_str(&format!(
        " fragment F{n} on QueryForUser{{compute_session_list(limit:1,offset:0){{total_count}}}}"
    ));
    doc
}

/// `n` aliases of one session list.
fn aliases(n: usize) -> String {
    let fields: String = (0..n)
        .map(|i| format!(" a{i}: compute_session_list(limit:1, offset:0) {{ total_count }}"))
        .collect();
    format!("query {{{fields} }}")
}

#[tokio::test]
async fn attacks_are_refused_quickly_with_a_graphql_error() {
    let s = TestServer::start().await;
    // 700 levels used to pass, 1 000 aborted the whole process.
    for levels in [40, 1_000, 50_000] {
        let msg = refused_quickly(&s, USER, &deep(levels)).await;
        assert!(msg.contains("nests brackets more than 32 levels"), "{msg}");
    }
    let msg = refused_quickly(&s, USER, &fragment_bomb(30)).await;
    assert!(msg.contains("fragments expanded"), "{msg}");
    let msg = refused_quickly(
        &s,
        USER,
        "query{...A} fragment A on QueryForUser{...B} fragment B on QueryForUser{...A}",
    )
    .await;
    assert!(msg.contains("spreads itself"), "{msg}");
    let msg = refused_quickly(&s, USER, &aliases(6_000)).await;
    assert!(msg.contains("longer than"), "{msg}");
    let msg = refused_quickly(&s, USER, &aliases(500)).await;
    assert!(msg.contains("estimated cost"), "{msg}");
    let users: String = (0..300)
        .map(|i| format!(" u{i}: users {{ email }}"))
        .collect();
    let msg = refused_quickly(&s, ADMIN, &format!("{{{users} }}")).await;
    assert!(msg.contains("estimated cost"), "{msg}");
    // The most selections allowed, all of one name (juniper compares those pairwise).
    let same = format!("{{ keypair {{{} }} }}", " access_key".repeat(990));
    let started = Instant::now();
    let r = gql(&s, USER, &same, Value::Null).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(started.elapsed() < QUICK, "took {:?}", started.elapsed());
    println!("990 same-named fields took {:?}", started.elapsed());
    // A handful of aliases and a small bomb are fine.
    let r = gql(&s, USER, &aliases(10), Value::Null).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["a9"]["total_count"], 0);
    let r = gql(&s, USER, &fragment_bomb(3), Value::Null).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test]
async fn unpaged_lists_return_at_most_100_rows_and_pages_clamp_their_limit() {
    let s = TestServer::start().await;
    let n = 4_151;
    s.app()
        .store
        .write(move |tx| -> Result<_, backend_ai_manager::store::StoreError> {
            let mut user = tx.prepare(
                "INSERT INTO users (uuid, email, domain_name, role) VALUES (?1, ?2, 'default', 'user')",
            )?;
            let mut keypair = tx.prepare(
                "INSERT INTO keypairs (user_id, access_key, secret_key, \"user\", resource_policy)
                 VALUES (?1, ?2, 'x', ?3, 'default')",
            )?;
            for i in 0..n {
                let uuid = uuid::Uuid::new_v4().to_string();
                let email = format!("u{i}@example.com");
                user.execute(rusqlite::params![uuid, email])?;
                keypair.execute(rusqlite::params![email, format!("AKTEST{i:08}"), uuid])?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let r = gql(
        &s,
        ADMIN,
        "{ users { email } keypairs { access_key } }",
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let d = r.json();
    assert_eq!(d["users"].as_array().unwrap().len(), 100);
    assert_eq!(d["keypairs"].as_array().unwrap().len(), 100);
    let r = gql(
        &s,
        DOMAIN_ADMIN,
        "{ users { email } keypairs { access_key } }",
        Value::Null,
    )
    .await;
    let d = r.json();
    assert_eq!(d["users"].as_array().unwrap().len(), 100);
    assert_eq!(d["keypairs"].as_array().unwrap().len(), 100);
    // Clients of the 19.x series may ask for more than a page: clamped, not refused.
    let q = "query($limit:Int!, $offset:Int!) { compute_session_list(limit:$limit, offset:$offset) { items { sess_id } total_count } }";
    let r = gql(&s, USER, q, json!({"limit": 1000, "offset": 0})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["compute_session_list"]["total_count"], 0);
    let r = gql(&s, USER, q, json!({"limit": -1, "offset": 0})).await;
    r.assert_problem(400, "graphql-error");
}

#[tokio::test]
async fn answers_larger_than_8_mib_are_refused() {
    let s = TestServer::start().await;
    // Twenty presets of 20 kB each, asked for thirty times over: 12 MB.
    let slots = json!({ "cpu": "1", "pad": "x".repeat(20_000) }).to_string();
    s.app()
        .store
        .write(
            move |tx| -> Result<_, backend_ai_manager::store::StoreError> {
                for i in 0..20 {
                    tx.execute(
                        "INSERT INTO resource_presets (name, resource_slots) VALUES (?1, ?2)",
                        rusqlite::params![format!("big{i}"), slots],
                    )?;
                }
                Ok(())
            },
        )
        .await
        .unwrap();
    let fields: String = (0..30).map(|i| format!(" s{i}: resource_slots")).collect();
    let msg = refused_quickly(&s, USER, &format!("{{ resource_presets {{{fields} }} }}")).await;
    assert!(msg.contains("larger than 8 MiB"), "{msg}");
    let r = gql(&s, USER, "{ resource_presets { name } }", Value::Null).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_requests_answer_within_a_second_while_attacks_are_in_flight() {
    let s = Arc::new(TestServer::start().await);
    let stop = Arc::new(AtomicBool::new(false));
    let attacks = [deep(1_000), fragment_bomb(30), aliases(6_000), aliases(500)];
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (s, stop, doc) = (s.clone(), stop.clone(), attacks[i % attacks.len()].clone());
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = gql(&s, USER, &doc, Value::Null).await;
                assert_eq!(r.status, 400);
                sent += 1;
            }
            sent
        }));
    }
    for _ in 0..20 {
        let started = Instant::now();
        let r = s.request("GET", "/").send().await;
        assert_eq!(r.status, 200);
        let r = gql(&s, USER, "{ keypair { access_key } }", Value::Null).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["keypair"]["access_key"], USER.0);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        assert!(t.await.unwrap() > 0, "every attacker got answers");
    }
}
