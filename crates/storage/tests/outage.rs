//! A PostgreSQL server that goes away under a running pool: operations answer
//! `StorageError::Unavailable` (never a panic), and the pool recovers once the server is back.
//! Runs against a throwaway cluster this test creates with `initdb` in a temporary directory on
//! its own port, never the machine's shared server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use recovery_storage::{ConnectOptions, Storage, StorageError, model::RateDecision};

/// A private PostgreSQL cluster, stopped when dropped.
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Cluster {
    fn create(bin: PathBuf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            // PostgreSQL refuses to run as root: hand the directory to the postgres user.
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let cluster = Self { bin, dir, port };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        cluster.start();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let output = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        }
        .unwrap();
        assert!(
            output.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    fn stop(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        if data.join("postmaster.pid").exists() {
            let pg_ctl = self.bin.join("pg_ctl");
            let mut command = if is_root() {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(pg_ctl);
                c
            } else {
                Command::new(pg_ctl)
            };
            let _ = command
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_unavailable_and_the_pool_recovers_when_it_returns() {
    let Some(bin) = postgres_bin() else {
        assert!(
            std::env::var("CI").is_err(),
            "PostgreSQL server binaries are required under CI"
        );
        eprintln!("SKIPPED: no PostgreSQL server binaries under /usr/lib/postgresql");
        return;
    };
    let cluster = Cluster::create(bin);
    let mut options = ConnectOptions::new(cluster.url());
    options.max_connections = 4;
    options.connect_timeout = Duration::from_secs(1);
    let storage = Storage::connect(&options).await.unwrap();
    storage.migrate().await.unwrap();
    storage.ping().await.unwrap();
    let hit = |now: i64| storage.hit_rate_limit("ip:203.0.113.7", 60_000, 100, now);
    assert!(matches!(
        hit(0).await.unwrap(),
        RateDecision::Allowed { count: 1 }
    ));

    cluster.stop();
    for attempt in 0..3 {
        let err = storage.ping().await.unwrap_err();
        assert!(err.is_unavailable(), "attempt {attempt}: {err:?}");
        let err = hit(1).await.unwrap_err();
        assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
        assert!(
            !err.to_string().contains("postgres://"),
            "no URL in errors: {err}"
        );
    }

    cluster.start();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match storage.ping().await {
            Ok(()) => break,
            Err(err) if Instant::now() < deadline => {
                assert!(err.is_unavailable(), "{err:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("the pool did not recover: {err:?}"),
        }
    }
    // Data written before the outage is still there, and writes work again.
    assert!(matches!(
        hit(2).await.unwrap(),
        RateDecision::Allowed { count: 2 }
    ));
    storage.close().await.unwrap();
}
