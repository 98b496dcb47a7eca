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

    /// The URL with any password replaced by `***`: in the user info, in a query parameter
    /// that carries one (`?password=`, `sslpassword`, a token or a secret), and in each URL of
    /// a comma-separated NATS list. A comma inside a password does not split it: a new URL
    /// starts only where a piece has its own `scheme://`.
    pub fn redacted(&self) -> String {
        let mut urls: Vec<String> = Vec::new();
        for piece in self.0.split(',') {
            match urls.last_mut() {
                Some(last) if !piece.contains("://") => {
                    last.push(',');
                    last.push_str(piece);
                }
                _ => urls.push(piece.to_owned()),
            }
        }
        urls.iter()
            .map(|one| redact_one(one))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Query parameters whose value is a secret.
fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "token", "secret"].iter().any(|s| name.contains(s))
}

fn redact_one(text: &str) -> String {
    // A URL without a host (`weird:user:pass@host`) keeps its "user info" in its path.
    let parsed = url::Url::parse(text)
        .ok()
        .filter(|u| u.has_host() || !text.contains('@'));
    let Some(mut url) = parsed else {
        // Not a URL we can parse (e.g. `sqlite::memory:`): no password to hide, but keep
        // anything before an `@` and any query out of sight all the same.
        let text = text.split_once('?').map_or(text, |(head, _)| head);
        return match text.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => text.to_owned(),
        };
    };
    if url.password().is_some() {
        // Setting a password fails only for URLs that cannot have one.
        let _ = url.set_password(Some("***"));
    } else if !url.username().is_empty() && matches!(url.scheme(), "nats" | "tls") {
        // NATS: a user without a password is a token (`nats://TOKEN@host`): hidden too.
        let _ = url.set_username("***");
    }
    if url
        .query_pairs()
        .any(|(name, _)| is_secret_parameter(&name))
    {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_secret_parameter(&name) {
                    "***".to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
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

    #[test]
    fn every_form_of_password_is_redacted() {
        for (url, shown) in [
            (
                "postgres://app@db/r?password=hunter2&sslmode=require",
                "postgres://app@db/r?password=***&sslmode=require",
            ),
            (
                "postgres://db/r?user=app&sslpassword=hunter2",
                "postgres://db/r?user=app&sslpassword=***",
            ),
            ("postgres://app:hun,ter2@db/r", "postgres://app:***@db/r"),
            (
                "nats://u:p1@a:4222,nats://b:4222,tls://TOKEN@c:4222",
                "nats://u:***@a:4222,nats://b:4222,tls://***@c:4222",
            ),
            ("sqlite::memory:", "sqlite::memory:"),
            ("weird:hunter2@host?password=x", "***@host"),
        ] {
            assert_eq!(SecretUrl::new(url.into()).redacted(), shown, "{url}");
        }
    }
}
