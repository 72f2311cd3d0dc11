//! The GraphQL API against a real server: schema selection, role scoping on every kind of
//! object, mutations, the frozen gate, bounded lists, and the committed SDL.

mod common;

use backend_ai_manager::gateway::graphql::Schemas;
use common::*;
use serde_json::{json, Value};

async fn gql(s: &TestServer, who: (&str, &str), query: &str, vars: Value) -> Resp {
    s.request("POST", "/admin/graphql")
        .json(&json!({"query": query, "variables": vars}))
        .signed(&creds(who))
        .send()
        .await
}

/// Data of a successful query.
async fn data(s: &TestServer, who: (&str, &str), query: &str, vars: Value) -> Value {
    let r = gql(s, who, query, vars).await;
    assert_eq!(
        r.status,
        200,
        "{query}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// The error message of a refused query.
async fn refused(s: &TestServer, who: (&str, &str), query: &str, vars: Value) -> String {
    let r = gql(s, who, query, vars).await;
    r.assert_problem(400, "graphql-error");
    r.json()["data"].to_string()
}

#[test]
fn committed_sdl_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
    let sdl = Schemas::new().sdl();
    if std::env::var_os("BAI_UPDATE_SDL").is_some() {
        std::fs::write(&path, &sdl).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(committed == sdl, "schema.graphql is out of date: run `BAI_UPDATE_SDL=1 cargo test --test graphql committed_sdl` and commit it");
}

#[tokio::test]
async fn answers_with_the_bare_data_object_and_tolerates_extra_variables() {
    let s = TestServer::start().await;
    let d = data(
        &s,
        ADMIN,
        "query { keypair { access_key secret_key is_active is_admin } }",
        json!({"ak": null}),
    )
    .await;
    assert_eq!(
        d,
        json!({"keypair": {"access_key": ADMIN.0, "secret_key": ADMIN.1, "is_active": true, "is_admin": true}})
    );
    // Legacy path and the user schema work too.
    let r = s
        .request("POST", "/v3/admin/graphql")
        .json(&json!({"query": "{ user { email role groups { name } } }"}))
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(
        r.json(),
        json!({"user": {"email": "user@lablup.com", "role": "user", "groups": [{"name": "default"}]}})
    );
    let msg = refused(&s, ADMIN, "query { nonsense }", json!(null)).await;
    assert!(msg.contains("nonsense"), "{msg}");
    let r = s
        .request("POST", "/admin/graphql")
        .json(&json!({"nope": 1}))
        .signed(&creds(ADMIN))
        .send()
        .await;
    r.assert_problem(400, "invalid-api-params");
}

#[tokio::test]
async fn user_keypairs_get_the_user_schema_only() {
    let s = TestServer::start().await;
    let msg = refused(&s, USER, "query { agents { id } }", json!(null)).await;
    assert!(msg.contains("agents"), "{msg}");
    let msg = refused(
        &s,
        USER,
        "mutation { delete_keypair(access_key: \"AKIAIOSFODNN7EXAMPLE\") { ok } }",
        json!(null),
    )
    .await;
    assert!(msg.to_lowercase().contains("mutation"), "{msg}");
    let msg = refused(
        &s,
        USER,
        "query { keypairs(user_id: \"admin@lablup.com\") { access_key } }",
        json!(null),
    )
    .await;
    assert!(msg.contains("generic-forbidden"), "{msg}");
    let msg = refused(&s, USER, "query { compute_session_list(limit: 10, offset: 0, access_key: \"AKIAIOSFODNN7EXAMPLE\") { total_count } }", json!(null)).await;
    assert!(msg.contains("generic-forbidden"), "{msg}");
    // Own keypairs, with the own secret.
    let d = data(
        &s,
        USER,
        "{ keypairs { access_key secret_key } }",
        json!(null),
    )
    .await;
    assert_eq!(
        d,
        json!({"keypairs": [{"access_key": USER.0, "secret_key": USER.1}]})
    );
    // The user sees only its own domain and groups.
    let d = data(&s, USER, "{ domain { name } groups { name } }", json!(null)).await;
    assert_eq!(
        d,
        json!({"domain": {"name": "default"}, "groups": [{"name": "default"}]})
    );
}

#[tokio::test]
async fn secret_keys_are_shown_only_to_their_owner() {
    let s = TestServer::start().await;
    let d = data(
        &s,
        ADMIN,
        "{ keypairs { access_key secret_key } }",
        json!(null),
    )
    .await;
    for kp in d["keypairs"].as_array().unwrap() {
        if kp["access_key"] == ADMIN.0 {
            assert_eq!(kp["secret_key"], ADMIN.1);
        } else {
            assert_eq!(kp["secret_key"], Value::Null, "{kp}");
        }
    }
    let d = data(
        &s,
        ADMIN,
        "query($ak: String) { keypair(access_key: $ak) { secret_key } }",
        json!({"ak": USER.0}),
    )
    .await;
    assert_eq!(d["keypair"]["secret_key"], Value::Null);
}

const CREATE_DOMAIN: &str = "mutation($name: String!, $input: DomainInput!) { create_domain(name: $name, props: $input) { ok msg domain { name } } }";
const CREATE_GROUP: &str = "mutation($name: String!, $input: GroupInput!) { create_group(name: $name, props: $input) { ok msg group { id domain_name name } } }";
const CREATE_USER: &str = "mutation($email: String!, $input: UserInput!) { create_user(email: $email, props: $input) { ok msg user { uuid domain_name email username } } }";

/// A second domain `lab` with a group and a user, made by the superadmin.
async fn make_lab(s: &TestServer) -> (String, String) {
    let d = data(s, ADMIN, CREATE_DOMAIN, json!({"name": "lab", "input": {"description": "Lab", "is_active": true, "total_resource_slots": "{\"cpu\": 8}"}})).await;
    assert_eq!(d["create_domain"]["ok"], true, "{d}");
    let d = data(s, ADMIN, CREATE_GROUP, json!({"name": "lab-team", "input": {"domain_name": "lab", "description": "t", "is_active": true}})).await;
    assert_eq!(d["create_group"]["ok"], true, "{d}");
    let gid = d["create_group"]["group"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let input = json!({"username": "", "password": "pw-123456", "need_password_change": false, "domain_name": "lab", "role": "user", "group_ids": [gid]});
    let d = data(
        s,
        ADMIN,
        CREATE_USER,
        json!({"email": "alice@lab.example", "input": input}),
    )
    .await;
    assert_eq!(d["create_user"]["ok"], true, "{d}");
    assert_eq!(d["create_user"]["user"]["username"], "alice@lab.example");
    (
        gid,
        d["create_user"]["user"]["uuid"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

#[tokio::test]
async fn a_domain_admin_cannot_see_or_change_another_domain() {
    let s = TestServer::start().await;
    let (lab_gid, _) = make_lab(&s).await;
    let alice_ak = data(
        &s,
        ADMIN,
        "{ keypairs(user_id: \"alice@lab.example\") { access_key } }",
        json!(null),
    )
    .await["keypairs"][0]["access_key"]
        .as_str()
        .unwrap()
        .to_owned();

    // Reads are confined to the default domain.
    let msg = refused(
        &s,
        DOMAIN_ADMIN,
        "{ domain(name: \"lab\") { name } }",
        json!(null),
    )
    .await;
    assert!(msg.contains("no such domain"), "{msg}");
    let msg = refused(&s, DOMAIN_ADMIN, "{ domains { name } }", json!(null)).await;
    assert!(msg.contains("superadmin"), "{msg}");
    let d = data(
        &s,
        DOMAIN_ADMIN,
        "query($id: String!) { group(id: $id) { name } }",
        json!({"id": lab_gid}),
    )
    .await;
    assert_eq!(d["group"], Value::Null);
    let d = data(
        &s,
        DOMAIN_ADMIN,
        "{ users { email } keypairs { access_key } }",
        json!(null),
    )
    .await;
    assert!(
        !d.to_string().contains("alice@lab.example") && !d.to_string().contains(&alice_ak),
        "{d}"
    );
    let d = data(
        &s,
        DOMAIN_ADMIN,
        "query($e: String) { user(email: $e) { email } }",
        json!({"e": "alice@lab.example"}),
    )
    .await;
    assert_eq!(d["user"], Value::Null);
    let d = data(
        &s,
        DOMAIN_ADMIN,
        "query($ak: String) { keypair(access_key: $ak) { access_key } }",
        json!({"ak": alice_ak}),
    )
    .await;
    assert_eq!(d["keypair"], Value::Null);
    // Nor, in its own domain, the keypairs of a superadmin: not listed, not looked up.
    let d = data(
        &s,
        DOMAIN_ADMIN,
        "{ keypairs { access_key } all: keypairs(user_id: \"admin@lablup.com\") { access_key } }",
        json!(null),
    )
    .await;
    assert!(!d.to_string().contains(ADMIN.0), "{d}");
    assert!(d.to_string().contains(DOMAIN_ADMIN.0), "{d}");
    assert!(d.to_string().contains(USER.0), "{d}");
    let d = data(
        &s,
        DOMAIN_ADMIN,
        "query($ak: String) { keypair(access_key: $ak) { access_key } vfolders(access_key: $ak) { name } }",
        json!({"ak": ADMIN.0}),
    )
    .await;
    assert_eq!(d, json!({"keypair": null, "vfolders": []}));
    let msg = refused(
        &s,
        DOMAIN_ADMIN,
        "{ agent_list(limit: 10, offset: 0) { total_count } }",
        json!(null),
    )
    .await;
    assert!(msg.contains("superadmin"));

    // Changes too.
    let msg = refused(
        &s,
        DOMAIN_ADMIN,
        CREATE_GROUP,
        json!({"name": "sneaky", "input": {"domain_name": "lab"}}),
    )
    .await;
    assert!(msg.contains("generic-forbidden"), "{msg}");
    let modify_kp = "mutation($access_key: String!, $input: ModifyKeyPairInput!) { modify_keypair(access_key: $access_key, props: $input) { ok msg } }";
    let msg = refused(
        &s,
        DOMAIN_ADMIN,
        modify_kp,
        json!({"access_key": alice_ak, "input": {"is_active": false}}),
    )
    .await;
    assert!(msg.contains("generic-forbidden"), "{msg}");
    // …and no keypair for a superadmin, which would be a way up.
    let create_kp = "mutation($user_id: String!, $input: KeyPairInput!) { create_keypair(user_id: $user_id, props: $input) { ok msg keypair { access_key secret_key } } }";
    let msg = refused(&s, DOMAIN_ADMIN, create_kp, json!({"user_id": "admin@lablup.com", "input": {"resource_policy": "default", "rate_limit": 100, "is_admin": true}})).await;
    assert!(msg.contains("generic-forbidden"), "{msg}");
    // Within its own domain it may act.
    let d = data(&s, DOMAIN_ADMIN, create_kp, json!({"user_id": "user@lablup.com", "input": {"resource_policy": "default", "rate_limit": 100}})).await;
    assert_eq!(d["create_keypair"]["ok"], true, "{d}");
    assert_eq!(
        d["create_keypair"]["keypair"]["secret_key"]
            .as_str()
            .map(str::len),
        Some(40)
    );
    let d = data(
        &s,
        DOMAIN_ADMIN,
        CREATE_GROUP,
        json!({"name": "research", "input": {"domain_name": "default"}}),
    )
    .await;
    assert_eq!(d["create_group"]["ok"], true, "{d}");
    // Global objects are the superadmin's.
    let msg = refused(
        &s,
        DOMAIN_ADMIN,
        "mutation { delete_resource_preset(name: \"small\") { ok } }",
        json!(null),
    )
    .await;
    assert!(msg.contains("superadmin"), "{msg}");
}

#[tokio::test]
async fn mutations_create_modify_and_delete_every_kind() {
    let s = TestServer::start().await;
    let (gid, alice) = make_lab(&s).await;
    // Duplicate names are clear failures, not 500s.
    let d = data(
        &s,
        ADMIN,
        CREATE_DOMAIN,
        json!({"name": "lab", "input": {}}),
    )
    .await;
    assert_eq!(d["create_domain"]["ok"], false);
    assert!(
        d["create_domain"]["msg"]
            .as_str()
            .unwrap()
            .contains("integrity error"),
        "{d}"
    );
    let d = data(
        &s,
        ADMIN,
        CREATE_DOMAIN,
        json!({"name": "bad name!", "input": {}}),
    )
    .await;
    assert_eq!(d["create_domain"]["ok"], false);

    // The new user got a keypair and its group.
    let d = data(&s, ADMIN, "{ keypairs(user_id: \"alice@lab.example\") { is_admin resource_policy rate_limit } user(email: \"alice@lab.example\") { groups { id } } }", json!(null)).await;
    assert_eq!(
        d["keypairs"],
        json!([{"is_admin": false, "resource_policy": "default", "rate_limit": 1000}])
    );
    assert_eq!(d["user"]["groups"], json!([{"id": gid}]));

    // Group membership add/remove.
    let modify_group = "mutation($gid: String!, $input: ModifyGroupInput!) { modify_group(gid: $gid, props: $input) { ok msg } }";
    let d = data(
        &s,
        ADMIN,
        modify_group,
        json!({"gid": gid, "input": {"user_update_mode": "remove", "user_uuids": [alice]}}),
    )
    .await;
    assert_eq!(d["modify_group"]["ok"], true, "{d}");
    let d = data(
        &s,
        ADMIN,
        "{ user(email: \"alice@lab.example\") { groups { id } } }",
        json!(null),
    )
    .await;
    assert_eq!(d["user"]["groups"], json!([]));
    let d = data(
        &s,
        ADMIN,
        modify_group,
        json!({"gid": gid, "input": {"name": "lab-team-2", "description": "renamed"}}),
    )
    .await;
    assert_eq!(d["modify_group"]["ok"], true);
    let d = data(&s, ADMIN, modify_group, json!({"gid": gid, "input": {}})).await;
    assert_eq!(
        d["modify_group"],
        json!({"ok": false, "msg": "nothing to update"})
    );

    // Users: modify (role change makes the keypair admin), password login, soft delete.
    let modify_user = "mutation($email: String!, $input: ModifyUserInput!) { modify_user(email: $email, props: $input) { ok msg } }";
    let d = data(&s, ADMIN, modify_user, json!({"email": "alice@lab.example", "input": {"role": "admin", "password": "new-pass-1", "description": ""}})).await;
    assert_eq!(d["modify_user"]["ok"], true, "{d}");
    let d = data(
        &s,
        ADMIN,
        "{ keypairs(user_id: \"alice@lab.example\") { is_admin } }",
        json!(null),
    )
    .await;
    assert_eq!(d["keypairs"], json!([{"is_admin": true}]));
    let login = json!({"type": "keypair", "domain": "lab", "username": "alice@lab.example", "password": "new-pass-1"});
    assert_eq!(
        s.request("POST", "/auth/authorize")
            .json(&login)
            .send()
            .await
            .status,
        200
    );
    let d = data(
        &s,
        ADMIN,
        "mutation { delete_user(email: \"alice@lab.example\") { ok msg } }",
        json!(null),
    )
    .await;
    assert_eq!(d["delete_user"]["ok"], true);
    s.request("POST", "/auth/authorize")
        .json(&login)
        .send()
        .await
        .assert_problem(401, "auth-failed");
    let d = data(
        &s,
        ADMIN,
        "{ keypairs(user_id: \"alice@lab.example\", is_active: true) { access_key } }",
        json!(null),
    )
    .await;
    assert_eq!(d["keypairs"], json!([]));

    // Keypair resource policies and presets.
    let create_policy = "mutation($name: String!, $input: CreateKeyPairResourcePolicyInput!) { create_keypair_resource_policy(name: $name, props: $input) { ok msg resource_policy { name } } }";
    let policy = json!({"default_for_unspecified": "LIMITED", "total_resource_slots": "{\"cpu\": \"4\", \"mem\": \"8g\"}", "max_concurrent_sessions": 2,
        "max_containers_per_session": 1, "max_vfolder_count": 3, "max_vfolder_size": 5000000000i64, "idle_timeout": 1800, "allowed_vfolder_hosts": ["local"]});
    let d = data(
        &s,
        ADMIN,
        create_policy,
        json!({"name": "small", "input": policy}),
    )
    .await;
    assert_eq!(d["create_keypair_resource_policy"]["ok"], true, "{d}");
    let d = data(&s, ADMIN, "{ keypair_resource_policy(name: \"small\") { total_resource_slots max_vfolder_size allowed_vfolder_hosts } }", json!(null)).await;
    assert_eq!(
        d["keypair_resource_policy"]["total_resource_slots"],
        "{\"cpu\":\"4\",\"mem\":\"8589934592\"}"
    );
    assert_eq!(
        d["keypair_resource_policy"]["max_vfolder_size"],
        json!(5000000000.0)
    );
    // The client sends a single host as a plain string; it is coerced into a list.
    let modify_policy = "mutation($name: String!, $input: ModifyKeyPairResourcePolicyInput!) { modify_keypair_resource_policy(name: $name, props: $input) { ok msg } }";
    let d = data(&s, ADMIN, modify_policy, json!({"name": "small", "input": {"allowed_vfolder_hosts": "nfs", "max_concurrent_sessions": 5, "idle_timeout": null}})).await;
    assert_eq!(d["modify_keypair_resource_policy"]["ok"], true, "{d}");
    let d = data(&s, ADMIN, "{ keypair_resource_policy(name: \"small\") { allowed_vfolder_hosts max_concurrent_sessions } }", json!(null)).await;
    assert_eq!(
        d["keypair_resource_policy"],
        json!({"allowed_vfolder_hosts": ["nfs"], "max_concurrent_sessions": 5})
    );
    let d = data(&s, ADMIN, create_policy, json!({"name": "bad", "input": {"default_for_unspecified": "SOMETIMES", "total_resource_slots": "{}", "max_concurrent_sessions": 1, "max_containers_per_session": 1, "max_vfolder_count": 1, "max_vfolder_size": 0, "idle_timeout": 0}})).await;
    assert_eq!(d["create_keypair_resource_policy"]["ok"], false);
    // A policy in use cannot be deleted out from under its keypairs.
    let d = data(
        &s,
        ADMIN,
        "mutation { delete_keypair_resource_policy(name: \"default\") { ok msg } }",
        json!(null),
    )
    .await;
    assert_eq!(d["delete_keypair_resource_policy"]["ok"], false, "{d}");
    let d = data(
        &s,
        ADMIN,
        "mutation { delete_keypair_resource_policy(name: \"small\") { ok msg } }",
        json!(null),
    )
    .await;
    assert_eq!(d["delete_keypair_resource_policy"]["ok"], true);

    let d = data(&s, ADMIN, "mutation { create_resource_preset(name: \"tiny\", props: {resource_slots: \"{\\\"cpu\\\": \\\"0.5\\\", \\\"mem\\\": \\\"512m\\\"}\"}) { ok msg resource_preset { name resource_slots } } }", json!(null)).await;
    assert_eq!(
        d["create_resource_preset"]["resource_preset"],
        json!({"name": "tiny", "resource_slots": "{\"cpu\":\"0.5\",\"mem\":\"536870912\"}"})
    );
    let d = data(&s, ADMIN, "mutation { modify_resource_preset(name: \"tiny\", props: {resource_slots: \"{\\\"cpu\\\": 1}\"}) { ok } }", json!(null)).await;
    assert_eq!(d["modify_resource_preset"]["ok"], true);
    let d = data(&s, ADMIN, "mutation { create_resource_preset(name: \"x\", props: {resource_slots: \"{\\\"cpu\\\": \\\"lots\\\"}\"}) { ok msg } }", json!(null)).await;
    assert_eq!(d["create_resource_preset"]["ok"], false);
    let d = data(
        &s,
        ADMIN,
        "mutation { delete_resource_preset(name: \"tiny\") { ok } } ",
        json!(null),
    )
    .await;
    assert_eq!(d["delete_resource_preset"]["ok"], true);

    // Domains: modify (rename carries users along) and soft delete.
    let d = data(&s, ADMIN, "mutation { modify_domain(name: \"lab\", props: {name: \"lab2\", description: \"moved\"}) { ok msg domain { name } } }", json!(null)).await;
    assert_eq!(d["modify_domain"]["domain"]["name"], "lab2", "{d}");
    let d = data(
        &s,
        ADMIN,
        "{ user(email: \"alice@lab.example\") { domain_name } }",
        json!(null),
    )
    .await;
    assert_eq!(d["user"]["domain_name"], "lab2");
    let d = data(
        &s,
        ADMIN,
        "mutation { delete_domain(name: \"lab2\") { ok } }",
        json!(null),
    )
    .await;
    assert_eq!(d["delete_domain"]["ok"], true);
    let d = data(
        &s,
        ADMIN,
        "{ domains(is_active: false) { name } }",
        json!(null),
    )
    .await;
    assert_eq!(d["domains"], json!([{"name": "lab2"}]));
    let d = data(
        &s,
        ADMIN,
        "mutation { delete_domain(name: \"nowhere\") { ok msg } }",
        json!(null),
    )
    .await;
    assert_eq!(d["delete_domain"]["ok"], false);

    // Keypairs: modify and delete; never the caller's own.
    let d = data(&s, ADMIN, "mutation { modify_keypair(access_key: \"AKIANAMONITOREXAMPLE\", props: {rate_limit: 7}) { ok } }", json!(null)).await;
    assert_eq!(d["modify_keypair"]["ok"], true);
    let d = data(
        &s,
        ADMIN,
        "mutation { delete_keypair(access_key: \"AKIANAMONITOREXAMPLE\") { ok } }",
        json!(null),
    )
    .await;
    assert_eq!(d["delete_keypair"]["ok"], true);
    let d = data(
        &s,
        ADMIN,
        "mutation { delete_keypair(access_key: \"AKIAIOSFODNN7EXAMPLE\") { ok msg } }",
        json!(null),
    )
    .await;
    assert_eq!(d["delete_keypair"]["ok"], false);
}

#[tokio::test]
async fn mutations_are_refused_while_frozen_and_queries_still_answer() {
    let s = TestServer::start().await;
    let r = s
        .request("PUT", "/manager/status")
        .json(&json!({"status": "frozen"}))
        .signed(&creds(ADMIN))
        .send()
        .await;
    assert_eq!(r.status, 204);
    let r = gql(&s, ADMIN, CREATE_DOMAIN, json!({"name": "x", "input": {}})).await;
    r.assert_problem(503, "server-frozen");
    let d = data(&s, ADMIN, "{ domains { name } }", json!(null)).await;
    assert_eq!(d["domains"], json!([{"name": "default"}]));
}

#[tokio::test]
async fn session_lists_are_paged_bounded_and_fast_with_100k_sessions() {
    let s = TestServer::start().await;
    s.app()
        .store
        .write(|tx| -> Result<_, backend_ai_manager::store::StoreError> {
            let mut st = tx.prepare(
                "INSERT INTO kernels (id, sess_id, domain_name, group_id, user_uuid, access_key, image, status, created_at, terminated_at)
                 VALUES (?1, ?2, 'default', '2de2b969-1d04-48a6-af16-0bc8adb3c831', ?3, ?4, 'python:3.11', ?5, ?6, ?7)",
            )?;
            for i in 0..100_000u32 {
                let (ak, user) = if i % 10 == 0 { (USER.0, "dfa9da54-4b28-432f-be29-c0d680c7a412") } else { (ADMIN.0, "f38dea23-50fa-42a0-b5ae-338f5f4693f4") };
                let running = i >= 99_990;
                let created = format!("2026-01-01T00:00:00.{i:06}Z");
                st.execute(rusqlite::params![
                    uuid::Uuid::new_v4().to_string(),
                    format!("s{i}"),
                    user,
                    ak,
                    if running { "RUNNING" } else { "TERMINATED" },
                    created,
                    if running { None } else { Some(created.clone()) },
                ])?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let q = "query($limit:Int!, $offset:Int!, $ak:String, $status:String) { compute_session_list(limit:$limit, offset:$offset, access_key:$ak, status:$status) { items { sess_id access_key status } total_count } }";
    let started = std::time::Instant::now();
    let d = data(
        &s,
        ADMIN,
        q,
        json!({"limit": 10, "offset": 0, "status": null, "ak": null}),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(d["compute_session_list"]["total_count"], 100_000);
    assert_eq!(
        d["compute_session_list"]["items"][0]["sess_id"], "s99999",
        "newest first"
    );
    println!("a page of 10 out of 100000 sessions took {elapsed:?}");
    let d = data(
        &s,
        ADMIN,
        q,
        json!({"limit": 5, "offset": 0, "status": "RUNNING", "ak": null}),
    )
    .await;
    assert_eq!(d["compute_session_list"]["total_count"], 10);
    // A user sees only its own sessions.
    let d = data(
        &s,
        USER,
        q,
        json!({"limit": 100, "offset": 0, "status": null, "ak": null}),
    )
    .await;
    assert_eq!(d["compute_session_list"]["total_count"], 10_000);
    assert!(d["compute_session_list"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["access_key"] == USER.0));
    // Pages are bounded (a larger limit is clamped, as 19.x clients send one); statuses
    // are checked.
    let d = data(&s, ADMIN, q, json!({"limit": 100000, "offset": 0})).await;
    assert_eq!(
        d["compute_session_list"]["items"].as_array().unwrap().len(),
        100
    );
    let msg = refused(&s, ADMIN, q, json!({"limit": 0, "offset": 0})).await;
    assert!(msg.contains("limit"), "{msg}");
    let msg = refused(
        &s,
        ADMIN,
        q,
        json!({"limit": 10, "offset": 0, "status": "SLEEPING"}),
    )
    .await;
    assert!(msg.contains("not a valid kernel status"), "{msg}");
    // The unpaged list stays bounded too.
    let d = data(&s, ADMIN, "{ compute_sessions { sess_id } }", json!(null)).await;
    assert_eq!(d["compute_sessions"].as_array().unwrap().len(), 100);
    let d = data(
        &s,
        USER,
        "{ compute_session(sess_id: \"s99990\") { sess_id status } }",
        json!(null),
    )
    .await;
    assert_eq!(
        d["compute_session"],
        json!({"sess_id": "s99990", "status": "RUNNING"})
    );
    let d = data(
        &s,
        USER,
        "{ compute_session(sess_id: \"s99991\") { sess_id } }",
        json!(null),
    )
    .await;
    assert_eq!(
        d["compute_session"],
        Value::Null,
        "another user's session is invisible"
    );
}

#[tokio::test]
async fn images_come_from_the_shared_config_layout() {
    let s = TestServer::start().await;
    let sh = s.app().shared.clone();
    let base = "images/localhost%3A5000/lablup%2Fpython/3.11";
    for (k, v) in [
        ("images/localhost%3A5000/lablup%2Fpython", "1"),
        (base, "sha256:abc"),
        (&format!("{base}/size_bytes") as &str, "123456789"),
        (&format!("{base}/labels/ai.backend.kernelspec"), "1"),
        (&format!("{base}/resource/cpu/min"), "1"),
        (&format!("{base}/resource/mem/min"), "256m"),
        (
            "images/_aliases/python",
            "localhost:5000/lablup/python:3.11",
        ),
    ] {
        sh.put(k, v).await.unwrap();
    }
    let d = data(&s, USER, "{ images { name registry tag digest size_bytes aliases resource_limits { key min max } } }", json!(null)).await;
    assert_eq!(
        d["images"],
        json!([{"name": "lablup/python", "registry": "localhost:5000", "tag": "3.11", "digest": "sha256:abc", "size_bytes": 123456789,
                "aliases": ["python"], "resource_limits": [{"key": "cpu", "min": "1", "max": "Infinity"}, {"key": "mem", "min": "256m", "max": "Infinity"}]}])
    );
    let d = data(
        &s,
        USER,
        "{ image(reference: \"python\") { name } }",
        json!(null),
    )
    .await;
    assert_eq!(d["image"]["name"], "lablup/python");
}

#[tokio::test]
async fn live_statistics_for_running_sessions_and_agents_last_ones_after_termination() {
    let s = TestServer::start().await;
    let app = s.app();
    app.store
        .write(|tx| -> Result<_, backend_ai_manager::store::StoreError> {
            tx.execute(
                "INSERT INTO agents (id, region, available_slots, occupied_slots, addr, version)
                 VALUES ('i-agent1', 'local', '{\"cpu\": \"8\", \"mem\": \"17179869184\"}', '{\"cpu\": \"1\"}', 'tcp://127.0.0.1:6001', '0.1.0')",
                [],
            )?;
            for (id, sess, status, last) in [
                ("00000000-0000-0000-0000-000000000001", "live", "RUNNING", None),
                ("00000000-0000-0000-0000-000000000002", "gone", "TERMINATED", Some("{\"mem\": {\"current\": \"2048\", \"stats.max\": \"4096\"}, \"cpu_util\": {\"pct\": \"3.0\"}}")),
            ] {
                tx.execute(
                    "INSERT INTO kernels (id, sess_id, agent, domain_name, group_id, user_uuid, access_key, image, status, occupied_slots, last_stat)
                     VALUES (?1, ?2, 'i-agent1', 'default', '2de2b969-1d04-48a6-af16-0bc8adb3c831', 'dfa9da54-4b28-432f-be29-c0d680c7a412', ?3, 'python', ?4, '{\"cpu\": \"1\", \"mem\": \"1073741824\"}', ?5)",
                    rusqlite::params![id, sess, USER.0, status, last],
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
    // What the agent reports, as it will through the stats store.
    app.bus
        .put_stat(
            "00000000-0000-0000-0000-000000000001",
            &json!({"mem": {"current": "1000", "stats.max": "5000"}, "cpu_util": {"pct": "42.5"}}),
            30,
        )
        .await
        .unwrap();
    app.bus.put_stat("i-agent1", &json!({"node": {"cpu_util": {"pct": "17.5"}, "mem": {"current": "123456"}}, "devices": {}}), 30).await.unwrap();

    let q = "query($limit:Int!, $offset:Int!, $ak:String, $status:String) { compute_session_list(limit:$limit, offset:$offset, access_key:$ak, status:$status) { items { sess_id status mem_cur_bytes mem_max_bytes cpu_using mem_slot cpu_slot } total_count } }";
    let d = data(
        &s,
        USER,
        q,
        json!({"limit": 10, "offset": 0, "status": null, "ak": null}),
    )
    .await;
    let items = d["compute_session_list"]["items"]
        .as_array()
        .unwrap()
        .clone();
    let by = |name: &str| {
        items
            .iter()
            .find(|i| i["sess_id"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        by("live"),
        json!({"sess_id": "live", "status": "RUNNING", "mem_cur_bytes": 1000.0, "mem_max_bytes": 5000.0, "cpu_using": 42.5, "mem_slot": 1024, "cpu_slot": 1.0})
    );
    assert_eq!(by("gone")["mem_cur_bytes"], 2048.0);
    assert_eq!(by("gone")["cpu_using"], 3.0);

    let d = data(&s, ADMIN, "{ agent_list(limit: 10, offset: 0, status: \"ALIVE\") { items { id status cpu_cur_pct mem_cur_bytes cpu_slots mem_slots used_cpu_slots computations { sess_id } } total_count } }", json!(null)).await;
    assert_eq!(
        d["agent_list"],
        json!({"items": [{"id": "i-agent1", "status": "ALIVE", "cpu_cur_pct": 17.5, "mem_cur_bytes": 123456.0, "cpu_slots": 8.0, "mem_slots": 16384, "used_cpu_slots": 1.0,
                          "computations": [{"sess_id": "gone"}, {"sess_id": "live"}]}], "total_count": 1})
    );
    let msg = refused(
        &s,
        ADMIN,
        "{ agents(status: \"SLEEPY\") { id } }",
        json!(null),
    )
    .await;
    assert!(msg.contains("not a valid agent status"), "{msg}");
}

#[tokio::test]
async fn aliases_resolve_through_hops_and_loops_are_refused() {
    let s = TestServer::start().await;
    let sh = s.app().shared.clone();
    sh.put("images/127.0.0.1%3A5000/lablup%2Fpython/3.11", "sha256:abc")
        .await
        .unwrap();
    let alias = "mutation($alias: String!, $target: String!) { alias_image(alias: $alias, target: $target) { ok msg } }";
    // Aliases with ':' and '/' in them, and an alias of an alias.
    let d = data(
        &s,
        ADMIN,
        alias,
        json!({"alias": "python:3", "target": "127.0.0.1:5000/lablup/python:3.11"}),
    )
    .await;
    assert_eq!(d["alias_image"]["ok"], true, "{d}");
    let d = data(
        &s,
        ADMIN,
        alias,
        json!({"alias": "team/py", "target": "python:3"}),
    )
    .await;
    assert_eq!(d["alias_image"]["ok"], true, "{d}");
    let d = data(
        &s,
        USER,
        "{ image(reference: \"team/py\") { name tag registry } }",
        json!(null),
    )
    .await;
    assert_eq!(
        d["image"],
        json!({"name": "lablup/python", "tag": "3.11", "registry": "127.0.0.1:5000"})
    );
    // A loop and an unknown target are refused; nothing is left behind.
    let d = data(
        &s,
        ADMIN,
        alias,
        json!({"alias": "python:3", "target": "team/py"}),
    )
    .await;
    assert_eq!(d["alias_image"]["ok"], false, "{d}");
    let d = data(
        &s,
        ADMIN,
        alias,
        json!({"alias": "x", "target": "nowhere/nothing:1"}),
    )
    .await;
    assert_eq!(
        d["alias_image"],
        json!({"ok": false, "msg": "no such image: nowhere/nothing:1"})
    );
    let d = data(
        &s,
        USER,
        "{ image(reference: \"team/py\") { name } }",
        json!(null),
    )
    .await;
    assert_eq!(
        d["image"]["name"], "lablup/python",
        "the refused loop did not break the chain"
    );
    // Users may not alias; dealias removes one hop.
    let msg = refused(&s, USER, alias, json!({"alias": "a", "target": "python:3"})).await;
    assert!(msg.to_lowercase().contains("mutation"), "{msg}");
    let d = data(
        &s,
        ADMIN,
        "mutation { dealias_image(alias: \"team/py\") { ok } }",
        json!(null),
    )
    .await;
    assert_eq!(d["dealias_image"]["ok"], true);
    let d = data(
        &s,
        USER,
        "{ image(reference: \"team/py\") { name } }",
        json!(null),
    )
    .await;
    assert_eq!(d["image"], Value::Null);
    let d = data(
        &s,
        ADMIN,
        "mutation { dealias_image(alias: \"team/py\") { ok msg } }",
        json!(null),
    )
    .await;
    assert_eq!(d["dealias_image"]["ok"], false);
}

#[tokio::test]
async fn domains_and_groups_carry_the_1909_fields_and_add_folder_hosts() {
    let s = TestServer::start().await;
    // A second storage host, which the user's resource policy does not list.
    std::fs::create_dir_all(s.dir.path().join("vfolders/extra")).unwrap();
    let create = |name: &str| {
        s.request("POST", "/folders")
            .json(&json!({"name": name, "host": "extra"}))
            .signed(&creds(USER))
    };
    create("f-before")
        .send()
        .await
        .assert_problem(400, "invalid-api-params");
    let hosts = s
        .request("GET", "/folders/_/hosts")
        .signed(&creds(USER))
        .send()
        .await
        .json();
    assert_eq!(hosts["allowed"], json!(["local"]));

    // A new domain with the 19.09 fields, read back as 19.6.0b2 and 19.9 clients ask.
    // A group of a domain that does not exist: a clear refusal, not a constraint name.
    let d = data(
        &s,
        ADMIN,
        CREATE_GROUP,
        json!({"name": "g19", "input": {"domain_name": "nowhere"}}),
    )
    .await;
    assert_eq!(d["create_group"]["ok"], false);
    assert_eq!(d["create_group"]["msg"], "no such domain: nowhere");
    let d = data(&s, ADMIN, CREATE_DOMAIN, json!({"name": "lab19", "input": {"description": "Lab",
        "allowed_vfolder_hosts": ["extra"], "allowed_docker_registries": ["cr.example"], "integration_id": "ext-1"}})).await;
    assert_eq!(d["create_domain"]["ok"], true, "{d}");
    let q = "query($n: String) { domain(name: $n) { name allowed_vfolder_hosts allowed_docker_registries integration_id } }";
    let d = data(&s, ADMIN, q, json!({"n": "lab19"})).await;
    assert_eq!(
        d["domain"],
        json!({"name": "lab19", "allowed_vfolder_hosts": ["extra"], "allowed_docker_registries": ["cr.example"], "integration_id": "ext-1"})
    );

    // The user's own domain allowing the host lets them use it (policy ∪ domain ∪ groups).
    let m = "mutation($n: String!, $i: ModifyDomainInput!) { modify_domain(name: $n, props: $i) { ok msg } }";
    let d = data(
        &s,
        ADMIN,
        m,
        json!({"n": "default", "i": {"allowed_vfolder_hosts": ["extra"], "integration_id": "x"}}),
    )
    .await;
    assert_eq!(d["modify_domain"]["ok"], true, "{d}");
    let hosts = s
        .request("GET", "/folders/_/hosts")
        .signed(&creds(USER))
        .send()
        .await
        .json();
    assert_eq!(hosts["allowed"], json!(["extra", "local"]));
    assert_eq!(create("f-domain").send().await.status, 201);
    let d = data(
        &s,
        ADMIN,
        m,
        json!({"n": "default", "i": {"allowed_vfolder_hosts": []}}),
    )
    .await;
    assert_eq!(d["modify_domain"]["ok"], true, "{d}");
    create("f-after")
        .send()
        .await
        .assert_problem(400, "invalid-api-params");

    // A group of the user's: the same through the group.
    let groups = data(&s, USER, "{ user { groups { id name } } }", json!({})).await;
    let gid = groups["user"]["groups"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let m = "mutation($g: String!, $i: ModifyGroupInput!) { modify_group(gid: $g, props: $i) { ok msg } }";
    let d = data(
        &s,
        ADMIN,
        m,
        json!({"g": gid, "i": {"allowed_vfolder_hosts": ["extra"], "integration_id": "g-1"}}),
    )
    .await;
    assert_eq!(d["modify_group"]["ok"], true, "{d}");
    let q = "query($g: String!) { group(id: $g) { allowed_vfolder_hosts integration_id } }";
    let d = data(&s, ADMIN, q, json!({"g": gid})).await;
    assert_eq!(
        d["group"],
        json!({"allowed_vfolder_hosts": ["extra"], "integration_id": "g-1"})
    );
    let hosts = s
        .request("GET", "/folders/_/hosts")
        .signed(&creds(USER))
        .send()
        .await
        .json();
    assert_eq!(hosts["allowed"], json!(["extra", "local"]));

    // Session fields of 19.09, and the user schema's group_id argument.
    let q = "query($g: String) { compute_session_list(limit: 1000, offset: 0, group_id: $g) { total_count items { sess_id sess_type result status_changed group_id } } }";
    let d = data(&s, USER, q, json!({"g": gid})).await;
    assert_eq!(d["compute_session_list"]["total_count"], 0);
    // 19.9 clients filter by a comma-separated list of statuses, CANCELLED among them.
    register_noop_image(s.app().shared.as_ref()).await;
    let _agents = noop_agents(&s, 1, "4", "8g", |_| {}).await;
    let body = noop_session("listed", "1");
    let r = s
        .request("POST", "/kernel")
        .json(&body)
        .signed(&creds(USER))
        .send()
        .await;
    assert!(r.status == 201 || r.status == 200, "{:?}", r.json());
    let q = "query($s: String) { compute_session_list(limit: 20, offset: 0, status: $s) { total_count items { sess_id sess_type result } } }";
    for (statuses, n) in [
        (
            "PENDING,PREPARING,PULLING,RUNNING,RESTARTING,TERMINATING,RESIZING,SUSPENDED,ERROR",
            1,
        ),
        ("CANCELLED,TERMINATED", 0),
        ("CANCELLED", 0),
        ("PENDING,RUNNING,CANCELLED,TERMINATED", 1),
    ] {
        let d = data(&s, ADMIN, q, json!({"s": statuses})).await;
        assert_eq!(
            d["compute_session_list"]["total_count"], n,
            "{statuses}: {d}"
        );
    }
    let d = data(&s, ADMIN, q, json!({"s": "RUNNING"})).await;
    let first = &d["compute_session_list"]["items"][0];
    assert_eq!(first["sess_type"], "INTERACTIVE", "{d}");
    assert_eq!(first["result"], "UNDEFINED");
    refused(&s, ADMIN, q, json!({"s": "RUNNING,BOGUS"})).await;
}
