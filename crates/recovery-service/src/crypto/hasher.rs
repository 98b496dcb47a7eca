//! Argon2id on a bounded pool of dedicated threads. Each thread reuses one block buffer, so
//! memory stays near `threads × m_cost`; admission is a semaphore with a short wait, so overload
//! is answered fast with `OVERLOADED` instead of queueing without bound.
//!
//! A job carries its request's permit: a caller that gives up (its deadline passed, it hung
//! up) frees its permit only once its job is done, so abandoned work still counts against
//! admission. A queued job whose caller is gone is skipped before hashing; a hash already
//! running when its caller leaves finishes and is counted (`recovery.hash.pool.abandoned`).
//! Nothing here blocks a runtime thread: jobs are queued with `try_send`.
//!
//! Admission is fair between accounts: an account holds at most one permit at a time, and its
//! next call waits for that one (within the admission wait) before it queues for the pool, so
//! a loop on one account takes one permit of the pool's, never the pool.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::Duration,
};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::{Engine as _, engine::general_purpose::STANDARD_NO_PAD};
use subtle::ConstantTimeEq as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use zeroize::Zeroizing;

use super::{Purpose, SecretKey, random_bytes, subkey};

/// Why a hash was not computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No hashing thread freed up within the admission wait: answer `OVERLOADED`.
    #[error("the hashing pool is full")]
    Overloaded,
    /// A bug or a broken environment (logged where it happens).
    #[error("hashing failed")]
    Failed,
}

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for HashParams {
    /// OWASP's baseline: m = 19 MiB, t = 2, p = 1.
    fn default() -> Self {
        Self {
            m_kib: 19_456,
            t: 2,
            p: 1,
        }
    }
}

impl HashParams {
    /// As stored beside each hash: `argon2id,m=19456,t=2,p=1`.
    pub fn label(&self) -> String {
        format!("argon2id,m={},t={},p={}", self.m_kib, self.t, self.p)
    }

    fn argon2_params(&self) -> Result<Params, Error> {
        Params::new(self.m_kib, self.t, self.p, Some(32)).map_err(|e| {
            tracing::error!(error = %e, "invalid argon2 parameters");
            Error::Failed
        })
    }
}

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// Admitted requests per hashing thread.
const PERMITS_PER_THREAD: usize = 2;

/// After a refusal the pool counts as overloaded for this long: a caller who finds no permit
/// free then queues only behind fewer than `permits` others (one turn of the pool), so that a
/// standing flood keeps the queue short and admitted calls keep their latency. Otherwise a
/// burst may queue as long as the admission wait allows. A closed loop of up to twice as many
/// callers as permits keeps at most one turn queued, so this seldom refuses it (only in the
/// instant a freed permit is handed to a waiter that has not run yet).
const OVERLOADED_FOR: Duration = Duration::from_secs(1);

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub admitted: AtomicU64,
    pub rejected: AtomicU64,
    pub waiting: AtomicU64,
    /// Queued jobs skipped because their caller had gone.
    pub skipped: AtomicU64,
    /// Hashes computed for callers that had gone by the time they finished.
    pub abandoned: AtomicU64,
    /// How long a request holds its permit, on average (microseconds, a moving average;
    /// 0 until the first one is returned).
    pub hold_us: AtomicU64,
}

/// The hashing pool. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hasher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    jobs: mpsc::SyncSender<Job>,
    stats_shared: Arc<PoolStats>,
    permits: Arc<Semaphore>,
    threads: usize,
    admission_wait: Duration,
    params: HashParams,
    /// When the pool started: the epoch of `last_refusal_ms`.
    started: std::time::Instant,
    /// Milliseconds after `started` of the latest refusal, plus one; 0: none yet.
    last_refusal_ms: AtomicU64,
    /// Each account's turn, while one of its calls holds or awaits it (see [`Turns`]).
    turns: Arc<Turns>,
}

/// One gate per account with a call in the pool or waiting for its turn; an entry lives as
/// long as someone holds or awaits it, so the map holds at most the calls in flight.
#[derive(Debug, Default)]
struct Turns(Mutex<HashMap<String, Arc<Semaphore>>>);

/// A reference to an account's gate: the last one dropped removes the gate from [`Turns`].
#[derive(Debug)]
struct Gate {
    account: String,
    /// Always `Some` until dropped: given up under the map's lock.
    gate: Option<Arc<Semaphore>>,
    turns: Arc<Turns>,
}

impl Turns {
    fn gate(self: &Arc<Self>, account: &str) -> Gate {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let gate = map
            .entry(account.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(1)));
        Gate {
            account: account.to_owned(),
            gate: Some(Arc::clone(gate)),
            turns: Arc::clone(self),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let mut map = self
            .turns
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // This reference goes under the lock, so that of two gates dropped at once the second
        // sees the first gone. A permit or a wait holds a reference too, and always goes
        // before its gate: the map's alone left means nobody holds or awaits the turn.
        drop(self.gate.take());
        if map
            .get(&self.account)
            .is_some_and(|gate| Arc::strong_count(gate) == 1)
        {
            map.remove(&self.account);
        }
    }
}

/// An account's turn: its one permit of the pool at a time.
#[derive(Debug)]
struct Turn {
    permit: Option<OwnedSemaphorePermit>,
    _gate: Gate,
}

impl Drop for Turn {
    fn drop(&mut self) {
        // The permit (and its reference to the gate) goes first, so that the gate sees
        // whether anyone else still needs it.
        self.permit.take();
    }
}

/// The right to run one hash on the pool, held across the calls of one request and by each
/// job it queues: the permit returns to the pool when the request and its jobs are all done.
#[derive(Debug)]
pub struct HashPermit {
    permit: Arc<Held>,
}

/// A permit, timed: when it returns to the pool, how long it was held feeds the moving
/// average that admission uses to tell a short wait from a hopeless one.
#[derive(Debug)]
struct Held {
    _permit: OwnedSemaphorePermit,
    /// Dropped after the permit: the account's next call queues once this one is done.
    _turn: Turn,
    since: std::time::Instant,
    stats: Arc<PoolStats>,
}

/// One caller counted in [`PoolStats::waiting`] until dropped.
struct Waiting<'a>(&'a PoolStats);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let held = u64::try_from(self.since.elapsed().as_micros()).unwrap_or(u64::MAX);
        let _ = self
            .stats
            .hold_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |avg| {
                Some(if avg == 0 { held } else { (avg * 7 + held) / 8 })
            });
    }
}

impl Hasher {
    /// Starts `threads` hashing threads hashing with `params`; a request waits at most
    /// `admission_wait` for a permit. There are two permits per thread: a request holds its
    /// permit across the database calls around its hash, and the second permit keeps the thread
    /// busy meanwhile. Memory stays `threads × m_cost`: buffers belong to threads, not permits.
    pub fn new(
        threads: usize,
        params: HashParams,
        admission_wait: Duration,
    ) -> Result<Self, Error> {
        let threads = threads.max(1);
        let permits = threads * PERMITS_PER_THREAD;
        params.argon2_params()?;
        // Every queued job holds a permit, so the queue never holds more than `permits`.
        let (jobs, receiver) = mpsc::sync_channel::<Job>(permits);
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..threads {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    let mut blocks: Vec<Block> = Vec::new();
                    loop {
                        let job = match receiver.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&mut blocks),
                            Err(_) => return, // the pool was dropped
                        }
                    }
                })
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot start a hashing thread");
                    Error::Failed
                })?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                jobs,
                stats_shared: Arc::new(PoolStats::default()),
                permits: Arc::new(Semaphore::new(permits)),
                threads,
                admission_wait,
                params,
                started: std::time::Instant::now(),
                last_refusal_ms: AtomicU64::new(0),
                turns: Arc::default(),
            }),
        })
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a call was refused within [`OVERLOADED_FOR`].
    fn overloaded(&self) -> bool {
        let last = self.inner.last_refusal_ms.load(Ordering::Relaxed);
        last != 0
            && self.elapsed_ms().saturating_add(1).saturating_sub(last)
                < u64::try_from(OVERLOADED_FOR.as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts a refusal: `OVERLOADED`.
    fn refuse(&self) -> Error {
        self.stats().rejected.fetch_add(1, Ordering::Relaxed);
        self.inner
            .last_refusal_ms
            .fetch_max(self.elapsed_ms().saturating_add(1), Ordering::Relaxed);
        Error::Overloaded
    }

    /// The parameters new hashes use.
    pub fn params(&self) -> HashParams {
        self.inner.params
    }

    /// Threads (and so concurrent hashes) in the pool.
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// Permits held right now.
    pub fn in_use(&self) -> usize {
        self.inner.threads * PERMITS_PER_THREAD - self.inner.permits.available_permits()
    }

    /// Pool counters.
    pub fn stats(&self) -> &PoolStats {
        &self.inner.stats_shared
    }

    /// Waits briefly for a free hashing thread; [`Error::Overloaded`] when none frees up.
    /// A caller who would wait longer than the admission wait (the callers ahead of it, at
    /// the pool's average permit hold, cannot be through in time) is refused at once rather
    /// than after waiting for nothing; so is one who finds a full turn of the pool queued
    /// ahead of it within a second of a refusal ([`OVERLOADED_FOR`]).
    ///
    /// Each `account` has one permit at a time: its next call first waits (within the same
    /// admission wait) for the one it holds to be done.
    #[tracing::instrument(name = "argon2.admit", skip_all)]
    pub async fn admit(&self, account: &str) -> Result<HashPermit, Error> {
        // One wait in all: for the account's turn, then for the pool.
        let deadline = tokio::time::Instant::now() + self.inner.admission_wait;
        let turn = self.turn(account, deadline).await?;
        let stats = self.stats();
        let ahead = stats.waiting.fetch_add(1, Ordering::Relaxed);
        // Whatever ends the wait (admitted, refused, or the caller gone and this future
        // dropped), the caller no longer counts as waiting.
        let _waiting = Waiting(stats);
        if self.inner.permits.available_permits() == 0 {
            let permits = self.inner.threads * PERMITS_PER_THREAD;
            let hold = Duration::from_micros(stats.hold_us.load(Ordering::Relaxed));
            let rounds = u32::try_from(ahead).unwrap_or(u32::MAX).saturating_add(1);
            let expected =
                hold.saturating_mul(rounds) / u32::try_from(permits).unwrap_or(u32::MAX).max(1);
            let hopeless =
                expected > deadline.saturating_duration_since(tokio::time::Instant::now());
            let crowded = ahead >= permits as u64 && self.overloaded();
            if hopeless || crowded {
                return Err(self.refuse());
            }
        }
        let acquired =
            tokio::time::timeout_at(deadline, Arc::clone(&self.inner.permits).acquire_owned())
                .await;
        match acquired {
            Ok(Ok(permit)) => {
                stats.admitted.fetch_add(1, Ordering::Relaxed);
                Ok(HashPermit {
                    permit: Arc::new(Held {
                        _permit: permit,
                        _turn: turn,
                        since: std::time::Instant::now(),
                        stats: Arc::clone(&self.inner.stats_shared),
                    }),
                })
            }
            _ => Err(self.refuse()),
        }
    }

    /// The account's turn: at once when none of its calls holds a permit, else once the one
    /// that does is done; refused at `deadline`. One account waiting on itself says nothing
    /// of the pool: the refusal is counted, but the pool does not turn overloaded for it.
    async fn turn(&self, account: &str, deadline: tokio::time::Instant) -> Result<Turn, Error> {
        let gate = self.inner.turns.gate(account);
        let Some(semaphore) = gate.gate.clone() else {
            return Err(Error::Failed);
        };
        match tokio::time::timeout_at(deadline, semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Turn {
                permit: Some(permit),
                _gate: gate,
            }),
            _ => {
                self.stats().rejected.fetch_add(1, Ordering::Relaxed);
                Err(Error::Overloaded)
            }
        }
    }

    /// Accounts with a call holding or awaiting its turn.
    #[cfg(test)]
    fn accounts_in_flight(&self) -> usize {
        self.inner.turns.len()
    }

    /// Hashes `secret` with a fresh salt under `key`'s pepper: a PHC string.
    #[tracing::instrument(name = "argon2.hash", skip_all, fields(argon2.m_kib = self.inner.params.m_kib))]
    pub async fn hash(
        &self,
        permit: &HashPermit,
        secret: &[u8],
        key: &SecretKey,
    ) -> Result<String, Error> {
        let params = self.inner.params;
        let salt: [u8; 16] = random_bytes().map_err(|e| {
            tracing::error!(error = %e, "random source failed");
            Error::Failed
        })?;
        let output = self.run(permit, params, secret, salt.to_vec(), key).await?;
        Ok(format!(
            "$argon2id$v=19$m={},t={},p={}${}${}",
            params.m_kib,
            params.t,
            params.p,
            STANDARD_NO_PAD.encode(salt),
            STANDARD_NO_PAD.encode(&*output)
        ))
    }

    /// Checks `secret` against a PHC string made by [`Hasher::hash`], under `key`'s pepper, in
    /// constant time. A malformed stored hash is an internal error, never a match.
    #[tracing::instrument(name = "argon2.verify", skip_all)]
    pub async fn verify(
        &self,
        permit: &HashPermit,
        secret: &[u8],
        phc: &str,
        key: &SecretKey,
    ) -> Result<bool, Error> {
        let (params, salt, expected) = parse_phc(phc).ok_or_else(|| {
            tracing::error!("stored recovery-code hash is not an argon2id PHC string");
            Error::Failed
        })?;
        let output = self.run(permit, params, secret, salt, key).await?;
        Ok(output.len() == expected.len() && bool::from(output.ct_eq(&expected)))
    }

    async fn run(
        &self,
        permit: &HashPermit,
        params: HashParams,
        secret: &[u8],
        salt: Vec<u8>,
        key: &SecretKey,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let argon_params = params.argon2_params()?;
        let pepper = subkey(key, Purpose::RecoveryCodePepper);
        let secret = Zeroizing::new(secret.to_vec());
        let (done, result) = oneshot::channel();
        let held = Arc::clone(&permit.permit);
        let stats = Arc::clone(&self.inner.stats_shared);
        let job: Job = Box::new(move |blocks: &mut Vec<Block>| {
            // The permit returns to the pool when this job is over, whatever the caller did.
            if done.is_closed() {
                drop(held);
                // The caller has gone (deadline, hang-up): nobody waits for this hash.
                stats.skipped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let needed = argon_params.block_count();
            if blocks.len() < needed {
                blocks.resize(needed, Block::default());
            }
            let mut out = Zeroizing::new(vec![0u8; 32]);
            let outcome = Argon2::new_with_secret(
                &*pepper,
                Algorithm::Argon2id,
                Version::V0x13,
                argon_params,
            )
            .and_then(|argon| {
                argon.hash_password_into_with_memory(
                    &secret,
                    &salt,
                    &mut out,
                    &mut blocks[..needed],
                )
            })
            .map(|()| out);
            // Returned before the caller wakes up, so its next admission can find it.
            drop(held);
            if done.send(outcome).is_err() {
                stats.abandoned.fetch_add(1, Ordering::Relaxed);
            }
        });
        self.inner.jobs.try_send(job).map_err(|e| match e {
            // Cannot happen while every job holds a permit; never wait on a runtime thread.
            mpsc::TrySendError::Full(_) => Error::Overloaded,
            mpsc::TrySendError::Disconnected(_) => {
                tracing::error!("hashing threads are gone");
                Error::Failed
            }
        })?;
        match result.await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "argon2 failed");
                Err(Error::Failed)
            }
            Err(_) => {
                tracing::error!("a hashing thread died");
                Err(Error::Failed)
            }
        }
    }
}

/// `$argon2id$v=19$m=…,t=…,p=…$salt$hash` → (params, salt, hash).
fn parse_phc(phc: &str) -> Option<(HashParams, Vec<u8>, Vec<u8>)> {
    let mut parts = phc.split('$');
    let ("", "argon2id", "v=19", params, salt, hash, None) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next(),
    ) else {
        return None;
    };
    let mut m = None;
    let mut t = None;
    let mut p = None;
    for pair in params.split(',') {
        let (name, value) = pair.split_once('=')?;
        let value: u32 = value.parse().ok()?;
        match name {
            "m" => m = Some(value),
            "t" => t = Some(value),
            "p" => p = Some(value),
            _ => return None,
        }
    }
    let params = HashParams {
        m_kib: m?,
        t: t?,
        p: p?,
    };
    Some((
        params,
        STANDARD_NO_PAD.decode(salt).ok()?,
        STANDARD_NO_PAD.decode(hash).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyRing;

    /// An account no other call of the test uses.
    fn fresh() -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        format!("account-{}", NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// RFC 9106, section 5.3: the Argon2id test vector (secret and associated data included),
    /// through the same calls the pool makes (`new_with_secret`, a reused block buffer).
    #[test]
    fn rfc_9106_argon2id_known_answer() {
        let params = argon2::ParamsBuilder::new()
            .m_cost(32)
            .t_cost(3)
            .p_cost(4)
            .data(argon2::AssociatedData::new(&[0x04; 12]).unwrap())
            .output_len(32)
            .build()
            .unwrap();
        let argon = Argon2::new_with_secret(
            &[0x03; 8],
            Algorithm::Argon2id,
            Version::V0x13,
            params.clone(),
        )
        .unwrap();
        let mut blocks = vec![Block::default(); params.block_count()];
        let mut out = [0u8; 32];
        argon
            .hash_password_into_with_memory(&[0x01; 32], &[0x02; 16], &mut out, &mut blocks)
            .unwrap();
        assert_eq!(
            hex::encode(out),
            "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"
        );
    }

    /// OWASP's baseline is the default cost.
    #[test]
    fn the_owasp_baseline_is_the_default() {
        let d = HashParams::default();
        assert_eq!((d.m_kib, d.t, d.p), (19_456, 2, 1));
        assert_eq!(d.label(), "argon2id,m=19456,t=2,p=1");
    }

    /// A caller who cannot be admitted within the admission wait is refused at once, not after
    /// waiting the whole wait for nothing; one who can, waits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hopeless_wait_is_refused_at_once() {
        let pool = Hasher::new(1, small(), Duration::from_secs(10)).unwrap();
        // The pool has learnt that a permit is held 15 s (the moving average, as if measured).
        pool.stats().hold_us.store(15_000_000, Ordering::Relaxed);
        let (a, b) = (
            pool.admit(&fresh()).await.unwrap(),
            pool.admit(&fresh()).await.unwrap(),
        );
        // First in line: expected 15 s / 2 permits = 7.5 s, within the 10 s wait: it waits.
        let first = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.admit(&fresh()).await.map(drop) })
        };
        all_queued(&pool, std::slice::from_ref(&first)).await;
        // Second in line: 15 s, beyond the wait: hopeless, refused without waiting the 10 s (the
        // bound is only a guard against a hang, not a timing).
        let refused = tokio::time::timeout(Duration::from_secs(5), pool.admit(&fresh())).await;
        assert_eq!(refused.map(|r| r.unwrap_err()), Ok(Error::Overloaded));
        assert!(!first.is_finished(), "the first in line still waits");
        drop(a);
        assert!(
            first.await.unwrap().is_ok(),
            "the first in line was admitted"
        );
        drop(b);
    }

    /// Under overload at most two permits per thread are held at once (memory stays
    /// threads × m_cost: buffers belong to threads), the rest are refused, and the admitted
    /// calls all finish.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn overload_admits_at_most_the_permits_and_refuses_the_rest() {
        let pool = Hasher::new(1, small(), Duration::from_millis(1)).unwrap();
        let ring = Arc::new(KeyRing::parse(A).unwrap());
        let mut calls = tokio::task::JoinSet::new();
        let peak = Arc::new(AtomicU64::new(0));
        for _ in 0..64 {
            let (pool, ring, peak) = (pool.clone(), Arc::clone(&ring), Arc::clone(&peak));
            calls.spawn(async move {
                let permit = pool.admit(&fresh()).await?;
                peak.fetch_max(pool.in_use() as u64, Ordering::Relaxed);
                pool.hash(&permit, b"secret", ring.current())
                    .await
                    .map(drop)
            });
        }
        let (mut ok, mut overloaded) = (0, 0);
        while let Some(result) = calls.join_next().await {
            match result.unwrap() {
                Ok(()) => ok += 1,
                Err(Error::Overloaded) => overloaded += 1,
                Err(other) => panic!("{other:?}"),
            }
        }
        assert!(peak.load(Ordering::Relaxed) <= PERMITS_PER_THREAD as u64);
        assert!(
            ok >= 1 && overloaded >= 1,
            "ok {ok}, overloaded {overloaded}"
        );
        assert_eq!(ok + overloaded, 64);
        assert_eq!(pool.in_use(), 0, "every permit came back");
        assert_eq!(pool.stats().rejected.load(Ordering::Relaxed), overloaded);
    }

    const A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn small() -> HashParams {
        HashParams {
            m_kib: 64,
            t: 1,
            p: 1,
        }
    }

    #[tokio::test]
    async fn a_hash_verifies_only_the_same_secret_under_the_same_pepper() {
        let hasher = Hasher::new(2, small(), Duration::from_secs(1)).unwrap();
        let a = KeyRing::parse(A).unwrap();
        let b = KeyRing::parse(B).unwrap();
        let permit = hasher.admit(&fresh()).await.unwrap();
        let phc = hasher.hash(&permit, b"SECRET", a.current()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(
            hasher
                .verify(&permit, b"SECRET", &phc, a.current())
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify(&permit, b"SECRET!", &phc, a.current())
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify(&permit, b"SECRET", &phc, b.current())
                .await
                .unwrap(),
            "peppered"
        );
        let again = hasher.hash(&permit, b"SECRET", a.current()).await.unwrap();
        assert_ne!(phc, again, "fresh salt each time");
    }

    #[tokio::test]
    async fn hashes_made_under_other_parameters_still_verify() {
        let keys = KeyRing::parse(A).unwrap();
        let old = Hasher::new(1, small(), Duration::from_secs(1)).unwrap();
        let permit = old.admit(&fresh()).await.unwrap();
        let phc = old.hash(&permit, b"code", keys.current()).await.unwrap();
        drop(permit);
        let new = Hasher::new(
            1,
            HashParams {
                m_kib: 128,
                t: 2,
                p: 1,
            },
            Duration::from_secs(1),
        )
        .unwrap();
        let permit = new.admit(&fresh()).await.unwrap();
        assert!(
            new.verify(&permit, b"code", &phc, keys.current())
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_malformed_stored_hash_is_an_internal_error() {
        let keys = KeyRing::parse(A).unwrap();
        let hasher = Hasher::new(1, small(), Duration::from_secs(1)).unwrap();
        let permit = hasher.admit(&fresh()).await.unwrap();
        for bad in [
            "",
            "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
            "$argon2id$v=19$m=x$a$b",
        ] {
            assert_eq!(
                hasher.verify(&permit, b"code", bad, keys.current()).await,
                Err(Error::Failed)
            );
        }
    }

    /// Waits (at most 10 s: no timing test) until `n` callers wait for a permit.
    async fn until_waiting(pool: &Hasher, n: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.stats().waiting.load(Ordering::Relaxed) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{n} callers never queued"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Every caller of `waiting` is queued: counted as waiting, and still so a moment later
    /// (a caller refused at once would have left).
    async fn all_queued(pool: &Hasher, waiting: &[tokio::task::JoinHandle<Result<(), Error>>]) {
        let n = waiting.len() as u64;
        until_waiting(pool, n).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(pool.stats().waiting.load(Ordering::Relaxed), n);
        assert!(waiting.iter().all(|w| !w.is_finished()), "all {n} queue");
    }

    /// Within a second of a refusal, a caller who finds a full turn of the pool (as many
    /// callers as permits) already queued is refused at once; before any refusal, and a second
    /// after the last one, the same caller queues.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn while_overloaded_the_queue_is_one_turn_of_the_pool() {
        let pool = Hasher::new(1, small(), Duration::from_millis(300)).unwrap();
        let queue = |n: usize| {
            (0..n)
                .map(|_| {
                    let pool = pool.clone();
                    tokio::spawn(async move { pool.admit(&fresh()).await.map(drop) })
                })
                .collect::<Vec<_>>()
        };
        let (a, b) = (
            pool.admit(&fresh()).await.unwrap(),
            pool.admit(&fresh()).await.unwrap(),
        );
        // No refusal yet: a third in line queues like the first two.
        let waiting = queue(3);
        all_queued(&pool, &waiting).await;
        for w in waiting {
            assert_eq!(w.await.unwrap(), Err(Error::Overloaded), "timed out");
        }
        // Refusals happened: two (one turn) may queue, the third is refused at once.
        let waiting = queue(2);
        all_queued(&pool, &waiting).await;
        let asked = std::time::Instant::now();
        assert_eq!(pool.admit(&fresh()).await.unwrap_err(), Error::Overloaded);
        assert!(
            asked.elapsed() < Duration::from_millis(200),
            "refused without waiting: {:?}",
            asked.elapsed()
        );
        drop(a);
        drop(b);
        for w in waiting {
            assert_eq!(w.await.unwrap(), Ok(()), "the queued turn was admitted");
        }
        // A second after the last refusal the pool queues a burst again (short holds first,
        // so that the average hold no longer makes a third in line hopeless).
        tokio::time::sleep(OVERLOADED_FOR).await;
        for _ in 0..40 {
            drop(pool.admit(&fresh()).await.unwrap());
        }
        assert!(pool.stats().hold_us.load(Ordering::Relaxed) < 20_000);
        let (a, b) = (
            pool.admit(&fresh()).await.unwrap(),
            pool.admit(&fresh()).await.unwrap(),
        );
        let waiting = queue(3);
        all_queued(&pool, &waiting).await;
        drop((a, b));
        for w in waiting {
            assert_eq!(w.await.unwrap(), Ok(()));
        }
        assert_eq!(pool.in_use(), 0);
    }

    /// A caller who leaves while waiting (its deadline passed, it hung up) stops counting as
    /// waiting: abandoned waits never make later callers look crowded or hopeless.
    #[tokio::test]
    async fn a_caller_gone_while_waiting_no_longer_counts() {
        let pool = Hasher::new(1, small(), Duration::from_millis(300)).unwrap();
        let held = (
            pool.admit(&fresh()).await.unwrap(),
            pool.admit(&fresh()).await.unwrap(),
        );
        // A refusal (the wait ran out): the pool is overloaded for a second.
        assert_eq!(pool.admit(&fresh()).await.unwrap_err(), Error::Overloaded);
        for _ in 0..5 {
            let gone = tokio::time::timeout(Duration::from_millis(10), pool.admit(&fresh())).await;
            assert!(gone.is_err(), "the caller gave up first");
        }
        assert_eq!(pool.stats().waiting.load(Ordering::Relaxed), 0);
        // The five who left do not crowd the next caller out: it queues.
        let next = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.admit(&fresh()).await.map(drop) })
        };
        all_queued(&pool, std::slice::from_ref(&next)).await;
        drop(held);
        assert_eq!(next.await.unwrap(), Ok(()));
        assert!(pool.admit(&fresh()).await.is_ok());
        assert_eq!(pool.stats().waiting.load(Ordering::Relaxed), 0);
    }

    /// Fair between accounts: an account holds one permit at a time. Its second call waits
    /// for the first to be done while other accounts are admitted beside it, and no account
    /// is remembered once its calls are done.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_account_holds_one_permit_at_a_time() {
        let pool = Hasher::new(2, small(), Duration::from_secs(10)).unwrap();
        let first = pool.admit("looper").await.unwrap();
        let second = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.admit("looper").await })
        };
        let others = (
            pool.admit("ann").await.unwrap(),
            pool.admit("bob").await.unwrap(),
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!second.is_finished(), "the account's second call waits");
        assert_eq!(
            pool.in_use(),
            3,
            "one permit is free, but not for the looper"
        );
        assert_eq!(pool.accounts_in_flight(), 3);
        drop(first);
        let second = second.await.unwrap().unwrap();
        assert_eq!(pool.in_use(), 3);
        drop((second, others));
        assert_eq!(pool.in_use(), 0);
        assert_eq!(pool.accounts_in_flight(), 0, "nothing is remembered");
    }

    /// An account whose call holds its permit beyond the admission wait has its next call
    /// refused (`OVERLOADED`, counted); one that gave up waiting leaves nothing behind.
    #[tokio::test]
    async fn an_accounts_second_call_is_refused_after_the_admission_wait() {
        let pool = Hasher::new(2, small(), Duration::from_millis(20)).unwrap();
        let first = pool.admit("looper").await.unwrap();
        assert_eq!(pool.admit("looper").await.unwrap_err(), Error::Overloaded);
        assert_eq!(pool.stats().rejected.load(Ordering::Relaxed), 1);
        assert!(
            !pool.overloaded(),
            "one account waiting on itself does not make the pool overloaded for others"
        );
        let gone = tokio::time::timeout(Duration::from_millis(5), pool.admit("looper")).await;
        assert!(gone.is_err(), "the caller gave up first");
        assert_eq!(pool.accounts_in_flight(), 1, "only the holder's");
        assert!(
            pool.admit("ann").await.is_ok(),
            "other accounts are admitted"
        );
        drop(first);
        assert_eq!(pool.accounts_in_flight(), 0);
        drop(pool.admit("looper").await.unwrap());
        assert_eq!(pool.accounts_in_flight(), 0);
    }

    /// However the calls of a few accounts interleave across threads (admitted, refused,
    /// dropped at once), no account is remembered once they are all done.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_gate_is_left_behind_however_calls_interleave() {
        let pool = Hasher::new(2, small(), Duration::from_millis(2)).unwrap();
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..4_000 {
            let pool = pool.clone();
            calls.spawn(async move {
                if let Ok(permit) = pool.admit(&format!("account-{}", n % 3)).await {
                    tokio::task::yield_now().await;
                    drop(permit);
                }
            });
        }
        while calls.join_next().await.is_some() {}
        assert_eq!(pool.accounts_in_flight(), 0);
        assert_eq!(pool.in_use(), 0);
    }

    #[tokio::test]
    async fn a_full_pool_answers_overloaded_after_the_admission_wait() {
        let hasher = Hasher::new(1, small(), Duration::from_millis(20)).unwrap();
        let first = hasher.admit(&fresh()).await.unwrap();
        let _second = hasher.admit(&fresh()).await.unwrap();
        let started = std::time::Instant::now();
        assert_eq!(hasher.admit(&fresh()).await.unwrap_err(), Error::Overloaded);
        // Refused after the short wait, never left waiting (a generous bound: no timing test).
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(hasher.stats().rejected.load(Ordering::Relaxed), 1);
        drop(first);
        assert!(
            hasher.admit(&fresh()).await.is_ok(),
            "a released permit admits the next call"
        );
    }
}
