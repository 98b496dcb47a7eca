//! Inputs the measured calls consume, made beforehand and not measured: enrolments, flows
//! whose email code was read from the mail, and verified flows.
//!
//! Rate limits never trip: every BeginRecovery has a fresh client IP, and each enrolled email
//! starts at most [`STARTS_PER_EMAIL`] flows (the service allows 5 per hour), one at a time so
//! that the code in its mail cannot belong to another flow.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use recovery_proto::v1::{
    BeginRecoveryRequest, ClientContext, CreateRecoveryCodeRequest, VerifyEmailRequest,
};
use tokio::task::JoinSet;
use tonic::Status;

use crate::{client::Clients, ids::Ids, mail::CodeBook, outcome, ui::Ui};

/// BeginRecovery calls per enrolled email (the service's default limit per hour).
pub const STARTS_PER_EMAIL: u32 = 5;

/// How long a flow's email code may take to arrive.
const CODE_TIMEOUT: Duration = Duration::from_secs(30);

/// An account with a recovery code.
#[derive(Debug, Clone)]
pub struct Enrolment {
    pub account_id: String,
    pub email: String,
    pub recovery_code: String,
}

/// A started flow and the code its email carried.
#[derive(Debug, Clone)]
pub struct PendingFlow {
    pub flow_id: String,
    pub email_code: String,
    pub recovery_code: String,
}

/// A flow whose email is verified: RecoverAccount succeeds on it once.
#[derive(Debug, Clone)]
pub struct VerifiedFlow {
    pub flow_id: String,
    pub recovery_code: String,
}

/// Everything made so far.
#[derive(Debug, Default)]
pub struct Pools {
    enrolled: Mutex<Vec<Enrolment>>,
    startable: Mutex<VecDeque<(Enrolment, u32)>>,
    pending: Mutex<VecDeque<PendingFlow>>,
    verified: Mutex<Vec<VerifiedFlow>>,
}

impl Pools {
    pub fn add_enrolment(&self, e: Enrolment) {
        if let Ok(mut startable) = self.startable.lock() {
            startable.push_back((e.clone(), STARTS_PER_EMAIL));
        }
        if let Ok(mut enrolled) = self.enrolled.lock() {
            enrolled.push(e);
        }
    }

    /// Account ids of every enrolment.
    pub fn accounts(&self) -> Vec<String> {
        self.enrolled
            .lock()
            .map(|e| e.iter().map(|e| e.account_id.clone()).collect())
            .unwrap_or_default()
    }

    /// BeginRecovery calls the enrolled emails still allow.
    fn starts_left(&self) -> u64 {
        self.startable
            .lock()
            .map_or(0, |s| s.iter().map(|(_, left)| u64::from(*left)).sum())
    }

    fn take_startable(&self) -> Option<(Enrolment, u32)> {
        self.startable.lock().ok()?.pop_front()
    }

    fn give_back_startable(&self, e: Enrolment, left: u32) {
        if let Ok(mut startable) = self.startable.lock() {
            startable.push_back((e, left));
        }
    }

    pub fn push_pending(&self, f: PendingFlow) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.push_back(f);
        }
    }

    pub fn pop_pending(&self) -> Option<PendingFlow> {
        self.pending.lock().ok()?.pop_front()
    }

    pub fn pending_len(&self) -> usize {
        self.pending.lock().map_or(0, |p| p.len())
    }

    pub fn push_verified(&self, f: VerifiedFlow) {
        if let Ok(mut verified) = self.verified.lock() {
            verified.push(f);
        }
    }

    pub fn pop_verified(&self) -> Option<VerifiedFlow> {
        self.verified.lock().ok()?.pop()
    }

    pub fn verified_len(&self) -> usize {
        self.verified.lock().map_or(0, |v| v.len())
    }
}

/// What a preparation step made, how fast, and what went wrong.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Prepared {
    pub what: String,
    pub made: u64,
    pub seconds: f64,
    pub failures: BTreeMap<String, u64>,
}

impl Prepared {
    pub fn summary(&self) -> String {
        let mut text = format!("{} {} in {:.1} s", self.made, self.what, self.seconds);
        if !self.failures.is_empty() {
            let failures: Vec<String> = self
                .failures
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            text.push_str(&format!(" (failures: {})", failures.join(" ")));
        }
        text
    }
}

/// What the preparation steps share.
#[derive(Debug, Clone)]
pub struct Preparer {
    pub ui: Ui,
    pub clients: Clients,
    pub ids: Arc<Ids>,
    pub pools: Arc<Pools>,
    pub codes: Option<Arc<CodeBook>>,
    /// Concurrent CreateRecoveryCode calls: the service's hashing permits (2 per thread).
    pub hash_concurrency: usize,
    /// Concurrent flows in the making.
    pub flow_concurrency: usize,
    pub timeout: Duration,
    /// Enrolments are zero-knowledge (OPAQUE through `recovery-device`, the code made on the
    /// tool's side) instead of CreateRecoveryCode.
    pub zero_knowledge: bool,
}

type Failures = Arc<Mutex<BTreeMap<String, u64>>>;

fn count_failure(failures: &Failures, status: &Status) {
    if let Ok(mut f) = failures.lock() {
        *f.entry(outcome::label(&Err(status.clone()))).or_default() += 1;
    }
}

impl Preparer {
    /// Creates `n` enrolments (retrying OVERLOADED answers).
    pub async fn enrol(&self, n: u64) -> Prepared {
        let made = Arc::new(AtomicU64::new(0));
        let failures: Failures = Arc::default();
        let ticker = self.ui.counted("enrolling", n, Arc::clone(&made));
        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut workers = JoinSet::new();
        for w in 0..self.hash_concurrency.max(1) {
            let (this, made, failures) = (self.clone(), Arc::clone(&made), Arc::clone(&failures));
            workers.spawn(async move {
                let mut client = this.clients.recovery(w);
                while made.load(Ordering::Relaxed) < n && Instant::now() < deadline {
                    match this.make_enrolment(&mut client, "e").await {
                        Ok(enrolment) => {
                            made.fetch_add(1, Ordering::Relaxed);
                            this.pools.add_enrolment(enrolment);
                        }
                        Err(status) => {
                            count_failure(&failures, &status);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            });
        }
        while workers.join_next().await.is_some() {}
        ticker.finish();
        finish("enrolments", &made, started, &failures)
    }

    /// One new enrolment of this preparer's kind: CreateRecoveryCode, or a zero-knowledge
    /// enrolment of a code made here.
    pub async fn make_enrolment(
        &self,
        client: &mut crate::client::RecoveryClient,
        kind: &str,
    ) -> Result<Enrolment, Status> {
        let i = self.ids.serial();
        let (account_id, email) = (self.ids.account(kind, i), self.ids.email(kind, i));
        let recovery_code = if self.zero_knowledge {
            let code = recovery_device::make_code();
            recovery_device::enrol(client, &account_id, &email, code.as_bytes(), b"keyset").await?;
            code
        } else {
            let request = CreateRecoveryCodeRequest {
                account_id: account_id.clone(),
                email: email.clone(),
            };
            client
                .create_recovery_code(request)
                .await?
                .into_inner()
                .recovery_code
        };
        Ok(Enrolment {
            account_id,
            email,
            recovery_code,
        })
    }

    /// Enrols enough accounts for `n` flows (each email starts a few), then starts them.
    pub async fn start_flows(&self, n: u64) -> Vec<Prepared> {
        let mut prepared = Vec::new();
        let starts = self.pools.starts_left();
        if starts < n {
            let emails =
                (n - starts).div_ceil(u64::from(STARTS_PER_EMAIL)) + self.flow_concurrency as u64;
            prepared.push(self.enrol(emails).await);
        }
        prepared.push(self.start_flows_on_enrolled(n).await);
        prepared
    }

    /// Starts `n` flows on enrolled emails and reads each one's code from the mail.
    async fn start_flows_on_enrolled(&self, n: u64) -> Prepared {
        let made = Arc::new(AtomicU64::new(0));
        let failures: Failures = Arc::default();
        let Some(codes) = self.codes.clone() else {
            return Prepared {
                what: "flows (no mail source: use --spawn, --mail-dir or --smtp-listen)".into(),
                ..Prepared::default()
            };
        };
        let ticker = self.ui.counted("starting flows", n, Arc::clone(&made));
        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut workers = JoinSet::new();
        for w in 0..self.flow_concurrency.max(1) {
            let (this, made, failures) = (self.clone(), Arc::clone(&made), Arc::clone(&failures));
            let codes = Arc::clone(&codes);
            workers.spawn(async move {
                let mut client = this.clients.recovery(w);
                'outer: while made.load(Ordering::Relaxed) < n && Instant::now() < deadline {
                    let Some((enrolment, mut left)) = this.take_or_enrol(w, &failures).await else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    while left > 0 {
                        if made.load(Ordering::Relaxed) >= n || Instant::now() >= deadline {
                            this.pools.give_back_startable(enrolment, left);
                            break 'outer;
                        }
                        left -= 1;
                        let request = BeginRecoveryRequest {
                            email: enrolment.email.clone(),
                            client: Some(ClientContext {
                                ip_address: this.ids.ip(),
                                user_agent: "recovery-bench".into(),
                            }),
                        };
                        let flow_id = match client.begin_recovery(request).await {
                            Ok(r) => r.into_inner().flow_id,
                            Err(status) => {
                                count_failure(&failures, &status);
                                continue 'outer; // this email is spent
                            }
                        };
                        let Some(email_code) = codes.wait(&enrolment.email, CODE_TIMEOUT).await
                        else {
                            if let Ok(mut f) = failures.lock() {
                                *f.entry("no code within 30 s".into()).or_default() += 1;
                            }
                            continue 'outer; // a late code must not meet a later flow
                        };
                        this.pools.push_pending(PendingFlow {
                            flow_id,
                            email_code,
                            recovery_code: enrolment.recovery_code.clone(),
                        });
                        made.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        while workers.join_next().await.is_some() {}
        ticker.finish();
        finish("flows with their email code", &made, started, &failures)
    }

    /// An enrolment with starts left, enrolling one when none is.
    async fn take_or_enrol(&self, w: usize, failures: &Failures) -> Option<(Enrolment, u32)> {
        if let Some(found) = self.pools.take_startable() {
            return Some(found);
        }
        match self
            .make_enrolment(&mut self.clients.recovery(w), "f")
            .await
        {
            Ok(e) => {
                self.pools.add_enrolment(e);
                self.pools.take_startable()
            }
            Err(status) => {
                count_failure(failures, &status);
                None
            }
        }
    }

    /// Verifies up to `n` pending flows (their right code), making them recoverable.
    pub async fn verify(&self, n: u64) -> Prepared {
        let made = Arc::new(AtomicU64::new(0));
        let failures: Failures = Arc::default();
        let ticker = self.ui.counted("verifying flows", n, Arc::clone(&made));
        let started = Instant::now();
        let mut workers = JoinSet::new();
        for w in 0..self.flow_concurrency.max(1) {
            let (this, made, failures) = (self.clone(), Arc::clone(&made), Arc::clone(&failures));
            workers.spawn(async move {
                let mut client = this.clients.recovery(w);
                while made.load(Ordering::Relaxed) < n {
                    let Some(flow) = this.pools.pop_pending() else {
                        break;
                    };
                    let request = VerifyEmailRequest {
                        flow_id: flow.flow_id.clone(),
                        email_code: flow.email_code,
                    };
                    match client.verify_email(request).await {
                        Ok(_) => {
                            made.fetch_add(1, Ordering::Relaxed);
                            this.pools.push_verified(VerifiedFlow {
                                flow_id: flow.flow_id,
                                recovery_code: flow.recovery_code,
                            });
                        }
                        Err(status) => count_failure(&failures, &status),
                    }
                }
            });
        }
        while workers.join_next().await.is_some() {}
        ticker.finish();
        finish("verified flows", &made, started, &failures)
    }
}

fn finish(what: &str, made: &AtomicU64, started: Instant, failures: &Failures) -> Prepared {
    Prepared {
        what: what.to_owned(),
        made: made.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        failures: failures.lock().map(|f| f.clone()).unwrap_or_default(),
    }
}
