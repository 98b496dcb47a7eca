//! `assisted_flows`: one row per BeginAssistedRecovery.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "assisted_flows")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub assisted_flow_id: String,
    pub family_id: String,
    pub member_account_id: String,
    pub organizer_account_id: String,
    pub member_generation: i64,
    pub email_code_mac: String,
    pub mac_key_id: String,
    pub email_attempts: i32,
    pub verified_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    pub ended_by: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub client_ip: Option<String>,
    pub client_user_agent: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
