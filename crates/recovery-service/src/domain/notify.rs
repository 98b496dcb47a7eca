//! Notifications and audit events, built here and written by storage in the same transaction as
//! the change that causes them. Payloads are sealed: a verification message carries a code.

use std::{collections::BTreeMap, net::IpAddr};

use recovery_storage::model::{ClientInfo, NewAuditEvent, NewMessage, Opaque};
use serde_json::json;

use super::{Error, secrets};
use crate::config::KeyRing;

/// The kinds of message the outbox carries (templates live with delivery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    VerificationCode,
    RecoveryStarted,
    CodeCreated,
    CodeReplaced,
    CodeRevoked,
    EmailChanged,
    RecoveryCompleted,
    RecoveryLocked,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerificationCode => "verification_code",
            Self::RecoveryStarted => "recovery_started",
            Self::CodeCreated => "code_created",
            Self::CodeReplaced => "code_replaced",
            Self::CodeRevoked => "code_revoked",
            Self::EmailChanged => "email_changed",
            Self::RecoveryCompleted => "recovery_completed",
            Self::RecoveryLocked => "recovery_locked",
        }
    }
}

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
}

impl AuditKind {
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

/// A sealed outbox message of `kind` to `recipient` with template `data`.
pub fn message(
    keys: &KeyRing,
    kind: MessageKind,
    account_id: Option<&str>,
    recipient: &str,
    data: serde_json::Value,
) -> Result<NewMessage, Error> {
    let message_id = secrets::random_id("msg_")?;
    let plaintext = zeroize::Zeroizing::new(serde_json::to_vec(&data).map_err(|e| {
        tracing::error!(error = %e, "cannot encode a message");
        Error::Internal
    })?);
    let payload = secrets::seal(keys.current(), &message_id, &plaintext)?;
    Ok(NewMessage {
        message_id,
        kind: kind.as_str().to_owned(),
        account_id: account_id.map(str::to_owned),
        recipient: recipient.to_owned(),
        payload: Opaque(payload),
        deliver: true,
    })
}

/// Template data common to every message: when, and from where if known.
pub fn context(now_ms: i64, client: &Client) -> serde_json::Value {
    json!({
        "occurred_at_ms": now_ms,
        "ip_address": client.ip.map(|ip| ip.to_string()),
        "user_agent": client.user_agent,
    })
}

/// An audit event with `details`.
pub fn audit(
    account_id: &str,
    kind: AuditKind,
    now_ms: i64,
    client: &Client,
    details: &[(&str, String)],
) -> Result<NewAuditEvent, Error> {
    Ok(NewAuditEvent {
        event_id: secrets::random_id("ev_")?,
        account_id: account_id.to_owned(),
        kind: kind.as_str().to_owned(),
        occurred_at: now_ms,
        client: client.to_info(),
        details: details
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    })
}

/// Merges two JSON objects (the second wins).
pub fn merge(mut base: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    if let (Some(base), serde_json::Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}
