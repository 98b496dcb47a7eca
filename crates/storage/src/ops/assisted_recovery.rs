//! Organizer-assisted recovery flows: begin (with its limits), count submissions, verify
//! once, complete once, cancel. Each step is one transaction deciding by one conditional
//! statement, with its notifications and audit events.

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait as _, Condition, ConnectionTrait, EntityTrait as _, PaginatorTrait as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _, TransactionTrait as _,
    sea_query::{Expr, ExprTrait as _},
};

use super::{
    ChangeError, IntoEffects,
    family::{end_flows, organizers_of, to_assisted, to_member},
};
use crate::{
    Storage, StorageError,
    entity::{
        assisted_flow::{self, Column as A},
        enrollment, family_member,
    },
    model::{
        AssistedCancellation, AssistedCompletion, AssistedEnd, AssistedFlow, AssistedLimits,
        AssistedParties, AssistedRefusal, AssistedStart, BeginAssisted, FamilyMember, FamilyRole,
        NewAssistedFlow,
    },
};

impl Storage {
    /// Begins an assisted flow if, inside the transaction, the organizer is an organizer of
    /// the family, the member is in it and is someone else, and neither has used up their
    /// begins within the sliding window; ends the member's earlier open flows (superseded).
    /// `effects` sees the [`BeginAssisted::Started`] answer before it is committed.
    #[tracing::instrument(name = "db.begin_assisted_recovery", skip_all)]
    pub async fn begin_assisted_recovery<R: IntoEffects>(
        &self,
        new: NewAssistedFlow,
        limits: AssistedLimits,
        effects: impl FnOnce(&BeginAssisted) -> R,
    ) -> Result<BeginAssisted, ChangeError<R::Error>> {
        let now = new.created_at.as_ms();
        let txn = self.db().begin().await?;
        // Both rows, in account-id order (as every operation that locks two membership rows),
        // so that begins and completions queue on them without deadlocking; the limits below
        // rely on begins by one organizer, or for one member, queueing here.
        let rows = lock_memberships(
            &txn,
            [&new.organizer_account_id, &new.member_account_id],
            Lock::Exclusive,
        )
        .await?;
        let find = |id: &str| rows.iter().find(|m| m.account_id == id).cloned();
        let Some(organizer) = find(&new.organizer_account_id)
            .filter(|o| o.family_id == new.family_id && o.role == FamilyRole::Organizer)
        else {
            return Ok(BeginAssisted::NotOrganizer);
        };
        let Some(member) = find(&new.member_account_id).filter(|m| m.family_id == new.family_id)
        else {
            return Ok(BeginAssisted::NotMember);
        };
        if organizer.account_id == member.account_id {
            return Ok(BeginAssisted::SelfRecovery);
        }
        for (column, id, limit, is_organizer) in [
            (
                A::OrganizerAccountId,
                &organizer.account_id,
                limits.per_organizer,
                true,
            ),
            (
                A::MemberAccountId,
                &member.account_id,
                limits.per_member,
                false,
            ),
        ] {
            if let Some(retry_after_ms) =
                over_limit(&txn, column, id, limit, limits.window_ms, now).await?
            {
                return Ok(BeginAssisted::Limited {
                    organizer: is_organizer,
                    retry_after_ms,
                });
            }
        }
        let superseded = end_flows(
            &txn,
            Condition::all().add(A::MemberAccountId.eq(member.account_id.as_str())),
            AssistedEnd::Superseded,
            Some(&organizer.account_id),
            now,
        )
        .await?;
        assisted_flow::Entity::insert(assisted_flow::ActiveModel {
            assisted_flow_id: Set(new.assisted_flow_id),
            family_id: Set(new.family_id.clone()),
            member_account_id: Set(member.account_id.clone()),
            organizer_account_id: Set(organizer.account_id.clone()),
            member_generation: Set(member.generation),
            email_code_mac: Set(new.email_code_mac.0),
            mac_key_id: Set(new.mac_key_id),
            email_attempts: Set(0),
            verified_at: Set(None),
            ended_at: Set(None),
            end_reason: Set(None),
            ended_by: Set(None),
            created_at: Set(now),
            expires_at: Set(new.expires_at.as_ms()),
            client_ip: Set(new.client.ip),
            client_user_agent: Set(new.client.user_agent),
        })
        .exec(&txn)
        .await?;
        let organizers = organizers_of(&txn, &new.family_id).await?;
        let recovery_address =
            super::recovery_code::recovery_address(&txn, &member.account_id).await?;
        let started = BeginAssisted::Started(Box::new(AssistedStart {
            recovery_address,
            parties: AssistedParties {
                member: Some(member),
                organizers,
            },
            organizer,
            superseded,
        }));
        self.apply_effects(
            &txn,
            effects(&started)
                .into_effects()
                .map_err(ChangeError::Effects)?,
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(started)
    }

    /// The assisted flow with this id.
    #[tracing::instrument(name = "db.find_assisted_flow", skip_all)]
    pub async fn find_assisted_flow(
        &self,
        assisted_flow_id: &str,
    ) -> Result<Option<AssistedFlow>, StorageError> {
        Ok(super::by_key(
            assisted_flow::Entity::find_by_id(assisted_flow_id.to_owned()),
            self.reader(),
        )
        .await?
        .map(to_assisted))
    }

    /// Counts one code submission against the flow's `cap` before any comparison, with the
    /// effects of the counted submission (`effects` gets the number used), in one
    /// transaction. `None` when the cap was reached or the flow ended.
    #[tracing::instrument(name = "db.register_assisted_attempt", skip_all)]
    pub async fn register_assisted_attempt<R: IntoEffects>(
        &self,
        assisted_flow_id: &str,
        cap: i32,
        now: i64,
        effects: impl FnOnce(i32) -> R,
    ) -> Result<Option<i32>, ChangeError<R::Error>> {
        let txn = self.db().begin().await?;
        let rows = assisted_flow::Entity::update_many()
            .col_expr(A::EmailAttempts, Expr::col(A::EmailAttempts).add(1))
            .filter(A::AssistedFlowId.eq(assisted_flow_id))
            .filter(A::EmailAttempts.lt(cap))
            .filter(A::EndedAt.is_null())
            .exec_with_returning(&txn)
            .await?;
        let Some(used) = rows.first().map(|row| row.email_attempts) else {
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

    /// Marks the assisted flow verified, once: `true` for exactly one caller, and only while
    /// it is unverified, open and unexpired.
    #[tracing::instrument(name = "db.verify_assisted_recovery", skip_all)]
    pub async fn verify_assisted_recovery(
        &self,
        assisted_flow_id: &str,
        now: i64,
        effects: crate::model::Effects,
    ) -> Result<bool, StorageError> {
        let txn = self.db().begin().await?;
        let result = assisted_flow::Entity::update_many()
            .col_expr(A::VerifiedAt, Expr::value(Some(now)))
            .filter(A::AssistedFlowId.eq(assisted_flow_id))
            .filter(A::VerifiedAt.is_null())
            .filter(A::EndedAt.is_null())
            .filter(A::ExpiresAt.gt(now))
            .exec(&txn)
            .await?;
        if result.rows_affected != 1 {
            return Ok(false);
        }
        self.apply_effects(&txn, effects, now).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Completes a verified assisted flow, once, for an organizer of its family: revokes the
    /// member's recovery code (if live) and ends the member's other assisted flows, in one
    /// transaction. Serialised with the member's own `recover_account` on the member's
    /// enrollment row: exactly one of them wins.
    #[tracing::instrument(name = "db.complete_assisted_recovery", skip_all)]
    pub async fn complete_assisted_recovery<R: IntoEffects>(
        &self,
        assisted_flow_id: &str,
        organizer_account_id: &str,
        now: i64,
        effects: impl FnOnce(&AssistedCompletion) -> R,
    ) -> Result<Result<AssistedCompletion, AssistedRefusal>, ChangeError<R::Error>> {
        let txn = self.db().begin().await?;
        let Some(flow) = super::by_key(
            assisted_flow::Entity::find_by_id(assisted_flow_id.to_owned()),
            &txn,
        )
        .await?
        .map(to_assisted) else {
            return Ok(Err(AssistedRefusal::NotFound));
        };
        // Lock order as `recover_account`: the member's enrollment first.
        let enrollment = super::by_key(
            enrollment::Entity::find_by_id(flow.member_account_id.clone()).lock_exclusive(),
            &txn,
        )
        .await?;
        // Then both membership rows, shared and in account-id order (as begin takes them), so
        // that a concurrent removal or move waits for this completion, or this one sees it.
        let rows = lock_memberships(
            &txn,
            [organizer_account_id, &flow.member_account_id],
            Lock::Shared,
        )
        .await?;
        // An ended flow answers so first, whoever asks: the caller holds its unguessable id,
        // and a flood of refused completes on it writes no refusal.
        if let Some(refusal) = closed(&flow, now) {
            return Ok(Err(refusal));
        }
        let find = |id: &str| rows.iter().find(|m| m.account_id == id).cloned();
        let organizer = find(organizer_account_id)
            .filter(|o| o.family_id == flow.family_id && o.role == FamilyRole::Organizer);
        if organizer.is_none() {
            return Ok(Err(AssistedRefusal::NotAllowed));
        }
        if organizer_account_id == flow.member_account_id {
            return Ok(Err(AssistedRefusal::SelfRecovery));
        }
        if flow.verified_at.is_none() {
            return Ok(Err(AssistedRefusal::NotVerified));
        }
        let member = find(&flow.member_account_id)
            .filter(|m| m.family_id == flow.family_id && m.generation == flow.member_generation);
        if member.is_none() {
            return Ok(Err(AssistedRefusal::Ended));
        }
        let ended = end_flows(
            &txn,
            Condition::all()
                .add(A::AssistedFlowId.eq(assisted_flow_id))
                .add(A::VerifiedAt.is_not_null()),
            AssistedEnd::Completed,
            Some(organizer_account_id),
            now,
        )
        .await?;
        let Some(flow) = ended.into_iter().next() else {
            return Ok(Err(AssistedRefusal::Ended));
        };
        let mut revoked_code_id = None;
        let mut recovery_address = None;
        if let Some(row) = enrollment.filter(|e| e.code_hash.is_some()) {
            recovery_address = Some(row.email.clone());
            let revoked =
                super::recovery_code::retire(&txn, &row.account_id, row.generation, now).await?;
            // The enrollment's row is held: the code cannot have changed. Never complete with
            // the member's code still live.
            if !revoked {
                return Err(StorageError::Other(
                    "the member's recovery code could not be revoked".into(),
                )
                .into());
            }
            revoked_code_id = row.code_id;
        }
        let superseded = end_flows(
            &txn,
            Condition::all().add(A::MemberAccountId.eq(flow.member_account_id.as_str())),
            AssistedEnd::Superseded,
            Some(organizer_account_id),
            now,
        )
        .await?;
        let ended_contact = super::recovery_contacts::end_contact_flows_of(
            self.backend(),
            &txn,
            &flow.member_account_id,
            "",
            now,
        )
        .await?;
        let completion = AssistedCompletion {
            parties: AssistedParties {
                member,
                organizers: organizers_of(&txn, &flow.family_id).await?,
            },
            flow,
            revoked_code_id,
            superseded,
            recovery_address,
            ended_contact,
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
        Ok(Ok(completion))
    }

    /// Cancels an open assisted flow, for its member or an organizer of its family.
    #[tracing::instrument(name = "db.cancel_assisted_recovery", skip_all)]
    pub async fn cancel_assisted_recovery<R: IntoEffects>(
        &self,
        assisted_flow_id: &str,
        account_id: &str,
        now: i64,
        effects: impl FnOnce(&AssistedCancellation) -> R,
    ) -> Result<Result<AssistedCancellation, AssistedRefusal>, ChangeError<R::Error>> {
        let txn = self.db().begin().await?;
        let Some(flow) = super::by_key(
            assisted_flow::Entity::find_by_id(assisted_flow_id.to_owned()),
            &txn,
        )
        .await?
        .map(to_assisted) else {
            return Ok(Err(AssistedRefusal::NotFound));
        };
        // Ended first, as for a completion.
        if let Some(refusal) = closed(&flow, now) {
            return Ok(Err(refusal));
        }
        if account_id != flow.member_account_id
            && !is_organizer_of(&txn, account_id, &flow.family_id).await?
        {
            return Ok(Err(AssistedRefusal::NotAllowed));
        }
        let ended = end_flows(
            &txn,
            Condition::all().add(A::AssistedFlowId.eq(assisted_flow_id)),
            AssistedEnd::Cancelled,
            Some(account_id),
            now,
        )
        .await?;
        let Some(flow) = ended.into_iter().next() else {
            return Ok(Err(AssistedRefusal::Ended));
        };
        let member = super::by_key(
            family_member::Entity::find_by_id(flow.member_account_id.clone()),
            &txn,
        )
        .await?
        .and_then(to_member)
        .filter(|m| m.family_id == flow.family_id);
        let cancellation = AssistedCancellation {
            parties: AssistedParties {
                member,
                organizers: organizers_of(&txn, &flow.family_id).await?,
            },
            flow,
        };
        self.apply_effects(
            &txn,
            effects(&cancellation)
                .into_effects()
                .map_err(ChangeError::Effects)?,
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(Ok(cancellation))
    }
}

/// How [`lock_memberships`] holds the rows.
#[derive(Clone, Copy)]
enum Lock {
    Exclusive,
    Shared,
}

/// The membership rows of two accounts (those that exist), locked until the transaction ends,
/// always in account-id order: every operation that locks two of them takes them so, and so
/// begins and completions queue on each other without deadlocking.
async fn lock_memberships<C: ConnectionTrait>(
    txn: &C,
    accounts: [&str; 2],
    lock: Lock,
) -> Result<Vec<FamilyMember>, StorageError> {
    let mut ids = accounts.map(str::to_owned);
    ids.sort();
    let query = family_member::Entity::find()
        .filter(family_member::Column::AccountId.is_in(ids))
        .order_by_asc(family_member::Column::AccountId);
    let query = match lock {
        Lock::Exclusive => query.lock_exclusive(),
        Lock::Shared => query.lock_shared(),
    };
    Ok(query
        .all(txn)
        .await?
        .into_iter()
        .filter_map(to_member)
        .collect())
}

/// Whether the flow has ended or expired by `now`.
fn closed(flow: &AssistedFlow, now: i64) -> Option<AssistedRefusal> {
    if flow.ended_at.is_some() {
        Some(AssistedRefusal::Ended)
    } else if now >= flow.expires_at.as_ms() {
        Some(AssistedRefusal::Expired)
    } else {
        None
    }
}

/// Whether the account is an organizer of the family, holding its membership row (shared)
/// until the transaction ends, so that a concurrent removal waits.
async fn is_organizer_of<C: ConnectionTrait>(
    txn: &C,
    account_id: &str,
    family_id: &str,
) -> Result<bool, StorageError> {
    Ok(super::by_key(
        family_member::Entity::find_by_id(account_id.to_owned()).lock_shared(),
        txn,
    )
    .await?
    .and_then(to_member)
    .is_some_and(|m: FamilyMember| m.family_id == family_id && m.role == FamilyRole::Organizer))
}

/// `Some(retry_after_ms)` when `limit` flows matching `column = id` began within the window
/// ending at `now`: it is lifted when the oldest of them leaves the window.
async fn over_limit<C: ConnectionTrait>(
    txn: &C,
    column: A,
    id: &str,
    limit: i64,
    window_ms: i64,
    now: i64,
) -> Result<Option<i64>, StorageError> {
    let since = now - window_ms;
    let count = assisted_flow::Entity::find()
        .filter(column.eq(id))
        .filter(A::CreatedAt.gt(since))
        .count(txn)
        .await?;
    if i64::try_from(count).unwrap_or(i64::MAX) < limit {
        return Ok(None);
    }
    // The begin that must leave the window before another is allowed.
    let skip = count.saturating_sub(u64::try_from(limit).unwrap_or(0));
    let oldest: Option<i64> = assisted_flow::Entity::find()
        .select_only()
        .column(A::CreatedAt)
        .filter(column.eq(id))
        .filter(A::CreatedAt.gt(since))
        .order_by_asc(A::CreatedAt)
        .offset(skip)
        .limit(1)
        .into_tuple()
        .one(txn)
        .await?;
    Ok(Some(Ord::max(
        oldest.map_or(window_ms, |at| at + window_ms - now),
        1,
    )))
}
