//! A small SMTP sink for tests: real SMTP over TCP on loopback, storing what it receives, and
//! able to refuse (temporarily or for good) or go away and come back on the same port.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::bail;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// How the sink answers `RCPT TO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Accept,
    /// Accepts, but takes this long to answer each message's data.
    Slow(Duration),
    /// `451`: try again later.
    TempFail,
    /// `550`: refused for good.
    PermFail,
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
    pub at: Instant,
}

impl Received {
    /// A header's value (first occurrence).
    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}: ");
        self.data
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().to_owned())
    }

    /// The verification code: the line that is exactly six digits.
    pub fn code(&self) -> Option<String> {
        self.data
            .lines()
            .map(str::trim)
            .find(|l| l.len() == 6 && l.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_owned)
    }
}

/// A running sink.
#[derive(Debug)]
pub struct SmtpSink {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    accept: JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1:0".parse()?).await
    }

    /// Listens on `addr`.
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<Self> {
        Self::start_with(TcpListener::bind(addr).await?)
    }

    /// Listens on a port reserved earlier (see [`crate::ReservedPort`]): the sink comes back
    /// on the port a server already points at, and no other process can have taken it.
    pub async fn start_on_reserved(port: crate::ReservedPort) -> anyhow::Result<Self> {
        Self::start_with(port.listen()?)
    }

    fn start_with(listener: TcpListener) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Mutex::new(Behaviour::Accept));
        let accept = {
            let received = Arc::clone(&received);
            let behaviour = Arc::clone(&behaviour);
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let received = Arc::clone(&received);
                    let behaviour = Arc::clone(&behaviour);
                    tokio::spawn(async move {
                        let _ = session(stream, received, behaviour).await;
                    });
                }
            })
        };
        Ok(Self {
            addr,
            received,
            behaviour,
            accept,
        })
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.behaviour.lock().expect("behaviour lock") = behaviour;
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("received lock").clone()
    }

    /// Waits up to `timeout` for a message matching `pred`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Received) -> bool,
    ) -> anyhow::Result<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.received().into_iter().find(|r| pred(r)) {
                return Ok(found);
            }
            if Instant::now() > deadline {
                bail!(
                    "no matching message within {timeout:?}; have {} message(s)",
                    self.received().len()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops listening (open sessions end when their client hangs up).
    pub fn stop(self) {
        self.accept.abort();
    }

    /// Stops listening but keeps what open sessions still receive readable.
    pub fn stop_listening(&self) {
        self.accept.abort();
    }
}

async fn session(
    stream: TcpStream,
    received: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink.test ESMTP\r\n").await?;
    let mut from = String::new();
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-sink.test\r\n250-8BITMIME\r\n250 SIZE 10000000\r\n"
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            b"250 ok\r\n"
        } else if upper.starts_with("RSET") {
            from.clear();
            to.clear();
            b"250 ok\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = command[10..].trim().to_owned();
            b"250 ok\r\n"
        } else if upper.starts_with("RCPT TO:") {
            match *behaviour.lock().expect("behaviour lock") {
                Behaviour::Accept | Behaviour::Slow(_) => {
                    to.push(command[8..].trim().to_owned());
                    b"250 ok\r\n"
                }
                Behaviour::TempFail => b"451 4.3.0 try again later\r\n",
                Behaviour::PermFail => b"550 5.1.1 no such user\r\n",
            }
        } else if upper == "DATA" {
            write.write_all(b"354 end with .\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                data.push_str(unstuffed);
            }
            let slow = match *behaviour.lock().expect("behaviour lock") {
                Behaviour::Slow(delay) => Some(delay),
                _ => None,
            };
            if let Some(delay) = slow {
                tokio::time::sleep(delay).await;
            }
            received.lock().expect("received lock").push(Received {
                from: std::mem::take(&mut from),
                to: std::mem::take(&mut to),
                data,
                at: Instant::now(),
            });
            b"250 ok queued\r\n"
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            b"502 command not implemented\r\n"
        };
        write.write_all(reply).await?;
    }
}
