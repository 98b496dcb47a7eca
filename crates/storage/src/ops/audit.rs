//! The audit trail: appended in the transaction of the change it records, linked into the
//! account's hash chain, anchored outside its rows, and paged newest first.
//!
//! Each row's link is `HMAC(key, previous link || canonical event)`. The account's anchor
//! (`audit_heads`) names the newest row and its link under a MAC, so deleting the newest rows
//! (or all of them) breaks the trail as editing, deleting or reordering a row does. A
//! verified checkpoint beside it (also under a MAC) lets a verification check only the rows
//! appended since and the rows a page shows. Repeats of a refusal fold into the newest row
//! ([`crate::model::Coalesce`]). Events under no account (requests for unknown addresses) are
//! each linked on their own: no reader lists them, and concurrent writers share no head.

use std::collections::BTreeMap;

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    QuerySelect as _, TransactionTrait as _,
    sea_query::{Expr, OnConflict},
};

use crate::{
    AuditChainKeys, ChainStatus, Storage, StorageError,
    entity::{
        audit_event::{self, Column as A},
        audit_head::{self, Column as H},
    },
    model::{AuditRecord, ClientInfo, Effects, NewAuditEvent},
};

/// The detail a folded row counts its occurrences in (absent: once).
const COUNT: &str = "count";
/// The detail a folded row keeps its latest occurrence in.
const LAST_AT: &str = "last_at";

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

    /// Appends `e` inside `txn` (the account's writers are serialised by the caller: the
    /// advisory lock on PostgreSQL, the writer lock on SQLite): linked after the account's
    /// newest row, or folded into it, and the anchor moved.
    pub(crate) async fn append_one<C: ConnectionTrait>(
        &self,
        txn: &C,
        e: NewAuditEvent,
    ) -> Result<(), StorageError> {
        // An event under no account (a request for an unknown address) goes through the same
        // statements as a known account's, for equal work and timing: its head query finds
        // nothing (it is linked on its own), and its anchor, never read back, is one of 256
        // rows picked by the typed address's keyed hash, so that it is updated as an
        // account's is, not inserted anew for every address.
        let chained = !e.account_id.is_empty();
        let anchor_key = if chained {
            e.account_id.clone()
        } else {
            let key = e.serialize_on.as_deref().unwrap_or(&e.event_id);
            format!("~{}", key.get(..2).unwrap_or(key))
        };
        let head = if chained {
            audit_event::Entity::find()
                .filter(A::AccountId.eq(e.account_id.as_str()))
                .order_by_desc(A::Seq)
                .one(txn)
                .await?
        } else {
            // By the event's own (unique, not yet written) id alone: one probe of the unique
            // index, as the account's newest row is one probe, however many such events there
            // are (with the empty account id beside it, PostgreSQL walked every one of them).
            audit_event::Entity::find()
                .filter(A::EventId.eq(e.event_id.as_str()))
                .one(txn)
                .await?
        };
        // An event with personal details is sealed under the account's newest data key: it is
        // read with the anchor, in the same round trip.
        let sealing = chained
            && self.personal_data().is_some()
            && (e.client.ip.is_some() || e.client.user_agent.is_some() || !e.personal.is_empty());
        let (anchored, data_key) = match self.audit_chain() {
            Some(_) if sealing => match anchor_with_key(txn, &anchor_key).await? {
                Some((anchor, key)) => (Some(anchor), Some(key)),
                None => (None, None),
            },
            Some(_) => (
                audit_head::Entity::find_by_id(anchor_key.clone())
                    .one(txn)
                    .await?
                    .filter(|_| chained),
                None,
            ),
            None => (None, None),
        };
        // An anchor whose MAC does not verify was written without the key (a cut pointed at
        // what is left): appends leave it as it is, so that the trail keeps answering
        // `chain_valid = false`, and never fold into the row it names. Re-signing it would
        // launder the cut.
        let forged = match (self.audit_chain(), &anchored) {
            (Some(keys), Some(a)) => !anchor_mac_ok(keys, a),
            _ => false,
        };
        if let Some(head) = head.as_ref().filter(|head| !forged && folds_into(&e, head)) {
            // Only into a head that is intact: the one the anchor names, its link right over
            // its content. Folding into an edited row would sign the edit.
            let previous = self.link_before(txn, head).await?;
            if self.intact(head, anchored.as_ref(), &previous) {
                return self.fold_into(txn, &e, head, &previous).await;
            }
        }
        // After the row the anchor names when that row is gone (the newest rows were cut): the
        // new row then does not follow what is left, and the cut stays visible.
        let previous = match (&anchored, &head) {
            (Some(a), Some(h)) if h.seq >= a.head_seq => h.chain_hash.clone(),
            (Some(a), _) => Some(a.head_link.clone()),
            (None, Some(h)) => h.chain_hash.clone(),
            (None, None) => None,
        };
        // The personal details go sealed under the account's data key; without a sealer, or
        // under no account, in clear.
        let mut details = e.details;
        let mut personal = crate::personal::Personal {
            ip: e.client.ip,
            ua: e.client.user_agent,
            details: e.personal,
        };
        debug_assert_eq!(
            sealing,
            chained && self.personal_data().is_some() && !personal.is_empty()
        );
        let sealed = match self.personal_data() {
            Some(sealer) if sealing => Some(
                crate::personal::seal(
                    txn,
                    sealer,
                    &e.account_id,
                    &e.event_id,
                    &personal,
                    e.occurred_at.as_ms(),
                    data_key,
                )
                .await?,
            ),
            _ => None,
        };
        let client = if sealed.is_some() {
            ClientInfo::default()
        } else {
            details.append(&mut personal.details);
            ClientInfo {
                ip: personal.ip,
                user_agent: personal.ua,
            }
        };
        let details = serde_json::to_string(&details)
            .map_err(|err| StorageError::Other(format!("audit details: {err}")))?;
        let keys = self.audit_chain();
        let link = match keys {
            Some(keys) => {
                let previous = previous.unwrap_or_default();
                let event = crate::chain::canonical(
                    &e.event_id,
                    &e.account_id,
                    &e.kind,
                    e.occurred_at.as_ms(),
                    client.ip.as_deref(),
                    client.user_agent.as_deref(),
                    &details,
                    sealed.as_deref(),
                );
                Some(current_link(keys, &previous, &event)?)
            }
            None => None,
        };
        let inserted = audit_event::Entity::insert(audit_event::ActiveModel {
            event_id: Set(e.event_id),
            account_id: Set(e.account_id),
            kind: Set(e.kind),
            occurred_at: Set(e.occurred_at.as_ms()),
            client_ip: Set(client.ip),
            client_user_agent: Set(client.user_agent),
            details: Set(details),
            sealed: Set(sealed),
            chain_key_id: Set(link.as_ref().map(|(key_id, _)| key_id.clone())),
            chain_hash: Set(link.as_ref().map(|(_, link)| link.clone())),
            ..Default::default()
        })
        .exec(txn)
        .await?;
        if let (Some(keys), Some((_, link)), false) = (keys, link, forged) {
            anchor(txn, keys, &anchor_key, inserted.last_insert_id, &link, None).await?;
        }
        Ok(())
    }

    /// The link of the row before `row` in its account's chain (empty for the first).
    async fn link_before<C: ConnectionTrait>(
        &self,
        txn: &C,
        row: &audit_event::Model,
    ) -> Result<String, StorageError> {
        let before = audit_event::Entity::find()
            .filter(A::AccountId.eq(row.account_id.as_str()))
            .filter(A::Seq.lt(row.seq))
            .order_by_desc(A::Seq)
            .one(txn)
            .await?;
        if let Some(before) = before {
            return Ok(before.chain_hash.unwrap_or_default());
        }
        // The first row of a pruned trail follows the base.
        let head = audit_head::Entity::find_by_id(row.account_id.clone())
            .one(txn)
            .await?;
        Ok(self
            .audit_chain()
            .and_then(|keys| trail_start(keys, &row.account_id, head.as_ref()))
            .map(|start| start.previous)
            .unwrap_or_default())
    }

    /// Whether the newest row is as it was written: its link right after `previous`, and the
    /// anchor naming it (a trail from before anchors has none). Without chain keys, yes.
    fn intact(
        &self,
        head: &audit_event::Model,
        anchor: Option<&audit_head::Model>,
        previous: &str,
    ) -> bool {
        let Some(keys) = self.audit_chain() else {
            return true;
        };
        let (Some(key_id), Some(link)) = (&head.chain_key_id, &head.chain_hash) else {
            return false;
        };
        let event = crate::chain::canonical_row(head, &head.details);
        let anchored = anchor.is_none_or(|a| a.head_seq == head.seq && a.head_link == *link);
        anchored
            && keys
                .link(key_id, previous, &event)
                .is_some_and(|expected| expected == *link)
    }

    /// Folds a repeat into the account's newest row (checked intact): `count` up, `last_at`
    /// moved, the latest values of the `carry` details kept as `last_<name>`, the row's link
    /// made again over its new content (it is the head: no link follows it yet), and the
    /// anchor (and a checkpoint at that row) moved with it.
    async fn fold_into<C: ConnectionTrait>(
        &self,
        txn: &C,
        repeat: &NewAuditEvent,
        head: &audit_event::Model,
        previous: &str,
    ) -> Result<(), StorageError> {
        let mut details: BTreeMap<String, String> = serde_json::from_str(&head.details)
            .map_err(|err| StorageError::Other(format!("audit details: {err}")))?;
        let count = details
            .get(COUNT)
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(1);
        details.insert(COUNT.to_owned(), (count + 1).to_string());
        if let Some(coalesce) = &repeat.coalesce {
            details.insert(LAST_AT.to_owned(), coalesce.at.clone());
            for name in coalesce.carry {
                if let Some(value) = repeat.details.get(*name) {
                    details.insert(format!("last_{name}"), value.clone());
                }
            }
        }
        let details = serde_json::to_string(&details)
            .map_err(|err| StorageError::Other(format!("audit details: {err}")))?;
        let mut link = None;
        if let Some(keys) = self.audit_chain() {
            let event = crate::chain::canonical_row(head, &details);
            link = Some(current_link(keys, previous, &event)?);
        }
        audit_event::Entity::update_many()
            .col_expr(A::Details, Expr::value(details))
            .col_expr(
                A::ChainKeyId,
                Expr::value(link.as_ref().map(|(key_id, _)| key_id.clone())),
            )
            .col_expr(
                A::ChainHash,
                Expr::value(link.as_ref().map(|(_, link)| link.clone())),
            )
            .filter(A::Seq.eq(head.seq))
            .exec(txn)
            .await?;
        if let (Some(keys), Some((_, link))) = (self.audit_chain(), link) {
            anchor(txn, keys, &head.account_id, head.seq, &link, Some(head.seq)).await?;
        }
        Ok(())
    }

    /// Whether the account's trail verifies. The anchor must name a row that is there with
    /// its link (else the newest rows were cut), or, for a trail written before anchors, every
    /// row must date from then; the rows from the verified checkpoint to the newest, and the
    /// rows `shown` (a page's `seq` range) from the one before them, must each verify and
    /// follow the one before. Rows without a link (written before the chain) may only come
    /// first. Without chain keys every trail counts as valid. A trail that verifies to its
    /// newest row moves the checkpoint there.
    #[tracing::instrument(name = "db.audit_chain_status", skip_all)]
    pub async fn audit_chain_status(
        &self,
        account_id: &str,
        shown: Option<(i64, i64)>,
    ) -> Result<ChainStatus, StorageError> {
        let Some(keys) = self.audit_chain() else {
            return Ok(ChainStatus::VALID);
        };
        let txn = self.snapshot().await?;
        let (verdict, checkpoint) = verify(&txn, keys, account_id, shown).await?;
        txn.commit().await?;
        self.checkpoint_best_effort(keys, account_id, checkpoint)
            .await;
        Ok(verdict)
    }

    /// Moves the checkpoint, best effort: a verification that succeeded stands even if its
    /// checkpoint cannot be written now (the next one walks a little further).
    async fn checkpoint_best_effort(
        &self,
        keys: &dyn AuditChainKeys,
        account_id: &str,
        checkpoint: Option<Checkpoint>,
    ) {
        let Some(checkpoint) = checkpoint else {
            return;
        };
        if let Err(err) = self.move_checkpoint(keys, account_id, checkpoint).await {
            tracing::warn!(error = %err, "the audit checkpoint could not be moved");
        }
    }

    /// Anchors a trail from before anchors, and moves the checkpoint forward to the row that
    /// was verified. A fold may since have changed that row's link: the next verification then
    /// finds the checkpoint stale and walks from the start, so a stale one costs time only.
    async fn move_checkpoint(
        &self,
        keys: &dyn AuditChainKeys,
        account_id: &str,
        Checkpoint { seq, link, anchor }: Checkpoint,
    ) -> Result<(), StorageError> {
        if anchor {
            audit_head::Entity::insert(new_anchor(keys, account_id, seq, &link)?)
                .on_conflict_do_nothing()
                .exec(self.db())
                .await?;
        }
        set_checkpoint(
            self.db(),
            keys,
            account_id,
            seq,
            &link,
            sea_orm::Condition::any()
                .add(H::VerifiedSeq.is_null())
                .add(H::VerifiedSeq.lte(seq)),
        )
        .await?;
        Ok(())
    }

    /// One read-only snapshot (repeatable read on PostgreSQL): an append or a fold between
    /// two of its reads is not taken for a cut, and the rows a page shows are the rows verified.
    async fn snapshot(&self) -> Result<sea_orm::DatabaseTransaction, StorageError> {
        Ok(match self.backend() {
            crate::Backend::Postgres => {
                self.reader()
                    .begin_with_config(
                        Some(sea_orm::IsolationLevel::RepeatableRead),
                        Some(sea_orm::AccessMode::ReadOnly),
                    )
                    .await?
            }
            crate::Backend::Sqlite => self.reader().begin().await?,
        })
    }

    /// A page of the trail (as [`Storage::list_audit_events`]) and the verdict on the trail
    /// over exactly those rows (as [`Storage::audit_chain_status`]), read in one snapshot.
    #[tracing::instrument(name = "db.audit_page", skip_all)]
    pub async fn audit_page(
        &self,
        account_id: &str,
        before_seq: Option<i64>,
        limit: u64,
    ) -> Result<(Vec<AuditRecord>, ChainStatus), StorageError> {
        let txn = self.snapshot().await?;
        let rows = list_rows(&txn, self.personal_data(), account_id, before_seq, limit).await?;
        let verdict = match self.audit_chain() {
            Some(keys) => {
                let shown = rows.last().zip(rows.first()).map(|(o, n)| (o.seq, n.seq));
                let (verdict, checkpoint) = verify(&txn, keys, account_id, shown).await?;
                txn.commit().await?;
                self.checkpoint_best_effort(keys, account_id, checkpoint)
                    .await;
                verdict
            }
            None => {
                txn.commit().await?;
                ChainStatus::VALID
            }
        };
        Ok((rows, verdict))
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
        list_rows(
            self.reader(),
            self.personal_data(),
            account_id,
            before_seq,
            limit,
        )
        .await
    }
}

/// Up to `limit` of the account's events older than `before_seq`, newest first, their
/// personal details opened with the account's data keys (left out, `forgotten`, when the key
/// was destroyed).
async fn list_rows<C: ConnectionTrait>(
    db: &C,
    sealer: Option<&dyn crate::PersonalDataKeys>,
    account_id: &str,
    before_seq: Option<i64>,
    limit: u64,
) -> Result<Vec<AuditRecord>, StorageError> {
    let mut query = audit_event::Entity::find().filter(A::AccountId.eq(account_id));
    if let Some(seq) = before_seq {
        query = query.filter(A::Seq.lt(seq));
    }
    let rows = query.order_by_desc(A::Seq).limit(limit).all(db).await?;
    // Every event up to the account's ACCOUNT_FORGOTTEN is forgotten: nothing of it is
    // opened, whether or not a key survived.
    let (data_keys, forgotten_through) = if rows.is_empty() {
        (Vec::new(), None)
    } else {
        crate::personal::page_keys(db, account_id).await?
    };
    let sealed: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| forgotten_through.is_none_or(|through| r.seq > through))
        .filter_map(|r| Some((r.event_id.as_str(), r.sealed.as_deref()?)))
        .collect();
    let mut opened: std::collections::HashMap<String, Option<(ClientInfo, _)>> = match sealer {
        Some(sealer) if !sealed.is_empty() => sealed
            .iter()
            .map(|(event_id, _)| (*event_id).to_owned())
            .zip(crate::personal::open_page(
                sealer, &data_keys, account_id, &sealed,
            ))
            .collect(),
        _ => Default::default(),
    };
    rows.into_iter()
        .map(|row| {
            let mut details: std::collections::BTreeMap<String, String> =
                serde_json::from_str(&row.details).map_err(|e| {
                    StorageError::Other(format!("audit details of {}: {e}", row.event_id))
                })?;
            let mut client = ClientInfo {
                ip: row.client_ip,
                user_agent: row.client_user_agent,
            };
            let forgotten = forgotten_through.is_some_and(|through| row.seq <= through);
            if row.sealed.is_some() && !forgotten {
                match opened.remove(&row.event_id).flatten() {
                    Some((opened, mut personal)) => {
                        client = opened;
                        details.append(&mut personal);
                    }
                    None => tracing::warn!(
                        event_id = %row.event_id,
                        "an audit event's personal details do not open with its account's data keys"
                    ),
                }
            }
            if forgotten {
                // A row left in clear (its trail was broken when the account was forgotten)
                // shows nothing personal either.
                client = ClientInfo::default();
                if let Some(sealer) = sealer {
                    details.retain(|name, _| !sealer.personal_detail(&row.kind, name));
                }
            }
            Ok(AuditRecord {
                seq: row.seq,
                event_id: row.event_id,
                account_id: row.account_id,
                kind: row.kind,
                occurred_at: crate::model::Timestamp::from_ms(row.occurred_at),
                client,
                details,
                forgotten,
            })
        })
        .collect()
}

/// The link of `event` after `previous` under the current key, with that key's id.
pub(super) fn current_link(
    keys: &dyn AuditChainKeys,
    previous: &str,
    event: &[u8],
) -> Result<(String, String), StorageError> {
    let key_id = keys.current_key_id();
    let link = keys.link(&key_id, previous, event).ok_or_else(|| {
        StorageError::Other("the current audit chain key is not configured".into())
    })?;
    Ok((key_id, link))
}

/// The MAC of an anchor or checkpoint (`label`) naming row `seq` with `link`, under the
/// current key.
pub(super) fn head_mac(
    keys: &dyn AuditChainKeys,
    label: &str,
    account_id: &str,
    seq: i64,
    link: &str,
) -> Result<(String, String), StorageError> {
    let bytes = serde_json::to_vec(&(label, account_id, seq, link))
        .map_err(|err| StorageError::Other(format!("audit anchor: {err}")))?;
    current_link(keys, "", &bytes)
}

/// Whether an anchor's MAC is right: it names the row it says, as the key made it.
pub(super) fn anchor_mac_ok(keys: &dyn AuditChainKeys, anchor: &audit_head::Model) -> bool {
    head_mac_ok(
        keys,
        "audit-head/v1",
        &anchor.account_id,
        anchor.head_seq,
        &anchor.head_link,
        &anchor.key_id,
        &anchor.mac,
    )
}

/// Whether a stored anchor or checkpoint MAC is right (under whichever key made it).
fn head_mac_ok(
    keys: &dyn AuditChainKeys,
    label: &str,
    account_id: &str,
    seq: i64,
    link: &str,
    key_id: &str,
    mac: &str,
) -> bool {
    serde_json::to_vec(&(label, account_id, seq, link))
        .ok()
        .and_then(|bytes| keys.link(key_id, "", &bytes))
        .is_some_and(|expected| expected == mac)
}

/// A new anchor naming row `seq` with `link`, under its MAC, without a checkpoint.
fn new_anchor(
    keys: &dyn AuditChainKeys,
    account_id: &str,
    seq: i64,
    link: &str,
) -> Result<audit_head::ActiveModel, StorageError> {
    let (key_id, mac) = head_mac(keys, "audit-head/v1", account_id, seq, link)?;
    Ok(audit_head::ActiveModel {
        account_id: Set(account_id.to_owned()),
        head_seq: Set(seq),
        head_link: Set(link.to_owned()),
        key_id: Set(key_id),
        mac: Set(mac),
        verified_seq: Set(None),
        verified_link: Set(None),
        verified_key_id: Set(None),
        verified_mac: Set(None),
        ..Default::default()
    })
}

/// Moves the account's anchor to row `seq` with `link`; a checkpoint at `checkpoint_at` (a
/// folded row whose link changed) moves with it.
pub(super) async fn anchor<C: ConnectionTrait>(
    txn: &C,
    keys: &dyn AuditChainKeys,
    account_id: &str,
    seq: i64,
    link: &str,
    checkpoint_at: Option<i64>,
) -> Result<(), StorageError> {
    audit_head::Entity::insert(new_anchor(keys, account_id, seq, link)?)
        .on_conflict(
            OnConflict::column(H::AccountId)
                .update_columns([H::HeadSeq, H::HeadLink, H::KeyId, H::Mac])
                .to_owned(),
        )
        .exec(txn)
        .await?;
    if let Some(at) = checkpoint_at {
        let (key_id, mac) = head_mac(keys, "audit-checkpoint/v1", account_id, at, link)?;
        audit_head::Entity::update_many()
            .col_expr(H::VerifiedLink, Expr::value(link.to_owned()))
            .col_expr(H::VerifiedKeyId, Expr::value(key_id))
            .col_expr(H::VerifiedMac, Expr::value(mac))
            .filter(H::AccountId.eq(account_id))
            .filter(H::VerifiedSeq.eq(at))
            .exec(txn)
            .await?;
    }
    Ok(())
}

/// Moves the account's checkpoint to row `seq` with `link`, under its MAC, where `only_if`
/// holds.
pub(super) async fn set_checkpoint<C: ConnectionTrait>(
    db: &C,
    keys: &dyn AuditChainKeys,
    account_id: &str,
    seq: i64,
    link: &str,
    only_if: sea_orm::Condition,
) -> Result<(), StorageError> {
    let (key_id, mac) = head_mac(keys, "audit-checkpoint/v1", account_id, seq, link)?;
    audit_head::Entity::update_many()
        .col_expr(H::VerifiedSeq, Expr::value(seq))
        .col_expr(H::VerifiedLink, Expr::value(link.to_owned()))
        .col_expr(H::VerifiedKeyId, Expr::value(key_id))
        .col_expr(H::VerifiedMac, Expr::value(mac))
        .filter(H::AccountId.eq(account_id))
        .filter(only_if)
        .exec(db)
        .await?;
    Ok(())
}

/// The verdict on an account's trail, and the row a new checkpoint may name (the newest, when
/// everything from the old checkpoint to it verified).
pub(super) async fn verify<C: ConnectionTrait>(
    db: &C,
    keys: &dyn AuditChainKeys,
    account_id: &str,
    shown: Option<(i64, i64)>,
) -> Result<(ChainStatus, Option<Checkpoint>), StorageError> {
    let (legacy_max_seq, anchored_from_seq) = chain_meta(db).await?;
    let newest = audit_event::Entity::find()
        .filter(A::AccountId.eq(account_id))
        .order_by_desc(A::Seq)
        .one(db)
        .await?;
    let Some(newest) = newest else {
        // No rows: valid unless an anchor says there were some.
        let anchored = audit_head::Entity::find_by_id(account_id.to_owned())
            .one(db)
            .await?
            .is_some();
        return Ok((ChainStatus::broken(anchored, None), None));
    };
    let head = audit_head::Entity::find_by_id(account_id.to_owned())
        .one(db)
        .await?;
    let mut cut = false;
    let checkpoint = match &head {
        Some(h) => {
            let anchored = anchor_mac_ok(keys, h);
            // The row the anchor names is there, as it was. (Rows after it, which a replica of
            // the release before anchors may have written, are verified by the walk below.)
            let named = if h.head_seq == newest.seq {
                Some(newest.clone())
            } else {
                audit_event::Entity::find_by_id(h.head_seq).one(db).await?
            };
            let there = named.is_some_and(|row| {
                row.account_id == account_id
                    && row.chain_hash.as_deref() == Some(h.head_link.as_str())
            });
            if !anchored || !there || newest.seq < h.head_seq {
                // Cut: walk the whole trail to name the first row that does not verify, if
                // one does not; else the newest that is left.
                cut = true;
                None
            } else {
                match (
                    &h.verified_seq,
                    &h.verified_link,
                    &h.verified_key_id,
                    &h.verified_mac,
                ) {
                    (Some(seq), Some(link), Some(key_id), Some(mac))
                        if head_mac_ok(
                            keys,
                            "audit-checkpoint/v1",
                            account_id,
                            *seq,
                            link,
                            key_id,
                            mac,
                        ) =>
                    {
                        Some((*seq, link.clone()))
                    }
                    _ => None,
                }
            }
        }
        // A trail with a row from after anchors began has lost its anchor.
        None if newest.seq > anchored_from_seq => {
            cut = true;
            None
        }
        None => None,
    };
    // From the checkpoint (whose row must still be there as it was) to the newest.
    let from = match &checkpoint {
        Some((seq, link)) => {
            let row = audit_event::Entity::find_by_id(*seq).one(db).await?;
            match row {
                Some(r) if r.account_id == account_id && r.chain_hash.as_deref() == Some(link) => {
                    Some(Start {
                        after_seq: *seq,
                        previous: link.clone(),
                        linked: true,
                    })
                }
                _ => None,
            }
        }
        None => None,
    };
    let Some(beginning) = trail_start(keys, account_id, head.as_ref()) else {
        return Ok((ChainStatus::broken(true, Some(newest.event_id)), None));
    };
    // Nothing may stand at or behind a pruned trail's base: such a row was put there.
    if beginning.linked {
        let behind = audit_event::Entity::find()
            .filter(A::AccountId.eq(account_id))
            .filter(A::Seq.lte(beginning.after_seq))
            .order_by_desc(A::Seq)
            .one(db)
            .await?;
        if let Some(row) = behind {
            return Ok((ChainStatus::broken(true, Some(row.event_id)), None));
        }
    }
    let from = from.unwrap_or(beginning.clone());
    if let Some(broken) = verify_after(db, keys, account_id, &from, None, legacy_max_seq).await? {
        return Ok((ChainStatus::broken(true, Some(broken)), None));
    }
    // The rows shown, from the one before them, when the checkpoint does not cover them.
    if let Some((oldest, newest_shown)) = shown.filter(|(oldest, _)| *oldest <= from.after_seq) {
        let before = audit_event::Entity::find()
            .filter(A::AccountId.eq(account_id))
            .filter(A::Seq.lt(oldest))
            .order_by_desc(A::Seq)
            .one(db)
            .await?;
        let start = match before {
            Some(row) => Start {
                after_seq: row.seq,
                linked: row.chain_hash.is_some(),
                previous: row.chain_hash.unwrap_or_default(),
            },
            None => beginning,
        };
        if let Some(broken) = verify_after(
            db,
            keys,
            account_id,
            &start,
            Some(newest_shown),
            legacy_max_seq,
        )
        .await?
        {
            return Ok((ChainStatus::broken(true, Some(broken)), None));
        }
    }
    if cut {
        return Ok((ChainStatus::broken(true, Some(newest.event_id)), None));
    }
    // Unless the walk started at the newest row already (a stale checkpoint is replaced too).
    let moved = newest
        .chain_hash
        .filter(|link| !(from.after_seq == newest.seq && from.previous == *link))
        .map(|link| Checkpoint {
            seq: newest.seq,
            link,
            // A trail from before anchors gets its anchor once it verified.
            anchor: head.is_none(),
        });
    Ok((ChainStatus::VALID, moved))
}

/// Where a verified trail's checkpoint moves to.
pub(super) struct Checkpoint {
    pub seq: i64,
    pub link: String,
    /// The account has no anchor yet (a trail from before anchors): write one.
    pub anchor: bool,
}

/// Where a walk along the chain starts: after row `after_seq`, whose link is `previous`.
#[derive(Clone)]
pub(super) struct Start {
    pub after_seq: i64,
    pub previous: String,
    /// A linked row came before.
    pub linked: bool,
}

/// Where the account's trail begins: after the last pruned row (its link under the anchor's
/// base MAC), or at the start. `None` when the base's MAC does not verify (a forged base).
pub(super) fn trail_start(
    keys: &dyn AuditChainKeys,
    account_id: &str,
    head: Option<&audit_head::Model>,
) -> Option<Start> {
    let Some(h) = head else {
        return Some(Start::BEGINNING);
    };
    match (&h.base_seq, &h.base_link, &h.base_key_id, &h.base_mac) {
        (None, None, None, None) => Some(Start::BEGINNING),
        (Some(seq), Some(link), Some(key_id), Some(mac))
            if head_mac_ok(keys, BASE_LABEL, account_id, *seq, link, key_id, mac) =>
        {
            Some(Start {
                after_seq: *seq,
                previous: link.clone(),
                linked: true,
            })
        }
        _ => None,
    }
}

/// What the MAC of a pruned trail's base covers.
pub(super) const BASE_LABEL: &str = "audit-base/v1";

impl Start {
    /// Before the first row.
    pub const BEGINNING: Self = Self {
        after_seq: i64::MIN,
        previous: String::new(),
        linked: false,
    };
}

/// Walks the account's rows after `start` (up to `until`, inclusive), in pages; the first row
/// that does not verify, if any.
pub(super) async fn verify_after<C: ConnectionTrait>(
    db: &C,
    keys: &dyn AuditChainKeys,
    account_id: &str,
    start: &Start,
    until: Option<i64>,
    legacy_max_seq: i64,
) -> Result<Option<String>, StorageError> {
    const PAGE: u64 = 1000;
    let mut after = start.after_seq;
    let mut previous = start.previous.clone();
    let mut linked = start.linked;
    loop {
        let mut query = audit_event::Entity::find()
            .filter(A::AccountId.eq(account_id))
            .filter(A::Seq.gt(after));
        if let Some(until) = until {
            query = query.filter(A::Seq.lte(until));
        }
        let rows = query.order_by_asc(A::Seq).limit(PAGE).all(db).await?;
        let full = rows.len() as u64 == PAGE;
        for row in rows {
            let event = crate::chain::canonical_row(&row, &row.details);
            let ok = match (&row.chain_key_id, &row.chain_hash) {
                (Some(key_id), Some(stored)) => {
                    linked = true;
                    keys.link(key_id, &previous, &event)
                        .is_some_and(|expected| expected == *stored)
                }
                // Unlinked rows are legacy rows: written before the chain, before every
                // linked one, with neither a key nor a link (a row with only one of them is
                // forged: its stored link must never become the next row's predecessor).
                (None, None) => !linked && row.seq >= 1 && row.seq <= legacy_max_seq,
                _ => false,
            };
            if !ok {
                return Ok(Some(row.event_id));
            }
            previous = row.chain_hash.unwrap_or_default();
            after = row.seq;
        }
        if !full {
            return Ok(None);
        }
    }
}

/// The last row written before the chain, and the last written before anchors.
pub(super) async fn chain_meta<C: ConnectionTrait>(db: &C) -> Result<(i64, i64), StorageError> {
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT legacy_max_seq, anchored_from_seq FROM audit_chain_meta WHERE id = 1",
        ))
        .await?;
    let get = |name: &str| {
        row.as_ref()
            .and_then(|r| r.try_get::<Option<i64>>("", name).ok().flatten())
            .unwrap_or(0)
    };
    Ok((get("legacy_max_seq"), get("anchored_from_seq")))
}

/// Whether `e` is a repeat of the account's newest row: it asks to fold, same kind, same
/// values of the named details, within the window of the row's first occurrence.
fn folds_into(e: &NewAuditEvent, head: &audit_event::Model) -> bool {
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
    let Ok(stored) = serde_json::from_str::<BTreeMap<String, String>>(&head.details) else {
        return false;
    };
    coalesce.on.iter().all(|name| {
        stored
            .get(*name)
            .is_some_and(|v| Some(v) == e.details.get(*name))
    })
}

/// An account's anchor with its newest data key beside it (looked up in the same statement).
#[derive(sea_orm::FromQueryResult)]
struct AnchorWithKey {
    #[sea_orm(nested)]
    head: audit_head::Model,
    dk_id: Option<String>,
    dk_wrapped: Option<String>,
}

/// The account's anchor and its newest data key (`None` beside it: it has none), or `None`
/// without an anchor (then the key is looked up on its own).
async fn anchor_with_key<C: ConnectionTrait>(
    db: &C,
    account_id: &str,
) -> Result<Option<(audit_head::Model, Option<(String, String)>)>, StorageError> {
    use crate::entity::account_data_key::{Column as K, Entity as Keys};
    use sea_orm::sea_query::{Query, SubQueryStatement};
    let newest = |column: K| {
        let mut query = Query::select();
        query
            .column(column)
            .from(Keys)
            .and_where(K::AccountId.eq(account_id))
            .order_by(K::CreatedAt, sea_orm::Order::Desc)
            .order_by(K::KeyId, sea_orm::Order::Desc)
            .limit(1);
        sea_orm::sea_query::SimpleExpr::SubQuery(
            None,
            Box::new(SubQueryStatement::SelectStatement(query)),
        )
    };
    let row = audit_head::Entity::find_by_id(account_id.to_owned())
        .column_as(newest(K::KeyId), "dk_id")
        .column_as(newest(K::Wrapped), "dk_wrapped")
        .into_model::<AnchorWithKey>()
        .all(db)
        .await?
        .into_iter()
        .next();
    Ok(row.map(|r| (r.head, r.dk_id.zip(r.dk_wrapped))))
}
