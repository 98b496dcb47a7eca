//! `recovery_flows`: one row per BeginRecovery, for known and unknown emails alike.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "recovery_flows")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub flow_id: String,
    pub email_lookup: String,
    pub account_id: Option<String>,
    pub generation: Option<i64>,
    pub email_code_mac: String,
    pub mac_key_id: String,
    pub email_code_expires_at: i64,
    pub email_attempts: i32,
    pub recovery_attempts: i32,
    pub verified_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub created_at: i64,
    pub expires_at: i64,
    pub client_ip: Option<String>,
    pub client_user_agent: Option<String>,
    /// The server's sealed OPAQUE login state between StartZeroKnowledgeRecovery and its finish.
    pub zk_login_state: Option<String>,
    /// The login state a newer start replaced (a right finish of it is not a wrong code).
    pub zk_previous_login_state: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
