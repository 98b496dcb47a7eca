//! Progress on standard error (indicatif), hidden with `--json` or when stderr is no terminal.

use std::{
    io::IsTerminal as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

/// Where progress and notes go.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    bars: bool,
}

impl Ui {
    pub fn new(json: bool) -> Self {
        Self {
            bars: !json && std::io::stderr().is_terminal(),
        }
    }

    /// A note for the person watching (standard error).
    pub fn note(&self, text: &str) {
        eprintln!("{text}");
    }

    fn bar(&self, len: u64, template: &str) -> ProgressBar {
        if !self.bars {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    }

    /// A bar over `duration` that shows the calls counted in `calls` and their rate.
    pub fn timed(&self, label: &str, duration: Duration, calls: Arc<AtomicU64>) -> Ticker {
        let total_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let bar = self.bar(total_ms, "{prefix:>22} [{bar:30}] {msg}");
        bar.set_prefix(label.to_owned());
        let started = Instant::now();
        Ticker::start(bar, move |bar| {
            let elapsed = started.elapsed();
            let n = calls.load(Ordering::Relaxed);
            bar.set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
            bar.set_message(format!(
                "{n} calls, {:.0}/s",
                n as f64 / elapsed.as_secs_f64().max(1e-3)
            ));
        })
    }

    /// A bar towards `target` items counted in `done`.
    pub fn counted(&self, label: &str, target: u64, done: Arc<AtomicU64>) -> Ticker {
        let bar = self.bar(target, "{prefix:>22} [{bar:30}] {pos}/{len} {msg}");
        bar.set_prefix(label.to_owned());
        let started = Instant::now();
        Ticker::start(bar, move |bar| {
            let n = done.load(Ordering::Relaxed);
            bar.set_position(n);
            bar.set_message(format!(
                "{:.0}/s",
                n as f64 / started.elapsed().as_secs_f64().max(1e-3)
            ));
        })
    }
}

/// A bar refreshed ten times a second until finished.
#[derive(Debug)]
pub struct Ticker {
    bar: ProgressBar,
    task: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(bar: ProgressBar, mut update: impl FnMut(&ProgressBar) + Send + 'static) -> Self {
        let task = (!bar.is_hidden()).then(|| {
            let bar = bar.clone();
            tokio::spawn(async move {
                loop {
                    update(&bar);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        });
        Self { bar, task }
    }

    /// Removes the bar.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.bar.finish_and_clear();
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop();
    }
}
