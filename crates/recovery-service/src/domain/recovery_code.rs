//! An account's recovery code: CreateRecoveryCode (create or replace), GetRecoveryStatus,
//! RevokeRecoveryCode, UpdateRecoveryEmail, and its audit trail (ListAuditEvents).

use crate::time::Timestamp;

use serde_json::json;

use super::{
    AuditEvent, AuditPage, CreatedCode, DAY_MS, Error, HOUR_MS, Recovery, RecoveryMode, Result,
    Status,
    code::RecoveryCode,
    email::{Email, mask},
    event::EventType,
    notice::{self, Notice},
    notify::{AuditKind, Client, audit, context, message, personal},
    secrets, truncate, validate_account_id,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use recovery_storage::{
    ChangeError, ConflictKind, StorageError,
    model::{Effects, NewEnrollment, Opaque, PutOutcome, StoredCode},
};

const DEFAULT_PAGE_SIZE: i32 = 50;
/// Tries of a change that conflicted with another writer.
const MAX_TRIES: u32 = 3;

const MAX_PAGE_SIZE: i32 = 500;
const MAX_REASON_BYTES: usize = 256;

impl Recovery {
    /// Creates the account's recovery code, replacing any live one (which stops working at
    /// once, with every flow in progress). The plaintext is returned here only.
    #[tracing::instrument(name = "domain.create_recovery_code", skip_all)]
    pub async fn create_recovery_code(&self, account_id: &str, email: &str) -> Result<CreatedCode> {
        let account_id = validate_account_id(account_id)?;
        let email = Email::parse(email)?;
        // The account's limit before admission: a loop on one account is refused with one
        // statement (that writes nothing once over the limit) and never takes a hashing slot
        // from other accounts' recoveries.
        self.limit(
            &format!("create:hour:account:{account_id}"),
            HOUR_MS,
            self.policy.creates_per_account_per_hour,
            "creates_per_account",
            self.now(),
        )
        .await?;
        let permit = self.hasher.admit(account_id).await?;
        self.check_address_claim(account_id, &email, self.now())
            .await?;
        let code = RecoveryCode::generate()?;
        let key = self.keys.current();
        let hash = self.hasher.hash(&permit, code.canonical(), key).await?;
        drop(permit);
        let code_id = secrets::random_id(super::CODE_ID_PREFIX)?;
        let now = self.now();
        let stored = StoredCode {
            code_id: code_id.clone(),
            hash: Opaque(hash),
            key_id: key.id().to_owned(),
            params: self.hasher.params().label(),
            sealed_keyset: None,
        };
        self.store_enrollment(account_id, &email, stored, None, now)
            .await?;
        Ok(CreatedCode {
            recovery_code: code.display(),
            code_id,
            created_at: Timestamp::from_ms(now),
        })
    }

    /// Stores a new enrolment of either kind, replacing any live one (which stops working at
    /// once, with every flow in progress), with its notices, audit and events, in one
    /// transaction. `single_use` (a finished enrollment id's key and expiry) makes the store
    /// happen once: a second one is `ENROLLMENT_NOT_FOUND`.
    pub(super) async fn store_enrollment(
        &self,
        account_id: &str,
        email: &Email,
        stored: StoredCode,
        single_use: Option<(&str, i64)>,
        now: i64,
    ) -> Result<PutOutcome> {
        let code_id = stored.code_id.clone();
        let mode = RecoveryMode::of(&stored);
        let new = NewEnrollment {
            account_id: account_id.to_owned(),
            email: email.address().to_owned(),
            email_lookup: email.lookup().to_owned(),
            code: stored,
        };
        // The effects depend on the outcome (created or replaced): built once, inside the
        // transaction; if building fails, the change rolls back.
        let client = Client::default();
        let keys = &self.keys;
        let effects = |outcome: &PutOutcome| -> Result<Effects> {
            let (notice, audit_kind) = if outcome.replaced {
                (
                    Notice::CodeReplaced(context(now, &client)),
                    AuditKind::CodeReplaced,
                )
            } else {
                (
                    Notice::CodeCreated(context(now, &client)),
                    AuditKind::CodeCreated,
                )
            };
            // The new address is told; so is the previous one when the address changed.
            let mut recipients = vec![email.address()];
            if let Some(previous) = outcome
                .previous_email
                .as_deref()
                .filter(|p| *p != email.address())
            {
                recipients.push(previous);
            }
            let messages = recipients
                .into_iter()
                .map(|to| message(keys, &notice, Some(account_id), to))
                .collect::<Result<Vec<_>>>()?;
            Ok(Effects {
                messages,
                audit: vec![audit(
                    account_id,
                    audit_kind,
                    now,
                    &client,
                    &[
                        ("code_id", code_id.clone()),
                        ("email_hint", mask(email.address())),
                        ("mode", mode.as_str().to_owned()),
                    ],
                )?],
                events: self.event(
                    if outcome.replaced {
                        EventType::RecoveryCodeReplaced
                    } else {
                        EventType::RecoveryCodeCreated
                    },
                    account_id,
                    now,
                    json!({
                        "account_id": account_id,
                        "code_id": code_id,
                        "email_hint": mask(email.address()),
                        "mode": mode.as_str(),
                    }),
                )?,
            })
        };
        // A conflict another writer caused is retried (bounded); an address in use is final.
        let mut tries = 0;
        let outcome = loop {
            tries += 1;
            let result = match single_use {
                None => {
                    self.storage
                        .put_recovery_code(new.clone(), now, effects)
                        .await
                }
                Some((key, expires_at)) => {
                    self.storage
                        .finish_enrollment(new.clone(), key, expires_at, now, effects)
                        .await
                }
            };
            match result {
                Err(ChangeError::Storage(StorageError::Conflict {
                    kind: ConflictKind::AlreadyUsed,
                    ..
                })) => return Err(Error::EnrollmentNotFound),
                Err(ChangeError::Storage(StorageError::Conflict {
                    kind: ConflictKind::AddressInUse,
                    ..
                })) => {
                    self.refuse_claim(account_id, email, now).await?;
                    return Err(Error::EmailInUse);
                }
                Err(ChangeError::Storage(StorageError::Conflict { .. })) if tries < MAX_TRIES => {}
                other => break other?,
            }
        };
        self.mail_enqueued();
        tracing::info!(
            account_id,
            code_id,
            mode = mode.as_str(),
            replaced = outcome.replaced,
            generation = outcome.generation,
            "recovery code created"
        );
        Ok(outcome)
    }

    /// Whether the account has a live code, and its usage. Never the code. No span of its own:
    /// it is one read, whose `db.find_enrollment` span is the RPC span's only child (a third
    /// span per call cost 4 % of the calls/s with export on).
    pub async fn get_recovery_status(&self, account_id: &str) -> Result<Status> {
        let account_id = validate_account_id(account_id)?;
        let now = self.now();
        // One statement: the enrolment and the contacts' summary.
        let (enrollment, contacts) = self
            .storage
            .recovery_status(account_id, self.policy.contact_completion_window_ms, now)
            .await?;
        let with_contacts = Status {
            active_contacts: u32::try_from(contacts.active).unwrap_or(u32::MAX),
            contact_threshold: contacts
                .threshold
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(1),
            open_contact_recoveries: u32::try_from(contacts.open_flows).unwrap_or(u32::MAX),
            contact_recovery_completes_at: contacts.completes_at,
            ..Status::default()
        };
        let Some(enrollment) = enrollment else {
            return Ok(with_contacts);
        };
        let Some(code) = enrollment.code else {
            return Ok(with_contacts);
        };
        Ok(Status {
            enrolled: true,
            mode: Some(RecoveryMode::of(&code)),
            code_id: Some(code.code_id),
            created_at: enrollment.code_created_at,
            last_used_at: enrollment.last_used_at,
            use_count: u32::try_from(enrollment.use_count).unwrap_or(u32::MAX),
            locked_until: enrollment.locked_until.filter(|until| until.as_ms() > now),
            email_hint: Some(mask(&enrollment.email)),
            ..with_contacts
        })
    }

    /// Deletes the account's code; flows in progress are cancelled and the owner notified.
    #[tracing::instrument(name = "domain.revoke_recovery_code", skip_all)]
    pub async fn revoke_recovery_code(&self, account_id: &str, reason: &str) -> Result<Timestamp> {
        let account_id = validate_account_id(account_id)?;
        let reason = truncate(reason.trim(), MAX_REASON_BYTES);
        let now = self.now();
        let client = Client::default();
        let keys = &self.keys;
        let result = self
            .storage
            .revoke_recovery_code(account_id, now, |before| -> Result<Effects> {
                let code_id = before
                    .code
                    .as_ref()
                    .map(|c| c.code_id.clone())
                    .unwrap_or_default();
                Ok(Effects {
                    messages: vec![message(
                        keys,
                        &Notice::CodeRevoked(context(now, &client)),
                        Some(account_id),
                        &before.email,
                    )?],
                    audit: vec![personal(
                        audit(
                            account_id,
                            AuditKind::CodeRevoked,
                            now,
                            &client,
                            &[("code_id", code_id.clone())],
                        )?,
                        &[("reason", reason.clone())],
                    )],
                    events: self.event(
                        EventType::RecoveryCodeRevoked,
                        account_id,
                        now,
                        json!({"account_id": account_id, "code_id": code_id, "revoked_by": "request"}),
                    )?,
                })
            })
            .await;
        match result {
            Ok(_) => {
                self.mail_enqueued();
                tracing::info!(account_id, "recovery code revoked");
                Ok(Timestamp::from_ms(now))
            }
            Err(ChangeError::Storage(StorageError::NotFound)) => Err(Error::NotEnrolled),
            Err(other) => Err(other.into()),
        }
    }

    /// Changes where recovery mail goes. The code stays valid; flows in progress are cancelled;
    /// both the old and the new address are told.
    #[tracing::instrument(name = "domain.update_recovery_email", skip_all)]
    pub async fn update_recovery_email(&self, account_id: &str, email: &str) -> Result<Timestamp> {
        let account_id = validate_account_id(account_id)?;
        let email = Email::parse(email)?;
        let now = self.now();
        self.check_address_claim(account_id, &email, now).await?;
        let client = Client::default();
        let keys = &self.keys;
        let new_hint = mask(email.address());
        let result = self
            .storage
            .update_recovery_email(
                account_id,
                email.address(),
                email.lookup(),
                now,
                |before| -> Result<Effects> {
                    let notice = Notice::EmailChanged(notice::EmailChanged {
                        new_email_hint: new_hint.clone(),
                        context: context(now, &client),
                    });
                    let mut messages =
                        vec![message(keys, &notice, Some(account_id), email.address())?];
                    if before.email != email.address() {
                        messages.push(message(keys, &notice, Some(account_id), &before.email)?);
                    }
                    Ok(Effects {
                        messages,
                        audit: vec![audit(
                            account_id,
                            AuditKind::EmailUpdated,
                            now,
                            &client,
                            &[
                                ("old_email_hint", mask(&before.email)),
                                ("email_hint", new_hint.clone()),
                            ],
                        )?],
                        events: self.event(
                            EventType::RecoveryEmailUpdated,
                            account_id,
                            now,
                            json!({"account_id": account_id, "email_hint": new_hint}),
                        )?,
                    })
                },
            )
            .await;
        match result {
            Ok(_) => {
                self.mail_enqueued();
                Ok(Timestamp::from_ms(now))
            }
            Err(ChangeError::Storage(StorageError::NotFound)) => Err(Error::NotEnrolled),
            Err(ChangeError::Storage(StorageError::Conflict {
                kind: ConflictKind::AddressInUse,
                ..
            })) => {
                self.refuse_claim(account_id, &email, now).await?;
                Err(Error::EmailInUse)
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Counts a claim of a new address for the account: at most
    /// `address_claims_per_day` a day, so `EMAIL_IN_USE` cannot be used to test which
    /// addresses are enrolled. Keeping the current address is no claim.
    pub(super) async fn check_address_claim(
        &self,
        account_id: &str,
        email: &Email,
        now: i64,
    ) -> Result<()> {
        let current = self.storage.find_enrollment(account_id).await?;
        if current.is_some_and(|e| {
            e.code.is_some() && super::email::lookup_of(&e.email) == email.lookup()
        }) {
            return Ok(());
        }
        // Per account, and per address (an attacker with many accounts probes one address no
        // faster than with one).
        let address = secrets::address_key(&self.keys, email.lookup());
        for (key, limit) in [
            (
                format!("claims:day:account:{account_id}"),
                "address_claims_per_account",
            ),
            (
                format!("claims:day:address:{address}"),
                "address_claims_per_address",
            ),
        ] {
            self.limit(&key, DAY_MS, self.policy.address_claims_per_day, limit, now)
                .await?;
        }
        Ok(())
    }

    /// Audits a claim refused because the address belongs to another account (nothing is
    /// sent to that address).
    async fn refuse_claim(&self, account_id: &str, email: &Email, now: i64) -> Result<()> {
        let event = audit(
            account_id,
            AuditKind::EmailClaimRefused,
            now,
            &Client::default(),
            &[("email_hint", mask(email.address()))],
        )?;
        self.storage.append_audit(event).await?;
        tracing::info!(
            account_id,
            "address claim refused: in use by another account"
        );
        Ok(())
    }

    /// One page of the account's audit trail, newest first.
    #[tracing::instrument(name = "domain.list_audit_events", skip_all)]
    pub async fn list_audit_events(
        &self,
        account_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<AuditPage> {
        let account_id = validate_account_id(account_id)?;
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => {
                return Err(Error::InvalidPage("page_size must not be negative".into()));
            }
            n => n.min(MAX_PAGE_SIZE),
        };
        let before = decode_page_token(page_token)?;
        let limit = u64::try_from(size).unwrap_or(50);
        // One extra row tells whether another page follows. The page and the verdict on the
        // trail come from one snapshot: the rows shown are the rows verified.
        let (mut records, chain) = self
            .storage
            .audit_page(account_id, before, limit + 1)
            .await?;
        let mut more = records.len() as u64 > limit;
        records.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        // Bounded by size as well as count: a page always fits the response limit.
        let mut bytes = 0;
        if let Some(fit) = records.iter().position(|r| {
            bytes += encoded_size(r);
            bytes > MAX_PAGE_BYTES
        }) {
            records.truncate(fit.max(1));
            more = true;
        }
        let next_page_token = match (more, records.last()) {
            (true, Some(last)) => encode_page_token(last.seq),
            _ => String::new(),
        };
        let events = records
            .into_iter()
            .map(|r| {
                let kind = AuditKind::parse(&r.kind).ok_or_else(|| {
                    tracing::error!(event_id = %r.event_id, kind = %r.kind, "an audit event of a kind this build does not know");
                    Error::Internal
                })?;
                Ok(AuditEvent {
                    event_id: r.event_id,
                    account_id: r.account_id,
                    kind,
                    occurred_at: r.occurred_at,
                    client_ip: r.client.ip,
                    client_user_agent: r.client.user_agent,
                    details: r.details,
                    forgotten: r.forgotten,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if !chain.valid {
            tracing::warn!(account_id, first_broken_event_id = ?chain.first_broken_event_id, "audit trail does not verify");
        }
        Ok(AuditPage {
            events,
            next_page_token,
            chain_valid: chain.valid,
            first_broken_event_id: chain.first_broken_event_id,
        })
    }
}

/// What a page of the trail may take on the wire: well under the service's 64 KiB response
/// limit, so the few bytes of the rest of the answer always fit.
const MAX_PAGE_BYTES: usize = 48 * 1024;

/// An upper bound of one event's protobuf size: its text, and for every field and map entry
/// a tag and a length (at most 3 bytes each below 16 KiB), the timestamp and the kind.
fn encoded_size(r: &recovery_storage::model::AuditRecord) -> usize {
    let text = r.event_id.len()
        + r.account_id.len()
        + r.client.ip.as_ref().map_or(0, String::len)
        + r.client.user_agent.as_ref().map_or(0, String::len)
        + r.details
            .iter()
            .map(|(k, v)| k.len() + v.len() + 9)
            .sum::<usize>();
    text + 64
}

/// The opaque `next_page_token` that continues after audit position `seq`.
pub fn encode_page_token(seq: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("a1:{seq}"))
}

/// The audit position a `page_token` continues after; `None` for the first page. Anything
/// [`encode_page_token`] did not make is `INVALID_PAGE`.
pub fn decode_page_token(token: &str) -> Result<Option<i64>> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || Error::InvalidPage("page_token was not issued by this service".into());
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix("a1:")
        .and_then(|seq| seq.parse::<i64>().ok())
        .filter(|seq| *seq > 0)
        // Only the exact form this service issues (no leading zeros, signs or spaces).
        .filter(|seq| encode_page_token(*seq) == token)
        .map(Some)
        .ok_or_else(invalid)
}
