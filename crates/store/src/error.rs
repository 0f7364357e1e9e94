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
    #[error("state write failed: {message}")]
    Batch { message: String },
    #[error("the store lock is poisoned: a writer panicked")]
    Poisoned,
}

impl StoreError {
    pub(crate) fn sqlite(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
        move |source| StoreError::Sqlite { op, source }
    }
}
