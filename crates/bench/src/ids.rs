//! Run-unique identities: account ids, email addresses and client IP addresses, so that no two
//! calls of a run (or of two runs against the same database) share a rate-limit bucket.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;

/// Addresses in 10.0.0.0/8.
const IPV4_SPACE: u64 = 1 << 24;

/// The run's random prefix and counters.
#[derive(Debug)]
pub struct Ids {
    run: String,
    next: AtomicU64,
    ip_base: u64,
    next_ip: AtomicU64,
}

impl Ids {
    /// A fresh run: 8 random lowercase base32 characters, and a random start in 10.0.0.0/8.
    pub fn new() -> anyhow::Result<Self> {
        let mut seed = [0u8; 8];
        fill_random(&mut seed)?;
        let n = u64::from_le_bytes(seed);
        Ok(Self::with_seed(n))
    }

    /// A run derived from `seed` (for tests).
    pub fn with_seed(seed: u64) -> Self {
        const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
        let run = (0..8)
            .map(|i| char::from(ALPHABET[((seed >> (5 * i)) & 31) as usize]))
            .collect();
        Self {
            run,
            next: AtomicU64::new(0),
            ip_base: (seed >> 40) % IPV4_SPACE,
            next_ip: AtomicU64::new(0),
        }
    }

    /// The run's prefix.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// The next serial number of the run (shared by every kind of identity).
    pub fn serial(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// An account id: `bench-<run>-<kind>-<n>`.
    pub fn account(&self, kind: &str, n: u64) -> String {
        format!("bench-{}-{kind}-{n}", self.run)
    }

    /// An email address: `<kind><n>.<run>@bench.example`.
    pub fn email(&self, kind: &str, n: u64) -> String {
        format!("{kind}{n}.{}@bench.example", self.run)
    }

    /// A fresh IPv4 address in 10.0.0.0/8 (never sent to: it only names a rate-limit bucket);
    /// 16.7 million per run before any repeats.
    pub fn ip(&self) -> String {
        let n = (self.ip_base + self.next_ip.fetch_add(1, Ordering::Relaxed)) % IPV4_SPACE;
        format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
    }
}

/// Fills `buf` from the operating system's random source.
pub fn fill_random(buf: &mut [u8]) -> anyhow::Result<()> {
    use rand::TryRng as _;
    rand::rngs::SysRng
        .try_fill_bytes(buf)
        .context("the operating system's random source failed")
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, net::Ipv4Addr};

    use super::*;

    #[test]
    fn identities_carry_the_run_and_never_repeat() {
        let ids = Ids::with_seed(0x0123_4567_89ab_cdef);
        assert_eq!(ids.run().len(), 8);
        let a = ids.serial();
        let b = ids.serial();
        assert_ne!(a, b);
        assert_eq!(ids.account("c", 7), format!("bench-{}-c-7", ids.run()));
        let email = ids.email("c", 7);
        assert!(email.ends_with("@bench.example") && email.contains(ids.run()));
        assert_ne!(Ids::with_seed(1).run(), Ids::with_seed(2).run());
    }

    #[test]
    fn client_addresses_are_fresh_and_in_10_slash_8() {
        let ids = Ids::with_seed(u64::MAX); // starts at the top of the space: wraps around
        let mut seen = HashSet::new();
        for _ in 0..100_000 {
            let ip: Ipv4Addr = ids.ip().parse().unwrap();
            assert_eq!(ip.octets()[0], 10);
            assert!(seen.insert(ip), "{ip} repeated");
        }
    }
}
