//! API tokens and roles.
//!
//! A token is `bh_` + 64 hex characters of OS randomness, shown once; the store keeps
//! only its SHA-256. Roles: `admin`; `secops` (all policy, all tiers, provisioning);
//! `netops` (reads everything; writes nothing); `app_owner` with a label scope (edits
//! only application-tier rulesets whose scope lies inside its own, and sees only flows
//! and alerts that touch its workloads).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use bulkhead_model::Labels;
use bulkhead_policy::Object;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Secops,
    Netops,
    AppOwner,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "secops" => Ok(Role::Secops),
            "netops" => Ok(Role::Netops),
            "app_owner" => Ok(Role::AppOwner),
            _ => Err(format!(
                "unknown role {s:?} (admin, secops, netops or app_owner)"
            )),
        }
    }
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Secops => "secops",
            Role::Netops => "netops",
            Role::AppOwner => "app_owner",
        }
    }
}

/// Who is calling, as established from their token.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's id, 0 for the server itself.
    pub token_id: u64,
    pub name: String,
    pub role: Role,
    /// For app owners: the labels their workloads carry.
    pub scope: Labels,
    pub source: String,
}

pub fn new_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::Internal(format!("no randomness: {e}")))?;
    Ok(format!("bh_{}", hex::encode(bytes)))
}

pub fn token_hash(token: &str) -> [u8; 32] {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest);
    out
}

fn forbidden(what: &str, p: &Principal) -> ApiError {
    ApiError::Forbidden(format!("role {} may not {what}", p.role.as_str()))
}

impl Principal {
    /// The server itself, for reads it makes on a caller's behalf after a checked write.
    pub fn system() -> Principal {
        Principal {
            token_id: 0,
            name: "bulkhead".into(),
            role: Role::Admin,
            scope: Labels::new(),
            source: "local".into(),
        }
    }

    /// The audit context of an action this caller takes now.
    pub fn audit(&self, action: &str) -> bulkhead_store::control::AuditContext {
        bulkhead_store::control::AuditContext {
            actor: self.actor(),
            source: self.source.clone(),
            at_ms: crate::state::now_ms(),
            action: action.to_string(),
        }
    }

    /// How the audit log names this caller: name, token and role.
    pub fn actor(&self) -> String {
        format!(
            "{} [token {}] ({})",
            self.name,
            self.token_id,
            self.role.as_str()
        )
    }

    fn is(&self, roles: &[Role]) -> bool {
        roles.contains(&self.role)
    }

    pub fn require(&self, roles: &[Role], what: &str) -> Result<(), ApiError> {
        if self.is(roles) {
            Ok(())
        } else {
            Err(forbidden(what, self))
        }
    }

    /// Policy writes: admins and secops anything; app owners only application-tier
    /// rulesets whose scope lies inside their own.
    pub fn may_write_object(&self, o: &Object) -> Result<(), ApiError> {
        match self.role {
            Role::Admin | Role::Secops => Ok(()),
            Role::Netops => Err(forbidden("change policy", self)),
            Role::AppOwner => match o {
                Object::Ruleset(rs)
                    if rs.tier == "application" && rs.scope.includes(&self.scope) =>
                {
                    Ok(())
                }
                Object::Ruleset(rs) if rs.tier != "application" => {
                    Err(ApiError::Forbidden(format!(
                        "app owners edit only rulesets of tier application, not {:?}",
                        rs.tier
                    )))
                }
                Object::Ruleset(_) => Err(ApiError::Forbidden(format!(
                    "the ruleset's scope must include {} (your scope)",
                    self.scope
                ))),
                _ => Err(ApiError::Forbidden(format!(
                    "app owners edit only rulesets, not {}s",
                    o.kind()
                ))),
            },
        }
    }

    /// App owners: the ruleset `name` in `policy` (if there is one) may name as providers
    /// only workloads inside the owner's scope (the data check behind
    /// [`Principal::may_write_object`], which sees one object and not the groups it
    /// names). Checked on the draft before and after a change, so an app owner can
    /// neither write such a rule nor delete or edit one someone else wrote.
    pub fn may_write_rules(
        &self,
        policy: &bulkhead_policy::Policy,
        name: &str,
    ) -> Result<(), ApiError> {
        if self.role != Role::AppOwner {
            return Ok(());
        }
        let Some(rs) = policy.rulesets.iter().find(|r| r.name == name) else {
            return Ok(());
        };
        bulkhead_policy::scope::providers_within(rs, &policy.label_groups, &self.scope).map_err(
            |(path, why)| {
                ApiError::Forbidden(format!(
                    "ruleset {name}: {path}: {why}; app owners may open only connections into their own workloads"
                ))
            },
        )
    }

    /// Whether an app owner may see traffic between these ends.
    pub fn sees(&self, src: &Labels, dst: &Labels) -> bool {
        self.role != Role::AppOwner || src.includes(&self.scope) || dst.includes(&self.scope)
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthenticated)?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or(ApiError::Unauthenticated)?
            .trim();
        let hash = token_hash(token);
        let source = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_else(|| "unknown".into());
        let control = state.control.clone();
        let now = crate::state::now_ms();
        let meta = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
            let mut c = control
                .lock()
                .map_err(|_| ApiError::Internal("control store lock".into()))?;
            let meta = c.token_by_hash(&hash)?;
            if let Some(m) = &meta
                && m.revoked_ms.is_none()
                && m.expires_ms.is_none_or(|e| e > now)
            {
                // At most once a minute per token (the store throttles), so it costs no sync per request.
                c.touch_token(m.id, now)?;
            }
            Ok(meta)
        })
        .await??
        .ok_or(ApiError::Unauthenticated)?;
        if meta.revoked_ms.is_some() || meta.expires_ms.is_some_and(|e| e <= now) {
            return Err(ApiError::Unauthenticated);
        }
        let role: Role = meta.role.parse().map_err(ApiError::Internal)?;
        let scope = match &meta.scope {
            Some(s) => Labels::parse_list(s).map_err(|e| ApiError::Internal(e.to_string()))?,
            None => Labels::new(),
        };
        let principal = Principal {
            token_id: meta.id,
            name: meta.name,
            role,
            scope,
            source,
        };
        if let Some(slot) = parts.extensions.get::<crate::guard::CallerSlot>() {
            slot.set(principal.actor());
        }
        Ok(principal)
    }
}
