//! `contact_vouches`: a contact's submissions on a contact flow, and its vouch.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "contact_vouches")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub contact_flow_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub contact_account_id: String,
    pub owner_account_id: String,
    pub attempts: i32,
    pub vouched_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
