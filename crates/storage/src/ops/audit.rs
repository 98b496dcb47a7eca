//! The audit trail, newest first.

use sea_orm::{
    ColumnTrait as _, ConnectionTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    QuerySelect as _, TransactionTrait as _,
};

use crate::{
    ChainStatus, Storage, StorageError,
    entity::audit_event::{self, Column as A},
    model::{AuditRecord, ClientInfo, Effects, NewAuditEvent},
};

impl Storage {
    /// Writes notifications and audit events that go with no other change, in one transaction.
    #[tracing::instrument(name = "db.write_effects", skip_all)]
    pub async fn write_effects(&self, effects: Effects, now: i64) -> Result<(), StorageError> {
        let txn = self.db().begin().await?;
        self.apply_effects(&txn, effects, now).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Appends one audit event on its own (for events that change nothing else).
    #[tracing::instrument(name = "db.append_audit", skip_all)]
    pub async fn append_audit(&self, event: NewAuditEvent) -> Result<(), StorageError> {
        let at = event.occurred_at;
        let effects = Effects {
            messages: Vec::new(),
            audit: vec![event],
            events: vec![],
        };
        let txn = self.db().begin().await?;
        self.apply_effects(&txn, effects, at.as_ms()).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Whether the account's trail verifies: every linked row's link is right and follows the
    /// row before it; rows without a link (written before the chain existed) may only come
    /// first. Without chain keys every trail counts as valid.
    #[tracing::instrument(name = "db.audit_chain_status", skip_all)]
    pub async fn audit_chain_status(&self, account_id: &str) -> Result<ChainStatus, StorageError> {
        let Some(keys) = self.audit_chain() else {
            return Ok(ChainStatus {
                valid: true,
                first_broken_event_id: None,
            });
        };
        let rows = audit_event::Entity::find()
            .filter(A::AccountId.eq(account_id))
            .order_by_asc(A::Seq)
            .all(self.reader())
            .await?;
        let legacy_max_seq = self
            .reader()
            .query_one_raw(sea_orm::Statement::from_string(
                self.reader().get_database_backend(),
                "SELECT legacy_max_seq FROM audit_chain_meta WHERE id = 1",
            ))
            .await?
            .and_then(|row| row.try_get::<i64>("", "legacy_max_seq").ok())
            .unwrap_or(0);
        let mut previous = String::new();
        let mut linked = false;
        for row in rows {
            let event = crate::chain::canonical(
                &row.event_id,
                &row.account_id,
                &row.kind,
                row.occurred_at,
                row.client_ip.as_deref(),
                row.client_user_agent.as_deref(),
                &row.details,
            );
            let ok = match (&row.chain_key_id, &row.chain_hash) {
                (Some(key_id), Some(stored)) => {
                    linked = true;
                    keys.link(key_id, &previous, &event)
                        .is_some_and(|expected| expected == *stored)
                }
                // Unlinked rows are legacy rows: written before the chain, before every
                // linked one.
                _ => !linked && row.seq <= legacy_max_seq,
            };
            if !ok {
                return Ok(ChainStatus {
                    valid: false,
                    first_broken_event_id: Some(row.event_id),
                });
            }
            previous = row.chain_hash.unwrap_or_default();
        }
        Ok(ChainStatus {
            valid: true,
            first_broken_event_id: None,
        })
    }

    /// Up to `limit` of the account's events older than `before_seq` (all when `None`),
    /// newest first.
    #[tracing::instrument(name = "db.list_audit_events", skip_all)]
    pub async fn list_audit_events(
        &self,
        account_id: &str,
        before_seq: Option<i64>,
        limit: u64,
    ) -> Result<Vec<AuditRecord>, StorageError> {
        let mut query = audit_event::Entity::find().filter(A::AccountId.eq(account_id));
        if let Some(seq) = before_seq {
            query = query.filter(A::Seq.lt(seq));
        }
        let rows = query
            .order_by_desc(A::Seq)
            .limit(limit)
            .all(self.reader())
            .await?;
        rows.into_iter()
            .map(|row| {
                let details = serde_json::from_str(&row.details).map_err(|e| {
                    StorageError::Other(format!("audit details of {}: {e}", row.event_id))
                })?;
                Ok(AuditRecord {
                    seq: row.seq,
                    event_id: row.event_id,
                    account_id: row.account_id,
                    kind: row.kind,
                    occurred_at: crate::model::Timestamp::from_ms(row.occurred_at),
                    client: ClientInfo {
                        ip: row.client_ip,
                        user_agent: row.client_user_agent,
                    },
                    details,
                })
            })
            .collect()
    }
}
