//! The initial schema: enrollments, flows, lockout failures, rate-limit buckets, the
//! notification outbox and the audit trail.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One row per account that ever had a recovery code. Revoking keeps the row (code
        // columns cleared, generation bumped) so that generations never repeat.
        manager
            .create_table(
                Table::create()
                    .table(Enrollments::Table)
                    .col(string_len(Enrollments::AccountId, 128).primary_key())
                    .col(text(Enrollments::Email))
                    .col(text_null(Enrollments::EmailLookup))
                    .col(string_len_null(Enrollments::CodeId, 64))
                    .col(text_null(Enrollments::CodeHash))
                    .col(string_len_null(Enrollments::HashKeyId, 64))
                    .col(string_len_null(Enrollments::HashParams, 128))
                    .col(big_integer(Enrollments::Generation).default(0))
                    .col(big_integer(Enrollments::CreatedAt))
                    .col(big_integer_null(Enrollments::CodeCreatedAt))
                    .col(big_integer(Enrollments::UpdatedAt))
                    .col(big_integer_null(Enrollments::LastUsedAt))
                    .col(big_integer(Enrollments::UseCount).default(0))
                    .col(big_integer_null(Enrollments::LockedUntil))
                    .col(big_integer_null(Enrollments::RevokedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_enrollments_email_lookup")
                    .table(Enrollments::Table)
                    .col(Enrollments::EmailLookup)
                    .unique()
                    .to_owned(),
            )
            .await?;

        // One row per BeginRecovery, for known and unknown emails alike.
        manager
            .create_table(
                Table::create()
                    .table(Flows::Table)
                    .col(string_len(Flows::FlowId, 64).primary_key())
                    .col(text(Flows::EmailLookup))
                    .col(string_len_null(Flows::AccountId, 128))
                    .col(big_integer_null(Flows::Generation))
                    .col(string_len(Flows::EmailCodeMac, 128))
                    .col(string_len(Flows::MacKeyId, 64))
                    .col(big_integer(Flows::EmailCodeExpiresAt))
                    .col(integer(Flows::EmailAttempts).default(0))
                    .col(integer(Flows::RecoveryAttempts).default(0))
                    .col(big_integer_null(Flows::VerifiedAt))
                    .col(big_integer_null(Flows::CompletedAt))
                    .col(big_integer(Flows::CreatedAt))
                    .col(big_integer(Flows::ExpiresAt))
                    .col(string_len_null(Flows::ClientIp, 64))
                    .col(text_null(Flows::ClientUserAgent))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_flows_expires_at")
                    .table(Flows::Table)
                    .col(Flows::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_flows_account_id")
                    .table(Flows::Table)
                    .col(Flows::AccountId)
                    .to_owned(),
            )
            .await?;

        // One row per failed recovery-code submission, for the sliding lockout window.
        manager
            .create_table(
                Table::create()
                    .table(Failures::Table)
                    .col(big_integer(Failures::Id).auto_increment().primary_key())
                    .col(string_len(Failures::AccountId, 128))
                    .col(string_len(Failures::FlowId, 64))
                    .col(big_integer(Failures::FailedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_failures_account_failed_at")
                    .table(Failures::Table)
                    .col(Failures::AccountId)
                    .col(Failures::FailedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_failures_failed_at")
                    .table(Failures::Table)
                    .col(Failures::FailedAt)
                    .to_owned(),
            )
            .await?;

        // Fixed-window counters keyed by a canonical key such as `email:<canonical>`.
        manager
            .create_table(
                Table::create()
                    .table(RateLimits::Table)
                    .col(string_len(RateLimits::BucketKey, 320))
                    .col(big_integer(RateLimits::WindowStart))
                    .col(big_integer(RateLimits::Count))
                    .col(big_integer(RateLimits::ExpiresAt))
                    .primary_key(
                        Index::create()
                            .col(RateLimits::BucketKey)
                            .col(RateLimits::WindowStart),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_rate_limits_expires_at")
                    .table(RateLimits::Table)
                    .col(RateLimits::ExpiresAt)
                    .to_owned(),
            )
            .await?;

        // Notifications written in the same transaction as the change that caused them.
        // `payload` is sealed (authenticated encryption under the server key): a
        // verification message carries a one-time code.
        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .col(big_integer(Outbox::Id).auto_increment().primary_key())
                    .col(string_len(Outbox::MessageId, 64).unique_key())
                    .col(string_len(Outbox::Kind, 64))
                    .col(string_len_null(Outbox::AccountId, 128))
                    .col(text(Outbox::Recipient))
                    .col(text(Outbox::Payload))
                    .col(string_len(Outbox::Status, 16))
                    .col(integer(Outbox::Attempts).default(0))
                    .col(big_integer(Outbox::NextAttemptAt))
                    .col(string_len_null(Outbox::LeaseOwner, 64))
                    .col(big_integer_null(Outbox::LeaseUntil))
                    .col(text_null(Outbox::LastError))
                    .col(big_integer(Outbox::CreatedAt))
                    .col(big_integer_null(Outbox::SentAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_outbox_status_next_attempt")
                    .table(Outbox::Table)
                    .col(Outbox::Status)
                    .col(Outbox::NextAttemptAt)
                    .to_owned(),
            )
            .await?;

        // The audit trail, paged newest first by `seq`.
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(big_integer(AuditEvents::Seq).auto_increment().primary_key())
                    .col(string_len(AuditEvents::EventId, 64).unique_key())
                    .col(string_len(AuditEvents::AccountId, 128))
                    .col(string_len(AuditEvents::Kind, 64))
                    .col(big_integer(AuditEvents::OccurredAt))
                    .col(string_len_null(AuditEvents::ClientIp, 64))
                    .col(text_null(AuditEvents::ClientUserAgent))
                    .col(text(AuditEvents::Details))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_audit_events_account_seq")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::AccountId)
                    .col(AuditEvents::Seq)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditEvents::Table.into_iden(),
            Outbox::Table.into_iden(),
            RateLimits::Table.into_iden(),
            Failures::Table.into_iden(),
            Flows::Table.into_iden(),
            Enrollments::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Enrollments {
    #[sea_orm(iden = "recovery_enrollments")]
    Table,
    AccountId,
    Email,
    EmailLookup,
    CodeId,
    CodeHash,
    HashKeyId,
    HashParams,
    Generation,
    CreatedAt,
    CodeCreatedAt,
    UpdatedAt,
    LastUsedAt,
    UseCount,
    LockedUntil,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Flows {
    #[sea_orm(iden = "recovery_flows")]
    Table,
    FlowId,
    EmailLookup,
    AccountId,
    Generation,
    EmailCodeMac,
    MacKeyId,
    EmailCodeExpiresAt,
    EmailAttempts,
    RecoveryAttempts,
    VerifiedAt,
    CompletedAt,
    CreatedAt,
    ExpiresAt,
    ClientIp,
    ClientUserAgent,
}

#[derive(DeriveIden)]
enum Failures {
    #[sea_orm(iden = "recovery_failures")]
    Table,
    Id,
    AccountId,
    FlowId,
    FailedAt,
}

#[derive(DeriveIden)]
enum RateLimits {
    #[sea_orm(iden = "rate_limit_buckets")]
    Table,
    BucketKey,
    WindowStart,
    Count,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum Outbox {
    #[sea_orm(iden = "notification_outbox")]
    Table,
    Id,
    MessageId,
    Kind,
    AccountId,
    Recipient,
    Payload,
    Status,
    Attempts,
    NextAttemptAt,
    LeaseOwner,
    LeaseUntil,
    LastError,
    CreatedAt,
    SentAt,
}

#[derive(DeriveIden)]
enum AuditEvents {
    #[sea_orm(iden = "audit_events")]
    Table,
    Seq,
    EventId,
    AccountId,
    Kind,
    OccurredAt,
    ClientIp,
    ClientUserAgent,
    Details,
}
