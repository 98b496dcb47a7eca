//! Flows: start, count submissions, verify once, complete once; lockout failures.

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _, QuerySelect as _,
    QueryTrait as _, TransactionTrait as _,
    sea_query::{Expr, ExprTrait as _},
};

use super::{ChangeError, IntoEffects};
use crate::{
    Storage, StorageError,
    entity::{
        enrollment::{self, Column as E},
        failure,
        flow::{self, Column as F},
    },
    model::{
        AttemptKind, AttemptReservation, ClientInfo, Completion, CompletionUpdate, Effects, Flow,
        Lockout, NewEvent, NewFlow, Opaque, RecoveryCompletion, Timestamp,
    },
};

/// How long a `recovery.locked` event written with its lock waits for the submission's
/// check before it is published anyway (the process checking it died).
const LOCK_EVENT_HOLD_MS: i64 = 120_000;

impl Storage {
    /// Stores a new flow with its effects (the verification message for a known email, the
    /// audit event) in one transaction.
    #[tracing::instrument(name = "db.begin_recovery", skip_all)]
    pub async fn begin_recovery(&self, new: NewFlow, effects: Effects) -> Result<(), StorageError> {
        let txn = self.db().begin().await?;
        let (account_id, generation) = new.target.map_or((None, None), |(a, g)| (Some(a), Some(g)));
        flow::Entity::insert(flow::ActiveModel {
            flow_id: Set(new.flow_id),
            email_lookup: Set(new.email_lookup),
            account_id: Set(account_id.clone()),
            generation: Set(generation),
            email_code_mac: Set(new.email_code_mac.0),
            mac_key_id: Set(new.mac_key_id),
            email_code_expires_at: Set(new.email_code_expires_at.as_ms()),
            email_attempts: Set(0),
            recovery_attempts: Set(0),
            verified_at: Set(None),
            completed_at: Set(None),
            created_at: Set(new.created_at.as_ms()),
            expires_at: Set(new.expires_at.as_ms()),
            client_ip: Set(new.client.ip),
            client_user_agent: Set(new.client.user_agent),
            zk_login_state: Set(None),
            zk_previous_login_state: Set(None),
        })
        .exec(&txn)
        .await?;
        self.apply_effects(&txn, effects, new.created_at.as_ms())
            .await?;
        // Under the account's lock (taken with its audit event): the enrolment the flow was
        // made for is still there as it was, not forgotten, revoked or replaced meanwhile.
        // Else nothing is written: [`StorageError::NotFound`], and the caller starts over.
        // (The same lookup for an unknown address, by an id no account has: the same work.)
        let current = super::by_key(
            enrollment::Entity::find_by_id(account_id.clone().unwrap_or_default()),
            &txn,
        )
        .await?
        .filter(|e| e.code_hash.is_some())
        .map(|e| e.generation);
        if account_id.is_some() && current != generation {
            txn.rollback().await?;
            return Err(StorageError::NotFound);
        }
        txn.commit().await?;
        Ok(())
    }

    /// The flow with this id.
    #[tracing::instrument(name = "db.find_flow", skip_all)]
    pub async fn find_flow(&self, flow_id: &str) -> Result<Option<Flow>, StorageError> {
        Ok(
            super::by_key(flow::Entity::find_by_id(flow_id.to_owned()), self.reader())
                .await?
                .map(to_flow),
        )
    }

    /// The flow with this id and, in the same statement, the enrollment of its account (live
    /// or revoked; `None` for a flow of an unknown address, or one whose row is gone).
    #[tracing::instrument(name = "db.find_flow_with_enrollment", skip_all)]
    pub async fn find_flow_with_enrollment(
        &self,
        flow_id: &str,
    ) -> Result<Option<(Flow, Option<crate::model::Enrollment>)>, StorageError> {
        let its_account: sea_orm::RelationDef = flow::Entity::belongs_to(enrollment::Entity)
            .from(F::AccountId)
            .to(E::AccountId)
            .into();
        let row = flow::Entity::find_by_id(flow_id.to_owned())
            .select_also(enrollment::Entity)
            .join(sea_orm::JoinType::LeftJoin, its_account)
            .all(self.reader())
            .await?
            .into_iter()
            .next();
        Ok(row.map(|(flow, enrollment)| {
            (
                to_flow(flow),
                enrollment.map(super::recovery_code::to_enrollment),
            )
        }))
    }

    /// Counts one submission against the flow's `cap` for `kind`, before any comparison, and,
    /// in the same transaction, writes the counted submission's effects (`effects` gets the
    /// number used; an empty [`Effects`] writes nothing). Answers the number of submissions
    /// used, this one included, or `None` when the cap was already reached (or the flow is
    /// unknown or completed). The database decides: exactly `cap` calls get `Some`, however
    /// many race.
    #[tracing::instrument(name = "db.register_attempt_with", skip_all)]
    pub async fn register_attempt_with<R: IntoEffects>(
        &self,
        flow_id: &str,
        kind: AttemptKind,
        cap: i32,
        now: i64,
        effects: impl FnOnce(i32) -> R,
    ) -> Result<Option<i32>, ChangeError<R::Error>> {
        let column = match kind {
            AttemptKind::EmailCode => F::EmailAttempts,
            AttemptKind::RecoveryCode => F::RecoveryAttempts,
        };
        let txn = self.db().begin().await?;
        let rows = flow::Entity::update_many()
            .col_expr(column, Expr::col(column).add(1))
            .filter(F::FlowId.eq(flow_id))
            .filter(column.lt(cap))
            .filter(F::CompletedAt.is_null())
            .exec_with_returning(&txn)
            .await?;
        let Some(used) = rows.first().map(|row| match kind {
            AttemptKind::EmailCode => row.email_attempts,
            AttemptKind::RecoveryCode => row.recovery_attempts,
        }) else {
            return Ok(None);
        };
        self.apply_effects(
            &txn,
            effects(used).into_effects().map_err(ChangeError::Effects)?,
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(Some(used))
    }

    /// Marks the flow's email verified, once: `true` for exactly one caller, and only while
    /// the flow is unverified, not completed and not past `now`'s expiry.
    #[tracing::instrument(name = "db.verify_email", skip_all)]
    pub async fn verify_email(
        &self,
        flow_id: &str,
        now: i64,
        effects: Effects,
    ) -> Result<bool, StorageError> {
        self.update_flow_once(
            flow::Entity::update_many()
                .col_expr(F::VerifiedAt, Expr::value(Some(now)))
                .filter(F::FlowId.eq(flow_id))
                .filter(F::VerifiedAt.is_null())
                .filter(F::CompletedAt.is_null())
                .filter(F::ExpiresAt.gt(now))
                .filter(F::EmailCodeExpiresAt.gt(now)),
            now,
            effects,
        )
        .await
    }

    /// A single-use step on a flow: `update` (conditional, on one flow) and, only when it
    /// changed the flow, `effects`, in one transaction. `true` for exactly one caller however
    /// many race; `false` (nothing written) for the others.
    pub(super) async fn update_flow_once(
        &self,
        update: sea_orm::UpdateMany<flow::Entity>,
        now: i64,
        effects: Effects,
    ) -> Result<bool, StorageError> {
        let txn = self.db().begin().await?;
        if update.exec(&txn).await?.rows_affected != 1 {
            return Ok(false);
        }
        self.apply_effects(&txn, effects, now).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Completes a verified flow, once, and records the use on the enrollment it was started
    /// against, in one transaction. If the enrollment's generation moved on (new code, revoke,
    /// email change, a rotation by another flow) or its code is no longer the one that was
    /// checked, nothing changes and the answer is [`Completion::Cancelled`]. A completion ends
    /// the account's open assisted flows (`effects` sees them and the family's organizers).
    #[tracing::instrument(name = "db.recover_account", skip_all)]
    pub async fn recover_account<R: IntoEffects>(
        &self,
        flow_id: &str,
        now: i64,
        update: CompletionUpdate,
        effects: impl FnOnce(&RecoveryCompletion) -> R,
    ) -> Result<Completion, ChangeError<R::Error>> {
        let txn = self.db().begin().await?;
        // Lock order: the enrollment, then the flow (as every other operation), so that a
        // completion never deadlocks with a submission being counted. One statement finds the
        // flow's account and locks its row; SQLite has one writer and no row locks.
        if self.backend() == crate::Backend::Postgres {
            enrollment::Entity::find()
                .filter(
                    E::AccountId.in_subquery(
                        flow::Entity::find()
                            .select_only()
                            .column(F::AccountId)
                            .filter(F::FlowId.eq(flow_id))
                            .into_query(),
                    ),
                )
                .lock_exclusive()
                .all(&txn)
                .await?;
        }
        let mut completing = flow::Entity::update_many()
            .col_expr(F::CompletedAt, Expr::value(Some(now)))
            .col_expr(F::ZkLoginState, Expr::value(Option::<String>::None))
            .col_expr(F::ZkPreviousLoginState, Expr::value(Option::<String>::None))
            .filter(F::FlowId.eq(flow_id))
            .filter(F::CompletedAt.is_null())
            .filter(F::VerifiedAt.is_not_null())
            .filter(F::ExpiresAt.gt(now));
        if let Some(state) = &update.login_state {
            completing = completing.filter(F::ZkLoginState.eq(state.0.as_str()));
        }
        let completed = completing.exec_with_returning(&txn).await?;
        // Dropping the transaction rolls back whatever this call changed.
        let Some((account_id, generation)) = completed
            .into_iter()
            .next()
            .and_then(|row| row.account_id.zip(row.generation))
        else {
            return Ok(Completion::NotCompletable);
        };
        // A right code is not a failure; a lock that this submission's reservation alone
        // caused is lifted. A lock set by another submission stands: it fails this one.
        if let Some((failure_id, own_lock, held_event)) = update.reservation {
            give_back(
                &txn,
                &account_id,
                failure_id,
                own_lock,
                held_event.as_deref(),
            )
            .await?;
        }
        let mut used = enrollment::Entity::update_many()
            .col_expr(E::UseCount, Expr::col(E::UseCount).add(1))
            .col_expr(E::LastUsedAt, Expr::value(Some(now)))
            .col_expr(E::UpdatedAt, Expr::value(now));
        if let Some(code) = update.new_code {
            used = used
                .col_expr(E::CodeId, Expr::value(Some(code.code_id)))
                .col_expr(E::CodeHash, Expr::value(Some(code.hash.0)))
                .col_expr(E::HashKeyId, Expr::value(Some(code.key_id)))
                .col_expr(E::HashParams, Expr::value(Some(code.params)));
        }
        if update.rotated {
            used = used.col_expr(E::Generation, Expr::col(E::Generation).add(1));
        }
        // Conditional on the code that was checked: two flows racing on one code complete
        // once when the first rotates it (its generation and code id both move on). A lock
        // set by another submission fails this one.
        let used = used
            .filter(E::AccountId.eq(account_id.as_str()))
            .filter(E::Generation.eq(generation))
            .filter(E::CodeId.eq(update.verified_code_id.as_str()))
            .filter(E::CodeHash.is_not_null())
            .filter(
                sea_orm::Condition::any()
                    .add(E::LockedUntil.is_null())
                    .add(E::LockedUntil.lte(now)),
            )
            .exec_with_returning(&txn)
            .await?;
        let Some(use_count) = used.first().map(|e| e.use_count) else {
            // Which condition failed: a standing lock, or a code that moved on.
            let locked = super::by_key(enrollment::Entity::find_by_id(account_id.clone()), &txn)
                .await?
                .and_then(|e| e.locked_until)
                .filter(|until| *until > now);
            return Ok(match locked {
                Some(until) => Completion::Locked {
                    until: crate::model::Timestamp::from_ms(until),
                },
                None => Completion::Cancelled,
            });
        };
        if update.retire
            && !super::recovery_code::retire(&txn, &account_id, generation, now).await?
        {
            return Ok(Completion::Cancelled);
        }
        // The person recovered with their own code: organizer-assisted recovery of the
        // account is over (the family's organizers are told), and so are its contact
        // recoveries.
        let completion = RecoveryCompletion {
            use_count,
            ..super::recovery_contacts::end_other_paths(self.backend(), &txn, &account_id, "", now)
                .await?
        };
        self.apply_effects(
            &txn,
            effects(&completion)
                .into_effects()
                .map_err(ChangeError::Effects)?,
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(Completion::Completed { use_count })
    }

    /// Gives back what a submission reserved when its code proved right but it completed
    /// nothing (another flow won, the flow ended): its failure row, and the lock it caused.
    #[tracing::instrument(name = "db.release_recovery_attempt", skip_all)]
    pub async fn release_recovery_attempt(
        &self,
        account_id: &str,
        failure_id: i64,
        own_lock: Option<Timestamp>,
        held_event: Option<&str>,
    ) -> Result<(), StorageError> {
        let txn = self.db().begin().await?;
        super::by_key(
            enrollment::Entity::find_by_id(account_id.to_owned()).lock_exclusive(),
            &txn,
        )
        .await?;
        give_back(&txn, account_id, failure_id, own_lock, held_event).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Counts a recovery-code submission before it is checked, in one transaction with the
    /// account's lockout: refused while the account is locked; else one of the flow's `cap`
    /// submissions and one failure in the lockout window are taken (a right code gives the
    /// failure back later), and the failure that reaches the threshold locks the account.
    /// However many submissions race, exactly `threshold` are counted before the lock.
    #[tracing::instrument(name = "db.reserve_recovery_attempt", skip_all)]
    pub async fn reserve_recovery_attempt(
        &self,
        flow_id: &str,
        account_id: &str,
        cap: i32,
        now: i64,
        lockout: Lockout,
        lock_event: Option<NewEvent>,
    ) -> Result<AttemptReservation, StorageError> {
        let txn = self.db().begin().await?;
        // Serialise submissions per account (PostgreSQL row lock; SQLite has one writer).
        let enrollment = super::by_key(
            enrollment::Entity::find_by_id(account_id.to_owned()).lock_exclusive(),
            &txn,
        )
        .await?;
        if let Some(until) = enrollment
            .and_then(|e| e.locked_until)
            .filter(|until| *until > now)
        {
            return Ok(AttemptReservation::Locked {
                until: crate::model::Timestamp::from_ms(until),
            });
        }
        let counted = flow::Entity::update_many()
            .col_expr(F::RecoveryAttempts, Expr::col(F::RecoveryAttempts).add(1))
            .filter(F::FlowId.eq(flow_id))
            .filter(F::RecoveryAttempts.lt(cap))
            .filter(F::CompletedAt.is_null())
            .exec_with_returning(&txn)
            .await?;
        let Some(used) = counted.first().map(|f| f.recovery_attempts) else {
            return Ok(AttemptReservation::NoAttempt);
        };
        let failure = failure::Entity::insert(failure::ActiveModel {
            account_id: Set(account_id.to_owned()),
            flow_id: Set(flow_id.to_owned()),
            failed_at: Set(now),
            ..Default::default()
        })
        .exec(&txn)
        .await?;
        let failures_in_window = failure::Entity::find()
            .filter(failure::Column::AccountId.eq(account_id))
            .filter(failure::Column::FailedAt.gt(now - lockout.window_ms))
            .count(&txn)
            .await?;
        let mut locked_until = None;
        if i64::try_from(failures_in_window).unwrap_or(i64::MAX) >= lockout.threshold {
            let until = now + lockout.lock_ms;
            enrollment::Entity::update_many()
                .col_expr(E::LockedUntil, Expr::value(Some(until)))
                .filter(E::AccountId.eq(account_id))
                .exec(&txn)
                .await?;
            locked_until = Some(crate::model::Timestamp::from_ms(until));
            // The lock's event, written with the lock but held: published once the code
            // proves wrong (or after the hold, if this process dies while hashing), deleted
            // if it proves right and the lock is lifted.
            if let Some(event) = lock_event {
                crate::entity::event::Entity::insert(crate::entity::event::ActiveModel {
                    event_id: Set(event.event_id),
                    account_id: Set(event.account_id),
                    event_type: Set(event.event_type),
                    payload: Set(event.payload),
                    status: Set(super::events::EventStatus::Pending.as_str().to_owned()),
                    attempts: Set(0),
                    next_attempt_at: Set(now + LOCK_EVENT_HOLD_MS),
                    lease_owner: Set(None),
                    lease_until: Set(None),
                    last_error: Set(None),
                    created_at: Set(now),
                    published_at: Set(None),
                    ..Default::default()
                })
                .exec(&txn)
                .await?;
            }
        }
        txn.commit().await?;
        Ok(AttemptReservation::Admitted {
            used,
            failure_id: failure.last_insert_id,
            locked_until,
        })
    }
}

/// Inside a transaction holding the enrollment's row: deletes a submission's reserved
/// failure and lifts the lock it alone caused (a lock set by another submission stands), with
/// the `recovery.locked` event held for it (never published: the lock did not stand).
async fn give_back<C: sea_orm::ConnectionTrait>(
    txn: &C,
    account_id: &str,
    failure_id: i64,
    own_lock: Option<Timestamp>,
    held_event: Option<&str>,
) -> Result<(), StorageError> {
    failure::Entity::delete_by_id(failure_id).exec(txn).await?;
    if let Some(event_id) = held_event {
        crate::entity::event::Entity::delete_many()
            .filter(crate::entity::event::Column::EventId.eq(event_id))
            .filter(
                crate::entity::event::Column::Status
                    .eq(super::events::EventStatus::Pending.as_str()),
            )
            .exec(txn)
            .await?;
    }
    if let Some(until) = own_lock {
        enrollment::Entity::update_many()
            .col_expr(E::LockedUntil, Expr::value(Option::<i64>::None))
            .filter(E::AccountId.eq(account_id))
            .filter(E::LockedUntil.eq(until.as_ms()))
            .exec(txn)
            .await?;
    }
    Ok(())
}

fn to_flow(row: flow::Model) -> Flow {
    Flow {
        target: row.account_id.zip(row.generation),
        flow_id: row.flow_id,
        email_lookup: row.email_lookup,
        email_code_mac: Opaque(row.email_code_mac),
        mac_key_id: row.mac_key_id,
        email_code_expires_at: Timestamp::from_ms(row.email_code_expires_at),
        email_attempts: row.email_attempts,
        recovery_attempts: row.recovery_attempts,
        verified_at: row.verified_at.map(Timestamp::from_ms),
        completed_at: row.completed_at.map(Timestamp::from_ms),
        created_at: Timestamp::from_ms(row.created_at),
        expires_at: Timestamp::from_ms(row.expires_at),
        client: ClientInfo {
            ip: row.client_ip,
            user_agent: row.client_user_agent,
        },
        zk_login_state: row.zk_login_state.map(Opaque),
        zk_previous_login_state: row.zk_previous_login_state.map(Opaque),
    }
}
