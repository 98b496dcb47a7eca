//! Dated migrations, written with sea-query's schema builder so one set serves SQLite and
//! PostgreSQL. Never edit a released migration: add a new one.
//!
//! Conventions: every instant is a `BIGINT` of Unix epoch milliseconds (UTC), so that time
//! arithmetic and comparisons inside single atomic statements read the same on both backends.
//! No column holds a plaintext secret.

use sea_orm_migration::prelude::*;

mod m20261126_000001_initial_schema;
mod m20261201_000001_casefold_email_lookup;
mod m20261201_000002_audit_chain;
mod m20261202_000001_families;
mod m20261202_000002_event_outbox;
mod m20261207_000001_zero_knowledge;
mod m20261207_000002_audit_heads;
mod m20261208_000001_forgetting;
mod m20261209_000001_recovery_contacts;

/// Every migration this build knows, oldest first.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_initial_schema::Migration),
            Box::new(m20261201_000001_casefold_email_lookup::Migration),
            Box::new(m20261201_000002_audit_chain::Migration),
            Box::new(m20261202_000001_families::Migration),
            Box::new(m20261202_000002_event_outbox::Migration),
            Box::new(m20261207_000001_zero_knowledge::Migration),
            Box::new(m20261207_000002_audit_heads::Migration),
            Box::new(m20261208_000001_forgetting::Migration),
            Box::new(m20261209_000001_recovery_contacts::Migration),
        ]
    }
}
