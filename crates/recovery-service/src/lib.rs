//! recovery-service: account recovery with a saved recovery code plus proof of control of the
//! account's email address, served over gRPC.
//!
//! - [`config`]: layered configuration, validated once.
//! - [`crypto`]: the keyed primitives everything else builds on.
//! - [`server`]: the tonic server with health and reflection, and graceful shutdown.
//! - [`domain`]: what recovery means: codes, flows, limits, notifications.
//! - [`grpc`]: the thin adapter from the wire to the domain.
//! - [`cli`]: the `recovery-service` binary's subcommands.

pub mod cli;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod healthcheck;
pub mod mail;
pub mod metrics;
pub mod server;
pub mod telemetry;
pub mod time;
