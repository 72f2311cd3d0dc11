//! Virtual folders through the API: confinement of every path, permissions of shared
//! folders, upload limits, and folders mounted into a session (real Docker).

mod common;

use common::{creds, Resp, TestServer, DOMAIN_ADMIN, USER};
use serde_json::{json, Value};

async fn call(s: &TestServer, who: (&str, &str), method: &str, path: &str, body: Value) -> Resp {
    s.request(method, path)
        .json(&body)
        .signed(&creds(who))
        .send()
        .await
}

fn multipart(files: &[(&str, &[u8])]) -> (Vec<u8>, String) {
    let boundary = "----bai-test-boundary";
    let mut body = Vec::new();
    for (name, data) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"src\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (body, format!("multipart/form-data; boundary={boundary}"))
}

async fn upload(s: &TestServer, who: (&str, &str), folder: &str, files: &[(&str, &[u8])]) -> Resp {
    let (body, ct) = multipart(files);
    // Signed as the client signs uploads: the media type without the boundary.
    s.request("POST", &format!("/folders/{folder}/upload"))
        .raw_body(body, "multipart/form-data")
        .header("Content-Type", &ct)
        .signed(&creds(who))
        .send()
        .await
}

/// The folder's directory on disk.
fn folder_dir(s: &TestServer, id_hex: &str) -> std::path::PathBuf {
    s.dir.path().join("vfolders").join("local").join(id_hex)
}

#[tokio::test]
async fn every_path_is_confined_to_its_folder() {
    let s = TestServer::start().await;
    let r = call(&s, USER, "POST", "/folders", json!({"name": "box"})).await;
    assert_eq!(r.status, 201, "{}", r.json());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let dir = folder_dir(&s, &id);
    assert!(dir.is_dir());
    // A link planted inside the folder pointing at the host.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "host file").unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), dir.join("secret-link")).unwrap();

    let long = "n".repeat(300);
    let bad: Vec<(&str, &str)> = vec![
        ("..", "parent"),
        ("../x", "parent"),
        ("a/../../x", "parent inside"),
        ("/etc/passwd", "absolute"),
        ("a\u{0}b", "NUL byte"),
        (&long, "over-long name"),
        ("escape/secret", "through a link"),
        ("escape/new", "through a link (new file)"),
        ("secret-link", "a link to a host file"),
    ];
    for (path, what) in &bad {
        let m = call(
            &s,
            USER,
            "POST",
            "/folders/box/mkdir",
            json!({"path": path}),
        )
        .await;
        assert_eq!(m.status, 400, "mkdir {what}: {}", m.json());
        let u = upload(&s, USER, "box", &[(path, b"x")]).await;
        assert_eq!(
            u.status,
            400,
            "upload {what}: {}",
            String::from_utf8_lossy(&u.body)
        );
        let l = call(&s, USER, "GET", "/folders/box/files", json!({"path": path})).await;
        assert!(
            l.status == 400 || *what == "a link to a host file",
            "list {what}: {}",
            l.json()
        );
        let d = call(
            &s,
            USER,
            "GET",
            "/folders/box/download_single",
            json!({"file": path}),
        )
        .await;
        assert_eq!(
            d.status,
            400,
            "download {what}: {}",
            String::from_utf8_lossy(&d.body)
        );
        let g = call(
            &s,
            USER,
            "GET",
            "/folders/box/download",
            json!({"files": [path]}),
        )
        .await;
        assert_eq!(g.status, 400, "download {what}");
        let x = call(
            &s,
            USER,
            "DELETE",
            "/folders/box/delete_files",
            json!({"files": [path], "recursive": true}),
        )
        .await;
        assert!(
            x.status == 400 || *what == "a link to a host file",
            "delete {what}: {}",
            x.json()
        );
    }
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret")).unwrap(),
        "host file"
    );
    assert!(!outside.path().join("new").exists());
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);

    // Folder names are slugs; hosts must be allowed and mounted.
    for name in ["../up", "a/b", ".hidden", ""] {
        let r = call(&s, USER, "POST", "/folders", json!({"name": name})).await;
        assert_eq!(r.status, 400, "name {name:?}");
    }
    let r = call(
        &s,
        USER,
        "POST",
        "/folders",
        json!({"name": "x", "host": "../local"}),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = call(
        &s,
        USER,
        "POST",
        "/folders",
        json!({"name": "x", "host": "other-host"}),
    )
    .await;
    assert_eq!(r.status, 400, "allowed but not mounted");

    // Well-formed paths work, and the listing is the JSON string the client expects.
    let u = upload(&s, USER, "box", &[("deep/er/file.txt", b"payload")]).await;
    assert_eq!(u.status, 201, "{}", String::from_utf8_lossy(&u.body));
    let l = call(
        &s,
        USER,
        "GET",
        "/folders/box/files",
        json!({"path": "deep/er"}),
    )
    .await;
    let files: Value = serde_json::from_str(l.json()["files"].as_str().unwrap()).unwrap();
    assert_eq!(files[0]["filename"], "file.txt");
    assert_eq!(files[0]["size"], 7);
    let d = call(
        &s,
        USER,
        "GET",
        "/folders/box/download_single",
        json!({"file": "deep/er/file.txt"}),
    )
    .await;
    assert_eq!(d.body, b"payload");
    // Too many files in one upload.
    let many: Vec<(String, Vec<u8>)> = (0..11).map(|i| (format!("f{i}"), vec![b'x'])).collect();
    let refs: Vec<(&str, &[u8])> = many
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let u = upload(&s, USER, "box", &refs).await;
    assert_eq!(u.status, 400);
    s.stop().await;
}

#[tokio::test]
async fn shared_permissions_and_upload_limits_hold() {
    let s = TestServer::start_with(|c| c.manager.max_upload_size = 64 << 10).await;
    let r = call(&s, USER, "POST", "/folders", json!({"name": "shared"})).await;
    assert_eq!(r.status, 201);
    // Nobody else sees it until invited.
    let r = call(&s, DOMAIN_ADMIN, "GET", "/folders/shared", json!({})).await;
    r.assert_problem(404, "vfolder-not-found");
    let r = call(
        &s,
        USER,
        "POST",
        "/folders/shared/invite",
        json!({"perm": "ro", "user_ids": ["domain-admin@lablup.com", "nobody@example.com"]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(r.json()["invited_ids"], json!(["domain-admin@lablup.com"]));
    let inv = call(
        &s,
        DOMAIN_ADMIN,
        "GET",
        "/folders/invitations/list",
        json!({}),
    )
    .await;
    let inv_id = inv.json()["invitations"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Only the invitee accepts.
    let r = call(
        &s,
        USER,
        "POST",
        "/folders/invitations/accept",
        json!({"inv_id": inv_id}),
    )
    .await;
    assert_eq!(r.status, 404);
    let r = call(
        &s,
        DOMAIN_ADMIN,
        "POST",
        "/folders/invitations/accept",
        json!({"inv_id": inv_id, "inv_ak": DOMAIN_ADMIN.0}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json());

    let u = upload(&s, USER, "shared", &[("a.txt", b"from the owner")]).await;
    assert_eq!(u.status, 201);
    // Read-only: reading works, writing does not exist for this user.
    let r = call(&s, DOMAIN_ADMIN, "GET", "/folders/shared", json!({})).await;
    assert_eq!(
        (r.status, r.json()["permission"].clone()),
        (200, json!("ro"))
    );
    let d = call(
        &s,
        DOMAIN_ADMIN,
        "GET",
        "/folders/shared/download_single",
        json!({"file": "a.txt"}),
    )
    .await;
    assert_eq!(d.body, b"from the owner");
    upload(&s, DOMAIN_ADMIN, "shared", &[("b.txt", b"x")])
        .await
        .assert_problem(404, "vfolder-not-found");
    call(
        &s,
        DOMAIN_ADMIN,
        "POST",
        "/folders/shared/mkdir",
        json!({"path": "d"}),
    )
    .await
    .assert_problem(404, "vfolder-not-found");
    call(
        &s,
        DOMAIN_ADMIN,
        "DELETE",
        "/folders/shared/delete_files",
        json!({"files": ["a.txt"]}),
    )
    .await
    .assert_problem(404, "vfolder-not-found");
    call(&s, DOMAIN_ADMIN, "DELETE", "/folders/shared", json!({}))
        .await
        .assert_problem(404, "vfolder-not-found");
    call(
        &s,
        DOMAIN_ADMIN,
        "POST",
        "/folders/shared/rename",
        json!({"new_name": "mine"}),
    )
    .await
    .assert_problem(404, "vfolder-not-found");

    // An upload over the limit is refused before it is stored, and leaves nothing behind.
    let big = vec![7u8; 100 << 10];
    let u = upload(&s, USER, "shared", &[("big.bin", &big)]).await;
    assert_eq!(u.status, 413, "{}", String::from_utf8_lossy(&u.body));
    let l = call(&s, USER, "GET", "/folders/shared/files", json!({})).await;
    let files: Value = serde_json::from_str(l.json()["files"].as_str().unwrap()).unwrap();
    assert_eq!(files.as_array().unwrap().len(), 1, "{files}");

    // Group folders: made by a domain admin for a group of its domain; members use them.
    let group = "2de2b969-1d04-48a6-af16-0bc8adb3c831";
    let r = call(
        &s,
        DOMAIN_ADMIN,
        "POST",
        "/folders",
        json!({"name": "team", "group": group}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(r.json()["group"], group);
    let r = call(&s, USER, "GET", "/folders/team", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(
        (r.json()["type"].clone(), r.json()["permission"].clone()),
        (json!("group"), json!("rw"))
    );
    assert_eq!(
        upload(&s, USER, "team", &[("shared.txt", b"x")])
            .await
            .status,
        201
    );
    call(
        &s,
        USER,
        "DELETE",
        "/folders/team/delete_files",
        json!({"files": ["shared.txt"]}),
    )
    .await
    .assert_problem(404, "vfolder-not-found");
    call(
        &s,
        USER,
        "POST",
        "/folders",
        json!({"name": "mine", "group": group}),
    )
    .await
    .assert_problem(403, "generic-forbidden");
    call(
        &s,
        common::ADMIN,
        "POST",
        "/folders",
        json!({"name": "mine", "group": group}),
    )
    .await
    .assert_problem(403, "generic-forbidden");

    // The folder count limit.
    let app = s.app();
    app.store
        .write(|tx| -> Result<_, backend_ai_manager::store::StoreError> {
            Ok(tx.execute(
                "UPDATE keypair_resource_policies SET max_vfolder_count = 1",
                [],
            )?)
        })
        .await
        .unwrap();
    let r = call(&s, USER, "POST", "/folders", json!({"name": "second"})).await;
    assert_eq!(r.status, 400, "{}", r.json());
    s.stop().await;
}

#[tokio::test]
async fn a_session_sees_and_writes_its_mounted_folders() {
    let s = TestServer::start_with_agent(|_| {}).await;
    let r = call(&s, USER, "POST", "/folders", json!({"name": "work-data"})).await;
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let u = upload(&s, USER, "work-data", &[("input.txt", b"21")]).await;
    assert_eq!(u.status, 201);
    let r = call(
        &s,
        USER,
        "POST",
        "/kernel",
        json!({
        "clientSessionToken": "mounter", "image": common::setting("BAI_TEST_IMAGE"),
        "config": {"mounts": ["work-data"]}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let code = "n = int(open('/home/work/work-data/input.txt').read())\nopen('/home/work/work-data/output.txt', 'w').write(str(n * 2))\nprint('done', n)";
    let run = call(
        &s,
        USER,
        "POST",
        "/kernel/mounter",
        json!({"mode": "query", "code": code, "runId": null}),
    )
    .await;
    assert!(
        run.json()["result"]["console"]
            .to_string()
            .contains("done 21"),
        "{}",
        run.json()
    );
    assert_eq!(
        std::fs::read_to_string(folder_dir(&s, &id).join("output.txt")).unwrap(),
        "42"
    );
    let d = call(
        &s,
        USER,
        "GET",
        "/folders/work-data/download_single",
        json!({"file": "output.txt"}),
    )
    .await;
    assert_eq!(d.body, b"42");

    // The session's file API writes into the mounted folder: the container and the
    // folder both see the bytes (not a copy hidden under the mount point).
    let (body, ct) = multipart(&[("work-data/probe.txt", b"uploaded probe")]);
    let r = s
        .request("POST", "/kernel/mounter/upload")
        .raw_body(body, "multipart/form-data")
        .header("Content-Type", &ct)
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let run = call(
        &s,
        USER,
        "POST",
        "/kernel/mounter",
        json!({"mode": "query", "runId": null,
               "code": "print('seen:', open('work-data/probe.txt').read())"}),
    )
    .await;
    assert!(
        run.json()["result"]["console"]
            .to_string()
            .contains("seen: uploaded probe"),
        "{}",
        run.json()
    );
    let d = call(
        &s,
        USER,
        "GET",
        "/folders/work-data/download_single",
        json!({"file": "probe.txt"}),
    )
    .await;
    assert_eq!(d.body, b"uploaded probe");
    let l = call(
        &s,
        USER,
        "GET",
        "/kernel/mounter/files",
        json!({"path": "work-data"}),
    )
    .await;
    assert!(listed(&l.json(), "probe.txt").is_some(), "{}", l.json());

    // FIFOs made by user code, in the work directory and in the folder: refused at once.
    let run = call(
        &s,
        USER,
        "POST",
        "/kernel/mounter",
        json!({"mode": "query", "runId": null,
               "code": "import os\nos.mkfifo('pipe')\nos.mkfifo('work-data/pipe')\nprint('made')"}),
    )
    .await;
    assert!(run.json()["result"]["console"].to_string().contains("made"));
    for (path, body) in [
        ("/kernel/mounter/download", json!({"files": ["pipe"]})),
        (
            "/kernel/mounter/download",
            json!({"files": ["work-data/pipe"]}),
        ),
        (
            "/folders/work-data/download_single",
            json!({"file": "pipe"}),
        ),
        ("/folders/work-data/download", json!({"files": ["pipe"]})),
    ] {
        let started = std::time::Instant::now();
        let req = s.request("GET", path).json(&body).signed(&creds(USER));
        let r = tokio::time::timeout(std::time::Duration::from_secs(20), req.send())
            .await
            .unwrap_or_else(|_| panic!("{path} {body}: no answer"));
        r.assert_problem(400, "invalid-api-params");
        assert!(r.json()["title"]
            .as_str()
            .unwrap()
            .contains("not a regular file"));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
    let l = call(
        &s,
        USER,
        "GET",
        "/kernel/mounter/files",
        json!({"path": "."}),
    )
    .await;
    assert_eq!(
        listed(&l.json(), "pipe").unwrap()["mode"].as_str().unwrap()[..1],
        *"p"
    );
    // A folder the owner cannot reach is not mounted.
    let r = call(
        &s,
        USER,
        "POST",
        "/kernel",
        json!({
        "clientSessionToken": "nomount", "image": common::setting("BAI_TEST_IMAGE"),
        "config": {"mounts": ["someone-elses"]}}),
    )
    .await;
    r.assert_problem(404, "vfolder-not-found");
    let d = call(&s, USER, "DELETE", "/kernel/mounter", json!({})).await;
    assert_eq!(d.status, 200);
    s.stop().await;
}

/// Makes a FIFO at `path`, as `os.mkfifo` in a session would.
fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

/// `name`, made by USER and shared read-only with DOMAIN_ADMIN (invited and accepted).
async fn share_read_only(s: &TestServer, name: &str) {
    let r = call(s, USER, "POST", "/folders", json!({"name": name})).await;
    assert_eq!(r.status, 201, "{}", r.json());
    let path = format!("/folders/{name}/invite");
    let body = json!({"perm": "ro", "user_ids": ["domain-admin@lablup.com"]});
    assert_eq!(call(s, USER, "POST", &path, body).await.status, 201);
    let inv = call(
        s,
        DOMAIN_ADMIN,
        "GET",
        "/folders/invitations/list",
        json!({}),
    )
    .await;
    let inv_id = inv.json()["invitations"][0]["id"].clone();
    let body = json!({"inv_id": inv_id});
    let r = call(s, DOMAIN_ADMIN, "POST", "/folders/invitations/accept", body).await;
    assert_eq!(r.status, 201, "{}", r.json());
}

/// A session on a no-op agent (its files in a scratch directory, as with Docker).
async fn noop_session_with(s: &TestServer, who: (&str, &str), token: &str, mounts: &[&str]) {
    let mut body = common::noop_session(token, "0.5");
    body["config"]["mounts"] = json!(mounts);
    let r = call(s, who, "POST", "/kernel", body).await;
    assert_eq!(r.status, 201, "{}", r.json());
}

/// The entry `name` of a listing's `files` (a JSON string).
fn listed(listing: &Value, name: &str) -> Option<Value> {
    let files: Vec<Value> = serde_json::from_str(listing["files"].as_str()?).ok()?;
    files.into_iter().find(|f| f["filename"] == name)
}

#[tokio::test]
async fn special_files_are_refused_at_once_and_the_server_keeps_answering() {
    let s = TestServer::start().await;
    let app = s.app();
    common::register_noop_image(app.shared.as_ref()).await;
    let agents = common::noop_agents(&s, 1, "4", "8g", |_| {}).await;
    let r = call(&s, USER, "POST", "/folders", json!({"name": "box"})).await;
    let dir = folder_dir(&s, r.json()["id"].as_str().unwrap());
    mkfifo(&dir.join("pipe"));
    let _sock = std::os::unix::net::UnixListener::bind(dir.join("sock")).unwrap();
    noop_session_with(&s, USER, "fifo", &[]).await;
    let kernel = agents[0].agent.daemon.backend.kernel_ids().await[0].clone();
    let work = s.dir.path().join("noop-scratch").join(kernel).join("work");
    std::fs::create_dir_all(&work).unwrap();
    mkfifo(&work.join("pipe"));

    // 50 downloads of the FIFOs at once, through every route that reads files: each is a
    // clear 400 at once (not an open() blocked until someone writes to the pipe).
    let routes = [
        ("/folders/box/download_single", json!({"file": "pipe"})),
        ("/folders/box/download", json!({"files": ["pipe"]})),
        ("/kernel/fifo/download", json!({"files": ["pipe"]})),
    ];
    let mut downloads = Vec::new();
    for i in 0..50 {
        let (path, body) = routes[i % routes.len()].clone();
        let req = s.request("GET", path).json(&body).signed(&creds(USER));
        downloads.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let r = tokio::time::timeout(std::time::Duration::from_secs(20), req.send())
                .await
                .unwrap_or_else(|_| panic!("{path}: no answer in 20 s"));
            (path, r, started.elapsed())
        }));
    }
    // Meanwhile the server answers, unsigned and signed.
    for (path, signed) in [("/", false), ("/folders", true)] {
        let mut req = s.request("GET", path);
        if signed {
            req = req.json(&json!({})).signed(&creds(USER));
        }
        let started = std::time::Instant::now();
        let r = tokio::time::timeout(std::time::Duration::from_secs(1), req.send())
            .await
            .unwrap_or_else(|_| panic!("GET {path} took over a second"));
        assert_eq!(r.status, 200, "GET {path}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
    for d in downloads {
        let (path, r, took) = d.await.unwrap();
        r.assert_problem(400, "invalid-api-params");
        let title = r.json()["title"].as_str().unwrap().to_owned();
        assert!(
            title.contains("'pipe' is a FIFO") && title.contains("not a regular file"),
            "{path}: {title}"
        );
        assert!(took < std::time::Duration::from_secs(5), "{path}: {took:?}");
    }
    // Writing is refused as clearly (opening a FIFO for writing blocks too).
    let (body, ct) = multipart(&[("pipe", b"x")]);
    let r = s
        .request("POST", "/kernel/fifo/upload")
        .raw_body(body, "multipart/form-data")
        .header("Content-Type", &ct)
        .signed(&creds(USER))
        .send()
        .await;
    r.assert_problem(400, "invalid-api-params");
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        upload(&s, USER, "box", &[("pipe", b"x")]),
    )
    .await
    .expect("the folder upload answers");
    r.assert_problem(400, "invalid-api-params");

    // They are listed, with their type letter.
    let l = call(&s, USER, "GET", "/folders/box/files", json!({})).await;
    assert_eq!(
        listed(&l.json(), "pipe").unwrap()["mode"].as_str().unwrap()[..1],
        *"p"
    );
    assert_eq!(
        listed(&l.json(), "sock").unwrap()["mode"].as_str().unwrap()[..1],
        *"s"
    );
    let l = call(&s, USER, "GET", "/kernel/fifo/files", json!({"path": "."})).await;
    assert_eq!(l.status, 200, "{}", l.json());
    assert_eq!(
        listed(&l.json(), "pipe").unwrap()["mode"].as_str().unwrap()[..1],
        *"p"
    );
    for a in agents {
        a.stop().await;
    }
    s.stop().await;
}

#[tokio::test]
async fn the_session_file_api_reaches_mounted_folders() {
    let s = TestServer::start().await;
    let app = s.app();
    common::register_noop_image(app.shared.as_ref()).await;
    let agents = common::noop_agents(&s, 1, "4", "8g", |_| {}).await;
    let r = call(&s, USER, "POST", "/folders", json!({"name": "thesis-data"})).await;
    let folder = folder_dir(&s, r.json()["id"].as_str().unwrap());
    share_read_only(&s, "shared").await;
    assert_eq!(
        upload(&s, USER, "shared", &[("a.txt", b"shared bytes")])
            .await
            .status,
        201
    );
    noop_session_with(&s, USER, "writer", &["thesis-data"]).await;
    let kupload = |who, token: &str, files: &[(&str, &[u8])]| {
        let (body, ct) = multipart(files);
        s.request("POST", &format!("/kernel/{token}/upload"))
            .raw_body(body, "multipart/form-data")
            .header("Content-Type", &ct)
            .signed(&creds(who))
            .send()
    };

    // A path under the mount lands in the folder, not under the mount point.
    let r = kupload(USER, "writer", &[("thesis-data/probe.txt", b"probe bytes")]).await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        std::fs::read(folder.join("probe.txt")).unwrap(),
        b"probe bytes"
    );
    let l = call(&s, USER, "GET", "/folders/thesis-data/files", json!({})).await;
    assert!(listed(&l.json(), "probe.txt").is_some(), "{}", l.json());
    let d = call(
        &s,
        USER,
        "GET",
        "/folders/thesis-data/download_single",
        json!({"file": "probe.txt"}),
    )
    .await;
    assert_eq!(d.body, b"probe bytes");
    // And the session's own API sees the folder there too.
    let l = call(
        &s,
        USER,
        "GET",
        "/kernel/writer/files",
        json!({"path": "thesis-data"}),
    )
    .await;
    assert!(listed(&l.json(), "probe.txt").is_some(), "{}", l.json());
    assert_eq!(l.json()["abspath"], "/home/work/thesis-data");
    let l = call(
        &s,
        USER,
        "GET",
        "/kernel/writer/files",
        json!({"path": "."}),
    )
    .await;
    assert_eq!(
        listed(&l.json(), "thesis-data").unwrap()["mode"]
            .as_str()
            .unwrap()[..1],
        *"d"
    );
    std::fs::write(folder.join("from-folder.txt"), "folder side").unwrap();
    let d = call(
        &s,
        USER,
        "GET",
        "/kernel/writer/download",
        json!({"files": ["thesis-data/from-folder.txt"]}),
    )
    .await;
    assert_eq!(d.status, 200);
    assert!(String::from_utf8_lossy(&d.body).contains("folder side"));

    // Percent-encoded names (as client 19.6.0a1 sends nested paths) land nested, and stay
    // confined after decoding.
    let r = kupload(
        USER,
        "writer",
        &[
            ("sub%2Fa.txt", b"nested"),
            ("thesis-data%2Fdeep%2Fb.txt", b"deep"),
        ],
    )
    .await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let l = call(
        &s,
        USER,
        "GET",
        "/kernel/writer/files",
        json!({"path": "sub"}),
    )
    .await;
    assert!(listed(&l.json(), "a.txt").is_some(), "{}", l.json());
    assert_eq!(std::fs::read(folder.join("deep/b.txt")).unwrap(), b"deep");
    for bad in ["%2E%2E%2Fescape.txt", "thesis-data%2F..%2F..%2Fescape.txt"] {
        kupload(USER, "writer", &[(bad, b"x")])
            .await
            .assert_problem(400, "invalid-api-params");
    }
    let u = upload(
        &s,
        USER,
        "thesis-data",
        &[("dir%2Fc.txt", b"folder upload")],
    )
    .await;
    assert_eq!(u.status, 201);
    assert_eq!(
        std::fs::read(folder.join("dir/c.txt")).unwrap(),
        b"folder upload"
    );

    // A read-only mount is read, never written.
    noop_session_with(&s, DOMAIN_ADMIN, "reader", &["shared"]).await;
    let d = call(
        &s,
        DOMAIN_ADMIN,
        "GET",
        "/kernel/reader/download",
        json!({"files": ["shared/a.txt"]}),
    )
    .await;
    assert!(String::from_utf8_lossy(&d.body).contains("shared bytes"));
    let r = kupload(DOMAIN_ADMIN, "reader", &[("shared/new.txt", b"x")]).await;
    r.assert_problem(400, "invalid-api-params");
    assert!(r.json()["title"]
        .as_str()
        .unwrap()
        .contains("mounted read-only"));
    let l = call(&s, USER, "GET", "/folders/shared/files", json!({})).await;
    assert!(listed(&l.json(), "new.txt").is_none(), "{}", l.json());
    for a in agents {
        a.stop().await;
    }
    s.stop().await;
}

#[tokio::test]
async fn a_refused_upload_reaches_a_client_still_sending_its_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    share_read_only(&s, "shared").await;
    let boundary = "----bai-refused";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"src\"; filename=\"big.bin\"\r\n\r\n"
    )
    .into_bytes();
    body.extend(std::iter::repeat_n(b'x', 8 << 20));
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    // The read-only folder (no write permission: 404) and one that does not exist: both
    // are refused before the body is read, and the answer must still arrive.
    for i in 0..20 {
        let folder = if i % 2 == 0 { "shared" } else { "nowhere" };
        let path = format!("/folders/{folder}/upload");
        let signed = s
            .request("POST", &path)
            .raw_body(Vec::new(), "multipart/form-data")
            .signed(&creds(DOMAIN_ADMIN));
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\nDate: {}\r\nAuthorization: {}\r\nX-BackendAI-Version: {}\r\nConnection: close\r\n\r\n",
            s.host(),
            body.len(),
            signed.header_value("Date"),
            signed.header_value("Authorization"),
            signed.header_value("X-BackendAI-Version"),
        );
        let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        // As aiohttp does: the whole request is written before the answer is read.
        conn.write_all(head.as_bytes()).await.unwrap();
        if let Err(e) = conn.write_all(&body).await {
            panic!("try {i}: sending the body failed: {e}");
        }
        let mut answer = Vec::new();
        if let Err(e) = conn.read_to_end(&mut answer).await {
            panic!("try {i}: reading the answer failed: {e}");
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 404"), "try {i}: {answer}");
        assert!(answer.contains("vfolder-not-found"), "try {i}: {answer}");
    }
    s.stop().await;
}

#[tokio::test]
async fn downloads_use_the_part_encoding_of_each_api_revision() {
    let s = TestServer::start().await;
    let r = call(&s, USER, "POST", "/folders", json!({"name": "enc"})).await;
    assert_eq!(r.status, 201);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(
        upload(&s, USER, "enc", &[("data.bin", &data)]).await.status,
        201
    );
    let fetch = |version: &'static str| {
        s.request("GET", "/folders/enc/download")
            .header("X-BackendAI-Version", version)
            .json(&json!({"files": ["data.bin"]}))
            .signed(&creds(USER))
            .send()
    };
    // The part of a multipart/mixed answer: its headers and its bytes.
    let part = |r: &Resp| {
        let ct = r.header("content-type").unwrap().to_owned();
        let boundary = ct.split("boundary=").nth(1).unwrap().to_owned();
        let body = &r.body;
        let start = find(body, b"\r\n\r\n").unwrap() + 4;
        let end = find(body, format!("\r\n--{boundary}--").as_bytes()).unwrap();
        (
            String::from_utf8_lossy(&body[..start]).to_string(),
            body[start..end].to_vec(),
        )
    };
    // v4.20190315 (clients up to 19.9.0b9): gzip parts.
    let old = fetch("v4.20190315").await;
    assert_eq!(old.status, 200);
    let (headers, bytes) = part(&old);
    assert!(headers.contains("Content-Encoding: gzip"), "{headers}");
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut unzipped)
        .unwrap();
    assert_eq!(unzipped, data);
    // v4.20190615 (19.9.x): the bytes as they are, as manager 19.09.4+ sends them.
    let new = fetch("v4.20190615").await;
    assert_eq!(new.status, 200);
    assert_eq!(new.header("x-total-payloads-length"), Some("100000"));
    let (headers, bytes) = part(&new);
    assert!(!headers.contains("gzip"), "{headers}");
    assert_eq!(bytes, data);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
