//! The delivery worker: claim, render, send, mark; retry with backoff; dead-letter.

use std::{sync::Arc, time::Duration};

use lettre::{
    Message,
    message::{Mailbox, MultiPart},
};
use recovery_storage::{Storage, model::OutboxMessage};
use tokio::sync::{Notify, watch};

use super::{
    Transport,
    templates::{self, Branding},
};
use crate::{
    crypto::KeyRing,
    domain::{
        Clock,
        email::{mask, redact_addresses},
        notice::{MessageKind, Notice},
        secrets,
    },
};

/// How long a woken worker waits before claiming, so that one claim takes several messages.
const WAKE_DEBOUNCE: Duration = Duration::from_millis(20);

/// How often the outbox gauges are refreshed.
const STATS_INTERVAL: Duration = Duration::from_secs(10);

/// How often expired rows are deleted.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(300);

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// The `From` of every message.
    pub from: Mailbox,
    /// Attempts before a message is dead-lettered.
    pub max_attempts: i32,
    /// First retry delay; doubles each attempt, with ±20 % jitter.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How long a claim lasts before another worker may take the row over (a worker that
    /// died mid-send). Longer than the SMTP timeout.
    pub lease: Duration,
    /// How often an idle worker looks for due rows.
    pub poll_interval: Duration,
    /// Rows claimed at once.
    pub batch: u32,
    /// How long one send may take in all (lettre bounds only the connect); shorter than the
    /// lease, so a stalled relay never leads to a second send by another worker.
    pub send_timeout: Duration,
    /// How long lockout failures are kept (at least the lockout window).
    pub failure_retention: Duration,
    /// How long audit events are kept.
    pub audit_retention: Duration,
    /// Product name and support contact the messages use.
    pub branding: Branding,
}

impl DeliveryOptions {
    pub fn new(from: Mailbox) -> Self {
        Self {
            from,
            max_attempts: 10,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(600),
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(200),
            batch: 16,
            send_timeout: Duration::from_secs(20),
            failure_retention: Duration::from_secs(2 * 24 * 3600),
            audit_retention: Duration::from_secs(400 * 24 * 3600),
            branding: Branding::default(),
        }
    }
}

/// One replica's delivery worker.
#[derive(Debug, Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    storage: Storage,
    transport: Transport,
    keys: Arc<KeyRing>,
    clock: Arc<dyn Clock>,
    options: DeliveryOptions,
    owner: String,
    wake: Arc<Notify>,
    /// The account the audit retention's next pass starts after.
    prune_from: std::sync::Mutex<String>,
}

impl Worker {
    /// A worker over `storage`'s outbox. `wake` is notified when mail was just enqueued
    /// ([`crate::domain::Recovery::mail_ready`]).
    pub fn new(
        storage: Storage,
        transport: Transport,
        keys: Arc<KeyRing>,
        clock: Arc<dyn Clock>,
        options: DeliveryOptions,
        wake: Arc<Notify>,
    ) -> Result<Self, crate::domain::Error> {
        Ok(Self {
            inner: Arc::new(Inner {
                storage,
                transport,
                keys,
                clock,
                options,
                owner: secrets::random_id("worker_")?,
                wake,
                prune_from: std::sync::Mutex::new(String::new()),
            }),
        })
    }

    /// Runs until `stop` turns true: delivers due rows, sleeping `poll_interval` when idle.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        tracing::info!(owner = %self.inner.owner, transport = %self.inner.transport, "mail delivery worker started");
        let mut next_cleanup = tokio::time::Instant::now();
        let mut next_stats = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_cleanup {
                self.cleanup().await;
                self.audit_upkeep().await;
                next_cleanup = tokio::time::Instant::now() + CLEANUP_INTERVAL;
            }
            if tokio::time::Instant::now() >= next_stats {
                self.publish_stats().await;
                next_stats = tokio::time::Instant::now() + STATS_INTERVAL;
            }
            let delivered = match self.deliver_due().await {
                Ok(n) => n,
                Err(err) => {
                    tracing::warn!(error = %err, "outbox unavailable; retrying");
                    0
                }
            };
            if delivered > 0 {
                continue;
            }
            let woken = tokio::select! {
                () = tokio::time::sleep(self.inner.options.poll_interval) => false,
                () = self.inner.wake.notified() => true,
                _ = stop.wait_for(|s| *s) => break,
            };
            if woken {
                // Let the messages of calls committing right now join one claim.
                tokio::time::sleep(WAKE_DEBOUNCE).await;
            }
        }
        tracing::info!("mail delivery worker stopped");
    }

    async fn publish_stats(&self) {
        match self.inner.storage.outbox_stats().await {
            Ok(stats) => {
                let now = self.inner.clock.now_ms();
                let age = stats
                    .oldest_backlog_at
                    .map_or(0, |t| (now - t.as_ms()).max(0));
                crate::metrics::set_outbox(stats.backlog, stats.dead, age);
            }
            Err(err) => tracing::debug!(error = %err, "outbox stats unavailable"),
        }
    }

    /// Deletes expired flows, rate-limit windows, old lockout failures and old sent mail, in
    /// bounded batches.
    async fn cleanup(&self) {
        let now = self.inner.clock.now_ms();
        // Lockout failures matter for at most the lockout window (24 h by default); keep two
        // days. Sent rows (payload already wiped) are kept a week for operators.
        use crate::time::DAY_MS;
        for _ in 0..10 {
            match self
                .inner
                .storage
                .cleanup(
                    now,
                    now - i64::try_from(self.inner.options.failure_retention.as_millis())
                        .unwrap_or(i64::MAX / 2),
                    now - 7 * DAY_MS,
                    1000,
                )
                .await
            {
                Ok(report) => {
                    let total = report.flows
                        + report.assisted_flows
                        + report.published_events
                        + report.rate_limits
                        + report.failures
                        + report.sent_messages
                        + report.contact_flows;
                    if total > 0 {
                        tracing::debug!(
                            flows = report.flows,
                            assisted_flows = report.assisted_flows,
                            published_events = report.published_events,
                            rate_limits = report.rate_limits,
                            failures = report.failures,
                            sent_messages = report.sent_messages,
                            contact_flows = report.contact_flows,
                            "cleaned up expired rows"
                        );
                    }
                    if total < 1000 {
                        return;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cleanup failed");
                    return;
                }
            }
        }
    }

    /// Keeps the audit trail: seals rows still written in clear (from before personal details
    /// were sealed), then prunes events past `RECOVERY_AUDIT_RETENTION`; bounded batches.
    pub async fn audit_upkeep(&self) {
        let storage = &self.inner.storage;
        let now = self.inner.clock.now_ms();
        for _ in 0..10 {
            match storage.reseal_clear_trails(now, 200).await {
                Ok(Some(sealed)) => {
                    tracing::info!(
                        sealed,
                        "sealed the personal details of audit events written in clear"
                    );
                }
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "sealing audit events written in clear failed");
                    break;
                }
            }
        }
        let before = now
            - i64::try_from(self.inner.options.audit_retention.as_millis()).unwrap_or(i64::MAX / 2);
        // Where the last pass stopped, so accounts that keep their events (a trail that does
        // not verify) cannot hold the others back.
        let mut after = self
            .inner
            .prune_from
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        for _ in 0..10 {
            match storage.prune_audit(before, 500, &after).await {
                Ok(report) => {
                    let pruned = report.account_events + report.unattached_events;
                    if pruned > 0 || report.kept_broken > 0 {
                        tracing::info!(
                            account_events = report.account_events,
                            unattached_events = report.unattached_events,
                            kept_broken = report.kept_broken,
                            "pruned audit events past their retention"
                        );
                    }
                    after = report.next_account.unwrap_or_default();
                    if let Ok(mut from) = self.inner.prune_from.lock() {
                        from.clone_from(&after);
                    }
                    if after.is_empty() && pruned == 0 {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "pruning audit events failed");
                    break;
                }
            }
        }
    }

    /// Claims and handles one batch of due rows; answers how many were claimed.
    pub async fn deliver_due(&self) -> Result<usize, recovery_storage::StorageError> {
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        let lease_ms = i64::try_from(inner.options.lease.as_millis()).unwrap_or(60_000);
        let claimed = inner
            .storage
            .claim_outbox(&inner.owner, inner.options.batch, lease_ms, now)
            .await?;
        let count = claimed.len();
        // Send the batch concurrently: the SMTP transport pools connections, and each message
        // waits on network round trips, not on this process.
        let mut sends = tokio::task::JoinSet::new();
        for row in claimed {
            let worker = self.clone();
            sends.spawn(async move { worker.deliver(row).await });
        }
        let mut first_error = None;
        while let Some(done) = sends.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(err)) => first_error = first_error.or(Some(err)),
                Err(join) => tracing::error!(error = %join, "a send task failed"),
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(count),
        }
    }

    async fn deliver(&self, row: OutboxMessage) -> Result<(), recovery_storage::StorageError> {
        let inner = &self.inner;
        let owner = inner.owner.as_str();
        let message = match self.build(&row) {
            Ok(message) => message,
            Err(why) => {
                tracing::error!(message_id = %row.message_id, kind = %row.kind, reason = why, "dead letter: cannot build the message");
                crate::metrics::get().dead_letter(&row.kind);
                inner.storage.dead_letter_outbox(row.id, owner, why).await?;
                return Ok(());
            }
        };
        // An SMTP server's reply may quote the address: never logged or stored in full.
        let sent =
            match tokio::time::timeout(inner.options.send_timeout, inner.transport.send(message))
                .await
            {
                Ok(result) => result,
                Err(_) => Err(crate::mail::SendError {
                    permanent: false,
                    message: format!(
                        "the send took longer than {}",
                        humantime::format_duration(inner.options.send_timeout)
                    ),
                }),
            };
        match sent.map_err(|mut err| {
            err.message = redact_addresses(&err.message);
            err
        }) {
            Ok(()) => {
                // The server accepted it: mark at once. A crash between the two is the only
                // window in which a message may go out twice (after the lease runs out).
                let now = inner.clock.now_ms();
                if !inner.storage.mark_outbox_sent(row.id, owner, now).await? {
                    tracing::warn!(message_id = %row.message_id, "sent, but the claim had expired");
                }
                crate::metrics::get().mail_sent(&row.kind);
                tracing::info!(
                    message_id = %row.message_id,
                    kind = %row.kind,
                    to = %mask(&row.recipient),
                    attempts = row.attempts,
                    queued_ms = now - row.created_at.as_ms(),
                    "mail sent"
                );
            }
            Err(err) if err.permanent || row.attempts >= inner.options.max_attempts => {
                tracing::error!(
                    message_id = %row.message_id,
                    kind = %row.kind,
                    to = %mask(&row.recipient),
                    attempts = row.attempts,
                    error = %err.message,
                    "dead letter: mail could not be delivered"
                );
                crate::metrics::get().dead_letter(&row.kind);
                inner
                    .storage
                    .dead_letter_outbox(row.id, owner, &err.message)
                    .await?;
            }
            Err(err) => {
                let delay = self.backoff(row.attempts);
                let next = inner.clock.now_ms() + i64::try_from(delay.as_millis()).unwrap_or(0);
                tracing::warn!(
                    message_id = %row.message_id,
                    attempts = row.attempts,
                    retry_in = ?delay,
                    error = %err.message,
                    "mail send failed; will retry"
                );
                inner
                    .storage
                    .reschedule_outbox(row.id, owner, next, &err.message)
                    .await?;
            }
        }
        Ok(())
    }

    fn build(&self, row: &OutboxMessage) -> Result<Message, &'static str> {
        let inner = &self.inner;
        let plaintext = crate::crypto::unseal(&inner.keys, &row.message_id, &row.payload.0)
            .map_err(|_| "the payload cannot be opened with the configured keys")?;
        let kind = MessageKind::parse(&row.kind).ok_or("unknown message kind")?;
        let notice = Notice::from_json(kind, &plaintext)
            .map_err(|_| "the payload does not match its message kind")?;
        let rendered = templates::render(&notice, &row.recipient, &inner.options.branding);
        let to: Mailbox = row
            .recipient
            .parse()
            .map_err(|_| "the recipient is not an address")?;
        Message::builder()
            .from(inner.options.from.clone())
            .to(to)
            .subject(rendered.subject)
            .message_id(Some(format!("<{}@recovery-service>", row.message_id)))
            .multipart(MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ))
            .map_err(|_| "the message cannot be built")
    }

    /// `base × 2^(attempts-1)`, capped, with ±20 % jitter.
    fn backoff(&self, attempts: i32) -> Duration {
        let o = &self.inner.options;
        let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(0);
        let base = o
            .backoff_base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(o.backoff_max);
        let jitter: [u8; 2] = secrets::random_bytes().unwrap_or([0; 2]);
        let unit = f64::from(u16::from_le_bytes(jitter)) / f64::from(u16::MAX); // 0..=1
        base.mul_f64(0.8 + 0.4 * unit)
    }
}
