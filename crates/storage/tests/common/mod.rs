//! Test databases: a fresh SQLite file, or a fresh PostgreSQL schema in the database named by
//! `RECOVERY_TEST_DATABASE_URL`, each migrated, each dropped at the end.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use recovery_storage::{ConnectOptions, Storage};
use sea_orm::{ConnectionTrait as _, Database, DatabaseConnection, Statement};

pub struct TestDb {
    pub storage: Storage,
    postgres: Option<(DatabaseConnection, String)>,
    sqlite_url: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
    let storage = Storage::connect(&ConnectOptions::new(url.clone()))
        .await
        .unwrap();
    storage.migrate().await.unwrap();
    TestDb {
        storage,
        postgres: None,
        sqlite_url: Some(url),
        _dir: Some(dir),
    }
}

/// A fresh schema on the PostgreSQL server of `RECOVERY_TEST_DATABASE_URL` (the test fails,
/// saying how to set it, when it is unset).
pub async fn postgres() -> TestDb {
    let url = recovery_test_support::database_url();
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!(
        "t_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let admin = Database::connect(&url).await.unwrap();
    admin
        .execute_raw(Statement::from_string(
            admin.get_database_backend(),
            format!("CREATE SCHEMA {schema}"),
        ))
        .await
        .unwrap();
    let mut options = ConnectOptions::new(url);
    options.schema = Some(schema.clone());
    options.max_connections = 16;
    let storage = Storage::connect(&options).await.unwrap();
    storage.migrate().await.unwrap();
    TestDb {
        storage,
        postgres: Some((admin, schema)),
        sqlite_url: None,
        _dir: None,
    }
}

impl TestDb {
    /// Runs raw SQL against the test database, bypassing the storage API (to stage states the
    /// API cannot produce). `{schema}.` in `sql` becomes the test schema on PostgreSQL.
    pub async fn execute(&self, sql: &str) {
        match (&self.postgres, &self.sqlite_url) {
            (Some((admin, schema)), _) => {
                admin
                    .execute_raw(Statement::from_string(
                        admin.get_database_backend(),
                        sql.replace("{schema}.", &format!("{schema}.")),
                    ))
                    .await
                    .unwrap();
            }
            (None, Some(url)) => {
                let conn = Database::connect(url).await.unwrap();
                conn.execute_raw(Statement::from_string(
                    conn.get_database_backend(),
                    sql.replace("{schema}.", ""),
                ))
                .await
                .unwrap();
                conn.close().await.unwrap();
            }
            (None, None) => unreachable!("a test database is SQLite or PostgreSQL"),
        }
    }

    /// The number `sql` (a `SELECT COUNT(*) ...`) answers, bypassing the storage API.
    pub async fn count(&self, sql: &str) -> i64 {
        let (conn, sql) = match (&self.postgres, &self.sqlite_url) {
            (Some((_, schema)), _) => (None, sql.replace("{schema}.", &format!("{schema}."))),
            (None, Some(url)) => (
                Some(Database::connect(url).await.unwrap()),
                sql.replace("{schema}.", ""),
            ),
            (None, None) => unreachable!("a test database is SQLite or PostgreSQL"),
        };
        let db = match (&conn, &self.postgres) {
            (Some(conn), _) => conn,
            (None, Some((admin, _))) => admin,
            (None, None) => unreachable!("a test database is SQLite or PostgreSQL"),
        };
        let row = db
            .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
            .await
            .unwrap()
            .unwrap();
        let n: i64 = row.try_get_by_index(0).unwrap();
        if let Some(conn) = conn {
            conn.close().await.unwrap();
        }
        n
    }

    pub async fn teardown(self) {
        self.storage.close().await.unwrap();
        if let Some((admin, schema)) = self.postgres {
            admin
                .execute_raw(Statement::from_string(
                    admin.get_database_backend(),
                    format!("DROP SCHEMA {schema} CASCADE"),
                ))
                .await
                .unwrap();
        }
    }
}

/// Declares each behaviour once and runs it on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = $crate::common::sqlite().await;
                    super::$name(&db).await;
                    db.teardown().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[ignore = "needs PostgreSQL: set RECOVERY_TEST_DATABASE_URL, run with -- --include-ignored"]
                async fn $name() {
                    let db = $crate::common::postgres().await;
                    super::$name(&db).await;
                    db.teardown().await;
                }
            )*
        }
    };
}
