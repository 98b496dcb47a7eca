//! Raw argon2id at the service's parameters: the same work one hashing RPC does (a peppered
//! hash into a reused block buffer), on `threads` OS threads for a fixed time.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use serde::Serialize;

/// argon2id cost.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Cost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// One measurement.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RawRate {
    pub threads: usize,
    pub hashes: u64,
    pub seconds: f64,
    pub hashes_per_s: f64,
    /// CPU seconds the hashing threads used.
    pub cpu_seconds: f64,
    /// Hashes per CPU second: what one core does when nothing competes for it.
    pub hashes_per_cpu_s: f64,
}

/// Hashes on `threads` threads for `window`, each thread with its own block buffer and a
/// 32-byte pepper (`Argon2::new_with_secret`), as the service's hashing pool does.
pub async fn measure(cost: Cost, threads: usize, window: Duration) -> anyhow::Result<RawRate> {
    tokio::task::spawn_blocking(move || measure_blocking(cost, threads, window))
        .await
        .context("the argon2 measurement stopped")?
}

fn measure_blocking(cost: Cost, threads: usize, window: Duration) -> anyhow::Result<RawRate> {
    let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, Some(32))
        .map_err(|e| anyhow::anyhow!("invalid argon2id parameters: {e}"))?;
    let mut pepper = [0u8; 32];
    crate::ids::fill_random(&mut pepper)?;
    let started = Instant::now();
    let counts = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|n| {
                let params = params.clone();
                std::thread::Builder::new()
                    .name(format!("raw-argon2-{n}"))
                    .spawn_scoped(scope, move || hash_until(&pepper, params, started + window))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a hashing thread failed"))),
                Err(e) => Err(anyhow::anyhow!("cannot start a hashing thread: {e}")),
            })
            .collect::<anyhow::Result<Vec<(u64, f64)>>>()
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let hashes: u64 = counts.iter().map(|(n, _)| n).sum();
    let cpu_seconds: f64 = counts.iter().map(|(_, cpu)| cpu).sum();
    Ok(RawRate {
        threads: threads.max(1),
        hashes,
        seconds,
        hashes_per_s: hashes as f64 / seconds,
        cpu_seconds,
        hashes_per_cpu_s: hashes as f64 / cpu_seconds.max(1e-3),
    })
}

/// Hashes until `deadline`: the count and the thread's CPU seconds.
fn hash_until(pepper: &[u8; 32], params: Params, deadline: Instant) -> anyhow::Result<(u64, f64)> {
    let cpu_start = crate::cpu::thread_seconds().unwrap_or_default();
    let blocks = params.block_count();
    let argon = Argon2::new_with_secret(pepper, Algorithm::Argon2id, Version::V0x13, params)
        .map_err(|e| anyhow::anyhow!("argon2id: {e}"))?;
    let mut memory = vec![Block::default(); blocks];
    let mut out = [0u8; 32];
    let mut salt = [0u8; 16];
    let mut n = 0u64;
    // A code-sized secret, as the service hashes (the canonical 28-character code).
    let secret = *b"0123456789ABCDEFGHJKMNPQRSTV";
    while Instant::now() < deadline {
        salt[..8].copy_from_slice(&n.to_le_bytes());
        argon
            .hash_password_into_with_memory(&secret, &salt, &mut out, &mut memory)
            .map_err(|e| anyhow::anyhow!("argon2id: {e}"))?;
        n += 1;
    }
    let cpu = crate::cpu::thread_seconds().unwrap_or_default() - cpu_start;
    Ok((n, cpu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cheap_cost_hashes_many_times_per_second() {
        let cost = Cost {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let rate = measure(cost, 2, Duration::from_millis(100)).await.unwrap();
        assert_eq!(rate.threads, 2);
        assert!(rate.hashes > 10, "{rate:?}");
        assert!(rate.hashes_per_s > 0.0);
    }
}
