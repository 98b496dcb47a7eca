//! `audit_events`: the audit trail, paged newest first by `seq`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub seq: i64,
    #[sea_orm(unique)]
    pub event_id: String,
    pub account_id: String,
    pub kind: String,
    pub occurred_at: i64,
    pub client_ip: Option<String>,
    pub client_user_agent: Option<String>,
    pub details: String,
    /// The server key that made `chain_hash`; `None` on rows from before the chain.
    pub chain_key_id: Option<String>,
    /// `HMAC(key, previous chain_hash || canonical event)`, hex.
    pub chain_hash: Option<String>,
    /// The event's personal details (client IP address and user agent, personal details),
    /// sealed under the account's data key: `<data key id>.<sealed>`. `None` on rows written
    /// in clear (before forgetting existed, or without a sealer).
    pub sealed: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
