use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state database {path}: schema migration to version {version} failed: {source}")]
    Migrate {
        path: PathBuf,
        version: u32,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state database: {op} failed: {source}")]
    Sqlite {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "state database is newer (schema {found}) than this corral (schema {supported}); upgrade corral"
    )]
    TooNew { found: u32, supported: u32 },
    #[error("corrupt record {key}: {source}")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode record {key}: {source}")]
    Encode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("write conflict on {key}: it changed since it was read")]
    Conflict { key: String },
    /// The store is closed (shutting down) or its writer stopped: this
    /// process writes no more.
    #[error("the state store is closed ({why}); restart the server")]
    Closed { why: &'static str },
    /// Refused before it reached the disk (an earlier commit it was built
    /// on failed, building it panicked): nothing landed.
    #[error("state write refused, nothing was written: {why}; try again")]
    Refused { why: String },
    /// The backend's commit failed and its revision did not move: nothing
    /// landed.
    #[error("state write failed: {message}")]
    Failed { message: String },
    /// The backend changed under the store (a failed commit may have
    /// landed): memory and disk may disagree until the state is reloaded.
    #[error(
        "the store's backend changed under it (a failed commit may have landed); restart the server to reload the state"
    )]
    Fatal,
    #[error("cannot start the store's threads: {source}")]
    Start {
        #[source]
        source: std::io::Error,
    },
    #[error("the store lock is poisoned: a writer panicked")]
    Poisoned,
}

impl StoreError {
    /// Whether the same write may succeed if tried again (nothing landed
    /// and the store still works); `false` for a closed store, a fatal
    /// error, bad data.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Refused { .. } | StoreError::Failed { .. } | StoreError::Conflict { .. }
        )
    }

    pub(crate) fn sqlite(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
        move |source| StoreError::Sqlite { op, source }
    }
}
