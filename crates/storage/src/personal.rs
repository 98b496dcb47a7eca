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
    /// What [`Self::seal`] sealed, for each `(bound_to, sealed)` of rows sealed under the
    /// data key `key` (a page: the key unwrapped once); `None` for a row when the key cannot
    /// be unwrapped (its ring key is gone) or the ciphertext does not open.
    fn open_all(
        &self,
        account_id: &str,
        key: (&str, &str),
        items: &[(String, &str)],
    ) -> Vec<Option<Vec<u8>>>;
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
    known: Option<Option<(String, String)>>,
) -> Result<String, StorageError> {
    // `known`: the newest key as the caller already read it under the same lock (`Some(None)`:
    // the account has none).
    let newest = match known {
        Some(newest) => newest,
        None => account_keys(db, account_id).await?.into_iter().next(),
    };
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

/// The account's data keys (newest first) and the `seq` its forgetting covers, if it was
/// forgotten: what a page of its trail needs, in one round trip.
pub(crate) async fn page_keys<C: ConnectionTrait>(
    db: &C,
    account_id: &str,
) -> Result<(Vec<(String, String)>, Option<i64>), StorageError> {
    let sql = match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => {
            "SELECT key_id, wrapped, created_at, NULL AS through_seq FROM account_data_keys \
             WHERE account_id = $1 UNION ALL SELECT NULL, NULL, NULL, through_seq \
             FROM forgotten_accounts WHERE account_id = $1"
        }
        _ => {
            "SELECT key_id, wrapped, created_at, NULL AS through_seq FROM account_data_keys \
             WHERE account_id = ?1 UNION ALL SELECT NULL, NULL, NULL, through_seq \
             FROM forgotten_accounts WHERE account_id = ?1"
        }
    };
    let rows = db
        .query_all_raw(sea_orm::Statement::from_sql_and_values(
            db.get_database_backend(),
            sql,
            [account_id.into()],
        ))
        .await?;
    let mut keys = Vec::new();
    let mut through = None;
    for row in rows {
        let key_id: Option<String> = row.try_get("", "key_id")?;
        let wrapped: Option<String> = row.try_get("", "wrapped")?;
        match (key_id, wrapped) {
            (Some(key_id), Some(wrapped)) => {
                let created_at: Option<i64> = row.try_get("", "created_at")?;
                keys.push((created_at.unwrap_or(0), key_id, wrapped));
            }
            _ => through = row.try_get::<Option<i64>>("", "through_seq")?,
        }
    }
    keys.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
    Ok((
        keys.into_iter()
            .map(|(_, id, wrapped)| (id, wrapped))
            .collect(),
        through,
    ))
}

/// What a page's sealed rows hold: for each `(event_id, sealed)`, its client and personal
/// details, or `None` when the key it names is gone or cannot open it. Each key is unwrapped
/// once per page.
pub(crate) fn open_page(
    sealer: &dyn PersonalDataKeys,
    keys: &[(String, String)],
    account_id: &str,
    rows: &[(&str, &str)],
) -> Vec<Option<(ClientInfo, BTreeMap<String, String>)>> {
    let mut out: Vec<Option<(ClientInfo, BTreeMap<String, String>)>> = vec![None; rows.len()];
    for (key_id, wrapped) in keys {
        let (indexes, items): (Vec<usize>, Vec<(String, &str)>) = rows
            .iter()
            .enumerate()
            .filter_map(|(i, (event_id, sealed))| {
                let (under, body) = sealed.split_once('.')?;
                (under == key_id).then(|| (i, (bound(account_id, event_id), body)))
            })
            .unzip();
        if items.is_empty() {
            continue;
        }
        let opened = sealer.open_all(account_id, (key_id, wrapped), &items);
        for (i, plaintext) in indexes.into_iter().zip(opened) {
            out[i] = plaintext.and_then(|p| {
                let p = zeroize::Zeroizing::new(p);
                let personal: Personal = serde_json::from_slice(&p).ok()?;
                Some((
                    ClientInfo {
                        ip: personal.ip,
                        user_agent: personal.ua,
                    },
                    personal.details,
                ))
            });
        }
    }
    out
}
