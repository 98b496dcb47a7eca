//! OPAQUE (RFC 9807) for zero-knowledge recovery, server side, on opaque-ke: the suite API.md
//! fixes (OPAQUE-3DH, OPRF ristretto255-SHA512, key exchange on ristretto255, SHA-512), the
//! context `identity.recovery.v1`, no identities. The service never runs the key stretching
//! function (the device does), so the suite's `Ksf` is never called here.
//!
//! The server's OPAQUE keys (OPRF seed, key-exchange key pair) are derived from each key of the
//! ring with HKDF-SHA-512 under a purpose label, so every replica derives the same and an
//! enrolment works while the key it was made under stays in the ring. Messages are checked for
//! their exact RFC length before they are parsed; a wrong length or an invalid encoding is
//! [`Error::Malformed`].

use std::fmt;

use curve25519_dalek::Scalar;
use hkdf::Hkdf;
use opaque_ke::{
    CipherSuite, CredentialFinalization, CredentialRequest, RegistrationRequest,
    RegistrationUpload, Ristretto255, ServerLogin, ServerLoginParameters, ServerRegistration,
    ServerSetup, TripleDh, keypair::PrivateKey,
};
use sha2::Sha512;
use zeroize::Zeroizing;

use super::{KeyRing, SecretKey};

/// The cipher suite of API.md's "Zero-knowledge recovery".
#[derive(Debug, Clone, Copy)]
pub struct Suite;

impl CipherSuite for Suite {
    type OprfCs = Ristretto255;
    type KeyExchange = TripleDh<Ristretto255, Sha512>;
    /// Never run by the server: the device stretches the code before it blinds it.
    type Ksf = opaque_ke::ksf::Identity;
}

/// RFC 9807's context string, shared with every client.
pub const CONTEXT: &[u8] = b"identity.recovery.v1";

/// What `hash_params` says of a zero-knowledge enrolment.
pub const PARAMS: &str = "opaque-3dh,ristretto255-sha512";

/// RFC 9807 serialization lengths for this suite.
pub const REGISTRATION_REQUEST_LEN: usize = 32;
pub const REGISTRATION_RESPONSE_LEN: usize = 64;
pub const REGISTRATION_RECORD_LEN: usize = 192;
pub const KE1_LEN: usize = 96;
pub const KE2_LEN: usize = 320;
pub const KE3_LEN: usize = 64;

/// Why an OPAQUE step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A message of the wrong length or not a valid encoding (invalid point, zero element).
    Malformed,
    /// The client's KE3 does not verify: the code was wrong.
    NotVerified,
    /// The server's own state or keys could not be used (a bug, or a corrupted state).
    Internal,
}

/// One key id's OPAQUE setup.
struct Setup {
    key_id: String,
    setup: ServerSetup<Suite>,
}

/// The OPAQUE server setups of every key of the ring, current first.
pub struct OpaqueKeys {
    setups: Vec<Setup>,
}

impl fmt::Debug for OpaqueKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.setups.iter().map(|s| &s.key_id))
            .finish()
    }
}

impl OpaqueKeys {
    /// Derives the setup of every key of the ring.
    pub fn derive(ring: &KeyRing) -> Result<Self, String> {
        let setups = ring
            .ids()
            .filter_map(|id| ring.get(id))
            .map(|key| {
                Ok(Setup {
                    key_id: key.id().to_owned(),
                    setup: derive_setup(key)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        if setups.is_empty() {
            return Err("the key ring is empty".into());
        }
        Ok(Self { setups })
    }

    /// The current key's id (new enrolments are made under it).
    pub fn current_id(&self) -> &str {
        &self.setups[0].key_id
    }

    fn current(&self) -> &ServerSetup<Suite> {
        &self.setups[0].setup
    }

    fn get(&self, key_id: &str) -> Option<&ServerSetup<Suite>> {
        self.setups
            .iter()
            .find(|s| s.key_id == key_id)
            .map(|s| &s.setup)
    }

    /// Answers a RegistrationRequest (32 bytes) under the current key, for the enrolment whose
    /// credential identifier is `credential_id`: the RegistrationResponse (64 bytes).
    pub fn registration_response(
        &self,
        request: &[u8],
        credential_id: &[u8],
    ) -> Result<Vec<u8>, Error> {
        if request.len() != REGISTRATION_REQUEST_LEN {
            return Err(Error::Malformed);
        }
        let request =
            RegistrationRequest::<Suite>::deserialize(request).map_err(|_| Error::Malformed)?;
        let started = ServerRegistration::<Suite>::start(self.current(), request, credential_id)
            .map_err(|_| Error::Malformed)?;
        Ok(started.message.serialize().to_vec())
    }

    /// Answers KE1 with KE2 (320 bytes) and the server's login state, for an enrolment made
    /// under `key_id` with `credential_id` and `record`. A record or key that cannot serve (the
    /// key left the ring) answers as for a wrong code: a KE2 from a fake record under the
    /// current key, whose finish never verifies.
    pub fn login_start(
        &self,
        key_id: &str,
        record: &[u8],
        credential_request: Ke1,
        credential_id: &[u8],
    ) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), Error> {
        let (setup, record) = match (self.get(key_id), parse_record(record)) {
            (Some(setup), Ok(record)) => (setup, Some(record)),
            _ => (self.current(), None),
        };
        start_login(
            setup,
            record,
            credential_request.0,
            credential_id,
            CONTEXT,
            &mut rand_core_06::OsRng,
        )
    }
}

/// ServerLogin::start with its serializations: (KE2, the server's login state).
fn start_login<R: rand_core_06::RngCore + rand_core_06::CryptoRng>(
    setup: &ServerSetup<Suite>,
    record: Option<ServerRegistration<Suite>>,
    ke1: CredentialRequest<Suite>,
    credential_id: &[u8],
    context: &[u8],
    rng: &mut R,
) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), Error> {
    let started = ServerLogin::start(
        rng,
        setup,
        record,
        ke1,
        credential_id,
        ServerLoginParameters {
            context: Some(context),
            ..ServerLoginParameters::default()
        },
    )
    .map_err(|_| Error::Malformed)?;
    let ke2 = started.message.serialize().to_vec();
    let state = Zeroizing::new(started.state.serialize().to_vec());
    Ok((ke2, state))
}

/// A parsed KE1 (RFC 9807 `CredentialRequest`: the blinded element, the client nonce and key
/// share).
pub struct Ke1(CredentialRequest<Suite>);

impl fmt::Debug for Ke1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ke1([redacted])")
    }
}

/// Parses KE1 (exactly 96 bytes, valid encodings), before any state is looked up.
pub fn parse_credential_request(credential_request: &[u8]) -> Result<Ke1, Error> {
    if credential_request.len() != KE1_LEN {
        return Err(Error::Malformed);
    }
    CredentialRequest::<Suite>::deserialize(credential_request)
        .map(Ke1)
        .map_err(|_| Error::Malformed)
}

/// Checks a RegistrationRecord (192 bytes: the client's public key, masking key, envelope).
pub fn parse_record(record: &[u8]) -> Result<ServerRegistration<Suite>, Error> {
    if record.len() != REGISTRATION_RECORD_LEN {
        return Err(Error::Malformed);
    }
    let upload = RegistrationUpload::<Suite>::deserialize(record).map_err(|_| Error::Malformed)?;
    Ok(ServerRegistration::finish(upload))
}

/// Checks KE3 (64 bytes) against the server's login state from [`OpaqueKeys::login_start`].
pub fn login_finish(state: &[u8], credential_finalization: &[u8]) -> Result<(), Error> {
    finish_login(state, credential_finalization, CONTEXT)
}

fn finish_login(state: &[u8], credential_finalization: &[u8], context: &[u8]) -> Result<(), Error> {
    if credential_finalization.len() != KE3_LEN {
        return Err(Error::Malformed);
    }
    let ke3 = CredentialFinalization::<Suite>::deserialize(credential_finalization)
        .map_err(|_| Error::Malformed)?;
    let login = ServerLogin::<Suite>::deserialize(state).map_err(|_| Error::Internal)?;
    login
        .finish(
            ke3,
            ServerLoginParameters {
                context: Some(context),
                ..ServerLoginParameters::default()
            },
        )
        .map(|_| ())
        .map_err(|_| Error::NotVerified)
}

/// HKDF-SHA-512 of the server key under a purpose label: the only derivation of OPAQUE keys.
fn expand<const N: usize>(key: &SecretKey, label: &[u8]) -> Result<Zeroizing<[u8; N]>, String> {
    let mut out = Zeroizing::new([0u8; N]);
    Hkdf::<Sha512>::new(None, key.expose())
        .expand(label, &mut *out)
        .map_err(|_| "hkdf output length".to_owned())?;
    Ok(out)
}

/// A ristretto255 scalar from 64 derived bytes (reduced mod the group order; zero with
/// probability 2^-252, refused).
fn scalar(key: &SecretKey, label: &[u8]) -> Result<Zeroizing<[u8; 32]>, String> {
    let wide = expand::<64>(key, label)?;
    let scalar = Scalar::from_bytes_mod_order_wide(&wide);
    if scalar == Scalar::ZERO {
        return Err("a derived OPAQUE key is zero".into());
    }
    Ok(Zeroizing::new(scalar.to_bytes()))
}

/// The OPAQUE setup of one server key: the OPRF seed (64 bytes), the key-exchange private key
/// and the key of the fake records that answer for unknown enrolments, each from its own
/// label. Built through opaque-ke's own serialization (seed ‖ private key ‖ fake public key).
fn derive_setup(key: &SecretKey) -> Result<ServerSetup<Suite>, String> {
    let seed = expand::<64>(key, b"recovery-service v1 opaque oprf seed")?;
    let private = scalar(key, b"recovery-service v1 opaque key exchange")?;
    let fake = scalar(key, b"recovery-service v1 opaque fake record")?;
    let fake_public = PrivateKey::<Ristretto255>::deserialize(&*fake)
        .map_err(|_| "the derived fake-record key is invalid".to_owned())?
        .public_key()
        .serialize();
    let mut bytes = Zeroizing::new(Vec::with_capacity(128));
    bytes.extend_from_slice(&*seed);
    bytes.extend_from_slice(&*private);
    bytes.extend_from_slice(&fake_public);
    ServerSetup::<Suite>::deserialize(&bytes)
        .map_err(|_| "the derived OPAQUE setup is invalid".to_owned())
}

#[cfg(test)]
mod tests;
