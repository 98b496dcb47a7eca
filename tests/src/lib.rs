#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // a test harness: failing loudly is its job
//! Harness for end-to-end tests: starts the real `recovery-service` binary on an ephemeral
//! port with its own SQLite file in a temporary directory, reads the bound address back from
//! its log, and hands out gRPC channels.

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

pub mod nats;
pub mod otlp;
pub mod pki;
pub use recovery_device as device;
pub use recovery_test_support::{PgDatabase, need, pgcluster};
pub mod smtp;

use anyhow::{Context as _, bail};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The server binary: `RECOVERY_BIN` if set, else the one Cargo built beside this test.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("RECOVERY_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<test-binary> -> target/<profile>/recovery-service
    let exe = std::env::current_exe().expect("current test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("recovery-service");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p recovery-service`) or set RECOVERY_BIN",
        bin.display()
    );
    bin
}

/// A running `recovery-service serve`.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its working directory (holds `recovery.db`, the dev key and `mail/`).
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
    /// How long from spawn until the address was logged.
    pub started_in: Duration,
}

/// How to start a server.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Extra environment variables (the child starts from an empty environment plus `PATH`).
    pub env: Vec<(String, String)>,
    /// Extra arguments (before none: `serve` is the default command).
    pub args: Vec<String>,
}

impl Options {
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }
}

impl Server {
    /// Starts with defaults on `127.0.0.1:0` in a fresh directory.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(Options::default())
    }

    /// Starts with `options`, waiting until the server logs its address.
    pub fn start_with(options: Options) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut env = vec![("RECOVERY_LISTEN_ADDR".to_owned(), "127.0.0.1:0".to_owned())];
        env.extend(options.env);
        let started = Instant::now();
        let mut child = spawn(dir.path(), &env, &options.args)?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().context("child stderr")?;
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("[server] {line}");
                    // `addr=IP:PORT` in text logs, `"addr":"IP:PORT"` in JSON logs, on the
                    // line that says the server is serving.
                    let serving = line.contains("serving identity.recovery.v1.RecoveryService");
                    let addr = Some(line.as_str())
                        .filter(|_| serving)
                        .into_iter()
                        .flat_map(str::split_whitespace)
                        .find_map(|word| word.strip_prefix("addr="))
                        .or_else(|| {
                            serving.then_some(())?;
                            line.split("\"addr\":\"")
                                .nth(1)
                                .and_then(|rest| rest.split('"').next())
                        })
                        .and_then(|a| a.trim_matches('"').parse::<SocketAddr>().ok());
                    if let Some(addr) = addr {
                        let _ = tx.send(addr);
                    }
                    log.lock().expect("log lock").push(line);
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait()?;
                bail!(
                    "server did not report its address ({status}); log:\n{}",
                    log.lock().expect("log lock").join("\n")
                );
            }
        };
        Ok(Self {
            child,
            addr,
            dir,
            log,
            started_in: started.elapsed(),
        })
    }

    /// A plaintext channel to the server.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(Endpoint::from_shared(format!("http://{}", self.addr))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?)
    }

    /// Waits until the health service answers SERVING for `service` ("" for the server).
    pub async fn wait_serving(&self, service: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut health = HealthClient::new(self.channel().await?);
        loop {
            let status = health
                .check(HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await
                .map(|r| r.into_inner().status());
            if matches!(status, Ok(ServingStatus::Serving)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("not SERVING after 20 s: {status:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a signal (SIGTERM, SIGINT, SIGKILL, ...).
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, signal)?;
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit (yielding, so that this test's own
    /// connections can answer the server's GOAWAY and close).
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("still running after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Spawns the binary in `dir` with an environment of only `PATH` plus `env`.
pub fn spawn(dir: &Path, env: &[(String, String)], args: &[String]) -> anyhow::Result<Child> {
    let mut command = Command::new(binary());
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Ok(command.spawn()?)
}

/// Runs the binary to completion (e.g. `healthcheck`, `migrate`), answering its exit status,
/// standard output and standard error.
pub fn run(
    dir: &Path,
    env: &[(String, String)],
    args: &[&str],
) -> anyhow::Result<(ExitStatus, String, String)> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let output = spawn(dir, env, &args)?.wait_with_output()?;
    Ok((
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// One message the server wrote to its mail directory (the `.eml` file transport).
#[derive(Debug, Clone)]
pub struct Mail {
    pub file: PathBuf,
    pub to: String,
    pub subject: String,
    pub raw: String,
}

impl Mail {
    /// The 6-digit verification code: the plain-text line that is exactly six digits.
    pub fn code(&self) -> Option<String> {
        self.raw
            .lines()
            .map(str::trim)
            .find(|l| l.len() == 6 && l.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_owned)
    }
}

/// Reads the `.eml` files of a mail directory.
#[derive(Debug)]
pub struct Mailbox {
    dir: PathBuf,
    seen: Mutex<std::collections::BTreeSet<PathBuf>>,
}

impl Mailbox {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            seen: Mutex::new(std::collections::BTreeSet::new()),
        }
    }

    /// Every message not returned before.
    pub fn fresh(&self) -> Vec<Mail> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut seen = self.seen.lock().expect("seen lock");
        let mut out = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "eml") || seen.contains(&path) {
                continue;
            }
            let Ok(raw) = std::fs::read_to_string(&path) else {
                continue;
            };
            // The file transport writes in place: a file read mid-write is left for the next
            // look (a complete multipart message ends with its closing boundary `--…--`).
            if !raw.contains("Subject: ") || !raw.trim_end().ends_with("--") {
                continue;
            }
            let header = |name: &str| {
                raw.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            };
            let mail = Mail {
                to: header("To: "),
                subject: header("Subject: "),
                file: path.clone(),
                raw,
            };
            seen.insert(path);
            out.push(mail);
        }
        out
    }

    /// Waits up to 30 s (generous for a loaded machine) for a new message to `to` whose subject contains `subject`.
    pub async fn wait_for(&self, to: &str, subject: &str) -> anyhow::Result<Mail> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut pending: Vec<Mail> = Vec::new();
        loop {
            pending.extend(self.fresh());
            if let Some(i) = pending
                .iter()
                .position(|m| m.to.contains(to) && m.subject.contains(subject))
            {
                let mail = pending.remove(i);
                // Others stay unseen for later waits.
                let mut seen = self.seen.lock().expect("seen lock");
                for other in &pending {
                    seen.remove(&other.file);
                }
                return Ok(mail);
            }
            if Instant::now() > deadline {
                bail!(
                    "no mail to {to} about {subject:?}; have {:?}",
                    pending
                        .iter()
                        .map(|m| (&m.to, &m.subject))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// A loopback port held for the whole test without a listener: connections to it are
/// refused (a server that is down), and no other process can take it in between, as it
/// could after binding and releasing a port.
#[derive(Debug)]
pub struct ReservedPort {
    socket: tokio::net::TcpSocket,
    pub addr: SocketAddr,
}

impl ReservedPort {
    pub fn new() -> anyhow::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind("127.0.0.1:0".parse()?)?;
        let addr = socket.local_addr()?;
        Ok(Self { socket, addr })
    }

    /// Starts listening on the held port (the server comes up).
    pub fn listen(self) -> std::io::Result<tokio::net::TcpListener> {
        self.socket.listen(128)
    }
}

/// Another well-formed recovery code than `code` (same shape, a valid check character): a
/// wrong code that costs an attempt instead of failing as malformed.
pub fn wrong_recovery_code(code: &str) -> String {
    // Another valid-looking code: flip the first random character and fix nothing else would
    // fail the check character, so derive a fresh one from the alphabet instead.
    let alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let body: String = code[4..].replace('-', "");
    let mut chars: Vec<char> = body.chars().collect();
    let first = alphabet.find(chars[0]).unwrap();
    chars[0] = alphabet.chars().nth((first + 1) % 32).unwrap();
    let random: String = chars[..27].iter().collect();
    // Luhn mod 32 check character over the random part.
    let mut factor = 2;
    let mut sum = 0;
    for c in random.chars().rev() {
        let addend = factor * alphabet.find(c).unwrap();
        factor = if factor == 2 { 1 } else { 2 };
        sum += addend / 32 + addend % 32;
    }
    let check = alphabet.chars().nth((32 - sum % 32) % 32).unwrap();
    format!("RC1-{random}{check}")
}

/// The `ErrorInfo` reason of a status (or a note that it has none).
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_else(|| format!("no ErrorInfo in {status:?}"))
}

/// Creates (or replaces) the account's recovery code; answers the code.
pub async fn enroll(
    c: &mut recovery_proto::v1::recovery_service_client::RecoveryServiceClient<
        tonic::transport::Channel,
    >,
    account: &str,
    email: &str,
) -> String {
    c.create_recovery_code(recovery_proto::v1::CreateRecoveryCodeRequest {
        account_id: account.into(),
        email: email.into(),
    })
    .await
    .expect("CreateRecoveryCode")
    .into_inner()
    .recovery_code
}

/// Waits until the server's health for `identity.recovery.v1.RecoveryService` is `want`;
/// fails the test after `within`.
pub async fn wait_health(
    server: &Server,
    want: tonic_health::pb::health_check_response::ServingStatus,
    within: Duration,
) {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut health = HealthClient::new(server.channel().await.expect("a channel"));
    let deadline = Instant::now() + within;
    loop {
        let status = health
            .check(HealthCheckRequest {
                service: "identity.recovery.v1.RecoveryService".into(),
            })
            .await
            .expect("health answers")
            .into_inner()
            .status();
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "health stayed {status:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The secret key the end-to-end tests start servers with.
pub const TEST_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A started server (with [`TEST_KEY`]), serving, with a client and its mail directory.
#[derive(Debug)]
pub struct Running {
    pub server: Server,
    pub client: recovery_proto::v1::recovery_service_client::RecoveryServiceClient<
        tonic::transport::Channel,
    >,
    pub mail: Mailbox,
}

impl Running {
    /// Starts a server with `options` and the test key; answers once it is serving.
    pub async fn start(options: Options) -> Self {
        let server = Server::start_with(options.env("RECOVERY_SECRET_KEY", TEST_KEY))
            .expect("the server starts");
        server.wait_serving("").await.expect("the server serves");
        let client = recovery_proto::v1::recovery_service_client::RecoveryServiceClient::new(
            server.channel().await.expect("a channel"),
        );
        let mail = Mailbox::new(server.dir.path().join("mail"));
        Self {
            server,
            client,
            mail,
        }
    }
}
