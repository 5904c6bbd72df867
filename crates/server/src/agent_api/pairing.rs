//! Pairing profiles: what an enrollment key may become.

use super::*;

/// A new pairing profile, with its key (shown once).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PairingCreated {
    pub profile: bulkhead_store::control::PairingProfile,
    /// The key, with the CA fingerprint after a colon when the agent listener is on.
    pub pairing_key: String,
    pub ca_fingerprint: Option<String>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PairingProfileList {
    pub items: Vec<bulkhead_store::control::PairingProfile>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairingRequest {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// idle, monitor or enforced [default: monitor].
    pub mode: Option<String>,
    /// How many agents may enroll with the key [default: unlimited].
    pub max_uses: Option<u32>,
    /// [default: 7].
    pub expires_in_days: Option<u32>,
    /// The one workload the key may enroll as (new, or adopted if it exists).
    pub workload: Option<String>,
    /// `k=v,…`: existing workloads carrying these labels may be adopted with the key;
    /// the profile's labels must include it, so the workloads it creates fall inside.
    pub scope: Option<String>,
}

fn checked_profile(req: &PairingRequest, now: i64) -> ApiResult<NewPairingProfile> {
    bulkhead_model::validate_name(&req.name).map_err(|e| ApiError::invalid("name", e))?;
    let mut labels = Labels::new();
    for (k, v) in &req.labels {
        let label = bulkhead_model::Label::new(k, v)
            .map_err(|e| ApiError::invalid(format!("labels.{k}"), e.to_string()))?;
        labels
            .insert(label)
            .map_err(|e| ApiError::invalid(format!("labels.{k}"), e.to_string()))?;
    }
    let mode = match &req.mode {
        None => EnforcementMode::Monitor,
        Some(m) => m
            .parse()
            .map_err(|e: String| ApiError::invalid("mode", e))?,
    };
    if req.max_uses == Some(0) {
        return Err(ApiError::invalid("max_uses", "must be at least 1"));
    }
    let days = req.expires_in_days.unwrap_or(7);
    if !(1..=3650).contains(&days) {
        return Err(ApiError::invalid("expires_in_days", "must be 1 to 3650"));
    }
    if let Some(w) = &req.workload {
        bulkhead_model::validate_name(w).map_err(|e| ApiError::invalid("workload", e))?;
    }
    let scope = match &req.scope {
        None => None,
        Some(text) => {
            let scope =
                Labels::parse_list(text).map_err(|e| ApiError::invalid("scope", e.to_string()))?;
            if scope.is_empty() {
                return Err(ApiError::invalid(
                    "scope",
                    "must name at least one label (omit it for a key that only creates new workloads)",
                ));
            }
            if !labels.includes(&scope) {
                return Err(ApiError::invalid(
                    "scope",
                    format!(
                        "the profile's labels must include its scope {scope}, so the workloads it creates fall inside it"
                    ),
                ));
            }
            Some(scope)
        }
    };
    if req.workload.is_some() && scope.is_some() {
        return Err(ApiError::invalid(
            "scope",
            "a profile binds either one workload or a label scope, not both",
        ));
    }
    Ok(NewPairingProfile {
        name: req.name.clone(),
        labels,
        mode,
        max_uses: req.max_uses,
        expires_at_ms: Some(now + i64::from(days) * 86_400_000),
        workload: req.workload.clone(),
        scope,
    })
}

#[utoipa::path(
    post,
    path = "/api/v1/pairing-profiles",
    tag = "agents",
    summary = "Create a pairing profile (its key is shown once)",
    request_body = PairingRequest,
    responses((status = 201, description = "the profile and its key, shown once", body = PairingCreated))
)]
pub async fn create_pairing_profile(
    State(s): State<AppState>,
    p: Principal,
    Json(body): Json<Value>,
) -> ApiResult<(StatusCode, Json<PairingCreated>)> {
    p.require(&[Role::Admin, Role::Secops], "create pairing profiles")?;
    let req: PairingRequest = parse_body(body)?;
    let profile = checked_profile(&req, now_ms())?;
    let key = random_secret("bh_pair_")?;
    let hash = token_hash(&key);
    let audit = p.audit("pairing_profile.create");
    let created =
        blocking(move || Ok(lock(&s.control)?.create_pairing_profile(&profile, &hash, &audit)?))
            .await?;
    // The key travels with the CA fingerprint, so one string is all an agent needs to
    // enroll and to pin the server (shown once, like API tokens).
    let fingerprint = s.agent_settings.ca_fingerprint.clone();
    let pairing_key = match &fingerprint {
        Some(f) => format!("{key}:{f}"),
        None => key,
    };
    Ok((
        StatusCode::CREATED,
        Json(PairingCreated {
            profile: created,
            pairing_key,
            ca_fingerprint: fingerprint,
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/pairing-profiles",
    tag = "agents",
    summary = "List pairing profiles",
    responses((status = 200, description = "every profile, revoked ones too", body = PairingProfileList))
)]
pub async fn list_pairing_profiles(
    State(s): State<AppState>,
    p: Principal,
) -> ApiResult<Json<PairingProfileList>> {
    p.require(
        &[Role::Admin, Role::Secops, Role::Netops],
        "read pairing profiles",
    )?;
    let items = blocking(move || Ok(lock(&s.control)?.pairing_profiles()?)).await?;
    Ok(Json(PairingProfileList { items }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/pairing-profiles/{id}",
    tag = "agents",
    summary = "Revoke a pairing profile",
    params(("id" = u64, Path)),
    responses((status = 200, description = "the profile is revoked", body = crate::bodies::RevokedId))
)]
pub async fn revoke_pairing_profile(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<u64>,
) -> ApiResult<Json<crate::bodies::RevokedId>> {
    p.require(&[Role::Admin, Role::Secops], "revoke pairing profiles")?;
    let audit = p.audit("pairing_profile.revoke");
    let done = blocking(move || Ok(lock(&s.control)?.revoke_pairing_profile(id, &audit)?)).await?;
    if !done {
        return Err(ApiError::NotFound(format!("pairing profile {id}")));
    }
    Ok(Json(crate::bodies::RevokedId { revoked: id }))
}
