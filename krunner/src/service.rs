//! Services: starting the image's declared services (`start-service`), and relaying byte
//! streams to `127.0.0.1:PORT` inside the container (`connect` connections), so services
//! work without any container network.

use crate::{lock, Runner};
use backend_ai_krunner::{to_agent, write_frame};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

impl Runner {
    pub fn start_service(&self, payload: &str) {
        let req: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
        let name = req["name"].as_str().unwrap_or("");
        let port = req["port"].as_u64().unwrap_or(0);
        let result = self.start_service_inner(name, port);
        self.emit_json(to_agent::SERVICE_RESULT, result);
    }

    fn start_service_inner(&self, name: &str, port: u64) -> Value {
        let failed = |e: String| json!({"status": "failed", "error": e});
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return failed(format!("invalid service name '{name}'"));
        }
        let mut services = lock(&self.services);
        if let Some(child) = services.get_mut(name) {
            if matches!(child.try_wait(), Ok(None)) {
                return json!({"status": "running"});
            }
        }
        let def_path = self.cfg.service_defs.join(format!("{name}.json"));
        let def: Value = match std::fs::read_to_string(&def_path).map(|t| serde_json::from_str(&t))
        {
            Ok(Ok(v)) => v,
            _ => return failed(format!("no service definition {}", def_path.display())),
        };
        let argv: Vec<String> = def["command"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str())
                    .map(|s| s.replace("{port}", &port.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let Some((prog, args)) = argv.split_first() else {
            return failed("the service definition has no command".into());
        };
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .current_dir(&self.cfg.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        if let Some(env) = def["env"].as_object() {
            for (k, v) in env {
                cmd.env(k, v.as_str().unwrap_or_default());
            }
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return failed(format!("cannot start {prog}: {e}")),
        };
        // Jupyter takes seconds to start, more on a busy host: the definition may say how
        // long to wait (`start-timeout`, seconds, at most 120).
        let wait = def["start-timeout"].as_u64().unwrap_or(30).clamp(1, 120);
        let deadline = Instant::now() + Duration::from_secs(wait);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port as u16)).is_ok() {
                services.insert(name.to_owned(), child);
                return json!({"status": "started"});
            }
            if let Ok(Some(s)) = child.try_wait() {
                return failed(format!("{name} exited with {s}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        failed(format!(
            "{name} did not listen on port {port} within {wait} s"
        ))
    }
}

/// Relays bytes between an agent connection and `127.0.0.1:port` inside the container.
pub fn proxy(mut agent: UnixStream, port: &str) {
    let target = port
        .trim()
        .parse::<u16>()
        .map_err(|e| e.to_string())
        .and_then(|p| TcpStream::connect(("127.0.0.1", p)).map_err(|e| e.to_string()));
    let tcp = match target {
        Ok(t) => t,
        Err(e) => {
            let _ = write_frame(
                &mut agent,
                to_agent::CONNECTED,
                json!({"error": e}).to_string().as_bytes(),
            );
            return;
        }
    };
    if write_frame(&mut agent, to_agent::CONNECTED, b"{}").is_err() {
        return;
    }
    let (Ok(mut a2), Ok(mut t2)) = (agent.try_clone(), tcp.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a2, &mut t2);
        let _ = t2.shutdown(std::net::Shutdown::Write);
    });
    let mut tcp = tcp;
    let _ = std::io::copy(&mut tcp, &mut agent);
    let _ = agent.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}
