//! One measured phase per RPC: prepare its inputs (not measured), let the service's mail
//! settle, then drive it in a closed loop.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use recovery_proto::v1::{
    BeginRecoveryRequest, ClientContext, CreateRecoveryCodeRequest, GetRecoveryStatusRequest,
    ListAuditEventsRequest, RecoverAccountRequest, VerifyEmailRequest,
};
use tonic_health::pb::HealthCheckRequest;

use crate::{
    client::Clients,
    ids::Ids,
    load::{CallFuture, Measured, closed_loop},
    mail::smtp::SmtpSink,
    prepare::{Enrolment, Pools, Prepared, Preparer},
    report::PhaseReport,
    ui::Ui,
};

/// What every phase shares.
#[derive(Debug)]
pub struct Bench {
    pub ui: Ui,
    pub clients: Clients,
    pub ids: Arc<Ids>,
    pub pools: Arc<Pools>,
    pub prep: Preparer,
    /// The preparer of zero-knowledge enrolments and flows (its own pools).
    pub zk_prep: Preparer,
    pub concurrency: usize,
    pub duration: Duration,
    /// The tool's SMTP sink, to wait for the service's mail to drain between phases.
    pub sink: Option<Arc<SmtpSink>>,
    /// The spawned service, whose CPU time each phase reports.
    pub service_pid: Option<u32>,
}

impl Bench {
    /// Waits until the service has sent no mail for 300 ms (at most 60 s), so that one phase's
    /// mail is not delivered during the next one.
    pub async fn settle(&self) {
        let Some(sink) = &self.sink else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = sink.messages();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = sink.messages();
            if now == last {
                return;
            }
            last = now;
        }
    }

    async fn run(
        &self,
        rpc: &str,
        prepared: Vec<Prepared>,
        next: impl Fn(usize) -> Option<CallFuture> + Send + Sync + 'static,
    ) -> anyhow::Result<PhaseReport> {
        for p in &prepared {
            self.ui.note(&format!("{rpc}: prepared {}", p.summary()));
        }
        self.settle().await;
        let cpu = self.cpu_seconds();
        let measured = closed_loop(&self.ui, rpc, self.concurrency, self.duration, next).await?;
        let mut report = self.report(rpc, self.concurrency, &measured, cpu);
        report.prepared = prepared.iter().map(Prepared::summary).collect();
        Ok(report)
    }

    /// The spawned service's CPU seconds so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        self.service_pid.and_then(crate::cpu::process_seconds)
    }

    /// The report of a measured phase; `cpu_before` is [`Self::cpu_seconds`] at its start.
    pub fn report(
        &self,
        rpc: &str,
        concurrency: usize,
        m: &Measured,
        cpu_before: Option<f64>,
    ) -> PhaseReport {
        let mut report = PhaseReport::new(rpc, concurrency, m);
        if let (Some(before), Some(after)) = (cpu_before, self.cpu_seconds()) {
            report.set_server_cpu(after - before);
        }
        report
    }

    /// CreateRecoveryCode, a new account and email per call; the enrolments feed later phases.
    pub async fn create_recovery_code(&self) -> anyhow::Result<PhaseReport> {
        let (ids, pools, clients) = (
            Arc::clone(&self.ids),
            Arc::clone(&self.pools),
            self.clients.clone(),
        );
        self.run("CreateRecoveryCode", vec![], move |w| {
            Some(create_call(&ids, &pools, &clients, w, "c"))
        })
        .await
    }

    /// BeginRecovery with a fresh (unenrolled) email and a fresh client IP per call.
    pub async fn begin_recovery(&self) -> anyhow::Result<PhaseReport> {
        let (ids, clients) = (Arc::clone(&self.ids), self.clients.clone());
        self.run("BeginRecovery", vec![], move |w| {
            let n = ids.serial();
            let request = BeginRecoveryRequest {
                email: ids.email("b", n),
                client: Some(ClientContext {
                    ip_address: ids.ip(),
                    user_agent: "recovery-bench".into(),
                }),
            };
            let mut client = clients.recovery(w);
            Some(Box::pin(async move {
                client.begin_recovery(request).await.map(drop)
            }))
        })
        .await
    }

    /// VerifyEmail with the right code, one fresh flow per call. The number of flows comes
    /// from a one-second probe; the verified flows feed RecoverAccount.
    pub async fn verify_email(&self) -> anyhow::Result<PhaseReport> {
        let probe_flows = (self.concurrency as u64 * 40).max(400);
        let mut prepared = self.prep.start_flows(probe_flows).await;
        self.settle().await;
        let probe = closed_loop(
            &self.ui,
            "VerifyEmail probe",
            self.concurrency,
            Duration::from_secs(1),
            self.verify_next(),
        )
        .await?;
        // A short probe's rate suffers from one slow last call; Little's law (clients ÷ mean
        // latency) does not. The larger of the two.
        let counted = probe.recorder.calls() as f64 / probe.elapsed.as_secs_f64().max(1e-3);
        let mean_s = probe.recorder.latency().mean_ms / 1e3;
        let little = if mean_s > 0.0 {
            self.concurrency as f64 / mean_s
        } else {
            0.0
        };
        let rate = counted.max(little);
        let wanted = (rate * self.duration.as_secs_f64() * 1.2) as u64 + self.concurrency as u64;
        let missing = wanted.saturating_sub(self.pools.pending_len() as u64);
        self.ui.note(&format!(
            "VerifyEmail: probe {rate:.0}/s, preparing {missing} more flows"
        ));
        prepared.extend(self.prep.start_flows(missing).await);
        self.run("VerifyEmail", prepared, self.verify_next()).await
    }

    fn verify_next(&self) -> impl Fn(usize) -> Option<CallFuture> + Send + Sync + 'static {
        let (pools, clients) = (Arc::clone(&self.pools), self.clients.clone());
        move |w| {
            let flow = pools.pop_pending()?;
            let request = VerifyEmailRequest {
                flow_id: flow.flow_id.clone(),
                email_code: flow.email_code.clone(),
            };
            let (mut client, pools) = (clients.recovery(w), Arc::clone(&pools));
            Some(Box::pin(async move {
                client.verify_email(request).await?;
                pools.push_verified(crate::prepare::VerifiedFlow {
                    flow_id: flow.flow_id,
                    recovery_code: flow.recovery_code,
                });
                Ok(())
            }))
        }
    }

    /// RecoverAccount with the right code, one verified flow per call: enough flows for
    /// `hashes_per_s` (the raw argon2id rate, which bounds it) for the whole duration.
    pub async fn recover_account(&self, hashes_per_s: f64) -> anyhow::Result<PhaseReport> {
        let wanted =
            (hashes_per_s * self.duration.as_secs_f64() * 1.3) as u64 + self.concurrency as u64;
        let missing = wanted.saturating_sub(self.pools.verified_len() as u64);
        let mut prepared = Vec::new();
        if missing > 0 {
            let pending = self.pools.pending_len() as u64;
            if pending < missing {
                prepared.extend(self.prep.start_flows(missing - pending).await);
            }
            prepared.push(self.prep.verify(missing).await);
        }
        let (pools, clients) = (Arc::clone(&self.pools), self.clients.clone());
        self.run("RecoverAccount", prepared, move |w| {
            let flow = pools.pop_verified()?;
            let request = RecoverAccountRequest {
                flow_id: flow.flow_id,
                recovery_code: flow.recovery_code,
            };
            let mut client = clients.recovery(w);
            Some(Box::pin(async move {
                client.recover_account(request).await.map(drop)
            }))
        })
        .await
    }

    /// StartZeroKnowledgeEnrollment and FinishZeroKnowledgeEnrollment for a new account per
    /// call; the device's registration steps run inside the call (they need the service's
    /// answer). The enrolments feed the zero-knowledge recovery phase.
    pub async fn zk_enroll(&self) -> anyhow::Result<PhaseReport> {
        let prep = self.zk_prep.clone();
        self.run("ZeroKnowledgeEnrollment", vec![], move |w| {
            let (prep, mut client) = (prep.clone(), prep.clients.recovery(w));
            Some(Box::pin(async move {
                let enrolment = prep.make_enrolment(&mut client, "z").await?;
                prep.pools.add_enrolment(enrolment);
                Ok(())
            }))
        })
        .await
    }

    /// StartZeroKnowledgeRecovery and FinishZeroKnowledgeRecovery with the right code on one
    /// verified flow per call. The device's KE1 is made before the call starts; its KE3 (which
    /// needs KE2) inside it. The number of flows comes from a one-second probe, as for
    /// VerifyEmail.
    pub async fn zk_recover(&self) -> anyhow::Result<PhaseReport> {
        let prep = &self.zk_prep;
        let probe_flows = (self.concurrency as u64 * 20).max(200);
        let mut prepared = prep.start_flows(probe_flows).await;
        prepared.push(prep.verify(probe_flows).await);
        self.settle().await;
        let probe = closed_loop(
            &self.ui,
            "ZeroKnowledgeRecovery probe",
            self.concurrency,
            Duration::from_secs(1),
            self.zk_recover_next(),
        )
        .await?;
        let counted = probe.recorder.calls() as f64 / probe.elapsed.as_secs_f64().max(1e-3);
        let wanted = (counted * self.duration.as_secs_f64() * 1.2) as u64 + self.concurrency as u64;
        let missing = wanted.saturating_sub(prep.pools.verified_len() as u64);
        self.ui.note(&format!(
            "ZeroKnowledgeRecovery: probe {counted:.0}/s, preparing {missing} more flows"
        ));
        prepared.extend(prep.start_flows(missing).await);
        prepared.push(prep.verify(missing).await);
        self.run("ZeroKnowledgeRecovery", prepared, self.zk_recover_next())
            .await
    }

    fn zk_recover_next(&self) -> impl Fn(usize) -> Option<CallFuture> + Send + Sync + 'static {
        let (pools, clients) = (Arc::clone(&self.zk_prep.pools), self.clients.clone());
        move |w| {
            let flow = pools.pop_verified()?;
            let code = flow.recovery_code.into_bytes();
            let ke1 = recovery_device::prepare_login(&code);
            let mut client = clients.recovery(w);
            Some(Box::pin(async move {
                let login =
                    recovery_device::start_prepared_login(&mut client, &flow.flow_id, ke1).await?;
                let (ke3, _) = login
                    .finish(&code)
                    .ok_or_else(|| tonic::Status::internal("the device could not open KE2"))?;
                recovery_device::finish_login(&mut client, &flow.flow_id, ke3).await?;
                Ok(())
            }))
        }
    }

    /// Enrolled accounts to read (enrolling some when the run made none yet).
    async fn accounts(&self) -> (Arc<Vec<String>>, Vec<Prepared>) {
        let mut prepared = Vec::new();
        let mut accounts = self.pools.accounts();
        if accounts.is_empty() {
            prepared.push(self.prep.enrol((self.concurrency as u64 * 8).max(64)).await);
            accounts = self.pools.accounts();
        }
        (Arc::new(accounts), prepared)
    }

    /// GetRecoveryStatus of enrolled accounts, round-robin.
    pub async fn get_recovery_status(&self) -> anyhow::Result<PhaseReport> {
        let (accounts, prepared) = self.accounts().await;
        let (clients, next) = (self.clients.clone(), AtomicUsize::new(0));
        self.run("GetRecoveryStatus", prepared, move |w| {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let account_id = accounts.get(i % accounts.len().max(1))?.clone();
            let mut client = clients.recovery(w);
            Some(Box::pin(async move {
                client
                    .get_recovery_status(GetRecoveryStatusRequest { account_id })
                    .await
                    .map(drop)
            }))
        })
        .await
    }

    /// ListAuditEvents (first page of 20) of enrolled accounts, round-robin.
    pub async fn list_audit_events(&self) -> anyhow::Result<PhaseReport> {
        let (accounts, prepared) = self.accounts().await;
        let (clients, next) = (self.clients.clone(), AtomicUsize::new(0));
        self.run("ListAuditEvents", prepared, move |w| {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let account_id = accounts.get(i % accounts.len().max(1))?.clone();
            let mut client = clients.recovery(w);
            Some(Box::pin(async move {
                let request = ListAuditEventsRequest {
                    account_id,
                    page_size: 20,
                    page_token: String::new(),
                };
                client.list_audit_events(request).await.map(drop)
            }))
        })
        .await
    }

    /// grpc.health.v1.Health/Check for the whole server: the trivial baseline.
    pub async fn health(&self) -> anyhow::Result<PhaseReport> {
        let clients = self.clients.clone();
        self.run("Health/Check", vec![], move |w| {
            let mut client = clients.health(w);
            Some(Box::pin(async move {
                client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(drop)
            }))
        })
        .await
    }
}

/// A CreateRecoveryCode call for a new account; a success joins the enrolment pool.
pub fn create_call(
    ids: &Ids,
    pools: &Arc<Pools>,
    clients: &Clients,
    w: usize,
    kind: &str,
) -> CallFuture {
    let n = ids.serial();
    let (account_id, email) = (ids.account(kind, n), ids.email(kind, n));
    let request = CreateRecoveryCodeRequest {
        account_id: account_id.clone(),
        email: email.clone(),
    };
    let (mut client, pools) = (clients.recovery(w), Arc::clone(pools));
    Box::pin(async move {
        let answer = client.create_recovery_code(request).await?;
        pools.add_enrolment(Enrolment {
            account_id,
            email,
            recovery_code: answer.into_inner().recovery_code,
        });
        Ok(())
    })
}
