//! Platform events (NATS JetStream): an outbox written in the same transaction as the change,
//! published after. `seq` orders the events; a publisher takes only the oldest unpublished
//! event of each account, so an account's events are published in the order of its changes.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EventOutbox::Table)
                    .col(big_integer(EventOutbox::Seq).auto_increment().primary_key())
                    .col(string_len(EventOutbox::EventId, 64).unique_key())
                    .col(string_len(EventOutbox::AccountId, 128))
                    .col(string_len(EventOutbox::EventType, 64))
                    .col(text(EventOutbox::Payload))
                    .col(string_len(EventOutbox::Status, 16))
                    .col(integer(EventOutbox::Attempts).default(0))
                    .col(big_integer(EventOutbox::NextAttemptAt))
                    .col(string_len_null(EventOutbox::LeaseOwner, 128))
                    .col(big_integer_null(EventOutbox::LeaseUntil))
                    .col(text_null(EventOutbox::LastError))
                    .col(big_integer(EventOutbox::CreatedAt))
                    .col(big_integer_null(EventOutbox::PublishedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_event_outbox_status_next")
                    .table(EventOutbox::Table)
                    .col(EventOutbox::Status)
                    .col(EventOutbox::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_event_outbox_account_seq")
                    .table(EventOutbox::Table)
                    .col(EventOutbox::AccountId)
                    .col(EventOutbox::Seq)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(EventOutbox::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum EventOutbox {
    #[sea_orm(iden = "event_outbox")]
    Table,
    Seq,
    EventId,
    AccountId,
    EventType,
    Payload,
    Status,
    Attempts,
    NextAttemptAt,
    LeaseOwner,
    LeaseUntil,
    LastError,
    CreatedAt,
    PublishedAt,
}
