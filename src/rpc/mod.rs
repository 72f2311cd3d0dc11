//! The manager ↔ agent RPC (gRPC with tonic): generated types from `proto/agent.proto`,
//! the agent's server and the manager's client.

pub mod client;
pub mod server;

#[allow(clippy::all, clippy::pedantic, non_camel_case_types)]
pub mod pb {
    tonic::include_proto!("backendai.agent.v1");
}

use crate::agent::AgentError;

/// The metadata key carrying the shared token.
pub const TOKEN_HEADER: &str = "authorization";

impl From<AgentError> for tonic::Status {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::NotFound(id) => tonic::Status::not_found(format!("no such kernel: {id}")),
            AgentError::InvalidInput(m) => tonic::Status::invalid_argument(m),
            AgentError::Timeout(m) => tonic::Status::deadline_exceeded(m),
            AgentError::Failure(m) => tonic::Status::internal(m),
        }
    }
}

impl From<tonic::Status> for AgentError {
    fn from(s: tonic::Status) -> Self {
        let msg = s.message().to_owned();
        match s.code() {
            tonic::Code::NotFound => {
                AgentError::NotFound(msg.trim_start_matches("no such kernel: ").to_owned())
            }
            tonic::Code::InvalidArgument => AgentError::InvalidInput(msg),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => AgentError::Timeout(msg),
            tonic::Code::Unauthenticated => {
                AgentError::Failure(format!("the agent refused the token: {msg}"))
            }
            _ => AgentError::Failure(msg),
        }
    }
}
