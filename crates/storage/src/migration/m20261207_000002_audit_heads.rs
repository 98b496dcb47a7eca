//! Each account's audit chain gets an anchor outside its rows: `audit_heads` names the newest
//! row (its `seq` and link) under a MAC, so deleting the newest rows, or all of them, no
//! longer goes unnoticed; and keeps a verified checkpoint (also under a MAC), so a call
//! verifies only what was appended since and the rows it shows. Accounts whose rows all date
//! from before this migration (`audit_chain_meta.anchored_from_seq`) get their anchor on their
//! next append or verification; a later row without an anchor is a cut.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditHeads::Table)
                    .col(string_len(AuditHeads::AccountId, 128).primary_key())
                    .col(big_integer(AuditHeads::HeadSeq))
                    .col(string_len(AuditHeads::HeadLink, 128))
                    .col(string_len(AuditHeads::KeyId, 64))
                    .col(string_len(AuditHeads::Mac, 128))
                    .col(big_integer_null(AuditHeads::VerifiedSeq))
                    .col(string_len_null(AuditHeads::VerifiedLink, 128))
                    .col(string_len_null(AuditHeads::VerifiedKeyId, 64))
                    .col(string_len_null(AuditHeads::VerifiedMac, 128))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(AuditChainMeta::Table)
                    .add_column(big_integer_null(AuditChainMeta::AnchoredFromSeq))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE audit_chain_meta SET anchored_from_seq = \
                 (SELECT COALESCE(MAX(seq), 0) FROM audit_events) WHERE id = 1",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(AuditChainMeta::Table)
                    .drop_column(AuditChainMeta::AnchoredFromSeq)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(AuditHeads::Table).to_owned())
            .await?;
        Ok(())
    }
}

#[derive(DeriveIden)]
enum AuditHeads {
    #[sea_orm(iden = "audit_heads")]
    Table,
    AccountId,
    HeadSeq,
    HeadLink,
    KeyId,
    Mac,
    VerifiedSeq,
    VerifiedLink,
    VerifiedKeyId,
    VerifiedMac,
}

#[derive(DeriveIden)]
enum AuditChainMeta {
    #[sea_orm(iden = "audit_chain_meta")]
    Table,
    AnchoredFromSeq,
}
