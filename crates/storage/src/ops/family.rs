//! Family membership, mirrored from the account service: put, remove, list. A change of an
//! account's membership ends the assisted flows that involve it, in the same transaction.

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait as _, Condition, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _, TransactionTrait as _,
    sea_query::{Expr, ExprTrait as _, OnConflict},
};

use super::{ChangeError, IntoEffects};
use crate::{
    Storage, StorageError,
    entity::{
        assisted_flow::{self, Column as A},
        enrollment,
        family_member::{self, Column as M},
    },
    model::{
        AssistedEnd, AssistedFlow, ClientInfo, FamilyMember, FamilyRole, MemberRecoveryStatus,
        NewFamilyMember, Opaque, PutMemberOutcome, RemovedMember, Timestamp,
    },
};

impl Storage {
    /// Puts the account in the family with this role and address (moving it out of any other
    /// family), bumps its membership generation, and ends every open assisted flow in which
    /// it is the member or the organizer who began it; `effects` sees what happened.
    #[tracing::instrument(name = "db.put_family_member", skip_all)]
    pub async fn put_family_member<R: IntoEffects>(
        &self,
        new: NewFamilyMember,
        now: i64,
        effects: impl FnOnce(&PutMemberOutcome) -> R,
    ) -> Result<PutMemberOutcome, ChangeError<R::Error>> {
        let txn = self.db().begin().await?;
        let previous = super::by_key(
            family_member::Entity::find_by_id(new.account_id.clone()).lock_exclusive(),
            &txn,
        )
        .await?
        .and_then(to_member);
        // One statement either way, so two first puts racing both land (the later wins).
        family_member::Entity::insert(family_member::ActiveModel {
            account_id: Set(new.account_id.clone()),
            family_id: Set(new.family_id.clone()),
            role: Set(new.role.as_str().to_owned()),
            email: Set(new.email.clone()),
            generation: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .on_conflict(
            OnConflict::column(M::AccountId)
                .update_columns([M::FamilyId, M::Role, M::Email, M::UpdatedAt])
                .value(
                    M::Generation,
                    Expr::col((family_member::Entity, M::Generation)).add(1),
                )
                .to_owned(),
        )
        .exec(&txn)
        .await?;
        let member = super::by_key(
            family_member::Entity::find_by_id(new.account_id.clone()),
            &txn,
        )
        .await?
        .and_then(to_member)
        .ok_or_else(|| StorageError::Other("a put family member is not stored".into()))?;
        let ended = end_flows_involving(&txn, &new.account_id, now).await?;
        let outcome = PutMemberOutcome {
            previous,
            member,
            ended,
            recovery_address: super::recovery_code::recovery_address(&txn, &new.account_id).await?,
        };
        self.apply_effects(
            &txn,
            effects(&outcome)
                .into_effects()
                .map_err(ChangeError::Effects)?,
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(outcome)
    }

    /// Removes the account from the family and ends the open assisted flows that involve it.
    /// [`StorageError::NotFound`] when the account is not in that family.
    #[tracing::instrument(name = "db.remove_family_member", skip_all)]
    pub async fn remove_family_member<R: IntoEffects>(
        &self,
        family_id: &str,
        account_id: &str,
        now: i64,
        effects: impl FnOnce(&RemovedMember) -> R,
    ) -> Result<RemovedMember, ChangeError<R::Error>> {
        let txn = self.db().begin().await?;
        let member = super::by_key(
            family_member::Entity::find_by_id(account_id.to_owned()).lock_exclusive(),
            &txn,
        )
        .await?
        .filter(|row| row.family_id == family_id)
        .and_then(to_member)
        .ok_or(StorageError::NotFound)?;
        let deleted = family_member::Entity::delete_many()
            .filter(M::AccountId.eq(account_id))
            .filter(M::FamilyId.eq(family_id))
            .exec(&txn)
            .await?;
        if deleted.rows_affected != 1 {
            return Err(StorageError::NotFound.into());
        }
        let ended = end_flows_involving(&txn, account_id, now).await?;
        let removed = RemovedMember { member, ended };
        self.apply_effects(
            &txn,
            effects(&removed)
                .into_effects()
                .map_err(ChangeError::Effects)?,
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(removed)
    }

    /// The account's family membership.
    #[tracing::instrument(name = "db.find_family_member", skip_all)]
    pub async fn find_family_member(
        &self,
        account_id: &str,
    ) -> Result<Option<FamilyMember>, StorageError> {
        Ok(super::by_key(
            family_member::Entity::find_by_id(account_id.to_owned()),
            self.reader(),
        )
        .await?
        .and_then(to_member))
    }

    /// Every member of the family (organizers first, then by account id), whether each has a
    /// live recovery code, and whether an assisted flow for each is open at `now`.
    #[tracing::instrument(name = "db.family_recovery_status", skip_all)]
    pub async fn family_recovery_status(
        &self,
        family_id: &str,
        now: i64,
    ) -> Result<Vec<MemberRecoveryStatus>, StorageError> {
        let members = family_members(self.reader(), family_id).await?;
        let ids: Vec<String> = members.iter().map(|m| m.account_id.clone()).collect();
        let enrolled: Vec<String> = enrollment::Entity::find()
            .select_only()
            .column(enrollment::Column::AccountId)
            .filter(enrollment::Column::AccountId.is_in(ids.clone()))
            .filter(enrollment::Column::CodeHash.is_not_null())
            .into_tuple()
            .all(self.reader())
            .await?;
        let pending: Vec<String> = assisted_flow::Entity::find()
            .select_only()
            .column(A::MemberAccountId)
            .filter(A::FamilyId.eq(family_id))
            .filter(A::MemberAccountId.is_in(ids))
            .filter(A::EndedAt.is_null())
            .filter(A::ExpiresAt.gt(now))
            .into_tuple()
            .all(self.reader())
            .await?;
        Ok(members
            .into_iter()
            .map(|member| MemberRecoveryStatus {
                enrolled: enrolled.contains(&member.account_id),
                assisted_pending: pending.contains(&member.account_id),
                member,
            })
            .collect())
    }
}

/// The family's members, organizers first, then by account id.
pub(crate) async fn family_members<C: ConnectionTrait>(
    db: &C,
    family_id: &str,
) -> Result<Vec<FamilyMember>, StorageError> {
    let mut members: Vec<FamilyMember> = family_member::Entity::find()
        .filter(M::FamilyId.eq(family_id))
        .order_by_asc(M::AccountId)
        .all(db)
        .await?
        .into_iter()
        .filter_map(to_member)
        .collect();
    members.sort_by_key(|m| m.role != FamilyRole::Organizer);
    Ok(members)
}

/// The family's organizers, by account id.
pub(crate) async fn organizers_of<C: ConnectionTrait>(
    db: &C,
    family_id: &str,
) -> Result<Vec<FamilyMember>, StorageError> {
    Ok(family_members(db, family_id)
        .await?
        .into_iter()
        .filter(|m| m.role == FamilyRole::Organizer)
        .collect())
}

/// Ends the open assisted flows in which the account is the member or the organizer who
/// began them; answers them as ended.
async fn end_flows_involving<C: ConnectionTrait>(
    txn: &C,
    account_id: &str,
    now: i64,
) -> Result<Vec<AssistedFlow>, StorageError> {
    end_flows(
        txn,
        Condition::any()
            .add(A::MemberAccountId.eq(account_id))
            .add(A::OrganizerAccountId.eq(account_id)),
        AssistedEnd::MembershipChanged,
        None,
        now,
    )
    .await
}

/// Ends every open assisted flow matching `which` (one conditional update), recording why
/// and by whom; answers them as ended. Expired flows are left as they are.
pub(crate) async fn end_flows<C: ConnectionTrait>(
    txn: &C,
    which: Condition,
    reason: AssistedEnd,
    by: Option<&str>,
    now: i64,
) -> Result<Vec<AssistedFlow>, StorageError> {
    let rows = assisted_flow::Entity::update_many()
        .col_expr(A::EndedAt, Expr::value(Some(now)))
        .col_expr(A::EndReason, Expr::value(Some(reason.as_str())))
        .col_expr(A::EndedBy, Expr::value(by.map(str::to_owned)))
        .filter(which)
        .filter(A::EndedAt.is_null())
        .filter(A::ExpiresAt.gt(now))
        .exec_with_returning(txn)
        .await?;
    let mut flows: Vec<AssistedFlow> = rows.into_iter().map(to_assisted).collect();
    flows.sort_by(|a, b| a.assisted_flow_id.cmp(&b.assisted_flow_id));
    Ok(flows)
}

pub(crate) fn to_member(row: family_member::Model) -> Option<FamilyMember> {
    let Some(role) = FamilyRole::parse(&row.role) else {
        tracing::error!(account_id = %row.account_id, role = %row.role, "a family member has an unknown role; ignored");
        return None;
    };
    Some(FamilyMember {
        account_id: row.account_id,
        family_id: row.family_id,
        role,
        email: row.email,
        generation: row.generation,
        created_at: Timestamp::from_ms(row.created_at),
        updated_at: Timestamp::from_ms(row.updated_at),
    })
}

pub(crate) fn to_assisted(row: assisted_flow::Model) -> AssistedFlow {
    AssistedFlow {
        end_reason: row.end_reason.as_deref().and_then(AssistedEnd::parse),
        assisted_flow_id: row.assisted_flow_id,
        family_id: row.family_id,
        member_account_id: row.member_account_id,
        organizer_account_id: row.organizer_account_id,
        member_generation: row.member_generation,
        email_code_mac: Opaque(row.email_code_mac),
        mac_key_id: row.mac_key_id,
        email_attempts: row.email_attempts,
        verified_at: row.verified_at.map(Timestamp::from_ms),
        ended_at: row.ended_at.map(Timestamp::from_ms),
        ended_by: row.ended_by,
        created_at: Timestamp::from_ms(row.created_at),
        expires_at: Timestamp::from_ms(row.expires_at),
        client: ClientInfo {
            ip: row.client_ip,
            user_agent: row.client_user_agent,
        },
    }
}
