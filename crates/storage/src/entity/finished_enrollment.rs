//! `finished_enrollments`: the enrolment (`code_id`, chosen by the service at the start and
//! sealed in the enrollment id) of each finished zero-knowledge enrollment id, kept until an
//! hour past the id's expiry, so a replayed finish changes nothing.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "finished_enrollments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub enrollment_key: String,
    pub expires_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
