//! Secret-bearing settings: where the key ring comes from, and URLs that may carry a
//! password. Both redact themselves in `Debug` and `Display`.

use std::{fmt, path::PathBuf};

use zeroize::Zeroizing;

use crate::crypto::KeyRing;

/// Where the server key ring comes from, decided once at start.
#[derive(Debug)]
pub enum KeySource {
    /// `RECOVERY_SECRET_KEY` or `RECOVERY_SECRET_KEY_FILE`.
    Configured(KeyRing),
    /// Development default: a generated key in a 0600 file beside the SQLite database.
    DevFile(PathBuf),
    /// Development default for an in-memory database: a key that lives as long as the process.
    Ephemeral,
}

/// A URL that may carry a password (`postgres://user:pass@host/db`, `smtp://u:p@host`):
/// shown with the password replaced.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(Zeroizing<String>);

impl SecretUrl {
    pub fn new(url: String) -> Self {
        Self(Zeroizing::new(url))
    }

    /// The full URL, password included, for the one place that connects with it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***` (each URL of a comma-separated list, as
    /// NATS takes them).
    pub fn redacted(&self) -> String {
        if self.0.contains(',') {
            return self
                .0
                .split(',')
                .map(|one| Self::new(one.to_owned()).redacted())
                .collect::<Vec<_>>()
                .join(",");
        }
        match url::Url::parse(&self.0) {
            Ok(mut url) if url.password().is_some() => {
                // Setting a password fails only for URLs that cannot have one.
                let _ = url.set_password(Some("***"));
                url.to_string()
            }
            // NATS: a user without a password is a token (`nats://TOKEN@host`): hidden too.
            Ok(mut url) if !url.username().is_empty() && matches!(url.scheme(), "nats" | "tls") => {
                let _ = url.set_username("***");
                url.to_string()
            }
            Ok(url) => url.to_string(),
            // Not a URL we can parse (e.g. `sqlite::memory:`): no password to hide, but keep
            // anything after an `@` out of sight all the same.
            Err(_) => match self.0.split_once('@') {
                Some((_, host)) => format!("***@{host}"),
                None => self.0.to_string(),
            },
        }
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_redact_themselves() {
        let url = SecretUrl::new("postgres://app:hunter2@db:5432/recovery".into());
        for shown in [format!("{url:?}"), url.to_string()] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("db:5432"), "{shown}");
        }
        assert_eq!(url.expose(), "postgres://app:hunter2@db:5432/recovery");
    }
}
