//! Zero-knowledge recovery's own steps: an enrolment finished once per enrollment id, and the
//! server's sealed OPAQUE login state kept in a flow between StartZeroKnowledgeRecovery and its
//! finish. The rest is shared with server-held codes: the enrolment row and its replacement
//! (`recovery_code.rs`), the reservation and the completion (`recovery_flow.rs`).

use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _, sea_query::Expr};

use super::{ChangeError, IntoEffects};
use crate::{
    Storage, StorageError,
    entity::flow::{self, Column as F},
    model::{Effects, NewEnrollment, Opaque, PutOutcome},
};

impl Storage {
    /// [`Storage::put_recovery_code`] for a zero-knowledge enrolment, finished once:
    /// `enrollment_key` (what identifies the started enrolment) is recorded until `expires_at`
    /// in the same transaction, and a second finish with the same key fails with
    /// [`crate::ConflictKind::AlreadyUsed`] and changes nothing.
    #[tracing::instrument(name = "db.finish_enrollment", skip_all)]
    pub async fn finish_enrollment<R: IntoEffects>(
        &self,
        new: NewEnrollment,
        enrollment_key: &str,
        expires_at: i64,
        now: i64,
        effects: impl FnOnce(&PutOutcome) -> R,
    ) -> Result<PutOutcome, ChangeError<R::Error>> {
        self.put_enrollment(new, Some((enrollment_key, expires_at)), now, effects)
            .await
    }

    /// Keeps the server's sealed OPAQUE login state in a verified, open flow (replacing a
    /// pending one), with the start's effects, in one transaction. `false` when the flow
    /// completed, expired or is not verified.
    #[tracing::instrument(name = "db.store_login_state", skip_all)]
    pub async fn store_login_state(
        &self,
        flow_id: &str,
        state: Opaque,
        now: i64,
        effects: Effects,
    ) -> Result<bool, StorageError> {
        // The replaced login is kept beside (the right side reads the row as it was).
        self.update_flow_once(
            flow::Entity::update_many()
                .col_expr(F::ZkPreviousLoginState, Expr::col(F::ZkLoginState))
                .col_expr(F::ZkLoginState, Expr::value(Some(state.0)))
                .filter(F::FlowId.eq(flow_id))
                .filter(F::CompletedAt.is_null())
                .filter(F::VerifiedAt.is_not_null())
                .filter(F::ExpiresAt.gt(now)),
            now,
            effects,
        )
        .await
    }

    /// Ends a pending OPAQUE login whose finish did not verify (a wrong code): the state is
    /// cleared, once, with the failure's effects. `false` when another call ended or
    /// replaced it first (nothing is written).
    #[tracing::instrument(name = "db.end_login_state", skip_all)]
    pub async fn end_login_state(
        &self,
        flow_id: &str,
        state: &Opaque,
        now: i64,
        effects: Effects,
    ) -> Result<bool, StorageError> {
        self.update_flow_once(
            flow::Entity::update_many()
                .col_expr(F::ZkLoginState, Expr::value(Option::<String>::None))
                .filter(F::FlowId.eq(flow_id))
                .filter(F::ZkLoginState.eq(state.0.as_str())),
            now,
            effects,
        )
        .await
    }
}
