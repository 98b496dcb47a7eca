//! Recovery contacts (API.md, "Recovery contacts"): InviteRecoveryContact,
//! AcceptRecoveryContact, RemoveRecoveryContact, SetRecoveryContactThreshold,
//! GetRecoveryContacts, BeginContactRecovery, ListContactRequests, VouchForRecovery,
//! CancelContactRecovery, CompleteContactRecovery. The owner's recovery address hears of every
//! change and step; every step is an audit event of the owner's account naming the contact.

use recovery_storage::model::{
    BeginContact, ContactChange, ContactFlow, ContactFlowEnd, ContactFlowRefusal, ContactLimits,
    ContactRefusal, ContactStart, Effects, NewContactFlow, NewMessage, Opaque, RecoveryContact,
    VouchOutcome,
};
use serde_json::json;

use super::{
    Error, Recovery, Result, client,
    code::EmailCode,
    email::{Email, mask},
    event::EventType,
    notice::{ContactTopic, Notice, RecoveryContactNotice},
    notify::{AuditKind, Client, audit, context, message},
    secrets, validate_account_id,
};
use crate::time::Timestamp;

const CONTACT_FLOW_PREFIX: &str = "cf_";

/// The highest threshold an owner may set.
pub const MAX_THRESHOLD: u32 = 10;

/// Where a recovery contact stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactState {
    Invited,
    Waiting,
    Active,
}

/// One of an owner's contacts, as GetRecoveryContacts shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub contact_account_id: String,
    pub state: ContactState,
    pub email_hint: String,
    pub active_from: Option<Timestamp>,
    pub invited_at: Timestamp,
    /// The invitation's expiry, while not accepted.
    pub expires_at: Option<Timestamp>,
}

/// An owner's contacts and threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contacts {
    pub contacts: Vec<Contact>,
    pub threshold: u32,
    pub active_count: u32,
}

/// A contact flow just begun.
#[derive(Debug)]
pub struct StartedContactFlow {
    pub contact_flow_id: String,
    /// Shown to the locked-out person, who reads it out to their contacts.
    pub confirmation_code: zeroize::Zeroizing<String>,
    pub expires_at: Timestamp,
}

/// A contact recovery a contact may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRequest {
    pub contact_flow_id: String,
    pub account_id: String,
    pub client: recovery_storage::model::ClientInfo,
    pub requested_at: Timestamp,
    pub expires_at: Timestamp,
    pub completes_at: Option<Timestamp>,
    pub vouched: bool,
}

/// Where a flow stands after a vouch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vouched {
    pub vouches: u32,
    pub threshold: u32,
    pub completes_at: Option<Timestamp>,
}

/// A completed contact recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRecovered {
    pub account_id: String,
    pub recovery_code_revoked: bool,
}

/// The parts of a recovery-contact message common to its recipients.
struct Mail<'a> {
    topic: ContactTopic,
    owner: &'a str,
    owner_address: Option<&'a str>,
    contact: Option<&'a RecoveryContact>,
    threshold: i32,
    vouches: i64,
    at_ms: Option<i64>,
    context: super::notice::Context,
}

impl Mail<'_> {
    fn notice(&self, to_contact: bool) -> Notice {
        Notice::RecoveryContact(RecoveryContactNotice {
            topic: self.topic,
            to_contact,
            owner_account_id: self.owner.to_owned(),
            owner_hint: self.owner_address.map(mask).unwrap_or_default(),
            contact_account_id: self
                .contact
                .map(|c| c.contact_account_id.clone())
                .unwrap_or_default(),
            contact_hint: self
                .contact
                .map(|c| mask(&c.contact_email))
                .unwrap_or_default(),
            threshold: u32::try_from(self.threshold).unwrap_or(0),
            vouches: u32::try_from(self.vouches).unwrap_or(0),
            at_ms: self.at_ms,
            context: self.context.clone(),
        })
    }

    /// To the owner's recovery address, when it has one.
    fn to_owner(&self, keys: &crate::crypto::KeyRing) -> Result<Vec<NewMessage>> {
        self.owner_address
            .map(|address| message(keys, &self.notice(false), Some(self.owner), address))
            .into_iter()
            .collect()
    }

    /// To each of `contacts`.
    fn to_contacts(
        &self,
        keys: &crate::crypto::KeyRing,
        contacts: &[RecoveryContact],
    ) -> Result<Vec<NewMessage>> {
        contacts
            .iter()
            .map(|c| {
                message(
                    keys,
                    &self.notice(true),
                    Some(&c.contact_account_id),
                    &c.contact_email,
                )
            })
            .collect()
    }
}

impl Recovery {
    /// The owner invites a contact (or renews an open invitation); the contact and the owner's
    /// recovery address are told.
    #[tracing::instrument(name = "domain.invite_recovery_contact", skip_all)]
    pub async fn invite_recovery_contact(
        &self,
        account_id: &str,
        contact_account_id: &str,
        contact_email: &str,
    ) -> Result<(Timestamp, Timestamp)> {
        let owner = validate_account_id(account_id)?;
        let contact = validate_account_id(contact_account_id)?;
        let email = Email::parse(contact_email)?;
        if owner == contact {
            return Err(Error::SelfRecoveryNotAllowed);
        }
        let now = self.now();
        let p = &self.policy;
        // Each invitation mails an address the owner typed: bounded per owner and per
        // address, renewals included.
        let to = secrets::address_key(&self.keys, email.lookup());
        for (key, name) in [
            (
                format!("contact:invite:{owner}"),
                "contact_invites_per_account",
            ),
            (
                format!("contact:invite:to:{to}"),
                "contact_invites_per_address",
            ),
        ] {
            self.limit(
                &key,
                crate::time::DAY_MS,
                p.contact_invites_per_day,
                name,
                now,
            )
            .await?;
        }
        let expires_at = now + p.contact_invitation_ms;
        let new = RecoveryContact {
            owner_account_id: owner.to_owned(),
            contact_account_id: contact.to_owned(),
            contact_email: email.address().to_owned(),
            invited_at: Timestamp::from_ms(now),
            expires_at: Timestamp::from_ms(expires_at),
            accepted_at: None,
            active_from: None,
        };
        let keys = &self.keys;
        let changed = self
            .storage
            .invite_recovery_contact(
                new,
                ContactLimits {
                    per_owner: p.contacts_per_account,
                    per_contact: p.accounts_per_contact,
                },
                |c: &ContactChange| -> Result<Effects> {
                    let mail = Mail {
                        topic: ContactTopic::Invited,
                        owner,
                        owner_address: c.recovery_address.as_deref(),
                        contact: Some(&c.contact),
                        threshold: 0,
                        vouches: 0,
                        at_ms: Some(expires_at),
                        context: context(now, &Client::default()),
                    };
                    let mut messages = mail.to_contacts(keys, std::slice::from_ref(&c.contact))?;
                    messages.extend(
                        Mail {
                            topic: ContactTopic::InvitedByOwner,
                            ..mail
                        }
                        .to_owner(keys)?,
                    );
                    let event = super::notify::personal(
                        audit(
                            owner,
                            AuditKind::RecoveryContactInvited,
                            now,
                            &Client::default(),
                            &[
                                ("contact_account_id", contact.to_owned()),
                                ("expires_at", crate::time::rfc3339(expires_at)),
                                ("renewed", c.repeated.to_string()),
                            ],
                        )?,
                        &[("contact_email_hint", mask(&c.contact.contact_email))],
                    );
                    Ok(Effects {
                        messages,
                        audit: vec![event],
                        events: self.event(
                            EventType::RecoveryContactInvited,
                            owner,
                            now,
                            json!({
                                "account_id": owner,
                                "contact_account_id": contact,
                                "expires_at": crate::time::rfc3339(expires_at),
                            }),
                        )?,
                    })
                },
            )
            .await?;
        match changed {
            Ok(_) => {
                self.mail_enqueued();
                tracing::info!(owner, contact, "recovery contact invited");
                Ok((Timestamp::from_ms(now), Timestamp::from_ms(expires_at)))
            }
            Err(refusal) => Err(contact_refused(refusal)),
        }
    }

    /// The invited contact accepts; active after the activation period.
    #[tracing::instrument(name = "domain.accept_recovery_contact", skip_all)]
    pub async fn accept_recovery_contact(
        &self,
        account_id: &str,
        contact_account_id: &str,
    ) -> Result<Timestamp> {
        let owner = validate_account_id(account_id)?;
        let contact = validate_account_id(contact_account_id)?;
        let now = self.now();
        let keys = &self.keys;
        let changed = self
            .storage
            .accept_recovery_contact(
                owner,
                contact,
                self.policy.contact_activation_ms,
                now,
                |c: &ContactChange| -> Result<Effects> {
                    let active_from = c.contact.active_from.map(|t| t.as_ms());
                    let messages = Mail {
                        topic: ContactTopic::Accepted,
                        owner,
                        owner_address: c.recovery_address.as_deref(),
                        contact: Some(&c.contact),
                        threshold: 0,
                        vouches: 0,
                        at_ms: active_from,
                        context: context(now, &Client::default()),
                    }
                    .to_owner(keys)?;
                    let from = active_from.map(crate::time::rfc3339).unwrap_or_default();
                    Ok(Effects {
                        messages,
                        audit: vec![audit(
                            owner,
                            AuditKind::RecoveryContactAccepted,
                            now,
                            &Client::default(),
                            &[
                                ("contact_account_id", contact.to_owned()),
                                ("active_from", from.clone()),
                            ],
                        )?],
                        events: self.event(
                            EventType::RecoveryContactActivated,
                            owner,
                            now,
                            json!({
                                "account_id": owner,
                                "contact_account_id": contact,
                                "active_from": from,
                            }),
                        )?,
                    })
                },
            )
            .await?;
        match changed {
            Ok(c) => {
                if !c.repeated {
                    self.mail_enqueued();
                    tracing::info!(owner, contact, "recovery contact accepted");
                }
                c.contact.active_from.ok_or(Error::Internal)
            }
            Err(refusal) => Err(contact_refused(refusal)),
        }
    }

    /// Removes a contact (by the owner or the contact); its vouches on open flows go.
    #[tracing::instrument(name = "domain.remove_recovery_contact", skip_all)]
    pub async fn remove_recovery_contact(
        &self,
        account_id: &str,
        contact_account_id: &str,
    ) -> Result<Timestamp> {
        let owner = validate_account_id(account_id)?;
        let contact = validate_account_id(contact_account_id)?;
        let now = self.now();
        let keys = &self.keys;
        let changed = self
            .storage
            .remove_recovery_contact(
                owner,
                contact,
                now,
                |c: &ContactChange| -> Result<Effects> {
                    let mail = Mail {
                        topic: ContactTopic::Removed,
                        owner,
                        owner_address: c.recovery_address.as_deref(),
                        contact: Some(&c.contact),
                        threshold: 0,
                        vouches: 0,
                        at_ms: None,
                        context: context(now, &Client::default()),
                    };
                    let mut messages = mail.to_owner(keys)?;
                    if c.contact.accepted_at.is_some() {
                        messages.extend(mail.to_contacts(keys, std::slice::from_ref(&c.contact))?);
                    }
                    let mut effects = self.stopped_effects(
                        owner,
                        &c.stopped,
                        c.recovery_address.as_deref(),
                        now,
                    )?;
                    effects.messages.extend(messages);
                    effects.audit.insert(
                        0,
                        audit(
                            owner,
                            AuditKind::RecoveryContactRemoved,
                            now,
                            &Client::default(),
                            &[
                                ("contact_account_id", contact.to_owned()),
                                ("state", c.contact.state(now).as_str().to_owned()),
                                ("withdrawn_vouches", c.withdrawn_vouches.to_string()),
                            ],
                        )?,
                    );
                    effects.events.splice(
                        0..0,
                        self.event(
                            EventType::RecoveryContactRemoved,
                            owner,
                            now,
                            json!({
                                "account_id": owner,
                                "contact_account_id": contact,
                                "state": c.contact.state(now).as_str(),
                            }),
                        )?,
                    );
                    Ok(effects)
                },
            )
            .await?;
        match changed {
            Ok(_) => {
                self.mail_enqueued();
                tracing::info!(owner, contact, "recovery contact removed");
                Ok(Timestamp::from_ms(now))
            }
            Err(refusal) => Err(contact_refused(refusal)),
        }
    }

    /// Sets how many active contacts must vouch.
    #[tracing::instrument(name = "domain.set_recovery_contact_threshold", skip_all)]
    pub async fn set_recovery_contact_threshold(
        &self,
        account_id: &str,
        threshold: u32,
    ) -> Result<Timestamp> {
        let owner = validate_account_id(account_id)?;
        if !(1..=MAX_THRESHOLD).contains(&threshold) {
            return Err(Error::InvalidThreshold);
        }
        let threshold = i32::try_from(threshold).map_err(|_| Error::InvalidThreshold)?;
        let now = self.now();
        let keys = &self.keys;
        self.storage
            .set_recovery_contact_threshold(owner, threshold, now, |c| -> Result<Effects> {
                let mut effects =
                    self.stopped_effects(owner, &c.stopped, c.recovery_address.as_deref(), now)?;
                effects.messages.extend(
                    Mail {
                        topic: ContactTopic::ThresholdSet,
                        owner,
                        owner_address: c.recovery_address.as_deref(),
                        contact: None,
                        threshold,
                        vouches: 0,
                        at_ms: None,
                        context: context(now, &Client::default()),
                    }
                    .to_owner(keys)?,
                );
                effects.audit.insert(
                    0,
                    audit(
                        owner,
                        AuditKind::RecoveryContactThresholdSet,
                        now,
                        &Client::default(),
                        &[
                            ("threshold", threshold.to_string()),
                            ("previous_threshold", c.previous.to_string()),
                        ],
                    )?,
                );
                Ok(effects)
            })
            .await?;
        self.mail_enqueued();
        tracing::info!(owner, threshold, "recovery contact threshold set");
        Ok(Timestamp::from_ms(now))
    }

    /// The owner's contacts and threshold.
    #[tracing::instrument(name = "domain.recovery_contacts", skip_all)]
    pub async fn recovery_contacts(&self, account_id: &str) -> Result<Contacts> {
        let owner = validate_account_id(account_id)?;
        let now = self.now();
        let (rows, threshold) = self.storage.recovery_contacts(owner, now).await?;
        let contacts: Vec<Contact> = rows
            .into_iter()
            .filter_map(|c| {
                let state = match c.state(now) {
                    recovery_storage::model::ContactState::Invited => ContactState::Invited,
                    recovery_storage::model::ContactState::Waiting => ContactState::Waiting,
                    recovery_storage::model::ContactState::Active => ContactState::Active,
                    recovery_storage::model::ContactState::Expired => return None,
                };
                Some(Contact {
                    email_hint: mask(&c.contact_email),
                    active_from: c.active_from,
                    invited_at: c.invited_at,
                    expires_at: c.accepted_at.is_none().then_some(c.expires_at),
                    contact_account_id: c.contact_account_id,
                    state,
                })
            })
            .collect();
        let active_count = contacts
            .iter()
            .filter(|c| c.state == ContactState::Active)
            .count();
        Ok(Contacts {
            active_count: u32::try_from(active_count).unwrap_or(u32::MAX),
            threshold: u32::try_from(threshold).unwrap_or(1),
            contacts,
        })
    }

    /// Starts a contact recovery for whoever claims `email`: the same answer after the same
    /// work whether or not an account recovers with it, or has contacts (the messages that
    /// would have gone to nobody are written `void`, up to the most a begin ever writes).
    #[tracing::instrument(name = "domain.begin_contact_recovery", skip_all)]
    pub async fn begin_contact_recovery(
        &self,
        email: &str,
        ip_address: &str,
        user_agent: &str,
    ) -> Result<StartedContactFlow> {
        let email = Email::parse(email)?;
        let client = client(ip_address, user_agent)?;
        let now = self.now();
        let p = &self.policy;
        let address_key = secrets::address_key(&self.keys, email.lookup());
        self.check_start_limits("contact", &address_key, &client, now)
            .await?;
        let contact_flow_id = secrets::random_id(CONTACT_FLOW_PREFIX)?;
        let code = EmailCode::generate()?;
        let key = self.keys.current();
        let mac = code.mac(key, &contact_flow_id);
        let expires_at = now + p.contact_gathering_ms;
        let keys = &self.keys;
        let flow_id = contact_flow_id.clone();
        let padded = usize::try_from(p.contacts_per_account).unwrap_or(10) + 1;
        let begun = self
            .storage
            .begin_contact_recovery(
                NewContactFlow {
                    contact_flow_id: contact_flow_id.clone(),
                    email_lookup: address_key.clone(),
                    code_mac: Opaque(mac),
                    mac_key_id: key.id().to_owned(),
                    created_at: Timestamp::from_ms(now),
                    expires_at: Timestamp::from_ms(expires_at),
                    client: client.to_info(),
                },
                email.lookup(),
                p.contact_begins_per_day,
                crate::time::DAY_MS,
                |s: &ContactStart| -> Result<Effects> {
                    let owner = s.account_id.as_deref().unwrap_or_default();
                    let mail = Mail {
                        topic: ContactTopic::RecoveryStarted,
                        owner,
                        owner_address: s.recovery_address.as_deref(),
                        contact: None,
                        threshold: s.threshold,
                        vouches: 0,
                        at_ms: Some(expires_at),
                        context: context(now, &client),
                    };
                    let mut messages = mail.to_owner(keys)?;
                    messages.extend(
                        Mail {
                            topic: ContactTopic::VouchRequested,
                            ..mail
                        }
                        .to_contacts(keys, &s.active_contacts)?,
                    );
                    // The same rows for every begin: those that would reach nobody are
                    // written `void` (never sent, removed by the cleanup).
                    while messages.len() < padded {
                        let mut void = message(
                            keys,
                            &Notice::RecoveryContact(RecoveryContactNotice {
                                topic: ContactTopic::VouchRequested,
                                to_contact: true,
                                owner_account_id: String::new(),
                                owner_hint: String::new(),
                                contact_account_id: String::new(),
                                contact_hint: String::new(),
                                threshold: 0,
                                vouches: 0,
                                at_ms: Some(expires_at),
                                context: context(now, &client),
                            }),
                            None,
                            &format!("void:{address_key}"),
                        )?;
                        void.deliver = false;
                        messages.push(void);
                    }
                    let mut event = audit(
                        owner,
                        AuditKind::ContactRecoveryStarted,
                        now,
                        &client,
                        &[
                            ("contact_flow_id", flow_id.clone()),
                            ("threshold", s.threshold.to_string()),
                            ("active_contacts", s.active_contacts.len().to_string()),
                        ],
                    )?;
                    if owner.is_empty() {
                        event.serialize_on = Some(address_key.clone());
                    }
                    let events = if owner.is_empty() {
                        Vec::new()
                    } else {
                        self.event(
                            EventType::ContactRecoveryStarted,
                            owner,
                            now,
                            json!({
                                "account_id": owner,
                                "contact_flow_id": flow_id,
                                "threshold": s.threshold,
                                "expires_at": crate::time::rfc3339(expires_at),
                            }),
                        )?
                    };
                    Ok(Effects {
                        messages,
                        audit: vec![event],
                        events,
                    })
                },
            )
            .await?;
        match begun {
            BeginContact::Started(_) => {
                // Whatever was written (void rows for an unknown address): the same steps.
                self.mail_enqueued();
                Ok(StartedContactFlow {
                    contact_flow_id,
                    confirmation_code: zeroize::Zeroizing::new(code.digits().to_owned()),
                    expires_at: Timestamp::from_ms(expires_at),
                })
            }
            BeginContact::Limited { retry_after_ms } => {
                let limit = "contact_recoveries_per_account";
                tracing::info!(limit, retry_after_ms, "contact recovery rate-limited");
                crate::metrics::get().rate_limited(limit);
                Err(Error::RateLimited {
                    retry_after_ms,
                    limit,
                })
            }
        }
    }

    /// The open contact recoveries a contact may act on.
    #[tracing::instrument(name = "domain.contact_requests", skip_all)]
    pub async fn contact_requests(&self, contact_account_id: &str) -> Result<Vec<ContactRequest>> {
        let contact = validate_account_id(contact_account_id)?;
        let window = self.policy.contact_completion_window_ms;
        Ok(self
            .storage
            .contact_requests(contact, window, self.now())
            .await?
            .into_iter()
            .map(|r| ContactRequest {
                expires_at: r.flow.expiry(window),
                contact_flow_id: r.flow.contact_flow_id,
                account_id: r.flow.account_id.unwrap_or_default(),
                // The parsed browser, never the request's text: a contact reads this, and
                // a user agent is whatever the person asking typed.
                client: recovery_storage::model::ClientInfo {
                    ip: r.flow.client.ip,
                    user_agent: r
                        .flow
                        .client
                        .user_agent
                        .as_deref()
                        .map(super::notify::browser),
                },
                requested_at: r.flow.created_at,
                completes_at: r.flow.completes_at,
                vouched: r.vouched,
            })
            .collect())
    }

    /// An active contact vouches with the code the locked-out person read out.
    #[tracing::instrument(name = "domain.vouch_for_recovery", skip_all)]
    pub async fn vouch_for_recovery(
        &self,
        contact_flow_id: &str,
        contact_account_id: &str,
        confirmation_code: &str,
    ) -> Result<Vouched> {
        let contact = validate_account_id(contact_account_id)?;
        let code =
            EmailCode::parse(confirmation_code).map_err(|_| Error::ConfirmationCodeMalformed)?;
        if !valid_contact_flow_id(contact_flow_id) {
            return Err(Error::FlowNotFound);
        }
        let flow = self
            .storage
            .find_contact_flow(contact_flow_id)
            .await?
            .ok_or(Error::FlowNotFound)?;
        let matches = code.matches(
            &self.keys,
            &flow.mac_key_id,
            &flow.contact_flow_id,
            &flow.code_mac.0,
        );
        let now = self.now();
        let p = &self.policy;
        let keys = &self.keys;
        let owner = flow.account_id.clone().unwrap_or_default();
        let cap = p.vouch_attempts;
        let outcome = self
            .storage
            .vouch_for_recovery(
                contact_flow_id,
                contact,
                matches,
                cap,
                p.contact_cooldown_ms,
                p.contact_wait_ms,
                now,
                |o: &VouchOutcome| -> Result<Effects> {
                    let v = match o {
                        VouchOutcome::Mismatch { attempts_left } => {
                            return Ok(Effects {
                                messages: vec![],
                                audit: vec![audit(
                                    &owner,
                                    AuditKind::ConfirmationCodeFailed,
                                    now,
                                    &Client::default(),
                                    &[
                                        ("contact_flow_id", contact_flow_id.to_owned()),
                                        ("contact_account_id", contact.to_owned()),
                                        ("attempts_left", attempts_left.to_string()),
                                    ],
                                )?],
                                events: vec![],
                            });
                        }
                        VouchOutcome::Vouched(v) => v,
                    };
                    let mut effects = Effects {
                        messages: vec![],
                        audit: vec![audit(
                            &owner,
                            AuditKind::ContactVouched,
                            now,
                            &Client::default(),
                            &[
                                ("contact_flow_id", contact_flow_id.to_owned()),
                                ("contact_account_id", contact.to_owned()),
                                ("vouches", v.vouches.to_string()),
                                ("threshold", v.flow.threshold.to_string()),
                            ],
                        )?],
                        events: vec![],
                    };
                    if !v.pending_started {
                        // Every step reaches the owner's address.
                        effects.messages.extend(
                            Mail {
                                topic: ContactTopic::Vouched,
                                owner: &owner,
                                owner_address: v.recovery_address.as_deref(),
                                contact: None,
                                threshold: v.flow.threshold,
                                vouches: v.vouches,
                                at_ms: None,
                                context: context(now, &Client::default()),
                            }
                            .to_owner(keys)?,
                        );
                    }
                    if v.pending_started {
                        let completes_at = v.flow.completes_at.map(|t| t.as_ms()).unwrap_or(now);
                        let mail = Mail {
                            topic: ContactTopic::Pending,
                            owner: &owner,
                            owner_address: v.recovery_address.as_deref(),
                            contact: None,
                            threshold: v.flow.threshold,
                            vouches: v.vouches,
                            at_ms: Some(completes_at),
                            context: context(now, &Client::default()),
                        };
                        effects.messages.extend(mail.to_owner(keys)?);
                        effects
                            .messages
                            .extend(mail.to_contacts(keys, &v.contacts)?);
                        effects.audit.push(audit(
                            &owner,
                            AuditKind::ContactRecoveryPending,
                            now,
                            &Client::default(),
                            &[
                                ("contact_flow_id", contact_flow_id.to_owned()),
                                ("completes_at", crate::time::rfc3339(completes_at)),
                                ("vouches", v.vouches.to_string()),
                                ("threshold", v.flow.threshold.to_string()),
                            ],
                        )?);
                        effects.events.extend(self.event(
                            EventType::ContactRecoveryPending,
                            &owner,
                            now,
                            json!({
                                "account_id": owner,
                                "contact_flow_id": contact_flow_id,
                                "completes_at": crate::time::rfc3339(completes_at),
                                "vouches": v.vouches,
                                "threshold": v.flow.threshold,
                            }),
                        )?);
                    }
                    Ok(effects)
                },
            )
            .await?;
        match outcome {
            Ok(VouchOutcome::Mismatch { attempts_left }) => {
                Err(Error::ConfirmationCodeMismatch { attempts_left })
            }
            Ok(VouchOutcome::Vouched(v)) => {
                if !v.repeated {
                    self.mail_enqueued();
                }
                tracing::info!(owner = %owner, contact, contact_flow_id, vouches = v.vouches, pending = v.flow.completes_at.is_some(), "contact vouched");
                Ok(Vouched {
                    vouches: u32::try_from(v.vouches).unwrap_or(0),
                    threshold: u32::try_from(v.flow.threshold).unwrap_or(0),
                    completes_at: v.flow.completes_at,
                })
            }
            Err(refusal) => Err(flow_refused(refusal)),
        }
    }

    /// The owner or an active contact cancels an open contact recovery.
    #[tracing::instrument(name = "domain.cancel_contact_recovery", skip_all)]
    pub async fn cancel_contact_recovery(
        &self,
        contact_flow_id: &str,
        account_id: &str,
    ) -> Result<Timestamp> {
        let actor = validate_account_id(account_id)?;
        if !valid_contact_flow_id(contact_flow_id) {
            return Err(Error::FlowNotFound);
        }
        let now = self.now();
        let keys = &self.keys;
        let cancelled = self
            .storage
            .cancel_contact_recovery(
                contact_flow_id,
                actor,
                self.policy.contact_completion_window_ms,
                now,
                |e: &ContactFlowEnd| -> Result<Effects> {
                    let owner = e.flow.account_id.as_deref().unwrap_or_default();
                    let by = RecoveryContact {
                        owner_account_id: owner.to_owned(),
                        contact_account_id: actor.to_owned(),
                        contact_email: String::new(),
                        invited_at: Timestamp::from_ms(0),
                        expires_at: Timestamp::from_ms(0),
                        accepted_at: None,
                        active_from: None,
                    };
                    let mail = Mail {
                        topic: ContactTopic::Cancelled,
                        owner,
                        owner_address: e.recovery_address.as_deref(),
                        contact: Some(&by),
                        threshold: e.flow.threshold,
                        vouches: 0,
                        at_ms: None,
                        context: context(now, &Client::default()),
                    };
                    let mut effects =
                        self.contact_ended_effects(std::slice::from_ref(&e.flow), now)?;
                    effects.messages.extend(mail.to_owner(keys)?);
                    effects
                        .messages
                        .extend(mail.to_contacts(keys, &e.contacts)?);
                    Ok(effects)
                },
            )
            .await?;
        match cancelled {
            Ok(e) => {
                self.mail_enqueued();
                tracing::info!(account_id = ?e.flow.account_id, cancelled_by = actor, contact_flow_id, "contact recovery cancelled");
                Ok(Timestamp::from_ms(now))
            }
            Err(refusal) => Err(flow_refused(refusal)),
        }
    }

    /// Completes a contact recovery after its waiting period, once.
    #[tracing::instrument(name = "domain.complete_contact_recovery", skip_all)]
    pub async fn complete_contact_recovery(
        &self,
        contact_flow_id: &str,
    ) -> Result<ContactRecovered> {
        if !valid_contact_flow_id(contact_flow_id) {
            return Err(Error::FlowNotFound);
        }
        let now = self.now();
        let keys = &self.keys;
        let completed = self
            .storage
            .complete_contact_recovery(
                contact_flow_id,
                self.policy.contact_completion_window_ms,
                now,
                |e: &ContactFlowEnd| -> Result<Effects> {
                    let owner = e.flow.account_id.as_deref().unwrap_or_default();
                    let mail = Mail {
                        topic: ContactTopic::Completed,
                        owner,
                        owner_address: e.recovery_address.as_deref(),
                        contact: None,
                        threshold: e.flow.threshold,
                        vouches: i64::try_from(e.vouched_by.len()).unwrap_or(0),
                        at_ms: None,
                        context: context(now, &Client::default()),
                    };
                    let mut effects = self.recovered_on_own(&e.recovered, now)?;
                    effects.messages.extend(mail.to_owner(keys)?);
                    effects
                        .messages
                        .extend(mail.to_contacts(keys, &e.contacts)?);
                    let revoked = e.revoked_code_id.is_some();
                    let mut details = vec![
                        ("contact_flow_id", contact_flow_id.to_owned()),
                        ("vouched_by", e.vouched_by.join(",")),
                        ("recovery_code_revoked", revoked.to_string()),
                    ];
                    if let Some(code_id) = &e.revoked_code_id {
                        details.push(("code_id", code_id.clone()));
                    }
                    let mut trail = vec![audit(
                        owner,
                        AuditKind::ContactRecoveryCompleted,
                        now,
                        &Client::default(),
                        &details,
                    )?];
                    let mut platform = Vec::new();
                    if let Some(code_id) = &e.revoked_code_id {
                        trail.push(audit(
                            owner,
                            AuditKind::CodeRevoked,
                            now,
                            &Client::default(),
                            &[
                                ("code_id", code_id.clone()),
                                (
                                    "reason",
                                    "recovery by recovery contacts completed".to_owned(),
                                ),
                            ],
                        )?);
                        platform.extend(self.event(
                            EventType::RecoveryCodeRevoked,
                            owner,
                            now,
                            json!({
                                "account_id": owner,
                                "code_id": code_id,
                                "revoked_by": "recovery_contacts",
                            }),
                        )?);
                    }
                    platform.extend(self.event(
                        EventType::AccountRecovered,
                        owner,
                        now,
                        json!({
                            "account_id": owner,
                            "revoke_all_sessions": true,
                            "method": "recovery_contacts",
                            "flow_id": contact_flow_id,
                            "vouched_by": e.vouched_by,
                        }),
                    )?);
                    trail.append(&mut effects.audit);
                    platform.append(&mut effects.events);
                    effects.audit = trail;
                    effects.events = platform;
                    Ok(effects)
                },
            )
            .await?;
        match completed {
            Ok(e) => {
                self.mail_enqueued();
                let account_id = e.flow.account_id.unwrap_or_default();
                tracing::info!(account_id = %account_id, contact_flow_id, recovery_code_revoked = e.revoked_code_id.is_some(), "account recovered by its recovery contacts");
                Ok(ContactRecovered {
                    account_id,
                    recovery_code_revoked: e.revoked_code_id.is_some(),
                })
            }
            Err(refusal) => Err(flow_refused(refusal)),
        }
    }

    /// The audit events and platform events of contact flows that ended without completing.
    pub(super) fn contact_ended_effects(&self, ended: &[ContactFlow], now: i64) -> Result<Effects> {
        let mut effects = Effects::none();
        for flow in ended {
            if let Some(owner) = flow.account_id.as_deref() {
                let reason = flow.end_reason.map_or("ended", |r| r.as_str());
                self.flow_stopped(&mut effects, owner, flow, reason, now)?;
            }
        }
        Ok(effects)
    }

    /// What stopping waiting periods writes: an audit event and an event each, and a message
    /// to the owner's recovery address.
    fn stopped_effects(
        &self,
        owner: &str,
        stopped: &[ContactFlow],
        owner_address: Option<&str>,
        now: i64,
    ) -> Result<Effects> {
        let mut effects = Effects::none();
        for flow in stopped {
            self.flow_stopped(&mut effects, owner, flow, "threshold_unmet", now)?;
            effects.messages.extend(
                Mail {
                    topic: ContactTopic::Stopped,
                    owner,
                    owner_address,
                    contact: None,
                    threshold: flow.threshold,
                    vouches: 0,
                    at_ms: None,
                    context: context(now, &Client::default()),
                }
                .to_owner(&self.keys)?,
            );
        }
        Ok(effects)
    }

    /// A flow ended or its waiting period stopped, for `reason`: `CONTACT_RECOVERY_CANCELLED`
    /// and `contact_recovery.cancelled`.
    fn flow_stopped(
        &self,
        effects: &mut Effects,
        owner: &str,
        flow: &ContactFlow,
        reason: &str,
        now: i64,
    ) -> Result<()> {
        let ended_by = flow.ended_by.clone().unwrap_or_default();
        effects.audit.push(audit(
            owner,
            AuditKind::ContactRecoveryCancelled,
            now,
            &Client::default(),
            &[
                ("contact_flow_id", flow.contact_flow_id.clone()),
                ("reason", reason.to_owned()),
                ("ended_by", ended_by.clone()),
            ],
        )?);
        effects.events.extend(self.event(
            EventType::ContactRecoveryCancelled,
            owner,
            now,
            json!({
                "account_id": owner,
                "contact_flow_id": flow.contact_flow_id,
                "reason": reason,
                "ended_by": ended_by,
            }),
        )?);
        Ok(())
    }
}

/// The error of a refused contact change.
fn contact_refused(refusal: ContactRefusal) -> Error {
    match refusal {
        ContactRefusal::NotContact => Error::NotRecoveryContact(
            "not a recovery contact of this account (never invited, the invitation expired, or removed)",
        ),
        ContactRefusal::AlreadyAccepted => Error::ContactAlreadyAccepted,
        ContactRefusal::TooManyForOwner => Error::TooManyContacts {
            limit: "contacts_per_account",
        },
        ContactRefusal::TooManyForContact => Error::TooManyContacts {
            limit: "accounts_per_contact",
        },
    }
}

/// The error of a refused step of a contact flow.
fn flow_refused(refusal: ContactFlowRefusal) -> Error {
    match refusal {
        ContactFlowRefusal::NotFound => Error::FlowNotFound,
        ContactFlowRefusal::Ended => Error::FlowCompleted,
        ContactFlowRefusal::Expired => Error::FlowExpired,
        ContactFlowRefusal::NotContact => Error::NotRecoveryContact(
            "not an active recovery contact of this flow's account (a contact acts only once active, after accepting)",
        ),
        ContactFlowRefusal::TooManyAttempts => Error::TooManyAttempts,
        ContactFlowRefusal::Cooldown { retry_after_ms } => {
            let limit = "vouches_per_contact";
            crate::metrics::get().rate_limited(limit);
            Error::RateLimited {
                retry_after_ms,
                limit,
            }
        }
        ContactFlowRefusal::Pending { completes_at } => Error::RecoveryPending { completes_at },
    }
}

/// `cf_` and 26 base32 characters, as [`secrets::random_id`] makes them.
fn valid_contact_flow_id(id: &str) -> bool {
    secrets::is_random_id(CONTACT_FLOW_PREFIX, id)
}
