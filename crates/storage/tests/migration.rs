//! Data migrations move existing rows, not only the schema: enrollments written before email
//! lookups were case-folded are found by their folded form afterwards, and addresses that now
//! collide keep their data (the newest takes the folded form).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use recovery_storage::{ConnectOptions, Storage, migration::Migrator};
use sea_orm::{ConnectionTrait as _, Database, DatabaseConnection, Statement};
use sea_orm_migration::MigratorTrait as _;

/// (account, email as stored, lookup as the first release wrote it, updated_at)
const ROWS: &[(&str, &str, &str, i64)] = &[
    ("a", "Ann@Example.com", "Ann@example.com", 1),
    ("b", "ann@example.com", "ann@example.com", 2),
    (
        "c",
        "ÉLISE@bücher.example",
        "ÉLISE@xn--bcher-kva.example",
        3,
    ),
    ("d", "Bob@example.com", "Bob@example.com", 5),
    ("e", "BOB@example.com", "BOB@example.com", 9),
];

async fn stage(db: &DatabaseConnection) {
    Migrator::up(db, Some(1)).await.unwrap();
    for (account, email, lookup, at) in ROWS {
        db.execute_raw(Statement::from_string(
            db.get_database_backend(),
            format!(
                "INSERT INTO recovery_enrollments (account_id, email, email_lookup, code_id, code_hash, hash_key_id, hash_params, generation, created_at, code_created_at, updated_at, use_count) \
                 VALUES ('{account}', '{email}', '{lookup}', 'rc_{account}', '$argon2id$x', 'k1', 'argon2id,m=19456,t=2,p=1', 1, {at}, {at}, {at}, 0)"
            ),
        ))
        .await
        .unwrap();
    }
    Migrator::up(db, None).await.unwrap();
}

async fn check(storage: &Storage) {
    let owner = |lookup: &'static str| async move {
        storage
            .find_enrollment_by_email(lookup)
            .await
            .unwrap()
            .map(|e| (e.account_id, e.email))
    };
    // Already folded: kept. Its unfolded twin (older) keeps its old lookup and its data.
    assert_eq!(
        owner("ann@example.com").await,
        Some(("b".into(), "ann@example.com".into()))
    );
    assert_eq!(
        owner("Ann@example.com").await,
        Some(("a".into(), "Ann@Example.com".into()))
    );
    // Folded, and mail still goes to the address as stored.
    assert_eq!(
        owner("élise@xn--bcher-kva.example").await,
        Some(("c".into(), "ÉLISE@bücher.example".into()))
    );
    // Two unfolded twins: the newest takes the folded form.
    assert_eq!(
        owner("bob@example.com").await,
        Some(("e".into(), "BOB@example.com".into()))
    );
    assert_eq!(
        owner("Bob@example.com").await,
        Some(("d".into(), "Bob@example.com".into()))
    );
    assert!(
        storage.find_enrollment("d").await.unwrap().is_some(),
        "nothing is lost"
    );
}

#[tokio::test]
async fn existing_sqlite_rows_move_to_the_case_folded_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    let db = Database::connect(&url).await.unwrap();
    stage(&db).await;
    db.close().await.unwrap();
    let storage = Storage::connect(&ConnectOptions::new(url)).await.unwrap();
    assert_eq!(
        storage.schema_status().await.unwrap(),
        recovery_storage::SchemaStatus::Current
    );
    check(&storage).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set RECOVERY_TEST_DATABASE_URL, run with -- --include-ignored"]
async fn existing_postgres_rows_move_to_the_case_folded_lookup() {
    let pg = recovery_test_support::PgDatabase::create().await;
    let db = Database::connect(&pg.url).await.unwrap();
    stage(&db).await;
    db.close().await.unwrap();
    let mut options = ConnectOptions::new(pg.url.clone());
    options.max_connections = 2;
    let storage = Storage::connect(&options).await.unwrap();
    assert_eq!(
        storage.schema_status().await.unwrap(),
        recovery_storage::SchemaStatus::Current
    );
    check(&storage).await;
    storage.close().await.unwrap();
}
