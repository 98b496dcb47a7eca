//! Keeping the audit trail over time: sealing the personal details of rows written in clear
//! (before they were sealed, or by a replica of an older release during a rolling deploy), and
//! pruning events past their retention in chain order behind a MAC'd base, so that a pruned
//! trail still verifies and a cut one does not. Both work one account at a time, under the
//! account's lock (PostgreSQL's advisory lock; SQLite's one writer), in bounded batches, so
//! every replica may run them without two of them touching the same rows.

use std::collections::BTreeMap;

use sea_orm::{
    ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    QuerySelect as _, TransactionTrait as _,
    sea_query::{Expr, ExprTrait as _},
};

use super::audit::{
    BASE_LABEL, Start, anchor, chain_meta, current_link, head_mac, set_checkpoint, trail_start,
    verify, verify_after,
};
use crate::{
    Storage, StorageError,
    entity::{
        audit_event::{self, Column as A},
        audit_head::{self, Column as H},
    },
    personal::Personal,
};

/// What one [`Storage::prune_audit`] pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Events of accounts, pruned from the oldest behind each account's base.
    pub account_events: u64,
    /// Events under no account (requests for unknown addresses).
    pub unattached_events: u64,
    /// Accounts whose old events were kept because their trail does not verify (pruning
    /// would destroy the evidence).
    pub kept_broken: u64,
}

impl Storage {
    /// Seals the personal details (client, and the details the sealer calls personal) of the
    /// account's rows written in clear, in one transaction; answers how many rows it sealed.
    /// When the account's trail verifies, its links from the first such row on are made again
    /// (over the ciphertext) and its anchor and checkpoint moved, so it still verifies; a
    /// trail that does not verify is not linked again (that would launder the break): its
    /// personal details are sealed all the same, and it stays broken.
    #[tracing::instrument(name = "db.reseal_trail", skip_all)]
    pub async fn reseal_trail(&self, account_id: &str, now: i64) -> Result<u64, StorageError> {
        let txn = self.db().begin().await?;
        super::lock_accounts(self.backend(), &txn, [account_id]).await?;
        let sealed = self.reseal_in(&txn, account_id, now).await?;
        txn.commit().await?;
        Ok(sealed)
    }

    /// Seals the rows written in clear of the accounts of up to `batch` such rows, from where
    /// the last pass stopped; answers how many rows it sealed, `None` when the scan found none
    /// left.
    #[tracing::instrument(name = "db.reseal_clear_trails", skip_all)]
    pub async fn reseal_clear_trails(
        &self,
        now: i64,
        batch: u64,
    ) -> Result<Option<u64>, StorageError> {
        if self.personal_data().is_none() {
            return Ok(None);
        }
        let through = resealed_through(self.db()).await?;
        let candidates: Vec<(i64, String)> = audit_event::Entity::find()
            .select_only()
            .column(A::Seq)
            .column(A::AccountId)
            .filter(A::Seq.gt(through))
            .filter(A::Sealed.is_null())
            .filter(A::AccountId.ne(""))
            .filter(
                A::ClientIp
                    .is_not_null()
                    .or(A::ClientUserAgent.is_not_null())
                    .or(A::Details.like("%hint%"))
                    .or(A::Details.like("%\"reason\"%")),
            )
            .order_by_asc(A::Seq)
            .limit(batch)
            .into_tuple()
            .all(self.reader())
            .await?;
        let Some(last) = candidates.last().map(|(seq, _)| *seq) else {
            return Ok(None);
        };
        let mut accounts: Vec<&str> = candidates.iter().map(|(_, a)| a.as_str()).collect();
        accounts.sort_unstable();
        accounts.dedup();
        let mut sealed = 0;
        for account in accounts {
            sealed += self.reseal_trail(account, now).await?;
        }
        self.db()
            .execute_raw(sea_orm::Statement::from_sql_and_values(
                self.db().get_database_backend(),
                match self.backend() {
                    crate::Backend::Postgres => {
                        "UPDATE audit_chain_meta SET resealed_through_seq = $1 \
                         WHERE id = 1 AND COALESCE(resealed_through_seq, 0) < $1"
                    }
                    crate::Backend::Sqlite => {
                        "UPDATE audit_chain_meta SET resealed_through_seq = ?1 \
                         WHERE id = 1 AND COALESCE(resealed_through_seq, 0) < ?1"
                    }
                },
                [last.into()],
            ))
            .await?;
        // Rows that looked personal but held nothing to seal (a refusal's coded reason) are
        // passed over: the scan moved past them.
        Ok(Some(sealed))
    }

    /// [`Storage::reseal_trail`] inside `txn`, whose caller holds the account's lock.
    pub(crate) async fn reseal_in<C: ConnectionTrait>(
        &self,
        txn: &C,
        account_id: &str,
        now: i64,
    ) -> Result<u64, StorageError> {
        let Some(sealer) = self.personal_data() else {
            return Ok(0);
        };
        let rows = audit_event::Entity::find()
            .filter(A::AccountId.eq(account_id))
            .order_by_asc(A::Seq)
            .all(txn)
            .await?;
        let in_clear = |r: &audit_event::Model| {
            r.sealed.is_none()
                && (r.client_ip.is_some()
                    || r.client_user_agent.is_some()
                    || serde_json::from_str::<BTreeMap<String, String>>(&r.details)
                        .is_ok_and(|d| d.keys().any(|k| sealer.personal_detail(&r.kind, k))))
        };
        let Some(first) = rows.iter().position(in_clear) else {
            return Ok(0);
        };
        let keys = self.audit_chain();
        let head = audit_head::Entity::find_by_id(account_id.to_owned())
            .one(txn)
            .await?;
        let intact = match keys {
            Some(keys) => {
                let (legacy_max_seq, _) = chain_meta(txn).await?;
                let start = trail_start(keys, account_id, head.as_ref());
                verify(txn, keys, account_id, None).await?.0.valid
                    && match &start {
                        Some(start) => {
                            verify_after(txn, keys, account_id, start, None, legacy_max_seq)
                                .await?
                                .is_none()
                        }
                        None => false,
                    }
            }
            None => false,
        };
        if !intact {
            tracing::warn!(
                account_id,
                "an audit trail that does not verify holds personal details in clear: they are \
                 sealed, and the trail is not linked again"
            );
        }
        let mut previous = match first.checked_sub(1) {
            Some(before) => rows[before].chain_hash.clone().unwrap_or_default(),
            None => {
                keys.and_then(|k| trail_start(k, account_id, head.as_ref()))
                    .unwrap_or(Start::BEGINNING)
                    .previous
            }
        };
        let mut sealed = 0;
        let mut newest_link = None;
        for mut row in rows.into_iter().skip(first) {
            let mut changed = false;
            if in_clear(&row) {
                let mut details: BTreeMap<String, String> = serde_json::from_str(&row.details)
                    .map_err(|e| {
                        StorageError::Other(format!("audit details of {}: {e}", row.event_id))
                    })?;
                let personal_details: BTreeMap<String, String> = details
                    .iter()
                    .filter(|(k, _)| sealer.personal_detail(&row.kind, k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                details.retain(|k, _| !personal_details.contains_key(k));
                let personal = Personal {
                    ip: row.client_ip.take(),
                    ua: row.client_user_agent.take(),
                    details: personal_details,
                };
                row.sealed = Some(
                    crate::personal::seal(txn, sealer, account_id, &row.event_id, &personal, now)
                        .await?,
                );
                row.details = serde_json::to_string(&details)
                    .map_err(|e| StorageError::Other(format!("audit details: {e}")))?;
                sealed += 1;
                changed = true;
            }
            if let (true, Some(keys), Some(_)) = (intact, keys, &row.chain_hash) {
                let event = crate::chain::canonical_row(&row, &row.details);
                let (key_id, link) = current_link(keys, &previous, &event)?;
                row.chain_key_id = Some(key_id);
                row.chain_hash = Some(link.clone());
                previous = link.clone();
                newest_link = Some((row.seq, link));
                changed = true;
            }
            if changed {
                audit_event::Entity::update_many()
                    .col_expr(A::ClientIp, Expr::value(row.client_ip.clone()))
                    .col_expr(
                        A::ClientUserAgent,
                        Expr::value(row.client_user_agent.clone()),
                    )
                    .col_expr(A::Details, Expr::value(row.details.clone()))
                    .col_expr(A::Sealed, Expr::value(row.sealed.clone()))
                    .col_expr(A::ChainKeyId, Expr::value(row.chain_key_id.clone()))
                    .col_expr(A::ChainHash, Expr::value(row.chain_hash.clone()))
                    .filter(A::Seq.eq(row.seq))
                    .exec(txn)
                    .await?;
            }
        }
        // The trail verified and was linked again: its anchor names the newest row's new link,
        // and its checkpoint moves there (everything up to it was just verified).
        if let (Some(keys), Some((seq, link))) = (keys, newest_link) {
            anchor(txn, keys, account_id, seq, &link, None).await?;
            set_checkpoint(txn, keys, account_id, seq, &link, sea_orm::Condition::all()).await?;
        }
        Ok(sealed)
    }

    /// Prunes audit events that occurred before `before`: for up to `batch` accounts, their
    /// oldest events in chain order (never an account's newest, which its anchor names),
    /// behind a base that names the last pruned row's link under a MAC; and up to `batch`
    /// events under no account. An account whose trail does not verify keeps its events.
    #[tracing::instrument(name = "db.prune_audit", skip_all)]
    pub async fn prune_audit(&self, before: i64, batch: u64) -> Result<PruneReport, StorageError> {
        let mut report = PruneReport::default();
        let Some(keys) = self.audit_chain() else {
            return Ok(report);
        };
        let unattached: Vec<i64> = audit_event::Entity::find()
            .select_only()
            .column(A::Seq)
            .filter(A::AccountId.eq(""))
            .filter(A::OccurredAt.lt(before))
            .limit(batch)
            .into_tuple()
            .all(self.db())
            .await?;
        if !unattached.is_empty() {
            report.unattached_events = audit_event::Entity::delete_many()
                .filter(A::Seq.is_in(unattached))
                .filter(A::AccountId.eq(""))
                .exec(self.db())
                .await?
                .rows_affected;
        }
        // Accounts with an old event that is not their newest.
        let candidates: Vec<String> = self
            .reader()
            .query_all_raw(sea_orm::Statement::from_sql_and_values(
                self.db().get_database_backend(),
                match self.backend() {
                    crate::Backend::Postgres => {
                        "SELECT DISTINCT e.account_id FROM audit_events e \
                         WHERE e.occurred_at < $1 AND e.account_id <> '' AND EXISTS \
                         (SELECT 1 FROM audit_events n WHERE n.account_id = e.account_id \
                         AND n.seq > e.seq) LIMIT $2"
                    }
                    crate::Backend::Sqlite => {
                        "SELECT DISTINCT e.account_id FROM audit_events e \
                         WHERE e.occurred_at < ?1 AND e.account_id <> '' AND EXISTS \
                         (SELECT 1 FROM audit_events n WHERE n.account_id = e.account_id \
                         AND n.seq > e.seq) LIMIT ?2"
                    }
                },
                [
                    before.into(),
                    i64::try_from(batch).unwrap_or(i64::MAX).into(),
                ],
            ))
            .await?
            .into_iter()
            .filter_map(|row| row.try_get::<String>("", "account_id").ok())
            .collect();
        for account in candidates {
            match self.prune_account(keys, &account, before, batch).await? {
                Some(pruned) => report.account_events += pruned,
                None => report.kept_broken += 1,
            }
        }
        Ok(report)
    }

    /// Prunes one account's events before `before` (at most `batch`); `None` when its trail
    /// does not verify up to them.
    async fn prune_account(
        &self,
        keys: &dyn crate::AuditChainKeys,
        account_id: &str,
        before: i64,
        batch: u64,
    ) -> Result<Option<u64>, StorageError> {
        let txn = self.db().begin().await?;
        super::lock_accounts(self.backend(), &txn, [account_id]).await?;
        let head = audit_head::Entity::find_by_id(account_id.to_owned())
            .one(&txn)
            .await?;
        let newest = audit_event::Entity::find()
            .filter(A::AccountId.eq(account_id))
            .order_by_desc(A::Seq)
            .one(&txn)
            .await?;
        let (Some(head), Some(newest)) = (head, newest) else {
            // No anchor yet (a trail from before anchors gets one when it is next verified):
            // nothing to hang a base on.
            return Ok(Some(0));
        };
        // The oldest rows in chain order, while they are old (a prefix of the trail).
        let oldest = audit_event::Entity::find()
            .filter(A::AccountId.eq(account_id))
            .filter(A::Seq.lt(newest.seq))
            .order_by_asc(A::Seq)
            .limit(batch)
            .all(&txn)
            .await?;
        let prefix: Vec<&audit_event::Model> = oldest
            .iter()
            .take_while(|r| r.occurred_at < before)
            .collect();
        let Some(last) = prefix.last() else {
            return Ok(Some(0));
        };
        let (legacy_max_seq, _) = chain_meta(&txn).await?;
        let Some(start) = trail_start(keys, account_id, Some(&head)) else {
            return Ok(None);
        };
        if verify_after(
            &txn,
            keys,
            account_id,
            &start,
            Some(last.seq),
            legacy_max_seq,
        )
        .await?
        .is_some()
        {
            tracing::warn!(
                account_id,
                "audit events past their retention are kept: the trail does not verify up to them"
            );
            return Ok(None);
        }
        let Some(link) = last.chain_hash.clone() else {
            // Unlinked legacy rows only: keep them until a linked row can be the base.
            return Ok(Some(0));
        };
        let pruned = audit_event::Entity::delete_many()
            .filter(A::AccountId.eq(account_id))
            .filter(A::Seq.lte(last.seq))
            .exec(&txn)
            .await?
            .rows_affected;
        let (key_id, mac) = head_mac(keys, BASE_LABEL, account_id, last.seq, &link)?;
        audit_head::Entity::update_many()
            .col_expr(H::BaseSeq, Expr::value(last.seq))
            .col_expr(H::BaseLink, Expr::value(link))
            .col_expr(H::BaseKeyId, Expr::value(key_id))
            .col_expr(H::BaseMac, Expr::value(mac))
            .filter(H::AccountId.eq(account_id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(Some(pruned))
    }
}

/// How far the scan for rows in clear got.
async fn resealed_through<C: ConnectionTrait>(db: &C) -> Result<i64, StorageError> {
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT resealed_through_seq FROM audit_chain_meta WHERE id = 1",
        ))
        .await?;
    Ok(row
        .and_then(|r| {
            r.try_get::<Option<i64>>("", "resealed_through_seq")
                .ok()
                .flatten()
        })
        .unwrap_or(0))
}
