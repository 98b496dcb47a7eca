//! Configuration: layered (built-in defaults, then an optional `--config` TOML file, then
//! `RECOVERY_*` environment variables), with `*_FILE` variants for secrets, validated once at
//! start. A bad value stops the process with one line naming the variable and what is wrong.

mod layers;
mod secret;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use lettre::message::Mailbox;

use crate::{
    crypto::KeyRing,
    crypto::hasher::HashParams,
    domain::{Policy, ReusePolicy},
    grpc::auth::{Caller, Role},
};

pub use layers::{KEYS, Origin, env_name};
use layers::{Layers, Raw};
pub use secret::{KeySource, SecretUrl};

/// Defaults, as documented in README.md and docs/design.md.
pub mod defaults {
    pub const LISTEN_ADDR: &str = "127.0.0.1:50051";
    pub const DATABASE_URL: &str = "sqlite://recovery.db?mode=rwc";
    pub const DATABASE_MAX_CONNECTIONS: u32 = 10;
    pub const MAIL_DIR: &str = "./mail";
    pub const MAIL_FROM: &str = "Account Recovery <no-reply@localhost>";
    pub const SHUTDOWN_GRACE: &str = "30s";
}

/// A setting that could not be used: where it came from and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {why}")]
pub struct ConfigError {
    origin: String,
    why: String,
}

impl ConfigError {
    pub(crate) fn new(origin: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            origin: origin.into(),
            why: why.into(),
        }
    }

    fn at(origin: &Origin, why: impl Into<String>) -> Self {
        Self::new(origin.to_string(), why)
    }
}

/// Server TLS; with `client_ca`, mutual TLS.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where mail goes.
#[derive(Debug, Clone)]
pub enum MailTransport {
    /// An SMTP server (`smtp://`, `smtps://`), its URL as the transport takes it.
    Smtp {
        url: SecretUrl,
        password_file: Option<PathBuf>,
        /// How long one SMTP exchange may take.
        timeout: Duration,
    },
    /// `.eml` files in a directory.
    Files { dir: PathBuf },
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub database_url: SecretUrl,
    pub database_max_connections: u32,
    pub mail: MailTransport,
    pub mail_from: Mailbox,
    /// Delivery attempts before a message is dead-lettered.
    pub mail_max_attempts: i32,
    /// First retry delay of a failed send (doubles each attempt).
    pub mail_retry_base: Duration,
    /// How long a worker's claim on a message lasts before another worker may take it over.
    pub mail_lease: Duration,
    /// How long audit events are kept (`RECOVERY_AUDIT_RETENTION`); older ones are pruned
    /// in chain order behind a MAC'd base.
    pub audit_retention: Duration,
    pub keys: KeySource,
    pub tls: Option<TlsConfig>,
    pub callers: Vec<Caller>,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    /// Hashing threads (and so concurrent argon2 computations).
    pub hash_threads: usize,
    /// Argon2id cost of new hashes.
    pub hash_params: HashParams,
    /// How long a request waits for a hashing thread before `OVERLOADED`.
    pub hash_admission_wait: Duration,
    /// The rules and limits of recovery.
    pub policy: Policy,
    /// Without a client CA, whether trusting every caller on a non-loopback address is meant.
    pub trust_all_callers: bool,
    /// A second, plaintext listener that serves only the health service (for Kubernetes'
    /// native gRPC probes, which cannot present a client certificate).
    pub health_listen_addr: Option<SocketAddr>,
    /// The product name mail uses (`your Acme account`); `None`: `your account`.
    pub product_name: Option<String>,
    /// Where a person who did not make a change gets help (a URL, `mailto:` included).
    pub support_url: Option<String>,
    /// Platform events over NATS JetStream; `None`: no events.
    pub events: Option<EventsConfig>,
    /// `RECOVERY_*` variables that name no setting, to warn about once logging is up.
    pub unknown_env: Vec<String>,
}

/// Where platform events go (API.md, "Platform events").
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// `nats://[user:pass@]host:port` or `tls://…`, comma-separated for a cluster (a secret:
    /// it may carry a password).
    pub url: SecretUrl,
    /// The JetStream stream (created when missing).
    pub stream: String,
    /// A NATS credentials file (JWT and NKey seed).
    pub credentials_file: Option<PathBuf>,
    /// A CA (PEM) to verify the NATS servers with, instead of the system's store; implies TLS.
    pub tls_ca: Option<PathBuf>,
}

impl Config {
    /// Reads the optional file and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_sources(file, std::env::vars())
    }

    /// Reads the optional file and the given environment: the testable core of [`Config::load`].
    pub fn from_sources(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let layers = Layers::load(file, env)?;
        let s = Settings { layers: &layers };
        let listen_addr = s.parse("listen_addr", defaults::LISTEN_ADDR, parse_listen_addr)?;
        let (database_url, database_max_connections) = database_settings(&s)?;
        let (mail, mail_from, mail_max_attempts, mail_retry_base, mail_lease) =
            mail_settings(&s, &layers)?;
        let (product_name, support_url) = branding_settings(&s)?;
        let keys = key_source(&s, &database_url)?;
        let (tls, callers, trust_all_callers, health_listen_addr) =
            caller_settings(&s, &layers, listen_addr)?;
        let shutdown_grace = s.parse("shutdown_grace", defaults::SHUTDOWN_GRACE, parse_duration)?;
        let audit_retention = s.parse("audit_retention", "400d", |t| {
            let d = parse_duration(t)?;
            if d < Duration::from_secs(24 * 3600) {
                return Err("must be at least 1d: the trail is the owner's record of what happened to the account".to_owned());
            }
            Ok(d)
        })?;
        let log_format = s.parse("log_format", "text", |t| match t {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected `text` or `json`".to_owned()),
        })?;

        let (hash_threads, hash_params, hash_admission_wait) = hash_settings(&s, &layers)?;
        let policy = policy_settings(&s, &layers)?;
        let events = events_settings(&s)?;
        Ok(Self {
            listen_addr,
            database_url,
            database_max_connections,
            mail,
            mail_from,
            mail_max_attempts,
            mail_retry_base,
            mail_lease,
            audit_retention,
            keys,
            tls,
            callers,
            shutdown_grace,
            log_format,
            hash_threads,
            hash_params,
            hash_admission_wait,
            policy,
            trust_all_callers,
            health_listen_addr,
            product_name,
            support_url,
            events,
            unknown_env: layers.unknown_env,
        })
    }
}

/// The database URL (a secret: it may carry a password) and the pool size.
fn database_settings(s: &Settings<'_>) -> Result<(SecretUrl, u32), ConfigError> {
    let database_url = match s.secret("database_url", "database_url_file")? {
        Some((url, origin)) => {
            check_database_url(&url).map_err(|why| ConfigError::at(&origin, why))?;
            SecretUrl::new(url)
        }
        None => SecretUrl::new(defaults::DATABASE_URL.to_owned()),
    };
    let database_max_connections = s.parse(
        "database_max_connections",
        &defaults::DATABASE_MAX_CONNECTIONS.to_string(),
        |t| match t.parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => Err("expected a whole number from 1 to 1000".to_owned()),
        },
    )?;
    Ok((database_url, database_max_connections))
}

/// Where mail goes, from whom, and how delivery retries.
fn mail_settings(
    s: &Settings<'_>,
    layers: &Layers,
) -> Result<(MailTransport, Mailbox, i32, Duration, Duration), ConfigError> {
    let smtp_password_file = s.path("smtp_password_file")?;
    let mail = match s.raw("smtp_url") {
        Some(raw) => {
            let url = check_smtp_url(&raw.text, smtp_password_file.is_some())
                .map_err(|why| ConfigError::at(&raw.origin, why))?;
            MailTransport::Smtp {
                url: SecretUrl::new(url),
                password_file: smtp_password_file,
                timeout: s.parse("smtp_timeout", "20s", parse_duration)?,
            }
        }
        None => {
            if smtp_password_file.is_some() {
                return Err(ConfigError::at(
                    &layers.origin("smtp_password_file"),
                    "set only together with RECOVERY_SMTP_URL",
                ));
            }
            MailTransport::Files {
                dir: s
                    .path("mail_dir")?
                    .unwrap_or_else(|| PathBuf::from(defaults::MAIL_DIR)),
            }
        }
    };

    let mail_from = s.parse("mail_from", defaults::MAIL_FROM, |t| {
        t.parse::<Mailbox>().map_err(|e| {
            format!("not a mailbox ({e}); expected e.g. `Account Recovery <no-reply@example.com>`")
        })
    })?;

    let mail_max_attempts = s.parse("mail_max_attempts", "10", |t| {
        count(t, 1, 1000).map(|n| n as i32)
    })?;

    let mail_retry_base = s.parse("mail_retry_base", "2s", parse_duration)?;
    let mail_lease = s.parse("mail_lease", "60s", parse_duration)?;
    if let MailTransport::Smtp { timeout, .. } = &mail
        && mail_lease <= *timeout
    {
        return Err(ConfigError::at(
            &layers.origin("mail_lease"),
            format!(
                "must be longer than the SMTP timeout ({}; RECOVERY_SMTP_TIMEOUT), or a send still in progress could be taken over and sent twice",
                humantime::format_duration(*timeout)
            ),
        ));
    }
    Ok((
        mail,
        mail_from,
        mail_max_attempts,
        mail_retry_base,
        mail_lease,
    ))
}

/// The product name and support contact the messages use.
fn branding_settings(s: &Settings<'_>) -> Result<(Option<String>, Option<String>), ConfigError> {
    let product_name = match s.raw("product_name") {
        Some(raw) => Some(
            check_display_text(&raw.text, 60).map_err(|why| ConfigError::at(&raw.origin, why))?,
        ),
        None => None,
    };
    let support_url = match s.raw("support_url") {
        Some(raw) => {
            Some(check_support_url(&raw.text).map_err(|why| ConfigError::at(&raw.origin, why))?)
        }
        None => None,
    };

    Ok((product_name, support_url))
}

/// Platform events: on when `events_url` is set.
fn events_settings(s: &Settings<'_>) -> Result<Option<EventsConfig>, ConfigError> {
    let Some(raw) = s.raw("events_url") else {
        for key in ["events_stream", "events_credentials_file", "events_tls_ca"] {
            if let Some(other) = s.raw(key) {
                return Err(ConfigError::at(
                    &other.origin,
                    "is set but RECOVERY_EVENTS_URL is not: events are off",
                ));
            }
        }
        return Ok(None);
    };
    let url = raw.text.trim().to_owned();
    for server in url.split(',') {
        let server = server.trim();
        let scheme_ok = ["nats://", "tls://"]
            .iter()
            .any(|scheme| server.starts_with(scheme));
        if !scheme_ok
            || server.len() <= "nats://".len()
            || server.parse::<async_nats::ServerAddr>().is_err()
            || url::Url::parse(server).is_err()
        {
            return Err(ConfigError::at(
                &raw.origin,
                "expected nats://HOST:PORT or tls://HOST:PORT (user:password@ allowed, with reserved characters percent-encoded), comma-separated for a cluster",
            ));
        }
    }
    let stream = s.parse("events_stream", "IDENTITY_RECOVERY", |t| {
        let t = t.trim();
        if !t.is_empty()
            && t.len() <= 64
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            Ok(t.to_owned())
        } else {
            Err("a JetStream stream name: letters, digits, `_` and `-`, at most 64".to_owned())
        }
    })?;
    let credentials_file = s.path("events_credentials_file")?;
    let tls_ca = s.path("events_tls_ca")?;
    // Credentials (user and password, a token, a credentials file) leave this machine only
    // over TLS, as SMTP AUTH does.
    let servers: Vec<url::Url> = url
        .split(',')
        .filter_map(|server| url::Url::parse(server.trim()).ok())
        .collect();
    let with_credentials =
        credentials_file.is_some() || servers.iter().any(|u| !u.username().is_empty());
    let tls = tls_ca.is_some() || servers.iter().any(|u| u.scheme() == "tls");
    let remote = servers
        .iter()
        .any(|u| !u.host_str().is_some_and(is_loopback_host));
    if with_credentials && remote && !tls {
        return Err(ConfigError::at(
            &raw.origin,
            "credentials for a NATS server off this machine are sent only over TLS: use tls://HOST:PORT or set RECOVERY_EVENTS_TLS_CA",
        ));
    }
    Ok(Some(EventsConfig {
        url: SecretUrl::new(url),
        stream,
        credentials_file,
        tls_ca,
    }))
}

/// Where the server key ring comes from (required with PostgreSQL).
fn key_source(s: &Settings<'_>, database_url: &SecretUrl) -> Result<KeySource, ConfigError> {
    let is_postgres = database_url.expose().starts_with("postgres");
    let keys = match s.secret("secret_key", "secret_key_file")? {
        Some((text, origin)) => KeySource::Configured(
            KeyRing::parse(text.trim()).map_err(|why| ConfigError::at(&origin, why))?,
        ),
        None if is_postgres => {
            return Err(ConfigError::new(
                "RECOVERY_SECRET_KEY",
                "required with PostgreSQL (64 hex characters, e.g. `openssl rand -hex 32`; or RECOVERY_SECRET_KEY_FILE)",
            ));
        }
        None => match recovery_storage::sqlite_file_path(database_url.expose()) {
            Some(db) => KeySource::DevFile(dev_key_path(&db)),
            None => KeySource::Ephemeral,
        },
    };

    Ok(keys)
}

/// TLS, caller roles and the trust rule, and the health-only listener.
#[allow(clippy::type_complexity)]
fn caller_settings(
    s: &Settings<'_>,
    layers: &Layers,
    listen_addr: SocketAddr,
) -> Result<(Option<TlsConfig>, Vec<Caller>, bool, Option<SocketAddr>), ConfigError> {
    let tls = tls_config(s)?;
    let callers = match s.raw("callers") {
        Some(raw) => parse_callers(&raw.text).map_err(|why| ConfigError::at(&raw.origin, why))?,
        None => Vec::new(),
    };
    let mutual_tls = tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    if !callers.is_empty() && !mutual_tls {
        return Err(ConfigError::at(
            &layers.origin("callers"),
            "needs RECOVERY_TLS_CLIENT_CA: caller identities come from client certificates",
        ));
    }
    if mutual_tls && callers.is_empty() {
        return Err(ConfigError::at(
            &layers.origin("callers"),
            "required with RECOVERY_TLS_CLIENT_CA: map client certificate identities to roles, e.g. `spiffe://platform/ns/auth/sa/auth-service=auth`",
        ));
    }

    let trust_all_callers = s.parse("trust_all_callers", "false", parse_bool)?;
    if !mutual_tls && !listen_addr.ip().is_loopback() && !trust_all_callers {
        return Err(ConfigError::at(
            &layers.origin("trust_all_callers"),
            format!(
                "without RECOVERY_TLS_CLIENT_CA every caller on {listen_addr} would be trusted; set RECOVERY_TLS_CLIENT_CA and RECOVERY_CALLERS (mutual TLS), or RECOVERY_TRUST_ALL_CALLERS=true if something in front authenticates callers (e.g. a service mesh)"
            ),
        ));
    }
    let health_listen_addr = match s.raw("health_listen_addr") {
        Some(raw) => {
            Some(parse_listen_addr(&raw.text).map_err(|why| ConfigError::at(&raw.origin, why))?)
        }
        None => None,
    };
    if health_listen_addr.is_some_and(|h| h == listen_addr) {
        return Err(ConfigError::at(
            &layers.origin("health_listen_addr"),
            "must differ from RECOVERY_LISTEN_ADDR",
        ));
    }
    Ok((tls, callers, trust_all_callers, health_listen_addr))
}

/// The argon2id pool: threads, cost, admission wait.
fn hash_settings(
    s: &Settings<'_>,
    layers: &Layers,
) -> Result<(usize, HashParams, Duration), ConfigError> {
    let hash_threads = s.parse("hash_threads", &default_threads().to_string(), |t| match t
        .parse::<usize>()
    {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err("expected a whole number from 1 to 256".to_owned()),
    })?;
    let defaults = HashParams::default();
    let hash_params = HashParams {
        m_kib: s.parse("hash_memory_kib", &defaults.m_kib.to_string(), |t| {
            count(t, 8, 4 * 1024 * 1024)
        })?,
        t: s.parse("hash_iterations", &defaults.t.to_string(), |t| {
            count(t, 1, 100)
        })?,
        p: s.parse("hash_parallelism", &defaults.p.to_string(), |t| {
            count(t, 1, 64)
        })?,
    };
    if hash_params.m_kib < 8 * hash_params.p {
        return Err(ConfigError::at(
            &layers.origin("hash_memory_kib"),
            "must be at least 8 KiB per lane (RECOVERY_HASH_PARALLELISM)",
        ));
    }
    let hash_admission_wait = s.parse("hash_admission_wait", "100ms", parse_duration)?;
    Ok((hash_threads, hash_params, hash_admission_wait))
}

/// The rules and limits of recovery.
fn policy_settings(s: &Settings<'_>, layers: &Layers) -> Result<Policy, ConfigError> {
    let reuse_policy = s.parse("reuse_policy", "reusable", |t| match t {
        "reusable" => Ok(ReusePolicy::Reusable),
        "rotate_on_use" => Ok(ReusePolicy::RotateOnUse),
        _ => Err("expected `reusable` or `rotate_on_use`".to_owned()),
    })?;

    let d = Policy::default();
    let policy = Policy {
        reuse: reuse_policy,
        flow_ttl_ms: s.parse("flow_ttl", "30m", parse_millis)?,
        email_code_ttl_ms: s.parse("email_code_ttl", "15m", parse_millis)?,
        email_attempts: s.parse("email_code_attempts", &d.email_attempts.to_string(), |t| {
            count(t, 1, 100).map(|n| n as i32)
        })?,
        recovery_attempts: s.parse(
            "recovery_code_attempts",
            &d.recovery_attempts.to_string(),
            |t| count(t, 1, 100).map(|n| n as i32),
        )?,
        lockout_threshold: s.parse("lockout_threshold", &d.lockout_threshold.to_string(), |t| {
            count(t, 1, 10_000).map(i64::from)
        })?,
        lockout_window_ms: s.parse("lockout_window", "24h", parse_millis)?,
        lockout_ms: s.parse("lockout_duration", "24h", parse_millis)?,
        starts_per_email_per_hour: s.parse(
            "starts_per_email_per_hour",
            &d.starts_per_email_per_hour.to_string(),
            |t| count(t, 1, 1_000_000).map(i64::from),
        )?,
        starts_per_ip_per_hour: s.parse(
            "starts_per_ip_per_hour",
            &d.starts_per_ip_per_hour.to_string(),
            |t| count(t, 1, 1_000_000).map(i64::from),
        )?,
        starts_per_ip_per_minute: s.parse(
            "starts_per_ip_per_minute",
            &d.starts_per_ip_per_minute.to_string(),
            |t| count(t, 1, 1_000_000).map(i64::from),
        )?,
        address_claims_per_day: s.parse(
            "address_claims_per_day",
            &d.address_claims_per_day.to_string(),
            |t| count(t, 1, 1_000_000).map(i64::from),
        )?,
        creates_per_account_per_hour: s.parse(
            "creates_per_account_per_hour",
            &d.creates_per_account_per_hour.to_string(),
            |t| count(t, 1, 1_000_000).map(i64::from),
        )?,
        contact_invitation_ms: s.parse("contact_invitation", "7d", parse_millis)?,
        contact_activation_ms: s.parse("contact_activation", "7d", parse_millis)?,
        contact_gathering_ms: s.parse("contact_gathering", "24h", parse_millis)?,
        // May be `0s`: a recovery completes as soon as the vouches meet the threshold.
        contact_wait_ms: s.parse("contact_wait", "48h", |t| {
            i64::try_from(parse_duration(t)?.as_millis())
                .map_err(|_| "expected a duration such as `48h` or `0s`".to_owned())
        })?,
        contact_cooldown_ms: s.parse("contact_cooldown", "7d", |t| {
            let ms = parse_millis(t)?;
            if ms > recovery_storage::CONTACT_FLOW_RETENTION_MS {
                return Err(
                    "must be at most 30d: the vouches that record it are kept 30 days".to_owned(),
                );
            }
            Ok(ms)
        })?,
        // The family rules of the contract (API.md, "Families") and the contact limits
        // (API.md, "Recovery contacts"): not settings.
        ..d
    };
    if policy.email_code_ttl_ms > policy.flow_ttl_ms {
        return Err(ConfigError::at(
            &layers.origin("email_code_ttl"),
            "must not be longer than RECOVERY_FLOW_TTL",
        ));
    }

    Ok(policy)
}

/// Only the listen address (for `healthcheck`, which must not fail on unrelated settings).
pub fn listen_addr(file: Option<&Path>) -> Result<SocketAddr, ConfigError> {
    let layers = Layers::load(file, std::env::vars())?;
    Settings { layers: &layers }.parse("listen_addr", defaults::LISTEN_ADDR, parse_listen_addr)
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err("expected `true` or `false`".to_owned()),
    }
}

/// Text shown to people in mail: printable, one line, at most `max` characters.
fn check_display_text(text: &str, max: usize) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > max || text.chars().any(char::is_control) {
        return Err(format!(
            "expected one line of 1 to {max} printable characters"
        ));
    }
    Ok(text.to_owned())
}

/// An `https://`, `http://` or `mailto:` URL for the "contact support" lines.
fn check_support_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    match url::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "https" | "http" | "mailto") && text.len() <= 200 => {
            Ok(text.to_owned())
        }
        _ => Err(
            "expected an https:// or mailto: URL, e.g. https://help.example.com/recovery"
                .to_owned(),
        ),
    }
}

/// `IP:PORT`, or `localhost:PORT` for the IPv4 loopback address.
fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let localhost = text
        .rsplit_once(':')
        .filter(|(host, _)| host.eq_ignore_ascii_case("localhost"))
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
    localhost
        .map_or_else(|| SocketAddr::from_str(text), Ok)
        .map_err(|_| {
            "expected IP:PORT or localhost:PORT, e.g. 127.0.0.1:50051 or [::]:50051".to_owned()
        })
}

/// Typed access to the merged raw settings.
struct Settings<'a> {
    layers: &'a Layers,
}

impl Settings<'_> {
    fn raw(&self, key: &str) -> Option<&Raw> {
        self.layers.get(key)
    }

    /// Parses `key` (or `default` when unset); a failure names where the value came from.
    /// The value itself is not echoed: it may be a secret set in the wrong place.
    fn parse<T>(
        &self,
        key: &str,
        default: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.raw(key) {
            Some(raw) => parse(raw.text.trim()).map_err(|why| ConfigError::at(&raw.origin, why)),
            None => parse(default).map_err(|why| ConfigError::new(env_name(key), why)),
        }
    }

    fn path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.raw(key).map(|raw| PathBuf::from(raw.text.trim())))
    }

    /// A secret given inline (`key`) or as a file path (`file_key`), never both. File
    /// contents are trimmed of surrounding whitespace (Kubernetes Secret volumes end in `\n`).
    fn secret(&self, key: &str, file_key: &str) -> Result<Option<(String, Origin)>, ConfigError> {
        match (self.raw(key), self.raw(file_key)) {
            (Some(_), Some(file)) => Err(ConfigError::at(
                &file.origin,
                format!("set {} or {}, not both", env_name(key), env_name(file_key)),
            )),
            (Some(inline), None) => {
                Ok(Some((inline.text.trim().to_owned(), inline.origin.clone())))
            }
            (None, Some(file)) => {
                let path = file.text.trim();
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::at(&file.origin, format!("cannot read {path}: {e}"))
                })?;
                Ok(Some((text.trim().to_owned(), file.origin.clone())))
            }
            (None, None) => Ok(None),
        }
    }
}

/// `localhost` or a loopback IP address: a relay or server on this machine (or in this pod).
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn check_database_url(url: &str) -> Result<(), String> {
    if url.starts_with("sqlite:") {
        return Ok(());
    }
    let parsed = url::Url::parse(url).map_err(|_| {
        "expected sqlite://FILE?mode=rwc or postgres://USER@HOST:PORT/DATABASE".to_owned()
    })?;
    match parsed.scheme() {
        "postgres" | "postgresql" if parsed.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        "postgres" | "postgresql" => Err("a postgres:// URL needs a host".to_owned()),
        other => Err(format!(
            "unsupported scheme `{other}`: expected sqlite:// or postgres://"
        )),
    }
}

/// Checks an SMTP URL and answers the one the transport uses. `smtps://` is implicit TLS.
/// `smtp://` to a non-loopback host requires STARTTLS (`?tls=required` is added), unless the
/// URL says `?tls=none` (clear text, deliberately) or `?tls=opportunistic`; a loopback host (a
/// local relay) stays clear unless it says otherwise. AUTH (`with_auth`) is never sent in
/// clear text.
fn check_smtp_url(url: &str, with_auth: bool) -> Result<String, String> {
    let mut parsed = url::Url::parse(url.trim())
        .map_err(|_| "expected smtp://HOST:PORT or smtps://HOST:PORT".to_owned())?;
    if !matches!(parsed.scheme(), "smtp" | "smtps") {
        return Err(format!(
            "unsupported scheme `{}`: expected smtp:// or smtps://",
            parsed.scheme()
        ));
    }
    let Some(host) = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
    else {
        return Err("an SMTP URL needs a host".to_owned());
    };
    if parsed.scheme() == "smtps" {
        return Ok(parsed.to_string());
    }
    let loopback = is_loopback_host(&host);
    let tls = parsed
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let others: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| k != "tls")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let effective = match tls.as_deref() {
        Some("required") => Some("required"),
        Some("opportunistic") => Some("opportunistic"),
        Some("none") => None,
        Some(_) => return Err("`tls` must be `required`, `opportunistic` or `none`".to_owned()),
        None if loopback => None,
        None => Some("required"),
    };
    // Credentials in the URL are AUTH as much as a password file is.
    let with_auth = with_auth || parsed.password().is_some();
    if with_auth && effective != Some("required") {
        return Err(
            "SMTP AUTH is never sent in clear text: use smtps:// or smtp://…?tls=required (STARTTLS)"
                .to_owned(),
        );
    }
    {
        let mut query = parsed.query_pairs_mut();
        query.clear();
        for (k, v) in &others {
            query.append_pair(k, v);
        }
        if let Some(tls) = effective {
            query.append_pair("tls", tls);
        }
    }
    if parsed.query() == Some("") {
        parsed.set_query(None);
    }
    Ok(parsed.to_string())
}

fn tls_config(s: &Settings<'_>) -> Result<Option<TlsConfig>, ConfigError> {
    let readable = |key: &str| -> Result<Option<PathBuf>, ConfigError> {
        let Some(raw) = s.raw(key) else {
            return Ok(None);
        };
        let path = PathBuf::from(raw.text.trim());
        std::fs::metadata(&path).map_err(|e| {
            ConfigError::at(&raw.origin, format!("cannot read {}: {e}", path.display()))
        })?;
        Ok(Some(path))
    };
    let cert = readable("tls_cert")?;
    let key = readable("tls_key")?;
    let client_ca = readable("tls_client_ca")?;
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsConfig {
            cert,
            key,
            client_ca,
        })),
        (None, None) if client_ca.is_none() => Ok(None),
        (None, None) => Err(ConfigError::new(
            "RECOVERY_TLS_CLIENT_CA",
            "needs RECOVERY_TLS_CERT and RECOVERY_TLS_KEY",
        )),
        (Some(_), None) => Err(ConfigError::new(
            "RECOVERY_TLS_KEY",
            "required with RECOVERY_TLS_CERT",
        )),
        (None, Some(_)) => Err(ConfigError::new(
            "RECOVERY_TLS_CERT",
            "required with RECOVERY_TLS_KEY",
        )),
    }
}

/// Parses `IDENTITY=ROLE,...`, each split at its last `=`.
fn parse_callers(text: &str) -> Result<Vec<Caller>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (identity, role) = entry
                .rsplit_once('=')
                .ok_or_else(|| format!("`{entry}` is not IDENTITY=ROLE"))?;
            let role = match role.trim() {
                "auth" => Role::Auth,
                "operator" => Role::Operator,
                other => {
                    return Err(format!(
                        "unknown role `{other}`: expected `auth` or `operator`"
                    ));
                }
            };
            let identity = identity.trim();
            let valid = identity.strip_prefix("dns:").map_or_else(
                || url::Url::parse(identity).is_ok(),
                |name| !name.is_empty(),
            );
            if !valid {
                return Err(format!(
                    "`{identity}` is not a URI SAN (e.g. spiffe://…) or dns:NAME"
                ));
            }
            Ok(Caller {
                identity: identity.to_owned(),
                role,
            })
        })
        .collect()
}

/// A whole number in `min..=max`.
fn count(text: &str, min: u32, max: u32) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from {min} to {max}")),
    }
}

/// A positive duration in milliseconds.
fn parse_millis(text: &str) -> Result<i64, String> {
    let duration = parse_duration(text)?;
    match i64::try_from(duration.as_millis()) {
        Ok(ms) if ms > 0 => Ok(ms),
        _ => Err("expected a positive duration such as `30m` or `24h`".to_owned()),
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// `30s`, `1m 30s`, `500ms`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text)
        .map_err(|_| "expected a duration such as `30s`, `2m` or `500ms`".to_owned())
}

/// The development key file for a SQLite database: `<database file>.key`.
fn dev_key_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_owned();
    name.push(".key");
    db.with_file_name(name)
}

#[cfg(test)]
mod tests;
