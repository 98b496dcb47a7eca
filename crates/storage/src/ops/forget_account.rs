//! Forgetting an account: one transaction removes everything kept about the person (the
//! enrolment of either kind, every flow, the family membership, the account's mail and
//! published events, its data keys, so the personal details sealed in its audit events can no
//! longer be read) and records that it was forgotten.

use sea_orm::{
    ActiveValue::Set, ColumnTrait as _, Condition, ConnectionTrait, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _, TransactionTrait as _,
    sea_query::OnConflict,
};

use super::{ChangeError, IntoEffects, events::EventStatus};
use crate::{
    Storage, StorageError,
    entity::{
        account_data_key, assisted_flow, audit_event, contact_flow, contact_vouch, enrollment,
        event, failure, family_member, flow, forgotten_account, outbox, recovery_contact,
        recovery_contact_setting,
    },
    model::{AssistedEnd, FamilyMember, FamilyRole, ForgetOutcome, Forgotten, Timestamp},
};

/// What one pass of [`remove`] removed.
#[derive(Default)]
struct Removed {
    enrolment: Option<enrollment::Model>,
    membership: Option<FamilyMember>,
    flows: u64,
    messages: u64,
}

impl Storage {
    /// Forgets the account at `now`: deletes its enrolment (either kind), its recovery flows,
    /// the assisted flows it is the member of (and ends those it began as an organizer), its
    /// family membership, every message to it (sent or not), its published events, its
    /// failure counters and its data keys, and records the time in `forgotten_accounts`;
    /// `effects` (seeing what was removed, and the family's other organizers) are written in
    /// the same transaction, before the keys go. When nothing is left to remove, changes
    /// nothing and answers when the account was forgotten, if it was.
    #[tracing::instrument(name = "db.forget_account", skip_all)]
    pub async fn forget_account<R: IntoEffects>(
        &self,
        account_id: &str,
        now: i64,
        effects: impl FnOnce(&Forgotten) -> R,
    ) -> Result<ForgetOutcome, ChangeError<R::Error>> {
        let txn = self.db().begin().await?;
        // Every row lock first, as every other change takes them, then the account's lock
        // (PostgreSQL's advisory lock; SQLite has one writer), under which every change that
        // writes the account's events, and a concurrent forget, queues until it commits.
        // A second pass under the lock removes what such changes committed in between (a row
        // a first pass could not lock because it did not exist yet).
        let first = remove(&txn, account_id).await?;
        super::lock_accounts(self.backend(), &txn, [account_id]).await?;
        let second = remove(&txn, account_id).await?;
        // Contacts only under the lock: every contact change holds the locks of both its
        // accounts, so it commits before this or finds the account gone.
        let (contacts, contact_flows) = remove_contacts(&txn, account_id).await?;
        let ended = super::family::end_flows(
            &txn,
            Condition::all()
                .add(assisted_flow::Column::OrganizerAccountId.eq(account_id))
                .add(assisted_flow::Column::MemberAccountId.ne(account_id)),
            AssistedEnd::MembershipChanged,
            None,
            now,
        )
        .await?;
        // Rows of its trail still in clear (written before details were sealed) are sealed
        // now, under the keys deleted below.
        let resealed = self.reseal_in(&txn, account_id, now).await?;
        let keys = crate::personal::account_keys(&txn, account_id).await?;
        let enrolment = second.enrolment.or(first.enrolment);
        let membership = second.membership.or(first.membership);
        let removed_flows = first.flows + second.flows + contact_flows;
        let removed_messages = first.messages + second.messages;
        let anything = enrolment.is_some()
            || membership.is_some()
            || removed_flows + removed_messages + resealed + contacts > 0
            || !ended.is_empty()
            || !keys.is_empty();
        let before = super::by_key(
            forgotten_account::Entity::find_by_id(account_id.to_owned()),
            &txn,
        )
        .await?;
        if !anything {
            // Nothing of the person is left: forgotten before, or never known. A trail that
            // was never closed (events only) is still closed below.
            if let Some(before) = before {
                txn.rollback().await?;
                return Ok(ForgetOutcome::AlreadyForgotten(Timestamp::from_ms(
                    before.forgotten_at,
                )));
            }
            let trail = super::by_key(
                audit_event::Entity::find()
                    .filter(audit_event::Column::AccountId.eq(account_id))
                    .limit(1),
                &txn,
            )
            .await?;
            if trail.is_none() {
                txn.rollback().await?;
                return Ok(ForgetOutcome::Unknown);
            }
        }
        let organizers: Vec<FamilyMember> = match &membership {
            Some(m) => super::family::family_members(&txn, &m.family_id)
                .await?
                .into_iter()
                .filter(|o| o.role == FamilyRole::Organizer && o.account_id != account_id)
                .collect(),
            None => Vec::new(),
        };
        let forgotten = Forgotten {
            had_enrolment: enrolment.is_some(),
            family: membership,
            organizers,
            ended,
            removed_flows,
            removed_messages,
        };
        self.apply_effects(
            &txn,
            effects(&forgotten)
                .into_effects()
                .map_err(ChangeError::Effects)?,
            now,
        )
        .await?;
        // Every event up to here (the ACCOUNT_FORGOTTEN just written) is forgotten.
        let through_seq = audit_event::Entity::find()
            .filter(audit_event::Column::AccountId.eq(account_id))
            .order_by_desc(audit_event::Column::Seq)
            .one(&txn)
            .await?
            .map_or(0, |e| e.seq);
        forgotten_account::Entity::insert(forgotten_account::ActiveModel {
            account_id: Set(account_id.to_owned()),
            forgotten_at: Set(now),
            through_seq: Set(through_seq),
        })
        .on_conflict(
            OnConflict::column(forgotten_account::Column::AccountId)
                .update_columns([
                    forgotten_account::Column::ForgottenAt,
                    forgotten_account::Column::ThroughSeq,
                ])
                .to_owned(),
        )
        .exec(&txn)
        .await?;
        // Last, after the effects sealed what they hold that is personal (the forget's own
        // reason): the account's data keys, and with them every personal detail of its trail.
        account_data_key::Entity::delete_many()
            .filter(account_data_key::Column::AccountId.eq(account_id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        if self.backend() == crate::Backend::Sqlite {
            // The WAL still holds the deleted rows' old pages until a checkpoint: fold it
            // into the file (overwritten there, `secure_delete`) and truncate it now.
            if let Err(err) = self
                .db()
                .execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
                .await
            {
                tracing::warn!(error = %err, "the WAL could not be checkpointed after a forget");
            }
        }
        Ok(ForgetOutcome::Forgotten(forgotten))
    }
}

/// Deletes what is kept about the account: its enrolment, its recovery flows and the assisted
/// flows it is the member of, its family membership, its mail (to it, or under no account to
/// one of its addresses: a family address may be shared, and others' mail to it stays), its
/// published events and its failure counters.
async fn remove<C: ConnectionTrait>(txn: &C, account_id: &str) -> Result<Removed, StorageError> {
    let enrolment = super::by_key(
        enrollment::Entity::find_by_id(account_id.to_owned()).lock_exclusive(),
        txn,
    )
    .await?;
    let membership = super::by_key(
        family_member::Entity::find_by_id(account_id.to_owned()).lock_exclusive(),
        txn,
    )
    .await?
    .and_then(super::family::to_member);
    let addresses: Vec<String> = enrolment
        .iter()
        .map(|e| e.email.clone())
        .chain(membership.iter().map(|m| m.email.clone()))
        .collect();
    if enrolment.is_some() {
        enrollment::Entity::delete_by_id(account_id.to_owned())
            .exec(txn)
            .await?;
    }
    if membership.is_some() {
        family_member::Entity::delete_by_id(account_id.to_owned())
            .exec(txn)
            .await?;
    }
    let mut flows = flow::Entity::delete_many()
        .filter(flow::Column::AccountId.eq(account_id))
        .exec(txn)
        .await?
        .rows_affected;
    flows += assisted_flow::Entity::delete_many()
        .filter(assisted_flow::Column::MemberAccountId.eq(account_id))
        .exec(txn)
        .await?
        .rows_affected;
    let mut to_person = Condition::any().add(outbox::Column::AccountId.eq(account_id));
    if !addresses.is_empty() {
        to_person = to_person.add(
            Condition::all()
                .add(outbox::Column::AccountId.is_null())
                .add(outbox::Column::Recipient.is_in(addresses)),
        );
    }
    let messages = outbox::Entity::delete_many()
        .filter(to_person)
        .exec(txn)
        .await?
        .rows_affected;
    // Published events only: one not yet published still goes out, in order.
    event::Entity::delete_many()
        .filter(event::Column::AccountId.eq(account_id))
        .filter(event::Column::Status.eq(EventStatus::Sent.as_str()))
        .exec(txn)
        .await?;
    failure::Entity::delete_many()
        .filter(failure::Column::AccountId.eq(account_id))
        .exec(txn)
        .await?;
    Ok(Removed {
        enrolment,
        membership,
        flows,
        messages,
    })
}

/// Removes the account's recovery contacts in both directions, its threshold, its contact
/// vouches (as owner and as contact) and stops each waiting period of another owner that its
/// withdrawn vouches leave unmet; answers how many rows of contacts and settings went, and how
/// many of its contact flows.
async fn remove_contacts<C: ConnectionTrait>(
    txn: &C,
    account_id: &str,
) -> Result<(u64, u64), StorageError> {
    let flows = contact_flow::Entity::delete_many()
        .filter(contact_flow::Column::AccountId.eq(account_id))
        .exec(txn)
        .await?
        .rows_affected;
    let served: Vec<String> = recovery_contact::Entity::find()
        .select_only()
        .column(recovery_contact::Column::OwnerAccountId)
        .filter(recovery_contact::Column::ContactAccountId.eq(account_id))
        .into_tuple()
        .all(txn)
        .await?;
    let mut contacts = recovery_contact::Entity::delete_many()
        .filter(
            Condition::any()
                .add(recovery_contact::Column::OwnerAccountId.eq(account_id))
                .add(recovery_contact::Column::ContactAccountId.eq(account_id)),
        )
        .exec(txn)
        .await?
        .rows_affected;
    contacts += recovery_contact_setting::Entity::delete_many()
        .filter(recovery_contact_setting::Column::AccountId.eq(account_id))
        .exec(txn)
        .await?
        .rows_affected;
    contact_vouch::Entity::delete_many()
        .filter(
            Condition::any()
                .add(contact_vouch::Column::OwnerAccountId.eq(account_id))
                .add(contact_vouch::Column::ContactAccountId.eq(account_id)),
        )
        .exec(txn)
        .await?;
    for owner in &served {
        super::recovery_contacts::stop_unmet(txn, owner).await?;
    }
    Ok((contacts, flows))
}
