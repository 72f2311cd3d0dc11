//! A kernel backend without containers (`agent.backend = "noop"`), for scale and fault tests
//! of the manager: kernels are records that run no code. Creation takes
//! `agent.noop-create-delay` seconds (to play a slow host), a run finishes at once with no
//! output, and files live in a per-kernel scratch directory (made on first use) as with
//! Docker, so everything around a kernel (scheduling, slots, files, ends, reconciliation)
//! works as usual.

use super::backend::{KernelBackend, KernelInfo, KernelSpec, RegistryCredentials, Termination};
use super::docker::MAX_FILE_BYTES;
use super::resources::{DeviceAllocMap, CUDA_SLOT};
use super::runner::ExecResult;
use super::{files, AgentError};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct NoopConfig {
    pub scratch_root: PathBuf,
    /// How long creating a kernel takes.
    pub create_delay: Duration,
}

struct NoopKernel {
    spec: KernelSpec,
}

pub struct NoopBackend {
    cfg: NoopConfig,
    kernels: Mutex<HashMap<String, NoopKernel>>,
    devices: Option<Arc<DeviceAllocMap>>,
    /// Where ends are reported, once the daemon listens.
    ends: Mutex<Option<mpsc::Sender<Termination>>>,
}

fn unsupported(what: &str) -> AgentError {
    AgentError::InvalidInput(format!("kernels of the no-op backend have no {what}"))
}

impl NoopBackend {
    pub fn new(cfg: NoopConfig) -> Self {
        NoopBackend {
            cfg,
            kernels: Mutex::new(HashMap::new()),
            devices: None,
            ends: Mutex::new(None),
        }
    }

    pub fn with_devices(mut self, devices: Arc<DeviceAllocMap>) -> Self {
        self.devices = Some(devices);
        self
    }

    fn kernels(&self) -> MutexGuard<'_, HashMap<String, NoopKernel>> {
        self.kernels.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn work_dir(&self, id: &str) -> PathBuf {
        self.cfg.scratch_root.join(id).join("work")
    }

    /// The kernel's work directory. It is made on first use, inside the blocking task
    /// that touches files: a kernel whose files are never touched costs no directory
    /// (making one per kernel was a third of the CPU time of the scheduler scale test).
    fn work_dir_made(work: &std::path::Path) -> Result<(), AgentError> {
        std::fs::create_dir_all(work)
            .map_err(|e| AgentError::Failure(format!("{}: {e}", work.display())))
    }

    fn known(&self, id: &str) -> Result<(), AgentError> {
        if self.kernels().contains_key(id) {
            Ok(())
        } else {
            Err(AgentError::NotFound(id.to_owned()))
        }
    }

    /// The folders mounted into a kernel (its file API reaches them as the container would).
    fn mounts(&self, id: &str) -> Result<Vec<super::backend::MountSpec>, AgentError> {
        self.kernels()
            .get(id)
            .map(|k| k.spec.mounts.clone())
            .ok_or_else(|| AgentError::NotFound(id.to_owned()))
    }

    /// Forgets a kernel and its files and devices; whether it existed.
    async fn remove(&self, id: &str) -> bool {
        let existed = self.kernels().remove(id).is_some();
        if let Some(map) = &self.devices {
            map.release(id);
        }
        let dir = self.cfg.scratch_root.join(id);
        let _ = tokio::task::spawn_blocking(move || {
            if dir.exists() {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!("cannot remove {}: {e}", dir.display());
                }
            }
        })
        .await;
        existed
    }
}

#[async_trait::async_trait]
impl KernelBackend for NoopBackend {
    fn devices(&self) -> Option<&Arc<DeviceAllocMap>> {
        self.devices.as_ref()
    }

    /// Every image is "present": nothing is ever pulled.
    async fn has_image(&self, _image: &str) -> bool {
        true
    }

    async fn pull_image(
        &self,
        _image: &str,
        _credentials: Option<&RegistryCredentials>,
        _progress: &mut (dyn FnMut(String) + Send),
    ) -> Result<(), AgentError> {
        Ok(())
    }

    async fn create_kernel(&self, id: &str, spec: &KernelSpec) -> Result<KernelInfo, AgentError> {
        let id = uuid::Uuid::parse_str(id)
            .map_err(|_| AgentError::InvalidInput(format!("'{id}' is not a kernel id")))?
            .hyphenated()
            .to_string();
        {
            let mut kernels = self.kernels();
            if kernels.contains_key(&id) {
                return Err(AgentError::InvalidInput(format!(
                    "kernel {id} exists already"
                )));
            }
            kernels.insert(id.clone(), NoopKernel { spec: spec.clone() });
        }
        let wanted = spec.slots.get(CUDA_SLOT);
        let made = async {
            if wanted > rust_decimal::Decimal::ZERO {
                let map = self.devices.as_ref().ok_or_else(|| {
                    AgentError::InvalidInput(format!("this agent has no {CUDA_SLOT}"))
                })?;
                map.allocate(&id, wanted)?;
            }
            if !self.cfg.create_delay.is_zero() {
                tokio::time::sleep(self.cfg.create_delay).await;
            }
            Ok(())
        }
        .await;
        match made {
            Ok(()) => Ok(KernelInfo {
                container_id: format!("noop-{}", id.replace('-', "")),
                id,
                service_ports: Vec::new(),
            }),
            Err(e) => {
                self.remove(&id).await;
                Err(e)
            }
        }
    }

    /// A run finishes at once: it ran nothing, so it printed nothing.
    async fn execute(
        &self,
        id: &str,
        run_id: Option<String>,
        _mode: &str,
        _code: &str,
        _opts: &Value,
        _flush_timeout: Option<Duration>,
    ) -> Result<ExecResult, AgentError> {
        self.known(id)?;
        Ok(ExecResult {
            run_id: run_id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
            status: "finished".into(),
            exit_code: Some(0),
            options: None,
            console: Vec::new(),
            files: Vec::new(),
        })
    }

    async fn interrupt(&self, id: &str) -> Result<(), AgentError> {
        self.known(id)
    }

    async fn complete(
        &self,
        id: &str,
        _code: &str,
        _opts: &Value,
    ) -> Result<Vec<String>, AgentError> {
        self.known(id)?;
        Ok(Vec::new())
    }

    async fn start_service(&self, id: &str, service: &str) -> Result<Value, AgentError> {
        self.known(id)?;
        Err(unsupported(&format!("service '{service}'")))
    }

    async fn open_runner_stream(
        &self,
        id: &str,
        _kind: &str,
        _payload: &[u8],
    ) -> Result<tokio::net::UnixStream, AgentError> {
        self.known(id)?;
        Err(unsupported("terminal"))
    }

    async fn connect_service(
        &self,
        id: &str,
        service: &str,
    ) -> Result<tokio::net::UnixStream, AgentError> {
        self.known(id)?;
        Err(unsupported(&format!("service '{service}'")))
    }

    async fn upload_file(&self, id: &str, path: &str, data: &[u8]) -> Result<(), AgentError> {
        if data.len() as u64 > MAX_FILE_BYTES {
            return Err(AgentError::InvalidInput(format!(
                "files must be smaller than {MAX_FILE_BYTES} bytes"
            )));
        }
        let mounts = self.mounts(id)?;
        let (root, path, data) = (self.work_dir(id), path.to_owned(), data.to_vec());
        files::job(move || {
            Self::work_dir_made(&root)?;
            files::write(&root, &mounts, &path, &data, None)
        })
        .await
    }

    async fn download_file(&self, id: &str, path: &str) -> Result<Vec<u8>, AgentError> {
        let mounts = self.mounts(id)?;
        let (root, path) = (self.work_dir(id), path.to_owned());
        files::job(move || {
            Self::work_dir_made(&root)?;
            files::read(&root, &mounts, &path, MAX_FILE_BYTES)
        })
        .await
    }

    async fn list_files(&self, id: &str, path: &str) -> Result<Value, AgentError> {
        let mounts = self.mounts(id)?;
        let (root, path) = (self.work_dir(id), path.to_owned());
        files::job(move || {
            Self::work_dir_made(&root)?;
            files::list(&root, &mounts, &path)
        })
        .await
    }

    async fn logs(&self, id: &str) -> Result<String, AgentError> {
        let kernels = self.kernels();
        let k = kernels
            .get(id)
            .ok_or_else(|| AgentError::NotFound(id.to_owned()))?;
        Ok(format!(
            "no-op kernel {id} of {} (runs no code)\n",
            k.spec.image
        ))
    }

    async fn is_running(&self, id: &str) -> Result<bool, AgentError> {
        self.known(id).map(|()| true)
    }

    async fn destroy_kernel_because(&self, id: &str, reason: &str) -> Result<(), AgentError> {
        if !self.remove(id).await {
            return Err(AgentError::NotFound(id.to_owned()));
        }
        let ends = self.ends.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(tx) = ends {
            let _ = tx
                .send(Termination {
                    kernel_id: id.to_owned(),
                    exit_code: None,
                    reason: reason.to_owned(),
                })
                .await;
        }
        Ok(())
    }

    async fn restart_kernel(&self, id: &str) -> Result<KernelInfo, AgentError> {
        self.known(id)?;
        Ok(KernelInfo {
            id: id.to_owned(),
            container_id: format!("noop-{}", id.replace('-', "")),
            service_ports: Vec::new(),
        })
    }

    async fn forget_kernel(&self, id: &str) -> Result<(), AgentError> {
        self.remove(id).await;
        Ok(())
    }

    /// No-op kernels live in memory: an agent that restarts has none.
    async fn recover(&self) -> Result<(Vec<String>, Vec<String>), AgentError> {
        Ok((Vec::new(), Vec::new()))
    }

    async fn kernel_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.kernels().keys().cloned().collect();
        ids.sort();
        ids
    }

    async fn images(&self) -> Result<Vec<(String, String)>, AgentError> {
        Ok(Vec::new())
    }

    /// Nothing runs, so nothing is used; the memory limit is what was granted.
    async fn kernel_stat(&self, id: &str) -> Result<Value, AgentError> {
        let kernels = self.kernels();
        let k = kernels
            .get(id)
            .ok_or_else(|| AgentError::NotFound(id.to_owned()))?;
        let zero = |hint: &str| json!({"current": "0", "unit_hint": hint});
        Ok(json!({
            "cpu_used": zero("msec"),
            "mem": {"current": "0", "capacity": k.spec.slots.get("mem").to_string(), "pct": "0.00", "unit_hint": "bytes"},
            "net_rx": zero("bytes"),
            "net_tx": zero("bytes"),
            "io_read": zero("bytes"),
            "io_write": zero("bytes"),
        }))
    }

    fn terminations(self: Arc<Self>) -> mpsc::Receiver<Termination> {
        let (tx, rx) = mpsc::channel(256);
        *self.ends.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ResourceSlots;

    fn spec() -> KernelSpec {
        let mut slots = ResourceSlots::new();
        slots.set("cpu", rust_decimal::Decimal::ONE);
        KernelSpec {
            image: "example/python:3".into(),
            slots,
            environ: Default::default(),
            mounts: Vec::new(),
        }
    }

    #[tokio::test]
    async fn kernels_are_records_with_real_files_and_reported_ends() {
        let dir = tempfile::tempdir().unwrap();
        let b = Arc::new(NoopBackend::new(NoopConfig {
            scratch_root: dir.path().to_owned(),
            create_delay: Duration::ZERO,
        }));
        let mut ends = b.clone().terminations();
        let id = uuid::Uuid::new_v4().to_string();
        let info = b.create_kernel(&id, &spec()).await.unwrap();
        assert_eq!(info.id, id);
        assert!(matches!(
            b.create_kernel(&id, &spec()).await,
            Err(AgentError::InvalidInput(_))
        ));
        assert!(matches!(
            b.create_kernel("nope", &spec()).await,
            Err(AgentError::InvalidInput(_))
        ));
        let run = b
            .execute(&id, None, "query", "print(1)", &Value::Null, None)
            .await
            .unwrap();
        assert_eq!(run.status, "finished");
        b.upload_file(&id, "a/b.txt", b"hello").await.unwrap();
        assert_eq!(b.download_file(&id, "a/b.txt").await.unwrap(), b"hello");
        assert!(matches!(
            b.download_file(&id, "../../etc/passwd").await,
            Err(AgentError::InvalidInput(_))
        ));
        assert_eq!(b.kernel_ids().await, vec![id.clone()]);
        b.destroy_kernel_because(&id, "idle-timeout").await.unwrap();
        let end = ends.recv().await.unwrap();
        assert_eq!(
            (end.kernel_id.as_str(), end.reason.as_str()),
            (id.as_str(), "idle-timeout")
        );
        assert!(b.kernel_ids().await.is_empty());
        assert!(!dir.path().join(&id).exists());
        assert!(matches!(
            b.execute(&id, None, "query", "", &Value::Null, None).await,
            Err(AgentError::NotFound(_))
        ));
    }
}
