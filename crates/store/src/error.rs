use std::path::PathBuf;

/// The backend's own error, boxed so that no backend type (and no SQL) leaks into the
/// API of this crate.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: BackendError,
    },
    #[error("cannot connect to the {store} at {target}: {source}")]
    Connect {
        /// Which store: "control store" or "flow store".
        store: &'static str,
        /// The database, without credentials.
        target: String,
        #[source]
        source: BackendError,
    },
    #[error(
        "store schema version {found} is newer than this build understands ({supported}); \
         upgrade bulkhead or open another file"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("migrating the store to schema version {version}: {source}")]
    Migrate {
        version: i64,
        #[source]
        source: BackendError,
    },
    /// A backend operation failed; `context` says which.
    #[error("{context}: {source}")]
    Backend {
        context: &'static str,
        #[source]
        source: BackendError,
    },
    /// A stored row does not decode into a summary (edited by hand, or a bug).
    #[error("corrupt flow summary {row}: {what}")]
    Corrupt { row: String, what: String },
    /// The request names something that does not exist (a version to revert to, an
    /// object or workload to delete, a token to revoke).
    #[error("{what} does not exist")]
    NotFound { what: String },
    /// The request is malformed: an unknown object kind, an empty name, a name given
    /// twice in one replacement.
    #[error("invalid request: {what}")]
    Invalid { what: String },
    /// A singleton's write after this server lost the leadership to another: nothing
    /// was written.
    #[error("this server is no longer the leader; the write was refused")]
    Fenced,
    /// The request conflicts with what is stored (a token hash already in use).
    #[error("conflict: {what}")]
    Conflict { what: String },
}

impl StoreError {
    pub(crate) fn backend<E: std::error::Error + Send + Sync + 'static>(
        context: &'static str,
    ) -> impl FnOnce(E) -> StoreError + 'static {
        move |e| StoreError::Backend {
            context,
            source: Box::new(e),
        }
    }
}
