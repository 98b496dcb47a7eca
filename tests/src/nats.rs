//! A real `nats-server -js` for a test: its own port and its own store directory, stopped
//! (and restarted on the same port and store) at will, killed when dropped.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, bail};

/// A running (or stopped) NATS server with JetStream.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    /// Extra arguments (e.g. `--user`, `--pass`), kept across restarts.
    args: Vec<String>,
    /// Its client port (kept across restarts).
    pub port: u16,
    /// Its JetStream store (kept across restarts).
    pub store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts one on a free port (`nats-server` picks it: `-p -1`).
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    /// Starts one with extra arguments, e.g. `["--user", "svc", "--pass", "secret"]`.
    pub fn start_with(args: &[&str]) -> anyhow::Result<Self> {
        crate::need(
            "nats-server with JetStream (apt install nats-server)",
            Command::new("nats-server").arg("--version"),
        );
        let store = tempfile::tempdir()?;
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let (child, port) = spawn(store.path(), None, &args)?;
        Ok(Self {
            child: Some(child),
            args,
            port,
            store,
        })
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGKILL: as abrupt as an outage) and waits for the process to end.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let (child, _) = spawn(self.store.path(), Some(self.port), &self.args)?;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(
    store: &std::path::Path,
    port: Option<u16>,
    args: &[String],
) -> anyhow::Result<(Child, u16)> {
    let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
    let mut child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port_arg, "-sd"])
        .arg(store)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start nats-server (is it installed? apt install nats-server)")?;
    let stderr = child.stderr.take().context("nats-server stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // `[INF] Listening for client connections on 127.0.0.1:PORT`
            if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                let port = addr.rsplit(':').next().and_then(|p| p.trim().parse().ok());
                let _ = tx.send(port);
            }
            if line.contains("Server is ready") {
                let _ = tx.send(None);
            }
        }
    });
    let mut found = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(Some(p)) => found = Some(p),
            Ok(None) if found.is_some() => break,
            Ok(None) => {}
            Err(_) => {
                let _ = child.kill();
                bail!("nats-server did not become ready");
            }
        }
    }
    Ok((child, found.unwrap_or_default()))
}
