//! Each account's audit events form a hash chain: every row stores the id of the server key
//! that made its link and `HMAC(key, previous link || canonical event)`. Rows written before
//! this migration have no link; the chain starts at the first linked row.

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
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
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
