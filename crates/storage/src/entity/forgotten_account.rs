//! `forgotten_accounts`: the accounts ForgetAccount removed, and when (a repeated forget
//! answers that time and changes nothing).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "forgotten_accounts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub account_id: String,
    pub forgotten_at: i64,
    /// The `seq` of its `ACCOUNT_FORGOTTEN` event: every event up to it is forgotten.
    pub through_seq: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
