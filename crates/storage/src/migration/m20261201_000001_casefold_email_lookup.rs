//! Moves every enrollment's `email_lookup` to the case-folded canonical form: the whole
//! address, local part included, is case-folded (Unicode default case folding, then NFC), so
//! `Ann@example.com` and `ann@example.com` are one address for lookup and uniqueness. Mail
//! still goes to `email`, the address as stored.
//!
//! The stored lookup was `NFC(local)@ascii-domain`; folding it whole gives the new form
//! exactly (the IDNA domain is ASCII lower case already), which is what the service's
//! `domain::email::fold` computes for new addresses.
//!
//! Two enrollments whose addresses differ only in case would now collide on the unique index.
//! Rows already in folded form keep their value; of the others, the most recently updated
//! takes the folded form and the rest keep their old lookup (so no data is lost), with a
//! warning naming the accounts: each such account must set its recovery email again.

use std::collections::HashSet;

use sea_orm::{ConnectionTrait as _, Statement, Value};
use sea_orm_migration::prelude::*;
use unicode_normalization::UnicodeNormalization as _;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The folding step of the canonical form (see the module comment).
pub fn fold(lookup: &str) -> String {
    caseless::default_case_fold_str(lookup).nfc().collect()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let backend = manager.get_database_backend();
        let rows = db
            .query_all_raw(Statement::from_string(
                backend,
                "SELECT account_id, email_lookup FROM recovery_enrollments \
                 WHERE email_lookup IS NOT NULL ORDER BY updated_at DESC, account_id",
            ))
            .await?;
        let mut rows = rows
            .iter()
            .map(|row| {
                Ok((
                    row.try_get::<String>("", "account_id")?,
                    row.try_get::<String>("", "email_lookup")?,
                ))
            })
            .collect::<Result<Vec<_>, DbErr>>()?;
        // Rows already in folded form hold their value; the others claim theirs, newest first.
        let mut taken: HashSet<String> = rows
            .iter()
            .filter(|(_, lookup)| fold(lookup) == *lookup)
            .map(|(_, lookup)| lookup.clone())
            .collect();
        rows.retain(|(_, lookup)| fold(lookup) != *lookup);
        let mut collisions = Vec::new();
        let update = match backend {
            sea_orm::DatabaseBackend::Postgres => {
                "UPDATE recovery_enrollments SET email_lookup = $1 WHERE account_id = $2"
            }
            _ => "UPDATE recovery_enrollments SET email_lookup = ? WHERE account_id = ?",
        };
        for (account_id, lookup) in rows {
            let folded = fold(&lookup);
            if !taken.insert(folded.clone()) {
                collisions.push(account_id);
                continue;
            }
            db.execute_raw(Statement::from_sql_and_values(
                backend,
                update,
                [Value::from(folded), Value::from(account_id)],
            ))
            .await?;
        }
        if !collisions.is_empty() {
            tracing::warn!(
                accounts = ?collisions,
                "recovery email addresses that differ only in case from another account's were left as they were; these accounts must set their recovery email again"
            );
        }
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // The original case is not recoverable from the folded form; lookups stay folded.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::fold;

    #[test]
    fn folding_is_whole_address_and_idempotent() {
        assert_eq!(fold("Ann@example.com"), "ann@example.com");
        assert_eq!(fold("Straße@example.com"), "strasse@example.com");
        assert_eq!(fold("İpek@example.com"), "i\u{307}pek@example.com");
        for s in ["Ann@example.com", "ÉLISE@xn--bcher-kva.example"] {
            assert_eq!(fold(&fold(s)), fold(s));
        }
    }
}
