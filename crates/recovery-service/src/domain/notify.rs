//! Notifications and audit events, built here and written by storage in the same transaction as
//! the change that causes them. Payloads are sealed: a verification message carries a code.

use std::{collections::BTreeMap, net::IpAddr};

use recovery_storage::model::{ClientInfo, NewAuditEvent, NewMessage, Opaque};

use super::{
    Error,
    notice::{Context, Notice},
    secrets,
};
use crate::crypto::KeyRing;

/// Audit event kinds, named as the proto's `AuditEventKind` without its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    CodeCreated,
    CodeReplaced,
    CodeRevoked,
    EmailUpdated,
    RecoveryStarted,
    EmailVerified,
    EmailCodeFailed,
    RecoveryCodeFailed,
    RecoveryCompleted,
    RecoveryLocked,
    /// A new address was refused: another account recovers with it.
    EmailClaimRefused,
    /// A recovery-code submission refused before any check (`RECOVERY_LOCKED`,
    /// `TOO_MANY_ATTEMPTS`).
    SubmissionRefused,
    /// PutFamilyMember put the account in a family.
    FamilyMemberPut,
    /// RemoveFamilyMember took the account out of its family.
    FamilyMemberRemoved,
    /// An organizer began assisted recovery of the account.
    AssistedRecoveryStarted,
    /// The member verified an assisted flow.
    AssistedRecoveryVerified,
    /// A wrong code was submitted to an assisted flow.
    AssistedCodeFailed,
    /// An organizer completed assisted recovery of the account.
    AssistedRecoveryCompleted,
    /// An assisted flow ended without completing (cancelled, superseded, ...).
    AssistedRecoveryCancelled,
    /// StartZeroKnowledgeRecovery counted a guess of the code.
    ZeroKnowledgeRecoveryStarted,
    /// ForgetAccount erased the person; the trail's last event.
    AccountForgotten,
    /// The owner invited a recovery contact.
    RecoveryContactInvited,
    /// The contact accepted.
    RecoveryContactAccepted,
    /// A contact was removed.
    RecoveryContactRemoved,
    /// The owner set the contact threshold.
    RecoveryContactThresholdSet,
    /// BeginContactRecovery for the account.
    ContactRecoveryStarted,
    /// A contact vouched.
    ContactVouched,
    /// A contact submitted a wrong confirmation code.
    ConfirmationCodeFailed,
    /// The vouches met the threshold: the waiting period began.
    ContactRecoveryPending,
    /// A contact flow ended without completing, or its waiting period stopped.
    ContactRecoveryCancelled,
    /// CompleteContactRecovery recovered the account.
    ContactRecoveryCompleted,
}

impl AuditKind {
    /// Every kind.
    pub const ALL: [Self; 31] = [
        Self::CodeCreated,
        Self::CodeReplaced,
        Self::CodeRevoked,
        Self::EmailUpdated,
        Self::RecoveryStarted,
        Self::EmailVerified,
        Self::EmailCodeFailed,
        Self::RecoveryCodeFailed,
        Self::RecoveryCompleted,
        Self::RecoveryLocked,
        Self::EmailClaimRefused,
        Self::SubmissionRefused,
        Self::FamilyMemberPut,
        Self::FamilyMemberRemoved,
        Self::AssistedRecoveryStarted,
        Self::AssistedRecoveryVerified,
        Self::AssistedCodeFailed,
        Self::AssistedRecoveryCompleted,
        Self::AssistedRecoveryCancelled,
        Self::ZeroKnowledgeRecoveryStarted,
        Self::AccountForgotten,
        Self::RecoveryContactInvited,
        Self::RecoveryContactAccepted,
        Self::RecoveryContactRemoved,
        Self::RecoveryContactThresholdSet,
        Self::ContactRecoveryStarted,
        Self::ContactVouched,
        Self::ConfirmationCodeFailed,
        Self::ContactRecoveryPending,
        Self::ContactRecoveryCancelled,
        Self::ContactRecoveryCompleted,
    ];

    /// The kind a stored name stands for; `None` for a name this build does not know.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The name stored in the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CodeCreated => "CODE_CREATED",
            Self::CodeReplaced => "CODE_REPLACED",
            Self::CodeRevoked => "CODE_REVOKED",
            Self::EmailUpdated => "EMAIL_UPDATED",
            Self::RecoveryStarted => "RECOVERY_STARTED",
            Self::EmailVerified => "EMAIL_VERIFIED",
            Self::EmailCodeFailed => "EMAIL_CODE_FAILED",
            Self::RecoveryCodeFailed => "RECOVERY_CODE_FAILED",
            Self::RecoveryCompleted => "RECOVERY_COMPLETED",
            Self::RecoveryLocked => "RECOVERY_LOCKED",
            Self::EmailClaimRefused => "EMAIL_CLAIM_REFUSED",
            Self::SubmissionRefused => "SUBMISSION_REFUSED",
            Self::FamilyMemberPut => "FAMILY_MEMBER_PUT",
            Self::FamilyMemberRemoved => "FAMILY_MEMBER_REMOVED",
            Self::AssistedRecoveryStarted => "ASSISTED_RECOVERY_STARTED",
            Self::AssistedRecoveryVerified => "ASSISTED_RECOVERY_VERIFIED",
            Self::AssistedCodeFailed => "ASSISTED_CODE_FAILED",
            Self::AssistedRecoveryCompleted => "ASSISTED_RECOVERY_COMPLETED",
            Self::AssistedRecoveryCancelled => "ASSISTED_RECOVERY_CANCELLED",
            Self::ZeroKnowledgeRecoveryStarted => "ZERO_KNOWLEDGE_RECOVERY_STARTED",
            Self::AccountForgotten => "ACCOUNT_FORGOTTEN",
            Self::RecoveryContactInvited => "RECOVERY_CONTACT_INVITED",
            Self::RecoveryContactAccepted => "RECOVERY_CONTACT_ACCEPTED",
            Self::RecoveryContactRemoved => "RECOVERY_CONTACT_REMOVED",
            Self::RecoveryContactThresholdSet => "RECOVERY_CONTACT_THRESHOLD_SET",
            Self::ContactRecoveryStarted => "CONTACT_RECOVERY_STARTED",
            Self::ContactVouched => "CONTACT_VOUCHED",
            Self::ConfirmationCodeFailed => "CONFIRMATION_CODE_FAILED",
            Self::ContactRecoveryPending => "CONTACT_RECOVERY_PENDING",
            Self::ContactRecoveryCancelled => "CONTACT_RECOVERY_CANCELLED",
            Self::ContactRecoveryCompleted => "CONTACT_RECOVERY_COMPLETED",
        }
    }
}

/// The end user's context, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl Client {
    pub fn to_info(&self) -> ClientInfo {
        ClientInfo {
            ip: self.ip.map(|ip| ip.to_string()),
            user_agent: self.user_agent.clone(),
        }
    }
}

/// A sealed outbox message carrying `notice` to `recipient`.
pub fn message(
    keys: &KeyRing,
    notice: &Notice,
    account_id: Option<&str>,
    recipient: &str,
) -> Result<NewMessage, Error> {
    let message_id = secrets::random_id("msg_")?;
    let plaintext = notice.to_json().map_err(|e| {
        tracing::error!(error = %e, kind = %notice.kind(), "cannot encode a message");
        Error::Internal
    })?;
    let payload = secrets::seal(keys.current(), &message_id, &plaintext)?;
    Ok(NewMessage {
        message_id,
        kind: notice.kind().as_str().to_owned(),
        account_id: account_id.map(str::to_owned),
        recipient: recipient.to_owned(),
        payload: Opaque(payload),
        deliver: true,
    })
}

/// When and from where, for a message.
pub fn context(now_ms: i64, client: &Client) -> Context {
    Context {
        occurred_at_ms: now_ms,
        ip_address: client.ip.map(|ip| ip.to_string()),
        user_agent: client.user_agent.clone(),
    }
}

/// The details that are about the person (masked addresses): wherever an event carries them,
/// they are sealed with its client under the account's data key (see [`personal`]).
const PERSONAL_DETAILS: &[&str] = &["email_hint", "old_email_hint", "contact_email_hint"];

/// Whether detail `name` of an audit event of `kind` is about the person: the masked addresses
/// of [`PERSONAL_DETAILS`], and the free-text reason of a revocation or a forget (the reasons
/// of refusals and ended flows are codes).
pub fn is_personal_detail(kind: &str, name: &str) -> bool {
    PERSONAL_DETAILS.contains(&name)
        || (name == "reason"
            && [AuditKind::CodeRevoked, AuditKind::AccountForgotten]
                .iter()
                .any(|k| k.as_str() == kind))
}

/// An audit event with `details`; those of [`PERSONAL_DETAILS`], and the client, are personal.
pub fn audit(
    account_id: &str,
    kind: AuditKind,
    now_ms: i64,
    client: &Client,
    details: &[(&str, String)],
) -> Result<NewAuditEvent, Error> {
    let (personal, details): (Vec<_>, Vec<_>) = details
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .partition(|(k, _)| PERSONAL_DETAILS.contains(&k.as_str()));
    Ok(NewAuditEvent {
        event_id: secrets::random_id("ev_")?,
        account_id: account_id.to_owned(),
        serialize_on: None,
        kind: kind.as_str().to_owned(),
        occurred_at: crate::time::Timestamp::from_ms(now_ms),
        client: client.to_info(),
        details: details
            .into_iter()
            .chain([("caller".to_owned(), super::caller::current())])
            .collect::<BTreeMap<_, _>>(),
        personal: personal.into_iter().collect(),
        coalesce: None,
    })
}

/// `event` with more personal details (free text a person or operator typed, such as a
/// revocation's reason): stored sealed under the account's data key, gone once the account is
/// forgotten.
pub fn personal(mut event: NewAuditEvent, details: &[(&str, String)]) -> NewAuditEvent {
    event.personal.extend(
        details
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| ((*k).to_owned(), v.clone())),
    );
    event
}

/// A refusal's audit event that folds its repeats (same kind and same `on` details within an
/// hour of the first) into one row with a `count`, keeping the latest value of each `carry`
/// detail as `last_<name>`: a flood of one refusal cannot flood the trail, even spread over
/// several flows.
pub fn folding(
    mut event: NewAuditEvent,
    on: &'static [&'static str],
    carry: &'static [&'static str],
) -> NewAuditEvent {
    event.coalesce = Some(recovery_storage::model::Coalesce {
        on,
        carry,
        window_ms: crate::time::HOUR_MS,
        at: crate::time::rfc3339(event.occurred_at.as_ms()),
    });
    event
}

/// The browser a user agent names, in a short form ("Firefox 133 on Linux") built only from
/// the parser's own names and the major version's digits: never the request's text.
pub fn browser(agent: &str) -> String {
    const UNKNOWN: &str = "UNKNOWN";
    let Some(parsed) = woothee::parser::Parser::new()
        .parse(agent)
        .filter(|p| p.name != UNKNOWN && !p.name.is_empty())
    else {
        return "an unknown browser".to_owned();
    };
    let mut out = parsed.name.to_owned();
    let major = parsed.version.split('.').next().unwrap_or_default();
    if !major.is_empty() && major.len() <= 6 && major.bytes().all(|b| b.is_ascii_digit()) {
        out.push(' ');
        out.push_str(major);
    }
    if parsed.os != UNKNOWN && !parsed.os.is_empty() {
        out.push_str(" on ");
        out.push_str(parsed.os);
    }
    printable(&out)
}

/// `text` reduced to printable ASCII (anything else becomes `?`), at most 120 characters: what
/// mail and a contact's view may show of a value a request carried.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(120)
        .collect()
}
