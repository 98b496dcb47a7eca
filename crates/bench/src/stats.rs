//! Latency histograms (HdrHistogram, microseconds) and counts per outcome label.

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::outcome;

/// Highest latency tracked: a minute (longer calls are recorded as a minute).
const MAX_US: u64 = 60_000_000;

/// One worker's (or a whole phase's) record of calls.
#[derive(Debug, Clone)]
pub struct Recorder {
    all: Histogram<u64>,
    by_label: BTreeMap<String, Histogram<u64>>,
}

impl Recorder {
    /// An empty record: 3 significant digits from 1 µs to a minute.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            all: Histogram::new_with_bounds(1, MAX_US, 3)?,
            by_label: BTreeMap::new(),
        })
    }

    /// An empty histogram shaped like the others.
    fn empty(&self) -> Histogram<u64> {
        Histogram::new_from(&self.all)
    }

    /// Records one call that took `latency` and answered `label`.
    pub fn record(&mut self, latency: Duration, label: &str) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(MAX_US)
            .clamp(1, MAX_US);
        self.all.saturating_record(us);
        if !self.by_label.contains_key(label) {
            let empty = self.empty();
            self.by_label.insert(label.to_owned(), empty);
        }
        if let Some(h) = self.by_label.get_mut(label) {
            h.saturating_record(us);
        }
    }

    /// Adds `other`'s calls to this one.
    pub fn merge(&mut self, other: &Recorder) {
        let _ = self.all.add(&other.all);
        for (label, h) in &other.by_label {
            if !self.by_label.contains_key(label) {
                let empty = self.empty();
                self.by_label.insert(label.clone(), empty);
            }
            if let Some(mine) = self.by_label.get_mut(label) {
                let _ = mine.add(h);
            }
        }
    }

    /// Calls recorded.
    pub fn calls(&self) -> u64 {
        self.all.len()
    }

    /// Calls that answered `label`.
    pub fn count(&self, label: &str) -> u64 {
        self.by_label.get(label).map_or(0, Histogram::len)
    }

    /// Percentiles of every call.
    pub fn latency(&self) -> Latency {
        Latency::of(&self.all)
    }

    /// Percentiles of the calls that answered `label`, if any did.
    pub fn latency_of(&self, label: &str) -> Option<Latency> {
        self.by_label
            .get(label)
            .filter(|h| !h.is_empty())
            .map(Latency::of)
    }

    /// Each label with its count and percentiles.
    pub fn outcomes(&self) -> BTreeMap<String, OutcomeSummary> {
        self.by_label
            .iter()
            .map(|(label, h)| {
                (
                    label.clone(),
                    OutcomeSummary {
                        count: h.len(),
                        reason: outcome::reason(label).map(str::to_owned),
                        latency: Latency::of(h),
                    },
                )
            })
            .collect()
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// One outcome label's share of a phase.
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeSummary {
    pub count: u64,
    /// The `google.rpc.ErrorInfo` reason, when the answer carried one.
    pub reason: Option<String>,
    pub latency: Latency,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_counts_per_label() {
        let mut a = Recorder::new().unwrap();
        for ms in 1..=100u64 {
            a.record(Duration::from_millis(ms), outcome::OK);
        }
        let mut b = Recorder::new().unwrap();
        b.record(Duration::from_millis(500), "RESOURCE_EXHAUSTED/OVERLOADED");
        a.merge(&b);
        assert_eq!(a.calls(), 101);
        assert_eq!(a.count(outcome::OK), 100);
        let all = a.latency();
        assert!((all.p50_ms - 51.0).abs() < 0.1, "{all:?}");
        assert!((all.p99_ms - 100.0).abs() < 0.1, "{all:?}");
        assert!((all.max_ms - 500.0).abs() < 0.5, "{all:?}");
        let ok = a.latency_of(outcome::OK).unwrap();
        assert!((ok.max_ms - 100.0).abs() < 0.1, "{ok:?}");
        assert!(a.latency_of("UNAVAILABLE").is_none());
        let outcomes = a.outcomes();
        assert_eq!(
            outcomes["RESOURCE_EXHAUSTED/OVERLOADED"].reason.as_deref(),
            Some("OVERLOADED")
        );
    }

    #[test]
    fn extreme_latencies_are_clamped_not_lost() {
        let mut r = Recorder::new().unwrap();
        r.record(Duration::ZERO, outcome::OK);
        r.record(Duration::from_secs(3600), outcome::OK);
        assert_eq!(r.calls(), 2);
        assert!(r.latency().max_ms >= 59_000.0);
    }
}
