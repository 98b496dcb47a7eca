//! Metrics, exported through the same OTLP pipeline as traces (no-ops when export is off).
//! Names follow OpenTelemetry conventions; no label ever carries an email or a secret.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, Meter},
};

use crate::crypto::hasher::Hasher;

/// The instruments.
#[derive(Debug)]
pub struct Metrics {
    rpc_duration: Histogram<f64>,
    rate_limited: Counter<u64>,
    lockouts: Counter<u64>,
    mail_sent: Counter<u64>,
    dead_letters: Counter<u64>,
    events_published: Counter<u64>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();
static OUTBOX_BACKLOG: AtomicI64 = AtomicI64::new(0);
static OUTBOX_DEAD: AtomicI64 = AtomicI64::new(0);
static OUTBOX_OLDEST_AGE_MS: AtomicI64 = AtomicI64::new(0);
static EVENTS_BACKLOG: AtomicI64 = AtomicI64::new(0);
static EVENTS_OLDEST_AGE_MS: AtomicI64 = AtomicI64::new(0);

fn meter() -> Meter {
    opentelemetry::global::meter("recovery-service")
}

/// The instruments (created on first use, after telemetry is set up).
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let meter = meter();
        Metrics {
            rpc_duration: meter
                .f64_histogram("rpc.server.duration")
                .with_unit("ms")
                .with_description("Duration of inbound gRPC calls")
                .build(),
            rate_limited: meter
                .u64_counter("recovery.rate_limit.rejections")
                .with_description("Calls refused by a rate limit, by limit")
                .build(),
            lockouts: meter
                .u64_counter("recovery.lockouts")
                .with_description("Accounts whose recovery was locked after too many wrong codes")
                .build(),
            mail_sent: meter
                .u64_counter("recovery.mail.sent")
                .with_description("Messages accepted by the mail transport, by kind")
                .build(),
            dead_letters: meter
                .u64_counter("recovery.mail.dead_letters")
                .with_description("Messages given up on, by kind")
                .build(),
            events_published: meter
                .u64_counter("recovery.events.published")
                .with_description("Platform events JetStream acknowledged, by type")
                .build(),
        }
    })
}

impl Metrics {
    pub fn rpc(&self, service: &str, method: &str, status_code: i64, elapsed: Duration) {
        self.rpc_duration.record(
            elapsed.as_secs_f64() * 1000.0,
            &[
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", service.to_owned()),
                KeyValue::new("rpc.method", method.to_owned()),
                KeyValue::new("rpc.grpc.status_code", status_code),
            ],
        );
    }

    pub fn rate_limited(&self, limit: &'static str) {
        self.rate_limited.add(1, &[KeyValue::new("limit", limit)]);
    }

    pub fn lockout(&self) {
        self.lockouts.add(1, &[]);
    }

    pub fn mail_sent(&self, kind: &str) {
        self.mail_sent
            .add(1, &[KeyValue::new("kind", kind.to_owned())]);
    }

    pub fn event_published(&self, event_type: &str) {
        self.events_published
            .add(1, &[KeyValue::new("type", event_type.to_owned())]);
    }

    pub fn dead_letter(&self, kind: &str) {
        self.dead_letters
            .add(1, &[KeyValue::new("kind", kind.to_owned())]);
    }
}

/// Publishes the outbox's state for the gauges.
pub fn set_outbox(backlog: i64, dead: i64, oldest_age_ms: i64) {
    OUTBOX_BACKLOG.store(backlog, Ordering::Relaxed);
    OUTBOX_DEAD.store(dead, Ordering::Relaxed);
    OUTBOX_OLDEST_AGE_MS.store(oldest_age_ms, Ordering::Relaxed);
}

/// Publishes the event outbox's state for the gauges.
pub fn set_events(backlog: i64, oldest_age_ms: i64) {
    EVENTS_BACKLOG.store(backlog, Ordering::Relaxed);
    EVENTS_OLDEST_AGE_MS.store(oldest_age_ms, Ordering::Relaxed);
}

/// Registers the gauges of the hashing pool and the outbox.
pub fn register_gauges(hasher: Hasher) {
    let meter = meter();
    let pool = hasher.clone();
    let _ = meter
        .i64_observable_gauge("recovery.hash.pool.in_use")
        .with_description("Hashing permits held")
        .with_callback(move |o| o.observe(pool.in_use() as i64, &[]))
        .build();
    let pool = hasher.clone();
    let _ = meter
        .i64_observable_gauge("recovery.hash.pool.waiting")
        .with_description("Calls waiting for a hashing permit")
        .with_callback(move |o| {
            o.observe(pool.stats().waiting.load(Ordering::Relaxed) as i64, &[]);
        })
        .build();
    let pool = hasher.clone();
    let _ = meter
        .u64_observable_counter("recovery.hash.pool.skipped")
        .with_description("Queued hashes skipped because their caller had gone")
        .with_callback(move |o| o.observe(pool.stats().skipped.load(Ordering::Relaxed), &[]))
        .build();
    let pool = hasher.clone();
    let _ = meter
        .u64_observable_counter("recovery.hash.pool.abandoned")
        .with_description("Hashes computed for callers that had gone")
        .with_callback(move |o| o.observe(pool.stats().abandoned.load(Ordering::Relaxed), &[]))
        .build();
    let pool = hasher;
    let _ = meter
        .u64_observable_counter("recovery.hash.pool.rejected")
        .with_description("Calls answered OVERLOADED")
        .with_callback(move |o| o.observe(pool.stats().rejected.load(Ordering::Relaxed), &[]))
        .build();
    let _ = meter
        .i64_observable_gauge("recovery.outbox.backlog")
        .with_description("Messages waiting to be sent")
        .with_callback(|o| o.observe(OUTBOX_BACKLOG.load(Ordering::Relaxed), &[]))
        .build();
    let _ = meter
        .i64_observable_gauge("recovery.outbox.oldest_age")
        .with_unit("ms")
        .with_description("Age of the oldest message waiting to be sent")
        .with_callback(|o| o.observe(OUTBOX_OLDEST_AGE_MS.load(Ordering::Relaxed), &[]))
        .build();
    let _ = meter
        .i64_observable_gauge("recovery.outbox.dead")
        .with_description("Messages in the dead-letter state")
        .with_callback(|o| o.observe(OUTBOX_DEAD.load(Ordering::Relaxed), &[]))
        .build();
    let _ = meter
        .i64_observable_gauge("recovery.events.backlog")
        .with_description("Platform events waiting to be published to NATS")
        .with_callback(|o| o.observe(EVENTS_BACKLOG.load(Ordering::Relaxed), &[]))
        .build();
    let _ = meter
        .i64_observable_gauge("recovery.events.oldest_age")
        .with_unit("ms")
        .with_description("Age of the oldest platform event waiting to be published")
        .with_callback(|o| o.observe(EVENTS_OLDEST_AGE_MS.load(Ordering::Relaxed), &[]))
        .build();
}
