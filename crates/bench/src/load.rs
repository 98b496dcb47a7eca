//! Drivers: a closed loop (N clients, each one call at a time, for a fixed time) and an open
//! loop (calls started at a fixed rate whatever the answers take).

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{sync::mpsc, task::JoinSet};
use tonic::Status;

use crate::{outcome, stats::Recorder, ui::Ui};

/// One call, answering only its status.
pub type CallFuture = Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>;

/// What a driver measured.
#[derive(Debug)]
pub struct Measured {
    pub recorder: Recorder,
    /// From the first call's start to the last call's end.
    pub elapsed: Duration,
    /// Set when the inputs ran out before the time was up (after this long).
    pub starved_after: Option<Duration>,
}

/// `concurrency` clients call `next(client)` back to back for `duration`; a client stops early
/// when `next` has no more input (the phase is then "starved").
pub async fn closed_loop<F>(
    ui: &Ui,
    label: &str,
    concurrency: usize,
    duration: Duration,
    next: F,
) -> anyhow::Result<Measured>
where
    F: Fn(usize) -> Option<CallFuture> + Send + Sync + 'static,
{
    let next = Arc::new(next);
    let calls = Arc::new(AtomicU64::new(0));
    let ticker = ui.timed(label, duration, Arc::clone(&calls));
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = JoinSet::new();
    for client in 0..concurrency.max(1) {
        let next = Arc::clone(&next);
        let calls = Arc::clone(&calls);
        let mut recorder = Recorder::new()?;
        workers.spawn(async move {
            let mut starved = false;
            while Instant::now() < deadline {
                let Some(call) = next(client) else {
                    starved = true;
                    break;
                };
                let t = Instant::now();
                let result = call.await;
                recorder.record(t.elapsed(), &outcome::label(&result));
                calls.fetch_add(1, Ordering::Relaxed);
            }
            (recorder, started.elapsed(), starved)
        });
    }
    let mut recorder = Recorder::new()?;
    let mut elapsed = Duration::ZERO;
    let mut starved_after: Option<Duration> = None;
    while let Some(joined) = workers.join_next().await {
        let (r, stopped, starved) = joined.context("a load client stopped")?;
        recorder.merge(&r);
        elapsed = elapsed.max(stopped);
        if starved {
            starved_after = Some(starved_after.map_or(stopped, |s| s.min(stopped)));
        }
    }
    ticker.finish();
    Ok(Measured {
        recorder,
        elapsed,
        starved_after,
    })
}

/// What the open loop offered.
#[derive(Debug)]
pub struct OpenMeasured {
    pub measured: Measured,
    /// Calls started.
    pub started: u64,
    /// Calls not started because `max_in_flight` were outstanding.
    pub skipped: u64,
}

/// Starts `next(n)` at `rate` calls/s for `duration`, each on its own task, with at most
/// `max_in_flight` outstanding; then waits (at most a minute) for the answers.
pub async fn open_loop<F>(
    ui: &Ui,
    label: &str,
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
    next: F,
) -> anyhow::Result<OpenMeasured>
where
    F: Fn(u64) -> CallFuture,
{
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let calls = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let ticker = ui.timed(label, duration, Arc::clone(&calls));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Duration, String)>();
    let started = Instant::now();
    let mut issued = 0u64;
    let mut skipped = 0u64;
    loop {
        let at = started + interval.mul_f64(issued as f64 + skipped as f64);
        if at >= started + duration {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        if in_flight.load(Ordering::Relaxed) >= max_in_flight {
            skipped += 1;
            continue;
        }
        let call = next(issued);
        issued += 1;
        in_flight.fetch_add(1, Ordering::Relaxed);
        let tx = tx.clone();
        let calls = Arc::clone(&calls);
        let in_flight = Arc::clone(&in_flight);
        tokio::spawn(async move {
            let t = Instant::now();
            let result = call.await;
            let _ = tx.send((t.elapsed(), outcome::label(&result)));
            calls.fetch_add(1, Ordering::Relaxed);
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(tx);
    let mut recorder = Recorder::new()?;
    let drain = async {
        while let Some((latency, label)) = rx.recv().await {
            recorder.record(latency, &label);
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(60), drain).await;
    ticker.finish();
    Ok(OpenMeasured {
        measured: Measured {
            recorder,
            elapsed: started.elapsed(),
            starved_after: None,
        },
        started: issued,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_loop_runs_for_its_time_and_reports_starvation() {
        let left = Arc::new(AtomicU64::new(50));
        let measured = closed_loop(&Ui::new(true), "t", 4, Duration::from_secs(5), move |_| {
            left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .ok()
                .map(|_| -> CallFuture { Box::pin(async { Ok(()) }) })
        })
        .await
        .unwrap();
        assert_eq!(measured.recorder.calls(), 50);
        assert!(measured.starved_after.is_some());
        assert!(measured.elapsed < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn an_open_loop_offers_its_rate() {
        let open = open_loop(
            &Ui::new(true),
            "t",
            200.0,
            Duration::from_millis(500),
            1000,
            |n| {
                Box::pin(async move {
                    if n % 2 == 0 {
                        Ok(())
                    } else {
                        Err(Status::unavailable("x"))
                    }
                })
            },
        )
        .await
        .unwrap();
        assert!((90..=101).contains(&open.started), "{}", open.started);
        assert_eq!(open.skipped, 0);
        assert_eq!(open.measured.recorder.calls(), open.started);
        assert!(open.measured.recorder.count("UNAVAILABLE") > 40);
    }
}
