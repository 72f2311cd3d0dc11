//! The manager ↔ agent RPC (gRPC with tonic): generated types from `proto/agent.proto`,
//! their conversions to and from the domain types ([`convert`]) and the manager's client.
//! The agent's server lives with the agent ([`crate::agent::rpc_server`]).

pub mod client;
pub mod convert;

#[allow(clippy::all, clippy::pedantic, non_camel_case_types)]
pub mod pb {
    tonic::include_proto!("backendai.agent.v1");
}

/// The metadata key carrying the shared token.
pub const TOKEN_HEADER: &str = "authorization";
