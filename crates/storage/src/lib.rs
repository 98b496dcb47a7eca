//! Persistent state of recovery-service: the schema, its migrations, and the atomic operations
//! through which every limit is enforced by the database (so that several replicas never allow
//! more than one would).
//!
//! The same code serves SQLite (the embedded default) and PostgreSQL (production). This crate
//! knows nothing of gRPC.

mod chain;
mod connect;
mod entity;
mod error;
pub mod migration;
pub mod model;
mod ops;
mod personal;

pub use chain::{AuditChainKeys, ChainStatus};
pub use connect::{Backend, ConnectOptions, SchemaStatus, Storage, sqlite_file_path};
pub use error::{ConflictKind, StorageError};
pub use ops::{CONTACT_FLOW_RETENTION_MS, ChangeError, CleanupReport, IntoEffects, PruneReport};
pub use personal::{KeyState, PersonalDataKeys};
