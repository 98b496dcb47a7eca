//! Organizer-assisted recovery: BeginAssistedRecovery, VerifyAssistedRecovery,
//! CompleteAssistedRecovery, CancelAssistedRecovery. Mail goes only to the addresses of the
//! family records; every step is an audit event of the member's account naming the organizer.

use recovery_storage::model::{
    AssistedLimits, AssistedRefusal, BeginAssisted, Effects, FamilyMember, NewAssistedFlow, Opaque,
};

use serde_json::json;

use super::{
    Error, HOUR_MS, Recovery, Result, client,
    code::EmailCode,
    email::{mask, same_address},
    event::EventType,
    family::{hint_of, validate_family_id},
    notice::{self, Notice},
    notify::{AuditKind, Client, audit, context, message},
    secrets, validate_account_id,
};
use crate::time::Timestamp;

const ASSISTED_PREFIX: &str = "af_";

/// An assisted flow just begun.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedAssisted {
    pub assisted_flow_id: String,
    pub expires_at: Timestamp,
}

/// A completed assisted recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssistedRecovered {
    pub account_id: String,
    /// The member's own recovery code was revoked.
    pub recovery_code_revoked: bool,
}

impl Recovery {
    /// An organizer begins recovering a member of their family: the member gets a code at
    /// the family address, every organizer is told.
    #[tracing::instrument(name = "domain.begin_assisted_recovery", skip_all)]
    pub async fn begin_assisted_recovery(
        &self,
        family_id: &str,
        organizer_account_id: &str,
        member_account_id: &str,
        ip_address: &str,
        user_agent: &str,
    ) -> Result<StartedAssisted> {
        let family_id = validate_family_id(family_id)?;
        let organizer_id = validate_account_id(organizer_account_id)?;
        let member_id = validate_account_id(member_account_id)?;
        let client = client(ip_address, user_agent)?;
        let now = self.now();
        let p = &self.policy;
        let assisted_flow_id = secrets::random_id(ASSISTED_PREFIX)?;
        let code = EmailCode::generate()?;
        let key = self.keys.current();
        let mac = code.mac(key, &assisted_flow_id);
        let expires_at = now + p.assisted_flow_ttl_ms;
        let keys = &self.keys;
        let flow_id = assisted_flow_id.clone();
        let begun = self
            .storage
            .begin_assisted_recovery(
                NewAssistedFlow {
                    assisted_flow_id: assisted_flow_id.clone(),
                    family_id: family_id.to_owned(),
                    member_account_id: member_id.to_owned(),
                    organizer_account_id: organizer_id.to_owned(),
                    email_code_mac: Opaque(mac),
                    mac_key_id: key.id().to_owned(),
                    created_at: Timestamp::from_ms(now),
                    expires_at: Timestamp::from_ms(expires_at),
                    client: client.to_info(),
                },
                AssistedLimits {
                    window_ms: p.assisted_flow_ttl_ms,
                    per_organizer: p.assisted_begins_per_organizer,
                    per_member: p.assisted_begins_per_member,
                },
                |begun| -> Result<Effects> {
                    let BeginAssisted::Started(started) = begun else {
                        return Ok(Effects::none());
                    };
                    let (parties, organizer) = (&started.parties, &started.organizer);
                    let member = parties.member.as_ref().ok_or(Error::Internal)?;
                    let mut messages = vec![message(
                        keys,
                        &Notice::AssistedRecoveryCode(notice::AssistedRecoveryCode {
                            code: zeroize::Zeroizing::new(code.digits().to_owned()),
                            expires_in_hours: p.assisted_flow_ttl_ms / HOUR_MS,
                            // When, not from where: the organizer's IP address and browser
                            // are not the member's to see.
                            context: context(now, &Client::default()),
                        }),
                        Some(&member.account_id),
                        &member.email,
                    )?];
                    // Organizers other than the member (an organizer may be the one recovered).
                    for o in parties
                        .organizers
                        .iter()
                        .filter(|o| o.account_id != member.account_id)
                    {
                        messages.push(message(
                            keys,
                            &Notice::AssistedRecoveryStarted(notice::AssistedRecoveryStarted {
                                member_hint: mask(&member.email),
                                organizer_hint: mask(&organizer.email),
                                by_you: o.account_id == organizer.account_id,
                                context: context(now, &client),
                            }),
                            Some(&o.account_id),
                            &o.email,
                        )?);
                    }
                    // The account's own recovery address, unless the code just went there: its
                    // owner hears of the path whoever reads the family address.
                    if let Some(address) = started
                        .recovery_address
                        .as_ref()
                        .filter(|a| !same_address(a, &member.email))
                    {
                        messages.push(message(
                            keys,
                            &Notice::RecoveryByOrganizerStarted(
                                notice::RecoveryByOrganizerStarted {
                                    family_id: member.family_id.clone(),
                                    organizer_hint: mask(&organizer.email),
                                    family_email_hint: mask(&member.email),
                                    expires_in_hours: p.assisted_flow_ttl_ms / HOUR_MS,
                                    context: context(now, &Client::default()),
                                },
                            ),
                            Some(&member.account_id),
                            address,
                        )?);
                    }
                    let superseded = self.ended_effects(&started.superseded, now)?;
                    let mut events = superseded.audit;
                    events.push(audit(
                        &member.account_id,
                        AuditKind::AssistedRecoveryStarted,
                        now,
                        &client,
                        &[
                            ("assisted_flow_id", flow_id.clone()),
                            ("family_id", member.family_id.clone()),
                            ("organizer_account_id", organizer.account_id.clone()),
                        ],
                    )?);
                    let mut platform = superseded.events;
                    platform.extend(self.event(
                        EventType::AssistedRecoveryStarted,
                        &member.account_id,
                        now,
                        json!({
                            "account_id": member.account_id,
                            "family_id": member.family_id,
                            "assisted_flow_id": flow_id,
                            "organizer_account_id": organizer.account_id,
                            "expires_at": crate::time::rfc3339(expires_at),
                        }),
                    )?);
                    Ok(Effects {
                        messages,
                        audit: events,
                        events: platform,
                    })
                },
            )
            .await?;
        match begun {
            BeginAssisted::Started(_) => {
                self.mail_enqueued();
                tracing::info!(family_id, organizer_id, member_id, assisted_flow_id = %assisted_flow_id, "assisted recovery begun");
                Ok(StartedAssisted {
                    assisted_flow_id,
                    expires_at: Timestamp::from_ms(expires_at),
                })
            }
            BeginAssisted::NotOrganizer => Err(Error::NotFamilyOrganizer(
                "organizer_account_id is not an organizer of this family",
            )),
            BeginAssisted::NotMember => Err(Error::NotFamilyMember),
            BeginAssisted::SelfRecovery => Err(Error::SelfRecoveryNotAllowed),
            BeginAssisted::Limited {
                organizer,
                retry_after_ms,
            } => {
                let limit = if organizer {
                    "assisted_per_organizer"
                } else {
                    "assisted_per_member"
                };
                tracing::info!(limit, retry_after_ms, "assisted recovery rate-limited");
                crate::metrics::get().rate_limited(limit);
                Err(Error::RateLimited {
                    retry_after_ms,
                    limit,
                })
            }
        }
    }

    /// The member proves the family mailbox. Counts the submission before comparing; a
    /// verified flow accepts its right code again and nothing else.
    #[tracing::instrument(name = "domain.verify_assisted_recovery", skip_all)]
    pub async fn verify_assisted_recovery(
        &self,
        assisted_flow_id: &str,
        email_code: &str,
    ) -> Result<Timestamp> {
        let code = EmailCode::parse(email_code)?;
        let now = self.now();
        let flow = self.find_open_assisted(assisted_flow_id, now).await?;
        let matches = code.matches(
            &self.keys,
            &flow.mac_key_id,
            &flow.assisted_flow_id,
            &flow.email_code_mac.0,
        );
        let cap = self.policy.assisted_attempts;
        let member = flow.member_account_id.clone();
        let failure = (!matches)
            .then(|| {
                audit(
                    &member,
                    AuditKind::AssistedCodeFailed,
                    now,
                    &Client::default(),
                    &[
                        ("assisted_flow_id", flow.assisted_flow_id.clone()),
                        ("organizer_account_id", flow.organizer_account_id.clone()),
                    ],
                )
            })
            .transpose()?;
        let Some(used) = self
            .storage
            .register_assisted_attempt(&flow.assisted_flow_id, cap, now, |used| {
                let audit = failure
                    .map(|mut event| {
                        event
                            .details
                            .insert("attempts_left".into(), (cap - used).to_string());
                        vec![event]
                    })
                    .unwrap_or_default();
                Effects {
                    messages: vec![],
                    audit,
                    events: vec![],
                }
            })
            .await?
        else {
            let why = self.why_assisted_closed(&flow.assisted_flow_id, now).await;
            if why == Error::TooManyAttempts {
                self.audit_refusal_of(
                    "VerifyAssistedRecovery",
                    &flow.assisted_flow_id,
                    AssistedRefusal::TooManyAttempts,
                    &member,
                )
                .await?;
            }
            return Err(why);
        };
        if !matches {
            return Err(Error::EmailCodeMismatch {
                attempts_left: cap - used,
            });
        }
        if flow.verified_at.is_some() {
            return Ok(flow.expires_at);
        }
        let event = audit(
            &member,
            AuditKind::AssistedRecoveryVerified,
            now,
            &Client::default(),
            &[
                ("assisted_flow_id", flow.assisted_flow_id.clone()),
                ("organizer_account_id", flow.organizer_account_id.clone()),
            ],
        )?;
        if self
            .storage
            .verify_assisted_recovery(
                &flow.assisted_flow_id,
                now,
                Effects {
                    messages: vec![],
                    audit: vec![event],
                    events: vec![],
                },
            )
            .await?
        {
            return Ok(flow.expires_at);
        }
        // Lost a race: verified by another call, or ended or expired meanwhile.
        match self
            .storage
            .find_assisted_flow(&flow.assisted_flow_id)
            .await?
        {
            Some(f) if f.ended_at.is_none() && f.verified_at.is_some() => Ok(f.expires_at),
            _ => Err(self.why_assisted_closed(&flow.assisted_flow_id, now).await),
        }
    }

    /// Any organizer of the family completes a verified assisted flow, once: the member's own
    /// recovery code is revoked, the member and the organizers are told.
    #[tracing::instrument(name = "domain.complete_assisted_recovery", skip_all)]
    pub async fn complete_assisted_recovery(
        &self,
        assisted_flow_id: &str,
        organizer_account_id: &str,
    ) -> Result<AssistedRecovered> {
        let organizer_id = validate_account_id(organizer_account_id)?;
        if !valid_assisted_id(assisted_flow_id) {
            return Err(Error::FlowNotFound);
        }
        let now = self.now();
        let keys = &self.keys;
        let completed = self
            .storage
            .complete_assisted_recovery(
                assisted_flow_id,
                organizer_id,
                now,
                |c| -> Result<Effects> {
                    let flow = &c.flow;
                    let client = Client::default();
                    let organizers = &c.parties.organizers;
                    let member_hint = c
                        .parties
                        .member
                        .as_ref()
                        .map_or_else(String::new, |m| mask(&m.email));
                    let mut messages = Vec::new();
                    if let Some(member) = &c.parties.member {
                        messages.push(message(
                            keys,
                            &Notice::AssistedRecoveryCompleted(notice::AssistedRecoveryCompleted {
                                code_revoked: c.revoked_code_id.is_some(),
                                context: context(now, &client),
                            }),
                            Some(&member.account_id),
                            &member.email,
                        )?);
                    }
                    if let Some(address) = c.recovery_address.as_ref().filter(|a| {
                        !c.parties
                            .member
                            .as_ref()
                            .is_some_and(|m| same_address(a, &m.email))
                    }) {
                        messages.push(message(
                            keys,
                            &Notice::RecoveryByOrganizerCompleted(
                                notice::RecoveryByOrganizerCompleted {
                                    family_id: flow.family_id.clone(),
                                    organizer_hint: hint_of(organizers, organizer_id),
                                    code_revoked: c.revoked_code_id.is_some(),
                                    context: context(now, &client),
                                },
                            ),
                            Some(&flow.member_account_id),
                            address,
                        )?);
                    }
                    for o in organizers {
                        messages.push(message(
                            keys,
                            &Notice::FamilyMemberRecovered(notice::FamilyMemberRecovered {
                                member_hint: member_hint.clone(),
                                organizer_hint: Some(hint_of(organizers, organizer_id)),
                                by_you: o.account_id == organizer_id,
                                context: context(now, &client),
                            }),
                            Some(&o.account_id),
                            &o.email,
                        )?);
                    }
                    let mut details = vec![
                        ("assisted_flow_id", flow.assisted_flow_id.clone()),
                        ("family_id", flow.family_id.clone()),
                        ("organizer_account_id", organizer_id.to_owned()),
                        ("begun_by", flow.organizer_account_id.clone()),
                        (
                            "recovery_code_revoked",
                            c.revoked_code_id.is_some().to_string(),
                        ),
                    ];
                    if let Some(code_id) = &c.revoked_code_id {
                        details.push(("code_id", code_id.clone()));
                    }
                    let mut events = vec![audit(
                        &flow.member_account_id,
                        AuditKind::AssistedRecoveryCompleted,
                        now,
                        &client,
                        &details,
                    )?];
                    if let Some(code_id) = &c.revoked_code_id {
                        events.push(audit(
                            &flow.member_account_id,
                            AuditKind::CodeRevoked,
                            now,
                            &client,
                            &[
                                ("code_id", code_id.clone()),
                                (
                                    "reason",
                                    "assisted recovery completed by an organizer".to_owned(),
                                ),
                                ("organizer_account_id", organizer_id.to_owned()),
                            ],
                        )?);
                    }
                    let superseded = self.ended_effects(&c.superseded, now)?;
                    events.extend(superseded.audit);
                    let contact = self.contact_ended_effects(&c.ended_contact, now)?;
                    events.extend(contact.audit);
                    let member_id = &flow.member_account_id;
                    let mut platform = Vec::new();
                    if let Some(code_id) = &c.revoked_code_id {
                        platform.extend(self.event(
                            EventType::RecoveryCodeRevoked,
                            member_id,
                            now,
                            json!({
                                "account_id": member_id,
                                "code_id": code_id,
                                "revoked_by": "family_organizer",
                            }),
                        )?);
                    }
                    platform.extend(self.event(
                        EventType::AccountRecovered,
                        member_id,
                        now,
                        json!({
                            "account_id": member_id,
                            "revoke_all_sessions": true,
                            "method": "family_organizer",
                            "flow_id": flow.assisted_flow_id,
                            "organizer_account_id": organizer_id,
                        }),
                    )?);
                    platform.extend(superseded.events);
                    platform.extend(contact.events);
                    Ok(Effects {
                        messages,
                        audit: events,
                        events: platform,
                    })
                },
            )
            .await?;
        match completed {
            Ok(c) => {
                self.mail_enqueued();
                tracing::info!(account_id = %c.flow.member_account_id, organizer_id, assisted_flow_id, recovery_code_revoked = c.revoked_code_id.is_some(), "account recovered by a family organizer");
                Ok(AssistedRecovered {
                    account_id: c.flow.member_account_id,
                    recovery_code_revoked: c.revoked_code_id.is_some(),
                })
            }
            Err(refusal) => {
                self.audit_refusal_of(
                    "CompleteAssistedRecovery",
                    assisted_flow_id,
                    refusal,
                    organizer_id,
                )
                .await?;
                Err(refused(
                    refusal,
                    "organizer_account_id is not an organizer of this assisted flow's family",
                ))
            }
        }
    }

    /// The member or an organizer of the family cancels an open assisted flow.
    #[tracing::instrument(name = "domain.cancel_assisted_recovery", skip_all)]
    pub async fn cancel_assisted_recovery(
        &self,
        assisted_flow_id: &str,
        account_id: &str,
    ) -> Result<Timestamp> {
        let actor = validate_account_id(account_id)?;
        if !valid_assisted_id(assisted_flow_id) {
            return Err(Error::FlowNotFound);
        }
        let now = self.now();
        let keys = &self.keys;
        let cancelled = self
            .storage
            .cancel_assisted_recovery(assisted_flow_id, actor, now, |c| -> Result<Effects> {
                let client = Client::default();
                let by_member = actor == c.flow.member_account_id;
                let member_hint = c
                    .parties
                    .member
                    .as_ref()
                    .map_or_else(String::new, |m| mask(&m.email));
                let by_hint = if by_member {
                    member_hint.clone()
                } else {
                    hint_of(&c.parties.organizers, actor)
                };
                let notice = |to: &FamilyMember, to_member: bool| {
                    Notice::AssistedRecoveryCancelled(notice::AssistedRecoveryCancelled {
                        member_hint: member_hint.clone(),
                        by_member,
                        cancelled_by_hint: if to_member {
                            String::new()
                        } else {
                            by_hint.clone()
                        },
                        to_member,
                        by_you: to.account_id == actor,
                        context: context(now, &client),
                    })
                };
                let mut messages = Vec::new();
                if let Some(member) = &c.parties.member {
                    messages.push(message(
                        keys,
                        &notice(member, true),
                        Some(&member.account_id),
                        &member.email,
                    )?);
                }
                for o in &c.parties.organizers {
                    messages.push(message(
                        keys,
                        &notice(o, false),
                        Some(&o.account_id),
                        &o.email,
                    )?);
                }
                Ok(Effects {
                    messages,
                    ..self.ended_effects(std::slice::from_ref(&c.flow), now)?
                })
            })
            .await?;
        match cancelled {
            Ok(c) => {
                self.mail_enqueued();
                tracing::info!(account_id = %c.flow.member_account_id, cancelled_by = actor, assisted_flow_id, "assisted recovery cancelled");
                Ok(Timestamp::from_ms(now))
            }
            Err(refusal) => {
                self.audit_refusal_of("CancelAssistedRecovery", assisted_flow_id, refusal, actor)
                    .await?;
                Err(refused(
                    refusal,
                    "account_id is neither the member of this assisted flow nor an organizer of its family",
                ))
            }
        }
    }

    /// The assisted flow, if it exists, has not ended and has not expired.
    async fn find_open_assisted(
        &self,
        assisted_flow_id: &str,
        now: i64,
    ) -> Result<recovery_storage::model::AssistedFlow> {
        if !valid_assisted_id(assisted_flow_id) {
            return Err(Error::FlowNotFound);
        }
        let flow = self
            .storage
            .find_assisted_flow(assisted_flow_id)
            .await?
            .ok_or(Error::FlowNotFound)?;
        if flow.ended_at.is_some() {
            return Err(Error::AssistedFlowEnded);
        }
        if now >= flow.expires_at.as_ms() {
            return Err(Error::AssistedFlowExpired);
        }
        Ok(flow)
    }

    /// Audits, on the member's account, a step refused for who asked or for the flow's
    /// submissions being used up (not for a flow that simply ended).
    async fn audit_refusal_of(
        &self,
        call: &'static str,
        assisted_flow_id: &str,
        refusal: AssistedRefusal,
        actor: &str,
    ) -> Result<()> {
        let reason = match refusal {
            AssistedRefusal::NotAllowed => "NOT_FAMILY_ORGANIZER",
            AssistedRefusal::SelfRecovery => "SELF_RECOVERY_NOT_ALLOWED",
            AssistedRefusal::TooManyAttempts => "TOO_MANY_ATTEMPTS",
            _ => return Ok(()),
        };
        let Some(flow) = self.storage.find_assisted_flow(assisted_flow_id).await? else {
            return Ok(());
        };
        let event = audit(
            &flow.member_account_id,
            AuditKind::SubmissionRefused,
            self.now(),
            &Client::default(),
            &[
                ("assisted_flow_id", flow.assisted_flow_id.clone()),
                ("reason", reason.to_owned()),
                ("account_id", actor.to_owned()),
                ("call", call.to_owned()),
            ],
        )?;
        self.storage
            .append_audit(super::notify::folding(
                event,
                &["reason", "caller", "call"],
                &["assisted_flow_id", "account_id"],
            ))
            .await?;
        Ok(())
    }

    /// Why a submission was not counted: the flow ended or expired, or its cap was reached.
    async fn why_assisted_closed(&self, assisted_flow_id: &str, now: i64) -> Error {
        match self.storage.find_assisted_flow(assisted_flow_id).await {
            Ok(Some(f)) if f.ended_at.is_some() => Error::AssistedFlowEnded,
            Ok(Some(f)) if now >= f.expires_at.as_ms() => Error::AssistedFlowExpired,
            Ok(Some(_)) => Error::TooManyAttempts,
            Ok(None) => Error::FlowNotFound,
            Err(err) => err.into(),
        }
    }

    /// What the member's own recovery tells the family: the assisted flows it ended are
    /// audited, and every organizer learns that the member recovered on their own.
    pub(super) fn recovered_on_own(
        &self,
        completion: &recovery_storage::model::RecoveryCompletion,
        now: i64,
    ) -> Result<Effects> {
        let contact = self.contact_ended_effects(&completion.ended_contact, now)?;
        if completion.ended_assisted.is_empty() {
            return Ok(contact);
        }
        let member_hint = completion
            .member
            .as_ref()
            .map_or_else(|| "a member".to_owned(), |m| mask(&m.email));
        let mut messages = Vec::new();
        for o in &completion.organizers {
            messages.push(message(
                &self.keys,
                &Notice::FamilyMemberRecovered(notice::FamilyMemberRecovered {
                    member_hint: member_hint.clone(),
                    organizer_hint: None,
                    by_you: false,
                    // When, not from where: the member's IP address and browser are not the
                    // organizers' to see.
                    context: context(now, &Client::default()),
                }),
                Some(&o.account_id),
                &o.email,
            )?);
        }
        let mut effects = self.ended_effects(&completion.ended_assisted, now)?;
        effects.messages = messages;
        effects.audit.extend(contact.audit);
        effects.events.extend(contact.events);
        Ok(effects)
    }
}

/// The error of a refused completion or cancellation; `not_allowed` says who may.
fn refused(refusal: AssistedRefusal, not_allowed: &'static str) -> Error {
    match refusal {
        AssistedRefusal::NotFound => Error::FlowNotFound,
        AssistedRefusal::NotAllowed => Error::NotFamilyOrganizer(not_allowed),
        AssistedRefusal::SelfRecovery => Error::SelfRecoveryNotAllowed,
        AssistedRefusal::NotVerified => Error::AssistedNotVerified,
        AssistedRefusal::Ended => Error::AssistedFlowEnded,
        AssistedRefusal::Expired => Error::AssistedFlowExpired,
        AssistedRefusal::TooManyAttempts => Error::TooManyAttempts,
    }
}

/// `af_` and 26 base32 characters, as [`secrets::random_id`] makes them.
fn valid_assisted_id(id: &str) -> bool {
    secrets::is_random_id(ASSISTED_PREFIX, id)
}
