//! A headless Chromium driven over the W3C WebDriver protocol (Debian's `chromium` and
//! `chromium-driver`), for the web UI tests: chromedriver on a free loopback port, one
//! browser session with a fresh profile, and the handful of commands the tests use.

use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
pub const ENTER: &str = "\u{E007}";

pub struct Browser {
    http: reqwest::Client,
    base: String,
    driver: Child,
    _profile: tempfile::TempDir,
    /// Where screenshots go.
    pub shots: std::path::PathBuf,
}

fn find_program(name: &str, fallback: &str) -> String {
    let path = std::env::var(name).unwrap_or_else(|_| fallback.to_owned());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: install Debian's chromium and chromium-driver (scripts/test.sh does)"
    );
    path
}

impl Browser {
    /// Starts chromedriver and a headless Chromium; screenshots go to `shots`.
    pub async fn start(shots: std::path::PathBuf) -> Browser {
        let driver_bin = find_program("BAI_CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = find_program("BAI_CHROMIUM", "/usr/bin/chromium");
        std::fs::create_dir_all(&shots).expect("screenshot dir");
        let port = super::free_port();
        use std::os::unix::process::CommandExt;
        // Its own process group, so the browsers it starts end with it.
        let driver = Command::new(driver_bin)
            .process_group(0)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut b = Browser {
            http: reqwest::Client::new(),
            base: format!("http://127.0.0.1:{port}"),
            driver,
            _profile: profile,
            shots,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = b
                .http
                .get(format!("{}/status", b.base))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1366,900".to_owned(),
            format!("--user-data-dir={}", b._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let resp = b.raw("POST", "/session", Some(caps)).await;
        let id = resp["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {resp}"))
            .to_owned();
        b.base = format!("{}/session/{id}", b.base);
        b
    }

    async fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self
                .http
                .post(&url)
                .json(&body.unwrap_or_else(|| json!({}))),
        };
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("webdriver {path}: {e}"));
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        v["value"].clone()
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let v = self.raw(method, path, body).await;
        match v.get("error") {
            Some(e) => Err(format!("{e}: {}", v["message"])),
            None => Ok(v),
        }
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url})))
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Switches to a window other than the current one that opened meanwhile (a link or
    /// button opening a new tab), waiting up to 30 s for it.
    pub async fn switch_to_new_window(&self) {
        let current = self.cmd("GET", "/window", None).await.unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let handles = self
                .cmd("GET", "/window/handles", None)
                .await
                .unwrap_or_default();
            let other = handles
                .as_array()
                .into_iter()
                .flatten()
                .find(|h| **h != current)
                .cloned();
            if let Some(handle) = other {
                self.cmd("POST", "/window", Some(json!({"handle": handle})))
                    .await
                    .unwrap_or_else(|e| panic!("switching windows: {e}"));
                return;
            }
            assert!(Instant::now() < deadline, "no new window opened");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    pub async fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .await
            .unwrap_or_default()
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn try_find(&self, css: &str) -> Option<String> {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .ok()?;
        v[ELEMENT].as_str().map(str::to_owned)
    }

    /// The element matching `css`, waiting up to 30 s for it to appear.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(id) = self.try_find(css).await {
                return id;
            }
            if Instant::now() > deadline {
                self.screenshot("failed-find").await;
                panic!(
                    "no element {css} on {} after 30 s; page text: {}",
                    self.url().await,
                    self.page_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    pub async fn exists(&self, css: &str) -> bool {
        self.try_find(css).await.is_some()
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.cmd("POST", &format!("/element/{id}/click"), Some(json!({})))
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Clicks the button (or link) whose text is `text`.
    pub async fn click_text(&self, text: &str) {
        let xpath = format!(
            "//*[(self::button or self::a) and normalize-space(.)='{text}' and not(ancestor::*[@hidden])]"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let id = loop {
            let v = self
                .cmd(
                    "POST",
                    "/elements",
                    Some(json!({"using": "xpath", "value": xpath})),
                )
                .await
                .unwrap_or(Value::Null);
            // The last match: dialogs are appended at the end of the page.
            if let Some(id) = v
                .as_array()
                .and_then(|a| a.last())
                .and_then(|e| e[ELEMENT].as_str())
            {
                break id.to_owned();
            }
            assert!(Instant::now() < deadline, "no button {text:?}");
            tokio::time::sleep(Duration::from_millis(150)).await;
        };
        self.cmd("POST", &format!("/element/{id}/click"), Some(json!({})))
            .await
            .unwrap_or_else(|e| panic!("click {text:?}: {e}"));
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await
        .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    pub async fn clear(&self, css: &str) {
        let id = self.find(css).await;
        let _ = self
            .cmd("POST", &format!("/element/{id}/clear"), Some(json!({})))
            .await;
    }

    pub async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.cmd("GET", &format!("/element/{id}/text"), None)
            .await
            .unwrap_or_default()
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn page_text(&self) -> String {
        match self.try_find("body").await {
            Some(id) => self
                .cmd("GET", &format!("/element/{id}/text"), None)
                .await
                .unwrap_or_default()
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            None => String::new(),
        }
    }

    /// Waits until the text of `css` contains `needle` (up to `secs`).
    pub async fn wait_text(&self, css: &str, needle: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let t = match self.try_find(css).await {
                Some(_) => self.text(css).await,
                None => String::new(),
            };
            if t.contains(needle) {
                return t;
            }
            if Instant::now() > deadline {
                self.screenshot("failed-wait").await;
                panic!("{css} never showed {needle:?}; it shows {t:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs a script in the page (its last `return` is the answer).
    pub async fn exec(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Runs an async script; it calls `arguments[0](answer)` when done.
    pub async fn exec_async(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": []})),
        )
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    pub async fn set_size(&self, width: u32, height: u32) {
        let _ = self
            .cmd(
                "POST",
                "/window/rect",
                Some(json!({"width": width, "height": height})),
            )
            .await;
    }

    /// Saves a PNG of the page as `{name}.png` in the screenshot folder.
    pub async fn screenshot(&self, name: &str) {
        let Ok(v) = self.cmd("GET", "/screenshot", None).await else {
            return;
        };
        if let Some(png) = v
            .as_str()
            .and_then(|s| data_encoding::BASE64.decode(s.as_bytes()).ok())
        {
            let _ = std::fs::write(self.shots.join(format!("{name}.png")), png);
        }
    }

    /// Closes the browser; dropping the value then ends chromedriver.
    pub async fn quit(self) {
        let _ = self.raw("DELETE", "", None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and the Chromium processes it started (one process group, ours).
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.driver.wait();
    }
}
