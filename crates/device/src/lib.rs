//! The device's side of zero-knowledge recovery with opaque-ke (RFC 9807, the suite of the
//! service's contract): it enrols a code with a keyset sealed under OPAQUE's export key, and
//! recovers the keyset with the code. The service sees only OPAQUE messages and the sealed
//! keyset. Used by the end-to-end tests, the load tool and `examples/zk_client.rs`.
//!
//! A panic here is a broken opaque-ke, not bad input: the functions that face the service
//! answer its `Status`.

#![allow(clippy::expect_used)] // opaque-ke's client steps cannot fail on their own output

use chacha20poly1305::{
    ChaCha20Poly1305, KeyInit as _, Nonce,
    aead::{Aead as _, Payload},
};
use opaque_ke::{
    CipherSuite, ClientLogin, ClientLoginFinishParameters, ClientRegistration,
    ClientRegistrationFinishParameters, CredentialResponse, RegistrationResponse, Ristretto255,
    TripleDh,
};
use recovery_proto::v1::{self as api, recovery_service_client::RecoveryServiceClient};
use tonic::{Status, transport::Channel};

/// API.md's suite: OPRF ristretto255-SHA512, 3DH on ristretto255 with SHA-512. The device's
/// key stretching is its own business (the server never runs it); tests use the identity.
#[derive(Debug, Clone, Copy)]
pub struct Suite;

impl CipherSuite for Suite {
    type OprfCs = Ristretto255;
    type KeyExchange = TripleDh<Ristretto255, sha2::Sha512>;
    type Ksf = opaque_ke::ksf::Identity;
}

/// RFC 9807's context string of this service.
pub const CONTEXT: &[u8] = b"identity.recovery.v1";

type Client = RecoveryServiceClient<Channel>;

/// A zero-knowledge enrolment just made.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub code_id: String,
    /// OPAQUE's export key: only the code rebuilds it.
    pub export_key: Vec<u8>,
    /// The keyset as sent (sealed under the export key).
    pub sealed_keyset: Vec<u8>,
}

/// The start of an enrolment: the enrollment id and the device's state.
pub struct EnrolStart {
    pub enrollment_id: String,
    state: ClientRegistration<Suite>,
    response: Vec<u8>,
}

impl std::fmt::Debug for EnrolStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrolStart")
            .field("enrollment_id", &self.enrollment_id)
            .finish_non_exhaustive()
    }
}

/// StartZeroKnowledgeEnrollment for `account` with `code`.
pub async fn start_enrolment(
    c: &mut Client,
    account: &str,
    code: &[u8],
) -> Result<EnrolStart, Status> {
    let start = ClientRegistration::<Suite>::start(&mut rand_core_06::OsRng, code)
        .expect("a registration request");
    let answer = c
        .start_zero_knowledge_enrollment(api::StartZeroKnowledgeEnrollmentRequest {
            account_id: account.into(),
            registration_request: start.message.serialize().to_vec(),
        })
        .await?
        .into_inner();
    Ok(EnrolStart {
        enrollment_id: answer.enrollment_id,
        state: start.state,
        response: answer.registration_response,
    })
}

/// The registration record and export key of a started enrolment.
pub fn finish_registration(start: &EnrolStart, code: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let finish = start
        .state
        .clone()
        .finish(
            &mut rand_core_06::OsRng,
            code,
            RegistrationResponse::deserialize(&start.response).expect("a 64-byte response"),
            ClientRegistrationFinishParameters::default(),
        )
        .expect("the registration finishes");
    (
        finish.message.serialize().to_vec(),
        finish.export_key.to_vec(),
    )
}

/// Enrols `code` for `account` at `email` with `keyset` sealed under the export key.
pub async fn enrol(
    c: &mut Client,
    account: &str,
    email: &str,
    code: &[u8],
    keyset: &[u8],
) -> Result<Enrolled, Status> {
    let start = start_enrolment(c, account, code).await?;
    let (record, export_key) = finish_registration(&start, code);
    let sealed_keyset = seal(&export_key, keyset);
    let answer = c
        .finish_zero_knowledge_enrollment(api::FinishZeroKnowledgeEnrollmentRequest {
            enrollment_id: start.enrollment_id,
            account_id: account.into(),
            email: email.into(),
            registration_record: record,
            sealed_keyset: sealed_keyset.clone(),
        })
        .await?
        .into_inner();
    Ok(Enrolled {
        code_id: answer.code_id,
        export_key,
        sealed_keyset,
    })
}

/// A login in progress: the device's state after StartZeroKnowledgeRecovery.
pub struct Login {
    state: ClientLogin<Suite>,
    pub credential_response: Vec<u8>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login").finish_non_exhaustive()
    }
}

/// StartZeroKnowledgeRecovery on a verified flow with `code`.
pub async fn start_login(c: &mut Client, flow_id: &str, code: &[u8]) -> Result<Login, Status> {
    start_prepared_login(c, flow_id, prepare_login(code)).await
}

impl Login {
    /// The device's side of KE2: `Some((KE3, export key))` when the code was right.
    pub fn finish(self, code: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        let finish = self
            .state
            .finish(
                &mut rand_core_06::OsRng,
                code,
                CredentialResponse::deserialize(&self.credential_response).ok()?,
                ClientLoginFinishParameters::new(Some(CONTEXT), Default::default(), None),
            )
            .ok()?;
        Some((
            finish.message.serialize().to_vec(),
            finish.export_key.to_vec(),
        ))
    }
}

/// FinishZeroKnowledgeRecovery with `ke3`.
pub async fn finish_login(
    c: &mut Client,
    flow_id: &str,
    ke3: Vec<u8>,
) -> Result<api::FinishZeroKnowledgeRecoveryResponse, Status> {
    c.finish_zero_knowledge_recovery(api::FinishZeroKnowledgeRecoveryRequest {
        flow_id: flow_id.into(),
        credential_finalization: ke3,
    })
    .await
    .map(tonic::Response::into_inner)
}

/// Recovers on a verified flow with `code`: the keyset opened with the rebuilt export key.
pub async fn recover(c: &mut Client, flow_id: &str, code: &[u8]) -> Result<Vec<u8>, Status> {
    let login = start_login(c, flow_id, code).await?;
    let (ke3, export_key) = login
        .finish(code)
        .ok_or_else(|| Status::permission_denied("the device could not open KE2: wrong code"))?;
    let answer = finish_login(c, flow_id, ke3).await?;
    open(&export_key, &answer.sealed_keyset)
        .ok_or_else(|| Status::data_loss("the keyset does not open with the export key"))
}

/// Seals `keyset` under the export key (ChaCha20-Poly1305, a random nonce in front).
pub fn seal(export_key: &[u8], keyset: &[u8]) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new_from_slice(&export_key[..32]).expect("a 32-byte key");
    let mut nonce = [0u8; 12];
    rand_core_06::RngCore::fill_bytes(&mut rand_core_06::OsRng, &mut nonce);
    let mut out = nonce.to_vec();
    out.extend(
        cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: keyset,
                    aad: b"keyset",
                },
            )
            .expect("sealing"),
    );
    out
}

/// Opens what [`seal`] sealed.
pub fn open(export_key: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let cipher = ChaCha20Poly1305::new_from_slice(&export_key[..32]).ok()?;
    let (nonce, body) = sealed.split_at_checked(12)?;
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: body,
                aad: b"keyset",
            },
        )
        .ok()
}

/// A new code made on the device: `ZK1-` and 26 Crockford base32 characters (130 bits from the
/// operating system), in groups of 4 or 2. Only the device and the person ever see it.
pub fn make_code() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut bytes = [0u8; 26];
    rand_core_06::RngCore::fill_bytes(&mut rand_core_06::OsRng, &mut bytes);
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
        .collect();
    let groups: Vec<String> = chars.chunks(4).map(|g| g.iter().collect()).collect();
    format!("ZK1-{}", groups.join("-"))
}

/// KE1 made ahead of the call (a load tool keeps the device's first step out of what it
/// measures): the message and the device's state.
pub struct PreparedLogin {
    state: ClientLogin<Suite>,
    credential_request: Vec<u8>,
}

impl std::fmt::Debug for PreparedLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedLogin").finish_non_exhaustive()
    }
}

/// The device's first login step for `code`.
pub fn prepare_login(code: &[u8]) -> PreparedLogin {
    let start =
        ClientLogin::<Suite>::start(&mut rand_core_06::OsRng, code).expect("a credential request");
    PreparedLogin {
        credential_request: start.message.serialize().to_vec(),
        state: start.state,
    }
}

/// StartZeroKnowledgeRecovery with a prepared KE1.
pub async fn start_prepared_login(
    c: &mut Client,
    flow_id: &str,
    prepared: PreparedLogin,
) -> Result<Login, Status> {
    let answer = c
        .start_zero_knowledge_recovery(api::StartZeroKnowledgeRecoveryRequest {
            flow_id: flow_id.into(),
            credential_request: prepared.credential_request,
        })
        .await?
        .into_inner();
    Ok(Login {
        state: prepared.state,
        credential_response: answer.credential_response,
    })
}
