//! Forgetting an account (ForgetAccount): everything kept about the person goes in one
//! transaction, the personal details of its audit trail with its data key, while the trail
//! (what happened, when, by which service) stays and still verifies.

use recovery_storage::model::ForgetOutcome;
use serde_json::json;

use super::{
    Recovery, Result,
    event::EventType,
    notice::Notice,
    notify::{AuditKind, Client, audit, context, message, personal},
    truncate, validate_account_id,
};
use crate::time::Timestamp;

/// The forget's reason is kept to this many bytes (sealed with the account's other personal
/// details, so it goes with them).
const MAX_REASON_BYTES: usize = 200;

impl Recovery {
    /// Forgets the account: its enrolment (either kind), every flow, its family membership
    /// (the family's other organizers are told that a member left, nothing more), every
    /// message to it, and the key of its trail's personal details; a last `ACCOUNT_FORGOTTEN`
    /// event closes the trail and `account.forgotten` tells the platform. Nothing is mailed
    /// to the person. Forgetting a forgotten account answers when it was forgotten, an
    /// unknown one the time of the call; neither changes anything.
    #[tracing::instrument(name = "domain.forget_account", skip_all)]
    pub async fn forget_account(&self, account_id: &str, reason: &str) -> Result<Timestamp> {
        let account_id = validate_account_id(account_id)?;
        let reason = truncate(reason.trim(), MAX_REASON_BYTES);
        let now = self.now();
        let keys = &self.keys;
        // No end user's context: a forget comes from the platform, not from a person's device.
        let client = Client::default();
        let outcome = self
            .storage
            .forget_account(account_id, now, |f| -> Result<_> {
                let messages = f
                    .organizers
                    .iter()
                    .map(|o| {
                        message(
                            keys,
                            &Notice::FamilyMemberLeft(context(now, &client)),
                            Some(&o.account_id),
                            &o.email,
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                let mut details = vec![
                    ("removed_flows", f.removed_flows.to_string()),
                    ("removed_messages", f.removed_messages.to_string()),
                ];
                if let Some(family) = &f.family {
                    details.push(("family_left", family.family_id.clone()));
                }
                let event = audit(
                    account_id,
                    AuditKind::AccountForgotten,
                    now,
                    &client,
                    &details,
                )?;
                // The assisted flows it had begun as an organizer end, on each member's trail.
                let mut effects = self.ended_effects(&f.ended, now)?;
                effects.messages.extend(messages);
                effects
                    .audit
                    .push(personal(event, &[("reason", reason.clone())]));
                effects.events.extend(self.event(
                    EventType::AccountForgotten,
                    account_id,
                    now,
                    json!({ "account_id": account_id }),
                )?);
                Ok(effects)
            })
            .await?;
        match outcome {
            ForgetOutcome::Forgotten(f) => {
                self.mail_enqueued();
                tracing::info!(
                    account_id,
                    removed_flows = f.removed_flows,
                    removed_messages = f.removed_messages,
                    organizers_told = f.organizers.len(),
                    "account forgotten"
                );
                Ok(Timestamp::from_ms(now))
            }
            ForgetOutcome::AlreadyForgotten(at) => Ok(at),
            ForgetOutcome::Unknown => Ok(Timestamp::from_ms(now)),
        }
    }
}
