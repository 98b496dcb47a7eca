//! `rate_limit_buckets`: fixed-window counters keyed by a canonical key.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "rate_limit_buckets")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub bucket_key: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub window_start: i64,
    pub count: i64,
    pub expires_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
