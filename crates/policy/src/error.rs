use std::fmt;

/// Where a policy object or value was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, serde::Serialize)]
pub struct Origin {
    pub file: String,
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One problem in policy-as-code: where, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("{origin}: {field}: {message}")]
pub struct PolicyError {
    pub origin: Origin,
    /// Path of the offending field inside its document, e.g. `rules[2].from[0]`.
    pub field: String,
    pub message: String,
}

impl PolicyError {
    pub fn new(origin: Origin, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            origin,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Every error found, in file order, so that a user fixes them in one pass.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}
