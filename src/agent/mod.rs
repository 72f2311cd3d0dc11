//! The agent: owns one host's kernels. [`backend`] says what runs them: [`docker`] as
//! containers, [`noop`] as records only (scale tests); [`runner`] talks
//! to the runner inside each, [`files`] moves files in and out of their work directories;
//! [`daemon`] owns the kernels' lifecycle and events, and [`rpc_server`] serves it to the
//! manager over `proto/agent.proto`.

pub mod backend;
pub mod daemon;
pub mod docker;
pub mod files;
pub mod launch;
pub mod noop;
pub mod resources;
pub mod rpc_server;
pub mod runner;

/// Errors of agent operations; the manager maps them to the original's `agent-timeout`,
/// `agent-invalid-input` and `agent-failure` problems.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("no such kernel: {0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Failure(String),
}

impl From<crate::fsconfine::FsError> for AgentError {
    fn from(e: crate::fsconfine::FsError) -> Self {
        use crate::fsconfine::FsError;
        match e {
            FsError::Invalid(m) => AgentError::InvalidInput(m),
            FsError::Busy(m) => AgentError::Timeout(m),
            FsError::Failure(m) => AgentError::Failure(m),
        }
    }
}
