//! Zero-knowledge recovery (OPAQUE, RFC 9807): StartZeroKnowledgeEnrollment,
//! FinishZeroKnowledgeEnrollment, StartZeroKnowledgeRecovery, FinishZeroKnowledgeRecovery.
//!
//! The code is a key made on the device and never reaches the service. An enrolment is the
//! same enrolment as a server-held code's (one per account, the same address, notice, limit,
//! lockout, family, event and audit rules), holding the OPAQUE record and the keyset the device
//! sealed under OPAQUE's export key. A recovery is the ordinary flow (BeginRecovery,
//! VerifyEmail) finished by an OPAQUE login instead of RecoverAccount: each start is a guess,
//! counted before any work exactly as a RecoverAccount submission is; a finish whose KE3
//! verifies gives it back, completes the flow once and hands back the sealed keyset.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use recovery_storage::model::{CompletionUpdate, Effects, Enrollment, Flow, Opaque, StoredCode};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use zeroize::Zeroizing;

use super::{
    Error, HOUR_MS, MINUTE_MS, Recovery, RecoveryMode, Result,
    email::Email,
    notify::{AuditKind, audit},
    recovery_flow::Completed,
    secrets, validate_account_id,
};
use crate::{
    crypto::{KeyRing, Purpose, opaque, seal_for, unseal_for},
    time::Timestamp,
};

/// How long an enrollment id lives.
const ENROLLMENT_TTL_MS: i64 = 15 * MINUTE_MS;
/// The prefix of zero-knowledge enrolment ids (`code_id`), also the OPAQUE credential
/// identifier.
const CODE_ID_PREFIX: &str = "zk_";
/// The prefix of an enrollment id (the sealed state follows).
const ENROLLMENT_PREFIX: &str = "ze1.";
/// The sealed keyset's size bounds (API.md).
const MAX_KEYSET_BYTES: usize = 4096;

/// An enrolment started: what the device needs for the finish.
#[derive(Debug)]
pub struct StartedEnrollment {
    pub enrollment_id: String,
    pub registration_response: Vec<u8>,
    pub expires_at: Timestamp,
}

/// A zero-knowledge recovery completed.
pub struct RecoveredKeyset {
    pub account_id: String,
    /// The keyset sealed under the code's export key, as stored at enrolment.
    pub sealed_keyset: Vec<u8>,
    /// The enrolment was retired (`rotate_on_use`): the device enrols a new code.
    pub reenrollment_required: bool,
}

impl std::fmt::Debug for RecoveredKeyset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveredKeyset")
            .field("account_id", &self.account_id)
            .field("sealed_keyset", &"[redacted]")
            .field("reenrollment_required", &self.reenrollment_required)
            .finish()
    }
}

/// What an enrollment id carries, sealed and bound to its account.
#[derive(Serialize, Deserialize)]
struct EnrollmentState {
    /// The account it was started for.
    account_id: String,
    /// The enrolment's id, also its OPAQUE credential identifier.
    code_id: String,
    /// The key whose OPAQUE setup answered the registration.
    key_id: String,
    expires_at_ms: i64,
}

/// The server's login state between a start and its finish, sealed and bound to the flow.
#[derive(Serialize, Deserialize)]
struct LoginState {
    /// opaque-ke's serialized `ServerLogin` (base64): it holds the expected client MAC and the
    /// session key, wiped when dropped.
    state: Zeroizing<String>,
    /// The enrolment it was started against.
    code_id: String,
    /// The start's reserved failure and the lock it alone caused.
    failure_id: i64,
    own_lock_ms: Option<i64>,
    attempts_left: i32,
}

impl Recovery {
    /// Starts a zero-knowledge enrolment: answers the device's RegistrationRequest. Writes
    /// nothing; the enrollment id seals what the finish needs.
    #[tracing::instrument(name = "domain.start_zero_knowledge_enrollment", skip_all)]
    pub async fn start_zero_knowledge_enrollment(
        &self,
        account_id: &str,
        registration_request: &[u8],
    ) -> Result<StartedEnrollment> {
        let account_id = validate_account_id(account_id)?;
        let code_id = secrets::random_id(CODE_ID_PREFIX)?;
        let registration_response = self
            .opaque
            .registration_response(registration_request, code_id.as_bytes())
            .map_err(|e| malformed(e, REGISTRATION_REQUEST_MALFORMED))?;
        let expires_at = self.now() + ENROLLMENT_TTL_MS;
        let state = EnrollmentState {
            account_id: account_id.to_owned(),
            code_id,
            key_id: self.opaque.current_id().to_owned(),
            expires_at_ms: expires_at,
        };
        let sealed = seal_state(&self.keys, &enrollment_binding(account_id), &state)?;
        Ok(StartedEnrollment {
            enrollment_id: format!("{ENROLLMENT_PREFIX}{sealed}"),
            registration_response,
            expires_at: Timestamp::from_ms(expires_at),
        })
    }

    /// Finishes a zero-knowledge enrolment: stores the record and the sealed keyset as the
    /// account's enrolment, replacing any earlier one of either kind, once per enrollment id.
    #[tracing::instrument(name = "domain.finish_zero_knowledge_enrollment", skip_all)]
    pub async fn finish_zero_knowledge_enrollment(
        &self,
        enrollment_id: &str,
        account_id: &str,
        email: &str,
        registration_record: &[u8],
        sealed_keyset: &[u8],
    ) -> Result<(String, Timestamp)> {
        let account_id = validate_account_id(account_id)?;
        let email = Email::parse(email)?;
        opaque::parse_record(registration_record)
            .map_err(|e| malformed(e, REGISTRATION_RECORD_MALFORMED))?;
        if sealed_keyset.is_empty() || sealed_keyset.len() > MAX_KEYSET_BYTES {
            return Err(Error::OpaqueMessageMalformed(
                "sealed_keyset must be 1 to 4096 bytes (no attempt was counted)",
            ));
        }
        let now = self.now();
        let state = self.open_enrollment(enrollment_id, account_id, now)?;
        self.check_address_claim(account_id, &email, now).await?;
        let stored = StoredCode {
            code_id: state.code_id.clone(),
            hash: Opaque(STANDARD.encode(registration_record)),
            key_id: state.key_id,
            params: opaque::PARAMS.to_owned(),
            sealed_keyset: Some(Opaque(STANDARD.encode(sealed_keyset))),
        };
        // Single use: the enrolment the id started (its code_id, chosen here at the start and
        // sealed in the id, whichever key sealed it) is recorded with it, until an hour past
        // the id's expiry (a replica whose clock is behind still accepts the id until then).
        self.store_enrollment(
            account_id,
            &email,
            stored,
            Some((&state.code_id, state.expires_at_ms + HOUR_MS)),
            now,
        )
        .await?;
        Ok((state.code_id, Timestamp::from_ms(now)))
    }

    /// The state an enrollment id seals, if it is this service's, for this account, and
    /// unexpired; every other case is `ENROLLMENT_NOT_FOUND`.
    fn open_enrollment(
        &self,
        enrollment_id: &str,
        account_id: &str,
        now: i64,
    ) -> Result<EnrollmentState> {
        let sealed = enrollment_id
            .strip_prefix(ENROLLMENT_PREFIX)
            .ok_or(Error::EnrollmentNotFound)?;
        let state: EnrollmentState =
            open_state(&self.keys, &enrollment_binding(account_id), sealed)
                .map_err(|_| Error::EnrollmentNotFound)?;
        if state.account_id != account_id || now >= state.expires_at_ms {
            return Err(Error::EnrollmentNotFound);
        }
        Ok(state)
    }

    /// On a verified flow of a zero-knowledge enrolment: counts a guess of the code, then
    /// answers KE1 with KE2, keeping the sealed login state in the flow.
    #[tracing::instrument(name = "domain.start_zero_knowledge_recovery", skip_all)]
    pub async fn start_zero_knowledge_recovery(
        &self,
        flow_id: &str,
        credential_request: &[u8],
    ) -> Result<Vec<u8>> {
        // The message is checked before anything is looked up or counted.
        let ke1 = match opaque::parse_credential_request(credential_request) {
            Ok(ke1) => ke1,
            Err(err) => {
                // A verified flow of a server-held code says which RPC to use, whatever was sent.
                if self.enrolment_kind_of_verified_flow(flow_id).await
                    == Some(RecoveryMode::ServerHeld)
                {
                    return Err(Error::NotZeroKnowledge);
                }
                return Err(malformed(err, CREDENTIAL_REQUEST_MALFORMED));
            }
        };
        let now = self.now();
        let (flow, enrollment, stored) = self
            .verified_flow(flow_id, now, RecoveryMode::ZeroKnowledge)
            .await?;
        if self.keys.get(&stored.key_id).is_none() {
            // Answered as a wrong code would be (API.md), and counted as one: the enrolment
            // cannot recover until the person enrols again (docs/operating.md, key rotation).
            tracing::error!(
                account_id = %enrollment.account_id,
                key_id = %stored.key_id,
                "a zero-knowledge enrolment's key is not in the key ring: it answers as a wrong code"
            );
        }
        self.refuse_if_locked(&flow, &enrollment, now).await?;
        // From the count on, the start belongs to a task of its own: a caller that hangs up
        // between the count and the stored login state must not leave a counted guess (or the
        // lock it caused) that nothing records.
        let this = self.clone();
        self.submissions
            .run(async move { this.counted_start(flow, enrollment, stored, ke1, now).await })
            .await
    }

    /// Counts the start as a guess (before any work), answers KE1 with KE2 and keeps the
    /// sealed login state in the flow, with the start's audit event and any lock it caused.
    async fn counted_start(
        &self,
        flow: Flow,
        enrollment: Enrollment,
        stored: StoredCode,
        ke1: opaque::Ke1,
        now: i64,
    ) -> Result<Vec<u8>> {
        let submission = self.reserve_submission(&flow, &enrollment, now).await?;
        let record = STANDARD.decode(&stored.hash.0).unwrap_or_default();
        let (ke2, server_state) = self
            .opaque
            .login_start(
                &stored.key_id,
                &record,
                ke1,
                stored.code_id.as_bytes(),
            )
            .map_err(|e| {
                // KE1 was checked before anything was counted: this is the server's failure.
                tracing::error!(error = ?e, "OPAQUE login start failed after its guess was counted");
                Error::Internal
            })?;
        let sealed = seal_state(
            &self.keys,
            &login_binding(&flow.flow_id),
            &LoginState {
                state: Zeroizing::new(STANDARD.encode(&*server_state)),
                code_id: stored.code_id.clone(),
                failure_id: submission.failure_id,
                own_lock_ms: submission.own_lock.map(Timestamp::as_ms),
                attempts_left: submission.attempts_left,
            },
        )?;
        let client = super::recovery_flow::flow_client(&flow);
        let account_id = enrollment.account_id.as_str();
        let mut effects = Effects {
            messages: vec![],
            audit: vec![audit(
                account_id,
                AuditKind::ZeroKnowledgeRecoveryStarted,
                now,
                &client,
                &[
                    ("flow_id", flow.flow_id.clone()),
                    ("attempts_left", submission.attempts_left.to_string()),
                ],
            )?],
            events: vec![],
        };
        // A start that reached the lockout threshold locks now (its finish may never come):
        // the owner is told, and the lock's event goes out.
        let lock = self.lock_effects(&flow, &enrollment, &submission, &client, now)?;
        effects.messages.extend(lock.messages.iter().cloned());
        effects.audit.extend(lock.audit.iter().cloned());
        let stored_state = self
            .storage
            .store_login_state(&flow.flow_id, Opaque(sealed), now, effects)
            .await?;
        if !stored_state {
            // The flow ended meanwhile; the guess stays counted, and a lock it caused is told.
            if submission.own_lock.is_some() {
                self.storage.write_effects(lock, now).await?;
            }
            self.lock_stands(&submission, account_id, now).await?;
            return Err(match self.storage.find_flow(&flow.flow_id).await? {
                Some(f) if f.completed_at.is_some() => Error::FlowCompleted,
                _ => Error::FlowExpired,
            });
        }
        self.lock_stands(&submission, account_id, now).await?;
        Ok(ke2)
    }

    /// Checks the device's KE3 against the flow's pending login and completes the recovery
    /// once, handing back the sealed keyset (`FLOW_COMPLETED` afterwards, as API.md says).
    #[tracing::instrument(name = "domain.finish_zero_knowledge_recovery", skip_all)]
    pub async fn finish_zero_knowledge_recovery(
        &self,
        flow_id: &str,
        credential_finalization: &[u8],
    ) -> Result<RecoveredKeyset> {
        if credential_finalization.len() != opaque::KE3_LEN {
            return Err(Error::OpaqueMessageMalformed(
                CREDENTIAL_FINALIZATION_MALFORMED,
            ));
        }
        let now = self.now();
        let (flow, enrollment, stored) = self
            .verified_flow(flow_id, now, RecoveryMode::ZeroKnowledge)
            .await?;
        let Some(sealed) = flow.zk_login_state.clone() else {
            return Err(Error::ZeroKnowledgeNotStarted);
        };
        let login = open_login_state(&self.keys, &flow.flow_id, &sealed.0)?;
        if login.code_id != stored.code_id {
            // Started against an enrolment that has since been replaced.
            return Err(Error::FlowCompleted);
        }
        // Read before anything completes: a keyset that cannot be handed back completes nothing.
        let sealed_keyset = stored
            .sealed_keyset
            .as_ref()
            .and_then(|k| STANDARD.decode(&k.0).ok())
            .ok_or_else(|| {
                tracing::error!(account_id = %enrollment.account_id, "a zero-knowledge enrolment without a readable sealed keyset");
                Error::Internal
            })?;
        if !login_verifies(&login, credential_finalization)? {
            return Err(self
                .refuse_finish(
                    &flow,
                    &enrollment,
                    &sealed,
                    &login,
                    credential_finalization,
                    now,
                )
                .await?);
        }
        let retire = self.policy.reuse == super::ReusePolicy::RotateOnUse;
        let own_lock = login.own_lock_ms.map(Timestamp::from_ms);
        let update = CompletionUpdate {
            verified_code_id: stored.code_id.clone(),
            reservation: Some((login.failure_id, own_lock, None)),
            retire,
            login_state: Some(sealed),
            ..CompletionUpdate::default()
        };
        let completed = Completed {
            flow: &flow,
            enrollment: &enrollment,
            method: "zero_knowledge",
            code_id: &stored.code_id,
            rotated_code_id: None,
            retired: retire,
        };
        self.complete(&completed, update, now).await?;
        Ok(RecoveredKeyset {
            account_id: enrollment.account_id.clone(),
            sealed_keyset,
            reenrollment_required: retire,
        })
    }

    /// A KE3 that does not verify against the pending login. If it verifies against the login a
    /// newer start replaced, it is the right code, late: that start's reservation is given
    /// back and the newer login stays (`ZERO_KNOWLEDGE_NOT_STARTED`). Otherwise it is a wrong
    /// code: the start's failure stands and the login is over (`RECOVERY_CODE_MISMATCH`).
    async fn refuse_finish(
        &self,
        flow: &Flow,
        enrollment: &Enrollment,
        sealed: &Opaque,
        login: &LoginState,
        credential_finalization: &[u8],
        now: i64,
    ) -> Result<Error> {
        if let Some(previous_sealed) = &flow.zk_previous_login_state
            && let Ok(previous) = open_login_state(&self.keys, &flow.flow_id, &previous_sealed.0)
            && previous.code_id == login.code_id
            && login_verifies(&previous, credential_finalization)?
        {
            // Idempotent: the failure row is deleted by its id, the lock lifted only if it is
            // still the one this start caused. The newer login stays as it is.
            self.storage
                .release_recovery_attempt(
                    &enrollment.account_id,
                    previous.failure_id,
                    previous.own_lock_ms.map(Timestamp::from_ms),
                    None,
                )
                .await?;
            tracing::info!(flow_id = %flow.flow_id, "a right finish of a login a newer start replaced");
            return Ok(Error::ZeroKnowledgeNotStarted);
        }
        let client = super::recovery_flow::flow_client(flow);
        let failure = audit(
            &enrollment.account_id,
            AuditKind::RecoveryCodeFailed,
            now,
            &client,
            &[
                ("flow_id", flow.flow_id.clone()),
                ("attempts_left", login.attempts_left.to_string()),
                ("method", "zero_knowledge".to_owned()),
            ],
        )?;
        let ended = self
            .storage
            .end_login_state(
                &flow.flow_id,
                sealed,
                now,
                Effects {
                    audit: vec![failure],
                    ..Effects::none()
                },
            )
            .await?;
        if !ended {
            tracing::debug!(flow_id = %flow.flow_id, "a concurrent finish ended the login first");
        }
        Ok(Error::RecoveryCodeMismatch {
            attempts_left: login.attempts_left,
        })
    }
}

/// What an enrollment id is bound to: its account.
fn enrollment_binding(account_id: &str) -> String {
    format!("zk-enrollment\0{account_id}")
}

/// Seals a state the service hands out or keeps (an enrollment id, a login), bound to what it
/// belongs to, under the current key's OPAQUE-state subkey.
fn seal_state<T: Serialize>(keys: &KeyRing, bound_to: &str, state: &T) -> Result<String> {
    let plaintext = Zeroizing::new(serde_json::to_vec(state).map_err(|e| {
        tracing::error!(error = %e, "a zero-knowledge state could not be written");
        Error::Internal
    })?);
    seal_for(Purpose::OpaqueState, keys.current(), bound_to, &plaintext).map_err(secrets::internal)
}

/// Opens what [`seal_state`] sealed for `bound_to`, with any key of the ring; why not when it
/// cannot (tampered, bound to something else, its key gone, not this service's).
fn open_state<T: DeserializeOwned>(
    keys: &KeyRing,
    bound_to: &str,
    sealed: &str,
) -> std::result::Result<T, &'static str> {
    let plaintext = unseal_for(Purpose::OpaqueState, keys, bound_to, sealed)?;
    serde_json::from_slice(&plaintext).map_err(|_| "sealed state format")
}

/// What a login state is bound to: its flow.
fn login_binding(flow_id: &str) -> String {
    format!("zk-login\0{flow_id}")
}

/// Whether KE3 verifies against a login's server state.
fn login_verifies(login: &LoginState, credential_finalization: &[u8]) -> Result<bool> {
    let server_state = Zeroizing::new(STANDARD.decode(login.state.as_bytes()).map_err(|_| {
        tracing::error!("an unreadable OPAQUE login state");
        Error::Internal
    })?);
    match opaque::login_finish(&server_state, credential_finalization) {
        Ok(()) => Ok(true),
        Err(opaque::Error::NotVerified) => Ok(false),
        Err(err) => Err(malformed(err, CREDENTIAL_FINALIZATION_MALFORMED)),
    }
}

fn open_login_state(keys: &KeyRing, flow_id: &str, sealed: &str) -> Result<LoginState> {
    open_state(keys, &login_binding(flow_id), sealed).map_err(|what| {
        // Sealed under a key that left the ring since the start: start again.
        tracing::warn!(flow_id, what, "an OPAQUE login state that cannot be opened");
        Error::ZeroKnowledgeNotStarted
    })
}

/// What each malformed message is answered with.
const REGISTRATION_REQUEST_MALFORMED: &str = "registration_request must be OPAQUE's RegistrationRequest (32 bytes, a valid ristretto255 element); no attempt was counted";
const REGISTRATION_RECORD_MALFORMED: &str = "registration_record must be OPAQUE's RegistrationRecord (192 bytes, valid encodings); no attempt was counted";
const CREDENTIAL_REQUEST_MALFORMED: &str =
    "credential_request must be OPAQUE's KE1 (96 bytes, valid encodings); no attempt was counted";
const CREDENTIAL_FINALIZATION_MALFORMED: &str =
    "credential_finalization must be OPAQUE's KE3 (64 bytes); no attempt was counted";

/// `OPAQUE_MESSAGE_MALFORMED` (with `message`) for a message the protocol refused; the
/// server's own failures are internal.
fn malformed(err: opaque::Error, message: &'static str) -> Error {
    match err {
        opaque::Error::Malformed | opaque::Error::NotVerified => {
            Error::OpaqueMessageMalformed(message)
        }
        opaque::Error::Internal => {
            tracing::error!("an OPAQUE step failed on the server's side");
            Error::Internal
        }
    }
}
