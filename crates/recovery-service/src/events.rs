//! The platform-event publisher: one per replica. It claims events from the outbox (the oldest
//! unpublished event of each account, across replicas), publishes each to NATS JetStream with
//! `Nats-Msg-Id` = the event id, and marks it published only after JetStream's PubAck. NATS
//! being down never touches an RPC: events wait in the outbox (the backlog gauges say how
//! many, how old) and go out, in order, once it is back.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, message::PublishMessage, stream::StorageType};
use recovery_storage::{Storage, model::OutboxEvent};
use tokio::sync::{Notify, watch};

use crate::{config::EventsConfig, domain::Clock};

/// Subjects of the stream; an event goes to `identity.recovery.v1.<type>`.
pub const SUBJECTS: &str = "identity.recovery.v1.>";
/// JetStream drops a repeated `Nats-Msg-Id` within this window.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How the publisher works; defaults suit production.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Events claimed at once (one per account).
    pub batch: u32,
    /// A claim's lease: after a crash another replica publishes the event once it runs out.
    pub lease: Duration,
    /// How long to wait for a PubAck.
    pub ack_timeout: Duration,
    /// First retry delay of a failed publish (doubles, capped at `max_backoff`).
    pub backoff_base: Duration,
    pub max_backoff: Duration,
    /// How often to look for due events without being woken.
    pub poll: Duration,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self {
            batch: 128,
            lease: Duration::from_secs(30),
            ack_timeout: Duration::from_secs(5),
            backoff_base: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            poll: Duration::from_secs(1),
        }
    }
}

/// The publisher of one replica.
#[derive(Debug)]
pub struct Publisher {
    storage: Storage,
    config: EventsConfig,
    clock: Arc<dyn Clock>,
    options: PublishOptions,
    ready: Arc<Notify>,
    owner: String,
}

impl Publisher {
    pub fn new(
        storage: Storage,
        config: EventsConfig,
        clock: Arc<dyn Clock>,
        options: PublishOptions,
        ready: Arc<Notify>,
    ) -> anyhow::Result<Self> {
        let owner = crate::domain::secrets::random_id("pub_").map_err(anyhow::Error::msg)?;
        Ok(Self {
            storage,
            config,
            clock,
            options,
            ready,
            owner,
        })
    }

    /// Publishes until `stop` turns true. Connects in the background: a NATS that is down at
    /// start is retried for as long as it takes.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let (url, user) = split_credentials(self.config.url.expose());
        let base = match user {
            Some((user, password)) => {
                async_nats::ConnectOptions::with_user_and_password(user, password.to_string())
            }
            None => async_nats::ConnectOptions::new(),
        };
        let mut options = base
            .name("recovery-service")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("disconnected from NATS: events wait in the outbox");
                    }
                    other => tracing::debug!(event = %other, "NATS"),
                }
            });
        if let Some(ca) = &self.config.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        } else if url.starts_with("tls://") {
            options = options.require_tls(true);
        }
        if let Some(path) = &self.config.credentials_file {
            options = match options.credentials_file(path).await {
                Ok(options) => options,
                Err(err) => {
                    tracing::error!(path = %path.display(), error = %err, "cannot read the NATS credentials file (RECOVERY_EVENTS_CREDENTIALS_FILE): no events are published");
                    return;
                }
            };
        }
        let client = match options.connect(url.as_str()).await {
            Ok(client) => client,
            Err(err) => {
                tracing::error!(url = %self.config.url, error = %err, "cannot connect to NATS: no events are published");
                return;
            }
        };
        let mut js = jetstream::new(client);
        js.set_timeout(self.options.ack_timeout);
        // The stream, created when missing; an existing one is used as it is.
        let mut backoff = self.options.backoff_base;
        loop {
            match js
                .get_or_create_stream(jetstream::stream::Config {
                    name: self.config.stream.clone(),
                    subjects: vec![SUBJECTS.to_owned()],
                    storage: StorageType::File,
                    duplicate_window: DUPLICATE_WINDOW,
                    ..Default::default()
                })
                .await
            {
                Ok(_) => {
                    tracing::info!(stream = %self.config.stream, "publishing platform events to JetStream");
                    break;
                }
                Err(err) => {
                    tracing::warn!(stream = %self.config.stream, error = %err, "JetStream stream not available yet; events wait in the outbox");
                    self.report_backlog().await;
                    if wait(&mut stop, backoff, None).await {
                        return;
                    }
                    backoff = (backoff * 2).min(self.options.max_backoff);
                }
            }
        }
        loop {
            let published = self.publish_due(&js).await;
            self.report_backlog().await;
            if *stop.borrow() {
                return;
            }
            // A full batch: more may be due at once.
            if published >= self.options.batch as usize {
                continue;
            }
            if wait(&mut stop, self.options.poll, Some(&self.ready)).await {
                return;
            }
        }
    }

    /// One pass: claims due events and publishes them, all PubAcks awaited together. Answers
    /// how many were claimed.
    async fn publish_due(&self, js: &jetstream::Context) -> usize {
        let now = self.clock.now_ms();
        let lease_ms = i64::try_from(self.options.lease.as_millis()).unwrap_or(i64::MAX);
        let events = match self
            .storage
            .claim_events(&self.owner, self.options.batch, lease_ms, now)
            .await
        {
            Ok(events) => events,
            Err(err) => {
                tracing::warn!(error = %err, "cannot claim events");
                return 0;
            }
        };
        let claimed = events.len();
        let mut pending = Vec::with_capacity(claimed);
        for event in events {
            let subject = format!("{}{}", crate::domain::event::TYPE_PREFIX, event.event_type);
            let publish = PublishMessage::build()
                .payload(event.payload.clone().into())
                .message_id(&event.event_id);
            match js.send_publish(subject, publish).await {
                Ok(ack) => pending.push((event, ack)),
                Err(err) => self.failed(&event, &err.to_string()).await,
            }
        }
        for (event, ack) in pending {
            match tokio::time::timeout(self.options.ack_timeout, ack).await {
                Ok(Ok(_ack)) => {
                    match self
                        .storage
                        .mark_event_published(event.seq, &self.owner, self.clock.now_ms())
                        .await
                    {
                        Ok(true) => {
                            crate::metrics::get().event_published(&event.event_type);
                            tracing::debug!(event_id = %event.event_id, event_type = %event.event_type, "event published");
                        }
                        Ok(false) => {
                            tracing::info!(event_id = %event.event_id, "event published after its claim ran out; it may be published again (consumers deduplicate by id)")
                        }
                        Err(err) => {
                            tracing::warn!(event_id = %event.event_id, error = %err, "event published but not marked; it will be published again")
                        }
                    }
                }
                Ok(Err(err)) => self.failed(&event, &err.to_string()).await,
                Err(_) => self.failed(&event, "no PubAck in time").await,
            }
        }
        claimed
    }

    /// Gives a failed event back for a later attempt, with backoff.
    async fn failed(&self, event: &OutboxEvent, why: &str) {
        let exp = u32::try_from(event.attempts.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
        let delay = self
            .options
            .backoff_base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.options.max_backoff);
        let next = self.clock.now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        tracing::warn!(event_id = %event.event_id, event_type = %event.event_type, attempts = event.attempts, retry_in_ms = delay.as_millis() as u64, error = %why, "event not published; retrying");
        if let Err(err) = self
            .storage
            .reschedule_event(event.seq, &self.owner, next, why)
            .await
        {
            tracing::warn!(event_id = %event.event_id, error = %err, "cannot reschedule an event; its claim runs out and it is retried then");
        }
    }

    async fn report_backlog(&self) {
        if let Ok(stats) = self.storage.event_stats().await {
            let age = stats
                .oldest_backlog_at
                .map_or(0, |at| (self.clock.now_ms() - at.as_ms()).max(0));
            crate::metrics::set_events(stats.backlog, age);
        }
    }
}

/// The server list without credentials, and the user and password given in it (the client
/// takes them as options, not inside the URL).
fn split_credentials(urls: &str) -> (String, Option<(String, zeroize::Zeroizing<String>)>) {
    let mut user = None;
    let servers: Vec<String> = urls
        .split(',')
        .map(|one| {
            let one = one.trim();
            match url::Url::parse(one) {
                Ok(mut parsed) if !parsed.username().is_empty() => {
                    let decode = |text: &str| {
                        url::form_urlencoded::parse(format!("x={text}").as_bytes())
                            .next()
                            .map(|(_, v)| v.into_owned())
                            .unwrap_or_default()
                    };
                    user = Some((
                        decode(parsed.username()),
                        zeroize::Zeroizing::new(decode(parsed.password().unwrap_or_default())),
                    ));
                    let _ = parsed.set_username("");
                    let _ = parsed.set_password(None);
                    parsed.to_string().trim_end_matches('/').to_owned()
                }
                _ => one.to_owned(),
            }
        })
        .collect();
    (servers.join(","), user)
}

/// Waits `period`, a wake-up, or `stop`; `true` when stopping.
async fn wait(stop: &mut watch::Receiver<bool>, period: Duration, ready: Option<&Notify>) -> bool {
    let woken = async {
        match ready {
            Some(ready) => ready.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(period) => {}
        () = woken => {}
        _ = stop.changed() => {}
    }
    *stop.borrow()
}

#[cfg(test)]
mod tests {
    use super::split_credentials;

    #[test]
    fn credentials_leave_the_url_for_the_options() {
        let (url, user) =
            split_credentials("nats://svc:p%40ss@nats-1:4222,nats://svc:p%40ss@nats-2:4222");
        assert_eq!(url, "nats://nats-1:4222,nats://nats-2:4222");
        let (name, password) = user.unwrap();
        assert_eq!((name.as_str(), password.as_str()), ("svc", "p@ss"));
        let (url, user) = split_credentials("tls://nats.internal:4222");
        assert_eq!(url, "tls://nats.internal:4222");
        assert!(user.is_none());
    }
}
