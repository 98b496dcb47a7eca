//! Where each setting's raw text comes from: built-in defaults, then an optional TOML file
//! (`--config`), then `RECOVERY_*` environment variables, the later winning.
//!
//! Environment values are taken verbatim: a secret key of hex digits must never be read as a
//! number, so no type guessing happens before each setting's own parser runs.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::{Path, PathBuf},
};

use super::ConfigError;

/// The environment variable prefix of every setting.
pub const ENV_PREFIX: &str = "RECOVERY_";

/// Every setting, by its key in the TOML file; its variable is `RECOVERY_` + the key upper-cased.
pub const KEYS: &[&str] = &[
    "listen_addr",
    "database_url",
    "database_url_file",
    "database_max_connections",
    "smtp_url",
    "smtp_password_file",
    "smtp_timeout",
    "mail_dir",
    "mail_from",
    "mail_max_attempts",
    "mail_retry_base",
    "mail_lease",
    "audit_retention",
    "secret_key",
    "secret_key_file",
    "reuse_policy",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "callers",
    "shutdown_grace",
    "log_format",
    "hash_threads",
    "hash_memory_kib",
    "hash_iterations",
    "hash_parallelism",
    "hash_admission_wait",
    "flow_ttl",
    "email_code_ttl",
    "email_code_attempts",
    "recovery_code_attempts",
    "lockout_threshold",
    "lockout_window",
    "lockout_duration",
    "starts_per_email_per_hour",
    "starts_per_ip_per_hour",
    "starts_per_ip_per_minute",
    "address_claims_per_day",
    "creates_per_account_per_hour",
    "contact_invitation",
    "contact_activation",
    "contact_gathering",
    "contact_wait",
    "contact_cooldown",
    "trust_all_callers",
    "health_listen_addr",
    "product_name",
    "support_url",
    "events_url",
    "events_stream",
    "events_credentials_file",
    "events_tls_ca",
];

/// Variables with the prefix that are not settings but are known to the project (tests).
const NOT_SETTINGS: &[&str] = &["RECOVERY_TEST_DATABASE_URL", "RECOVERY_CONFIG"];

/// Where a value came from, for error messages that name what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An environment variable.
    Env(String),
    /// A key of the `--config` file.
    File { path: PathBuf, key: String },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(var) => f.write_str(var),
            Self::File { path, key } => write!(f, "{key} (in {})", path.display()),
        }
    }
}

/// One setting's raw text and where it came from.
#[derive(Clone)]
pub struct Raw {
    pub text: String,
    pub origin: Origin,
}

/// The merged raw settings.
#[derive(Default)]
pub struct Layers {
    values: BTreeMap<&'static str, Raw>,
    /// `RECOVERY_*` variables that name no setting (probably a typo), to warn about.
    pub unknown_env: Vec<String>,
}

impl Layers {
    /// Reads the optional file, then the given environment (`(name, value)` pairs).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut layers = Self::default();
        if let Some(path) = file {
            layers.merge_file(path)?;
        }
        let known: BTreeSet<String> = KEYS.iter().map(|k| env_name(k)).collect();
        for (name, value) in env {
            let Some(suffix) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            match KEYS.iter().find(|k| k.eq_ignore_ascii_case(suffix)) {
                Some(key) if known.contains(&name) => {
                    layers.values.insert(
                        key,
                        Raw {
                            text: value,
                            origin: Origin::Env(name),
                        },
                    );
                }
                _ if NOT_SETTINGS.contains(&name.as_str()) => {}
                _ => layers.unknown_env.push(name),
            }
        }
        Ok(layers)
    }

    fn merge_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let fail = |why: String| ConfigError::new(format!("--config {}", path.display()), why);
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| fail(format!("not valid TOML: {}", e.message())))?;
        for (key, value) in table {
            let Some(known) = KEYS.iter().find(|k| **k == key) else {
                return Err(fail(format!(
                    "unknown setting `{key}` (settings are the RECOVERY_* variable names, lower-cased and without the prefix)"
                )));
            };
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                _ => return Err(fail(format!("`{key}` must be a string or a number"))),
            };
            self.values.insert(
                known,
                Raw {
                    text,
                    origin: Origin::File {
                        path: path.to_owned(),
                        key,
                    },
                },
            );
        }
        Ok(())
    }

    /// The raw value of `key`, if any layer set it to a non-empty value.
    pub fn get(&self, key: &str) -> Option<&Raw> {
        self.values
            .get(key)
            .filter(|raw| !raw.text.trim().is_empty())
    }

    /// Where `key` would be read from: its origin if set, else its environment variable.
    pub fn origin(&self, key: &str) -> Origin {
        self.values
            .get(key)
            .map(|raw| raw.origin.clone())
            .unwrap_or_else(|| Origin::Env(env_name(key)))
    }
}

/// `listen_addr` -> `RECOVERY_LISTEN_ADDR`.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn environment_overrides_the_file_and_keeps_text_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen_addr = \"0.0.0.0:1\"\nshutdown_grace = 5\n").unwrap();
        let layers = Layers::load(
            Some(&path),
            env(&[
                ("RECOVERY_LISTEN_ADDR", "127.0.0.1:2"),
                ("RECOVERY_SECRET_KEY", "0012"),
            ]),
        )
        .unwrap();
        let addr = layers.get("listen_addr").unwrap();
        assert_eq!(addr.text, "127.0.0.1:2");
        assert_eq!(addr.origin, Origin::Env("RECOVERY_LISTEN_ADDR".into()));
        assert_eq!(layers.get("shutdown_grace").unwrap().text, "5");
        assert_eq!(layers.get("secret_key").unwrap().text, "0012");
    }

    #[test]
    fn unknown_file_keys_are_refused_and_unknown_variables_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen_adress = \"x\"\n").unwrap();
        let err = Layers::load(Some(&path), env(&[])).err().unwrap();
        assert!(
            err.to_string().contains("unknown setting `listen_adress`"),
            "{err}"
        );

        let layers = Layers::load(
            None,
            env(&[
                ("RECOVERY_DATABSE_URL", "x"),
                ("RECOVERY_TEST_DATABASE_URL", "y"),
            ]),
        )
        .unwrap();
        assert_eq!(layers.unknown_env, vec!["RECOVERY_DATABSE_URL".to_owned()]);
    }
}
