//! `contact_flows`: one row per BeginContactRecovery.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "contact_flows")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub contact_flow_id: String,
    pub account_id: Option<String>,
    pub email_lookup: String,
    pub code_mac: String,
    pub mac_key_id: String,
    pub threshold: i32,
    pub created_at: i64,
    pub expires_at: i64,
    pub completes_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    pub ended_by: Option<String>,
    pub client_ip: Option<String>,
    pub client_user_agent: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
