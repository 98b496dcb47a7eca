//! The report: one JSON document, or tables for people (`text.rs`).

mod text;

pub use text::phase_table;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    argon::{Cost, RawRate},
    load::Measured,
    outcome,
    spawn::SpawnInfo,
    stats::{Latency, OutcomeSummary},
};

/// One RPC's phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub rpc: String,
    /// Clients of the closed loop; 0 for the open loop of the overload scenario.
    pub concurrency: usize,
    pub calls: u64,
    pub seconds: f64,
    pub calls_per_s: f64,
    pub ok_per_s: f64,
    pub latency: Latency,
    pub outcomes: BTreeMap<String, OutcomeSummary>,
    /// The inputs ran out after this many seconds (calls/s is over the time they lasted).
    pub starved_after_s: Option<f64>,
    pub prepared: Vec<String>,
    pub server_rss_kib_after: Option<u64>,
    /// The spawned service's CPU time during the phase, per call.
    pub server_cpu_ms_per_call: Option<f64>,
    /// The spawned service's CPU time during the phase ÷ its duration.
    pub server_cores_used: Option<f64>,
}

impl PhaseReport {
    pub fn new(rpc: &str, concurrency: usize, m: &Measured) -> Self {
        let seconds = m.elapsed.as_secs_f64().max(1e-9);
        let r = &m.recorder;
        Self {
            rpc: rpc.to_owned(),
            concurrency,
            calls: r.calls(),
            seconds,
            calls_per_s: r.calls() as f64 / seconds,
            ok_per_s: r.count(outcome::OK) as f64 / seconds,
            latency: r.latency(),
            outcomes: r.outcomes(),
            starved_after_s: m.starved_after.map(|d| d.as_secs_f64()),
            prepared: Vec::new(),
            server_rss_kib_after: None,
            server_cpu_ms_per_call: None,
            server_cores_used: None,
        }
    }

    /// Records the service's CPU seconds during the phase.
    pub fn set_server_cpu(&mut self, cpu_seconds: f64) {
        self.server_cpu_ms_per_call =
            (self.calls > 0).then(|| cpu_seconds * 1e3 / self.calls as f64);
        self.server_cores_used = Some(cpu_seconds / self.seconds);
    }

    /// OK calls per CPU second of the service.
    fn ok_per_server_cpu_s(&self) -> Option<f64> {
        let per_call_ms = self.server_cpu_ms_per_call?;
        let ok_share = self.ok_per_s / self.calls_per_s.max(1e-9);
        (per_call_ms > 0.0).then(|| ok_share * 1e3 / per_call_ms)
    }
}

/// The overload scenario.
#[derive(Debug, Clone, Serialize)]
pub struct OverloadReport {
    pub factor: f64,
    pub offered_per_s: f64,
    pub started: u64,
    pub skipped_in_flight_cap: u64,
    pub idle: PhaseReport,
    pub overload: PhaseReport,
    pub overloaded: u64,
    pub overloaded_p99_ms: Option<f64>,
    pub admitted_p99_ms: Option<f64>,
    pub idle_p99_ms: f64,
    pub admitted_p99_vs_idle: Option<f64>,
    pub server_peak_rss_kib: Option<u64>,
}

/// pgbench with the BeginRecovery statements.
#[derive(Debug, Clone, Serialize)]
pub struct PgbenchReport {
    pub clients: usize,
    pub seconds: f64,
    pub tps: f64,
    pub latency_avg_ms: Option<f64>,
}

/// Figures the goals are stated in.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ratios {
    pub create_recovery_code_vs_raw_argon2: Option<f64>,
    pub recover_account_vs_raw_argon2: Option<f64>,
    pub get_recovery_status_vs_health: Option<f64>,
    pub begin_recovery_vs_pgbench: Option<f64>,
    /// Zero-knowledge recoveries (Start+Finish) per second ÷ RecoverAccount's (goal ≥ 10).
    pub zero_knowledge_recovery_vs_recover_account: Option<f64>,
    /// The same ratios per CPU second (the spawned service's CPU time; the raw threads' CPU
    /// time): unaffected by other processes competing for the cores.
    pub create_recovery_code_vs_raw_argon2_per_cpu: Option<f64>,
    pub recover_account_vs_raw_argon2_per_cpu: Option<f64>,
    pub get_recovery_status_vs_health_per_cpu: Option<f64>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: String,
    pub date: String,
    pub machine: String,
    pub target: String,
    pub concurrency: usize,
    pub connections: usize,
    pub duration_s: f64,
    pub spawned: Option<SpawnInfo>,
    pub argon2: Cost,
    pub raw_argon2_before: Option<RawRate>,
    pub raw_argon2_after: Option<RawRate>,
    pub phases: Vec<PhaseReport>,
    pub overload: Option<OverloadReport>,
    pub pgbench: Option<PgbenchReport>,
    pub ratios: Ratios,
    pub notes: Vec<String>,
}

impl Report {
    /// Raw hashes/s: the mean of the measurements before and after.
    pub fn raw_hashes_per_s(&self) -> Option<f64> {
        let rates: Vec<f64> = [&self.raw_argon2_before, &self.raw_argon2_after]
            .into_iter()
            .flatten()
            .map(|r| r.hashes_per_s)
            .collect();
        (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64)
    }

    fn phase(&self, rpc: &str) -> Option<&PhaseReport> {
        self.phases.iter().find(|p| p.rpc == rpc)
    }

    /// Raw hashes per CPU second, over the measurements before and after.
    fn raw_hashes_per_cpu_s(&self) -> Option<f64> {
        let runs: Vec<&RawRate> = [&self.raw_argon2_before, &self.raw_argon2_after]
            .into_iter()
            .flatten()
            .collect();
        let cpu: f64 = runs.iter().map(|r| r.cpu_seconds).sum();
        let hashes: u64 = runs.iter().map(|r| r.hashes).sum();
        (cpu > 0.0).then(|| hashes as f64 / cpu)
    }

    /// Fills in the ratios from the phases.
    pub fn compute_ratios(&mut self) {
        let raw = self.raw_hashes_per_s();
        let raw_cpu = self.raw_hashes_per_cpu_s();
        let per_cpu = |rpc: &str| self.phase(rpc).and_then(PhaseReport::ok_per_server_cpu_s);
        let ok = |rpc: &str| self.phase(rpc).map(|p| p.ok_per_s);
        let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        self.ratios = Ratios {
            create_recovery_code_vs_raw_argon2: div(ok("CreateRecoveryCode"), raw),
            recover_account_vs_raw_argon2: div(ok("RecoverAccount"), raw),
            get_recovery_status_vs_health: div(ok("GetRecoveryStatus"), ok("Health/Check")),
            begin_recovery_vs_pgbench: div(
                ok("BeginRecovery"),
                self.pgbench.as_ref().map(|p| p.tps),
            ),
            zero_knowledge_recovery_vs_recover_account: div(
                ok("ZeroKnowledgeRecovery"),
                ok("RecoverAccount"),
            ),
            create_recovery_code_vs_raw_argon2_per_cpu: div(per_cpu("CreateRecoveryCode"), raw_cpu),
            recover_account_vs_raw_argon2_per_cpu: div(per_cpu("RecoverAccount"), raw_cpu),
            get_recovery_status_vs_health_per_cpu: div(
                per_cpu("GetRecoveryStatus"),
                per_cpu("Health/Check"),
            ),
        };
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stats::Recorder;

    fn phase(rpc: &str, ok: u64, ms: u64) -> PhaseReport {
        let mut recorder = Recorder::new().unwrap();
        for _ in 0..ok {
            recorder.record(Duration::from_millis(ms), outcome::OK);
        }
        recorder.record(Duration::from_millis(900), "RESOURCE_EXHAUSTED/OVERLOADED");
        let m = Measured {
            recorder,
            elapsed: Duration::from_secs(10),
            starved_after: None,
        };
        PhaseReport::new(rpc, 8, &m)
    }

    #[test]
    fn the_table_shows_rates_percentiles_and_answers() {
        let p = phase("CreateRecoveryCode", 1000, 15);
        assert!((p.calls_per_s - 100.1).abs() < 1e-9);
        assert!((p.ok_per_s - 100.0).abs() < 1e-9);
        let table = phase_table(&[&p]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("RPC") && lines[0].contains("p99 ms"),
            "{table}"
        );
        assert!(lines[1].starts_with("CreateRecoveryCode"), "{table}");
        assert!(
            lines[1].contains("100.1") && lines[1].contains("15.01"),
            "{table}"
        );
        assert!(lines[1].contains("900.1"), "{table}"); // max, at 3 significant digits
        assert!(
            lines[2].contains("OK=1000") && lines[2].contains("RESOURCE_EXHAUSTED/OVERLOADED=1"),
            "{table}"
        );
    }

    #[test]
    fn ratios_divide_ok_rates() {
        let mut report = Report {
            tool: String::new(),
            date: String::new(),
            machine: String::new(),
            target: String::new(),
            concurrency: 8,
            connections: 8,
            duration_s: 10.0,
            spawned: None,
            argon2: Cost {
                memory_kib: 19_456,
                iterations: 2,
                parallelism: 1,
            },
            raw_argon2_before: Some(RawRate {
                threads: 2,
                hashes: 1000,
                seconds: 10.0,
                hashes_per_s: 100.0,
                cpu_seconds: 20.0,
                hashes_per_cpu_s: 50.0,
            }),
            raw_argon2_after: Some(RawRate {
                threads: 2,
                hashes: 1200,
                seconds: 10.0,
                hashes_per_s: 120.0,
                cpu_seconds: 24.0,
                hashes_per_cpu_s: 50.0,
            }),
            phases: vec![
                phase("CreateRecoveryCode", 1045, 15),
                phase("GetRecoveryStatus", 5000, 1),
                phase("Health/Check", 50_000, 1),
            ],
            overload: None,
            pgbench: None,
            ratios: Ratios::default(),
            notes: vec![],
        };
        // The service used 20.9 CPU seconds for 1045 creates: 50 per CPU second, as raw.
        report.phases[0].set_server_cpu(20.9);
        report.phases[1].set_server_cpu(1.0);
        report.phases[2].set_server_cpu(2.0);
        report.compute_ratios();
        assert_eq!(report.raw_hashes_per_s(), Some(110.0));
        let per_cpu = report
            .ratios
            .create_recovery_code_vs_raw_argon2_per_cpu
            .unwrap();
        assert!((per_cpu - 1.0).abs() < 1e-9, "{per_cpu}");
        let status_cpu = report.ratios.get_recovery_status_vs_health_per_cpu.unwrap();
        assert!((status_cpu - 0.2).abs() < 1e-9, "{status_cpu}");
        let create = report.ratios.create_recovery_code_vs_raw_argon2.unwrap();
        assert!((create - 0.95).abs() < 1e-9, "{create}");
        let status = report.ratios.get_recovery_status_vs_health.unwrap();
        assert!((status - 0.1).abs() < 1e-9, "{status}");
        assert_eq!(report.ratios.recover_account_vs_raw_argon2, None);
        let text = report.text();
        assert!(text.contains("CreateRecoveryCode ÷ raw argon2id"), "{text}");
        assert!(text.contains("0.95"), "{text}");
    }
}
