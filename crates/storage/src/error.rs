//! Typed storage errors. The service maps [`StorageError::Unavailable`] to gRPC
//! `UNAVAILABLE`; the others are internal failures whose cause is logged, never returned.

use sea_orm::DbErr;

/// Why a change conflicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    /// The address's lookup form belongs to another enrollment (its unique key): final.
    AddressInUse,
    /// Another unique key: a row another writer inserted first (retrying sees it).
    Duplicate,
    /// A single-use token (a finished enrollment id) was already used: final.
    AlreadyUsed,
    /// A serialization failure or deadlock (40001, 40P01), SQLite's `SQLITE_BUSY_SNAPSHOT`, or
    /// a row that changed under a conditional update: retrying may succeed.
    Transient,
}

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The row the operation needs does not exist.
    #[error("not found")]
    NotFound,
    /// Another writer got there first; `kind` says whether retrying can help.
    #[error("conflict ({kind:?}): {detail}")]
    Conflict { kind: ConflictKind, detail: String },
    /// The database cannot be reached (connection refused or lost, pool exhausted, server
    /// shutting down). Nothing was changed; the call may be retried.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database schema is newer than this build knows (a newer release migrated it).
    #[error(
        "the database schema is newer than this build: it has migrations this binary does not know ({0}); run a release that knows them"
    )]
    SchemaTooNew(String),
    /// Anything else: a bug or an unexpected database answer.
    #[error("database error: {0}")]
    Other(String),
}

impl From<DbErr> for StorageError {
    fn from(err: DbErr) -> Self {
        classify(&err).unwrap_or_else(|| Self::Other(err.to_string()))
    }
}

/// Sorts a sea-orm error into unavailable / conflict, or `None` for everything else.
fn classify(err: &DbErr) -> Option<StorageError> {
    use sea_orm::{ConnAcquireErr, RuntimeErr};
    let runtime = match err {
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout) => {
            return Some(StorageError::Unavailable(
                "connection pool timed out".into(),
            ));
        }
        DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed) => {
            return Some(StorageError::Unavailable("connection closed".into()));
        }
        DbErr::RecordNotFound(_) => return Some(StorageError::NotFound),
        DbErr::Conn(runtime) | DbErr::Exec(runtime) | DbErr::Query(runtime) => runtime,
        _ => return None,
    };
    let RuntimeErr::SqlxError(sqlx_err) = runtime else {
        return None;
    };
    sqlx_unavailable(sqlx_err.as_ref())
        .map(StorageError::Unavailable)
        .or_else(|| {
            sqlx_conflict(sqlx_err.as_ref())
                .map(|(kind, detail)| StorageError::Conflict { kind, detail })
        })
}

/// SQLite's extended result code of a database error (sqlx reports the extended code, e.g.
/// 517 `SQLITE_BUSY_SNAPSHOT`, whose primary code is its low byte, 5 `SQLITE_BUSY`); `None` for
/// another database.
fn sqlite_code(db: &dyn sea_orm::sqlx::error::DatabaseError) -> Option<i32> {
    db.try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>()?;
    db.code()?.parse().ok()
}

/// `SQLITE_BUSY_SNAPSHOT`: a transaction that read an older snapshot tried to write after
/// another connection committed; the transaction must start again.
const SQLITE_BUSY_SNAPSHOT: i32 = 517;

fn sqlx_unavailable(err: &sea_orm::sqlx::Error) -> Option<String> {
    use sea_orm::sqlx::Error;
    match err {
        Error::Io(io) => Some(format!("i/o: {io}")),
        Error::Tls(tls) => Some(format!("tls: {tls}")),
        Error::PoolTimedOut => Some("connection pool timed out".into()),
        Error::PoolClosed => Some("connection pool closed".into()),
        Error::WorkerCrashed => Some("database worker crashed".into()),
        Error::Database(db) => {
            let code = db.code()?;
            let unavailable = if let Some(extended) = sqlite_code(db.as_ref()) {
                // SQLITE_BUSY (5) and SQLITE_LOCKED (6) with any extended code (261
                // BUSY_RECOVERY, 773 BUSY_TIMEOUT, 262 LOCKED_SHAREDCACHE, ...) after the busy
                // timeout; BUSY_SNAPSHOT is a conflict (see `sqlx_conflict`).
                extended != SQLITE_BUSY_SNAPSHOT && matches!(extended & 0xff, 5 | 6)
            } else {
                // PostgreSQL: class 08 connection exceptions, 57P01-57P03 shutdown and
                // start-up, 53300 too many connections.
                code.starts_with("08")
                    || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
            };
            unavailable.then(|| format!("database refused the connection ({code})"))
        }
        _ => None,
    }
}

fn sqlx_conflict(err: &sea_orm::sqlx::Error) -> Option<(ConflictKind, String)> {
    let sea_orm::sqlx::Error::Database(db) = err else {
        return None;
    };
    let kind = if db.is_unique_violation() {
        // PostgreSQL names the constraint; SQLite names the column in its message.
        let address = db.constraint() == Some("ux_enrollments_email_lookup")
            || db.message().contains("recovery_enrollments.email_lookup");
        if address {
            ConflictKind::AddressInUse
        } else {
            ConflictKind::Duplicate
        }
    } else if matches!(db.code().as_deref(), Some("40001" | "40P01"))
        || sqlite_code(db.as_ref()) == Some(SQLITE_BUSY_SNAPSHOT)
    {
        ConflictKind::Transient
    } else {
        return None;
    };
    Some((kind, db.message().to_owned()))
}
