//! `recovery_contacts`: one row per owner and contact (invited, waiting or active).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "recovery_contacts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub owner_account_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub contact_account_id: String,
    pub contact_email: String,
    pub invited_at: i64,
    pub expires_at: i64,
    pub accepted_at: Option<i64>,
    pub active_from: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
