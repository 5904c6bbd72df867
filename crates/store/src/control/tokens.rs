//! API tokens: stored by the SHA-256 of their secret (never the secret), with role,
//! scope and expiry for the server to enforce, revocation and last use recorded here.
//! Every change is audited with the token's metadata, never its hash.

use super::sql::{Db, Row, RowError, Val, all, args, exec, int, one};
use super::{AuditContext, ControlStore, TOKEN_TOUCH_GRANULARITY_MS, insert_audit, to_i64};
use crate::StoreError;

/// A token to create. The server generates the secret and hands over only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub name: String,
    pub role: String,
    pub scope: Option<String>,
    pub hash: [u8; 32],
    pub expires_ms: Option<i64>,
}

/// A stored token, without its hash. Expiry is for the server to enforce; revocation is
/// recorded here.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TokenMeta {
    pub id: u64,
    pub name: String,
    pub role: String,
    pub scope: Option<String>,
    pub created_ms: i64,
    pub created_by: String,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    pub revoked_by: Option<String>,
    pub last_used_ms: Option<i64>,
}

const TOKEN_COLUMNS: &str = "id, name, role, scope, created_ms, created_by, expires_ms, \
    revoked_ms, revoked_by, last_used_ms";

impl ControlStore {
    /// Stores a token and audits it (`token/ID`, after: its metadata as JSON, never the
    /// hash). A hash already stored is [`StoreError::Conflict`].
    pub fn create_token(
        &mut self,
        t: NewToken,
        audit: &AuditContext,
    ) -> Result<TokenMeta, StoreError> {
        if t.name.is_empty() || t.role.is_empty() {
            return Err(StoreError::Invalid {
                what: "a token needs a name and a role".into(),
            });
        }
        self.write("creating a token", |db| {
            let ctx = "creating a token";
            let taken = int(
                db,
                ctx,
                "SELECT EXISTS (SELECT 1 FROM token WHERE hash = ?1)",
                args![&t.hash[..]],
            )?;
            if taken != 0 {
                return Err(StoreError::Conflict {
                    what: "a token with this hash already exists".into(),
                });
            }
            let id = int(
                db,
                ctx,
                "INSERT INTO token (name, role, scope, hash, created_ms, created_by, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
                args![
                    &t.name,
                    &t.role,
                    t.scope.as_deref(),
                    &t.hash[..],
                    audit.at_ms,
                    &audit.actor,
                    t.expires_ms
                ],
            )?;
            let meta = get_token(db, "id = ?1", id.into())?.ok_or_else(|| StoreError::Backend {
                context: ctx,
                source: "the new token is not there".into(),
            })?;
            insert_audit(
                db,
                audit,
                &format!("token/{}", meta.id),
                None,
                Some(&token_json(&meta)),
            )?;
            Ok(meta)
        })
    }

    /// The token whose secret hashes to `hash`, revoked or not: the server checks
    /// `revoked_ms` and `expires_ms`.
    pub fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<TokenMeta>, StoreError> {
        self.query("reading a token", |db| {
            get_token(db, "hash = ?1", Val::from(&hash[..]))
        })
    }

    /// One token by id.
    pub fn token(&self, id: u64) -> Result<Option<TokenMeta>, StoreError> {
        self.query("reading a token", |db| {
            get_token(db, "id = ?1", to_i64(id).into())
        })
    }

    /// Every token, revoked ones included, by id.
    pub fn tokens(&self) -> Result<Vec<TokenMeta>, StoreError> {
        let ctx = "reading tokens";
        self.query(ctx, |db| {
            all(
                db,
                ctx,
                &format!("SELECT {TOKEN_COLUMNS} FROM token ORDER BY id"),
                &[],
                token_row,
            )
        })
    }

    /// Revokes a token: `Ok(true)` if this call revoked it (audited, `token/ID` with
    /// its metadata before and after), `Ok(false)` if it already was (nothing written,
    /// the first revocation stands). An unknown id is [`StoreError::NotFound`].
    pub fn revoke_token(&mut self, id: u64, audit: &AuditContext) -> Result<bool, StoreError> {
        self.write("revoking a token", |db| {
            let Some(before) = get_token(db, "id = ?1", to_i64(id).into())? else {
                return Err(StoreError::NotFound {
                    what: format!("token {id}"),
                });
            };
            if before.revoked_ms.is_some() {
                return Ok(false);
            }
            exec(
                db,
                "revoking a token",
                "UPDATE token SET revoked_ms = ?2, revoked_by = ?3 WHERE id = ?1",
                args![to_i64(id), audit.at_ms, &audit.actor],
            )?;
            let after = TokenMeta {
                revoked_ms: Some(audit.at_ms),
                revoked_by: Some(audit.actor.clone()),
                ..before.clone()
            };
            insert_audit(
                db,
                audit,
                &format!("token/{id}"),
                Some(&token_json(&before)),
                Some(&token_json(&after)),
            )?;
            Ok(true)
        })
    }

    /// Records that token `id` was used at `at_ms`. Not audited, and written only when
    /// the stored time is older than [`TOKEN_TOUCH_GRANULARITY_MS`], so that a request
    /// does not cost a synchronous disk write. Returns whether the token exists.
    pub fn touch_token(&mut self, id: u64, at_ms: i64) -> Result<bool, StoreError> {
        let id = to_i64(id);
        let ctx = "touching a token";
        // Reading first keeps the common case (touched recently) free of a write
        // transaction, which on SQLite would be a disk sync.
        let (exists, stale) = self.query(ctx, |db| {
            one(
                db,
                ctx,
                "SELECT last_used_ms FROM token WHERE id = ?1",
                args![id],
                |r| r.opt_int(0),
            )
            .map(|found| match found {
                None => (false, false),
                Some(last) => (
                    true,
                    last.is_none_or(|t| t <= at_ms - TOKEN_TOUCH_GRANULARITY_MS),
                ),
            })
        })?;
        if stale {
            self.write(ctx, |db| {
                exec(
                    db,
                    ctx,
                    "UPDATE token SET last_used_ms = ?2 WHERE id = ?1
                     AND (last_used_ms IS NULL OR last_used_ms <= ?3)",
                    args![id, at_ms, at_ms - TOKEN_TOUCH_GRANULARITY_MS],
                )
            })?;
        }
        Ok(exists)
    }
}

fn get_token(db: &mut dyn Db, condition: &str, arg: Val) -> Result<Option<TokenMeta>, StoreError> {
    one(
        db,
        "reading a token",
        &format!("SELECT {TOKEN_COLUMNS} FROM token WHERE {condition}"),
        &[arg],
        token_row,
    )
}

fn token_row(r: &Row) -> Result<TokenMeta, RowError> {
    Ok(TokenMeta {
        id: r.unsigned(0)?,
        name: r.text(1)?,
        role: r.text(2)?,
        scope: r.opt_text(3)?,
        created_ms: r.int(4)?,
        created_by: r.text(5)?,
        expires_ms: r.opt_int(6)?,
        revoked_ms: r.opt_int(7)?,
        revoked_by: r.opt_text(8)?,
        last_used_ms: r.opt_int(9)?,
    })
}

fn token_json(t: &TokenMeta) -> String {
    serde_json::json!({
        "id": t.id,
        "name": t.name,
        "role": t.role,
        "scope": t.scope,
        "expires_ms": t.expires_ms,
        "revoked_ms": t.revoked_ms,
        "revoked_by": t.revoked_by,
    })
    .to_string()
}
