//! The admin web UI: its login (HttpOnly cookie, CSRF token, same-origin checks, expiry,
//! logout) at the HTTP level, and the pages in a real headless Chromium: log in, create a
//! session, run code in its console, use its terminal, upload into a folder, terminate,
//! log out; a user without an admin role sees no admin pages and gets 403 from admin APIs.
//! Screenshots of every page land in `$BAI_TEST_OUTPUT/ui-screenshots` (default: the
//! cargo target's tmp dir).

mod common;

use common::browser::{Browser, ENTER};
use common::{creds, setting, TestServer, ADMIN, USER};
use serde_json::{json, Value};
use std::time::Duration;

const ADMIN_EMAIL: &str = "admin@lablup.com";
const ADMIN_PASSWORD: &str = "wJalrXUt";

fn shots_dir() -> std::path::PathBuf {
    let base = std::env::var("BAI_TEST_OUTPUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    base.join("ui-screenshots")
}

/// `name=value` of the session cookie in a Set-Cookie header.
fn cookie_of(resp: &common::Resp) -> (String, String) {
    let set = resp.header("set-cookie").expect("a Set-Cookie header");
    let pair = set.split(';').next().unwrap().trim().to_owned();
    (pair, set.to_owned())
}

#[tokio::test]
async fn ui_logins_are_httponly_cookies_with_csrf_protection() {
    let s = TestServer::start().await;
    let host = s.host();

    // The page itself: a browser asking for / lands on /ui/; API clients still get JSON.
    let r = s
        .request("GET", "/")
        .header("Accept", "text/html,application/xhtml+xml")
        .send()
        .await;
    assert_eq!((r.status, r.header("location")), (302, Some("/ui/")));
    assert_eq!(
        s.request("GET", "/").send().await.json()["version"],
        "v4.20190315"
    );
    let page = s.request("GET", "/ui/").send().await;
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("app.js"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    let etag = page.header("etag").unwrap().to_owned();
    let again = s
        .request("GET", "/ui/")
        .header("If-None-Match", &etag)
        .send()
        .await;
    assert_eq!(again.status, 304);
    assert_eq!(
        s.request("GET", "/ui/sessions/x").send().await.status,
        200,
        "the page's own routes get the page"
    );
    s.request("GET", "/ui/nothing.js")
        .send()
        .await
        .assert_problem(404, "generic-not-found");
    for sneaky in [
        "/ui/../Cargo.toml",
        "/ui/%2e%2e/Cargo.toml",
        "/ui/..%2fCargo.toml",
    ] {
        let r = s.request("GET", sneaky).send().await;
        assert!(
            !String::from_utf8_lossy(&r.body).contains("[package]"),
            "{sneaky} must not leave web/"
        );
    }

    // Wrong passwords and keys: the original's 401, no cookie.
    let bad = s
        .request("POST", "/auth/session")
        .json(&json!({"type": "password", "username": ADMIN_EMAIL, "password": "nope"}))
        .send()
        .await;
    bad.assert_problem(401, "auth-failed");
    assert!(bad.header("set-cookie").is_none());
    s.request("POST", "/auth/session")
        .json(&json!({"type": "keypair", "access_key": ADMIN.0, "secret_key": "wrong"}))
        .send()
        .await
        .assert_problem(401, "auth-failed");
    s.request("POST", "/auth/session")
        .json(&json!({"type": "telepathy"}))
        .send()
        .await
        .assert_problem(400, "invalid-api-params");
    // A login form posted from another site is refused.
    s.request("POST", "/auth/session")
        .header("Origin", "https://evil.example")
        .json(&json!({"type": "password", "username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .assert_problem(403, "generic-forbidden");

    // A good login: an HttpOnly, SameSite cookie; the answer has the CSRF token and never
    // the secret key.
    let ok = s
        .request("POST", "/auth/session")
        .json(&json!({"type": "password", "username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    let (cookie, set) = cookie_of(&ok);
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"));
    let who = ok.json();
    assert_eq!(who["user"]["email"], ADMIN_EMAIL);
    assert_eq!(who["user"]["role"], "superadmin");
    assert!(!ok
        .body
        .windows(ADMIN.1.len())
        .any(|w| w == ADMIN.1.as_bytes()));
    let csrf = who["csrf_token"].as_str().unwrap().to_owned();
    let token = cookie.split_once('=').unwrap().1.to_owned();
    let stored: Vec<String> = {
        let db = rusqlite::Connection::open(s.dir.path().join("manager.db")).unwrap();
        let mut st = db.prepare("SELECT token_hash FROM ui_sessions").unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert!(
        !stored.is_empty() && !stored.contains(&token),
        "only hashes are stored"
    );

    // Reads with the cookie work without signing.
    let me = s
        .request("GET", "/auth/session")
        .header("Cookie", &cookie)
        .send()
        .await;
    assert_eq!(me.json()["csrf_token"], csrf);
    let status = s
        .request("GET", "/manager/status")
        .header("Cookie", &cookie)
        .send()
        .await;
    assert_eq!(status.status, 200);
    // GraphQL through the cookie: the login's own secret key stays hidden.
    let q = json!({"query": "query { keypair { access_key secret_key } }"});
    let r = s
        .request("POST", "/admin/graphql")
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", &csrf)
        .json(&q)
        .send()
        .await;
    assert_eq!(
        r.json()["keypair"],
        json!({"access_key": ADMIN.0, "secret_key": null})
    );

    // Changes need the CSRF token, and a same-origin request.
    let freeze = json!({"status": "frozen"});
    s.request("PUT", "/manager/status")
        .header("Cookie", &cookie)
        .json(&freeze)
        .send()
        .await
        .assert_problem(403, "generic-forbidden");
    s.request("PUT", "/manager/status")
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", "guess")
        .json(&freeze)
        .send()
        .await
        .assert_problem(403, "generic-forbidden");
    // A GET on the wire that asks to be a PUT needs the token too.
    s.request("GET", "/manager/status")
        .header("Cookie", &cookie)
        .header("X-Method-Override", "PUT")
        .json(&freeze)
        .send()
        .await
        .assert_problem(403, "generic-forbidden");
    s.request("GET", "/folders")
        .header("Cookie", &cookie)
        .header("Origin", "https://evil.example")
        .send()
        .await
        .assert_problem(403, "generic-forbidden");
    let r = s
        .request("PUT", "/manager/status")
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", &csrf)
        .header("Origin", &format!("http://{host}"))
        .json(&json!({"status": "running"}))
        .send()
        .await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));

    // A user's login gets 403 (not 401: that would mean "log in again") on admin routes.
    let u = s
        .request("POST", "/auth/session")
        .json(&json!({"type": "keypair", "access_key": USER.0, "secret_key": USER.1}))
        .send()
        .await;
    let (ucookie, _) = cookie_of(&u);
    let ucsrf = u.json()["csrf_token"].as_str().unwrap().to_owned();
    assert_eq!(u.json()["user"]["is_admin"], false);
    for (method, path, body) in [
        ("PUT", "/manager/status", json!({"status": "frozen"})),
        (
            "POST",
            "/config/get",
            json!({"key": "config", "prefix": true}),
        ),
        ("GET", "/resource/usage/month", json!({"month": "202601"})),
    ] {
        s.request(method, path)
            .header("Cookie", &ucookie)
            .header("X-CSRF-Token", &ucsrf)
            .json(&body)
            .send()
            .await
            .assert_problem(403, "generic-forbidden");
    }
    // Signed requests keep the original's 401.
    s.request("PUT", "/manager/status")
        .json(&json!({"status": "frozen"}))
        .signed(&creds(USER))
        .send()
        .await
        .assert_problem(401, "auth-failed");

    // Logout ends the login on the server, not only in the browser.
    let out = s
        .request("DELETE", "/auth/session")
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", &csrf)
        .send()
        .await;
    assert_eq!(out.status, 200);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    s.request("GET", "/auth/session")
        .header("Cookie", &cookie)
        .send()
        .await
        .assert_problem(401, "auth-failed");

    // Expiry: a login unused for longer than ui-session-ttl is gone.
    {
        let db = rusqlite::Connection::open(s.dir.path().join("manager.db")).unwrap();
        db.execute(
            "UPDATE ui_sessions SET expires_at = '2000-01-01T00:00:00.000000Z'",
            [],
        )
        .unwrap();
    }
    s.request("GET", "/auth/session")
        .header("Cookie", &ucookie)
        .send()
        .await
        .assert_problem(401, "auth-failed");
    s.stop().await;
}

/// Waits until a signed info request says the session has `status`.
async fn wait_status(s: &TestServer, name: &str, wanted: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let r = s
            .request("GET", &format!("/kernel/{name}"))
            .signed(&creds(ADMIN))
            .send()
            .await;
        let st = if r.status == 200 {
            r.json()["status"].as_str().unwrap_or_default().to_owned()
        } else {
            format!("HTTP {}", r.status)
        };
        if wanted.contains(&st.as_str()) {
            return st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} is {st}, not {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn the_ui_in_chromium_runs_a_session_uses_folders_and_hides_admin_pages() {
    let s = TestServer::start_with_agent(|_| {}).await;
    let base = format!("http://{}", s.host());
    let shots = shots_dir();
    let b = Browser::start(shots.clone()).await;
    println!("screenshots: {}", shots.display());

    // Login page.
    b.goto(&format!("{base}/")).await;
    b.find("input[name=username]").await;
    assert!(b.url().await.ends_with("/ui/"), "{}", b.url().await);
    b.screenshot("01-login").await;
    b.type_into("input[name=username]", ADMIN_EMAIL).await;
    b.type_into("input[name=password]", "wrong-password").await;
    b.click("form button[type=submit]").await;
    b.wait_text(".form-status", "credential mismatch", 20).await;
    b.clear("input[name=password]").await;
    b.type_into("input[name=password]", ADMIN_PASSWORD).await;
    b.click("form button[type=submit]").await;
    b.wait_text("main h1", "Dashboard", 20).await;
    b.wait_text("main", "CPU", 20).await;
    // Page scripts cannot read the login cookie.
    assert_eq!(b.exec("return document.cookie").await, json!(""));
    b.screenshot("02-dashboard").await;

    // A session from the UI.
    b.click("a[href='#/sessions']").await;
    b.wait_text("main h1", "Sessions", 20).await;
    b.click("#new-session").await;
    b.find("dialog select[name=image]").await;
    b.clear("dialog input[name=name]").await;
    b.type_into("dialog input[name=name]", "ui-session").await;
    let image = setting("BAI_TEST_IMAGE");
    let picked = b
        .exec(&format!(
            "const s = document.querySelector('dialog select[name=image]');
             const o = [...s.options].find(o => o.value.endsWith({:?}.split('/').slice(1).join('/')) || o.value === {:?});
             if (o) {{ s.value = o.value; }}
             return o ? o.value : [...s.options].map(o => o.value).join(' ');",
            image, image
        ))
        .await;
    assert!(
        picked
            .as_str()
            .is_some_and(|v| v.ends_with(image.split_once('/').unwrap().1)),
        "the test image is offered: {picked}"
    );
    b.screenshot("03-new-session").await;
    b.click("dialog button[type=submit]").await;
    b.wait_text("main h1", "ui-session", 20).await;
    wait_status(&s, "ui-session", &["RUNNING"]).await;
    // The page learns it through the event stream (or its slow poll).
    b.wait_text("#session-status", "RUNNING", 30).await;

    // The console: print(6*7) shows 42.
    b.type_into("#console-code", "print(6*7)").await;
    b.click("#console-run").await;
    b.wait_text("#console-output", "42", 60).await;
    b.screenshot("04-session-console").await;

    // The terminal.
    b.click("#tab-terminal").await;
    b.wait_text("main", "Connected", 30).await;
    b.type_into(
        "#terminal",
        &format!("echo $((6*7))-from-the-terminal{ENTER}"),
    )
    .await;
    b.wait_text("#terminal", "42-from-the-terminal", 30).await;
    b.screenshot("05-session-terminal").await;
    b.click("#tab-logs").await;
    b.find(".tab-panel button").await;
    b.click("#tab-files").await;
    b.find("#session-upload").await;
    b.screenshot("06-session-files").await;

    // A folder: create it, upload a file with progress, see it listed.
    b.click("a[href='#/folders']").await;
    b.wait_text("main h1", "Folders", 20).await;
    b.click("#new-folder").await;
    b.type_into("dialog input[name=name]", "ui-data").await;
    b.click("dialog button[type=submit]").await;
    b.click("a[href='#/folders/ui-data']").await;
    b.wait_text("main h1", "ui-data", 20).await;
    let upload_dir = tempfile::tempdir().unwrap();
    let local = upload_dir.path().join("hello-ui.txt");
    let content = "uploaded through the web UI\n".repeat(1000);
    std::fs::write(&local, &content).unwrap();
    b.type_into("#folder-upload", local.to_str().unwrap()).await;
    b.click("#upload-start").await;
    b.wait_text(".upload-progress", "Uploaded 1 file", 30).await;
    b.wait_text("main", "hello-ui.txt", 20).await;
    b.screenshot("07-folder").await;
    let fetched = s
        .request("GET", "/folders/ui-data/download_single?file=hello-ui.txt")
        .signed(&creds(ADMIN))
        .send()
        .await;
    assert_eq!(fetched.status, 200);
    assert_eq!(
        fetched.body,
        content.as_bytes(),
        "the upload arrived intact"
    );

    // Every admin page renders.
    for tab in [
        "users", "keypairs", "policies", "presets", "domains", "groups", "images", "agents",
        "config", "manager",
    ] {
        b.goto(&format!("{base}/ui/#/admin/{tab}")).await;
        b.find(&format!(
            "nav.subnav a[href='#/admin/{tab}'][aria-current=page]"
        ))
        .await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while b.exists("main .loading").await {
            assert!(std::time::Instant::now() < deadline, "{tab} keeps loading");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        assert!(
            !b.exists("main .error").await,
            "admin page {tab} shows an error: {}",
            b.page_text().await
        );
        b.screenshot(&format!("08-admin-{tab}")).await;
        if tab == "users" {
            b.wait_text("main", "user@lablup.com", 5).await;
        }
    }

    // Freeze and unfreeze from the manager page.
    b.goto(&format!("{base}/ui/#/admin/manager")).await;
    b.click("#freeze").await;
    b.click_text("Yes, do it").await;
    b.wait_text("#manager-status", "frozen", 20).await;
    b.click("#unfreeze").await;
    b.wait_text("#manager-status", "running", 20).await;

    // Terminate the session from its page.
    b.goto(&format!("{base}/ui/#/sessions/ui-session")).await;
    b.click("#terminate").await;
    b.click_text("Yes, do it").await;
    wait_status(&s, "ui-session", &["TERMINATED", "HTTP 404"]).await;
    b.wait_text("#session-status", "TERMINATED", 30).await;
    b.screenshot("09-session-terminated").await;

    // Phone width.
    b.set_size(390, 844).await;
    b.goto(&format!("{base}/ui/#/sessions")).await;
    b.wait_text("main", "ui-session", 20).await;
    b.screenshot("10-phone-sessions").await;
    b.set_size(1366, 900).await;

    // Log out: the cookie stops working.
    b.click("#logout").await;
    b.find("input[name=username]").await;
    let after = b
        .exec_async(
            "fetch('/auth/session', {credentials: 'same-origin'}).then(r => arguments[0](r.status))",
        )
        .await;
    assert_ne!(after, json!(200), "logged out");

    // A user (keypair login): no admin pages, and 403 from admin APIs.
    b.click_text("Keypair").await;
    b.type_into("input[name=access_key]", USER.0).await;
    b.type_into("input[name=secret_key]", USER.1).await;
    b.click("form button[type=submit]").await;
    b.wait_text("main h1", "Dashboard", 20).await;
    assert!(
        !b.exists("a[href='#/admin']").await,
        "no Admin link for users"
    );
    b.screenshot("11-user-dashboard").await;
    b.goto(&format!("{base}/ui/#/admin/users")).await;
    b.wait_text("main", "need an administrator", 20).await;
    b.screenshot("12-user-admin-refused").await;
    let statuses: Value = b
        .exec_async(
            "const done = arguments[0];
             (async () => {
               const who = await (await fetch('/auth/session')).json();
               const h = {'Content-Type': 'application/json', 'X-CSRF-Token': who.csrf_token};
               const a = await fetch('/manager/status', {method: 'PUT', headers: h, body: '{\"status\": \"frozen\"}'});
               const b = await fetch('/config/get', {method: 'POST', headers: h, body: '{\"key\": \"config\"}'});
               const c = await fetch('/admin/graphql', {method: 'POST', headers: h,
                   body: JSON.stringify({query: 'query { keypair { access_key secret_key } }'})});
               done([a.status, b.status, await c.json()]);
             })();",
        )
        .await;
    assert_eq!(statuses[0], 403);
    assert_eq!(statuses[1], 403);
    assert_eq!(
        statuses[2]["keypair"],
        json!({"access_key": USER.0, "secret_key": null}),
        "page scripts never see a secret key"
    );
    b.click("#logout").await;
    b.find("input[name=username]").await;
    b.quit().await;
    let n = std::fs::read_dir(&shots).unwrap().count();
    assert!(n >= 20, "screenshots saved: {n}");
    s.stop().await;
}
