//! Email delivery: a worker in every replica claims due outbox rows (safe across replicas),
//! renders them, sends them through lettre (SMTP, or `.eml` files without SMTP), and marks them
//! sent; failures retry with exponential backoff and jitter, then go to a dead-letter state.

pub mod templates;
mod transport;
mod worker;

pub use transport::{SendError, Transport};
pub use worker::{DeliveryOptions, Worker};
