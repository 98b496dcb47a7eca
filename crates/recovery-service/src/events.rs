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
/// A connection down this long is dropped and made anew (a client that gave up, e.g. on an
/// authorization error, never comes back by itself).
const RECONNECT_AFTER: Duration = Duration::from_secs(30);

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

    /// Publishes until `stop` turns true. Whatever goes wrong with NATS (down at start, a
    /// credentials file not mounted yet, an authorization the server refuses, a stream that
    /// cannot be created) is retried with backoff for as long as it takes, and the backlog
    /// gauges keep being reported meanwhile, so the alerts see it.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = self.options.backoff_base;
        loop {
            self.report_backlog().await;
            let js = match self.connect().await {
                Ok(js) => js,
                Err(why) => {
                    tracing::error!(url = %self.config.url, error = %why, "cannot connect to NATS; events wait in the outbox, retrying");
                    if wait(&mut stop, backoff, None).await {
                        return;
                    }
                    backoff = (backoff * 2).min(self.options.max_backoff);
                    continue;
                }
            };
            backoff = self.options.backoff_base;
            if self.publish_while_connected(&js, &mut stop).await {
                return;
            }
        }
    }

    /// A JetStream context on a new connection, with the stream in place.
    async fn connect(&self) -> Result<jetstream::Context, String> {
        let (url, auth) = split_credentials(self.config.url.expose());
        let base = match auth {
            Some(Auth::UserPassword(user, password)) => {
                async_nats::ConnectOptions::with_user_and_password(user, password.to_string())
            }
            Some(Auth::Token(token)) => async_nats::ConnectOptions::with_token(token.to_string()),
            None => async_nats::ConnectOptions::new(),
        };
        let mut options = base
            .name("recovery-service")
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
        let tls = self.config.tls_ca.is_some()
            || url
                .split(',')
                .any(|server| server.trim().starts_with("tls://"));
        if let Some(ca) = &self.config.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        } else if tls {
            options = options.require_tls(true);
        }
        if !tls {
            // Without TLS, only the servers configured (credentials to loopback only, as the
            // configuration checked): never servers a cluster announces, which may be remote.
            options = options.ignore_discovered_servers();
        }
        if let Some(path) = &self.config.credentials_file {
            options = options.credentials_file(path).await.map_err(|err| {
                format!(
                    "cannot read the credentials file {} (RECOVERY_EVENTS_CREDENTIALS_FILE): {err}",
                    path.display()
                )
            })?;
        }
        let client = options
            .connect(url.as_str())
            .await
            .map_err(|err| err.to_string())?;
        let mut js = jetstream::new(client);
        js.set_timeout(self.options.ack_timeout);
        // The stream, created when missing; an existing one is used as it is.
        js.get_or_create_stream(jetstream::stream::Config {
            name: self.config.stream.clone(),
            subjects: vec![SUBJECTS.to_owned()],
            storage: StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        })
        .await
        .map_err(|err| format!("JetStream stream {}: {err}", self.config.stream))?;
        tracing::info!(stream = %self.config.stream, "publishing platform events to JetStream");
        Ok(js)
    }

    /// Publishes until `stop` (answers `true`) or until the connection has been down for a
    /// while (answers `false`: the caller connects anew).
    async fn publish_while_connected(
        &self,
        js: &jetstream::Context,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut down_since: Option<std::time::Instant> = None;
        loop {
            let published = self.publish_due(js, stop).await;
            self.report_backlog().await;
            if *stop.borrow() {
                return true;
            }
            let connected =
                js.client().connection_state() == async_nats::connection::State::Connected;
            match (connected, down_since) {
                (true, _) => down_since = None,
                (false, None) => down_since = Some(std::time::Instant::now()),
                (false, Some(since)) if since.elapsed() > RECONNECT_AFTER => {
                    tracing::warn!("NATS connection down for {RECONNECT_AFTER:?}: connecting anew");
                    return false;
                }
                (false, Some(_)) => {}
            }
            // A full batch: more may be due at once.
            if published >= self.options.batch as usize {
                continue;
            }
            if wait(stop, self.options.poll, Some(&self.ready)).await {
                return true;
            }
        }
    }

    /// One pass: claims due events and publishes them, the PubAcks awaited together under
    /// one deadline well inside the claims' lease (a pass never outlives its claims). Answers
    /// how many were claimed.
    async fn publish_due(&self, js: &jetstream::Context, stop: &watch::Receiver<bool>) -> usize {
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
        let deadline = tokio::time::Instant::now() + self.options.lease / 3;
        let mut pending = Vec::with_capacity(claimed);
        let mut unsent = Vec::new();
        for event in events {
            if *stop.borrow() || tokio::time::Instant::now() >= deadline {
                unsent.push(event);
                continue;
            }
            let subject = format!("{}{}", crate::domain::event::TYPE_PREFIX, event.event_type);
            let publish = PublishMessage::build()
                .payload(event.payload.clone().into())
                .message_id(&event.event_id);
            match tokio::time::timeout_at(deadline, js.send_publish(subject, publish)).await {
                Ok(Ok(ack)) => pending.push((event, ack)),
                Ok(Err(err)) => self.failed(&event, &err.to_string()).await,
                Err(_) => unsent.push(event),
            }
        }
        for event in unsent {
            self.failed(&event, "not sent within the pass (NATS slow or stopping)")
                .await;
        }
        let acks =
            futures_util::future::join_all(pending.into_iter().map(|(event, ack)| async move {
                let result = tokio::time::timeout_at(deadline, ack).await;
                (event, result)
            }))
            .await;
        for (event, result) in acks {
            match result {
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

/// How the URL authenticates.
enum Auth {
    UserPassword(String, zeroize::Zeroizing<String>),
    /// `nats://TOKEN@host`.
    Token(zeroize::Zeroizing<String>),
}

/// The server list without credentials, and the credentials given in it (the client takes
/// them as options, not inside the URL).
fn split_credentials(urls: &str) -> (String, Option<Auth>) {
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut auth = None;
    let servers: Vec<String> = urls
        .split(',')
        .map(|one| {
            let one = one.trim();
            match url::Url::parse(one) {
                Ok(mut parsed) if !parsed.username().is_empty() => {
                    let user = decode(parsed.username());
                    auth = Some(match parsed.password() {
                        Some(password) => {
                            Auth::UserPassword(user, zeroize::Zeroizing::new(decode(password)))
                        }
                        None => Auth::Token(zeroize::Zeroizing::new(user)),
                    });
                    let _ = parsed.set_username("");
                    let _ = parsed.set_password(None);
                    parsed.to_string().trim_end_matches('/').to_owned()
                }
                _ => one.to_owned(),
            }
        })
        .collect();
    (servers.join(","), auth)
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
    use super::{Auth, split_credentials};

    #[test]
    fn credentials_leave_the_url_for_the_options() {
        let (url, auth) =
            split_credentials("nats://svc:p%40s+s@nats-1:4222,nats://svc:p%40s+s@nats-2:4222");
        assert_eq!(url, "nats://nats-1:4222,nats://nats-2:4222");
        let Some(Auth::UserPassword(name, password)) = auth else {
            panic!("user and password");
        };
        assert_eq!((name.as_str(), password.as_str()), ("svc", "p@s+s"));
        let (url, auth) = split_credentials("nats://s3cr3tTOKEN@nats:4222");
        assert_eq!(url, "nats://nats:4222");
        assert!(matches!(auth, Some(Auth::Token(t)) if t.as_str() == "s3cr3tTOKEN"));
        let (url, auth) = split_credentials("tls://nats.internal:4222");
        assert_eq!(url, "tls://nats.internal:4222");
        assert!(auth.is_none());
    }
}
