//! The storage operations, one transaction each. Every limit is decided by the database with a
//! conditional statement and its affected-row count, never by reading and then writing in Rust,
//! so several replicas never allow more than one would.

mod audit;
mod cleanup;
mod enrollments;
mod flows;
mod limits;
mod outbox;

use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait as _};

use crate::{
    StorageError,
    entity::{audit_event, outbox as outbox_entity},
    model::{Effects, OutboxStatus},
};

pub use cleanup::CleanupReport;

/// What a change's effects callback may return: the effects, or why they could not be built
/// (then the whole change rolls back, so no change is stored without its notice and audit).
pub trait IntoEffects {
    fn into_effects(self) -> Result<Effects, StorageError>;
}

impl IntoEffects for Effects {
    fn into_effects(self) -> Result<Effects, StorageError> {
        Ok(self)
    }
}

impl<E: std::fmt::Display> IntoEffects for Result<Effects, E> {
    fn into_effects(self) -> Result<Effects, StorageError> {
        self.map_err(|e| {
            StorageError::Other(format!("the change's effects could not be built: {e}"))
        })
    }
}

/// Writes a change's notifications and audit events inside its transaction.
pub(crate) async fn apply_effects<C: ConnectionTrait>(
    txn: &C,
    effects: Effects,
    now: i64,
) -> Result<(), StorageError> {
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
    if !effects.audit.is_empty() {
        let mut rows = Vec::with_capacity(effects.audit.len());
        for e in effects.audit {
            let details = serde_json::to_string(&e.details)
                .map_err(|err| StorageError::Other(format!("audit details: {err}")))?;
            rows.push(audit_event::ActiveModel {
                event_id: Set(e.event_id),
                account_id: Set(e.account_id),
                kind: Set(e.kind),
                occurred_at: Set(e.occurred_at),
                client_ip: Set(e.client.ip),
                client_user_agent: Set(e.client.user_agent),
                details: Set(details),
                ..Default::default()
            });
        }
        audit_event::Entity::insert_many(rows).exec(txn).await?;
    }
    Ok(())
}
