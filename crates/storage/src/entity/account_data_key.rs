//! `account_data_keys`: each account's key for the personal details of its audit events,
//! wrapped by the service's key ring (the newest is current); deleted when the account is
//! forgotten.

use sea_orm::entity::prelude::*;

#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "account_data_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub key_id: String,
    pub account_id: String,
    /// The data key sealed by the service's key ring.
    pub wrapped: String,
    pub created_at: i64,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountDataKey")
            .field("key_id", &self.key_id)
            .field("account_id", &self.account_id)
            .field("wrapped", &"<redacted>")
            .field("created_at", &self.created_at)
            .finish()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
