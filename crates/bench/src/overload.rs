//! The overload scenario: CreateRecoveryCode first alone (concurrency 1: the idle latency), then
//! offered `factor` × the raw argon2id rate in an open loop. The service should answer the
//! excess OVERLOADED at once and keep the admitted calls' latency near the idle one.

use std::sync::Arc;

use crate::{
    load::{closed_loop, open_loop},
    outcome,
    phases::{Bench, create_call},
    report::OverloadReport,
};

/// Outstanding calls at most (a service that stops answering must not exhaust the tool).
const MAX_IN_FLIGHT: usize = 20_000;

impl Bench {
    /// Runs the scenario; `hashes_per_s` is the raw argon2id rate; `peak_rss` reads the
    /// spawned service's peak memory.
    pub async fn overload(
        &self,
        factor: f64,
        hashes_per_s: f64,
        peak_rss: impl Fn() -> Option<u64>,
    ) -> anyhow::Result<OverloadReport> {
        self.settle().await;
        let (ids, pools, clients) = (
            Arc::clone(&self.ids),
            Arc::clone(&self.pools),
            self.clients.clone(),
        );
        let cpu = self.cpu_seconds();
        let idle = closed_loop(
            &self.ui,
            "CreateRecoveryCode idle",
            1,
            self.duration,
            move |w| Some(create_call(&ids, &pools, &clients, w, "i")),
        )
        .await?;
        let idle_report = self.report("CreateRecoveryCode idle", 1, &idle, cpu);
        let idle_p99 = idle
            .recorder
            .latency_of(outcome::OK)
            .map_or(0.0, |l| l.p99_ms);

        self.settle().await;
        let offered = factor * hashes_per_s;
        self.ui.note(&format!(
            "overload: offering {offered:.0} CreateRecoveryCode/s ({factor}× raw argon2id) for {:?}",
            self.duration
        ));
        let (ids, pools, clients) = (
            Arc::clone(&self.ids),
            Arc::clone(&self.pools),
            self.clients.clone(),
        );
        let cpu = self.cpu_seconds();
        let open = open_loop(
            &self.ui,
            "CreateRecoveryCode ×",
            offered,
            self.duration,
            MAX_IN_FLIGHT,
            move |n| {
                let w = usize::try_from(n).unwrap_or_default();
                create_call(&ids, &pools, &clients, w, "o")
            },
        )
        .await?;
        let r = &open.measured.recorder;
        let overloaded_label = r
            .outcomes()
            .into_keys()
            .find(|l| outcome::reason(l) == Some("OVERLOADED"));
        let overloaded_latency = overloaded_label.as_deref().and_then(|l| r.latency_of(l));
        let admitted = r.latency_of(outcome::OK);
        // Concurrency 0: an open loop.
        let overload_report = self.report("CreateRecoveryCode overload", 0, &open.measured, cpu);
        Ok(OverloadReport {
            factor,
            offered_per_s: offered,
            started: open.started,
            skipped_in_flight_cap: open.skipped,
            idle: idle_report,
            overload: overload_report,
            overloaded: overloaded_label.as_deref().map_or(0, |l| r.count(l)),
            overloaded_p99_ms: overloaded_latency.map(|l| l.p99_ms),
            admitted_p99_ms: admitted.map(|l| l.p99_ms),
            idle_p99_ms: idle_p99,
            admitted_p99_vs_idle: admitted
                .filter(|_| idle_p99 > 0.0)
                .map(|l| l.p99_ms / idle_p99),
            server_peak_rss_kib: peak_rss(),
        })
    }
}
