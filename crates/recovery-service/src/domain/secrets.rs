//! The domain's keyed secrets, built on [`crate::crypto`]: address keys, audit-chain links, random identifiers, and outbox sealing with the domain's error.

use super::Error;
use crate::crypto::{KeyRing, SecretKey, hmac_sha256};

pub use crate::crypto::{Purpose, subkey};

/// A cryptographic step's failure, answered as an internal error (the step named in the log).
pub(super) fn internal(what: &'static str) -> Error {
    tracing::error!(what, "cryptographic operation failed");
    Error::Internal
}

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], Error> {
    crate::crypto::random_bytes().map_err(|e| {
        tracing::error!(error = %e, "random source failed");
        Error::Internal
    })
}

/// A random identifier: `prefix` then 26 Crockford base32 characters (130 bits).
pub fn random_id(prefix: &str) -> Result<String, Error> {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let bytes: [u8; 26] = random_bytes()?;
    let mut id = String::with_capacity(prefix.len() + 26);
    id.push_str(prefix);
    id.extend(
        bytes
            .iter()
            .map(|b| char::from(ALPHABET[usize::from(b & 31)])),
    );
    Ok(id)
}

/// Whether `id` has the shape [`random_id`] gives it under `prefix`: the prefix, then 26
/// lowercase letters or digits (checked before any lookup, so junk never reaches a query).
pub fn is_random_id(prefix: &str, id: &str) -> bool {
    id.len() == prefix.len() + 26
        && id.starts_with(prefix)
        && id[prefix.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// A keyed hash of an address's lookup form (HMAC-SHA-256 under the current key, 128 bits in
/// hex): what rate-limit keys, flows and never-sent rows keep instead of a typed address.
pub fn address_key(keys: &KeyRing, lookup: &str) -> String {
    let subkey = subkey(keys.current(), Purpose::AddressKey);
    hex::encode(&hmac_sha256(&*subkey, &[lookup.as_bytes()])[..16])
}

/// Links audit events into a hash chain under the server keys (HMAC-SHA-256 with a subkey per
/// key); see `recovery_storage::AuditChainKeys`.
#[derive(Debug, Clone)]
pub struct AuditChain(pub std::sync::Arc<KeyRing>);

impl recovery_storage::AuditChainKeys for AuditChain {
    fn current_key_id(&self) -> String {
        self.0.current().id().to_owned()
    }

    fn link(&self, key_id: &str, previous: &str, event: &[u8]) -> Option<String> {
        let key = self.0.get(key_id)?;
        let subkey = subkey(key, Purpose::AuditChain);
        Some(hex::encode(hmac_sha256(
            &*subkey,
            &[previous.as_bytes(), b"\n", event],
        )))
    }
}

/// Seals the personal details of each account's audit events under a data key of that account
/// alone (32 random bytes), itself sealed by the key ring bound to the account and the key id
/// (so it rotates as the other keys do, and a key row moved to another account does not
/// open); see `recovery_storage::PersonalDataKeys`. Forgetting deletes the wrapped keys.
#[derive(Debug, Clone)]
pub struct PersonalData {
    pub keys: std::sync::Arc<KeyRing>,
    /// Which details of an event kind are personal (the audit trail's rule, passed in).
    pub personal_detail: fn(kind: &str, name: &str) -> bool,
}

/// What a data key's wrapping is bound to.
fn wrap_binding(account_id: &str, key_id: &str) -> String {
    format!("{account_id}\n{key_id}")
}

impl PersonalData {
    /// The data key `key_id` of `account_id`, unwrapped.
    fn unwrap(&self, account_id: &str, key_id: &str, wrapped: &str) -> Option<SecretKey> {
        let bytes = crate::crypto::unseal_for(
            Purpose::DataKeyWrap,
            &self.keys,
            &wrap_binding(account_id, key_id),
            wrapped,
        )
        .map_err(|what| tracing::warn!(what, key_id, "an account data key does not unwrap"))
        .ok()?;
        let bytes: [u8; 32] = bytes.as_slice().try_into().ok()?;
        Some(SecretKey::new(Some(key_id.to_owned()), bytes))
    }
}

impl recovery_storage::PersonalDataKeys for PersonalData {
    fn new_key(&self, account_id: &str) -> Result<(String, String), String> {
        let key_id = random_id("dk_").map_err(|_| "random source failed".to_owned())?;
        let bytes = zeroize::Zeroizing::new(crate::crypto::random_bytes::<32>()?);
        let wrapped = crate::crypto::seal_for(
            Purpose::DataKeyWrap,
            self.keys.current(),
            &wrap_binding(account_id, &key_id),
            &*bytes,
        )
        .map_err(str::to_owned)?;
        Ok((key_id, wrapped))
    }

    fn check(&self, account_id: &str, key_id: &str, wrapped: &str) -> recovery_storage::KeyState {
        use recovery_storage::KeyState;
        let current = self.keys.current();
        if wrapped.split('.').nth(1) == Some(current.id()) {
            return KeyState::Current;
        }
        let Some(key) = self.unwrap(account_id, key_id, wrapped) else {
            return KeyState::Lost;
        };
        match crate::crypto::seal_for(
            Purpose::DataKeyWrap,
            current,
            &wrap_binding(account_id, key_id),
            key.expose(),
        ) {
            Ok(rewrapped) => KeyState::Rewrapped(rewrapped),
            Err(what) => {
                tracing::warn!(
                    what,
                    key_id,
                    "an account data key could not be wrapped again"
                );
                KeyState::Current
            }
        }
    }

    fn seal(
        &self,
        account_id: &str,
        (key_id, wrapped): (&str, &str),
        bound_to: &str,
        plaintext: &[u8],
    ) -> Result<String, String> {
        let key = self
            .unwrap(account_id, key_id, wrapped)
            .ok_or_else(|| format!("the data key {key_id} does not unwrap"))?;
        crate::crypto::seal_for(Purpose::PersonalData, &key, bound_to, plaintext)
            .map_err(str::to_owned)
    }

    fn open_all(
        &self,
        account_id: &str,
        (key_id, wrapped): (&str, &str),
        items: &[(String, &str)],
    ) -> Vec<Option<Vec<u8>>> {
        let Some(key) = self.unwrap(account_id, key_id, wrapped) else {
            return vec![None; items.len()];
        };
        items
            .iter()
            .map(|(bound_to, sealed)| {
                crate::crypto::unseal_with(Purpose::PersonalData, &key, bound_to, sealed)
                    .map(|p| p.to_vec())
                    .ok()
            })
            .collect()
    }

    fn personal_detail(&self, kind: &str, name: &str) -> bool {
        (self.personal_detail)(kind, name)
    }
}

/// [`crate::crypto::seal`], failures answered as internal errors (the cause logged).
pub fn seal(key: &SecretKey, message_id: &str, plaintext: &[u8]) -> Result<String, Error> {
    crate::crypto::seal(key, message_id, plaintext).map_err(internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(text: &str) -> KeyRing {
        KeyRing::parse(text).unwrap()
    }

    const A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn sealed_payloads_open_only_with_their_key_and_message_id() {
        let keys = ring(&format!("new:{B},old:{A}"));
        let sealed = seal(keys.current(), "m1", b"code 123456").unwrap();
        assert!(sealed.starts_with("v1.new."));
        assert!(!sealed.contains("123456"));
        let unseal = crate::crypto::unseal;
        assert_eq!(&*unseal(&keys, "m1", &sealed).unwrap(), b"code 123456");
        assert!(
            unseal(&keys, "m2", &sealed).is_err(),
            "bound to its message id"
        );
        assert!(unseal(&ring(A), "m1", &sealed).is_err(), "unknown key id");
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(unseal(&keys, "m1", &tampered).is_err());
    }

    #[test]
    fn subkeys_differ_by_purpose() {
        let keys = ring(A);
        let k = keys.current();
        assert_ne!(
            *subkey(k, Purpose::EmailCodeMac),
            *subkey(k, Purpose::RecoveryCodePepper)
        );
        assert_ne!(
            *subkey(k, Purpose::OutboxSeal),
            *subkey(k, Purpose::RecoveryCodePepper)
        );
    }

    #[test]
    fn random_ids_have_a_prefix_and_130_bits() {
        let id = random_id("fl_").unwrap();
        assert_eq!(id.len(), 3 + 26);
        assert!(id.starts_with("fl_"));
        assert_ne!(id, random_id("fl_").unwrap());
    }

    /// One row opened (`open_all` of one item).
    fn open_one(
        p: &PersonalData,
        account_id: &str,
        key: (&str, &str),
        bound_to: &str,
        sealed: &str,
    ) -> Option<Vec<u8>> {
        use recovery_storage::PersonalDataKeys as _;
        p.open_all(account_id, key, &[(bound_to.to_owned(), sealed)])
            .pop()
            .flatten()
    }

    fn personal(ring_text: &str) -> PersonalData {
        PersonalData {
            keys: std::sync::Arc::new(ring(ring_text)),
            personal_detail: super::super::notify::is_personal_detail,
        }
    }

    #[test]
    fn a_data_key_opens_only_its_accounts_rows_and_survives_a_rotation() {
        use recovery_storage::{KeyState, PersonalDataKeys as _};
        let old = personal(&format!("old:{A}"));
        let (key_id, wrapped) = old.new_key("acct-1").unwrap();
        assert!(key_id.starts_with("dk_"));
        assert_eq!(old.check("acct-1", &key_id, &wrapped), KeyState::Current);
        let sealed = old
            .seal(
                "acct-1",
                (&key_id, &wrapped),
                "acct-1\nev_1",
                b"203.0.113.7",
            )
            .unwrap();
        assert!(!sealed.contains("203.0.113.7"));
        let opened = open_one(&old, "acct-1", (&key_id, &wrapped), "acct-1\nev_1", &sealed);
        assert_eq!(opened.as_deref(), Some(&b"203.0.113.7"[..]));
        // Another row, or the key row moved to another account: nothing opens.
        assert!(open_one(&old, "acct-1", (&key_id, &wrapped), "acct-1\nev_2", &sealed).is_none());
        assert!(open_one(&old, "acct-2", (&key_id, &wrapped), "acct-1\nev_1", &sealed).is_none());
        assert!(old.seal("acct-2", (&key_id, &wrapped), "x", b"y").is_err());

        // Rotation: the new ring re-wraps the key under its current key; the same data key,
        // so what it sealed still opens.
        let rotated = personal(&format!("new:{B},old:{A}"));
        let KeyState::Rewrapped(rewrapped) = rotated.check("acct-1", &key_id, &wrapped) else {
            panic!("a key under an older ring key is re-wrapped");
        };
        assert!(rewrapped.starts_with("v1.new."));
        assert_eq!(
            rotated.check("acct-1", &key_id, &rewrapped),
            KeyState::Current
        );
        assert_eq!(
            open_one(
                &rotated,
                "acct-1",
                (&key_id, &rewrapped),
                "acct-1\nev_1",
                &sealed
            )
            .as_deref(),
            Some(&b"203.0.113.7"[..])
        );
        // A ring without the wrapping key: lost, never opened.
        let other = personal(&format!("new:{B}"));
        assert_eq!(other.check("acct-1", &key_id, &wrapped), KeyState::Lost);
        assert!(
            open_one(
                &other,
                "acct-1",
                (&key_id, &wrapped),
                "acct-1\nev_1",
                &sealed
            )
            .is_none()
        );
        // Debug shows no key material.
        assert!(!format!("{old:?}").contains(A));
    }

    #[test]
    fn only_addresses_and_free_text_reasons_are_personal_details() {
        let p = personal(A);
        use recovery_storage::PersonalDataKeys as _;
        assert!(p.personal_detail("EMAIL_UPDATED", "email_hint"));
        assert!(p.personal_detail("EMAIL_UPDATED", "old_email_hint"));
        assert!(p.personal_detail("CODE_REVOKED", "reason"));
        assert!(p.personal_detail("ACCOUNT_FORGOTTEN", "reason"));
        assert!(!p.personal_detail("SUBMISSION_REFUSED", "reason"));
        assert!(!p.personal_detail("RECOVERY_STARTED", "flow_id"));
    }
}
