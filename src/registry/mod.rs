//! The registry: what the manager knows about agents and sessions, kept current from the
//! agents' events. [`agents`] follows heartbeats (registration, revival, LOST detection).

pub mod agents;
