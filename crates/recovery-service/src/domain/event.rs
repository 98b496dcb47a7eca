//! Platform events: what other services are told (API.md, "Platform events"), as CloudEvents
//! 1.0 structured-mode JSON, built here and written to the event outbox in the change's own
//! transaction. No code, key or full address ever enters one: `data` carries ids, masked
//! hints and times.

use recovery_storage::model::NewEvent;
use serde_json::{Value, json};

use super::{Error, secrets};

/// The `source` of every event.
pub const SOURCE: &str = "recovery-service";
/// The subject (and `type`) prefix.
pub const TYPE_PREFIX: &str = "identity.recovery.v1.";

/// The event types of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Sessions and devices of the account must be revoked (`data.method`: `recovery_code`
    /// or `family_organizer`).
    AccountRecovered,
    RecoveryCodeCreated,
    RecoveryCodeReplaced,
    RecoveryCodeRevoked,
    RecoveryEmailUpdated,
    RecoveryLocked,
    AssistedRecoveryStarted,
    AssistedRecoveryCancelled,
    /// Everything about the account was erased here (`data.account_id`).
    AccountForgotten,
    RecoveryContactInvited,
    RecoveryContactActivated,
    RecoveryContactRemoved,
    ContactRecoveryStarted,
    ContactRecoveryPending,
    ContactRecoveryCancelled,
}

impl EventType {
    pub const ALL: [Self; 15] = [
        Self::AccountRecovered,
        Self::RecoveryCodeCreated,
        Self::RecoveryCodeReplaced,
        Self::RecoveryCodeRevoked,
        Self::RecoveryEmailUpdated,
        Self::RecoveryLocked,
        Self::AssistedRecoveryStarted,
        Self::AssistedRecoveryCancelled,
        Self::AccountForgotten,
        Self::RecoveryContactInvited,
        Self::RecoveryContactActivated,
        Self::RecoveryContactRemoved,
        Self::ContactRecoveryStarted,
        Self::ContactRecoveryPending,
        Self::ContactRecoveryCancelled,
    ];

    /// The short name, e.g. `account.recovered` (the subject is `identity.recovery.v1.` + it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccountRecovered => "account.recovered",
            Self::RecoveryCodeCreated => "recovery_code.created",
            Self::RecoveryCodeReplaced => "recovery_code.replaced",
            Self::RecoveryCodeRevoked => "recovery_code.revoked",
            Self::RecoveryEmailUpdated => "recovery_email.updated",
            Self::RecoveryLocked => "recovery.locked",
            Self::AssistedRecoveryStarted => "assisted_recovery.started",
            Self::AssistedRecoveryCancelled => "assisted_recovery.cancelled",
            Self::AccountForgotten => "account.forgotten",
            Self::RecoveryContactInvited => "recovery_contact.invited",
            Self::RecoveryContactActivated => "recovery_contact.activated",
            Self::RecoveryContactRemoved => "recovery_contact.removed",
            Self::ContactRecoveryStarted => "contact_recovery.started",
            Self::ContactRecoveryPending => "contact_recovery.pending",
            Self::ContactRecoveryCancelled => "contact_recovery.cancelled",
        }
    }
}

/// One event about `account_id`, as the CloudEvents JSON object that will be published.
pub fn build(
    kind: EventType,
    account_id: &str,
    now_ms: i64,
    data: Value,
) -> Result<NewEvent, Error> {
    let event_id = secrets::random_id("evt_")?;
    let envelope = json!({
        "specversion": "1.0",
        "id": event_id,
        "source": SOURCE,
        "type": format!("{TYPE_PREFIX}{}", kind.as_str()),
        "subject": account_id,
        "time": crate::time::rfc3339(now_ms),
        "datacontenttype": "application/json",
        "data": data,
    });
    Ok(NewEvent {
        event_id,
        account_id: account_id.to_owned(),
        event_type: kind.as_str().to_owned(),
        payload: envelope.to_string(),
    })
}

impl super::Recovery {
    /// The event, when events are on (`RECOVERY_EVENTS_URL`); none otherwise.
    pub(super) fn event(
        &self,
        kind: EventType,
        account_id: &str,
        now_ms: i64,
        data: Value,
    ) -> Result<Vec<NewEvent>, Error> {
        if !self.events_enabled {
            return Ok(Vec::new());
        }
        Ok(vec![build(kind, account_id, now_ms, data)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_is_cloudevents_structured_json() {
        let e = build(
            EventType::AccountRecovered,
            "acct-1",
            1_800_000_000_123,
            json!({"account_id": "acct-1"}),
        )
        .unwrap();
        let v: Value = serde_json::from_str(&e.payload).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], e.event_id.as_str());
        assert!(e.event_id.starts_with("evt_"));
        assert_eq!(v["source"], "recovery-service");
        assert_eq!(v["type"], "identity.recovery.v1.account.recovered");
        assert_eq!(v["subject"], "acct-1");
        assert_eq!(v["time"], "2027-01-15T08:00:00.123Z");
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["data"]["account_id"], "acct-1");
        assert_eq!(e.event_type, "account.recovered");
    }
}
