//! The report as tables for people.

use std::fmt::Write as _;

use super::{PhaseReport, RawRate, Report};

impl Report {
    /// Tables for people.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "recovery-bench  {}  {}", self.date, self.machine);
        let _ = writeln!(
            s,
            "target {}  concurrency {}  connections {}  {} per RPC",
            self.target,
            self.concurrency,
            self.connections,
            humantime::format_duration(std::time::Duration::from_secs_f64(self.duration_s))
        );
        if let Some(sp) = &self.spawned {
            let _ = writeln!(
                s,
                "service {}  on {}  mail: {}",
                sp.binary, sp.database, sp.mail
            );
        }
        let c = &self.argon2;
        let rate =
            |r: &Option<RawRate>| r.map_or("-".to_owned(), |r| format!("{:.1}/s", r.hashes_per_s));
        let threads = self
            .raw_argon2_before
            .or(self.raw_argon2_after)
            .map_or(0, |r| r.threads);
        let _ = writeln!(
            s,
            "raw argon2id m={} t={} p={} on {threads} threads: before {}, after {}\n",
            c.memory_kib,
            c.iterations,
            c.parallelism,
            rate(&self.raw_argon2_before),
            rate(&self.raw_argon2_after)
        );
        let mut phases: Vec<&PhaseReport> = self.phases.iter().collect();
        if let Some(o) = &self.overload {
            phases.push(&o.idle);
            phases.push(&o.overload);
        }
        s.push_str(&phase_table(&phases));
        s.push('\n');
        s.push_str(&self.goals_text());
        for note in &self.notes {
            let _ = writeln!(s, "note: {note}");
        }
        s
    }

    fn goals_text(&self) -> String {
        let mut s = format!(
            "{:<45} {:>9} {:>10}   goal\n",
            "figure", "measured", "per CPU s"
        );
        let mut row = |name: &str, value: String, per_cpu: String, goal: &str| {
            let _ = writeln!(s, "{name:<45} {value:>9} {per_cpu:>10}   {goal}");
        };
        let ratio = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{r:.2}"));
        let r = &self.ratios;
        row(
            "CreateRecoveryCode ÷ raw argon2id",
            ratio(r.create_recovery_code_vs_raw_argon2),
            ratio(r.create_recovery_code_vs_raw_argon2_per_cpu),
            "≥ 0.95",
        );
        row(
            "RecoverAccount ÷ raw argon2id",
            ratio(r.recover_account_vs_raw_argon2),
            ratio(r.recover_account_vs_raw_argon2_per_cpu),
            "≥ 0.95",
        );
        row(
            "GetRecoveryStatus ÷ Health/Check",
            ratio(r.get_recovery_status_vs_health),
            ratio(r.get_recovery_status_vs_health_per_cpu),
            "≥ 0.35",
        );
        let zk_cpu = self
            .phases
            .iter()
            .find(|p| p.rpc == "ZeroKnowledgeRecovery")
            .and_then(|p| p.server_cpu_ms_per_call);
        row(
            "ZeroKnowledgeRecovery ÷ RecoverAccount",
            ratio(r.zero_knowledge_recovery_vs_recover_account),
            zk_cpu.map_or(String::new(), |ms| format!("{ms:.2} ms")),
            "≥ 10 (CPU ≤ 1 ms a call)",
        );
        let mut row = |name: &str, value: String, goal: &str| row(name, value, String::new(), goal);
        if let Some(p) = &self.pgbench {
            row(
                &format!("BeginRecovery ÷ pgbench ({:.0} tps)", p.tps),
                ratio(r.begin_recovery_vs_pgbench),
                "≥ 0.6",
            );
        }
        if let Some(o) = &self.overload {
            let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
            row(
                &format!(
                    "overload {:.0}/s: OVERLOADED ({}) p99",
                    o.offered_per_s, o.overloaded
                ),
                ms(o.overloaded_p99_ms),
                "< 5 ms",
            );
            row(
                &format!("admitted p99 ÷ idle p99 ({:.1} ms)", o.idle_p99_ms),
                o.admitted_p99_vs_idle
                    .map_or("-".to_owned(), |x| format!("{x:.2}×")),
                "< 3×",
            );
            row(
                "peak RSS after overload",
                mib(o.server_peak_rss_kib),
                "< 256 MiB",
            );
        }
        if let Some(sp) = &self.spawned {
            row(
                "spawn → SERVING",
                format!("{:.0} ms", sp.spawn_to_serving_ms),
                "< 300 ms",
            );
            row("idle RSS", mib(sp.idle_rss_kib), "< 30 MiB");
            row("peak RSS (whole run)", mib(sp.peak_rss_kib), "-");
        }
        s
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("-".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// The per-RPC table, with each phase's answers on the line below.
pub fn phase_table(phases: &[&PhaseReport]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<28} {:>4} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "RPC", "conc", "calls", "calls/s", "ok/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for p in phases {
        let l = &p.latency;
        let _ = writeln!(
            s,
            "{:<28} {:>4} {:>8} {:>9.1} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            p.rpc,
            if p.concurrency == 0 {
                "open".to_owned()
            } else {
                p.concurrency.to_string()
            },
            p.calls,
            p.calls_per_s,
            p.ok_per_s,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.max_ms
        );
        let answers: Vec<String> = p
            .outcomes
            .iter()
            .map(|(label, o)| format!("{label}={} (p99 {:.2} ms)", o.count, o.latency.p99_ms))
            .collect();
        let _ = writeln!(s, "    {}", answers.join("  "));
        if let Some(after) = p.starved_after_s {
            let _ = writeln!(s, "    STARVED: prepared inputs ran out after {after:.1} s");
        }
        for prepared in &p.prepared {
            let _ = writeln!(s, "    prepared {prepared}");
        }
        if let (Some(ms), Some(cores)) = (p.server_cpu_ms_per_call, p.server_cores_used) {
            let _ = writeln!(
                s,
                "    service CPU: {ms:.3} ms per call, {cores:.2} cores; RSS after: {}",
                mib(p.server_rss_kib_after)
            );
        } else if let Some(rss) = p.server_rss_kib_after {
            let _ = writeln!(s, "    service RSS after: {}", mib(Some(rss)));
        }
    }
    s
}
