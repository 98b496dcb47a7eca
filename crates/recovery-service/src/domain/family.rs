//! Family membership as the account service mirrors it (PutFamilyMember, RemoveFamilyMember)
//! and what a family's recovery looks like (GetFamilyRecoveryStatus).

pub use recovery_storage::model::FamilyRole;
use recovery_storage::{
    StorageError,
    model::{AssistedFlow, Effects, FamilyMember, NewFamilyMember},
};

use super::{
    DAY_MS, Error, Recovery, Result,
    email::{Email, mask, same_address},
    notice::{self, MembershipChange, Notice},
    notify::{AuditKind, Client, audit, context, message},
    validate_account_id,
};
use crate::time::Timestamp;

/// One member's line in a family's recovery status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyMemberStatus {
    pub account_id: String,
    pub role: FamilyRole,
    /// The family address, masked.
    pub email_hint: String,
    pub recovery_code_enrolled: bool,
    pub assisted_recovery_pending: bool,
}

/// A family's recovery status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyStatus {
    /// Organizers first, then by account id.
    pub members: Vec<FamilyMemberStatus>,
    pub organizer_count: u32,
    /// Exactly one organizer: nobody can assist that organizer.
    pub single_organizer: bool,
}

impl Recovery {
    /// Puts the account in the family (moving it out of another), with its role and family
    /// address; the assisted flows that involve it end (they answer `FLOW_COMPLETED`).
    ///
    /// Joining a family, moving, or a new family address opens a path into the account: each
    /// is limited per account (`family_changes_per_day`) and told to the account's recovery
    /// address and to the previous family address. A put that changes nothing, or only the
    /// role, is neither.
    #[tracing::instrument(name = "domain.put_family_member", skip_all)]
    pub async fn put_family_member(
        &self,
        family_id: &str,
        account_id: &str,
        role: Option<FamilyRole>,
        email: &str,
    ) -> Result<Timestamp> {
        let family_id = validate_family_id(family_id)?;
        let account_id = validate_account_id(account_id)?;
        let role = role.ok_or(Error::InvalidFamilyRole)?;
        let email = Email::parse(email)?;
        let now = self.now();
        let client = Client::default();
        let keys = &self.keys;
        // A change is counted before the transaction, from the membership as read then; if the
        // transaction finds a change that read did not (a concurrent put), it rolls back and
        // the put starts again, counted this time.
        let mut tries = 0;
        loop {
            tries += 1;
            let current = self.storage.find_family_member(account_id).await?;
            let counted = change_of(current.as_ref(), family_id, email.address()).is_some();
            if counted {
                self.limit(
                    &format!("family:day:account:{account_id}"),
                    DAY_MS,
                    self.policy.family_changes_per_day,
                    "family_changes_per_account",
                    now,
                )
                .await?;
            }
            let uncounted = std::sync::atomic::AtomicBool::new(false);
            let put = self
                .storage
                .put_family_member(
                    NewFamilyMember {
                        family_id: family_id.to_owned(),
                        account_id: account_id.to_owned(),
                        role,
                        email: email.address().to_owned(),
                    },
                    now,
                    |outcome| -> Result<Effects> {
                        let mut details = vec![
                            ("family_id", family_id.to_owned()),
                            ("role", role.as_str().to_owned()),
                            ("email_hint", mask(&outcome.member.email)),
                        ];
                        if let Some(previous) = outcome
                            .previous
                            .as_ref()
                            .filter(|p| p.family_id != family_id)
                        {
                            details.push(("previous_family_id", previous.family_id.clone()));
                        }
                        let mut messages = Vec::new();
                        let change =
                            change_of(outcome.previous.as_ref(), family_id, &outcome.member.email);
                        if change.is_some() && !counted {
                            uncounted.store(true, std::sync::atomic::Ordering::Relaxed);
                            return Err(Error::Unavailable);
                        }
                        if let Some(change) = change {
                            let notice = |to_previous_address| {
                                Notice::FamilyMembershipChanged(notice::FamilyMembershipChanged {
                                    change,
                                    family_id: family_id.to_owned(),
                                    family_email_hint: mask(&outcome.member.email),
                                    to_previous_address,
                                    context: context(now, &client),
                                })
                            };
                            if let Some(address) = &outcome.recovery_address {
                                messages.push(message(
                                    keys,
                                    &notice(false),
                                    Some(account_id),
                                    address,
                                )?);
                            }
                            if let Some(previous) = outcome.previous.as_ref().filter(|p| {
                                !same_address(&p.email, &outcome.member.email)
                                    && !outcome
                                        .recovery_address
                                        .as_ref()
                                        .is_some_and(|a| same_address(a, &p.email))
                            }) {
                                messages.push(message(
                                    keys,
                                    &notice(true),
                                    Some(account_id),
                                    &previous.email,
                                )?);
                            }
                            details.push(("change", change.as_str().to_owned()));
                            details.push((
                                "recovery_address_told",
                                outcome.recovery_address.is_some().to_string(),
                            ));
                        }
                        let mut events = vec![audit(
                            account_id,
                            AuditKind::FamilyMemberPut,
                            now,
                            &client,
                            &details,
                        )?];
                        let ended = self.ended_effects(&outcome.ended, now)?;
                        events.extend(ended.audit);
                        Ok(Effects {
                            messages,
                            audit: events,
                            events: ended.events,
                        })
                    },
                )
                .await;
            match put {
                Err(_) if uncounted.load(std::sync::atomic::Ordering::Relaxed) && tries < 3 => {
                    continue;
                }
                Err(_) if uncounted.load(std::sync::atomic::Ordering::Relaxed) => {
                    return Err(Error::Unavailable);
                }
                other => other?,
            };
            break;
        }
        self.events_written();
        self.mail_enqueued();
        tracing::info!(
            family_id,
            account_id,
            role = role.as_str(),
            "family member put"
        );
        Ok(Timestamp::from_ms(now))
    }

    /// Takes the account out of the family; the assisted flows that involve it end.
    #[tracing::instrument(name = "domain.remove_family_member", skip_all)]
    pub async fn remove_family_member(
        &self,
        family_id: &str,
        account_id: &str,
    ) -> Result<Timestamp> {
        let family_id = validate_family_id(family_id)?;
        let account_id = validate_account_id(account_id)?;
        let now = self.now();
        let client = Client::default();
        let removed = self
            .storage
            .remove_family_member(family_id, account_id, now, |removed| -> Result<Effects> {
                let mut events = vec![audit(
                    account_id,
                    AuditKind::FamilyMemberRemoved,
                    now,
                    &client,
                    &[
                        ("family_id", family_id.to_owned()),
                        ("role", removed.member.role.as_str().to_owned()),
                    ],
                )?];
                let ended = self.ended_effects(&removed.ended, now)?;
                events.extend(ended.audit);
                Ok(Effects {
                    messages: vec![],
                    audit: events,
                    events: ended.events,
                })
            })
            .await;
        match removed {
            Ok(_) => {
                self.events_written();
                tracing::info!(family_id, account_id, "family member removed");
                Ok(Timestamp::from_ms(now))
            }
            Err(recovery_storage::ChangeError::Storage(StorageError::NotFound)) => {
                Err(Error::NotFamilyMember)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Who in the family can recover how.
    #[tracing::instrument(name = "domain.get_family_recovery_status", skip_all)]
    pub async fn get_family_recovery_status(&self, family_id: &str) -> Result<FamilyStatus> {
        let family_id = validate_family_id(family_id)?;
        let now = self.now();
        let lines = self.storage.family_recovery_status(family_id, now).await?;
        let organizer_count = lines
            .iter()
            .filter(|l| l.member.role == FamilyRole::Organizer)
            .count();
        Ok(FamilyStatus {
            members: lines
                .into_iter()
                .map(|l| FamilyMemberStatus {
                    email_hint: mask(&l.member.email),
                    account_id: l.member.account_id,
                    role: l.member.role,
                    recovery_code_enrolled: l.enrolled,
                    assisted_recovery_pending: l.assisted_pending,
                })
                .collect(),
            organizer_count: u32::try_from(organizer_count).unwrap_or(u32::MAX),
            single_organizer: organizer_count == 1,
        })
    }
}

impl Recovery {
    /// What the end of assisted flows writes, on each member's account: an
    /// `ASSISTED_RECOVERY_CANCELLED` audit event and an `assisted_recovery.cancelled` platform
    /// event per flow (no mail: each caller tells the people involved as it sees fit).
    pub(super) fn ended_effects(&self, ended: &[AssistedFlow], now: i64) -> Result<Effects> {
        let mut effects = Effects::none();
        for flow in ended {
            let reason = flow.end_reason.map_or("ended", |r| r.as_str());
            let mut details = vec![
                ("assisted_flow_id", flow.assisted_flow_id.clone()),
                ("family_id", flow.family_id.clone()),
                ("organizer_account_id", flow.organizer_account_id.clone()),
                ("reason", reason.to_owned()),
            ];
            if let Some(by) = &flow.ended_by {
                details.push(("ended_by", by.clone()));
            }
            // No end user's context: the flow's is the organizer's who began it, not the
            // one who ended it.
            effects.audit.push(audit(
                &flow.member_account_id,
                AuditKind::AssistedRecoveryCancelled,
                now,
                &Client::default(),
                &details,
            )?);
            effects.events.extend(self.event(
                super::event::EventType::AssistedRecoveryCancelled,
                &flow.member_account_id,
                now,
                serde_json::json!({
                    "account_id": flow.member_account_id,
                    "family_id": flow.family_id,
                    "assisted_flow_id": flow.assisted_flow_id,
                    "reason": reason,
                    "ended_by": flow.ended_by,
                }),
            )?);
        }
        Ok(effects)
    }
}

/// What putting the account in `family_id` at `email` changes in the paths into it: `None`
/// when it stays in the same family at the same mailbox (only the role may change).
fn change_of(
    current: Option<&FamilyMember>,
    family_id: &str,
    email: &str,
) -> Option<MembershipChange> {
    match current {
        None => Some(MembershipChange::Joined),
        Some(c) if c.family_id != family_id => Some(MembershipChange::Moved),
        Some(c) if !same_address(&c.email, email) => Some(MembershipChange::AddressChanged),
        Some(_) => None,
    }
}

/// The masked family address of each organizer, by account id.
pub(super) fn hint_of(members: &[FamilyMember], account_id: &str) -> String {
    members
        .iter()
        .find(|m| m.account_id == account_id)
        .map_or_else(|| "a former organizer".to_owned(), |m| mask(&m.email))
}

/// Checks a family id: 1 to 128 bytes, no control characters.
pub fn validate_family_id(family_id: &str) -> Result<&str> {
    if family_id.is_empty() {
        return Err(Error::InvalidFamilyId("family_id is empty".into()));
    }
    if family_id.len() > 128 {
        return Err(Error::InvalidFamilyId(
            "family_id is longer than 128 bytes".into(),
        ));
    }
    if family_id.chars().any(char::is_control) {
        return Err(Error::InvalidFamilyId(
            "family_id contains control characters".into(),
        ));
    }
    Ok(family_id)
}
