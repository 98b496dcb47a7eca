//! Recovery contacts: the people an owner trusts (`recovery_contacts`, one row per owner and
//! contact), the owner's threshold (`recovery_contact_settings`), the contact recoveries
//! (`contact_flows`, one row per BeginContactRecovery) and each contact's submissions and vouch
//! on a flow (`contact_vouches`).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Invited: `accepted_at` NULL (until `expires_at`); waiting: accepted, `active_from`
        // ahead; active: `active_from` passed.
        manager
            .create_table(
                Table::create()
                    .table(RecoveryContacts::Table)
                    .col(string_len(RecoveryContacts::OwnerAccountId, 128))
                    .col(string_len(RecoveryContacts::ContactAccountId, 128))
                    .col(text(RecoveryContacts::ContactEmail))
                    .col(big_integer(RecoveryContacts::InvitedAt))
                    .col(big_integer(RecoveryContacts::ExpiresAt))
                    .col(big_integer_null(RecoveryContacts::AcceptedAt))
                    .col(big_integer_null(RecoveryContacts::ActiveFrom))
                    .primary_key(
                        Index::create()
                            .col(RecoveryContacts::OwnerAccountId)
                            .col(RecoveryContacts::ContactAccountId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_recovery_contacts_contact")
                    .table(RecoveryContacts::Table)
                    .col(RecoveryContacts::ContactAccountId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RecoveryContactSettings::Table)
                    .col(string_len(RecoveryContactSettings::AccountId, 128).primary_key())
                    .col(integer(RecoveryContactSettings::Threshold))
                    .col(big_integer(RecoveryContactSettings::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        // `account_id` NULL: a flow for an address no account recovers with (it never
        // completes). `threshold`: the owner's at the begin, raised (never lowered) while open.
        // `completes_at` is set once the vouches meet it; `ended_at` (cancelled, recovered by
        // another path) and `completed_at` each once, by one conditional update.
        manager
            .create_table(
                Table::create()
                    .table(ContactFlows::Table)
                    .col(string_len(ContactFlows::ContactFlowId, 64).primary_key())
                    .col(string_len_null(ContactFlows::AccountId, 128))
                    .col(string_len(ContactFlows::EmailLookup, 128))
                    .col(string_len(ContactFlows::CodeMac, 128))
                    .col(string_len(ContactFlows::MacKeyId, 64))
                    .col(integer(ContactFlows::Threshold))
                    .col(big_integer(ContactFlows::CreatedAt))
                    .col(big_integer(ContactFlows::ExpiresAt))
                    .col(big_integer_null(ContactFlows::CompletesAt))
                    .col(big_integer_null(ContactFlows::CompletedAt))
                    .col(big_integer_null(ContactFlows::EndedAt))
                    .col(string_len_null(ContactFlows::EndReason, 32))
                    .col(string_len_null(ContactFlows::EndedBy, 128))
                    .col(string_len_null(ContactFlows::ClientIp, 64))
                    .col(text_null(ContactFlows::ClientUserAgent))
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("ix_contact_flows_account_created", ContactFlows::AccountId),
            ("ix_contact_flows_lookup_created", ContactFlows::EmailLookup),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(ContactFlows::Table)
                        .col(column)
                        .col(ContactFlows::CreatedAt)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("ix_contact_flows_created_at")
                    .table(ContactFlows::Table)
                    .col(ContactFlows::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ContactVouches::Table)
                    .col(string_len(ContactVouches::ContactFlowId, 64))
                    .col(string_len(ContactVouches::ContactAccountId, 128))
                    .col(string_len(ContactVouches::OwnerAccountId, 128))
                    .col(integer(ContactVouches::Attempts).default(0))
                    .col(big_integer_null(ContactVouches::VouchedAt))
                    .primary_key(
                        Index::create()
                            .col(ContactVouches::ContactFlowId)
                            .col(ContactVouches::ContactAccountId),
                    )
                    .to_owned(),
            )
            .await?;
        // The cooldown: a contact's vouches for one owner, newest last.
        manager
            .create_index(
                Index::create()
                    .name("ix_contact_vouches_contact_owner")
                    .table(ContactVouches::Table)
                    .col(ContactVouches::ContactAccountId)
                    .col(ContactVouches::OwnerAccountId)
                    .col(ContactVouches::VouchedAt)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ContactVouches::Table.into_iden(),
            ContactFlows::Table.into_iden(),
            RecoveryContactSettings::Table.into_iden(),
            RecoveryContacts::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum RecoveryContacts {
    Table,
    OwnerAccountId,
    ContactAccountId,
    ContactEmail,
    InvitedAt,
    ExpiresAt,
    AcceptedAt,
    ActiveFrom,
}

#[derive(DeriveIden)]
enum RecoveryContactSettings {
    Table,
    AccountId,
    Threshold,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ContactFlows {
    Table,
    ContactFlowId,
    AccountId,
    EmailLookup,
    CodeMac,
    MacKeyId,
    Threshold,
    CreatedAt,
    ExpiresAt,
    CompletesAt,
    CompletedAt,
    EndedAt,
    EndReason,
    EndedBy,
    ClientIp,
    ClientUserAgent,
}

#[derive(DeriveIden)]
enum ContactVouches {
    Table,
    ContactFlowId,
    ContactAccountId,
    OwnerAccountId,
    Attempts,
    VouchedAt,
}
