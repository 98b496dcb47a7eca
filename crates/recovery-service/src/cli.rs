//! The command line: `serve` (default), `migrate`, `healthcheck`.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use recovery_storage::{ConnectOptions, Storage};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::{
    config::{self, Config, ConfigError, KeySource, TlsConfig},
    crypto::KeyRing,
    crypto::hasher::Hasher,
    domain::{Recovery, SystemClock},
    grpc::auth::Callers,
    healthcheck,
    mail::{DeliveryOptions, Transport, Worker},
    server, telemetry,
};

const CONFIGURATION_HELP: &str = "\
Configuration: environment variables; the same keys, lower-cased and without
RECOVERY_, may be set in the --config TOML file, which the environment overrides.
Secrets (*_FILE) can be read from files.

Server
  RECOVERY_LISTEN_ADDR              gRPC address, IP:PORT or localhost:PORT
                                    [default: 127.0.0.1:50051]
  RECOVERY_HEALTH_LISTEN_ADDR       extra plaintext port serving only the health
                                    service (Kubernetes gRPC probes) [default: unset]
  RECOVERY_SHUTDOWN_GRACE           how long in-flight calls may finish after
                                    SIGTERM [default: 30s]
  RECOVERY_LOG_FORMAT               text or json [default: text]; RUST_LOG filters
                                    [default: info]

Callers
  RECOVERY_TLS_CERT, RECOVERY_TLS_KEY
                                    server certificate and key (PEM)
                                    [default: unset: plaintext]
  RECOVERY_TLS_CLIENT_CA            CA (PEM) for client certificates: mutual TLS
  RECOVERY_CALLERS                  IDENTITY=ROLE,... mapping client certificate
                                    SANs to the roles auth and operator
  RECOVERY_TRUST_ALL_CALLERS        without a client CA, trust every caller on a
                                    non-loopback address (a mesh authenticates
                                    them); otherwise start-up refuses
                                    [default: false]

Database and keys
  RECOVERY_DATABASE_URL             sqlite://FILE?mode=rwc or postgres://...
                                    [default: sqlite://recovery.db?mode=rwc]
  RECOVERY_DATABASE_URL_FILE        read the database URL from this file
  RECOVERY_DATABASE_MAX_CONNECTIONS PostgreSQL pool size [default: 10]
  RECOVERY_SECRET_KEY               64 hex characters, or ID:HEX,ID:HEX for
                                    rotation (the first is current)
                                    [default with SQLite: generated once into
                                    FILE.key beside the database; required with
                                    PostgreSQL]
  RECOVERY_SECRET_KEY_FILE          read the secret key from this file

Mail
  RECOVERY_SMTP_URL                 smtps://HOST (implicit TLS) or smtp://HOST:PORT
                                    (STARTTLS required to a non-loopback host
                                    unless ?tls=none) [default: unset: .eml
                                    files in RECOVERY_MAIL_DIR]
  RECOVERY_SMTP_TIMEOUT             one SMTP exchange [default: 20s]
  RECOVERY_SMTP_PASSWORD_FILE       SMTP password, read from this file
  RECOVERY_MAIL_DIR                 where .eml files go without SMTP
                                    [default: ./mail]
  RECOVERY_MAIL_FROM                sender
                                    [default: Account Recovery <no-reply@localhost>]
  RECOVERY_PRODUCT_NAME             product named in mail (\"your Acme account\")
                                    [default: unset: \"your account\"]
  RECOVERY_SUPPORT_URL              https:// or mailto: URL that mail gives to a
                                    person who did not make a change
                                    [default: unset: \"contact support\"]
  RECOVERY_MAIL_MAX_ATTEMPTS        delivery attempts before a dead letter
                                    [default: 10]
  RECOVERY_MAIL_RETRY_BASE          first retry delay, doubling up to 10m
                                    [default: 2s]
  RECOVERY_MAIL_LEASE               a worker's claim on a message; after a crash
                                    another worker sends it once this runs out
                                    [default: 60s]

Audit trail
  RECOVERY_AUDIT_RETENTION          how long audit events are kept; older ones
                                    are pruned oldest first behind a MAC'd base,
                                    so the trail still verifies [default: 400d;
                                    at least 1d]

Platform events (NATS JetStream)
  RECOVERY_EVENTS_URL               nats://[USER:PASS@]HOST:PORT or tls://...,
                                    comma-separated for a cluster
                                    [default: unset: no events]
  RECOVERY_EVENTS_STREAM            stream, created when missing (subjects
                                    identity.recovery.v1.>) [default:
                                    IDENTITY_RECOVERY]
  RECOVERY_EVENTS_CREDENTIALS_FILE  NATS credentials file (JWT and NKey seed)
  RECOVERY_EVENTS_TLS_CA            CA (PEM) the NATS servers' certificates are
                                    checked against; requires TLS [default:
                                    unset: the system's CA store for tls://]

Recovery rules
  RECOVERY_REUSE_POLICY             reusable or rotate_on_use [default: reusable]
  RECOVERY_FLOW_TTL, RECOVERY_EMAIL_CODE_TTL
                                    lifetimes [default: 30m, 15m]
  RECOVERY_EMAIL_CODE_ATTEMPTS, RECOVERY_RECOVERY_CODE_ATTEMPTS
                                    submissions per flow [default: 5, 5]
  RECOVERY_LOCKOUT_THRESHOLD, RECOVERY_LOCKOUT_WINDOW, RECOVERY_LOCKOUT_DURATION
                                    wrong codes that lock recovery
                                    [default: 10 in 24h, for 24h]
  RECOVERY_STARTS_PER_EMAIL_PER_HOUR, RECOVERY_STARTS_PER_IP_PER_HOUR,
  RECOVERY_STARTS_PER_IP_PER_MINUTE BeginRecovery limits [default: 5, 20, 10]
  RECOVERY_ADDRESS_CLAIMS_PER_DAY   new recovery addresses an account may claim
                                    a day, refused or not [default: 10]
  RECOVERY_CREATES_PER_ACCOUNT_PER_HOUR
                                    CreateRecoveryCode calls per account an
                                    hour, before any hashing [default: 10]

Recovery contacts
  RECOVERY_CONTACT_INVITATION       how long an invitation stays open [default: 7d]
  RECOVERY_CONTACT_ACTIVATION       how long after accepting a contact can act
                                    [default: 7d]
  RECOVERY_CONTACT_GATHERING        how long a contact recovery gathers vouches
                                    [default: 24h]
  RECOVERY_CONTACT_WAIT             the waiting period once the vouches meet the
                                    threshold; may be 0s [default: 48h]
  RECOVERY_CONTACT_COOLDOWN         how often a contact may vouch for one
                                    account [default: 7d]

Hashing
  RECOVERY_HASH_THREADS             argon2id threads [default: number of cores]
  RECOVERY_HASH_MEMORY_KIB, RECOVERY_HASH_ITERATIONS, RECOVERY_HASH_PARALLELISM
                                    argon2id cost of new hashes
                                    [default: 19456, 2, 1]
  RECOVERY_HASH_ADMISSION_WAIT      wait for the hashing pool before OVERLOADED
                                    [default: 100ms]

Telemetry (standard OpenTelemetry variables; OTLP over gRPC)
  OTEL_EXPORTER_OTLP_ENDPOINT       collector, e.g. http://127.0.0.1:4317
                                    [default: unset: nothing is exported]
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_METRICS_ENDPOINT
                                    per-signal endpoints
  OTEL_SERVICE_NAME                 [default: recovery-service]
  OTEL_RESOURCE_ATTRIBUTES          KEY=VALUE,... added to every span and metric
  OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG
                                    e.g. parentbased_traceidratio and 0.1
                                    [default: parentbased_always_on]
  OTEL_BSP_*, OTEL_METRIC_EXPORT_INTERVAL
                                    batching and export intervals

Exit status: 0 success, 1 failure at run time, 2 invalid configuration or usage.";

/// Account recovery with a saved recovery code plus proof of control of the account's email
/// address, over gRPC (identity.recovery.v1.RecoveryService), with the standard health service
/// and server reflection.
#[derive(Debug, Parser)]
#[command(name = "recovery-service", version, after_long_help = CONFIGURATION_HELP)]
struct Cli {
    /// TOML file of settings; RECOVERY_* environment variables override it.
    #[arg(long, global = true, value_name = "FILE", env = "RECOVERY_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gRPC server (the default). Migrates the database first, serves on
    /// RECOVERY_LISTEN_ADDR, and on SIGTERM or SIGINT turns health NOT_SERVING, lets in-flight
    /// calls finish within RECOVERY_SHUTDOWN_GRACE and exits 0.
    Serve,
    /// Apply pending database migrations to RECOVERY_DATABASE_URL and exit. Idempotent; safe
    /// to run from several replicas at once. Refuses a schema newer than this build.
    Migrate,
    /// Ask a running server's grpc.health.v1.Health service (plaintext, or TLS with --tls-ca).
    /// Exits 0 only when it answers SERVING: for Kubernetes exec probes and Docker HEALTHCHECK.
    Healthcheck {
        /// Address to ask [default: RECOVERY_LISTEN_ADDR, else 127.0.0.1:50051]. An unspecified
        /// address such as 0.0.0.0 is reached on loopback.
        #[arg(long, value_name = "IP:PORT")]
        addr: Option<SocketAddr>,
        /// Service name to check; empty for the whole server.
        #[arg(long, default_value = "")]
        service: String,
        /// Give up after this long.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Connect over TLS, trusting this CA (PEM) for the server certificate.
        #[arg(long, value_name = "FILE")]
        tls_ca: Option<PathBuf>,
        /// Client certificate (PEM) for a server with mutual TLS.
        #[arg(long, value_name = "FILE", requires = "tls_key", requires = "tls_ca")]
        tls_cert: Option<PathBuf>,
        /// Client key (PEM) for a server with mutual TLS.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Name the server certificate must carry [default: localhost].
        #[arg(long, value_name = "NAME", requires = "tls_ca")]
        tls_domain: Option<String>,
    },
}

/// Runs the command line and answers the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("recovery-service: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let config_file = cli.config.as_deref();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Healthcheck {
            addr,
            service,
            timeout,
            tls_ca,
            tls_cert,
            tls_key,
            tls_domain,
        } => {
            let tls = healthcheck::ClientTls {
                ca: tls_ca,
                cert: tls_cert,
                key: tls_key,
                domain: tls_domain,
            };
            let addr = match addr.map_or_else(|| config::listen_addr(config_file), Ok) {
                Ok(addr) => addr,
                Err(err) => return config_failure(&err),
            };
            match runtime.block_on(healthcheck::check(addr, &service, timeout, &tls)) {
                Ok(()) => {
                    println!("SERVING");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    println!("NOT SERVING: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        command => {
            let config = match Config::load(config_file) {
                Ok(config) => config,
                Err(err) => return config_failure(&err),
            };
            let telemetry = {
                // The OTLP exporters' channels live on the runtime.
                let _runtime = runtime.enter();
                telemetry::init(config.log_format)
            };
            for name in &config.unknown_env {
                tracing::warn!(variable = %name, "ignoring unknown RECOVERY_* variable (a typo?)");
            }
            let result = match command {
                Command::Migrate => runtime.block_on(migrate(&config)),
                _ => runtime.block_on(serve(config)),
            };
            runtime.block_on(telemetry.shutdown());
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(error = format!("{err:#}"), "exiting");
                    eprintln!("recovery-service: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn config_failure(err: &ConfigError) -> ExitCode {
    eprintln!("recovery-service: {err}");
    ExitCode::from(2)
}

async fn open_storage(config: &Config) -> anyhow::Result<Storage> {
    let mut options = ConnectOptions::new(config.database_url.expose());
    options.max_connections = config.database_max_connections;
    Storage::connect(&options)
        .await
        .with_context(|| format!("cannot open the database {}", config.database_url))
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let storage = open_storage(config).await?;
    let applied = storage.migrate().await.context("migration failed")?;
    if applied.is_empty() {
        tracing::info!("database schema is up to date");
    } else {
        tracing::info!(migrations = %applied.join(", "), "applied migrations");
    }
    storage.close().await?;
    Ok(())
}

async fn serve(mut config: Config) -> anyhow::Result<()> {
    // Signal handlers first: from here a SIGTERM or SIGINT drains instead of killing.
    let shutdown = server::shutdown_signal();
    let keys = load_keys(std::mem::replace(&mut config.keys, KeySource::Ephemeral))?;
    tracing::info!(
        key_id = keys.current().id(),
        keys = keys.ids().count(),
        "server key ring loaded"
    );
    let mutual_tls = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    if !mutual_tls {
        // Config refused this off loopback unless RECOVERY_TRUST_ALL_CALLERS=true.
        tracing::warn!(
            listen_addr = %config.listen_addr,
            tls = config.tls.is_some(),
            trust_all_callers = config.trust_all_callers,
            "trusting every caller (no client CA): set RECOVERY_TLS_CERT, RECOVERY_TLS_KEY, RECOVERY_TLS_CLIENT_CA and RECOVERY_CALLERS in production"
        );
    }
    let tls = config.tls.as_ref().map(server_tls).transpose()?;

    let storage = open_storage(&config).await?;
    let applied = storage.migrate().await.context("migration failed")?;
    if !applied.is_empty() {
        tracing::info!(migrations = %applied.join(", "), "applied migrations");
    }

    let listener = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
    let health_listener =
        match config.health_listen_addr {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} (RECOVERY_HEALTH_LISTEN_ADDR)")
            })?),
            None => None,
        };
    let hasher = Hasher::new(
        config.hash_threads,
        config.hash_params,
        config.hash_admission_wait,
    )?;
    crate::metrics::register_gauges(hasher.clone());
    tracing::info!(
        threads = hasher.threads(),
        params = %config.hash_params.label(),
        "argon2id hashing pool started"
    );
    let keys = Arc::new(keys);
    let mut recovery = Recovery::new(
        storage.clone(),
        hasher,
        Arc::clone(&keys),
        Arc::new(SystemClock),
        config.policy.clone(),
    )
    .map_err(|e| anyhow::anyhow!("cannot derive the OPAQUE keys: {e}"))?;
    // Platform events: written with every change, published by this replica's publisher.
    let (stop_publisher, publisher_stop) = tokio::sync::watch::channel(false);
    let publisher = match &config.events {
        Some(events) => {
            recovery = recovery.with_events();
            tracing::info!(url = %events.url, stream = %events.stream, "platform events on");
            let publisher = crate::events::Publisher::new(
                storage.clone(),
                events.clone(),
                Arc::new(SystemClock),
                crate::events::PublishOptions::default(),
                recovery.events_ready(),
            )?;
            Some(tokio::spawn(publisher.run(publisher_stop)))
        }
        None => None,
    };
    let transport = Transport::from_config(&config.mail)?;
    let mut delivery = DeliveryOptions::new(config.mail_from.clone());
    delivery.max_attempts = config.mail_max_attempts;
    delivery.backoff_base = config.mail_retry_base;
    delivery.lease = config.mail_lease;
    delivery.audit_retention = config.audit_retention;
    if let config::MailTransport::Smtp { timeout, .. } = &config.mail {
        delivery.send_timeout = *timeout;
    }
    delivery.failure_retention = std::time::Duration::from_millis(
        u64::try_from(config.policy.lockout_window_ms).unwrap_or(0),
    )
    .max(delivery.failure_retention);
    delivery.branding = crate::mail::templates::Branding {
        product_name: config.product_name.clone(),
        support_url: config.support_url.clone(),
    };
    let worker = Worker::new(
        storage.clone(),
        transport,
        keys,
        Arc::new(SystemClock),
        delivery,
        recovery.mail_ready(),
    )?;
    let (stop_worker, worker_stop) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(worker.run(worker_stop));

    let submissions = recovery.submissions();
    let served = server::run(
        listener,
        server::ServeOptions {
            recovery,
            tls,
            callers: config
                .tls
                .as_ref()
                .is_some_and(|t| t.client_ca.is_some())
                .then(|| Callers::new(&config.callers)),
            shutdown_grace: config.shutdown_grace,
            health_listener,
        },
        shutdown,
    )
    .await;
    // Submissions whose callers hung up finish (their count checked and recorded) before
    // the database closes.
    if !submissions
        .drained(std::time::Duration::from_secs(10))
        .await
    {
        tracing::warn!("submissions still running after 10 s at shutdown");
    }
    // Mail enqueued by the last calls is still delivered by the next start if not now.
    let _ = stop_worker.send(true);
    let _ = stop_publisher.send(true);
    let _ = worker.await;
    if let Some(publisher) = publisher {
        // A pass in progress ends within a third of its lease; anything it leaves claimed
        // is taken over by another replica (or this one's next start) when the lease runs out.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(12), publisher).await;
    }
    served?;
    storage.close().await?;
    Ok(())
}

fn load_keys(source: KeySource) -> anyhow::Result<KeyRing> {
    match source {
        KeySource::Configured(ring) => Ok(ring),
        KeySource::DevFile(path) => {
            tracing::warn!(
                path = %path.display(),
                "no RECOVERY_SECRET_KEY: using the development key file beside the SQLite database"
            );
            KeyRing::load_or_create_dev_file(&path).map_err(anyhow::Error::msg)
        }
        KeySource::Ephemeral => {
            tracing::warn!(
                "no RECOVERY_SECRET_KEY and an in-memory database: using a key that dies with the process"
            );
            KeyRing::generate().map_err(anyhow::Error::msg)
        }
    }
}

fn server_tls(tls: &TlsConfig) -> anyhow::Result<ServerTlsConfig> {
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
    };
    let identity = Identity::from_pem(
        read(&tls.cert, "TLS certificate")?,
        read(&tls.key, "TLS key")?,
    );
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca {
        config = config
            .client_ca_root(Certificate::from_pem(read(ca, "client CA")?))
            .client_auth_optional(false);
    }
    Ok(config)
}
