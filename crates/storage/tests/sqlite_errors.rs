//! SQLite's errors are classified by what a caller can do about them, whatever extended result
//! code sqlx reports: a transaction whose snapshot went stale (`SQLITE_BUSY_SNAPSHOT`, 517) is a
//! transient conflict the domain retries, and a database still locked after the busy timeout
//! (`SQLITE_BUSY`) is unavailable. Neither is an internal error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::time::Duration;

use recovery_storage::{ConflictKind, StorageError};
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, TransactionTrait,
};

async fn open(url: &str) -> DatabaseConnection {
    let mut options = sea_orm::ConnectOptions::new(url);
    options
        .max_connections(1)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| o.busy_timeout(Duration::from_millis(50)));
    Database::connect(options).await.unwrap()
}

async fn two_connections() -> (tempfile::TempDir, DatabaseConnection, DatabaseConnection) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let a = open(&url).await;
    a.execute_unprepared("PRAGMA journal_mode=WAL; CREATE TABLE t (n INTEGER NOT NULL)")
        .await
        .unwrap();
    let b = open(&url).await;
    (dir, a, b)
}

#[tokio::test]
async fn a_stale_snapshot_is_a_transient_conflict() {
    let (_dir, a, b) = two_connections().await;
    let txn = a.begin().await.unwrap();
    // The read starts the transaction's snapshot...
    txn.query_all_raw(Statement::from_string(
        DbBackend::Sqlite,
        "SELECT count(*) FROM t",
    ))
    .await
    .unwrap();
    // ...another connection commits...
    b.execute_unprepared("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    // ...and the transaction's write cannot upgrade a snapshot that is no longer the newest.
    let err = StorageError::from(
        txn.execute_unprepared("INSERT INTO t VALUES (2)")
            .await
            .unwrap_err(),
    );
    assert!(
        matches!(
            err,
            StorageError::Conflict {
                kind: ConflictKind::Transient,
                ..
            }
        ),
        "{err:?}"
    );
    txn.rollback().await.unwrap();
    // Nothing stored was lost, and the connection works again.
    a.execute_unprepared("INSERT INTO t VALUES (3)")
        .await
        .unwrap();
    let rows = a
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT n FROM t ORDER BY n",
        ))
        .await
        .unwrap();
    let n: Vec<i64> = rows
        .iter()
        .map(|r| r.try_get_by_index(0).unwrap())
        .collect();
    assert_eq!(n, [1, 3]);
}

#[tokio::test]
async fn a_write_lock_held_past_the_busy_timeout_is_unavailable() {
    let (_dir, a, b) = two_connections().await;
    let txn = a.begin().await.unwrap();
    txn.execute_unprepared("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let err = StorageError::from(
        b.execute_unprepared("INSERT INTO t VALUES (2)")
            .await
            .unwrap_err(),
    );
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
    txn.commit().await.unwrap();
    b.execute_unprepared("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
}
