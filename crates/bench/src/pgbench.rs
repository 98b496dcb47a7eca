//! `--pgbench`: PostgreSQL running BeginRecovery's statements without the service, at the same
//! concurrency, with `pgbench` and the committed script `bench/pgbench/begin_recovery.sql`.

use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::report::PgbenchReport;

/// The script, compiled in so the binary runs from anywhere.
pub const SCRIPT: &str = include_str!("../../../bench/pgbench/begin_recovery.sql");

/// Runs pgbench against `url` (a database the service migrated) with `clients` connections
/// for `duration`.
pub async fn run(url: &str, clients: usize, duration: Duration) -> anyhow::Result<PgbenchReport> {
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        bail!("--pgbench needs a postgres:// database URL");
    }
    let dir = tempfile::tempdir().context("cannot create a temp directory")?;
    let script = dir.path().join("begin_recovery.sql");
    tokio::fs::write(&script, SCRIPT).await?;
    let seconds = duration.as_secs().max(1);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let output = Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-c"])
        .arg(clients.to_string())
        .arg("-j")
        .arg(clients.min(cores).to_string())
        .arg("-T")
        .arg(seconds.to_string())
        .arg("-f")
        .arg(&script)
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run pgbench (Debian: apt-get install postgresql-client)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed ({}):\n{}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let tps =
        parse_tps(&stdout).with_context(|| format!("no tps in pgbench's output:\n{stdout}"))?;
    Ok(PgbenchReport {
        clients,
        seconds: seconds as f64,
        tps,
        latency_avg_ms: parse_after(&stdout, "latency average = "),
    })
}

/// `tps = 1234.5 (without initial connection time)`.
fn parse_tps(output: &str) -> Option<f64> {
    parse_after(output, "tps = ")
}

fn parse_after(output: &str, prefix: &str) -> Option<f64> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tps_and_latency_are_read_from_pgbench_output() {
        let out = "transaction type: begin_recovery.sql\nscaling factor: 1\nnumber of clients: 8\n\
latency average = 1.754 ms\ninitial connection time = 12.3 ms\ntps = 4561.012345 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(4561.012345));
        assert_eq!(parse_after(out, "latency average = "), Some(1.754));
        assert_eq!(parse_tps("nothing"), None);
    }

    #[test]
    fn the_script_runs_in_one_transaction() {
        assert!(SCRIPT.contains("BEGIN;") && SCRIPT.contains("COMMIT;"));
    }

    /// The statements BeginRecovery issues on PostgreSQL for an unknown email (server log,
    /// `log_statement = 'all'`), in the script's order: a script that drifts from the
    /// service compares the service with less work than it does.
    #[test]
    fn the_script_issues_begin_recoverys_statements_in_order() {
        let statements = [
            r#"INSERT INTO "rate_limit_buckets""#,
            r#"INSERT INTO "rate_limit_buckets""#,
            r#"INSERT INTO "rate_limit_buckets""#,
            r#"FROM "recovery_enrollments""#,
            "BEGIN;",
            r#"INSERT INTO "recovery_flows""#,
            "SELECT pg_advisory_xact_lock(hashtextextended(",
            r#"INSERT INTO "notification_outbox""#,
            r#"FROM "audit_events" WHERE "event_id" = 'ev_'"#,
            r#"FROM "audit_heads" WHERE "account_id" = '~'"#,
            r#""details", "chain_key_id", "chain_hash")"#,
            r#"INSERT INTO "audit_heads""#,
            r#"ON CONFLICT ("account_id") DO UPDATE"#,
            "COMMIT;",
        ];
        let mut rest = SCRIPT;
        for statement in statements {
            let at = rest
                .find(statement)
                .unwrap_or_else(|| panic!("missing or out of order: {statement}"));
            rest = &rest[at + statement.len()..];
        }
    }
}
