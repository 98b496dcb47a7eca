//! Deleting what has expired, in bounded batches so no statement holds locks for long.

use sea_orm::{
    ColumnTrait as _, EntityTrait as _, QueryFilter as _, QuerySelect as _,
    sea_query::ExprTrait as _,
};

use crate::{
    Storage, StorageError,
    entity::{
        assisted_flow, contact_flow, contact_vouch, failure, finished_enrollment, flow, outbox,
        rate_limit,
    },
    model::OutboxStatus,
};

/// Rows deleted by one [`Storage::cleanup`] pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub flows: u64,
    /// Assisted flows an hour past their expiry (their lifetime is the window their begin
    /// limits count in, so none that still counts is deleted).
    pub assisted_flows: u64,
    pub rate_limits: u64,
    pub failures: u64,
    pub sent_messages: u64,
    /// Platform events published before `sent_before`.
    pub published_events: u64,
    /// Records of finished zero-knowledge enrollment ids past the ids' expiry.
    pub finished_enrollments: u64,
    /// Contact flows begun more than [`CONTACT_FLOW_RETENTION_MS`] ago, with their vouches.
    pub contact_flows: u64,
}

/// How long a contact flow is kept from its begin: past its gathering (24 h), waiting period
/// (48 h) and life after it (24 h), and past the longest contact cooldown (its vouches are the
/// cooldown's record; `RECOVERY_CONTACT_COOLDOWN` is at most this).
pub const CONTACT_FLOW_RETENTION_MS: i64 = 30 * 24 * 3_600_000;

impl Storage {
    /// Deletes at most `batch` rows of each kind: flows past their expiry, rate-limit windows
    /// that have ended, lockout failures older than `failures_before`, and sent outbox rows
    /// older than `sent_before` (and never-sent `void` rows created before it). Call it until it reports zeros to drain a backlog.
    #[tracing::instrument(name = "db.cleanup", skip_all)]
    pub async fn cleanup(
        &self,
        now: i64,
        failures_before: i64,
        sent_before: i64,
        batch: u64,
    ) -> Result<CleanupReport, StorageError> {
        let flow_ids: Vec<String> = flow::Entity::find()
            .select_only()
            .column(flow::Column::FlowId)
            .filter(flow::Column::ExpiresAt.lte(now))
            .limit(batch)
            .into_tuple()
            .all(self.db())
            .await?;
        let flows = flow::Entity::delete_many()
            .filter(flow::Column::FlowId.is_in(flow_ids))
            .exec(self.db())
            .await?
            .rows_affected;

        let assisted_ids: Vec<String> = assisted_flow::Entity::find()
            .select_only()
            .column(assisted_flow::Column::AssistedFlowId)
            // An hour past expiry: a replica whose clock is behind still counts a flow in
            // its begin limits until then.
            .filter(assisted_flow::Column::ExpiresAt.lte(now - 3_600_000))
            .limit(batch)
            .into_tuple()
            .all(self.db())
            .await?;
        let assisted_flows = assisted_flow::Entity::delete_many()
            .filter(assisted_flow::Column::AssistedFlowId.is_in(assisted_ids))
            .exec(self.db())
            .await?
            .rows_affected;

        let contact_ids: Vec<String> = contact_flow::Entity::find()
            .select_only()
            .column(contact_flow::Column::ContactFlowId)
            .filter(contact_flow::Column::CreatedAt.lte(now - CONTACT_FLOW_RETENTION_MS))
            .limit(batch)
            .into_tuple()
            .all(self.db())
            .await?;
        contact_vouch::Entity::delete_many()
            .filter(contact_vouch::Column::ContactFlowId.is_in(contact_ids.clone()))
            .exec(self.db())
            .await?;
        let contact_flows = contact_flow::Entity::delete_many()
            .filter(contact_flow::Column::ContactFlowId.is_in(contact_ids))
            .exec(self.db())
            .await?
            .rows_affected;

        let windows: Vec<(String, i64)> = rate_limit::Entity::find()
            .select_only()
            .column(rate_limit::Column::BucketKey)
            .column(rate_limit::Column::WindowStart)
            .filter(rate_limit::Column::ExpiresAt.lte(now))
            .limit(batch)
            .into_tuple()
            .all(self.db())
            .await?;
        let mut rate_limits = 0;
        for (key, start) in windows {
            rate_limits += rate_limit::Entity::delete_many()
                .filter(rate_limit::Column::BucketKey.eq(key))
                .filter(rate_limit::Column::WindowStart.eq(start))
                .filter(rate_limit::Column::ExpiresAt.lte(now))
                .exec(self.db())
                .await?
                .rows_affected;
        }

        let failure_ids: Vec<i64> = failure::Entity::find()
            .select_only()
            .column(failure::Column::Id)
            .filter(failure::Column::FailedAt.lt(failures_before))
            .limit(batch)
            .into_tuple()
            .all(self.db())
            .await?;
        let failures = failure::Entity::delete_many()
            .filter(failure::Column::Id.is_in(failure_ids))
            .exec(self.db())
            .await?
            .rows_affected;

        let sent_ids: Vec<i64> = outbox::Entity::find()
            .select_only()
            .column(outbox::Column::Id)
            .filter(
                (outbox::Column::Status
                    .eq(OutboxStatus::Sent.as_str())
                    .and(outbox::Column::SentAt.lt(sent_before)))
                .or(outbox::Column::Status
                    .eq(OutboxStatus::Void.as_str())
                    .and(outbox::Column::CreatedAt.lt(sent_before))),
            )
            .limit(batch)
            .into_tuple()
            .all(self.db())
            .await?;
        let sent_messages = outbox::Entity::delete_many()
            .filter(outbox::Column::Id.is_in(sent_ids))
            .exec(self.db())
            .await?
            .rows_affected;

        let published_events = self.cleanup_events(sent_before, batch).await?;

        let finished_keys: Vec<String> = finished_enrollment::Entity::find()
            .select_only()
            .column(finished_enrollment::Column::EnrollmentKey)
            .filter(finished_enrollment::Column::ExpiresAt.lte(now))
            .limit(batch)
            .into_tuple()
            .all(self.db())
            .await?;
        let finished_enrollments = finished_enrollment::Entity::delete_many()
            .filter(finished_enrollment::Column::EnrollmentKey.is_in(finished_keys))
            .exec(self.db())
            .await?
            .rows_affected;

        Ok(CleanupReport {
            published_events,
            flows,
            assisted_flows,
            rate_limits,
            failures,
            sent_messages,
            finished_enrollments,
            contact_flows,
        })
    }
}
