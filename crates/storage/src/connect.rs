//! Opening the database, migrating it, and checking that its schema is one this build knows.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, EntityTrait, Statement,
    TransactionTrait,
    sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous},
};
use sea_orm_migration::{MigratorTrait, SchemaManager, seaql_migrations};

use crate::{StorageError, migration::Migrator};

/// Which database engine a [`Storage`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file (or memory).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// How to open the database.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `sqlite://path?mode=rwc`, `sqlite::memory:` or `postgres://…`.
    pub url: String,
    /// Upper bound of the PostgreSQL connection pool. SQLite always uses one connection:
    /// it allows one writer, and a single connection makes every transaction wait its turn
    /// instead of failing with "database is locked".
    pub max_connections: u32,
    /// How long to wait for a new connection to be established.
    pub connect_timeout: Duration,
    /// How long a call waits for a connection from the pool (a free one, or a new one)
    /// before it fails as unavailable: a database that went away costs a caller at most this.
    pub acquire_timeout: Duration,
    /// How long SQLite waits on a lock held by another process before failing.
    pub sqlite_busy_timeout: Duration,
    /// PostgreSQL schema to use (its `search_path`); `None` for the server's default.
    pub schema: Option<String>,
    /// Read-only connections opened beside the one SQLite writer (WAL mode lets them read
    /// while it writes), for reads outside transactions. 0 reads on the writer. Ignored for
    /// in-memory databases (each connection would be its own database) and PostgreSQL.
    pub sqlite_readers: u32,
}

impl ConnectOptions {
    /// Defaults for `url`: 10 PostgreSQL connections, 5 s to connect, 1.5 s to get a
    /// connection from the pool, 5 s SQLite busy timeout, 4 SQLite readers.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            connect_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_millis(1500),
            sqlite_busy_timeout: Duration::from_secs(5),
            schema: None,
            sqlite_readers: 4,
        }
    }
}

/// Where the schema of a database stands relative to this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaStatus {
    /// Every known migration is applied and no unknown one is.
    Current,
    /// These known migrations are not applied yet.
    Pending(Vec<String>),
    /// The database has migrations this build does not know: a newer release migrated it.
    TooNew(Vec<String>),
}

/// A handle on the database: cheap to clone, safe to share between tasks.
#[derive(Debug, Clone)]
pub struct Storage {
    db: DatabaseConnection,
    /// SQLite's read-only pool, where reads outside transactions go; `None`: they go to `db`.
    readers: Option<DatabaseConnection>,
    backend: Backend,
    chain: Option<std::sync::Arc<dyn crate::AuditChainKeys>>,
    personal: Option<std::sync::Arc<dyn crate::PersonalDataKeys>>,
}

impl Storage {
    /// Opens (and for SQLite with `mode=rwc`, creates) the database. SQLite is put in WAL mode
    /// with a busy timeout. Fails with [`StorageError::Unavailable`] when it cannot be reached.
    pub async fn connect(options: &ConnectOptions) -> Result<Self, StorageError> {
        let backend = backend_of(&options.url)?;
        let mut opts = sea_orm::ConnectOptions::new(options.url.clone());
        opts.connect_timeout(options.connect_timeout)
            .acquire_timeout(options.acquire_timeout)
            .sqlx_logging(false);
        let mut reader_options = None;
        match backend {
            Backend::Sqlite => {
                let busy = options.sqlite_busy_timeout;
                opts.max_connections(1)
                    .min_connections(1)
                    // A local file does not hang up: sqlx's ping before every acquire would
                    // be one more hop to the connection's thread per statement.
                    .test_before_acquire(false)
                    // An in-memory database lives as long as its one connection.
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .map_sqlx_sqlite_opts(move |o| {
                        o.journal_mode(SqliteJournalMode::Wal)
                            .synchronous(SqliteSynchronous::Normal)
                            .busy_timeout(busy)
                            .foreign_keys(true)
                            // Deleted rows are overwritten, not left in free pages: what
                            // ForgetAccount removes is gone from the file once the WAL is
                            // checkpointed (at the latest at a clean stop).
                            .pragma("secure_delete", "ON")
                    });
                if options.sqlite_readers > 0 && sqlite_file_path(&options.url).is_some() {
                    let mut read = sea_orm::ConnectOptions::new(options.url.clone());
                    read.connect_timeout(options.connect_timeout)
                        .acquire_timeout(options.acquire_timeout)
                        .sqlx_logging(false)
                        .max_connections(options.sqlite_readers)
                        .min_connections(0)
                        .test_before_acquire(false)
                        // The journal mode is the writer's (WAL persists in the file); a
                        // reader only reads.
                        .map_sqlx_sqlite_opts(move |o| o.read_only(true).busy_timeout(busy));
                    reader_options = Some(read);
                }
            }
            Backend::Postgres => {
                opts.max_connections(options.max_connections.max(1))
                    .min_connections(0)
                    // sqlx pings every connection before handing it out: a round trip per
                    // statement. Only a connection idle long enough to have been cut (by a
                    // database restart, a proxy) is pinged; one cut while busy fails its
                    // statement as unavailable and is dropped.
                    .test_before_acquire_if_idle_for(Duration::from_secs(1))
                    .set_application_name("recovery-service");
                if let Some(schema) = &options.schema {
                    opts.set_schema_search_path(schema.clone());
                }
            }
        }
        let unavailable = |err: sea_orm::DbErr| match StorageError::from(err) {
            // Any failure to open is "cannot reach the database" to the caller.
            StorageError::Other(msg) => StorageError::Unavailable(msg),
            other => other,
        };
        // The writer first: with `mode=rwc` it creates the file the readers open.
        let db = Database::connect(opts).await.map_err(unavailable)?;
        let readers = match reader_options {
            Some(read) => Some(Database::connect(read).await.map_err(unavailable)?),
            None => None,
        };
        Ok(Self {
            db,
            readers,
            backend,
            chain: None,
            personal: None,
        })
    }

    /// This handle with the keys that link each account's audit events into a hash chain.
    /// Without them, events are written unlinked (and a trail with unlinked rows after
    /// linked ones does not verify).
    #[must_use]
    pub fn with_audit_chain(mut self, keys: std::sync::Arc<dyn crate::AuditChainKeys>) -> Self {
        self.chain = Some(keys);
        self
    }

    pub(crate) fn audit_chain(&self) -> Option<&dyn crate::AuditChainKeys> {
        self.chain.as_deref()
    }

    /// This handle with the keys that seal the personal details of each account's audit
    /// events under a data key of that account (destroyed when it is forgotten). Without
    /// them, those details are written in clear.
    #[must_use]
    pub fn with_personal_data(mut self, keys: std::sync::Arc<dyn crate::PersonalDataKeys>) -> Self {
        self.personal = Some(keys);
        self
    }

    pub(crate) fn personal_data(&self) -> Option<&dyn crate::PersonalDataKeys> {
        self.personal.as_deref()
    }

    /// The sea-orm connection, for the operations of this crate.
    pub(crate) fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The connection for a read outside a transaction: one of SQLite's read-only
    /// connections (a read never waits for the writer), else [`Self::db`]. A read here sees
    /// every transaction committed before it started.
    pub(crate) fn reader(&self) -> &DatabaseConnection {
        self.readers.as_ref().unwrap_or(&self.db)
    }

    /// The engine behind this handle.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A cheap round trip: `Ok` when the database answers.
    pub async fn ping(&self) -> Result<(), StorageError> {
        // The writer, and SQLite's readers: either failing means calls fail.
        for db in std::iter::once(&self.db).chain(&self.readers) {
            db.query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT 1",
            ))
            .await?;
        }
        Ok(())
    }

    /// Where the schema stands. Reads only; never creates anything.
    pub async fn schema_status(&self) -> Result<SchemaStatus, StorageError> {
        schema_status(&self.db).await
    }

    /// Applies every pending migration and answers their names. Idempotent. Refuses a
    /// database whose schema is newer than this build. On PostgreSQL the whole run holds a
    /// transaction-scoped advisory lock, so replicas that start together migrate once.
    pub async fn migrate(&self) -> Result<Vec<String>, StorageError> {
        let txn = self.db.begin().await?;
        if self.backend == Backend::Postgres {
            // A fixed key: the advisory lock of "recovery-service migrations".
            txn.execute_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock(8274201611)",
            ))
            .await?;
        }
        let applied = match schema_status(&txn).await? {
            SchemaStatus::Current => Vec::new(),
            SchemaStatus::TooNew(unknown) => {
                return Err(StorageError::SchemaTooNew(unknown.join(", ")));
            }
            SchemaStatus::Pending(pending) => {
                Migrator::up(&txn, None).await?;
                pending
            }
        };
        txn.commit().await?;
        Ok(applied)
    }

    /// Closes every pooled connection.
    pub async fn close(self) -> Result<(), StorageError> {
        if let Some(readers) = self.readers {
            readers.close().await?;
        }
        self.db.close().await?;
        Ok(())
    }
}

async fn schema_status<C>(db: &C) -> Result<SchemaStatus, StorageError>
where
    C: ConnectionTrait,
    for<'a> &'a C: sea_orm::IntoDatabaseExecutor<'a>,
{
    let table = Migrator::migration_table_name().to_string();
    let applied: BTreeSet<String> = if SchemaManager::new(db).has_table(&table).await? {
        seaql_migrations::Entity::find()
            .all(db)
            .await?
            .into_iter()
            .map(|m| m.version)
            .collect()
    } else {
        BTreeSet::new()
    };
    let known: Vec<String> = Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    let unknown: Vec<String> = applied
        .iter()
        .filter(|v| !known.contains(v))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Ok(SchemaStatus::TooNew(unknown));
    }
    let pending: Vec<String> = known.into_iter().filter(|v| !applied.contains(v)).collect();
    Ok(if pending.is_empty() {
        SchemaStatus::Current
    } else {
        SchemaStatus::Pending(pending)
    })
}

/// Which engine a database URL names.
fn backend_of(url: &str) -> Result<Backend, StorageError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(StorageError::Other(
            "unsupported database url: expected sqlite://… or postgres://…".into(),
        ))
    }
}

/// The file a `sqlite://` URL points at, if any (`None` for in-memory databases and
/// non-SQLite URLs). Relative paths are relative to the working directory.
pub fn sqlite_file_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty()
        || path == ":memory:"
        || rest.contains("mode=memory")
        || (path.starts_with("file:") && path.contains(":memory:"))
    {
        return None;
    }
    Some(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_are_read_from_urls() {
        assert_eq!(sqlite_file_path("sqlite:file::memory:?cache=shared"), None);
        assert_eq!(sqlite_file_path("sqlite::memory:"), None);
        assert_eq!(
            sqlite_file_path("sqlite://recovery.db?mode=rwc"),
            Some(PathBuf::from("recovery.db"))
        );
        assert_eq!(
            sqlite_file_path("sqlite:///var/lib/r.db"),
            Some(PathBuf::from("/var/lib/r.db"))
        );
        assert_eq!(sqlite_file_path("sqlite::memory:"), None);
        assert_eq!(sqlite_file_path("postgres://localhost/x"), None);
    }
}
