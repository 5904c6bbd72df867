//! The small SQL interface the control store's logic is written against, so that the
//! logic (diffing, auditing, refusals) exists once and only the connections differ.
//!
//! Statements are written once, in the SQL that SQLite and PostgreSQL share, with
//! `?1`-style placeholders (rewritten to `$1` for PostgreSQL). What the two do not
//! share stays out of the statements: `RETURNING id` instead of `last_insert_rowid()`,
//! `CASE` instead of SQLite's two-argument `min`/`max`, arithmetic done in Rust rather
//! than on two untyped parameters. Values travel as [`Val`]: integers, text, bytes and
//! NULL are all the store uses. The schemas differ and live in `schema.rs`.

use std::fmt;

use crate::StoreError;
use crate::error::BackendError;

/// Which SQL a connection speaks, for the few things that are not shared (the schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A parameter or a column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Val {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::Int(v)
    }
}

impl From<u32> for Val {
    fn from(v: u32) -> Self {
        Val::Int(i64::from(v))
    }
}

impl From<bool> for Val {
    fn from(v: bool) -> Self {
        Val::Int(i64::from(v))
    }
}

impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(v.to_string())
    }
}

impl From<&String> for Val {
    fn from(v: &String) -> Self {
        Val::Text(v.clone())
    }
}

impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::Text(v)
    }
}

impl From<&[u8]> for Val {
    fn from(v: &[u8]) -> Self {
        Val::Blob(v.to_vec())
    }
}

impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Self {
        v.map_or(Val::Null, Into::into)
    }
}

/// `args![a, b]`: a parameter list.
macro_rules! args {
    ($($v:expr),* $(,)?) => { &[$($crate::control::sql::Val::from($v)),*][..] };
}
pub(crate) use args;

/// A column that does not hold what the code expects (a bug, or a hand-edited row).
#[derive(Debug)]
pub(crate) struct RowError(pub String);

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RowError {}

/// One result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row(pub Vec<Val>);

impl Row {
    fn at(&self, idx: usize) -> Result<&Val, RowError> {
        self.0
            .get(idx)
            .ok_or_else(|| RowError(format!("no column {idx} in the result")))
    }

    pub fn opt_int(&self, idx: usize) -> Result<Option<i64>, RowError> {
        match self.at(idx)? {
            Val::Null => Ok(None),
            Val::Int(v) => Ok(Some(*v)),
            other => Err(RowError(format!(
                "column {idx} holds {other:?}, not an integer"
            ))),
        }
    }

    pub fn int(&self, idx: usize) -> Result<i64, RowError> {
        self.opt_int(idx)?
            .ok_or_else(|| RowError(format!("column {idx} is NULL, not an integer")))
    }

    /// A non-negative integer (ids, counts).
    pub fn opt_unsigned(&self, idx: usize) -> Result<Option<u64>, RowError> {
        self.opt_int(idx)?
            .map(|v| {
                u64::try_from(v).map_err(|_| RowError(format!("column {idx} is negative ({v})")))
            })
            .transpose()
    }

    pub fn unsigned(&self, idx: usize) -> Result<u64, RowError> {
        self.opt_unsigned(idx)?
            .ok_or_else(|| RowError(format!("column {idx} is NULL, not an integer")))
    }

    pub fn bool(&self, idx: usize) -> Result<bool, RowError> {
        Ok(self.int(idx)? != 0)
    }

    pub fn opt_text(&self, idx: usize) -> Result<Option<String>, RowError> {
        match self.at(idx)? {
            Val::Null => Ok(None),
            Val::Text(v) => Ok(Some(v.clone())),
            other => Err(RowError(format!("column {idx} holds {other:?}, not text"))),
        }
    }

    pub fn text(&self, idx: usize) -> Result<String, RowError> {
        self.opt_text(idx)?
            .ok_or_else(|| RowError(format!("column {idx} is NULL, not text")))
    }
}

/// A connection, or a transaction on one. Statements use `?N` placeholders.
pub(crate) trait Db {
    fn dialect(&self) -> Dialect;
    /// Runs one statement; returns the rows it changed.
    fn exec(&mut self, sql: &str, args: &[Val]) -> Result<u64, BackendError>;
    /// Runs one statement; returns its rows.
    fn query(&mut self, sql: &str, args: &[Val]) -> Result<Vec<Row>, BackendError>;
    /// Runs several statements without parameters (schema migrations).
    fn batch(&mut self, sql: &str) -> Result<(), BackendError>;
}

pub(crate) type RowMap<T> = fn(&Row) -> Result<T, RowError>;

fn failed(context: &'static str) -> impl FnOnce(BackendError) -> StoreError {
    move |source| StoreError::Backend { context, source }
}

fn bad_row(context: &'static str) -> impl Fn(RowError) -> StoreError {
    move |e| StoreError::Backend {
        context,
        source: Box::new(e),
    }
}

pub(crate) fn exec(
    db: &mut dyn Db,
    context: &'static str,
    sql: &str,
    args: &[Val],
) -> Result<u64, StoreError> {
    db.exec(sql, args).map_err(failed(context))
}

pub(crate) fn all<T>(
    db: &mut dyn Db,
    context: &'static str,
    sql: &str,
    args: &[Val],
    map: RowMap<T>,
) -> Result<Vec<T>, StoreError> {
    db.query(sql, args)
        .map_err(failed(context))?
        .iter()
        .map(|r| map(r).map_err(bad_row(context)))
        .collect()
}

pub(crate) fn one<T>(
    db: &mut dyn Db,
    context: &'static str,
    sql: &str,
    args: &[Val],
    map: RowMap<T>,
) -> Result<Option<T>, StoreError> {
    let rows = db.query(sql, args).map_err(failed(context))?;
    rows.first()
        .map(|r| map(r).map_err(bad_row(context)))
        .transpose()
}

/// The first column of the only row `sql` returns, as an integer: `count(*)`,
/// `EXISTS (…)` (a boolean in PostgreSQL, an integer in SQLite) or `RETURNING id`.
pub(crate) fn int(
    db: &mut dyn Db,
    context: &'static str,
    sql: &str,
    args: &[Val],
) -> Result<i64, StoreError> {
    one(db, context, sql, args, |r| r.int(0))?.ok_or_else(|| StoreError::Backend {
        context,
        source: "the statement returned no row".into(),
    })
}

/// Rewrites `?N` placeholders as PostgreSQL's `$N`. The store's statements have no
/// `?` anywhere else (no string literal holds one).
pub(crate) fn postgres_placeholders(sql: &str) -> String {
    sql.replace('?', "$")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten() {
        assert_eq!(
            postgres_placeholders("SELECT a FROM t WHERE b = ?1 AND c > ?12"),
            "SELECT a FROM t WHERE b = $1 AND c > $12"
        );
    }

    #[test]
    fn rows_convert_or_say_why_not() {
        let r = Row(vec![Val::Int(-1), Val::Null, Val::Text("x".into())]);
        assert_eq!(r.int(0).unwrap(), -1);
        assert!(r.unsigned(0).unwrap_err().0.contains("negative"));
        assert_eq!(r.opt_int(1).unwrap(), None);
        assert!(r.text(1).unwrap_err().0.contains("NULL"));
        assert_eq!(r.text(2).unwrap(), "x");
        assert!(r.int(2).is_err());
        assert!(r.int(3).unwrap_err().0.contains("no column 3"));
    }
}
