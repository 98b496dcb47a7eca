//! The command line.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

const ABOUT: &str = "Load tool for recovery-service: drives it over gRPC with N concurrent clients for a \
fixed time per RPC and reports calls/s, latency percentiles (HdrHistogram) and counts per status \
and reason, next to raw argon2id measured on the same machine in the same run.";

const AFTER: &str = "\
The load tool shares the machine's cores with the service it measures (and with its own SMTP \
sink): on a 2-core machine every figure includes that competition. Ratios (RPC calls/s ÷ raw \
argon2id hashes/s, GetRecoveryStatus ÷ Health/Check) are taken in one run for that reason.

Examples:
  # One command, full report: start the service on SQLite in a temp dir, mail to the tool's SMTP sink.
  cargo build --release -p recovery-service -p recovery-bench
  target/release/recovery-bench --spawn

  # The same on PostgreSQL (a fresh database; the tool generates RECOVERY_SECRET_KEY), with pgbench.
  createdb -h 127.0.0.1 -U postgres bench_x
  target/release/recovery-bench --spawn --database-url postgres://postgres@127.0.0.1:5432/bench_x --pgbench

  # A service you run yourself that writes .eml files to ./mail:
  target/release/recovery-bench --addr 127.0.0.1:50051 --mail-dir ./mail --rpc get-recovery-status,health

  # ... or that sends mail to the tool's SMTP sink (start it with RECOVERY_SMTP_URL=smtp://127.0.0.1:2525):
  target/release/recovery-bench --smtp-listen 127.0.0.1:2525

pgbench (BeginRecovery on PostgreSQL ÷ the same statements without the service):
  --pgbench runs bench/pgbench/begin_recovery.sql (compiled in) with `pgbench -n -M prepared -c N \
-j N -T DURATION` against the database of --database-url (or --pgbench-url) right after the \
BeginRecovery phase. Standalone: psql -f bench/pgbench/setup.sql DB, then
  pgbench -n -M prepared -c 8 -j 8 -T 10 -f bench/pgbench/begin_recovery.sql DB";

/// recovery-bench: a load tool for recovery-service.
#[derive(Debug, Parser)]
#[command(name = "recovery-bench", version, about = ABOUT, after_help = AFTER)]
pub struct Args {
    /// The service's gRPC address (ignored with --spawn).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: SocketAddr,

    /// Concurrent clients, each with one call in flight at a time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,

    /// HTTP/2 connections the clients share (default: one per client).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub connections: Option<u32>,

    /// How long each RPC is driven, e.g. 10s, 1m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// The RPCs to drive, comma-separated (default: all, in the order listed).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub rpc: Vec<Rpc>,

    /// Print one JSON document on standard output instead of tables (no progress bar).
    #[arg(long)]
    pub json: bool,

    /// Read email codes from the newest .eml files here (a service without RECOVERY_SMTP_URL).
    #[arg(long, value_name = "DIR", conflicts_with = "smtp_listen")]
    pub mail_dir: Option<PathBuf>,

    /// Run the SMTP sink on this address for a service you started with
    /// RECOVERY_SMTP_URL=smtp://ADDR (without --spawn).
    #[arg(long, value_name = "ADDR")]
    pub smtp_listen: Option<SocketAddr>,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub spawn: SpawnArgs,

    #[command(flatten)]
    pub hash: HashArgs,

    /// CreateRecoveryCode is offered this many times the raw argon2id rate in the overload scenario.
    #[arg(long, default_value_t = 10.0)]
    pub overload_factor: f64,

    /// Longest time spent preparing the inputs of one RPC (enrolments, verified flows).
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
    pub prepare_timeout: Duration,

    /// Run pgbench with bench/pgbench/begin_recovery.sql at the same concurrency after the
    /// BeginRecovery phase and print the ratio (PostgreSQL only).
    #[arg(long)]
    pub pgbench: bool,

    /// The database pgbench runs against (default: --database-url).
    #[arg(long, value_name = "URL")]
    pub pgbench_url: Option<String>,
}

/// Client TLS: mutual TLS when the service requires client certificates.
#[derive(Debug, clap::Args)]
pub struct TlsArgs {
    /// CA (PEM) that signed the server's certificate: turns TLS on.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; it must map to the `auth` and `operator` roles.
    #[arg(long, value_name = "FILE", requires = "tls_key", requires = "tls_ca")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The name the server's certificate is checked against.
    #[arg(long, value_name = "NAME", default_value = "localhost")]
    pub tls_domain: String,
}

/// Starting the service.
#[derive(Debug, clap::Args)]
pub struct SpawnArgs {
    /// Start recovery-service on a free loopback port (SQLite in a temp dir unless
    /// --database-url), measure it, and stop it at the end.
    #[arg(long)]
    pub spawn: bool,
    /// The service binary (default: `recovery-service` next to this executable; build it with
    /// `cargo build --release -p recovery-service`).
    #[arg(long, value_name = "PATH", requires = "spawn")]
    pub service_bin: Option<PathBuf>,
    /// With --spawn: a PostgreSQL database for the service (a fresh one: the run adds rows).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// With --spawn: where the service's mail goes: the tool's SMTP sink, or .eml files in a
    /// temp dir that the tool reads.
    #[arg(long, value_enum, default_value = "smtp", requires = "spawn")]
    pub spawn_mail: SpawnMail,
    /// With --spawn: an extra variable for the service, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env, requires = "spawn")]
    pub env: Vec<(String, String)>,
}

/// argon2id parameters of the raw measurement (and of a spawned service).
#[derive(Debug, clap::Args)]
pub struct HashArgs {
    /// argon2id memory in KiB (the service's RECOVERY_HASH_MEMORY_KIB).
    #[arg(long, default_value_t = 19_456)]
    pub hash_memory_kib: u32,
    /// argon2id passes (RECOVERY_HASH_ITERATIONS).
    #[arg(long, default_value_t = 2)]
    pub hash_iterations: u32,
    /// argon2id lanes (RECOVERY_HASH_PARALLELISM).
    #[arg(long, default_value_t = 1)]
    pub hash_parallelism: u32,
    /// Threads hashing at once in the raw measurement (default: the number of cores, as the
    /// service's RECOVERY_HASH_THREADS); also passed to a spawned service when given.
    #[arg(long)]
    pub hash_threads: Option<usize>,
    /// How long each raw argon2id measurement runs.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub hash_window: Duration,
}

/// Where a spawned service's mail goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SpawnMail {
    /// The tool's own SMTP sink on loopback (as in production: mail over SMTP).
    Smtp,
    /// `.eml` files in a temp dir (the service's default without RECOVERY_SMTP_URL).
    Files,
}

/// The RPCs and scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Rpc {
    /// CreateRecoveryCode with a new account and email per call (one argon2id hash).
    CreateRecoveryCode,
    /// BeginRecovery with a fresh, unenrolled email and a fresh client IP per call.
    BeginRecovery,
    /// VerifyEmail with the right code, one fresh flow per call.
    VerifyEmail,
    /// RecoverAccount with the right code, one verified flow per call (one argon2id verify).
    RecoverAccount,
    /// StartZeroKnowledgeEnrollment then FinishZeroKnowledgeEnrollment for a new account per
    /// call, the device's OPAQUE steps (opaque-ke) in between.
    ZkEnroll,
    /// StartZeroKnowledgeRecovery then FinishZeroKnowledgeRecovery on one verified flow per
    /// call, the right code; the device's KE1 is made beforehand, its KE3 in between.
    ZkRecover,
    /// GetRecoveryStatus of enrolled accounts.
    GetRecoveryStatus,
    /// ListAuditEvents (page size 20) of enrolled accounts.
    ListAuditEvents,
    /// grpc.health.v1.Health/Check: the trivial baseline.
    Health,
    /// CreateRecoveryCode offered --overload-factor × the raw argon2id rate (open loop), after
    /// an idle run at concurrency 1.
    Overload,
}

impl Rpc {
    pub const ALL: [Rpc; 10] = [
        Rpc::CreateRecoveryCode,
        Rpc::BeginRecovery,
        Rpc::VerifyEmail,
        Rpc::RecoverAccount,
        Rpc::ZkEnroll,
        Rpc::ZkRecover,
        Rpc::GetRecoveryStatus,
        Rpc::ListAuditEvents,
        Rpc::Health,
        Rpc::Overload,
    ];

    /// The gRPC method name.
    pub fn method(self) -> &'static str {
        match self {
            Rpc::CreateRecoveryCode => "CreateRecoveryCode",
            Rpc::BeginRecovery => "BeginRecovery",
            Rpc::VerifyEmail => "VerifyEmail",
            Rpc::RecoverAccount => "RecoverAccount",
            Rpc::ZkEnroll => "ZeroKnowledgeEnrollment",
            Rpc::ZkRecover => "ZeroKnowledgeRecovery",
            Rpc::GetRecoveryStatus => "GetRecoveryStatus",
            Rpc::ListAuditEvents => "ListAuditEvents",
            Rpc::Health => "Health/Check",
            Rpc::Overload => "overload",
        }
    }
}

impl Args {
    /// The selected RPCs, deduplicated, in run order.
    pub fn rpcs(&self) -> Vec<Rpc> {
        let mut rpcs = if self.rpc.is_empty() {
            Rpc::ALL.to_vec()
        } else {
            self.rpc.clone()
        };
        rpcs.sort();
        rpcs.dedup();
        rpcs
    }

    /// HTTP/2 connections to open.
    pub fn connections(&self) -> usize {
        self.connections.unwrap_or(self.concurrency) as usize
    }

    /// Threads of the raw argon2id measurement.
    pub fn hash_threads(&self) -> usize {
        self.hash
            .hash_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
            .max(1)
    }
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err("expected KEY=VALUE".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpcs_default_to_all_and_run_in_a_fixed_order() {
        let args = Args::parse_from(["recovery-bench"]);
        assert_eq!(args.rpcs(), Rpc::ALL.to_vec());
        let args = Args::parse_from([
            "recovery-bench",
            "--rpc",
            "health,create-recovery-code,health",
        ]);
        assert_eq!(args.rpcs(), vec![Rpc::CreateRecoveryCode, Rpc::Health]);
        assert_eq!(args.duration, Duration::from_secs(10));
        assert_eq!(args.concurrency, 8);
        assert_eq!(args.connections(), 8);
    }

    #[test]
    fn env_pairs_split_at_the_first_equals_sign() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".to_owned(), "b=c".to_owned())));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("novalue").is_err());
    }
}
