//! Where messages go: an SMTP server through lettre's pooled async transport, or `.eml` files.

use std::path::PathBuf;

use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    transport::smtp::authentication::Credentials,
};

use crate::config::MailTransport;

/// A configured transport.
#[derive(Clone)]
pub enum Transport {
    /// With the server's URL as logs may show it (password removed).
    Smtp(AsyncSmtpTransport<Tokio1Executor>, String),
    Files(AsyncFileTransport<Tokio1Executor>, PathBuf),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Transport({self})")
    }
}

/// As a person reads it in a log line: `SMTP smtp://127.0.0.1:2525`, `.eml files in ./mail`.
impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Smtp(_, url) => write!(f, "SMTP {url}"),
            Self::Files(_, dir) => write!(f, ".eml files in {}", dir.display()),
        }
    }
}

/// Why a send failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// The server refused for good (5xx): retrying cannot help.
    pub permanent: bool,
    pub message: String,
}

impl Transport {
    /// Builds the transport of the configuration. SMTP connects lazily, on first send.
    pub fn from_config(mail: &MailTransport) -> anyhow::Result<Self> {
        match mail {
            MailTransport::Smtp {
                url,
                password_file,
                timeout,
            } => {
                let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                    .map_err(|e| anyhow::anyhow!("RECOVERY_SMTP_URL: {e}"))?
                    .timeout(Some(*timeout));
                if let Some(path) = password_file {
                    let password =
                        zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                            anyhow::anyhow!(
                                "RECOVERY_SMTP_PASSWORD_FILE: cannot read {}: {e}",
                                path.display()
                            )
                        })?);
                    let user = url::Url::parse(url.expose())
                        .map(|u| u.username().to_owned())
                        .unwrap_or_default();
                    builder =
                        builder.credentials(Credentials::new(user, password.trim().to_owned()));
                }
                Ok(Self::Smtp(builder.build(), url.to_string()))
            }
            MailTransport::Files { dir } => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    anyhow::anyhow!("RECOVERY_MAIL_DIR: cannot create {}: {e}", dir.display())
                })?;
                Ok(Self::Files(
                    AsyncFileTransport::<Tokio1Executor>::new(dir),
                    dir.clone(),
                ))
            }
        }
    }

    /// Sends one message. Returns once the server accepted it (or the file is written).
    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        match self {
            Self::Smtp(smtp, _) => smtp.send(message).await.map(drop).map_err(|e| SendError {
                permanent: e.is_permanent(),
                message: e.to_string(),
            }),
            Self::Files(files, _) => files.send(message).await.map(drop).map_err(|e| SendError {
                permanent: false,
                message: e.to_string(),
            }),
        }
    }
}
