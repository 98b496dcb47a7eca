//! The recovery flow: BeginRecovery, VerifyEmail, RecoverAccount.

use super::{
    Error, Recovered, Recovery, Result, StartedFlow, client,
    code::RecoveryCode,
    email::{Email, mask},
    ip_limit_key,
    notice::{self, Notice},
    notify::{AuditKind, Client, audit, context, message},
    secrets,
};
use recovery_storage::model::{
    AttemptKind, Completion, CompletionUpdate, Effects, Enrollment, Flow, NewFlow, Opaque,
    RateDecision, StoredCode,
};

const FLOW_PREFIX: &str = "fl_";
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;

impl Recovery {
    /// Starts a flow for whoever claims `email`. Known and unknown emails get the same answer
    /// after the same work: the same queries and writes (the messages of an unknown email are
    /// written `void`, never sent).
    #[tracing::instrument(name = "domain.begin_recovery", skip_all)]
    pub async fn begin(
        &self,
        email: &str,
        ip_address: &str,
        user_agent: &str,
    ) -> Result<StartedFlow> {
        let email = Email::parse(email)?;
        let client = client(ip_address, user_agent)?;
        let now = self.now();
        self.check_start_limits(&email, &client, now).await?;

        let enrollment = self
            .storage
            .find_enrollment_by_email(email.lookup())
            .await?;
        let flow_id = secrets::random_id(FLOW_PREFIX)?;
        let code = secrets::email_code()?;
        let key = self.keys.current();
        let mac = secrets::email_code_mac(key, &flow_id, &code);
        let expires_at = now + self.policy.flow_ttl_ms;
        let code_expires_at = now + self.policy.email_code_ttl_ms;

        let (recipient, account_id, deliver) = match &enrollment {
            Some(e) => (e.email.as_str(), e.account_id.as_str(), true),
            None => (email.address(), "", false),
        };
        // One message: the code, with who asked and from where.
        let mut verification = message(
            &self.keys,
            &Notice::VerificationCode(notice::VerificationCode {
                code: code.clone(),
                expires_in_minutes: self.policy.email_code_ttl_ms / MINUTE_MS,
                context: context(now, &client),
            }),
            Some(account_id).filter(|a| !a.is_empty()),
            recipient,
        )?;
        verification.deliver = deliver;
        let event = audit(
            account_id,
            AuditKind::RecoveryStarted,
            now,
            &client,
            &[
                ("flow_id", flow_id.clone()),
                ("email_hint", mask(email.address())),
            ],
        )?;
        self.storage
            .create_flow(
                NewFlow {
                    flow_id: flow_id.clone(),
                    email_lookup: email.lookup().to_owned(),
                    target: enrollment
                        .as_ref()
                        .map(|e| (e.account_id.clone(), e.generation)),
                    email_code_mac: Opaque(mac),
                    mac_key_id: key.id().to_owned(),
                    email_code_expires_at: code_expires_at,
                    created_at: now,
                    expires_at,
                    client: client.to_info(),
                },
                Effects {
                    messages: vec![verification],
                    audit: vec![event],
                },
            )
            .await?;
        if enrollment.is_some() {
            self.mail_enqueued();
        }
        Ok(StartedFlow {
            flow_id,
            expires_at_ms: expires_at,
        })
    }

    async fn check_start_limits(&self, email: &Email, client: &Client, now: i64) -> Result<()> {
        let p = &self.policy;
        let mut checks = Vec::with_capacity(3);
        if let Some(ip) = client.ip {
            let key = ip_limit_key(ip);
            checks.push((
                format!("begin:min:{key}"),
                MINUTE_MS,
                p.starts_per_ip_per_minute,
                "ip_per_minute",
            ));
            checks.push((
                format!("begin:hour:{key}"),
                HOUR_MS,
                p.starts_per_ip_per_hour,
                "ip_per_hour",
            ));
        }
        checks.push((
            format!("begin:hour:email:{}", email.lookup()),
            HOUR_MS,
            p.starts_per_email_per_hour,
            "email_per_hour",
        ));
        for (key, window, limit, name) in checks {
            if let RateDecision::Limited { retry_after_ms } = self
                .storage
                .hit_rate_limit(&key, window, limit, now)
                .await?
            {
                tracing::info!(limit = name, retry_after_ms, "recovery start rate-limited");
                crate::metrics::get().rate_limited(name);
                return Err(Error::RateLimited {
                    retry_after_ms,
                    limit: name,
                });
            }
        }
        Ok(())
    }

    /// Proves control of the mailbox. Counts the submission before comparing; a verified flow
    /// accepts its right code again (a retried call succeeds) and nothing else.
    #[tracing::instrument(name = "domain.verify_email", skip_all)]
    pub async fn verify(&self, flow_id: &str, email_code: &str) -> Result<i64> {
        let code = secrets::parse_email_code(email_code)?;
        let now = self.now();
        let (flow, _) = self.find_open_flow(flow_id, now).await?;
        if now >= flow.email_code_expires_at && flow.verified_at.is_none() {
            return Err(Error::FlowExpired);
        }
        let Some(used) = self
            .storage
            .register_attempt(
                &flow.flow_id,
                AttemptKind::EmailCode,
                self.policy.email_attempts,
            )
            .await?
        else {
            return Err(self.why_no_attempt(&flow.flow_id, now).await);
        };
        let attempts_left = self.policy.email_attempts - used;
        let client = Client::default();
        let account = flow.target.as_ref().map(|(a, _)| a.as_str());
        // The MAC is checked for every flow, so that both take the same work; a flow for an
        // unknown email never verifies, whatever code it is given (API.md: it simply never
        // verifies), and answers exactly as a wrong code on a known flow.
        let code_matches = secrets::verify_email_code(
            &self.keys,
            &flow.mac_key_id,
            &flow.flow_id,
            &code,
            &flow.email_code_mac.0,
        );
        if !code_matches || account.is_none() {
            // Written for unknown emails too (under no account), so that a wrong code takes
            // the same work whether or not the email is enrolled.
            let event = audit(
                account.unwrap_or_default(),
                AuditKind::EmailCodeFailed,
                now,
                &client,
                &[
                    ("flow_id", flow.flow_id.clone()),
                    ("attempts_left", attempts_left.to_string()),
                ],
            )?;
            self.storage.append_audit(event).await?;
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
            },
            None => Effects::none(),
        };
        if self
            .storage
            .mark_flow_verified(&flow.flow_id, now, effects)
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
    pub async fn recover(&self, flow_id: &str, recovery_code: &str) -> Result<Recovered> {
        let code = RecoveryCode::parse(recovery_code)?;
        let now = self.now();
        let (flow, enrollment) = self.find_open_flow(flow_id, now).await?;
        if flow.verified_at.is_none() {
            return Err(Error::EmailNotVerified);
        }
        let Some(enrollment) = enrollment else {
            // Unknown emails never verify; a verified flow without a target is a bug.
            tracing::error!(flow_id = %flow.flow_id, "verified flow without an enrollment");
            return Err(Error::Internal);
        };
        let stored = enrollment.code.clone().ok_or(Error::FlowCompleted)?;
        if let Some(until) = enrollment.locked_until.filter(|until| *until > now) {
            return Err(Error::RecoveryLocked {
                locked_until_ms: until,
            });
        }
        let permit = self.hasher.admit().await?;
        let Some(used) = self
            .storage
            .register_attempt(
                &flow.flow_id,
                AttemptKind::RecoveryCode,
                self.policy.recovery_attempts,
            )
            .await?
        else {
            return Err(self.why_no_attempt(&flow.flow_id, now).await);
        };
        let attempts_left = self.policy.recovery_attempts - used;
        let Some(key) = self.keys.get(&stored.key_id) else {
            tracing::error!(key_id = %stored.key_id, account_id = %enrollment.account_id, "the key of a stored recovery-code hash is not configured");
            return Err(Error::Internal);
        };
        let matches = self
            .hasher
            .verify(&permit, code.canonical(), &stored.hash.0, key)
            .await?;
        let client = Client {
            ip: flow.client.ip.as_deref().and_then(|ip| ip.parse().ok()),
            user_agent: flow.client.user_agent.clone(),
        };
        let account_id = enrollment.account_id.clone();
        if !matches {
            drop(permit);
            self.record_failure(&flow, &enrollment, attempts_left, &client, now)
                .await?;
            return Err(Error::RecoveryCodeMismatch { attempts_left });
        }

        // Right code: rotate it, or upgrade its hash if its parameters or key are outdated.
        let current = self.keys.current();
        let mut new_display = None;
        let mut update = CompletionUpdate {
            verified_code_id: stored.code_id.clone(),
            ..CompletionUpdate::default()
        };
        if self.policy.reuse == crate::config::ReusePolicy::RotateOnUse {
            update.rotated = true;
            let fresh = RecoveryCode::generate()?;
            let hash = self
                .hasher
                .hash(&permit, fresh.canonical(), current)
                .await?;
            update.new_code = Some(StoredCode {
                code_id: secrets::random_id("rc_")?,
                hash: Opaque(hash),
                key_id: current.id().to_owned(),
                params: self.hasher.params().label(),
            });
            new_display = Some(fresh.display());
        } else if stored.params != self.hasher.params().label() || stored.key_id != current.id() {
            let hash = self.hasher.hash(&permit, code.canonical(), current).await?;
            update.new_code = Some(StoredCode {
                code_id: stored.code_id.clone(),
                hash: Opaque(hash),
                key_id: current.id().to_owned(),
                params: self.hasher.params().label(),
            });
        }
        drop(permit);
        let rotated_code_id = update.new_code.as_ref().map(|c| c.code_id.clone());
        let notice = message(
            &self.keys,
            &Notice::RecoveryCompleted(context(now, &client)),
            Some(&account_id),
            &enrollment.email,
        )?;
        let mut details = vec![
            ("flow_id", flow.flow_id.clone()),
            ("code_id", stored.code_id.clone()),
        ];
        if let Some(id) = &rotated_code_id {
            details.push(("new_code_id", id.clone()));
        }
        let event = audit(
            &account_id,
            AuditKind::RecoveryCompleted,
            now,
            &client,
            &details,
        )?;
        let completion = self
            .storage
            .complete_flow(&flow.flow_id, now, update, move |use_count| {
                let mut event = event;
                event
                    .details
                    .insert("use_count".into(), use_count.to_string());
                Effects {
                    messages: vec![notice],
                    audit: vec![event],
                }
            })
            .await?;
        match completion {
            Completion::Completed { use_count } => {
                self.mail_enqueued();
                tracing::info!(account_id, flow_id = %flow.flow_id, use_count, "account recovered");
                Ok(Recovered {
                    account_id,
                    new_recovery_code: new_display,
                })
            }
            Completion::Cancelled => Err(Error::FlowCompleted),
            Completion::NotCompletable => match self.storage.find_flow(&flow.flow_id).await? {
                Some(f) if f.completed_at.is_some() => Err(Error::FlowCompleted),
                _ => Err(Error::FlowExpired),
            },
        }
    }

    async fn record_failure(
        &self,
        flow: &Flow,
        enrollment: &Enrollment,
        attempts_left: i32,
        client: &Client,
        now: i64,
    ) -> Result<()> {
        let p = &self.policy;
        let account_id = enrollment.account_id.as_str();
        let failed = audit(
            account_id,
            AuditKind::RecoveryCodeFailed,
            now,
            client,
            &[
                ("flow_id", flow.flow_id.clone()),
                ("attempts_left", attempts_left.to_string()),
            ],
        )?;
        // Prepared up front: the lock's notice and audit event, written only if this failure locks.
        let locked_notice = message(
            &self.keys,
            &Notice::RecoveryLocked(notice::RecoveryLocked {
                locked_for_hours: p.lockout_ms / HOUR_MS,
                locked_until_ms: Some(now + p.lockout_ms),
                context: context(now, client),
            }),
            Some(account_id),
            &enrollment.email,
        )?;
        let locked_event = audit(
            account_id,
            AuditKind::RecoveryLocked,
            now,
            client,
            &[("flow_id", flow.flow_id.clone())],
        )?;
        let outcome = self
            .storage
            .record_recovery_failure(
                account_id,
                &flow.flow_id,
                now,
                p.lockout_window_ms,
                p.lockout_threshold,
                p.lockout_ms,
                Effects {
                    messages: vec![],
                    audit: vec![failed],
                },
                move |until| {
                    let mut event = locked_event;
                    event
                        .details
                        .insert("locked_until_ms".into(), until.to_string());
                    Effects {
                        messages: vec![locked_notice],
                        audit: vec![event],
                    }
                },
            )
            .await?;
        if let Some(until) = outcome.newly_locked_until {
            self.mail_enqueued();
            crate::metrics::get().lockout();
            tracing::warn!(
                account_id,
                locked_until_ms = until,
                failures = outcome.failures_in_window,
                "recovery locked after too many wrong codes"
            );
        }
        Ok(())
    }

    /// The flow, if it exists, is not completed or cancelled, and has not expired; with the
    /// live enrollment it was started against (none for an unknown email).
    async fn find_open_flow(&self, flow_id: &str, now: i64) -> Result<(Flow, Option<Enrollment>)> {
        if !valid_flow_id(flow_id) {
            return Err(Error::FlowNotFound);
        }
        let flow = self
            .storage
            .find_flow(flow_id)
            .await?
            .ok_or(Error::FlowNotFound)?;
        if flow.completed_at.is_some() {
            return Err(Error::FlowCompleted);
        }
        // The same lookup for flows of unknown emails (under no account), so that both take
        // the same work.
        let (account_id, generation) = flow.target.clone().unwrap_or_default();
        let current = self.storage.find_enrollment(&account_id).await?;
        let target = match flow.target {
            Some(_) => Some(
                current
                    .filter(|e| e.generation == generation && e.code.is_some())
                    .ok_or(Error::FlowCompleted)?,
            ),
            None => None,
        };
        if now >= flow.expires_at {
            return Err(Error::FlowExpired);
        }
        Ok((flow, target))
    }

    /// Why `register_attempt` refused: the cap, or the flow ended meanwhile.
    async fn why_no_attempt(&self, flow_id: &str, now: i64) -> Error {
        match self.storage.find_flow(flow_id).await {
            Ok(Some(f)) if f.completed_at.is_some() => Error::FlowCompleted,
            Ok(Some(f)) if now >= f.expires_at => Error::FlowExpired,
            Ok(Some(_)) => Error::TooManyAttempts,
            Ok(None) => Error::FlowNotFound,
            Err(err) => err.into(),
        }
    }
}

fn valid_flow_id(flow_id: &str) -> bool {
    flow_id.len() == FLOW_PREFIX.len() + 26
        && flow_id.starts_with(FLOW_PREFIX)
        && flow_id[FLOW_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}
