//! Enrollment: a pairing key turns a host into the agent of one workload, within what
//! the key's profile allows. The key binds the identity; the host only proposes it.
//!
//! - A new workload (no such name in the inventory) is created with the profile's
//!   labels and mode, and the addresses the host reports.
//! - An existing workload is adopted on the key alone only when the profile is bound
//!   to that workload or to a label scope the workload lies in, and the host has one
//!   of its recorded addresses. Adoption keeps the workload's addresses and labels and
//!   never loosens its mode: what the host reports is shown beside it, not written.
//! - Otherwise the agent is stored *pending*: it gets a credential that is refused
//!   until an admin approves it (`POST /api/v1/agents/{id}/approve`).
//! - A refusal (bad key, a key bound elsewhere, a workload that has an agent) writes
//!   nothing and uses nothing up; the refusal guard audits it.

use bulkhead_store::control::PairingProfile;

use super::*;

/// What an enrollment becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// A workload that does not exist yet.
    New,
    /// An existing workload the key may become.
    Adopt,
    /// An existing workload the key alone may not become: an admin decides.
    Pending(String),
}

/// Decides what `profile`'s key may make of a host called `name` reporting
/// `host_addresses`, given the workload of that name (if any) and whether it already
/// has an agent. `Err` is a refusal.
pub(crate) fn admission(
    profile: &PairingProfile,
    name: &str,
    existing: Option<&bulkhead_model::Workload>,
    has_agent: bool,
    host_addresses: &[IpAddr],
) -> Result<Admission, String> {
    if let Some(bound) = &profile.workload
        && bound != name
    {
        return Err(format!(
            "this pairing key enrolls only workload {bound}, not {name}"
        ));
    }
    if has_agent {
        return Err(format!(
            "workload {name} already has an agent; remove it (DELETE /api/v1/agents/ID) to enroll this host in its place"
        ));
    }
    let Some(w) = existing else {
        return Ok(Admission::New);
    };
    let key_may_adopt = profile.workload.as_deref() == Some(name)
        || profile
            .scope
            .as_ref()
            .is_some_and(|scope| w.labels.includes(scope));
    if !key_may_adopt {
        return Ok(Admission::Pending(format!(
            "workload {name} exists and this pairing key may only create new workloads"
        )));
    }
    if w.addresses.is_empty() {
        return Ok(Admission::Pending(format!(
            "workload {name} has no recorded address to check the host against"
        )));
    }
    if !w.addresses.iter().any(|a| host_addresses.contains(a)) {
        return Ok(Admission::Pending(format!(
            "the host has none of workload {name}'s recorded addresses {:?}",
            w.addresses
        )));
    }
    Ok(Admission::Adopt)
}

/// The stored JSON of the workload an enrollment creates: name, host attributes and
/// addresses from the host, labels and mode from the profile.
pub(crate) fn new_workload_json(
    host: &bulkhead_api::HostInfo,
    profile_labels: &Labels,
    mode: EnforcementMode,
) -> ApiResult<Value> {
    let addresses: Vec<String> = host
        .workload_addresses()
        .iter()
        .map(IpAddr::to_string)
        .collect();
    if addresses.is_empty() {
        return Err(ApiError::invalid(
            "host.interfaces",
            "the host reports no address other than loopback or link-local",
        ));
    }
    let labels: BTreeMap<&str, &str> = profile_labels.iter().collect();
    Ok(json!({
        "kind": "host",
        "name": host.hostname,
        "managed": true,
        "addresses": addresses,
        "hostname": host.hostname,
        "os": host.os_name,
        "os_version": host.os_version,
        "labels": labels,
        "mode": mode.to_string(),
    }))
}

/// An existing workload taken over by its agent: managed from now on, its mode never
/// loosened; its addresses, labels and attributes stay as recorded. With
/// `approved_addresses` (an admin approved the host), those become its addresses.
pub(crate) fn adopted_json(
    existing: &Value,
    mode: EnforcementMode,
    approved_addresses: Option<&[IpAddr]>,
) -> Value {
    let mut w = existing.clone();
    let current = w["mode"]
        .as_str()
        .and_then(|m| m.parse::<EnforcementMode>().ok());
    let mode = current.map_or(mode, |c| strictest(c, mode));
    w["managed"] = json!(true);
    w["mode"] = json!(mode.to_string());
    if let Some(addresses) = approved_addresses {
        let list: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
        w["addresses"] = json!(list);
    }
    w
}

fn strictest(a: EnforcementMode, b: EnforcementMode) -> EnforcementMode {
    let rank = |m| match m {
        EnforcementMode::Idle => 0,
        EnforcementMode::Monitor => 1,
        EnforcementMode::Enforced => 2,
    };
    if rank(a) >= rank(b) { a } else { b }
}

#[utoipa::path(
    post,
    path = "/api/v1/agent/enroll",
    tag = "agent",
    summary = "Enroll a host agent with a pairing key (agent listener only; 202 when it waits for approval)",
    request_body = bulkhead_api::EnrollRequest,
    responses((status = 201, description = "enrolled", body = bulkhead_api::EnrollResponse), (status = 202, description = "enrolled, waiting for an admin's approval (pending says why)", body = bulkhead_api::EnrollResponse))
)]
pub async fn enroll(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Json(body): Json<Value>,
) -> ApiResult<(StatusCode, Json<EnrollResponse>)> {
    let req: EnrollRequest = parse_body(body)?;
    bulkhead_model::validate_name(&req.host.hostname)
        .map_err(|e| ApiError::invalid("host.hostname", e))?;
    // The key may carry the CA fingerprint after a colon; only the key part is secret.
    let key = req.pairing_key.split(':').next().unwrap_or_default().trim();
    if key.is_empty() {
        return Err(ApiError::invalid("pairing_key", "must not be empty"));
    }
    let key_hash = token_hash(key);
    let credential = random_secret("bh_agent_")?;
    let credential_hash = token_hash(&credential);
    let host_json =
        serde_json::to_string(&req.host).map_err(|e| ApiError::Internal(e.to_string()))?;
    let name = req.host.hostname.clone();
    let s2 = s.clone();
    let agent = blocking(move || {
        // One step under the lock from the key check to the write: nothing can change
        // what was decided in between.
        crate::control::write(&s2, |c| {
            let now = now_ms();
            let profile = c
                .pairing_profile_by_key(&key_hash, now)?
                .map_err(|refusal| ApiError::EnrollmentRefused(refusal.to_string()))?;
            let existing_json: Option<Value> = c
                .workload(&name)?
                .and_then(|w| serde_json::from_str(&w.json).ok());
            let inventory = s2.current().inventory.clone();
            let has_agent = c.agents()?.iter().any(|a| a.workload == name);
            let host_addresses = req.host.workload_addresses();
            let admitted = admission(
                &profile,
                &name,
                inventory.by_name(&name),
                has_agent,
                &host_addresses,
            )
            .map_err(ApiError::EnrollmentRefused)?;
            let (pending, changes) = match (&admitted, &existing_json) {
                (Admission::Pending(why), _) => (Some(why.clone()), Vec::new()),
                (Admission::Adopt, Some(existing)) => {
                    (None, vec![adopted_json(existing, profile.mode, None)])
                }
                _ => (
                    None,
                    vec![new_workload_json(&req.host, &profile.labels, profile.mode)?],
                ),
            };
            let changes = changes
                .into_iter()
                .map(|w| {
                    Ok(Change::PutWorkload {
                        name: name.clone(),
                        json: serde_json::to_string(&w)
                            .map_err(|e| ApiError::Internal(e.to_string()))?,
                    })
                })
                .collect::<ApiResult<Vec<_>>>()?;
            // An inventory the new workload would break (an address another workload
            // has) is refused here, before anything is written or counted.
            let changes = crate::inventory_api::checked_changes(&c.workloads()?, changes, true)?;
            let audit = AuditContext {
                actor: format!("agent {name} (pairing profile {})", profile.name),
                source: peer.ip().to_string(),
                at_ms: now,
                action: if pending.is_some() {
                    "agent.enroll.pending".into()
                } else {
                    "agent.enroll".into()
                },
            };
            let (agent, _) = c
                .enroll_agent(
                    &key_hash,
                    &NewAgent {
                        workload: name.clone(),
                        credential_hash,
                        host_json,
                        pending,
                        changes,
                    },
                    now,
                    &audit,
                )?
                .map_err(|refusal| ApiError::EnrollmentRefused(refusal.to_string()))?;
            Ok(agent)
        })
    })
    .await?;
    let status = match &agent.pending {
        Some(why) => {
            tracing::warn!(
                "agent {} for workload {} from {peer} waits for approval: {why}",
                agent.id,
                agent.workload
            );
            StatusCode::ACCEPTED
        }
        None => {
            tracing::info!(
                "agent {} enrolled for workload {}",
                agent.id,
                agent.workload
            );
            StatusCode::CREATED
        }
    };
    Ok((
        status,
        Json(EnrollResponse {
            agent_id: agent.id,
            workload: agent.workload,
            credential,
            pending: agent.pending,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(workload: Option<&str>, scope: Option<&str>) -> PairingProfile {
        PairingProfile {
            id: 1,
            name: "p".into(),
            labels: Labels::parse_list("app=web").unwrap(),
            mode: EnforcementMode::Monitor,
            max_uses: None,
            uses: 0,
            expires_at_ms: None,
            created_at_ms: 0,
            created_by: "t".into(),
            revoked: false,
            workload: workload.map(str::to_string),
            scope: scope.map(|s| Labels::parse_list(s).unwrap()),
        }
    }

    fn workload(labels: &str, addresses: &[&str]) -> bulkhead_model::Workload {
        bulkhead_model::Workload {
            name: "db-1".into(),
            kind: bulkhead_model::WorkloadKind::Host,
            managed: false,
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            hostname: None,
            os: None,
            os_version: None,
            labels: Labels::parse_list(labels).unwrap(),
            mode: EnforcementMode::Monitor,
            owner: None,
            attributes: Default::default(),
        }
    }

    #[test]
    fn a_key_binds_what_a_host_may_become() {
        let ip = |a: &str| -> IpAddr { a.parse().unwrap() };
        let db = workload("app=db", &["10.0.0.5"]);
        let host = [ip("10.0.0.5"), ip("10.9.9.9")];
        // A key for new workloads: a new name is created, an existing one waits.
        let any = profile(None, None);
        assert_eq!(
            admission(&any, "web-9", None, false, &host),
            Ok(Admission::New)
        );
        assert!(matches!(
            admission(&any, "db-1", Some(&db), false, &host),
            Ok(Admission::Pending(_))
        ));
        // Bound to one workload: only that name, adopted when the host has its address.
        let bound = profile(Some("db-1"), None);
        assert_eq!(
            admission(&bound, "db-1", Some(&db), false, &host),
            Ok(Admission::Adopt)
        );
        assert!(admission(&bound, "web-9", None, false, &host).is_err());
        assert!(matches!(
            admission(&bound, "db-1", Some(&db), false, &[ip("10.9.9.9")]),
            Ok(Admission::Pending(_))
        ));
        // A scope adopts what lies inside it only.
        assert_eq!(
            admission(
                &profile(None, Some("app=db")),
                "db-1",
                Some(&db),
                false,
                &host
            ),
            Ok(Admission::Adopt)
        );
        assert!(matches!(
            admission(
                &profile(None, Some("app=web")),
                "db-1",
                Some(&db),
                false,
                &host
            ),
            Ok(Admission::Pending(_))
        ));
        // A workload with an agent is never taken over.
        assert!(admission(&bound, "db-1", Some(&db), true, &host).is_err());
    }

    #[test]
    fn adoption_keeps_addresses_and_labels_and_never_loosens() {
        let existing = json!({"name": "db-1", "addresses": ["10.0.0.5"],
            "labels": {"app": "db"}, "mode": "enforced"});
        let w = adopted_json(&existing, EnforcementMode::Monitor, None);
        assert_eq!(w["addresses"], json!(["10.0.0.5"]));
        assert_eq!(w["labels"], json!({"app": "db"}));
        assert_eq!(w["mode"], json!("enforced"));
        assert_eq!(w["managed"], json!(true));
    }
}
