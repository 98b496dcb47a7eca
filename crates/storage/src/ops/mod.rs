//! The storage operations, one transaction each, one file per RPC family as in the domain and
//! the gRPC adapter (`recovery_code`, `recovery_flow`, `family`, `assisted_recovery`,
//! `zero_knowledge`), beside the shared ones (`audit`, `limits`, `outbox`, `events`, `cleanup`). Every limit is decided by the database with a
//! conditional statement and its affected-row count, never by reading and then writing in Rust,
//! so several replicas never allow more than one would.

mod assisted_recovery;
mod audit;
mod cleanup;
mod events;
mod family;
mod limits;
mod outbox;
mod recovery_code;
mod recovery_flow;
mod zero_knowledge;

use sea_orm::{
    ActiveValue::Set, ColumnTrait as _, ConnectionTrait, DbBackend, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, Statement, Value, sea_query::Expr,
};

use crate::{
    StorageError,
    entity::{audit_event, event as event_entity, outbox as outbox_entity},
    model::{Effects, OutboxStatus},
};

pub use cleanup::CleanupReport;

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
        if self.backend() == crate::Backend::Postgres {
            let mut keys: Vec<String> = effects
                .events
                .iter()
                .map(|e| e.account_id.clone())
                .chain(effects.audit.iter().map(|e| {
                    if e.account_id.is_empty() {
                        e.serialize_on.clone().unwrap_or_else(|| e.event_id.clone())
                    } else {
                        e.account_id.clone()
                    }
                }))
                .collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                txn.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 7242))",
                    [Value::from(key)],
                ))
                .await?;
            }
        }
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
                    status: Set(events::PENDING.to_owned()),
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
            let head = audit_event::Entity::find()
                .filter(audit_event::Column::AccountId.eq(e.account_id.as_str()))
                .order_by_desc(audit_event::Column::Seq)
                .one(txn)
                .await?;
            if let Some(head) = head.as_ref().filter(|head| folds_into(&e, head)) {
                self.fold_into(txn, &e, head).await?;
                continue;
            }
            let details = serde_json::to_string(&e.details)
                .map_err(|err| StorageError::Other(format!("audit details: {err}")))?;
            let (chain_key_id, chain_hash) = match self.audit_chain() {
                Some(keys) => {
                    let previous = head.and_then(|row| row.chain_hash).unwrap_or_default();
                    let key_id = keys.current_key_id();
                    let event = crate::chain::canonical(
                        &e.event_id,
                        &e.account_id,
                        &e.kind,
                        e.occurred_at.as_ms(),
                        e.client.ip.as_deref(),
                        e.client.user_agent.as_deref(),
                        &details,
                    );
                    let link = keys.link(&key_id, &previous, &event).ok_or_else(|| {
                        StorageError::Other("the current audit chain key is not configured".into())
                    })?;
                    (Some(key_id), Some(link))
                }
                None => (None, None),
            };
            audit_event::Entity::insert(audit_event::ActiveModel {
                event_id: Set(e.event_id),
                account_id: Set(e.account_id),
                kind: Set(e.kind),
                occurred_at: Set(e.occurred_at.as_ms()),
                client_ip: Set(e.client.ip),
                client_user_agent: Set(e.client.user_agent),
                details: Set(details),
                chain_key_id: Set(chain_key_id),
                chain_hash: Set(chain_hash),
                ..Default::default()
            })
            .exec(txn)
            .await?;
        }
        Ok(())
    }

    /// Folds a repeat into the account's newest row: `count` up, `last_at` moved, and the
    /// row's link made again over its new content (it is the head: no link follows it yet).
    async fn fold_into<C: ConnectionTrait>(
        &self,
        txn: &C,
        repeat: &crate::model::NewAuditEvent,
        head: &audit_event::Model,
    ) -> Result<(), StorageError> {
        let mut details: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&head.details)
                .map_err(|err| StorageError::Other(format!("audit details: {err}")))?;
        let count = details
            .get(COUNT)
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(1);
        details.insert(COUNT.to_owned(), (count + 1).to_string());
        if let Some(coalesce) = &repeat.coalesce {
            details.insert(LAST_AT.to_owned(), coalesce.at.clone());
        }
        let details = serde_json::to_string(&details)
            .map_err(|err| StorageError::Other(format!("audit details: {err}")))?;
        let (mut chain_key_id, mut chain_hash) = (None, None);
        if let Some(keys) = self.audit_chain() {
            let previous = audit_event::Entity::find()
                .filter(audit_event::Column::AccountId.eq(head.account_id.as_str()))
                .filter(audit_event::Column::Seq.lt(head.seq))
                .order_by_desc(audit_event::Column::Seq)
                .one(txn)
                .await?
                .and_then(|row| row.chain_hash)
                .unwrap_or_default();
            let key_id = keys.current_key_id();
            let event = crate::chain::canonical(
                &head.event_id,
                &head.account_id,
                &head.kind,
                head.occurred_at,
                head.client_ip.as_deref(),
                head.client_user_agent.as_deref(),
                &details,
            );
            chain_hash = Some(keys.link(&key_id, &previous, &event).ok_or_else(|| {
                StorageError::Other("the current audit chain key is not configured".into())
            })?);
            chain_key_id = Some(key_id);
        }
        audit_event::Entity::update_many()
            .col_expr(audit_event::Column::Details, Expr::value(details))
            .col_expr(audit_event::Column::ChainKeyId, Expr::value(chain_key_id))
            .col_expr(audit_event::Column::ChainHash, Expr::value(chain_hash))
            .filter(audit_event::Column::Seq.eq(head.seq))
            .exec(txn)
            .await?;
        Ok(())
    }
}

/// The detail a folded row counts its occurrences in (absent: once).
const COUNT: &str = "count";
/// The detail a folded row keeps its latest occurrence in (RFC 3339).
const LAST_AT: &str = "last_at";

/// Whether `e` is a repeat of the account's newest row: it asks to fold, same kind, same
/// values of the named details, within the window of the row's first occurrence.
fn folds_into(e: &crate::model::NewAuditEvent, head: &audit_event::Model) -> bool {
    let Some(coalesce) = &e.coalesce else {
        return false;
    };
    if e.account_id.is_empty()
        || head.kind != e.kind
        || e.occurred_at.as_ms() - head.occurred_at >= coalesce.window_ms
        || e.occurred_at.as_ms() < head.occurred_at
    {
        return false;
    }
    let Ok(stored) =
        serde_json::from_str::<std::collections::BTreeMap<String, String>>(&head.details)
    else {
        return false;
    };
    coalesce.on.iter().all(|name| {
        stored
            .get(*name)
            .is_some_and(|v| Some(v) == e.details.get(*name))
    })
}
