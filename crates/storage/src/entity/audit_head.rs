//! `audit_heads`: each account's audit chain anchored outside its rows: the newest row and a
//! verified checkpoint, each under a MAC.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_heads")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub account_id: String,
    /// The newest row's `seq` and link.
    pub head_seq: i64,
    pub head_link: String,
    pub key_id: String,
    /// Over the account, `head_seq` and `head_link`, under `key_id`.
    pub mac: String,
    /// The newest row a verification checked, its link, and a MAC over them.
    pub verified_seq: Option<i64>,
    pub verified_link: Option<String>,
    pub verified_key_id: Option<String>,
    pub verified_mac: Option<String>,
    /// Where a pruned trail begins: the last pruned row (`seq`), its link, and a MAC over
    /// them; `None` while nothing was pruned.
    pub base_seq: Option<i64>,
    pub base_link: Option<String>,
    pub base_key_id: Option<String>,
    pub base_mac: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
