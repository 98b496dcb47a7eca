//! Rate limits: fixed windows counted by one conditional upsert.

use sea_orm::{
    ConnectionTrait as _,
    sea_query::{Expr, ExprTrait as _, OnConflict, Query},
};

use crate::{
    Storage, StorageError,
    entity::rate_limit::{self, Column as R},
    model::RateDecision,
};

impl Storage {
    /// Counts one hit on `key` in the current fixed window of `window_ms` (windows start at
    /// multiples of `window_ms` since the epoch) and answers whether it is within `limit`.
    ///
    /// One statement decides: `INSERT … ON CONFLICT DO UPDATE SET count = count + 1 WHERE
    /// count < limit RETURNING count`. A hit over the limit changes nothing and returns no
    /// row, so exactly `limit` hits per window are allowed however many replicas race.
    #[tracing::instrument(name = "db.hit_rate_limit", skip_all)]
    pub async fn hit_rate_limit(
        &self,
        key: &str,
        window_ms: i64,
        limit: i64,
        now: i64,
    ) -> Result<RateDecision, StorageError> {
        let window_ms = Ord::max(window_ms, 1);
        let window_start = now - now.rem_euclid(window_ms);
        let window_end = window_start + window_ms;
        if limit <= 0 {
            return Ok(RateDecision::Limited {
                retry_after_ms: window_end - now,
            });
        }
        let statement = Query::insert()
            .into_table(rate_limit::Entity)
            .columns([R::BucketKey, R::WindowStart, R::Count, R::ExpiresAt])
            .values([
                key.into(),
                window_start.into(),
                1i64.into(),
                window_end.into(),
            ])
            .map_err(|e| StorageError::Other(e.to_string()))?
            .on_conflict(
                OnConflict::columns([R::BucketKey, R::WindowStart])
                    .value(R::Count, Expr::col((rate_limit::Entity, R::Count)).add(1))
                    .action_and_where(Expr::col((rate_limit::Entity, R::Count)).lt(limit))
                    .to_owned(),
            )
            .returning_col(R::Count)
            .to_owned();
        // All rows, not `query_one`: a statement stopped after its first row is only reset,
        // and SQLite skips its automatic checkpoint for a commit made that way (a stream of
        // such hits grew the WAL without bound).
        match self.db().query_all(&statement).await?.into_iter().next() {
            Some(row) => Ok(RateDecision::Allowed {
                count: row.try_get_by_index::<i64>(0)?,
            }),
            None => Ok(RateDecision::Limited {
                retry_after_ms: window_end - now,
            }),
        }
    }
}
