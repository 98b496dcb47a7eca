//! The event outbox: claim due events across replicas, oldest unpublished event of each
//! account only (so an account's events are published in order), then mark each published or
//! rescheduled. Events are never given up on: they wait for NATS as long as it takes.

use sea_orm::{
    ColumnTrait as _, DbBackend, EntityTrait as _, FromQueryResult, QueryFilter as _,
    QuerySelect as _, Statement, TransactionTrait as _, Value,
    sea_query::{Expr, ExprTrait as _},
};

use crate::{
    Storage, StorageError,
    entity::event::{self, Column as V},
    model::{EventStats, OutboxEvent, Timestamp},
};

/// Where an event of the outbox stands (the `status` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventStatus {
    /// Waiting for its turn (`next_attempt_at`), or for a retry.
    Pending,
    /// Claimed by a publisher until its lease runs out.
    Sending,
    /// Published; deleted after the retention.
    Sent,
}

impl EventStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Sent => "sent",
        }
    }
}

use EventStatus::{Pending, Sending, Sent};

#[derive(Debug, FromQueryResult)]
struct Due {
    seq: i64,
}

impl Storage {
    /// Claims up to `limit` due events for `owner` for `lease_ms`: for each account, its
    /// oldest unpublished event, if it is pending and due or its previous claim's lease ran
    /// out. On PostgreSQL concurrent claimers skip each other's rows (`FOR UPDATE SKIP
    /// LOCKED`) and never take an account's later event while an earlier one is unpublished.
    #[tracing::instrument(name = "db.claim_events", skip_all)]
    pub async fn claim_events(
        &self,
        owner: &str,
        limit: u32,
        lease_ms: i64,
        now: i64,
    ) -> Result<Vec<OutboxEvent>, StorageError> {
        let backend = self.db().get_database_backend();
        let (p1, p2, p3, p4, lock) = match backend {
            DbBackend::Postgres => ("$1", "$2", "$3", "$4", " FOR UPDATE SKIP LOCKED"),
            // Numbered: `now` is used twice.
            _ => ("?1", "?2", "?3", "?4", ""),
        };
        let sql = format!(
            "SELECT e.seq FROM event_outbox e \
             WHERE ((e.status = {p1} AND e.next_attempt_at <= {p3}) \
                 OR (e.status = {p2} AND e.lease_until <= {p3})) \
               AND NOT EXISTS (SELECT 1 FROM event_outbox o \
                   WHERE o.account_id = e.account_id AND o.seq < e.seq AND o.status <> '{sent}') \
             ORDER BY e.seq LIMIT {p4}{lock}",
            sent = Sent.as_str()
        );
        let txn = self.db().begin().await?;
        let due = Due::find_by_statement(Statement::from_sql_and_values(
            backend,
            sql,
            [
                Value::from(Pending.as_str()),
                Value::from(Sending.as_str()),
                Value::from(now),
                Value::from(i64::from(limit)),
            ],
        ))
        .all(&txn)
        .await?;
        let seqs: Vec<i64> = due.into_iter().map(|d| d.seq).collect();
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        event::Entity::update_many()
            .col_expr(V::Status, Expr::value(Sending.as_str()))
            .col_expr(V::LeaseOwner, Expr::value(Some(owner.to_owned())))
            .col_expr(V::LeaseUntil, Expr::value(Some(now + lease_ms)))
            .col_expr(V::Attempts, Expr::col(V::Attempts).add(1))
            .filter(V::Seq.is_in(seqs.clone()))
            .exec(&txn)
            .await?;
        let mut rows = event::Entity::find()
            .filter(V::Seq.is_in(seqs))
            .all(&txn)
            .await?;
        txn.commit().await?;
        rows.sort_by_key(|r| r.seq);
        Ok(rows
            .into_iter()
            .map(|row| OutboxEvent {
                seq: row.seq,
                event_id: row.event_id,
                account_id: row.account_id,
                event_type: row.event_type,
                payload: row.payload,
                attempts: row.attempts,
                created_at: Timestamp::from_ms(row.created_at),
            })
            .collect())
    }

    /// Marks a claimed event published. `false` when `owner` no longer holds the claim (the
    /// event may then be published again: consumers deduplicate by id, and so does JetStream
    /// within its window).
    #[tracing::instrument(name = "db.mark_event_published", skip_all)]
    pub async fn mark_event_published(
        &self,
        seq: i64,
        owner: &str,
        now: i64,
    ) -> Result<bool, StorageError> {
        let result = event::Entity::update_many()
            .col_expr(V::Status, Expr::value(Sent.as_str()))
            .col_expr(V::PublishedAt, Expr::value(Some(now)))
            .col_expr(V::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(V::LeaseUntil, Expr::value(Option::<i64>::None))
            .col_expr(V::LastError, Expr::value(Option::<String>::None))
            .filter(V::Seq.eq(seq))
            .filter(V::Status.eq(Sending.as_str()))
            .filter(V::LeaseOwner.eq(owner))
            .exec(self.db())
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Gives a claimed event back for another attempt at `next_attempt_at`.
    #[tracing::instrument(name = "db.reschedule_event", skip_all)]
    pub async fn reschedule_event(
        &self,
        seq: i64,
        owner: &str,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<bool, StorageError> {
        let error: String = error.chars().take(1000).collect();
        let result = event::Entity::update_many()
            .col_expr(V::Status, Expr::value(Pending.as_str()))
            .col_expr(V::NextAttemptAt, Expr::value(next_attempt_at))
            .col_expr(V::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(V::LeaseUntil, Expr::value(Option::<i64>::None))
            .col_expr(V::LastError, Expr::value(Some(error)))
            .filter(V::Seq.eq(seq))
            .filter(V::Status.eq(Sending.as_str()))
            .filter(V::LeaseOwner.eq(owner))
            .exec(self.db())
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Makes a held event due now (see `reserve_recovery_attempt`).
    #[tracing::instrument(name = "db.release_held_event", skip_all)]
    pub async fn release_held_event(&self, event_id: &str, now: i64) -> Result<(), StorageError> {
        event::Entity::update_many()
            .col_expr(V::NextAttemptAt, Expr::value(now))
            .filter(V::EventId.eq(event_id))
            .filter(V::Status.eq(Pending.as_str()))
            .filter(V::NextAttemptAt.gt(now))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// How many events wait, and since when.
    #[tracing::instrument(name = "db.event_stats", skip_all)]
    pub async fn event_stats(&self) -> Result<EventStats, StorageError> {
        let (backlog, oldest): (i64, Option<i64>) = event::Entity::find()
            .select_only()
            .column_as(Expr::col(V::Seq).count(), "backlog")
            .column_as(Expr::col(V::CreatedAt).min(), "oldest")
            .filter(V::Status.ne(Sent.as_str()))
            .into_tuple()
            .one(self.reader())
            .await?
            .unwrap_or((0, None));
        Ok(EventStats {
            backlog,
            oldest_backlog_at: oldest.map(Timestamp::from_ms),
        })
    }

    /// Deletes at most `batch` events published before `published_before`.
    #[tracing::instrument(name = "db.cleanup_events", skip_all)]
    pub async fn cleanup_events(
        &self,
        published_before: i64,
        batch: u64,
    ) -> Result<u64, StorageError> {
        let seqs: Vec<i64> = event::Entity::find()
            .select_only()
            .column(V::Seq)
            .filter(V::Status.eq(Sent.as_str()))
            .filter(V::PublishedAt.lt(published_before))
            .limit(batch)
            .into_tuple()
            .all(self.db())
            .await?;
        Ok(event::Entity::delete_many()
            .filter(V::Seq.is_in(seqs))
            .exec(self.db())
            .await?
            .rows_affected)
    }
}
