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
    BASE_LABEL, Start, anchor, anchor_mac_ok, chain_meta, current_link, head_mac, set_checkpoint,
    trail_start, verify, verify_after,
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Events of accounts, pruned from the oldest behind each account's base.
    pub account_events: u64,
    /// Events under no account (requests for unknown addresses).
    pub unattached_events: u64,
    /// Accounts whose old events were kept because their trail does not verify (pruning
    /// would destroy the evidence).
    pub kept_broken: u64,
    /// Where the next pass goes on (the last account this one looked at), when it looked at
    /// a full batch; `None`: it reached the end, start again from the first.
    pub next_account: Option<String>,
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
        // Only rows older than the lag: a slower writer (an old replica during a rolling
        // deploy) may still commit a row with a lower `seq` than one already committed, and
        // the scan position must never pass a row that is not there yet.
        let settled = now - RESEAL_LAG_MS;
        let candidates: Vec<(i64, String)> = audit_event::Entity::find()
            .select_only()
            .column(A::Seq)
            .column(A::AccountId)
            .filter(A::Seq.gt(through))
            .filter(A::OccurredAt.lt(settled))
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
            // Nothing left in clear up to the settled rows: the scan moves to the newest of
            // them, so the next pass reads only what came since.
            let settled_seq: Option<i64> = audit_event::Entity::find()
                .select_only()
                .column(A::Seq)
                .filter(A::OccurredAt.lt(settled))
                .order_by_desc(A::OccurredAt)
                .limit(1)
                .into_tuple()
                .one(self.reader())
                .await?;
            if let Some(seq) = settled_seq.filter(|seq| *seq > through) {
                set_resealed_through(self, seq).await?;
            }
            return Ok(None);
        };
        let mut accounts: Vec<&str> = candidates.iter().map(|(_, a)| a.as_str()).collect();
        accounts.sort_unstable();
        accounts.dedup();
        let mut sealed = 0;
        for account in accounts {
            // One account's trouble never stops the others.
            match self.reseal_trail(account, now).await {
                Ok(n) => sealed += n,
                Err(err) => {
                    tracing::warn!(account_id = account, error = %err, "an audit trail could not be sealed");
                }
            }
        }
        set_resealed_through(self, last).await?;
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
        let keys = self.audit_chain();
        let head = audit_head::Entity::find_by_id(account_id.to_owned())
            .one(txn)
            .await?;
        // Only the trail after a pruned trail's base: anything behind it was put there (and
        // makes the trail not verify).
        let base_seq = keys
            .and_then(|k| trail_start(k, account_id, head.as_ref()))
            .filter(|start| start.linked)
            .map_or(i64::MIN, |start| start.after_seq);
        let rows = audit_event::Entity::find()
            .filter(A::AccountId.eq(account_id))
            .filter(A::Seq.gt(base_seq))
            .order_by_asc(A::Seq)
            .all(txn)
            .await?;
        // Details that are not a map of strings (written by hand?) are sealed whole.
        let in_clear = |r: &audit_event::Model| {
            r.sealed.is_none()
                && (r.client_ip.is_some()
                    || r.client_user_agent.is_some()
                    || serde_json::from_str::<BTreeMap<String, String>>(&r.details)
                        .map_or(true, |d| {
                            d.keys().any(|k| sealer.personal_detail(&r.kind, k))
                        }))
        };
        let Some(first) = rows.iter().position(in_clear) else {
            return Ok(0);
        };
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
                let (details, personal_details) = match serde_json::from_str::<
                    BTreeMap<String, String>,
                >(&row.details)
                {
                    Ok(mut details) => {
                        let personal: BTreeMap<String, String> = details
                            .iter()
                            .filter(|(k, _)| sealer.personal_detail(&row.kind, k))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        details.retain(|k, _| !personal.contains_key(k));
                        (details, personal)
                    }
                    Err(_) => {
                        tracing::warn!(event_id = %row.event_id, "audit details that are not a map of strings are sealed whole");
                        (
                            BTreeMap::new(),
                            BTreeMap::from([("details".to_owned(), row.details.clone())]),
                        )
                    }
                };
                let personal = Personal {
                    ip: row.client_ip.take(),
                    ua: row.client_user_agent.take(),
                    details: personal_details,
                };
                row.sealed = Some(
                    crate::personal::seal(
                        txn,
                        sealer,
                        account_id,
                        &row.event_id,
                        &personal,
                        now,
                        None,
                    )
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

    /// Prunes audit events that occurred before `before`: for up to `batch` accounts after
    /// `after_account` (in account order: a caller passes back [`PruneReport::next_account`]
    /// so accounts that keep their events cannot starve the others), their oldest events in
    /// chain order (never an account's newest, which its anchor names), behind a base that
    /// names the last pruned row's link under a MAC; and up to `batch` events under no
    /// account. An account whose trail does not verify keeps its events.
    #[tracing::instrument(name = "db.prune_audit", skip_all)]
    pub async fn prune_audit(
        &self,
        before: i64,
        batch: u64,
        after_account: &str,
    ) -> Result<PruneReport, StorageError> {
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
                         WHERE e.occurred_at < $1 AND e.account_id > $3 AND EXISTS \
                         (SELECT 1 FROM audit_events n WHERE n.account_id = e.account_id \
                         AND n.seq > e.seq) ORDER BY e.account_id LIMIT $2"
                    }
                    crate::Backend::Sqlite => {
                        "SELECT DISTINCT e.account_id FROM audit_events e \
                         WHERE e.occurred_at < ?1 AND e.account_id > ?3 AND EXISTS \
                         (SELECT 1 FROM audit_events n WHERE n.account_id = e.account_id \
                         AND n.seq > e.seq) ORDER BY e.account_id LIMIT ?2"
                    }
                },
                [
                    before.into(),
                    i64::try_from(batch).unwrap_or(i64::MAX).into(),
                    after_account.into(),
                ],
            ))
            .await?
            .into_iter()
            .filter_map(|row| row.try_get::<String>("", "account_id").ok())
            .collect();
        report.next_account = (candidates.len() as u64 == batch)
            .then(|| candidates.last().cloned())
            .flatten();
        for account in candidates {
            match self.prune_account(keys, &account, before, batch).await {
                Ok(Some(pruned)) => report.account_events += pruned,
                Ok(None) => report.kept_broken += 1,
                Err(err) => {
                    tracing::warn!(account_id = %account, error = %err, "an audit trail could not be pruned");
                }
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
        let Some(newest) = newest else {
            return Ok(Some(0));
        };
        // A trail from before anchors gets its anchor here once it verifies (as a read would
        // give it), so that it has somewhere to keep a base.
        let head = match head {
            Some(head) => head,
            None => {
                let (status, checkpoint) = verify(&txn, keys, account_id, None).await?;
                match checkpoint.filter(|c| status.valid && c.anchor) {
                    Some(c) => {
                        anchor(&txn, keys, account_id, c.seq, &c.link, None).await?;
                        match audit_head::Entity::find_by_id(account_id.to_owned())
                            .one(&txn)
                            .await?
                        {
                            Some(head) => head,
                            None => return Ok(Some(0)),
                        }
                    }
                    None if status.valid => return Ok(Some(0)),
                    None => return Ok(None),
                }
            }
        };
        if !anchor_mac_ok(keys, &head) {
            return Ok(None);
        }
        let Some(start) = trail_start(keys, account_id, Some(&head)) else {
            return Ok(None);
        };
        // The oldest rows after the base, in chain order, up to (not including) the row the
        // anchor names and the newest.
        let oldest = audit_event::Entity::find()
            .filter(A::AccountId.eq(account_id))
            .filter(A::Seq.gt(start.after_seq))
            .filter(A::Seq.lt(std::cmp::min(newest.seq, head.head_seq)))
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

/// How long after its time a row is taken as committed by every writer that could write it.
const RESEAL_LAG_MS: i64 = 10 * 60_000;

/// Moves the scan for rows in clear forward to `seq` (never back).
async fn set_resealed_through(storage: &Storage, seq: i64) -> Result<(), StorageError> {
    storage
        .db()
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            storage.db().get_database_backend(),
            match storage.backend() {
                crate::Backend::Postgres => {
                    "UPDATE audit_chain_meta SET resealed_through_seq = $1 \
                     WHERE id = 1 AND COALESCE(resealed_through_seq, 0) < $1"
                }
                crate::Backend::Sqlite => {
                    "UPDATE audit_chain_meta SET resealed_through_seq = ?1 \
                     WHERE id = 1 AND COALESCE(resealed_through_seq, 0) < ?1"
                }
            },
            [seq.into()],
        ))
        .await?;
    Ok(())
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
