//! `recovery_enrollments`: one row per account that ever had a recovery code.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "recovery_enrollments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub account_id: String,
    pub email: String,
    pub email_lookup: Option<String>,
    pub code_id: Option<String>,
    /// The verifier: an argon2id PHC string, or (zero-knowledge) the OPAQUE registration
    /// record in base64; `hash_params` says which.
    pub code_hash: Option<String>,
    pub hash_key_id: Option<String>,
    pub hash_params: Option<String>,
    pub generation: i64,
    pub created_at: i64,
    pub code_created_at: Option<i64>,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
    pub use_count: i64,
    pub locked_until: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Zero-knowledge only: the keyset sealed on the device under OPAQUE's export key (base64).
    pub sealed_keyset: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
