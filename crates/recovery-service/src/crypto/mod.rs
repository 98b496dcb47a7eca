//! Cryptographic primitives at the bottom of the crate: the server key ring ([`KeyRing`]) and
//! the one HMAC-SHA-256 everything keyed
//! goes through (subkeys, email-code MACs, address keys, the audit chain, key fingerprints).
//! It cannot fail and never falls back to a zero key: a key of at most one block (64 bytes)
//! is zero-padded to the block as RFC 2104 specifies, a longer one hashed first.

pub mod hasher;
mod keys;
pub mod opaque;
mod seal;

pub use keys::{KeyRing, SecretKey, getrandom_fill};
pub use seal::{seal, seal_for, unseal, unseal_for, unseal_with};

use hmac::{Hmac, Mac as _, digest::KeyInit};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// What a subkey is for; each purpose gets an independent key from the same server secret.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    EmailCodeMac,
    RecoveryCodePepper,
    OutboxSeal,
    AuditChain,
    AddressKey,
    /// Zero-knowledge enrollment ids and the server's OPAQUE login state in a flow.
    OpaqueState,
    /// Wrapping each account's data key (for the personal details of its audit trail).
    DataKeyWrap,
    /// Sealing personal details under an account's data key.
    PersonalData,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::EmailCodeMac => b"recovery-service v1 email-code mac",
            Self::RecoveryCodePepper => b"recovery-service v1 recovery-code pepper",
            Self::OutboxSeal => b"recovery-service v1 outbox seal",
            Self::AuditChain => b"recovery-service v1 audit chain",
            Self::AddressKey => b"recovery-service v1 address key",
            Self::OpaqueState => b"recovery-service v1 opaque state",
            Self::DataKeyWrap => b"recovery-service v1 data key wrap",
            Self::PersonalData => b"recovery-service v1 personal data",
        }
    }
}

/// HMAC-SHA-256(server key, purpose label): a 32-byte subkey. The derivation of every key but
/// the OPAQUE ones (HKDF-SHA-512, `opaque.rs`).
pub fn subkey(key: &SecretKey, purpose: Purpose) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(hmac_sha256(key.expose(), &[purpose.label()]))
}

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut out = [0u8; N];
    getrandom_fill(&mut out)?;
    Ok(out)
}

/// SHA-256's block size: HMAC keys are padded (or hashed) to it.
const BLOCK: usize = 64;

/// HMAC-SHA-256 of the concatenation of `parts` under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = Zeroizing::new([0u8; BLOCK]);
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&(*block).into());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test cases 1, 2, 3 and 6 (a key longer than the block).
    #[test]
    fn rfc_4231_known_answers() {
        let cases: [(Vec<u8>, Vec<u8>, &str); 4] = [
            (
                vec![0x0b; 20],
                b"Hi There".to_vec(),
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                vec![0xaa; 20],
                vec![0xdd; 50],
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            ),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ];
        for (key, data, want) in cases {
            assert_eq!(hex::encode(hmac_sha256(&key, &[&data])), want);
            // Split input gives the same MAC as whole input.
            let (a, b) = data.split_at(data.len() / 2);
            assert_eq!(hex::encode(hmac_sha256(&key, &[a, b])), want);
        }
    }
}
