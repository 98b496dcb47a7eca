//! Enrollments: create or replace a code, revoke it, change the email, look them up.

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait as _, EntityTrait as _, QueryFilter as _, QuerySelect as _, TransactionTrait as _,
    sea_query::{Expr, ExprTrait as _, OnConflict},
};

use super::{ChangeError, IntoEffects};
use crate::{
    Storage, StorageError,
    entity::{
        enrollment::{self, Column as C},
        finished_enrollment,
    },
    model::{Enrollment, NewEnrollment, Opaque, PutOutcome, StoredCode, Timestamp},
};

impl Storage {
    /// Stores a new code for the account, replacing any live one, and bumps the generation so
    /// every flow started before can no longer complete. `effects` sees what happened and
    /// returns the notifications and audit events to write in the same transaction.
    ///
    /// Fails with [`StorageError::Conflict`] when the email's lookup form belongs to another
    /// account's live enrollment.
    #[tracing::instrument(name = "db.put_recovery_code", skip_all)]
    pub async fn put_recovery_code<R: IntoEffects>(
        &self,
        new: NewEnrollment,
        now: i64,
        effects: impl FnOnce(&PutOutcome) -> R,
    ) -> Result<PutOutcome, ChangeError<R::Error>> {
        self.put_enrollment(new, None, now, effects).await
    }

    pub(super) async fn put_enrollment<R: IntoEffects>(
        &self,
        new: NewEnrollment,
        single_use: Option<(&str, i64)>,
        now: i64,
        effects: impl FnOnce(&PutOutcome) -> R,
    ) -> Result<PutOutcome, ChangeError<R::Error>> {
        let txn = self.db().begin().await?;
        if let Some((key, expires_at)) = single_use {
            let inserted = finished_enrollment::Entity::insert(finished_enrollment::ActiveModel {
                enrollment_key: Set(key.to_owned()),
                expires_at: Set(expires_at),
            })
            .on_conflict(
                OnConflict::column(finished_enrollment::Column::EnrollmentKey)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
            if inserted != 1 {
                return Err(StorageError::Conflict {
                    kind: crate::ConflictKind::AlreadyUsed,
                    detail: "the enrollment was already finished".into(),
                }
                .into());
            }
        }
        let existing = super::by_key(
            enrollment::Entity::find_by_id(new.account_id.clone()).lock_exclusive(),
            &txn,
        )
        .await?;
        let code = new.code;
        let outcome = match existing {
            Some(row) => {
                let live = row.code_hash.is_some();
                let outcome = PutOutcome {
                    replaced: live,
                    previous_email: live.then(|| row.email.clone()),
                    generation: row.generation + 1,
                };
                let result = enrollment::Entity::update_many()
                    .col_expr(C::Email, Expr::value(new.email))
                    .col_expr(C::EmailLookup, Expr::value(Some(new.email_lookup)))
                    .col_expr(C::CodeId, Expr::value(Some(code.code_id)))
                    .col_expr(C::CodeHash, Expr::value(Some(code.hash.0)))
                    .col_expr(C::HashKeyId, Expr::value(Some(code.key_id)))
                    .col_expr(C::HashParams, Expr::value(Some(code.params)))
                    .col_expr(
                        C::SealedKeyset,
                        Expr::value(code.sealed_keyset.map(|k| k.0)),
                    )
                    .col_expr(C::Generation, Expr::col(C::Generation).add(1))
                    .col_expr(C::CodeCreatedAt, Expr::value(Some(now)))
                    .col_expr(C::UpdatedAt, Expr::value(now))
                    .col_expr(C::LastUsedAt, Expr::value(Option::<i64>::None))
                    .col_expr(C::UseCount, Expr::value(0i64))
                    .col_expr(C::RevokedAt, Expr::value(Option::<i64>::None))
                    .filter(C::AccountId.eq(row.account_id))
                    .filter(C::Generation.eq(row.generation))
                    .exec(&txn)
                    .await?;
                if result.rows_affected != 1 {
                    return Err(StorageError::Conflict {
                        kind: crate::ConflictKind::Transient,
                        detail: "the enrollment changed concurrently".into(),
                    }
                    .into());
                }
                outcome
            }
            None => {
                enrollment::Entity::insert(enrollment::ActiveModel {
                    account_id: Set(new.account_id),
                    email: Set(new.email),
                    email_lookup: Set(Some(new.email_lookup)),
                    code_id: Set(Some(code.code_id)),
                    code_hash: Set(Some(code.hash.0)),
                    hash_key_id: Set(Some(code.key_id)),
                    hash_params: Set(Some(code.params)),
                    generation: Set(1),
                    created_at: Set(now),
                    code_created_at: Set(Some(now)),
                    updated_at: Set(now),
                    last_used_at: Set(None),
                    use_count: Set(0),
                    locked_until: Set(None),
                    revoked_at: Set(None),
                    sealed_keyset: Set(code.sealed_keyset.map(|k| k.0)),
                })
                .exec(&txn)
                .await?;
                PutOutcome {
                    replaced: false,
                    previous_email: None,
                    generation: 1,
                }
            }
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

    /// Deletes the account's live code (the row stays, with the generation bumped, so flows
    /// started before can no longer complete). [`StorageError::NotFound`] when there is none.
    #[tracing::instrument(name = "db.revoke_recovery_code", skip_all)]
    pub async fn revoke_recovery_code<R: IntoEffects>(
        &self,
        account_id: &str,
        now: i64,
        effects: impl FnOnce(&Enrollment) -> R,
    ) -> Result<Enrollment, ChangeError<R::Error>> {
        let txn = self.db().begin().await?;
        let row = lock_live(&txn, account_id).await?;
        if !retire(&txn, account_id, row.generation, now).await? {
            return Err(StorageError::NotFound.into());
        }
        let before = to_enrollment(row);
        self.apply_effects(
            &txn,
            effects(&before)
                .into_effects()
                .map_err(ChangeError::Effects)?,
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(before)
    }

    /// Changes where the account's recovery mail goes, bumping the generation (flows started
    /// against the old address can no longer complete). Answers the enrollment as it was.
    /// [`StorageError::NotFound`] without a live code; [`StorageError::Conflict`] when the
    /// address belongs to another account's live enrollment.
    #[tracing::instrument(name = "db.update_recovery_email", skip_all)]
    pub async fn update_recovery_email<R: IntoEffects>(
        &self,
        account_id: &str,
        email: &str,
        email_lookup: &str,
        now: i64,
        effects: impl FnOnce(&Enrollment) -> R,
    ) -> Result<Enrollment, ChangeError<R::Error>> {
        let txn = self.db().begin().await?;
        let row = lock_live(&txn, account_id).await?;
        let result = enrollment::Entity::update_many()
            .col_expr(C::Email, Expr::value(email))
            .col_expr(C::EmailLookup, Expr::value(Some(email_lookup.to_owned())))
            .col_expr(C::Generation, Expr::col(C::Generation).add(1))
            .col_expr(C::UpdatedAt, Expr::value(now))
            .filter(C::AccountId.eq(account_id))
            .filter(C::Generation.eq(row.generation))
            .filter(C::CodeHash.is_not_null())
            .exec(&txn)
            .await?;
        if result.rows_affected != 1 {
            return Err(StorageError::NotFound.into());
        }
        let before = to_enrollment(row);
        self.apply_effects(
            &txn,
            effects(&before)
                .into_effects()
                .map_err(ChangeError::Effects)?,
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(before)
    }

    /// The account's enrollment, live or revoked.
    #[tracing::instrument(name = "db.find_enrollment", skip_all)]
    pub async fn find_enrollment(
        &self,
        account_id: &str,
    ) -> Result<Option<Enrollment>, StorageError> {
        Ok(super::by_key(
            enrollment::Entity::find_by_id(account_id.to_owned()),
            self.reader(),
        )
        .await?
        .map(to_enrollment))
    }

    /// The live enrollment whose email has this lookup form.
    #[tracing::instrument(name = "db.find_enrollment_by_email", skip_all)]
    pub async fn find_enrollment_by_email(
        &self,
        email_lookup: &str,
    ) -> Result<Option<Enrollment>, StorageError> {
        Ok(enrollment::Entity::find()
            .filter(C::EmailLookup.eq(email_lookup))
            .filter(C::CodeHash.is_not_null())
            .one(self.reader())
            .await?
            .map(to_enrollment))
    }
}

/// Deletes the live credential of either kind (revoke, an assisted completion, a
/// zero-knowledge enrolment retired under `rotate_on_use`): the row stays with the generation
/// bumped, so flows started before can no longer complete, and the address is free again.
/// `true` when the enrolment of `generation` was live and is now retired.
pub(crate) async fn retire<T: sea_orm::ConnectionTrait>(
    txn: &T,
    account_id: &str,
    generation: i64,
    now: i64,
) -> Result<bool, StorageError> {
    let result = enrollment::Entity::update_many()
        .col_expr(C::EmailLookup, Expr::value(Option::<String>::None))
        .col_expr(C::CodeId, Expr::value(Option::<String>::None))
        .col_expr(C::CodeHash, Expr::value(Option::<String>::None))
        .col_expr(C::HashKeyId, Expr::value(Option::<String>::None))
        .col_expr(C::HashParams, Expr::value(Option::<String>::None))
        .col_expr(C::SealedKeyset, Expr::value(Option::<String>::None))
        .col_expr(C::Generation, Expr::col(C::Generation).add(1))
        .col_expr(C::UpdatedAt, Expr::value(now))
        .col_expr(C::RevokedAt, Expr::value(Some(now)))
        .filter(C::AccountId.eq(account_id))
        .filter(C::Generation.eq(generation))
        .filter(C::CodeHash.is_not_null())
        .exec(txn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// The address of the account's live enrolment, of either kind (`None` without one): where
/// its owner hears of every path into the account.
pub(crate) async fn recovery_address<T: sea_orm::ConnectionTrait>(
    db: &T,
    account_id: &str,
) -> Result<Option<String>, StorageError> {
    let address: Option<(String, Option<String>)> = enrollment::Entity::find_by_id(account_id)
        .select_only()
        .column(C::Email)
        .column(C::CodeHash)
        .into_tuple()
        .one(db)
        .await?;
    Ok(address.and_then(|(email, live)| live.map(|_| email)))
}

/// The account's live enrollment, locked for the rest of the transaction;
/// [`StorageError::NotFound`] when it has no code.
async fn lock_live(
    txn: &sea_orm::DatabaseTransaction,
    account_id: &str,
) -> Result<enrollment::Model, StorageError> {
    super::by_key(
        enrollment::Entity::find_by_id(account_id.to_owned()).lock_exclusive(),
        txn,
    )
    .await?
    .filter(|row| row.code_hash.is_some())
    .ok_or(StorageError::NotFound)
}

pub(crate) fn to_enrollment(row: enrollment::Model) -> Enrollment {
    let code = match (row.code_id, row.code_hash, row.hash_key_id, row.hash_params) {
        (Some(code_id), Some(hash), Some(key_id), Some(params)) => Some(StoredCode {
            code_id,
            hash: Opaque(hash),
            key_id,
            params,
            sealed_keyset: row.sealed_keyset.map(Opaque),
        }),
        _ => None,
    };
    Enrollment {
        account_id: row.account_id,
        email: row.email,
        code,
        generation: row.generation,
        created_at: Timestamp::from_ms(row.created_at),
        code_created_at: row.code_created_at.map(Timestamp::from_ms),
        updated_at: Timestamp::from_ms(row.updated_at),
        last_used_at: row.last_used_at.map(Timestamp::from_ms),
        use_count: row.use_count,
        locked_until: row.locked_until.map(Timestamp::from_ms),
    }
}
