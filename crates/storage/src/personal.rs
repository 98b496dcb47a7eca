//! The personal details of audit events (client IP address and user agent, address hints,
//! free-text reasons), sealed under a data key of their account alone so that forgetting the
//! account (destroying the key) makes them unreadable in every copy of the database, while the
//! chain, which covers the ciphertext, still verifies. The service seals and opens
//! ([`PersonalDataKeys`], over its key ring); this crate keeps the wrapped keys
//! (`account_data_keys`) and the ciphertexts (`audit_events.sealed`).

use std::{collections::BTreeMap, fmt};

use sea_orm::{
    ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    sea_query::Expr,
};
use serde::{Deserialize, Serialize};

use crate::{StorageError, entity::account_data_key as key, model::ClientInfo};

/// Wraps data keys and seals with them; the service implements it over its key ring. Nothing
/// of a key or a plaintext appears in its errors.
pub trait PersonalDataKeys: Send + Sync + fmt::Debug {
    /// A new data key: its id and the key wrapped for storage.
    fn new_key(&self) -> Result<(String, String), String>;
    /// Whether the wrapped key `key_id` is wrapped under the current ring key; else wrapped
    /// again under it, or lost (its ring key left the ring).
    fn check(&self, key_id: &str, wrapped: &str) -> KeyState;
    /// `plaintext` sealed under the wrapped data key `key_id`, bound to `bound_to`.
    fn seal(
        &self,
        key_id: &str,
        wrapped: &str,
        bound_to: &str,
        plaintext: &[u8],
    ) -> Result<String, String>;
    /// What [`Self::seal`] sealed; `None` when the key cannot be unwrapped (its ring key is
    /// gone) or the ciphertext does not open.
    fn open(&self, key_id: &str, wrapped: &str, bound_to: &str, sealed: &str) -> Option<Vec<u8>>;
}

/// What [`PersonalDataKeys::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// Wrapped under the current ring key.
    Current,
    /// Wrapped under an older ring key still in the ring: this is it wrapped under the
    /// current one (stored in its place, as hashes are upgraded on use).
    Rewrapped(String),
    /// Its ring key left the ring: what it sealed can no longer be read, and new details
    /// go under a new key.
    Lost,
}

/// What a sealed audit row holds.
#[derive(Serialize, Deserialize, Default)]
pub(crate) struct Personal {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ua: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

impl Personal {
    pub(crate) fn is_empty(&self) -> bool {
        self.ip.is_none() && self.ua.is_none() && self.details.is_empty()
    }
}

/// `personal` sealed under the account's live data key (made when it has none), bound to the
/// event: `<key id>.<sealed>`. The caller holds the account's write serialisation (advisory
/// lock on PostgreSQL, the writer on SQLite), so at most one live key is ever made.
pub(crate) async fn seal<C: ConnectionTrait>(
    db: &C,
    keys: &dyn PersonalDataKeys,
    account_id: &str,
    event_id: &str,
    personal: &Personal,
    now: i64,
) -> Result<String, StorageError> {
    let live = super::ops::by_key(
        key::Entity::find().filter(key::Column::AccountId.eq(account_id)),
        db,
    )
    .await?;
    let (key_id, wrapped) = match live {
        Some(live) => match keys.check(&live.key_id, &live.wrapped) {
            KeyState::Current => (live.key_id, live.wrapped),
            KeyState::Rewrapped(wrapped) => {
                key::Entity::update_many()
                    .col_expr(key::Column::Wrapped, Expr::value(wrapped.clone()))
                    .filter(key::Column::KeyId.eq(live.key_id.as_str()))
                    .exec(db)
                    .await?;
                (live.key_id, wrapped)
            }
            KeyState::Lost => {
                tracing::warn!(
                    key_id = %live.key_id,
                    "an account's data key was wrapped under a ring key that left the ring: \
                     a new one replaces it (the details it sealed cannot be read)"
                );
                let (key_id, wrapped) = keys.new_key().map_err(StorageError::Other)?;
                key::Entity::update_many()
                    .col_expr(key::Column::KeyId, Expr::value(key_id.clone()))
                    .col_expr(key::Column::Wrapped, Expr::value(wrapped.clone()))
                    .col_expr(key::Column::CreatedAt, Expr::value(now))
                    .filter(key::Column::KeyId.eq(live.key_id.as_str()))
                    .exec(db)
                    .await?;
                (key_id, wrapped)
            }
        },
        None => {
            let (key_id, wrapped) = keys.new_key().map_err(StorageError::Other)?;
            key::Entity::insert(key::ActiveModel {
                key_id: Set(key_id.clone()),
                account_id: Set(account_id.to_owned()),
                wrapped: Set(wrapped.clone()),
                created_at: Set(now),
            })
            .exec(db)
            .await?;
            (key_id, wrapped)
        }
    };
    let plaintext = serde_json::to_vec(personal)
        .map_err(|e| StorageError::Other(format!("personal details: {e}")))?;
    let sealed = keys
        .seal(&key_id, &wrapped, event_id, &plaintext)
        .map_err(StorageError::Other)?;
    Ok(format!("{key_id}.{sealed}"))
}

/// The account's data key (for opening a page of its rows), if it has one: none once
/// forgotten.
pub(crate) async fn account_key<C: ConnectionTrait>(
    db: &C,
    account_id: &str,
) -> Result<Option<(String, String)>, StorageError> {
    Ok(super::ops::by_key(
        key::Entity::find().filter(key::Column::AccountId.eq(account_id)),
        db,
    )
    .await?
    .map(|k| (k.key_id, k.wrapped)))
}

/// The data key id a row's `sealed` column names.
pub(crate) fn key_of(sealed: &str) -> &str {
    sealed.split_once('.').map_or("", |(key_id, _)| key_id)
}

/// Opens a row's `sealed` column with the account's data key (`key_id`, `wrapped`): its
/// client and personal details, or `None` when it was sealed under another key (destroyed:
/// the account was forgotten) or does not open.
pub(crate) fn open(
    sealer: &dyn PersonalDataKeys,
    (key_id, wrapped): (&str, &str),
    event_id: &str,
    sealed: &str,
) -> Option<(ClientInfo, BTreeMap<String, String>)> {
    let (sealed_under, body) = sealed.split_once('.')?;
    if sealed_under != key_id {
        return None;
    }
    let plaintext = sealer.open(key_id, wrapped, event_id, body)?;
    let personal: Personal = serde_json::from_slice(&plaintext).ok()?;
    Some((
        ClientInfo {
            ip: personal.ip,
            user_agent: personal.ua,
        },
        personal.details,
    ))
}
