//! The personal details of audit events (client IP address and user agent, address hints,
//! free-text reasons), sealed under a data key of their account alone so that forgetting the
//! account (deleting its keys) makes them unreadable in every copy of the database made after
//! the key ring that wrapped them is retired, while the chain, which covers the ciphertext,
//! still verifies. The service seals and opens ([`PersonalDataKeys`], over its key ring); this
//! crate keeps the wrapped keys (`account_data_keys`) and the ciphertexts
//! (`audit_events.sealed`, `<data key id>.<sealed>`).

use std::{collections::BTreeMap, fmt};

use sea_orm::{
    ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _,
};
use serde::{Deserialize, Serialize};

use crate::{StorageError, entity::account_data_key as key, model::ClientInfo};

/// Wraps data keys and seals with them; the service implements it over its key ring. A key is
/// wrapped bound to its account and id, and a seal bound to its account and row, so a key or
/// a ciphertext moved to another account or row does not open. Nothing of a key or a
/// plaintext appears in its errors.
pub trait PersonalDataKeys: Send + Sync + fmt::Debug {
    /// A new data key of `account_id`: its id and the key wrapped for storage.
    fn new_key(&self, account_id: &str) -> Result<(String, String), String>;
    /// Whether the wrapped key is wrapped under the current ring key; else wrapped again
    /// under it, or lost (the ring key that wrapped it is not in this replica's ring).
    fn check(&self, account_id: &str, key_id: &str, wrapped: &str) -> KeyState;
    /// `plaintext` sealed under the data key `key` (its id and wrapped form), bound to
    /// `bound_to`.
    fn seal(
        &self,
        account_id: &str,
        key: (&str, &str),
        bound_to: &str,
        plaintext: &[u8],
    ) -> Result<String, String>;
    /// What [`Self::seal`] sealed; `None` when the key cannot be unwrapped (its ring key is
    /// gone) or the ciphertext does not open.
    fn open(
        &self,
        account_id: &str,
        key: (&str, &str),
        bound_to: &str,
        sealed: &str,
    ) -> Option<Vec<u8>>;
    /// Whether detail `name` of an event of `kind` written in clear (before personal details
    /// were sealed) is personal: such details are sealed when the row is.
    fn personal_detail(&self, kind: &str, name: &str) -> bool;
}

/// What [`PersonalDataKeys::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// Wrapped under the current ring key.
    Current,
    /// Wrapped under an older ring key still in the ring: this is it wrapped under the
    /// current one (stored in its place, as hashes are upgraded on use).
    Rewrapped(String),
    /// Its ring key is not in this replica's ring: new details go under a new key, and this
    /// one stays (another replica, or a restored ring, may still open what it sealed).
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

impl fmt::Debug for Personal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Personal(<redacted>)")
    }
}

impl Personal {
    pub(crate) fn is_empty(&self) -> bool {
        self.ip.is_none() && self.ua.is_none() && self.details.is_empty()
    }
}

/// What a row of `account_id` is sealed bound to.
fn bound(account_id: &str, event_id: &str) -> String {
    format!("{account_id}\n{event_id}")
}

/// `personal` sealed under the account's current data key (made when it has none, or when
/// the current one's ring key is not in the ring), bound to the account and the event:
/// `<key id>.<sealed>`. The caller holds the account's write serialisation (advisory lock on
/// PostgreSQL, the writer on SQLite).
pub(crate) async fn seal<C: ConnectionTrait>(
    db: &C,
    keys: &dyn PersonalDataKeys,
    account_id: &str,
    event_id: &str,
    personal: &Personal,
    now: i64,
) -> Result<String, StorageError> {
    let newest = account_keys(db, account_id).await?.into_iter().next();
    let current = match newest {
        Some((key_id, wrapped)) => match keys.check(account_id, &key_id, &wrapped) {
            KeyState::Current => Some((key_id, wrapped)),
            KeyState::Rewrapped(rewrapped) => {
                key::Entity::update_many()
                    .col_expr(
                        key::Column::Wrapped,
                        sea_orm::sea_query::Expr::value(rewrapped.clone()),
                    )
                    .filter(key::Column::KeyId.eq(key_id.as_str()))
                    .exec(db)
                    .await?;
                Some((key_id, rewrapped))
            }
            KeyState::Lost => {
                tracing::error!(
                    account_id,
                    key_id = %key_id,
                    "an account's data key was wrapped under a ring key this replica does not \
                     have: new details go under a new key; put the ring key back to read the \
                     older ones"
                );
                None
            }
        },
        None => None,
    };
    let (key_id, wrapped) = match current {
        Some(current) => current,
        None => new_key(db, keys, account_id, now).await?,
    };
    let plaintext = zeroize::Zeroizing::new(
        serde_json::to_vec(personal)
            .map_err(|e| StorageError::Other(format!("personal details: {e}")))?,
    );
    let bound_to = bound(account_id, event_id);
    match keys.seal(account_id, (&key_id, &wrapped), &bound_to, &plaintext) {
        Ok(sealed) => Ok(format!("{key_id}.{sealed}")),
        Err(why) => {
            // A stored key that does not unwrap (damaged) must not stop every change of the
            // account: a new key takes over, and the old one stays for inspection.
            tracing::error!(account_id, key_id = %key_id, error = %why, "an account's data key does not unwrap: a new one takes over");
            let (key_id, wrapped) = new_key(db, keys, account_id, now).await?;
            let sealed = keys
                .seal(account_id, (&key_id, &wrapped), &bound_to, &plaintext)
                .map_err(StorageError::Other)?;
            Ok(format!("{key_id}.{sealed}"))
        }
    }
}

/// A new data key of the account, stored: its id and wrapped form.
async fn new_key<C: ConnectionTrait>(
    db: &C,
    keys: &dyn PersonalDataKeys,
    account_id: &str,
    now: i64,
) -> Result<(String, String), StorageError> {
    let (key_id, wrapped) = keys.new_key(account_id).map_err(StorageError::Other)?;
    key::Entity::insert(key::ActiveModel {
        key_id: Set(key_id.clone()),
        account_id: Set(account_id.to_owned()),
        wrapped: Set(wrapped.clone()),
        created_at: Set(now),
    })
    .exec(db)
    .await?;
    Ok((key_id, wrapped))
}

/// The account's data keys, newest first: `(key id, wrapped)`. None once forgotten.
pub(crate) async fn account_keys<C: ConnectionTrait>(
    db: &C,
    account_id: &str,
) -> Result<Vec<(String, String)>, StorageError> {
    Ok(key::Entity::find()
        .filter(key::Column::AccountId.eq(account_id))
        .order_by_desc(key::Column::CreatedAt)
        .order_by_desc(key::Column::KeyId)
        .all(db)
        .await?
        .into_iter()
        .map(|k| (k.key_id, k.wrapped))
        .collect())
}

/// Opens a row's `sealed` column with the account's data keys: its client and personal
/// details, or `None` when the key it names is gone or cannot open it.
pub(crate) fn open(
    sealer: &dyn PersonalDataKeys,
    keys: &[(String, String)],
    account_id: &str,
    event_id: &str,
    sealed: &str,
) -> Option<(ClientInfo, BTreeMap<String, String>)> {
    let (key_id, body) = sealed.split_once('.')?;
    let (_, wrapped) = keys.iter().find(|(id, _)| id == key_id)?;
    let plaintext = zeroize::Zeroizing::new(sealer.open(
        account_id,
        (key_id, wrapped),
        &bound(account_id, event_id),
        body,
    )?);
    let personal: Personal = serde_json::from_slice(&plaintext).ok()?;
    Some((
        ClientInfo {
            ip: personal.ip,
            user_agent: personal.ua,
        },
        personal.details,
    ))
}
