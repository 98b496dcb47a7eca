//! Forgetting an account: the personal details of each account's audit events (client IP
//! address and user agent, address hints, free-text reasons) are stored sealed under a data key
//! of that account alone (`account_data_keys`, the key itself wrapped by the service's key
//! ring), in `audit_events.sealed`; forgetting the account deletes its keys, and
//! `forgotten_accounts` records that (and when, and the last event it covers) it was
//! forgotten, so that a repeated forget changes nothing.

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
                    .col(string_len(AccountDataKeys::AccountId, 128))
                    .col(string_len(AccountDataKeys::Wrapped, 256))
                    .col(big_integer(AccountDataKeys::CreatedAt))
                    .to_owned(),
            )
            .await?;
        // Usually one key per account; another is added when the ring key that wrapped the
        // current one left the ring (the old one stays, for a replica that still has it).
        manager
            .create_index(
                Index::create()
                    .name("account_data_keys_by_account")
                    .table(AccountDataKeys::Table)
                    .col(AccountDataKeys::AccountId)
                    .col(AccountDataKeys::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ForgottenAccounts::Table)
                    .col(string_len(ForgottenAccounts::AccountId, 128).primary_key())
                    .col(big_integer(ForgottenAccounts::ForgottenAt))
                    .col(big_integer(ForgottenAccounts::ThroughSeq))
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
        // Retention prunes by age.
        manager
            .create_index(
                Index::create()
                    .name("audit_events_by_time")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::OccurredAt)
                    .to_owned(),
            )
            .await?;
        // Rows written in clear before this migration are sealed in the background, account
        // by account; `resealed_through_seq` is how far the scan got.
        manager
            .alter_table(
                Table::alter()
                    .table(AuditChainMeta::Table)
                    .add_column(big_integer_null(AuditChainMeta::ResealedThroughSeq))
                    .to_owned(),
            )
            .await?;
        // Where a pruned trail begins: the link of the last pruned row, under a MAC.
        for column in [
            AuditHeads::BaseSeq,
            AuditHeads::BaseLink,
            AuditHeads::BaseKeyId,
            AuditHeads::BaseMac,
        ] {
            let def = match column {
                AuditHeads::BaseSeq => big_integer_null(column),
                _ => string_len_null(column, 128),
            };
            manager
                .alter_table(
                    Table::alter()
                        .table(AuditHeads::Table)
                        .add_column(def)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            AuditHeads::BaseSeq,
            AuditHeads::BaseLink,
            AuditHeads::BaseKeyId,
            AuditHeads::BaseMac,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(AuditHeads::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(AuditChainMeta::Table)
                    .drop_column(AuditChainMeta::ResealedThroughSeq)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("audit_events_by_time")
                    .table(AuditEvents::Table)
                    .to_owned(),
            )
            .await?;
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
    ThroughSeq,
}

#[derive(DeriveIden)]
enum AuditEvents {
    #[sea_orm(iden = "audit_events")]
    Table,
    Sealed,
    OccurredAt,
}

#[derive(DeriveIden)]
enum AuditChainMeta {
    #[sea_orm(iden = "audit_chain_meta")]
    Table,
    ResealedThroughSeq,
}

#[derive(DeriveIden, Clone, Copy)]
enum AuditHeads {
    #[sea_orm(iden = "audit_heads")]
    Table,
    BaseSeq,
    BaseLink,
    BaseKeyId,
    BaseMac,
}
