//! Helpers for tests, shared by `recovery-storage`'s suite and the end-to-end tests in
//! `tests/`: a throwaway PostgreSQL cluster ([`pgcluster`]), a fresh database on the test
//! server ([`PgDatabase`]), and [`need`], which turns a missing prerequisite into a failure
//! that says how to provide it.
//!
//! Tests that need something beyond the Rust toolchain (PostgreSQL, grpcurl, Python's grpcio)
//! are `#[ignore = "needs …"]`: a plain `cargo test --workspace` reports them as ignored, with
//! the reason; `cargo test --workspace -- --include-ignored` (what CI runs) runs them, and
//! then a missing prerequisite fails the test instead of skipping it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

pub mod pgcluster;

use std::process::{Command, Stdio};

/// The variable naming the PostgreSQL database tests may create databases and schemas in.
pub const DATABASE_URL_VAR: &str = "RECOVERY_TEST_DATABASE_URL";

/// How to run the tests that need something installed.
pub const HOW_TO_RUN: &str =
    "run `cargo test --workspace -- --include-ignored` (see README.md, \"Tests\")";

/// Fails the test unless `probe` runs and succeeds; `what` says what to install.
pub fn need(what: &str, probe: &mut Command) {
    let present = probe
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(present, "this test needs {what}; {HOW_TO_RUN}");
}

/// The test PostgreSQL URL; fails the test when it is not set.
pub fn database_url() -> String {
    std::env::var(DATABASE_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "this test needs PostgreSQL: set {DATABASE_URL_VAR}=postgres://USER@HOST:PORT/DB (a database it may create databases and schemas in) and {HOW_TO_RUN}"
        )
    })
}

/// A fresh PostgreSQL database for one test on the server of [`database_url`], dropped at the
/// end.
#[derive(Debug)]
pub struct PgDatabase {
    pub url: String,
    base: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> Self {
        let base = database_url();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "recovery_e2e_{}_{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        pg_exec(&base, &format!("DROP DATABASE IF EXISTS {name}")).await;
        pg_exec(&base, &format!("CREATE DATABASE {name}")).await;
        let (prefix, rest) = base
            .rsplit_once('/')
            .expect("a postgres URL with a database");
        let query = rest
            .split_once('?')
            .map(|(_, q)| format!("?{q}"))
            .unwrap_or_default();
        Self {
            url: format!("{prefix}/{name}{query}"),
            base,
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let base = self.base.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(pg_exec(&base, &sql));
            }
        })
        .join();
    }
}

async fn pg_exec(url: &str, sql: &str) {
    use sea_orm::ConnectionTrait as _;
    let db = sea_orm::Database::connect(url)
        .await
        .expect("connect to the test PostgreSQL");
    db.execute_raw(sea_orm::Statement::from_string(
        db.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .expect("admin statement");
    let _ = db.close().await;
}
