//! Sealing: ChaCha20-Poly1305 under a purpose subkey of a server key, bound to an id (the
//! outbox seals each message's payload under its message id). Errors say which step failed,
//! never anything of the key or the plaintext.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chacha20poly1305::{
    ChaCha20Poly1305, KeyInit as _, Nonce,
    aead::{Aead as _, Payload},
};
use zeroize::Zeroizing;

use super::{KeyRing, Purpose, SecretKey, random_bytes, subkey};

/// Seals `plaintext` for the outbox: ChaCha20-Poly1305 under the key's seal subkey, bound to
/// `message_id`. Format: `v1.<key id>.<base64url(nonce ‖ ciphertext)>`.
pub fn seal(key: &SecretKey, message_id: &str, plaintext: &[u8]) -> Result<String, &'static str> {
    seal_for(Purpose::OutboxSeal, key, message_id, plaintext)
}

/// Opens what [`seal`] sealed with any key of the ring.
pub fn unseal(
    keys: &KeyRing,
    message_id: &str,
    sealed: &str,
) -> Result<Zeroizing<Vec<u8>>, &'static str> {
    unseal_for(Purpose::OutboxSeal, keys, message_id, sealed)
}

/// Seals `plaintext` under `purpose`'s subkey of `key`, bound to `bound_to` (associated data):
/// ChaCha20-Poly1305, `v1.<key id>.<base64url(nonce ‖ ciphertext)>`.
pub fn seal_for(
    purpose: Purpose,
    key: &SecretKey,
    bound_to: &str,
    plaintext: &[u8],
) -> Result<String, &'static str> {
    let subkey = subkey(key, purpose);
    let cipher = ChaCha20Poly1305::new_from_slice(&*subkey).map_err(|_| "seal key")?;
    let nonce: [u8; 12] = random_bytes().map_err(|_| "random source")?;
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: bound_to.as_bytes(),
            },
        )
        .map_err(|_| "seal")?;
    let mut blob = nonce.to_vec();
    blob.extend_from_slice(&ciphertext);
    Ok(format!("v1.{}.{}", key.id(), URL_SAFE_NO_PAD.encode(blob)))
}

/// Opens what [`seal_for`] sealed for `purpose` and `bound_to`, with any key of the ring.
pub fn unseal_for(
    purpose: Purpose,
    keys: &KeyRing,
    bound_to: &str,
    sealed: &str,
) -> Result<Zeroizing<Vec<u8>>, &'static str> {
    let key_id = sealed.split('.').nth(1).ok_or("sealed payload format")?;
    let key = keys.get(key_id).ok_or("sealed payload key id")?;
    unseal_with(purpose, key, bound_to, sealed)
}

/// Opens what [`seal_for`] sealed for `purpose` and `bound_to` under `key` itself.
pub fn unseal_with(
    purpose: Purpose,
    key: &SecretKey,
    bound_to: &str,
    sealed: &str,
) -> Result<Zeroizing<Vec<u8>>, &'static str> {
    let mut parts = sealed.splitn(3, '.');
    let (Some("v1"), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("sealed payload format");
    };
    if key_id != key.id() {
        return Err("sealed payload key id");
    }
    let blob = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| "sealed payload encoding")?;
    if blob.len() < 12 {
        return Err("sealed payload length");
    }
    let (nonce, ciphertext) = blob.split_at(12);
    let subkey = subkey(key, purpose);
    let cipher = ChaCha20Poly1305::new_from_slice(&*subkey).map_err(|_| "seal key")?;
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: bound_to.as_bytes(),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| "unseal")
}
