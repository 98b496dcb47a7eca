//! The storage operations, one transaction each, one file per RPC family as in the domain and
//! the gRPC adapter (`recovery_code`, `recovery_flow`, `family`, `assisted_recovery`,
//! `zero_knowledge`, `recovery_contacts`), beside the shared ones (`audit`, `limits`, `outbox`, `events`, `cleanup`). Every limit is decided by the database with a
//! conditional statement and its affected-row count, never by reading and then writing in Rust,
//! so several replicas never allow more than one would.

mod assisted_recovery;
mod audit;
mod audit_upkeep;
mod cleanup;
mod events;
mod family;
mod forget_account;
mod limits;
mod outbox;
mod recovery_code;
mod recovery_contacts;
mod recovery_flow;
mod zero_knowledge;

use sea_orm::{ActiveValue::Set, ConnectionTrait, DbBackend, EntityTrait as _, Statement, Value};

use crate::{
    StorageError,
    entity::{event as event_entity, outbox as outbox_entity},
    model::{Effects, OutboxStatus},
};

pub use audit_upkeep::PruneReport;
pub use cleanup::{CONTACT_FLOW_RETENTION_MS, CleanupReport};

/// The row a primary-key lookup finds, if any. `Select::one` appends `LIMIT ?`, and SQLite's
/// planner reads a bound LIMIT's value: each new binding expires the cached statement, so every
/// execution was parsed and planned again (a tenth of a status read's time). A key matches at
/// most one row, so the lookup needs no LIMIT.
pub(crate) async fn by_key<E, C>(
    select: sea_orm::Select<E>,
    db: &C,
) -> Result<Option<E::Model>, sea_orm::DbErr>
where
    E: sea_orm::EntityTrait,
    C: ConnectionTrait,
{
    Ok(select.all(db).await?.into_iter().next())
}

/// What a change's effects callback may return: the effects, or its own error (then the whole
/// change rolls back, so no change is stored without its notice and audit).
pub trait IntoEffects {
    /// The callback's error, handed back unchanged in [`ChangeError::Effects`].
    type Error;
    fn into_effects(self) -> Result<Effects, Self::Error>;
}

impl IntoEffects for Effects {
    type Error = std::convert::Infallible;
    fn into_effects(self) -> Result<Effects, Self::Error> {
        Ok(self)
    }
}

impl<E> IntoEffects for Result<Effects, E> {
    type Error = E;
    fn into_effects(self) -> Result<Effects, E> {
        self
    }
}

/// Why a change with an effects callback failed: the database, or the callback (its error
/// kept as it was, not turned into a string).
#[derive(Debug, thiserror::Error)]
pub enum ChangeError<E> {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the change's effects could not be built")]
    Effects(E),
}

impl<E> From<sea_orm::DbErr> for ChangeError<E> {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::Storage(err.into())
    }
}

impl<E> ChangeError<E> {
    /// The storage error, if it was one.
    pub fn storage(&self) -> Option<&StorageError> {
        match self {
            Self::Storage(err) => Some(err),
            Self::Effects(_) => None,
        }
    }
}

/// On PostgreSQL, takes the transaction-scoped advisory lock of each of these accounts (or
/// other serialisation keys), in one order; SQLite has one writer. Re-entrant within a
/// transaction.
pub(crate) async fn lock_accounts<'a, C: ConnectionTrait>(
    backend: crate::Backend,
    txn: &C,
    keys: impl IntoIterator<Item = &'a str>,
) -> Result<(), StorageError> {
    if backend != crate::Backend::Postgres {
        return Ok(());
    }
    let mut keys: Vec<&str> = keys.into_iter().collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 7242))",
            [Value::from(key)],
        ))
        .await?;
    }
    Ok(())
}

impl crate::Storage {
    /// Writes a change's notifications, platform events and audit events inside its
    /// transaction. Each audit event is linked to the account's previous one (see
    /// [`crate::AuditChainKeys`]).
    pub(crate) async fn apply_effects<C: ConnectionTrait>(
        &self,
        txn: &C,
        effects: Effects,
        now: i64,
    ) -> Result<(), StorageError> {
        // On PostgreSQL, the accounts this change writes events or audit events for are
        // locked (transaction-scoped advisory locks, in one order), so that two changes of one
        // account commit in the order of their event `seq` and audit links: a publisher never
        // sees a later event of an account before an earlier one, and two links never share a
        // predecessor. Events under no account lock the typed address's keyed hash instead, so
        // that concurrent requests for one address queue exactly as a known account's do.
        let keys =
            effects
                .events
                .iter()
                .map(|e| e.account_id.as_str())
                .chain(effects.audit.iter().map(|e| {
                    if e.account_id.is_empty() {
                        e.serialize_on.as_deref().unwrap_or(&e.event_id)
                    } else {
                        e.account_id.as_str()
                    }
                }));
        lock_accounts(self.backend(), txn, keys).await?;
        if !effects.messages.is_empty() {
            let rows = effects
                .messages
                .into_iter()
                .map(|m| outbox_entity::ActiveModel {
                    message_id: Set(m.message_id),
                    kind: Set(m.kind),
                    account_id: Set(m.account_id),
                    recipient: Set(m.recipient),
                    payload: Set(m.payload.0),
                    status: Set(if m.deliver {
                        OutboxStatus::Pending
                    } else {
                        OutboxStatus::Void
                    }
                    .as_str()
                    .to_owned()),
                    attempts: Set(0),
                    next_attempt_at: Set(now),
                    lease_owner: Set(None),
                    lease_until: Set(None),
                    last_error: Set(None),
                    created_at: Set(now),
                    sent_at: Set(None),
                    ..Default::default()
                });
            outbox_entity::Entity::insert_many(rows).exec(txn).await?;
        }
        if !effects.events.is_empty() {
            let rows = effects
                .events
                .into_iter()
                .map(|e| event_entity::ActiveModel {
                    event_id: Set(e.event_id),
                    account_id: Set(e.account_id),
                    event_type: Set(e.event_type),
                    payload: Set(e.payload),
                    status: Set(events::EventStatus::Pending.as_str().to_owned()),
                    attempts: Set(0),
                    next_attempt_at: Set(now),
                    lease_owner: Set(None),
                    lease_until: Set(None),
                    last_error: Set(None),
                    created_at: Set(now),
                    published_at: Set(None),
                    ..Default::default()
                });
            event_entity::Entity::insert_many(rows).exec(txn).await?;
        }
        for e in effects.audit {
            self.append_one(txn, e).await?;
        }
        Ok(())
    }
}
