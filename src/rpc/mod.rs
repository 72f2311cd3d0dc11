//! The manager ↔ agent RPC (gRPC with tonic): generated types from `proto/agent.proto`,
//! their conversions to and from the domain types ([`convert`]), the agent's server and the
//! manager's client.

pub mod client;
pub mod convert;
pub mod server;

#[allow(clippy::all, clippy::pedantic, non_camel_case_types)]
pub mod pb {
    tonic::include_proto!("backendai.agent.v1");
}

/// The metadata key carrying the shared token.
pub const TOKEN_HEADER: &str = "authorization";
