//! The server key ring: 32-byte keys with ids, the first current. Keys redact themselves in
//! `Debug`; the raw bytes are zeroized when dropped.

use std::{fmt, io::Write as _, path::Path};

use zeroize::Zeroizing;

/// One 32-byte server key and its id (stored beside every hash and MAC made with it).
pub struct SecretKey {
    id: String,
    bytes: Zeroizing<[u8; 32]>,
}

impl SecretKey {
    /// Wraps raw key material under `id`, or under its fingerprint id when `id` is `None`.
    pub fn new(id: Option<String>, bytes: [u8; 32]) -> Self {
        let bytes = Zeroizing::new(bytes);
        let id = id.unwrap_or_else(|| fingerprint(&bytes));
        Self { id, bytes }
    }

    /// The key id: as configured (`ID:HEX`), else `k` followed by 8 hex digits of a keyed
    /// fingerprint that reveals nothing of the key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The raw key material. Callers derive purpose-specific subkeys from it.
    pub fn expose(&self) -> &[u8; 32] {
        &self.bytes
    }
}

fn fingerprint(key: &[u8; 32]) -> String {
    let digest = crate::crypto::hmac_sha256(key, &[b"recovery-service key id v1"]);
    format!("k{}", hex::encode(&digest[..4]))
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}, [redacted])", self.id)
    }
}

/// The configured server keys: the first is current (used for new hashes and MACs), every
/// one verifies, so a key can be rotated without invalidating anyone's code.
pub struct KeyRing {
    keys: Vec<SecretKey>,
}

impl KeyRing {
    /// Parses `HEX` or `ID:HEX,ID:HEX,...` (an entry without `ID:` gets its fingerprint id).
    /// Errors never contain key material.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys: Vec<SecretKey> = Vec::new();
        for (n, entry) in text.split(',').map(str::trim).enumerate() {
            let position = n + 1;
            if entry.is_empty() {
                return Err(format!("key #{position} is empty"));
            }
            let (id, hex_part) = match entry.rsplit_once(':') {
                Some((id, hex_part)) => {
                    let valid = !id.is_empty()
                        && id.len() <= 32
                        && id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                    if !valid {
                        return Err(format!(
                            "key #{position}: an id must be 1 to 32 letters, digits, '-' or '_'"
                        ));
                    }
                    (Some(id.to_owned()), hex_part)
                }
                None => (None, entry),
            };
            let mut bytes = Zeroizing::new([0u8; 32]);
            if hex_part.len() != 64 || hex::decode_to_slice(hex_part, &mut *bytes).is_err() {
                return Err(format!(
                    "key #{position} must be 64 hex characters (32 random bytes, e.g. `openssl rand -hex 32`)"
                ));
            }
            let key = SecretKey::new(id, *bytes);
            if keys.iter().any(|k| k.id == key.id) {
                return Err(format!("key id `{}` appears twice", key.id));
            }
            keys.push(key);
        }
        Ok(Self { keys })
    }

    /// A ring of one freshly generated key (for an in-memory development database).
    pub fn generate() -> Result<Self, String> {
        Ok(Self {
            keys: vec![SecretKey::new(None, random_key()?)],
        })
    }

    /// The key used for new hashes and MACs.
    pub fn current(&self) -> &SecretKey {
        // `parse` and `generate` never build an empty ring.
        &self.keys[0]
    }

    /// The key with this id, to verify a hash or MAC made with it.
    pub fn get(&self, id: &str) -> Option<&SecretKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Every key id, current first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Reads the development key file beside the SQLite database, creating it (mode 0600)
    /// with a fresh random key the first time.
    pub fn load_or_create_dev_file(path: &Path) -> Result<Self, String> {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode_0600()
            .open(path)
        {
            Ok(mut file) => {
                let key = Zeroizing::new(hex::encode(random_key()?));
                file.write_all(key.as_bytes())
                    .and_then(|()| file.write_all(b"\n"))
                    .and_then(|()| file.sync_all())
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                Self::parse(&key).map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = Zeroizing::new(
                    std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
                );
                Self::parse(text.trim()).map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(e) => Err(format!("cannot create {}: {e}", path.display())),
        }
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.iter()).finish()
    }
}

fn random_key() -> Result<[u8; 32], String> {
    let mut key = [0u8; 32];
    getrandom_fill(&mut key)?;
    Ok(key)
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn getrandom_fill(buf: &mut [u8]) -> Result<(), String> {
    use rand::TryRng as _;
    rand::rngs::SysRng
        .try_fill_bytes(buf)
        .map_err(|e| format!("the operating system's random source failed: {e}"))
}

trait OpenOptionsExt {
    fn mode_0600(&mut self) -> &mut Self;
}

impl OpenOptionsExt for std::fs::OpenOptions {
    #[cfg(unix)]
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
    #[cfg(not(unix))]
    fn mode_0600(&mut self) -> &mut Self {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX_A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const HEX_B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn a_single_key_gets_a_stable_fingerprint_id() {
        let ring = KeyRing::parse(HEX_A).unwrap();
        let again = KeyRing::parse(HEX_A).unwrap();
        assert_eq!(ring.current().id(), again.current().id());
        assert!(ring.current().id().starts_with('k'));
        assert_eq!(ring.current().id().len(), 9);
        assert_eq!(ring.current().expose()[1], 0x11);
    }

    #[test]
    fn rotation_lists_keep_ids_and_order() {
        let ring = KeyRing::parse(&format!("new:{HEX_B}, {HEX_A}")).unwrap();
        assert_eq!(ring.current().id(), "new");
        let old_id = KeyRing::parse(HEX_A).unwrap().current().id().to_owned();
        assert!(ring.get(&old_id).is_some());
        assert_eq!(ring.ids().count(), 2);
    }

    #[test]
    fn malformed_keys_are_refused_without_echoing_them() {
        for bad in [
            "abc",
            &HEX_A[..63],
            &format!("{HEX_A}zz"),
            &format!("a:{HEX_A},a:{HEX_B}"),
            &format!("bad id:{HEX_A}"),
            &format!("{HEX_A},"),
        ] {
            let err = KeyRing::parse(bad).unwrap_err();
            assert!(!err.contains(&HEX_A[..16]), "{err}");
            assert!(!err.contains(&HEX_B[..16]), "{err}");
        }
    }

    #[test]
    fn keys_redact_themselves() {
        let ring = KeyRing::parse(&format!("main:{HEX_A}")).unwrap();
        let shown = format!("{ring:?}");
        assert!(
            shown.contains("main") && shown.contains("redacted"),
            "{shown}"
        );
        assert!(!shown.contains("00112233"), "{shown}");
    }

    #[test]
    fn the_dev_key_file_is_created_once_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recovery.db.key");
        let first = KeyRing::load_or_create_dev_file(&path).unwrap();
        let second = KeyRing::load_or_create_dev_file(&path).unwrap();
        assert_eq!(first.current().expose(), second.current().expose());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
