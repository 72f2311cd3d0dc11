//! Browser apps through the app proxy, with real Docker and real Jupyter: the launch URL
//! and its one-time token, Jupyter's REST API and a kernel's WebSocket channel through the
//! proxy, what the app's service receives (no UI cookie, no Authorization header), pages
//! of the app that try to use the API with the user's login (in headless Chromium), other
//! users, and the app closing with its session.

mod common;

use common::browser::Browser;
use common::{creds, setting, Containers, Resp, TestServer, DOMAIN_ADMIN, USER};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const USER_EMAIL: &str = "user@lablup.com";
const USER_PASSWORD: &str = "C8qnIo29";

async fn start() -> (TestServer, Containers) {
    let s = TestServer::start_with_agent(|c| c.manager.app_ports = "0".into()).await;
    let id = s.app().config.agent.id.clone();
    (s, Containers(id))
}

async fn create_session(s: &TestServer, token: &str) {
    let r = s
        .request("POST", "/kernel")
        .json(
            &json!({"clientSessionToken": token, "image": setting("BAI_TEST_IMAGE"),
                      "group_name": "default", "domain_name": "default"}),
        )
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
}

/// Launches `app` of session `token` as `who`: the launch URL's port and path.
async fn launch(s: &TestServer, token: &str, app: &str, who: (&str, &str)) -> Resp {
    s.request("POST", &format!("/stream/kernel/{token}/apps/{app}/launch"))
        .signed(&creds(who))
        .send()
        .await
}

fn url_parts(launched: &Resp) -> (SocketAddr, String) {
    let url = launched.json()["url"].as_str().unwrap().to_owned();
    let rest = url.strip_prefix("http://").unwrap();
    let (hostport, path) = rest.split_at(rest.find('/').unwrap());
    (hostport.parse().unwrap(), path.to_owned())
}

/// Trades a launch path for the app cookie (`name=value`).
async fn app_cookie(app: SocketAddr, launch_path: &str) -> String {
    let r = common::Req::new(app, "GET", launch_path).send().await;
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("location"), Some("/"));
    let set = r.header("set-cookie").unwrap();
    assert!(set.contains("HttpOnly") && set.contains(&format!("bai_app_{}=", app.port())));
    set.split(';').next().unwrap().to_owned()
}

async fn wait_for<F, Fut, T>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `Set-Cookie` value of Jupyter's XSRF cookie from a page.
fn xsrf_of(r: &Resp) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.strip_prefix("_xsrf=")
                .map(|v| v.split(';').next().unwrap().to_owned())
        })
}

#[tokio::test]
async fn jupyter_runs_a_cell_through_the_app_proxy() {
    let (s, _c) = start().await;
    create_session(&s, "nbook").await;

    // The session lists its apps.
    let apps = s
        .request("GET", "/stream/kernel/nbook/apps")
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(apps.status, 200);
    let names: Vec<String> = apps
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["jupyter", "http"]);

    // Someone else cannot launch it; an unknown app is 404.
    launch(&s, "nbook", "jupyter", DOMAIN_ADMIN)
        .await
        .assert_problem(404, "kernel-not-found");
    launch(&s, "nbook", "nope", USER)
        .await
        .assert_problem(404, "app-not-found");

    let launched = launch(&s, "nbook", "jupyter", USER).await;
    assert_eq!(launched.status, 200, "{:?}", launched.json());
    assert_eq!(launched.json()["expiresIn"], 60);
    let (app, launch_path) = url_parts(&launched);
    assert_eq!(app.ip(), s.addr.ip());
    assert_ne!(app.port(), s.addr.port());

    // Without the cookie the app is closed; the token works once.
    let r = common::Req::new(app, "GET", "/api/status").send().await;
    assert_eq!(r.status, 403);
    let cookie = app_cookie(app, &launch_path).await;
    let again = common::Req::new(app, "GET", &launch_path).send().await;
    assert_eq!(again.status, 403);
    let forged = common::Req::new(app, "GET", "/_bai/launch?token=forged")
        .send()
        .await;
    assert_eq!(forged.status, 403);

    // Jupyter's REST API (it starts on demand; the first request waits for it).
    let status = common::Req::new(app, "GET", "/api/status")
        .header("Cookie", &cookie)
        .send()
        .await;
    assert_eq!(
        status.status,
        200,
        "{}",
        String::from_utf8_lossy(&status.body)
    );
    assert!(status.json()["started"].is_string());

    let result = jupyter_cell(app, &cookie, "python3", "6*7").await;
    assert_eq!(result, "42");

    // A page of another origin cannot drive the app (its WebSocket or its API).
    let cross = common::Req::new(app, "GET", "/api/status")
        .header("Cookie", &cookie)
        .header("Origin", &format!("http://{}", s.host()))
        .send()
        .await;
    assert_eq!(cross.status, 403);

    // The app closes with its session.
    let r = s
        .request("DELETE", "/kernel/nbook")
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(r.status, 200);
    wait_for("the app's port to close", 30, || async move {
        tokio::net::TcpStream::connect(app)
            .await
            .is_err()
            .then_some(())
    })
    .await;
}

/// Creates a notebook and a kernel of `kernel_name` through Jupyter's REST API on the app
/// proxy, runs `code` on the kernel's WebSocket channel, and answers its result's text.
async fn jupyter_cell(app: SocketAddr, cookie: &str, kernel_name: &str, code: &str) -> String {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    // A page sets Jupyter's XSRF cookie, which its changing requests echo.
    let tree = common::Req::new(app, "GET", "/tree")
        .header("Cookie", cookie)
        .send()
        .await;
    assert_eq!(tree.status, 200);
    let xsrf = xsrf_of(&tree).expect("Jupyter's _xsrf cookie");
    let cookies = format!("{cookie}; _xsrf={xsrf}");
    let nb = common::Req::new(app, "POST", "/api/contents")
        .header("Cookie", &cookies)
        .header("X-XSRFToken", &xsrf)
        .json(&json!({"type": "notebook"}))
        .send()
        .await;
    assert_eq!(nb.status, 201, "{}", String::from_utf8_lossy(&nb.body));
    assert!(nb.json()["path"].as_str().unwrap().ends_with(".ipynb"));
    let kernel = common::Req::new(app, "POST", "/api/kernels")
        .header("Cookie", &cookies)
        .header("X-XSRFToken", &xsrf)
        .json(&json!({"name": kernel_name}))
        .send()
        .await;
    assert_eq!(
        kernel.status,
        201,
        "{}",
        String::from_utf8_lossy(&kernel.body)
    );
    let kid = kernel.json()["id"].as_str().unwrap().to_owned();

    // The kernel's WebSocket channel, through the proxy.
    let mut req = format!("ws://{app}/api/kernels/{kid}/channels")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("Cookie", cookies.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("ws through the proxy");
    let msg_id = uuid::Uuid::new_v4().to_string();
    let execute = json!({
        "header": {"msg_id": msg_id, "username": "test", "session": uuid::Uuid::new_v4().to_string(),
                   "msg_type": "execute_request", "version": "5.3", "date": chrono::Utc::now().to_rfc3339()},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": false, "store_history": true, "user_expressions": {},
                    "allow_stdin": false, "stop_on_error": true},
    });
    ws.send(Message::text(execute.to_string())).await.unwrap();
    // The kernel may still be starting: its first answers can take a while.
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(Ok(m)) = ws.next().await {
            let Ok(text) = m.to_text() else { continue };
            let Ok(v) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            // IPython answers an execute_result, the IR kernel a display_data.
            let answer = matches!(
                v["msg_type"].as_str(),
                Some("execute_result" | "display_data")
            );
            if answer && v["parent_header"]["msg_id"] == msg_id.as_str() {
                return v["content"]["data"]["text/plain"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
            }
        }
        panic!("the kernel channel closed before the result");
    })
    .await
    .expect("the cell's result within 120 s")
}

#[tokio::test]
async fn the_r_image_offers_jupyter_with_the_ir_kernel() {
    let (s, _c) = start().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/images/build.sh");
    let out = std::process::Command::new(&script)
        .args(["--image", "r"])
        .output()
        .unwrap();
    let image = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let r = s
        .request("POST", "/kernel")
        .json(&json!({"clientSessionToken": "rlab", "image": image}))
        .signed(&creds(USER))
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let launched = launch(&s, "rlab", "jupyter", USER).await;
    assert_eq!(launched.status, 200, "{:?}", launched.json());
    let (app, launch_path) = url_parts(&launched);
    let cookie = app_cookie(app, &launch_path).await;
    let specs = common::Req::new(app, "GET", "/api/kernelspecs")
        .header("Cookie", &cookie)
        .send()
        .await;
    assert_eq!(
        specs.status,
        200,
        "{}",
        String::from_utf8_lossy(&specs.body)
    );
    assert!(
        specs.json()["kernelspecs"]["ir"].is_object(),
        "{:?}",
        specs.json()
    );
    assert_eq!(jupyter_cell(app, &cookie, "ir", "6*7").await, "[1] 42");
}

/// A service for the session's `http` app that answers the headers it received
/// (`/headers`) and serves `probe.html` from the work directory.
const ECHO_SERVER: &str = r#"
import http.server, json, os, subprocess, sys
src = '''
import http.server, json
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/headers"):
            body = json.dumps([[k, v] for k, v in self.headers.items()]).encode()
            ctype = "application/json"
        else:
            body = open("/home/work/probe.html", "rb").read()
            ctype = "text/html"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", 8080), H).serve_forever()
'''
open('/home/work/echo.py', 'w').write(src)
subprocess.Popen([sys.executable, '/home/work/echo.py'], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
# Listening before the app is opened: else the image's own `http` service would take the port.
import socket, time
deadline = time.time() + 90
while time.time() < deadline:
    try:
        socket.create_connection(('127.0.0.1', 8080), 1).close()
        print('started')
        break
    except OSError:
        time.sleep(0.05)
"#;

/// The page an app serves that tries to use the API with its user's UI login.
fn probe_page(api: &str) -> String {
    format!(
        r#"<!doctype html><title>probe</title><pre id="out">running</pre><script>
(async () => {{
  const out = {{}};
  try {{
    const r = await fetch("{api}/admin/graphql", {{method: "POST", credentials: "include",
      headers: {{"Content-Type": "application/json"}},
      body: JSON.stringify({{query: "{{ keypair {{ access_key secret_key }} }}"}})}});
    out.read = "read " + r.status + " " + (await r.text()).slice(0, 200);
  }} catch (e) {{ out.read = "blocked " + e; }}
  try {{
    const r = await fetch("{api}/folders", {{method: "POST", mode: "no-cors", credentials: "include",
      headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify({{name: "stolen"}})}});
    out.write = "sent " + r.type + " " + r.status;
  }} catch (e) {{ out.write = "blocked " + e; }}
  try {{
    const r = await fetch("{api}/auth/session", {{credentials: "include"}});
    out.session = "read " + r.status + " " + (await r.text()).slice(0, 200);
  }} catch (e) {{ out.session = "blocked " + e; }}
  document.getElementById("out").textContent = JSON.stringify(out);
}})();
</script>"#
    )
}

/// Runs `code` in query mode until it finishes; the answers of every round, in order.
async fn run_code(s: &TestServer, token: &str, code: &str) -> Value {
    let mut answers = Vec::new();
    let mut body = json!({"mode": "query", "runId": "r1", "code": code});
    loop {
        let r = s
            .request("POST", &format!("/kernel/{token}"))
            .json(&body)
            .signed(&creds(USER))
            .send()
            .await;
        assert_eq!(r.status, 200, "{:?}", r.json());
        let answer = r.json();
        let finished = answer["result"]["status"] != "continued";
        answers.push(answer);
        if finished {
            return Value::Array(answers);
        }
        body = json!({"mode": "continue", "runId": "r1", "code": ""});
    }
}

#[tokio::test]
async fn app_pages_cannot_act_as_their_user() {
    let (s, _c) = start().await;
    create_session(&s, "probe").await;
    let api = format!("http://{}", s.host());
    let page = probe_page(&api);
    let write_page = format!("open('/home/work/probe.html', 'w').write({})", json!(page));
    run_code(&s, "probe", &write_page).await;
    let out = run_code(&s, "probe", ECHO_SERVER).await;
    assert!(out.to_string().contains("started"), "{out}");

    let launched = launch(&s, "probe", "http", USER).await;
    assert_eq!(launched.status, 200, "{:?}", launched.json());
    let (app, launch_path) = url_parts(&launched);
    let cookie = app_cookie(app, &launch_path).await;

    // What the service receives: its own cookies, never the UI login, the app cookie or an
    // Authorization header.
    let seen: Value = wait_for("the echo service", 60, || {
        let cookie = cookie.clone();
        async move {
            let r = common::Req::new(app, "GET", "/headers")
                .header(
                    "Cookie",
                    &format!("bai_session=ui-login-secret; {cookie}; theirs=kept"),
                )
                .header(
                    "Authorization",
                    "BackendAI signMethod=HMAC-SHA256, credential=AKIA:x",
                )
                .send()
                .await;
            (r.status == 200 && r.header("content-type") == Some("application/json"))
                .then(|| r.json())
        }
    })
    .await;
    let headers: Vec<(String, String)> = seen
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_ascii_lowercase(),
                p[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        !headers.iter().any(|(k, _)| k == "authorization"),
        "{headers:?}"
    );
    let cookies: Vec<&String> = headers
        .iter()
        .filter(|(k, _)| k == "cookie")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(cookies, [&"theirs=kept".to_owned()], "{headers:?}");

    // In a browser logged in to the UI, the app's page cannot read API answers with the
    // login, nor make a changing request with it.
    let shots = std::env::var("BAI_TEST_OUTPUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
        .join("ui-screenshots");
    let b = Browser::start(shots).await;
    b.goto(&format!("{api}/ui/")).await;
    b.type_into("input[name=username]", USER_EMAIL).await;
    b.type_into("input[name=password]", USER_PASSWORD).await;
    b.click("form button[type=submit]").await;
    b.find("a[href='#/sessions']").await;

    // A fresh launch for the browser (the one above was used).
    let launched = launch(&s, "probe", "http", USER).await;
    let url = launched.json()["url"].as_str().unwrap().to_owned();
    b.goto(&url).await;
    let text = b.wait_text("#out", "write", 60).await;
    b.screenshot("app-probe").await;
    let out: Value = serde_json::from_str(&text).unwrap();
    assert!(
        out["read"].as_str().unwrap().starts_with("blocked"),
        "{out}"
    );
    assert!(
        out["session"].as_str().unwrap().starts_with("blocked"),
        "{out}"
    );
    assert!(
        !out["read"].to_string().contains("secret_key\":\""),
        "{out}"
    );
    b.quit().await;
    // The no-cors POST went out, but the server refused it: no folder was made.
    let folders = s
        .request("GET", "/folders")
        .signed(&creds(USER))
        .send()
        .await;
    assert!(
        !folders.json().to_string().contains("stolen"),
        "{:?}",
        folders.json()
    );
}

#[tokio::test]
async fn a_student_opens_jupyter_from_the_ui_and_runs_a_cell() {
    let (s, _c) = start().await;
    create_session(&s, "student").await;
    let api = format!("http://{}", s.host());
    let shots = std::env::var("BAI_TEST_OUTPUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
        .join("ui-screenshots");
    let b = Browser::start(shots).await;
    b.set_size(1400, 900).await;
    b.goto(&format!("{api}/ui/")).await;
    b.type_into("input[name=username]", USER_EMAIL).await;
    b.type_into("input[name=password]", USER_PASSWORD).await;
    b.click("form button[type=submit]").await;
    b.click("a[href='#/sessions']").await;
    // The session list shows the session's apps; its page has a button per app.
    b.find("#new-session").await;
    b.find("button.app[data-app=jupyter]").await;
    b.screenshot("sessions-apps").await;
    b.goto(&format!("{api}/ui/#/sessions/student")).await;
    b.find("button[data-app=jupyter]").await;
    b.screenshot("session-apps").await;
    b.click("button[data-app=jupyter]").await;
    b.switch_to_new_window().await;
    // Jupyter's file tree, on the app's own origin.
    wait_for("Jupyter's tree", 120, || async {
        let u = b.url().await;
        (u.contains("/tree") && !u.starts_with(&api)).then_some(())
    })
    .await;
    b.find("#notebook_list").await;
    b.screenshot("jupyter-tree").await;
    // A new notebook (as the New menu does), then a cell computing 6*7.
    let created = b
        .exec_async(
            "const done = arguments[arguments.length - 1];
             const xsrf = (document.cookie.match(/_xsrf=([^;]+)/) || [])[1] || '';
             fetch('/api/contents', {method: 'POST', headers: {'X-XSRFToken': xsrf, 'Content-Type': 'application/json'},
                                     body: JSON.stringify({type: 'notebook'})})
               .then(r => r.json()).then(j => done(j.path)).catch(e => done('failed ' + e));",
        )
        .await;
    let path = created.as_str().unwrap().to_owned();
    assert!(path.ends_with(".ipynb"), "{created}");
    let origin = b.url().await;
    let origin = origin.split("/tree").next().unwrap().to_owned();
    b.goto(&format!("{origin}/notebooks/{path}")).await;
    b.find(".CodeMirror").await;
    wait_for("the notebook's kernel", 120, || async {
        let ready = b
            .exec(
                "return !!(window.Jupyter && Jupyter.notebook && Jupyter.notebook.kernel
                           && Jupyter.notebook.kernel.is_connected());",
            )
            .await;
        (ready == json!(true)).then_some(())
    })
    .await;
    b.exec(
        "const c = Jupyter.notebook.get_cell(0); c.set_text('6*7'); \
         Jupyter.notebook.select(0); Jupyter.notebook.execute_cell(); return true;",
    )
    .await;
    let out = b.wait_text(".output_area", "42", 120).await;
    assert!(out.contains("42"), "{out}");
    b.screenshot("jupyter-notebook").await;
    b.quit().await;
}

#[tokio::test]
async fn apps_are_served_over_https_when_the_gateway_is() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (c2, k2) = (cert.clone(), key.clone());
    let s = TestServer::start_with_agent(move |c| {
        c.manager.app_ports = "0".into();
        c.manager.ssl_enabled = true;
        c.manager.ssl_cert = c2;
        c.manager.ssl_privkey = k2;
    })
    .await;
    let _c = Containers(s.app().config.agent.id.clone());
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap(),
        )
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let host = s.host();
    let signed = |method: &str, path: &str| {
        let (date, auth) = backend_ai_manager::signing::client_headers(
            &creds(USER),
            method,
            path,
            &host,
            "application/json",
            chrono::Utc::now(),
        );
        http.request(method.parse().unwrap(), format!("https://{host}{path}"))
            .header("Date", date)
            .header("Authorization", auth)
            .header("Content-Type", "application/json")
            .header("X-BackendAI-Version", "v4.20190315")
    };
    let r = signed("POST", "/kernel")
        .body(
            json!({"clientSessionToken": "tls-app", "image": setting("BAI_TEST_IMAGE")})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let launched: Value = signed("POST", "/stream/kernel/tls-app/apps/jupyter/launch")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = launched["url"].as_str().unwrap();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let r = http.get(url).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.contains("Secure") && set.contains("HttpOnly"), "{set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    let origin = url.split("/_bai").next().unwrap();
    let status = http
        .get(format!("{origin}/api/status"))
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    assert!(status.json::<Value>().await.unwrap()["started"].is_string());
    // Plain HTTP on the app's port gets no app.
    let plain = format!("http://{}", origin.strip_prefix("https://").unwrap());
    assert!(http
        .get(plain)
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true));
}
