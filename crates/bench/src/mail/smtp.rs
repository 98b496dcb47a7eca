//! A minimal SMTP sink on loopback: accepts every message, hands verification codes to the
//! [`CodeBook`] and forgets the rest.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use super::{CodeBook, mime};

/// A running sink; stops listening when dropped.
#[derive(Debug)]
pub struct SmtpSink {
    addr: SocketAddr,
    messages: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl SmtpSink {
    /// Listens on `addr` (port 0 for any free port).
    pub async fn start(addr: SocketAddr, codes: Arc<CodeBook>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("the SMTP sink cannot listen on {addr}"))?;
        let addr = listener.local_addr()?;
        let messages = Arc::new(AtomicU64::new(0));
        let accept = {
            let messages = Arc::clone(&messages);
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let codes = Arc::clone(&codes);
                    let messages = Arc::clone(&messages);
                    tokio::spawn(async move {
                        let _ = session(stream, &codes, &messages).await;
                    });
                }
            })
        };
        Ok(Self {
            addr,
            messages,
            accept,
        })
    }

    /// `smtp://ADDR`, for RECOVERY_SMTP_URL.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Messages accepted so far.
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn session(stream: TcpStream, codes: &CodeBook, messages: &AtomicU64) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write.write_all(b"220 recovery-bench ESMTP\r\n").await?;
    let mut recipients: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end();
        let upper = command.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-recovery-bench\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 10000000\r\n"
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            b"250 ok\r\n"
        } else if upper.starts_with("RSET") || upper.starts_with("MAIL FROM:") {
            recipients.clear();
            b"250 ok\r\n"
        } else if upper.starts_with("RCPT TO:") {
            if let Some(address) = command.get(8..).and_then(mime::address_of) {
                recipients.push(address);
            }
            b"250 ok\r\n"
        } else if upper == "DATA" {
            write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            messages.fetch_add(1, Ordering::Relaxed);
            let message = mime::Part::parse(&data);
            if let Some(code) = message.text_plain().as_deref().and_then(mime::find_code) {
                for recipient in recipients.drain(..) {
                    codes.deliver(&recipient, code.clone());
                }
            }
            recipients.clear();
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt as _;

    use super::*;

    #[tokio::test]
    async fn a_message_over_smtp_delivers_its_code_to_the_envelope_recipient() {
        let codes = CodeBook::new();
        let sink = SmtpSink::start("127.0.0.1:0".parse().unwrap(), Arc::clone(&codes))
            .await
            .unwrap();
        let mut client = TcpStream::connect(sink.addr()).await.unwrap();
        client
            .write_all(
                b"EHLO me\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<Ann@Example.com>\r\nDATA\r\n\
To: ann@example.com\r\nSubject: code\r\n\r\nYour code:\r\n..\r\n123456\r\n.\r\nQUIT\r\n",
            )
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.contains("250 ok queued"), "{answer}");
        assert_eq!(
            codes
                .wait("ann@example.com", Duration::from_secs(2))
                .await
                .as_deref(),
            Some("123456")
        );
        assert_eq!(sink.messages(), 1);
        assert!(sink.url().starts_with("smtp://127.0.0.1:"));
    }
}
