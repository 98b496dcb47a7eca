//! Families (organizer-assisted recovery): the membership the platform's account service
//! mirrors here, and the assisted-recovery flows an organizer starts for a member.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One row per account in a family: an account is in at most one (the primary key).
        // `generation` is bumped by every put, so a flow started against an earlier
        // membership can tell.
        manager
            .create_table(
                Table::create()
                    .table(FamilyMembers::Table)
                    .col(string_len(FamilyMembers::AccountId, 128).primary_key())
                    .col(string_len(FamilyMembers::FamilyId, 128))
                    .col(string_len(FamilyMembers::Role, 16))
                    .col(text(FamilyMembers::Email))
                    .col(big_integer(FamilyMembers::Generation).default(1))
                    .col(big_integer(FamilyMembers::CreatedAt))
                    .col(big_integer(FamilyMembers::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_family_members_family_id")
                    .table(FamilyMembers::Table)
                    .col(FamilyMembers::FamilyId)
                    .to_owned(),
            )
            .await?;

        // One row per BeginAssistedRecovery. `ended_at` is set once, by one conditional
        // update, with `end_reason` (completed, cancelled, superseded, member_recovered,
        // membership_changed).
        manager
            .create_table(
                Table::create()
                    .table(AssistedFlows::Table)
                    .col(string_len(AssistedFlows::AssistedFlowId, 64).primary_key())
                    .col(string_len(AssistedFlows::FamilyId, 128))
                    .col(string_len(AssistedFlows::MemberAccountId, 128))
                    .col(string_len(AssistedFlows::OrganizerAccountId, 128))
                    .col(big_integer(AssistedFlows::MemberGeneration))
                    .col(string_len(AssistedFlows::EmailCodeMac, 128))
                    .col(string_len(AssistedFlows::MacKeyId, 64))
                    .col(integer(AssistedFlows::EmailAttempts).default(0))
                    .col(big_integer_null(AssistedFlows::VerifiedAt))
                    .col(big_integer_null(AssistedFlows::EndedAt))
                    .col(string_len_null(AssistedFlows::EndReason, 32))
                    .col(string_len_null(AssistedFlows::EndedBy, 128))
                    .col(big_integer(AssistedFlows::CreatedAt))
                    .col(big_integer(AssistedFlows::ExpiresAt))
                    .col(string_len_null(AssistedFlows::ClientIp, 64))
                    .col(text_null(AssistedFlows::ClientUserAgent))
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            (
                "ix_assisted_flows_member_created",
                AssistedFlows::MemberAccountId,
            ),
            (
                "ix_assisted_flows_organizer_created",
                AssistedFlows::OrganizerAccountId,
            ),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(AssistedFlows::Table)
                        .col(column)
                        .col(AssistedFlows::CreatedAt)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("ix_assisted_flows_created_at")
                    .table(AssistedFlows::Table)
                    .col(AssistedFlows::CreatedAt)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AssistedFlows::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(FamilyMembers::Table).to_owned())
            .await?;
        Ok(())
    }
}

#[derive(DeriveIden)]
enum FamilyMembers {
    #[sea_orm(iden = "family_members")]
    Table,
    AccountId,
    FamilyId,
    Role,
    Email,
    Generation,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum AssistedFlows {
    #[sea_orm(iden = "assisted_flows")]
    Table,
    AssistedFlowId,
    FamilyId,
    MemberAccountId,
    OrganizerAccountId,
    MemberGeneration,
    EmailCodeMac,
    MacKeyId,
    EmailAttempts,
    VerifiedAt,
    EndedAt,
    EndReason,
    EndedBy,
    CreatedAt,
    ExpiresAt,
    ClientIp,
    ClientUserAgent,
}
