//! What an agent needs from whatever runs its kernels. [`super::docker::DockerBackend`] runs
//! them as containers; [`super::noop::NoopBackend`] only keeps their records (for scale
//! tests of the manager, as the original's later "dummy" agent does). The daemon and the
//! RPC server hold an `Arc<dyn KernelBackend>` and do not know which one they drive.

use super::resources::DeviceAllocMap;
use super::runner::ExecResult;
use super::AgentError;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

pub use crate::domain::{KernelInfo, KernelSpec, MountSpec, RegistryCredentials, ServicePort};

/// A kernel container that stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    pub kernel_id: String,
    pub exit_code: Option<i64>,
    /// `user-requested`, `self-terminated`, or `killed` (by a signal, e.g. out of memory).
    pub reason: String,
}

/// The kernel operations of one agent. Errors are [`AgentError`]s: an unknown kernel is
/// `NotFound`, a bad argument `InvalidInput`, everything else `Failure` or `Timeout`.
#[async_trait::async_trait]
pub trait KernelBackend: Send + Sync + 'static {
    /// The accelerators this backend hands out, when it has any.
    fn devices(&self) -> Option<&Arc<DeviceAllocMap>>;

    async fn has_image(&self, image: &str) -> bool;

    /// Pulls an image, calling `progress` with each status line.
    async fn pull_image(
        &self,
        image: &str,
        credentials: Option<&RegistryCredentials>,
        progress: &mut (dyn FnMut(String) + Send),
    ) -> Result<(), AgentError>;

    /// Creates and starts a kernel; returns once it can run code.
    async fn create_kernel(&self, id: &str, spec: &KernelSpec) -> Result<KernelInfo, AgentError>;

    async fn execute(
        &self,
        id: &str,
        run_id: Option<String>,
        mode: &str,
        code: &str,
        opts: &Value,
        flush_timeout: Option<Duration>,
    ) -> Result<ExecResult, AgentError>;

    async fn interrupt(&self, id: &str) -> Result<(), AgentError>;

    async fn complete(&self, id: &str, code: &str, opts: &Value)
        -> Result<Vec<String>, AgentError>;

    async fn start_service(&self, id: &str, service: &str) -> Result<Value, AgentError>;

    /// A byte stream to the kernel's runner, opened with a `kind` frame (a PTY).
    async fn open_runner_stream(
        &self,
        id: &str,
        kind: &str,
        payload: &[u8],
    ) -> Result<tokio::net::UnixStream, AgentError>;

    /// A byte stream to a service port inside the kernel.
    async fn connect_service(
        &self,
        id: &str,
        service: &str,
    ) -> Result<tokio::net::UnixStream, AgentError>;

    async fn upload_file(&self, id: &str, path: &str, data: &[u8]) -> Result<(), AgentError>;

    async fn download_file(&self, id: &str, path: &str) -> Result<Vec<u8>, AgentError>;

    async fn list_files(&self, id: &str, path: &str) -> Result<Value, AgentError>;

    async fn logs(&self, id: &str) -> Result<String, AgentError>;

    async fn is_running(&self, id: &str) -> Result<bool, AgentError>;

    /// Ends a kernel on request; its end is reported as `user-requested`.
    async fn destroy_kernel(&self, id: &str) -> Result<(), AgentError> {
        self.destroy_kernel_because(id, "user-requested").await
    }

    /// Ends a kernel; its [`Termination`] carries `reason` (e.g. `idle-timeout`).
    async fn destroy_kernel_because(&self, id: &str, reason: &str) -> Result<(), AgentError>;

    /// Starts the kernel afresh with the same id, resources and work directory.
    async fn restart_kernel(&self, id: &str) -> Result<KernelInfo, AgentError>;

    /// Forgets a kernel that ended by itself.
    async fn forget_kernel(&self, id: &str) -> Result<(), AgentError>;

    /// After an agent restart: `(recovered, ended)` kernel ids.
    async fn recover(&self) -> Result<(Vec<String>, Vec<String>), AgentError>;

    async fn kernel_ids(&self) -> Vec<String>;

    /// Kernel images this host has: `(repo tag, image id)`.
    async fn images(&self) -> Result<Vec<(String, String)>, AgentError>;

    /// Statistics in the original's metric names (decimal strings).
    async fn kernel_stat(&self, id: &str) -> Result<Value, AgentError>;

    /// Kernels that end, as they end (on request or by themselves).
    fn terminations(self: Arc<Self>) -> tokio::sync::mpsc::Receiver<Termination>;
}
