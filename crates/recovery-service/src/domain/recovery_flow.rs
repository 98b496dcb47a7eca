//! The recovery flow: BeginRecovery, VerifyEmail, RecoverAccount.

use serde_json::json;

use super::{
    Error, HOUR_MS, MINUTE_MS, Recovered, Recovery, RecoveryMode, Result, StartedFlow, client,
    code::{EmailCode, RecoveryCode},
    email::{Email, mask},
    event::EventType,
    ip_limit_key,
    notice::{self, Notice},
    notify::{AuditKind, Client, audit, context, message},
    secrets,
};
use crate::{crypto::hasher::HashPermit, time::Timestamp};
use recovery_storage::model::{
    AttemptKind, AttemptReservation, Completion, CompletionUpdate, Effects, Enrollment, Flow,
    Lockout, NewFlow, Opaque, StoredCode,
};

/// A recovery-code submission counted before its check.
#[derive(Debug, Clone)]
pub(super) struct Submission {
    pub attempts_left: i32,
    /// The failure row it holds until it proves right.
    pub failure_id: i64,
    /// The lock its failure caused, if it reached the threshold.
    pub own_lock: Option<Timestamp>,
    /// The `recovery.locked` event written, held, with that lock.
    pub held_event: Option<String>,
}

const FLOW_PREFIX: &str = "fl_";

/// A recovery being completed: what its effects name.
#[derive(Debug, Clone, Copy)]
pub(super) struct Completed<'a> {
    pub flow: &'a Flow,
    pub enrollment: &'a Enrollment,
    /// `account.recovered`'s `method`.
    pub method: &'static str,
    /// The credential that proved right.
    pub code_id: &'a str,
    /// The code that replaced it (`rotate_on_use`, server-held).
    pub rotated_code_id: Option<&'a str>,
    /// The credential was retired (`rotate_on_use`, zero-knowledge).
    pub retired: bool,
}

impl Recovery {
    /// Starts a flow for whoever claims `email`. Known and unknown emails get the same answer
    /// after the same work: the same queries and writes (the messages of an unknown email are
    /// written `void`, never sent).
    #[tracing::instrument(name = "domain.begin_recovery", skip_all)]
    pub async fn begin_recovery(
        &self,
        email: &str,
        ip_address: &str,
        user_agent: &str,
    ) -> Result<StartedFlow> {
        let email = Email::parse(email)?;
        let client = client(ip_address, user_agent)?;
        let now = self.now();
        // What the flow, the limits and a never-sent row keep of the typed address.
        let address_key = secrets::address_key(&self.keys, email.lookup());
        self.check_start_limits("begin", &address_key, &client, now)
            .await?;

        let mut first_try = true;
        let (flow_id, expires_at) = loop {
            let enrollment = self
                .storage
                .find_enrollment_by_email(email.lookup())
                .await?;
            let flow_id = secrets::random_id(FLOW_PREFIX)?;
            let code = EmailCode::generate()?;
            let key = self.keys.current();
            let mac = code.mac(key, &flow_id);
            let expires_at = now + self.policy.flow_ttl_ms;
            let code_expires_at = now + self.policy.email_code_ttl_ms;

            let void_recipient = format!("void:{address_key}");
            let (recipient, account_id, deliver) = match &enrollment {
                Some(e) => (e.email.as_str(), e.account_id.as_str(), true),
                None => (void_recipient.as_str(), "", false),
            };
            // One message: the code, with who asked and from where.
            let mut verification = message(
                &self.keys,
                &Notice::VerificationCode(notice::VerificationCode {
                    code: zeroize::Zeroizing::new(code.digits().to_owned()),
                    expires_in_minutes: self.policy.email_code_ttl_ms / MINUTE_MS,
                    context: context(now, &client),
                }),
                Some(account_id).filter(|a| !a.is_empty()),
                recipient,
            )?;
            verification.deliver = deliver;
            // The masked typed address only for a known account: nothing of an unknown one is kept.
            let mut details = vec![("flow_id", flow_id.clone())];
            if enrollment.is_some() {
                details.push(("email_hint", mask(email.address())));
            }
            let mut event = audit(
                account_id,
                AuditKind::RecoveryStarted,
                now,
                &client,
                &details,
            )?;
            if enrollment.is_none() {
                event.serialize_on = Some(address_key.clone());
            }
            let stored = self
                .storage
                .begin_recovery(
                    NewFlow {
                        flow_id: flow_id.clone(),
                        email_lookup: address_key.clone(),
                        target: enrollment
                            .as_ref()
                            .map(|e| (e.account_id.clone(), e.generation)),
                        email_code_mac: Opaque(mac),
                        mac_key_id: key.id().to_owned(),
                        email_code_expires_at: Timestamp::from_ms(code_expires_at),
                        created_at: Timestamp::from_ms(now),
                        expires_at: Timestamp::from_ms(expires_at),
                        client: client.to_info(),
                    },
                    Effects {
                        messages: vec![verification],
                        audit: vec![event],
                        events: vec![],
                    },
                )
                .await;
            match stored {
                // The enrolment went (forgotten, revoked, replaced) between the lookup and
                // the write: start over once, with what is there now.
                Err(recovery_storage::StorageError::NotFound) if first_try => {
                    first_try = false;
                    continue;
                }
                other => other?,
            }
            if enrollment.is_some() {
                self.mail_enqueued();
            }
            break (flow_id, expires_at);
        };
        Ok(StartedFlow {
            flow_id,
            expires_at: Timestamp::from_ms(expires_at),
        })
    }

    /// The limits of a recovery start (`prefix` keeps each kind of start's buckets apart).
    pub(super) async fn check_start_limits(
        &self,
        prefix: &str,
        address_key: &str,
        client: &Client,
        now: i64,
    ) -> Result<()> {
        let p = &self.policy;
        let mut checks = Vec::with_capacity(3);
        if let Some(ip) = client.ip {
            // A keyed hash of the client's network, as addresses are: the buckets never
            // hold an IP address in clear.
            let key = format!(
                "net:{}",
                secrets::address_key(&self.keys, &ip_limit_key(ip))
            );
            checks.push((
                format!("{prefix}:min:{key}"),
                MINUTE_MS,
                p.starts_per_ip_per_minute,
                "ip_per_minute",
            ));
            checks.push((
                format!("{prefix}:hour:{key}"),
                HOUR_MS,
                p.starts_per_ip_per_hour,
                "ip_per_hour",
            ));
        }
        checks.push((
            format!("{prefix}:hour:email:{address_key}"),
            HOUR_MS,
            p.starts_per_email_per_hour,
            "email_per_hour",
        ));
        for (key, window, limit, name) in checks {
            self.limit(&key, window, limit, name, now).await?;
        }
        Ok(())
    }

    /// Proves control of the mailbox. Counts the submission before comparing; a verified flow
    /// accepts its right code again (a retried call succeeds) and nothing else.
    #[tracing::instrument(name = "domain.verify_email", skip_all)]
    pub async fn verify_email(&self, flow_id: &str, email_code: &str) -> Result<Timestamp> {
        let code = EmailCode::parse(email_code)?;
        let now = self.now();
        let (flow, _) = match self.find_open_flow(flow_id, now).await {
            Err(Error::FlowCompleted) => return Err(self.why_cancelled(flow_id, now).await),
            other => other?,
        };
        if now >= flow.email_code_expires_at.as_ms() && flow.verified_at.is_none() {
            return Err(Error::FlowExpired);
        }
        let client = flow_client(&flow);
        let account = flow.target.as_ref().map(|(a, _)| a.as_str());
        // The MAC is checked for every flow, so that both take the same work; a flow for an
        // unknown email never verifies, whatever code it is given, and answers exactly as a
        // wrong code on a known flow (docs/design.md).
        let code_matches = code.matches(
            &self.keys,
            &flow.mac_key_id,
            &flow.flow_id,
            &flow.email_code_mac.0,
        ) && account.is_some();
        let cap = self.policy.email_attempts;
        // The submission is counted, and a wrong one audited, in one transaction. Written for
        // unknown emails too (under no account), so that a wrong code takes the same work
        // whether or not the email is enrolled.
        let failure = (!code_matches)
            .then(|| {
                audit(
                    account.unwrap_or_default(),
                    AuditKind::EmailCodeFailed,
                    now,
                    &client,
                    &[("flow_id", flow.flow_id.clone())],
                )
            })
            .transpose()?
            .map(|mut event| {
                if account.is_none() {
                    event.serialize_on = Some(flow.email_lookup.clone());
                }
                event
            });
        let Some(used) = self
            .storage
            .register_attempt_with(&flow.flow_id, AttemptKind::EmailCode, cap, now, |used| {
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
            return Err(self.why_no_attempt(&flow.flow_id, now).await);
        };
        let attempts_left = cap - used;
        if !code_matches {
            return Err(Error::EmailCodeMismatch { attempts_left });
        }
        if flow.verified_at.is_some() {
            return Ok(flow.expires_at);
        }
        let effects = match account {
            Some(account) => Effects {
                messages: vec![],
                audit: vec![audit(
                    account,
                    AuditKind::EmailVerified,
                    now,
                    &client,
                    &[("flow_id", flow.flow_id.clone())],
                )?],
                events: vec![],
            },
            None => Effects::none(),
        };
        if self
            .storage
            .verify_email(&flow.flow_id, now, effects)
            .await?
        {
            return Ok(flow.expires_at);
        }
        // Lost a race: another call verified it, or it expired or completed meanwhile.
        match self.storage.find_flow(&flow.flow_id).await? {
            Some(f) if f.completed_at.is_some() => Err(Error::FlowCompleted),
            Some(f) if f.verified_at.is_some() => Ok(f.expires_at),
            _ => Err(Error::FlowExpired),
        }
    }

    /// Proves possession of the recovery code on a verified flow and completes it, once.
    #[tracing::instrument(name = "domain.recover_account", skip_all)]
    pub async fn recover_account(&self, flow_id: &str, recovery_code: &str) -> Result<Recovered> {
        let code = match RecoveryCode::parse(recovery_code) {
            Ok(code) => code,
            Err(malformed) => {
                // Whatever was typed, a verified flow of a zero-knowledge enrolment says which
                // RPCs to use (before the mailbox is proven nothing tells the kinds apart).
                if self.enrolment_kind_of_verified_flow(flow_id).await
                    == Some(RecoveryMode::ZeroKnowledge)
                {
                    return Err(Error::ZeroKnowledgeEnrollment);
                }
                return Err(malformed);
            }
        };
        let now = self.now();
        let (flow, enrollment, _) = self
            .verified_flow(flow_id, now, RecoveryMode::ServerHeld)
            .await?;
        // Before any hashing (the reservation below decides it again, atomically).
        self.refuse_if_locked(&flow, &enrollment, now).await?;
        let permit = self.hasher.admit(&enrollment.account_id).await?;
        // From here the submission belongs to a task of its own: it is counted, checked and
        // recorded even if the caller goes away, at any moment (a caller that hung up between
        // the count and the check once left a counted failure that nothing recorded).
        let this = self.clone();
        // Dropped with this future: tells the task its caller went away.
        let (_waiting, caller_gone) = tokio::sync::oneshot::channel::<()>();
        self.submissions
            .run(async move {
                let submission = this.reserve_submission(&flow, &enrollment, now).await?;
                this.check_and_finish(flow, enrollment, code, permit, submission, caller_gone, now)
                    .await
            })
            .await
    }

    /// Checks the code of a counted submission and completes the recovery, or records the
    /// failure (and the lock it caused).
    #[allow(clippy::too_many_arguments)] // the counted submission's parts, moved into the task
    async fn check_and_finish(
        &self,
        flow: Flow,
        enrollment: Enrollment,
        code: RecoveryCode,
        permit: HashPermit,
        submission: Submission,
        mut caller_gone: tokio::sync::oneshot::Receiver<()>,
        now: i64,
    ) -> Result<Recovered> {
        let Some(stored) = enrollment.code.clone() else {
            return Err(Error::FlowCompleted);
        };
        let Some(key) = self.keys.get(&stored.key_id) else {
            tracing::error!(key_id = %stored.key_id, account_id = %enrollment.account_id, "the key of a stored recovery-code hash is not configured");
            return Err(Error::Internal);
        };
        let matches = self
            .hasher
            .verify(&permit, code.canonical(), &stored.hash.0, key)
            .await?;
        let client = flow_client(&flow);
        let account_id = enrollment.account_id.clone();
        if !matches {
            drop(permit);
            self.record_failure(&flow, &enrollment, &submission, &client, now)
                .await?;
            return Err(Error::RecoveryCodeMismatch {
                attempts_left: submission.attempts_left,
            });
        }

        // A right code whose caller has gone completes nothing: nobody would learn of the
        // recovery (or receive a rotated code); the person starts again. Its reservation is
        // given back, as a right code is no failure.
        if matches!(
            caller_gone.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed)
        ) {
            drop(permit);
            self.storage
                .release_recovery_attempt(
                    &enrollment.account_id,
                    submission.failure_id,
                    submission.own_lock,
                    submission.held_event.as_deref(),
                )
                .await?;
            tracing::info!(flow_id = %flow.flow_id, "right code, but the caller had gone: nothing completed");
            return Err(Error::FlowExpired);
        }
        // Right code: rotate it, or upgrade its hash if its parameters or key are outdated.
        let current = self.keys.current();
        let mut new_display = None;
        let mut update = CompletionUpdate {
            verified_code_id: stored.code_id.clone(),
            reservation: Some((
                submission.failure_id,
                submission.own_lock,
                submission.held_event.clone(),
            )),
            ..CompletionUpdate::default()
        };
        if self.policy.reuse == super::ReusePolicy::RotateOnUse {
            update.rotated = true;
            let fresh = RecoveryCode::generate()?;
            let hash = self
                .hasher
                .hash(&permit, fresh.canonical(), current)
                .await?;
            update.new_code = Some(StoredCode {
                code_id: secrets::random_id(super::CODE_ID_PREFIX)?,
                hash: Opaque(hash),
                key_id: current.id().to_owned(),
                params: self.hasher.params().label(),
                sealed_keyset: None,
            });
            new_display = Some(fresh.display());
        } else if stored.params != self.hasher.params().label() || stored.key_id != current.id() {
            let hash = self.hasher.hash(&permit, code.canonical(), current).await?;
            update.new_code = Some(StoredCode {
                code_id: stored.code_id.clone(),
                hash: Opaque(hash),
                key_id: current.id().to_owned(),
                params: self.hasher.params().label(),
                sealed_keyset: None,
            });
        }
        drop(permit);
        let rotated_code_id = update
            .new_code
            .as_ref()
            .filter(|_| update.rotated)
            .map(|c| c.code_id.clone());
        let completed = Completed {
            flow: &flow,
            enrollment: &enrollment,
            method: "recovery_code",
            code_id: &stored.code_id,
            rotated_code_id: rotated_code_id.as_deref(),
            retired: false,
        };
        self.complete(&completed, update, now).await?;
        Ok(Recovered {
            account_id,
            new_recovery_code: new_display,
        })
    }

    /// Completes a recovery whose code (of either kind) proved right, once, with its effects;
    /// answers the use count. A completion that completed nothing gives its reservation back
    /// (a right code is never a failure) and says why.
    pub(super) async fn complete(
        &self,
        completed: &Completed<'_>,
        update: CompletionUpdate,
        now: i64,
    ) -> Result<i64> {
        let flow = completed.flow;
        let account_id = completed.enrollment.account_id.as_str();
        let reservation = update.reservation.clone();
        let login_state = update.login_state.clone();
        let completion = self
            .storage
            .recover_account(&flow.flow_id, now, update, |done| {
                self.completion_effects(completed, done, now)
            })
            .await?;
        if let Completion::Completed { use_count } = completion {
            self.mail_enqueued();
            tracing::info!(account_id, flow_id = %flow.flow_id, use_count, method = completed.method, "account recovered");
            return Ok(use_count);
        }
        if let Some((failure_id, own_lock, held_event)) = reservation {
            self.storage
                .release_recovery_attempt(account_id, failure_id, own_lock, held_event.as_deref())
                .await?;
        }
        match completion {
            Completion::Locked { until } => Err(Error::RecoveryLocked {
                locked_until: until,
            }),
            Completion::NotCompletable => match self.storage.find_flow(&flow.flow_id).await? {
                Some(f) if f.completed_at.is_some() => Err(Error::FlowCompleted),
                // A newer start replaced the zero-knowledge login, or a wrong finish ended it.
                Some(f) if login_state.is_some() && f.zk_login_state != login_state => {
                    Err(Error::ZeroKnowledgeNotStarted)
                }
                _ => Err(Error::FlowExpired),
            },
            Completion::Cancelled | Completion::Completed { .. } => Err(Error::FlowCompleted),
        }
    }

    /// The open flow whose mailbox is proven, with its enrolment and credential, for a
    /// submission of `mode`: `EMAIL_NOT_VERIFIED` before the mailbox is proven, and for the
    /// other kind `ZERO_KNOWLEDGE_ENROLLMENT` or `NOT_ZERO_KNOWLEDGE` (which RPCs to use).
    pub(super) async fn verified_flow(
        &self,
        flow_id: &str,
        now: i64,
        mode: RecoveryMode,
    ) -> Result<(Flow, Enrollment, StoredCode)> {
        let (flow, enrollment) = self.find_open_flow(flow_id, now).await?;
        if flow.verified_at.is_none() {
            return Err(Error::EmailNotVerified);
        }
        let Some(enrollment) = enrollment else {
            // Unknown emails never verify; a verified flow without a target is a bug.
            tracing::error!(flow_id = %flow.flow_id, "verified flow without an enrollment");
            return Err(Error::Internal);
        };
        let Some(stored) = enrollment.code.clone() else {
            return Err(Error::FlowCompleted);
        };
        match RecoveryMode::of(&stored) {
            kind if kind == mode => Ok((flow, enrollment, stored)),
            RecoveryMode::ZeroKnowledge => Err(Error::ZeroKnowledgeEnrollment),
            RecoveryMode::ServerHeld => Err(Error::NotZeroKnowledge),
        }
    }

    /// The kind of enrolment of an open flow whose mailbox is proven; `None` for any other flow
    /// (or one that cannot be read). Only for choosing between two refusals: it counts nothing.
    pub(super) async fn enrolment_kind_of_verified_flow(
        &self,
        flow_id: &str,
    ) -> Option<RecoveryMode> {
        match self
            .verified_flow(flow_id, self.now(), RecoveryMode::ServerHeld)
            .await
        {
            Ok(_) => Some(RecoveryMode::ServerHeld),
            Err(Error::ZeroKnowledgeEnrollment) => Some(RecoveryMode::ZeroKnowledge),
            Err(_) => None,
        }
    }

    /// `RECOVERY_LOCKED` (audited) while the account's recovery is locked: checked before any
    /// work on a verified flow.
    pub(super) async fn refuse_if_locked(
        &self,
        flow: &Flow,
        enrollment: &Enrollment,
        now: i64,
    ) -> Result<()> {
        if let Some(until) = enrollment.locked_until.filter(|until| until.as_ms() > now) {
            self.audit_refusal(flow, &enrollment.account_id, "RECOVERY_LOCKED", now)
                .await?;
            return Err(Error::RecoveryLocked {
                locked_until: until,
            });
        }
        Ok(())
    }

    /// Counts a submission of the recovery code (either kind) before it is checked: one of
    /// the flow's and one failure in the account's lockout window, given back if it proves
    /// right. Refused (and audited) while locked or when the flow's submissions are used up.
    pub(super) async fn reserve_submission(
        &self,
        flow: &Flow,
        enrollment: &Enrollment,
        now: i64,
    ) -> Result<Submission> {
        let p = &self.policy;
        // The event of the lock this submission may cause, written with the lock if it does.
        let lock_event = self
            .event(
                EventType::RecoveryLocked,
                &enrollment.account_id,
                now,
                json!({
                    "account_id": enrollment.account_id,
                    "locked_until": crate::time::rfc3339(now + p.lockout_ms),
                }),
            )?
            .pop();
        let lock_event_id = lock_event.as_ref().map(|e| e.event_id.clone());
        let reservation = self
            .storage
            .reserve_recovery_attempt(
                &flow.flow_id,
                &enrollment.account_id,
                p.recovery_attempts,
                now,
                Lockout {
                    window_ms: p.lockout_window_ms,
                    threshold: p.lockout_threshold,
                    lock_ms: p.lockout_ms,
                },
                lock_event,
            )
            .await?;
        match reservation {
            AttemptReservation::Admitted {
                used,
                failure_id,
                locked_until,
            } => Ok(Submission {
                attempts_left: p.recovery_attempts - used,
                failure_id,
                own_lock: locked_until,
                held_event: lock_event_id.filter(|_| locked_until.is_some()),
            }),
            AttemptReservation::Locked { until } => {
                self.audit_refusal(flow, &enrollment.account_id, "RECOVERY_LOCKED", now)
                    .await?;
                Err(Error::RecoveryLocked {
                    locked_until: until,
                })
            }
            AttemptReservation::NoAttempt => {
                let why = self.why_no_attempt(&flow.flow_id, now).await;
                if why == Error::TooManyAttempts {
                    self.audit_refusal(flow, &enrollment.account_id, "TOO_MANY_ATTEMPTS", now)
                        .await?;
                }
                Err(why)
            }
        }
    }

    /// What a completed recovery writes, whichever the method: the owner's notice, the
    /// audit event, `account.recovered` (and the rotated or retired credential's event), and
    /// the end of the account's organizer-assisted recovery.
    pub(super) fn completion_effects(
        &self,
        completed: &Completed<'_>,
        done: &recovery_storage::model::RecoveryCompletion,
        now: i64,
    ) -> Result<Effects> {
        let Completed {
            flow,
            enrollment,
            method,
            code_id,
            rotated_code_id,
            retired,
        } = *completed;
        let account_id = enrollment.account_id.as_str();
        let client = flow_client(flow);
        let notice = message(
            &self.keys,
            &Notice::RecoveryCompleted(context(now, &client)),
            Some(account_id),
            &enrollment.email,
        )?;
        let mut details = vec![
            ("flow_id", flow.flow_id.clone()),
            ("code_id", code_id.to_owned()),
            ("method", method.to_owned()),
            ("use_count", done.use_count.to_string()),
        ];
        if let Some(id) = rotated_code_id {
            details.push(("new_code_id", id.to_owned()));
        }
        if retired {
            details.push(("retired", "true".to_owned()));
        }
        let event = audit(
            account_id,
            AuditKind::RecoveryCompleted,
            now,
            &client,
            &details,
        )?;
        // Organizer-assisted recovery of the account ends here (a no-op outside families):
        // audited, and the family's organizers are told.
        let family = self.recovered_on_own(done, now)?;
        let mut messages = vec![notice];
        messages.extend(family.messages);
        let mut audit = vec![event];
        audit.extend(family.audit);
        // What the platform acts on: every session and device of the account ends.
        let mut events = self.event(
            EventType::AccountRecovered,
            account_id,
            now,
            json!({
                "account_id": account_id,
                "revoke_all_sessions": true,
                "method": method,
                "flow_id": flow.flow_id,
            }),
        )?;
        if let Some(new_code_id) = rotated_code_id {
            events.extend(self.event(
                EventType::RecoveryCodeReplaced,
                account_id,
                now,
                json!({
                    "account_id": account_id,
                    "code_id": new_code_id,
                    "previous_code_id": code_id,
                    "rotated_on_use": true,
                }),
            )?);
        }
        if retired {
            events.extend(self.event(
                EventType::RecoveryCodeRevoked,
                account_id,
                now,
                json!({
                    "account_id": account_id,
                    "code_id": code_id,
                    "revoked_by": "rotate_on_use",
                }),
            )?);
        }
        events.extend(family.events);
        Ok(Effects {
            messages,
            audit,
            events,
        })
    }

    /// Audits a submission refused before any check.
    async fn audit_refusal(
        &self,
        flow: &Flow,
        account_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<()> {
        let event = audit(
            account_id,
            AuditKind::SubmissionRefused,
            now,
            &flow_client(flow),
            &[
                ("flow_id", flow.flow_id.clone()),
                ("reason", reason.to_owned()),
            ],
        )?;
        self.storage
            .append_audit(super::notify::folding(
                event,
                &["reason", "caller"],
                &["flow_id"],
            ))
            .await?;
        Ok(())
    }

    /// Writes a wrong code's audit event and, when its failure locked the account, the lock's
    /// notice and audit event (the failure itself was counted before hashing).
    async fn record_failure(
        &self,
        flow: &Flow,
        enrollment: &Enrollment,
        submission: &Submission,
        client: &Client,
        now: i64,
    ) -> Result<()> {
        let account_id = enrollment.account_id.as_str();
        let mut effects = Effects {
            messages: vec![],
            audit: vec![audit(
                account_id,
                AuditKind::RecoveryCodeFailed,
                now,
                client,
                &[
                    ("flow_id", flow.flow_id.clone()),
                    ("attempts_left", submission.attempts_left.to_string()),
                ],
            )?],
            events: vec![],
        };
        let lock = self.lock_effects(flow, enrollment, submission, client, now)?;
        effects.messages.extend(lock.messages);
        effects.audit.extend(lock.audit);
        self.storage.write_effects(effects, now).await?;
        self.lock_stands(submission, account_id, now).await
    }

    /// What a submission that reached the lockout threshold writes: the owner's notice and the
    /// `RECOVERY_LOCKED` audit event (nothing when it locked nothing).
    pub(super) fn lock_effects(
        &self,
        flow: &Flow,
        enrollment: &Enrollment,
        submission: &Submission,
        client: &Client,
        now: i64,
    ) -> Result<Effects> {
        let Some(until) = submission.own_lock else {
            return Ok(Effects::none());
        };
        let account_id = enrollment.account_id.as_str();
        Ok(Effects {
            messages: vec![message(
                &self.keys,
                &Notice::RecoveryLocked(notice::RecoveryLocked {
                    locked_for_hours: self.policy.lockout_ms / HOUR_MS,
                    locked_until_ms: Some(until.as_ms()),
                    context: context(now, client),
                }),
                Some(account_id),
                &enrollment.email,
            )?],
            audit: vec![audit(
                account_id,
                AuditKind::RecoveryLocked,
                now,
                client,
                &[
                    ("flow_id", flow.flow_id.clone()),
                    ("locked_until_ms", until.as_ms().to_string()),
                ],
            )?],
            events: vec![],
        })
    }

    /// After a submission's lock and its effects are written: the lock's event, held with it,
    /// goes out, the mail worker and publisher are woken, and the lock is counted and logged.
    pub(super) async fn lock_stands(
        &self,
        submission: &Submission,
        account_id: &str,
        now: i64,
    ) -> Result<()> {
        if let Some(event_id) = &submission.held_event {
            self.storage.release_held_event(event_id, now).await?;
        }
        if let Some(until) = submission.own_lock {
            self.mail_enqueued();
            crate::metrics::get().lockout();
            tracing::warn!(
                account_id,
                locked_until_ms = until.as_ms(),
                "recovery locked after too many wrong codes"
            );
        }
        Ok(())
    }

    /// The flow, if it exists, is not completed or cancelled, and has not expired; with the
    /// live enrollment it was started against (none for an unknown email).
    pub(super) async fn find_open_flow(
        &self,
        flow_id: &str,
        now: i64,
    ) -> Result<(Flow, Option<Enrollment>)> {
        if !valid_flow_id(flow_id) {
            return Err(Error::FlowNotFound);
        }
        // One statement, for flows of known and unknown addresses alike.
        let (flow, current) = self
            .storage
            .find_flow_with_enrollment(flow_id)
            .await?
            .ok_or(Error::FlowNotFound)?;
        if flow.completed_at.is_some() {
            return Err(Error::FlowCompleted);
        }
        let target = match &flow.target {
            Some((_, generation)) => Some(
                current
                    .filter(|e| e.generation == *generation && e.code.is_some())
                    .ok_or(Error::FlowCompleted)?,
            ),
            None => None,
        };
        if now >= flow.expires_at.as_ms() {
            return Err(Error::FlowExpired);
        }
        Ok((flow, target))
    }

    /// What VerifyEmail answers for a flow that is over before its mailbox was proven. Nothing
    /// may depend on the enrolment then: a flow the owner's change cancelled (known addresses
    /// only) answers as a flow for an unknown address would once it has expired or used up its
    /// submissions (`FLOW_EXPIRED`, `TOO_MANY_ATTEMPTS`), and `FLOW_COMPLETED` only otherwise.
    async fn why_cancelled(&self, flow_id: &str, now: i64) -> Error {
        match self.storage.find_flow(flow_id).await {
            Ok(Some(f)) if f.completed_at.is_none() && f.verified_at.is_none() => {
                if now >= f.expires_at.as_ms() || now >= f.email_code_expires_at.as_ms() {
                    Error::FlowExpired
                } else if f.email_attempts >= self.policy.email_attempts {
                    Error::TooManyAttempts
                } else {
                    Error::FlowCompleted
                }
            }
            Ok(_) => Error::FlowCompleted,
            Err(err) => err.into(),
        }
    }

    /// Why `register_attempt_with` refused: the cap, or the flow ended meanwhile.
    async fn why_no_attempt(&self, flow_id: &str, now: i64) -> Error {
        match self.storage.find_flow(flow_id).await {
            Ok(Some(f)) if f.completed_at.is_some() => Error::FlowCompleted,
            Ok(Some(f)) if now >= f.expires_at.as_ms() => Error::FlowExpired,
            Ok(Some(_)) => Error::TooManyAttempts,
            Ok(None) => Error::FlowNotFound,
            Err(err) => err.into(),
        }
    }
}

/// The end user's context the flow was started with.
pub(super) fn flow_client(flow: &Flow) -> Client {
    Client {
        ip: flow.client.ip.as_deref().and_then(|ip| ip.parse().ok()),
        user_agent: flow.client.user_agent.clone(),
    }
}

fn valid_flow_id(flow_id: &str) -> bool {
    secrets::is_random_id(FLOW_PREFIX, flow_id)
}
