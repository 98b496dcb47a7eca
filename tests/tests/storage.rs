//! The binary and its database: `migrate` is idempotent (also from several replicas at once on
//! PostgreSQL), `serve` refuses a schema newer than it knows, SQLite runs in WAL mode.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use recovery_e2e::{PgDatabase, Server, run};
use sea_orm::{ConnectionTrait as _, Database, Statement};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[test]
fn migrate_is_idempotent_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (status, _, stderr) = run(dir.path(), &[], &["migrate"]).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("m20261126_000001_initial_schema"),
        "{stderr}"
    );
    let (status, _, stderr) = run(dir.path(), &[], &["migrate"]).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("up to date"), "{stderr}");
    assert!(dir.path().join("recovery.db").exists());
    assert!(
        !dir.path().join("recovery.db.key").exists(),
        "migrate needs no secret key and makes none"
    );
}

#[tokio::test]
async fn serve_refuses_a_schema_newer_than_it_knows() {
    let dir = tempfile::tempdir().unwrap();
    let (status, _, stderr) = run(dir.path(), &[], &["migrate"]).unwrap();
    assert!(status.success(), "{stderr}");
    let url = format!("sqlite://{}", dir.path().join("recovery.db").display());
    let db = Database::connect(&url).await.unwrap();
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        "INSERT INTO seaql_migrations (version, applied_at) VALUES ('m29990101_000001_from_a_newer_release', 0)",
    ))
    .await
    .unwrap();
    db.close().await.unwrap();

    let env = [("RECOVERY_LISTEN_ADDR".to_owned(), "127.0.0.1:0".to_owned())];
    let (status, _, stderr) = run(dir.path(), &env, &[]).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("newer than this build")
            && stderr.contains("m29990101_000001_from_a_newer_release"),
        "{stderr}"
    );
    let (status, _, stderr) = run(dir.path(), &[], &["migrate"]).unwrap();
    assert_eq!(status.code(), Some(1), "migrate refuses too: {stderr}");
}

#[tokio::test]
async fn the_embedded_database_runs_in_wal_mode() {
    let server = Server::start().unwrap();
    server.wait_serving("").await.unwrap();
    assert!(server.dir.path().join("recovery.db-wal").exists());
    let url = format!(
        "sqlite://{}",
        server.dir.path().join("recovery.db").display()
    );
    let db = Database::connect(&url).await.unwrap();
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "PRAGMA journal_mode",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get_by_index::<String>(0).unwrap(), "wal");
    db.close().await.unwrap();
}

/// Three replicas migrating one fresh PostgreSQL database at once: all succeed, the schema is
/// applied once, and a fourth run finds nothing to do.
#[tokio::test]
#[ignore = "needs PostgreSQL: set RECOVERY_TEST_DATABASE_URL, run with -- --include-ignored"]
async fn replicas_migrating_postgres_at_once_all_succeed() {
    let db = PgDatabase::create().await;
    let url = db.url.clone();
    let env = vec![
        ("RECOVERY_DATABASE_URL".to_owned(), url.clone()),
        ("RECOVERY_SECRET_KEY".to_owned(), KEY.to_owned()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let env = env.clone();
            let dir = dir.path().to_owned();
            std::thread::spawn(move || run(&dir, &env, &["migrate"]).unwrap())
        })
        .collect();
    let mut applied = 0;
    for handle in handles {
        let (status, _, stderr) = handle.join().unwrap();
        assert!(status.success(), "{stderr}");
        applied += usize::from(stderr.contains("applied migrations"));
    }
    assert_eq!(applied, 1, "exactly one replica applies the schema");
    let (status, _, stderr) = run(dir.path(), &env, &["migrate"]).unwrap();
    assert!(
        status.success() && stderr.contains("up to date"),
        "{stderr}"
    );

    drop(db);
}
