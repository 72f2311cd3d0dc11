//! backend-ai-manager: the Backend.AI manager and API gateway as one binary.
//!
//! Layout: [`domain`] plain types; [`store`] SQLite; [`shared_config`] the etcd key space
//! (etcd or embedded); [`bus`] ephemeral state (Redis or in-process); [`gateway`] HTTP;
//! [`registry`] sessions and agents; [`agent`] the agent and its kernel backends; [`rpc`]
//! the agent RPC; [`images`] and [`vfolder`]; [`server`] wiring them together (the admin
//! UI's files are served by [`gateway`]); [`signing`] the request-signing algorithm shared
//! by server, tests and benchmark clients.

pub mod agent;
pub mod bus;
pub mod config;
pub mod domain;
pub mod fsconfine;
pub mod gateway;
pub mod images;
pub mod password;
pub mod registry;
pub mod rpc;
pub mod server;
pub mod shared_config;
pub mod signing;
pub mod store;
pub mod vfolder;
