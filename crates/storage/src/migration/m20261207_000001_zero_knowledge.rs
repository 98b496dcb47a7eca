//! Zero-knowledge recovery (OPAQUE, RFC 9807). A zero-knowledge enrolment is the same
//! `recovery_enrollments` row as a server-held code: `code_hash` holds the OPAQUE registration
//! record (base64) instead of an argon2id PHC string, `hash_params` says which
//! (`opaque-3dh,ristretto255-sha512`), and the new `sealed_keyset` holds the keyset the device
//! sealed under OPAQUE's export key (base64; opaque to the service). A flow keeps the server's
//! sealed login state between StartZeroKnowledgeRecovery and its finish (and the one a newer
//! start replaced, so that a right but stale finish is told apart from a wrong code). Each
//! finished enrolment is recorded until an hour past its enrollment id's expiry, so a replayed
//! finish changes nothing.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Enrollments::Table)
                    .add_column(text_null(Enrollments::SealedKeyset))
                    .to_owned(),
            )
            .await?;
        for column in [Flows::ZkLoginState, Flows::ZkPreviousLoginState] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Flows::Table)
                        .add_column(text_null(column))
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(FinishedEnrollments::Table)
                    .col(string_len(FinishedEnrollments::EnrollmentKey, 128).primary_key())
                    .col(big_integer(FinishedEnrollments::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(FinishedEnrollments::Table).to_owned())
            .await?;
        for column in [Flows::ZkPreviousLoginState, Flows::ZkLoginState] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Flows::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Enrollments::Table)
                    .drop_column(Enrollments::SealedKeyset)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Enrollments {
    #[sea_orm(iden = "recovery_enrollments")]
    Table,
    SealedKeyset,
}

#[derive(DeriveIden)]
enum Flows {
    #[sea_orm(iden = "recovery_flows")]
    Table,
    ZkLoginState,
    ZkPreviousLoginState,
}

#[derive(DeriveIden)]
enum FinishedEnrollments {
    #[sea_orm(iden = "finished_enrollments")]
    Table,
    EnrollmentKey,
    ExpiresAt,
}
