//! The audit trail, newest first.

use sea_orm::{
    ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _,
};

use crate::{
    Storage, StorageError,
    entity::audit_event::{self, Column as A},
    model::{AuditRecord, ClientInfo, Effects, NewAuditEvent},
};

impl Storage {
    /// Appends one audit event on its own (for events that change nothing else).
    #[tracing::instrument(name = "db.append_audit", skip_all)]
    pub async fn append_audit(&self, event: NewAuditEvent) -> Result<(), StorageError> {
        let at = event.occurred_at;
        let effects = Effects {
            messages: Vec::new(),
            audit: vec![event],
        };
        super::apply_effects(self.db(), effects, at).await
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
            .all(self.db())
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
                    occurred_at: row.occurred_at,
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
