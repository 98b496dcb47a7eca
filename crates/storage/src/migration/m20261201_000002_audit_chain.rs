//! Each account's audit events form a hash chain: every row stores the id of the server key
//! that made its link and `HMAC(key, previous link || canonical event)`. Rows written before
//! this migration have no link: `audit_chain_meta.legacy_max_seq` records the last of them,
//! and no later row may be unlinked (clearing a row's link does not turn it into a legacy
//! row).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(AuditEvents::Table)
                    .add_column(string_len_null(AuditEvents::ChainKeyId, 64))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(AuditEvents::Table)
                    .add_column(string_len_null(AuditEvents::ChainHash, 128))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditChainMeta::Table)
                    .col(integer(AuditChainMeta::Id).primary_key())
                    .col(big_integer(AuditChainMeta::LegacyMaxSeq))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(
            "INSERT INTO audit_chain_meta (id, legacy_max_seq) \
             SELECT 1, COALESCE(MAX(seq), 0) FROM audit_events",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditChainMeta::Table).to_owned())
            .await?;
        for column in [AuditEvents::ChainHash, AuditEvents::ChainKeyId] {
            manager
                .alter_table(
                    Table::alter()
                        .table(AuditEvents::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum AuditEvents {
    #[sea_orm(iden = "audit_events")]
    Table,
    ChainKeyId,
    ChainHash,
}

#[derive(DeriveIden)]
enum AuditChainMeta {
    #[sea_orm(iden = "audit_chain_meta")]
    Table,
    Id,
    LegacyMaxSeq,
}
