//! `--spawn`: starts recovery-service on a free loopback port in a temp directory, waits for
//! SERVING, reads its memory from /proc, and kills it when dropped (also on Ctrl-C or panic).

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::{
    cli::{Args, SpawnMail},
    client::Target,
};

/// A running service the tool started.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    /// Where mail goes with `--spawn-mail files`.
    pub mail_dir: Option<PathBuf>,
    pub info: SpawnInfo,
}

/// What the report says about the spawned service.
#[derive(Debug, Clone, Serialize)]
pub struct SpawnInfo {
    pub binary: String,
    pub database: String,
    pub mail: String,
    pub spawn_to_serving_ms: f64,
    pub idle_rss_kib: Option<u64>,
    pub peak_rss_kib: Option<u64>,
}

/// The binary: `--service-bin`, else `recovery-service` beside this executable.
fn binary(args: &Args) -> anyhow::Result<PathBuf> {
    let path = match &args.spawn.service_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("cannot find this executable")?
            .parent()
            .map(|dir| dir.join("recovery-service"))
            .context("this executable has no directory")?,
    };
    if !path.is_file() {
        bail!(
            "{} not found: build the service into the same target directory first \
             (`cargo build --release -p recovery-service`), or pass --service-bin PATH",
            path.display()
        );
    }
    Ok(path)
}

fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(listener.local_addr()?)
}

/// Starts the service; `smtp_url` is the tool's sink unless `--spawn-mail files`.
pub async fn start(args: &Args, tls: &Target, smtp_url: Option<String>) -> anyhow::Result<Spawned> {
    let bin = binary(args)?;
    let dir = tempfile::Builder::new()
        .prefix("recovery-bench-")
        .tempdir()
        .context("cannot create a temp directory")?;
    let addr = free_loopback_port()?;
    let mut env: Vec<(String, String)> = vec![
        ("RECOVERY_LISTEN_ADDR".into(), addr.to_string()),
        ("RUST_LOG".into(), "warn".into()),
        (
            "RECOVERY_HASH_MEMORY_KIB".into(),
            args.hash.hash_memory_kib.to_string(),
        ),
        (
            "RECOVERY_HASH_ITERATIONS".into(),
            args.hash.hash_iterations.to_string(),
        ),
        (
            "RECOVERY_HASH_PARALLELISM".into(),
            args.hash.hash_parallelism.to_string(),
        ),
        ("RECOVERY_SECRET_KEY".into(), random_key()?),
    ];
    if let Some(threads) = args.hash.hash_threads {
        env.push(("RECOVERY_HASH_THREADS".into(), threads.to_string()));
    }
    let database = match &args.spawn.database_url {
        Some(url) => {
            env.push(("RECOVERY_DATABASE_URL".into(), url.clone()));
            redact(url)
        }
        None => {
            let file = dir.path().join("recovery.db");
            env.push((
                "RECOVERY_DATABASE_URL".into(),
                format!("sqlite://{}?mode=rwc", file.display()),
            ));
            format!("SQLite {}", file.display())
        }
    };
    let (mail, mail_dir) = match (args.spawn.spawn_mail, smtp_url) {
        (SpawnMail::Smtp, Some(url)) => {
            env.push(("RECOVERY_SMTP_URL".into(), url.clone()));
            (format!("SMTP to the tool's sink at {url}"), None)
        }
        _ => {
            let mail = dir.path().join("mail");
            env.push(("RECOVERY_MAIL_DIR".into(), mail.display().to_string()));
            (format!(".eml files in {}", mail.display()), Some(mail))
        }
    };
    env.extend(args.spawn.env.iter().cloned());

    let log = std::fs::File::create(dir.path().join("service.log"))
        .context("cannot create the service's log file")?;
    let started = Instant::now();
    let mut child = Command::new(&bin)
        .arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let pid = child.id().context("the service exited at once")?;
    let target = tls.with_addr(addr);
    let serving = tokio::select! {
        serving = target.wait_serving(Duration::from_secs(60)) => serving,
        exit = child.wait() => Err(anyhow::anyhow!("the service exited: {}", exit.map_or_else(|e| e.to_string(), |s| s.to_string()))),
    };
    if let Err(err) = serving {
        let _ = child.start_kill();
        bail!("{err}\n--- service log ---\n{}", log_tail(dir.path()));
    }
    let spawn_to_serving_ms = started.elapsed().as_secs_f64() * 1e3;
    // Let the start-up settle (first health probe, pool warm-up) before the idle figure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let info = SpawnInfo {
        binary: bin.display().to_string(),
        database,
        mail,
        spawn_to_serving_ms,
        idle_rss_kib: proc_status_kib(pid, "VmRSS"),
        peak_rss_kib: None,
    };
    Ok(Spawned {
        child,
        pid,
        addr,
        dir,
        mail_dir,
        info,
    })
}

impl Spawned {
    /// Resident memory now, KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.pid, "VmRSS")
    }

    /// Peak resident memory so far, KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.pid, "VmHWM")
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The end of its log (for errors).
    pub fn log_tail(&self) -> String {
        log_tail(self.dir.path())
    }

    /// Stops it (SIGKILL) and waits.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// A `VmRSS:`/`VmHWM:` line of /proc/PID/status, in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, field)
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("service.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn random_key() -> anyhow::Result<String> {
    let mut key = [0u8; 32];
    crate::ids::fill_random(&mut key)?;
    Ok(hex::encode(key))
}

/// A URL with its password replaced.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_lines_of_proc_status() {
        let status = "Name:\trecovery-service\nVmHWM:\t   20480 kB\nVmRSS:\t   16000 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(16_000));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(20_480));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        assert!(proc_status_kib(std::process::id(), "VmRSS").is_some());
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgres://u:secret@127.0.0.1/db"),
            "postgres://u:***@127.0.0.1/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
