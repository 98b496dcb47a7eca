//! Forgetting an account: the personal details of each account's audit events (client IP
//! address and user agent, address hints, free-text reasons) are stored sealed under a data key
//! of that account alone (`account_data_keys`, the key itself wrapped by the service's key
//! ring), in `audit_events.sealed`; forgetting the account deletes its key, and
//! `forgotten_accounts` records that (and when) it was forgotten, so that a repeated forget
//! changes nothing.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AccountDataKeys::Table)
                    .col(string_len(AccountDataKeys::KeyId, 64).primary_key())
                    .col(string_len_uniq(AccountDataKeys::AccountId, 128))
                    .col(string_len(AccountDataKeys::Wrapped, 256))
                    .col(big_integer(AccountDataKeys::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ForgottenAccounts::Table)
                    .col(string_len(ForgottenAccounts::AccountId, 128).primary_key())
                    .col(big_integer(ForgottenAccounts::ForgottenAt))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(AuditEvents::Table)
                    .add_column(text_null(AuditEvents::Sealed))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(AuditEvents::Table)
                    .drop_column(AuditEvents::Sealed)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(ForgottenAccounts::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(AccountDataKeys::Table).to_owned())
            .await?;
        Ok(())
    }
}

#[derive(DeriveIden)]
enum AccountDataKeys {
    #[sea_orm(iden = "account_data_keys")]
    Table,
    KeyId,
    AccountId,
    Wrapped,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ForgottenAccounts {
    #[sea_orm(iden = "forgotten_accounts")]
    Table,
    AccountId,
    ForgottenAt,
}

#[derive(DeriveIden)]
enum AuditEvents {
    #[sea_orm(iden = "audit_events")]
    Table,
    Sealed,
}
