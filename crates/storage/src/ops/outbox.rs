//! The notification outbox: claim due rows safely across replicas, then mark each sent,
//! rescheduled or dead.

use sea_orm::{
    ColumnTrait as _, ConnectionTrait as _, DbBackend, EntityTrait as _, FromQueryResult as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _, Statement, TransactionTrait as _,
    sea_query::{Expr, ExprTrait as _},
};

use crate::{
    Storage, StorageError,
    entity::outbox::{self, Column as O},
    model::{Opaque, OutboxMessage, OutboxStats, OutboxStatus},
};

impl Storage {
    /// Claims up to `limit` due rows for `owner` (a replica's worker id) for `lease_ms`: rows
    /// pending whose time has come, and rows whose previous claim's lease ran out (a worker
    /// died mid-send). Each claim counts one attempt. On PostgreSQL concurrent claimers skip
    /// each other's rows (`FOR UPDATE SKIP LOCKED`); SQLite has one writer at a time.
    #[tracing::instrument(name = "db.claim_outbox", skip_all)]
    pub async fn claim_outbox(
        &self,
        owner: &str,
        limit: u32,
        lease_ms: i64,
        now: i64,
    ) -> Result<Vec<OutboxMessage>, StorageError> {
        let backend = self.db().get_database_backend();
        let txn = self.db().begin().await?;
        let due = outbox::Entity::find()
            .select_only()
            .column(O::Id)
            .filter(
                (O::Status
                    .eq(OutboxStatus::Pending.as_str())
                    .and(O::NextAttemptAt.lte(now)))
                .or(O::Status
                    .eq(OutboxStatus::Sending.as_str())
                    .and(O::LeaseUntil.lte(now))),
            )
            .order_by_asc(O::Id)
            .limit(u64::from(limit));
        let due = if backend == DbBackend::Postgres {
            due.lock_with_behavior(
                sea_orm::sea_query::LockType::Update,
                sea_orm::sea_query::LockBehavior::SkipLocked,
            )
        } else {
            due
        };
        let ids: Vec<i64> = due.into_tuple().all(&txn).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        outbox::Entity::update_many()
            .col_expr(O::Status, Expr::value(OutboxStatus::Sending.as_str()))
            .col_expr(O::LeaseOwner, Expr::value(Some(owner.to_owned())))
            .col_expr(O::LeaseUntil, Expr::value(Some(now + lease_ms)))
            .col_expr(O::Attempts, Expr::col(O::Attempts).add(1))
            .filter(O::Id.is_in(ids.clone()))
            .exec(&txn)
            .await?;
        let rows = outbox::Entity::find()
            .filter(O::Id.is_in(ids))
            .order_by_asc(O::Id)
            .all(&txn)
            .await?;
        txn.commit().await?;
        Ok(rows
            .into_iter()
            .map(|row| OutboxMessage {
                id: row.id,
                message_id: row.message_id,
                kind: row.kind,
                account_id: row.account_id,
                recipient: row.recipient,
                payload: Opaque(row.payload),
                attempts: row.attempts,
                created_at: crate::model::Timestamp::from_ms(row.created_at),
            })
            .collect())
    }

    /// Marks a claimed row sent and wipes its payload (a sent verification code has no reason
    /// to stay). `false` when `owner` no longer holds the claim.
    #[tracing::instrument(name = "db.mark_outbox_sent", skip_all)]
    pub async fn mark_outbox_sent(
        &self,
        id: i64,
        owner: &str,
        now: i64,
    ) -> Result<bool, StorageError> {
        self.finish_claim(id, owner, |update| {
            update
                .col_expr(O::Status, Expr::value(OutboxStatus::Sent.as_str()))
                .col_expr(O::SentAt, Expr::value(Some(now)))
                .col_expr(O::Payload, Expr::value(""))
                .col_expr(O::LastError, Expr::value(Option::<String>::None))
        })
        .await
    }

    /// Gives a claimed row back for another attempt at `next_attempt_at`, noting why the
    /// last one failed. `false` when `owner` no longer holds the claim.
    #[tracing::instrument(name = "db.reschedule_outbox", skip_all)]
    pub async fn reschedule_outbox(
        &self,
        id: i64,
        owner: &str,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<bool, StorageError> {
        let error = truncate(error, 1000);
        self.finish_claim(id, owner, |update| {
            update
                .col_expr(O::Status, Expr::value(OutboxStatus::Pending.as_str()))
                .col_expr(O::NextAttemptAt, Expr::value(next_attempt_at))
                .col_expr(O::LastError, Expr::value(Some(error)))
        })
        .await
    }

    /// Gives up on a claimed row: it stays, `dead`, for operators to see. Its payload is wiped.
    #[tracing::instrument(name = "db.dead_letter_outbox", skip_all)]
    pub async fn dead_letter_outbox(
        &self,
        id: i64,
        owner: &str,
        error: &str,
    ) -> Result<bool, StorageError> {
        let error = truncate(error, 1000);
        self.finish_claim(id, owner, |update| {
            update
                .col_expr(O::Status, Expr::value(OutboxStatus::Dead.as_str()))
                .col_expr(O::Payload, Expr::value(""))
                .col_expr(O::LastError, Expr::value(Some(error)))
        })
        .await
    }

    async fn finish_claim(
        &self,
        id: i64,
        owner: &str,
        set: impl FnOnce(sea_orm::UpdateMany<outbox::Entity>) -> sea_orm::UpdateMany<outbox::Entity>,
    ) -> Result<bool, StorageError> {
        let result = set(outbox::Entity::update_many())
            .col_expr(O::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(O::LeaseUntil, Expr::value(Option::<i64>::None))
            .filter(O::Id.eq(id))
            .filter(O::Status.eq(OutboxStatus::Sending.as_str()))
            .filter(O::LeaseOwner.eq(owner))
            .exec(self.db())
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Backlog, dead letters and the age of the oldest waiting row.
    #[tracing::instrument(name = "db.outbox_stats", skip_all)]
    pub async fn outbox_stats(&self) -> Result<OutboxStats, StorageError> {
        let backend = self.db().get_database_backend();
        let row = self
            .db()
            .query_one_raw(Statement::from_string(
                backend,
                "SELECT \
                   COALESCE(SUM(CASE WHEN status IN ('pending', 'sending') THEN 1 ELSE 0 END), 0) AS backlog, \
                   COALESCE(SUM(CASE WHEN status = 'dead' THEN 1 ELSE 0 END), 0) AS dead, \
                   MIN(CASE WHEN status IN ('pending', 'sending') THEN created_at END) AS oldest \
                 FROM notification_outbox",
            ))
            .await?;
        let Some(row) = row else {
            return Ok(OutboxStats::default());
        };
        #[derive(Debug, sea_orm::FromQueryResult)]
        struct Stats {
            backlog: i64,
            dead: i64,
            oldest: Option<i64>,
        }
        let stats = Stats::from_query_result(&row, "")?;
        Ok(OutboxStats {
            backlog: stats.backlog,
            dead: stats.dead,
            oldest_backlog_at: stats.oldest.map(crate::model::Timestamp::from_ms),
        })
    }
}

fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
