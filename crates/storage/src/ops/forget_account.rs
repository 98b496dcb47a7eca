//! Forgetting an account: one transaction removes everything kept about the person (the
//! enrolment of either kind, every flow, the family membership, the account's mail, its data
//! key, so the personal details sealed in its audit events can no longer be read) and records
//! that it was forgotten.

use sea_orm::{
    ActiveValue::Set, ColumnTrait as _, Condition, EntityTrait as _, QueryFilter as _,
    QuerySelect as _, TransactionTrait as _, sea_query::OnConflict,
};

use super::{ChangeError, IntoEffects};
use crate::{
    Storage,
    entity::{
        account_data_key, assisted_flow, audit_event, enrollment, failure, family_member, flow,
        forgotten_account, outbox,
    },
    model::{FamilyMember, FamilyRole, ForgetOutcome, Forgotten, Timestamp},
};

impl Storage {
    /// Forgets the account at `now`: deletes its enrolment (either kind), its recovery flows,
    /// the assisted flows it is the member or the organizer of, its family membership, every
    /// message to it or to its addresses (sent or not), its failure counters and its data key,
    /// and records the time in `forgotten_accounts`; `effects` (seeing what was removed, and
    /// the family's other organizers) are written in the same transaction. When nothing is
    /// left to remove, changes nothing and answers when the account was forgotten, if it was.
    #[tracing::instrument(name = "db.forget_account", skip_all)]
    pub async fn forget_account<R: IntoEffects>(
        &self,
        account_id: &str,
        now: i64,
        effects: impl FnOnce(&Forgotten) -> R,
    ) -> Result<ForgetOutcome, ChangeError<R::Error>> {
        let txn = self.db().begin().await?;
        let enrolment = super::by_key(
            enrollment::Entity::find_by_id(account_id.to_owned()).lock_exclusive(),
            &txn,
        )
        .await?;
        let membership = super::by_key(
            family_member::Entity::find_by_id(account_id.to_owned()).lock_exclusive(),
            &txn,
        )
        .await?
        .and_then(super::family::to_member);
        let organizers: Vec<FamilyMember> = match &membership {
            Some(m) => super::family::family_members(&txn, &m.family_id)
                .await?
                .into_iter()
                .filter(|o| o.role == FamilyRole::Organizer && o.account_id != account_id)
                .collect(),
            None => Vec::new(),
        };
        let addresses: Vec<String> = enrolment
            .iter()
            .map(|e| e.email.clone())
            .chain(membership.iter().map(|m| m.email.clone()))
            .collect();
        let mut removed = 0u64;
        if enrolment.is_some() {
            removed += enrollment::Entity::delete_by_id(account_id.to_owned())
                .exec(&txn)
                .await?
                .rows_affected;
        }
        let flows = flow::Entity::delete_many()
            .filter(flow::Column::AccountId.eq(account_id))
            .exec(&txn)
            .await?
            .rows_affected;
        let assisted = assisted_flow::Entity::delete_many()
            .filter(
                Condition::any()
                    .add(assisted_flow::Column::MemberAccountId.eq(account_id))
                    .add(assisted_flow::Column::OrganizerAccountId.eq(account_id)),
            )
            .exec(&txn)
            .await?
            .rows_affected;
        if membership.is_some() {
            removed += family_member::Entity::delete_by_id(account_id.to_owned())
                .exec(&txn)
                .await?
                .rows_affected;
        }
        let mut to_person = Condition::any().add(outbox::Column::AccountId.eq(account_id));
        if !addresses.is_empty() {
            to_person = to_person.add(outbox::Column::Recipient.is_in(addresses.clone()));
        }
        let messages = outbox::Entity::delete_many()
            .filter(to_person)
            .exec(&txn)
            .await?
            .rows_affected;
        failure::Entity::delete_many()
            .filter(failure::Column::AccountId.eq(account_id))
            .exec(&txn)
            .await?;
        let key = crate::personal::account_key(&txn, account_id).await?;
        removed += flows + assisted + messages + u64::from(key.is_some());
        // Every row lock first, as every other change takes them, then the account's lock
        // (PostgreSQL's advisory lock; SQLite has one writer), under which changes that write
        // the account's events, and concurrent forgets, queue: after it, this transaction sees
        // what they committed.
        super::lock_accounts(self.backend(), &txn, [account_id]).await?;
        let before = super::by_key(
            forgotten_account::Entity::find_by_id(account_id.to_owned()),
            &txn,
        )
        .await?;
        if removed == 0 {
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
        let forgotten = Forgotten {
            had_enrolment: enrolment.is_some(),
            family: membership,
            organizers,
            removed_flows: flows + assisted,
            removed_messages: messages,
        };
        forgotten_account::Entity::insert(forgotten_account::ActiveModel {
            account_id: Set(account_id.to_owned()),
            forgotten_at: Set(now),
        })
        .on_conflict(
            OnConflict::column(forgotten_account::Column::AccountId)
                .update_column(forgotten_account::Column::ForgottenAt)
                .to_owned(),
        )
        .exec(&txn)
        .await?;
        self.apply_effects(
            &txn,
            effects(&forgotten)
                .into_effects()
                .map_err(ChangeError::Effects)?,
            now,
        )
        .await?;
        // Last, after the effects sealed what they hold that is personal (the forget's own
        // reason) under it: the account's data key, and with it every personal detail of its
        // trail.
        account_data_key::Entity::delete_many()
            .filter(account_data_key::Column::AccountId.eq(account_id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(ForgetOutcome::Forgotten(forgotten))
    }
}
