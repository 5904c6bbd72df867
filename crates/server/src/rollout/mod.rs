//! Rollouts: moving a set of workloads (a label selector, usually one application) from
//! monitor to enforced mode on an announced date, with its owners told along the way.
//!
//! The calendar is [`plan::plan`], a pure function; this module stores rollouts, asks
//! the alert store how quiet the workloads are, carries out the steps (mode switches
//! are ordinary audited inventory changes), and sends the notices: to the alert sinks,
//! to each owner's webhook, and by e-mail through the configured SMTP relay.

pub mod plan;

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bulkhead_model::{EnforcementMode, Labels};
use bulkhead_store::control::{AlertFilter, AlertObservation, AlertState, AuditContext, Change};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Principal, Role};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, blocking, lock, now_ms};
pub use plan::{DAY_MS, Notice, Owner, Quietness, Rollout, RolloutState, Step};

pub use crate::state::Notifier;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    pub name: String,
    /// `app=payments env=prod`
    pub selector: String,
    #[serde(default)]
    pub owners: Vec<Owner>,
    /// Default: now.
    pub monitor_start_ms: Option<i64>,
    /// Default: 14 days after the announcement.
    pub enforce_at_ms: Option<i64>,
    pub readiness_days: Option<u32>,
    pub watch_days: Option<u32>,
}

fn selected<'a>(
    inventory: &'a bulkhead_model::Inventory,
    selector: &'a Labels,
) -> impl Iterator<Item = &'a bulkhead_model::Workload> + 'a {
    inventory
        .workloads()
        .iter()
        .filter(move |w| w.managed && selector.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
}

fn check(req: &RolloutRequest, now: i64) -> ApiResult<Rollout> {
    bulkhead_model::validate_name(&req.name).map_err(|e| ApiError::invalid("name", e))?;
    let selector = Labels::parse_list(&req.selector)
        .map_err(|e| ApiError::invalid("selector", e.to_string()))?;
    if selector.is_empty() {
        return Err(ApiError::invalid(
            "selector",
            "must name at least one label (a rollout of everything is not a rollout)",
        ));
    }
    for (i, o) in req.owners.iter().enumerate() {
        if o.name.trim().is_empty() {
            return Err(ApiError::invalid(
                format!("owners[{i}].name"),
                "must not be empty",
            ));
        }
        if let Some(e) = &o.email
            && let Err(why) = bulkhead_alerts::Mailer::check_address(e)
        {
            return Err(ApiError::invalid(
                format!("owners[{i}].email"),
                why.to_string(),
            ));
        }
        if let Some(w) = &o.webhook
            && !w.starts_with("http://")
        {
            return Err(ApiError::invalid(
                format!("owners[{i}].webhook"),
                "must be an http:// URL",
            ));
        }
    }
    let enforce_at_ms = req.enforce_at_ms.unwrap_or(now + 14 * DAY_MS);
    if enforce_at_ms < now {
        return Err(ApiError::invalid("enforce_at_ms", "is in the past"));
    }
    Ok(Rollout {
        id: 0,
        name: req.name.clone(),
        selector,
        owners: req.owners.clone(),
        announced_ms: now,
        monitor_start_ms: req.monitor_start_ms.unwrap_or(now),
        enforce_at_ms,
        readiness_days: req.readiness_days.unwrap_or(7).clamp(1, 90),
        watch_days: req.watch_days.unwrap_or(14).clamp(1, 90),
        state: RolloutState::Scheduled,
        notices: Vec::new(),
        postponements: Vec::new(),
        previous_modes: BTreeMap::new(),
    })
}

fn to_json(r: &Rollout) -> ApiResult<String> {
    serde_json::to_string(r).map_err(|e| ApiError::Internal(e.to_string()))
}

fn from_stored(id: u64, json: &str) -> ApiResult<Rollout> {
    let mut r: Rollout = serde_json::from_str(json)
        .map_err(|e| ApiError::Internal(format!("stored rollout {id}: {e}")))?;
    r.id = id;
    Ok(r)
}

/// A rollout as the API shows it: as stored, with its workloads and their modes, and
/// whether it is ready now (the test the scheduler applies at the enforcement date).
/// Whether `p` may see rollout `r`: app owners only those that move some of their
/// workloads.
fn visible(r: &Rollout, s: &AppState, p: &Principal) -> bool {
    p.role != Role::AppOwner
        || selected(&s.current().inventory, &r.selector).any(|w| w.labels.includes(&p.scope))
}

/// A rollout as the API shows it: its plan and state, the workloads it moves (those
/// the caller may see) and whether it is ready to enforce.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RolloutView {
    #[serde(flatten)]
    pub rollout: Rollout,
    pub workloads: Vec<RolloutWorkload>,
    pub readiness: Readiness,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RolloutWorkload {
    pub name: String,
    pub mode: EnforcementMode,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub ready: bool,
    pub unresolved_potentially_blocked: usize,
    pub last_blocked_ms: Option<i64>,
    /// Why it is not ready, when it is not.
    pub reason: Option<String>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RolloutList {
    pub items: Vec<RolloutView>,
}

fn view(r: &Rollout, s: &AppState, q: &Quietness, p: &Principal) -> RolloutView {
    let inventory = s.current().inventory.clone();
    let workloads = selected(&inventory, &r.selector)
        .filter(|w| p.role != Role::AppOwner || w.labels.includes(&p.scope))
        .map(|w| RolloutWorkload {
            name: w.name.clone(),
            mode: w.mode,
        })
        .collect();
    let mut rollout = r.clone();
    // An owner's webhook URL carries its secret in the path: only those who may
    // schedule rollouts see it.
    if !matches!(p.role, Role::Admin | Role::Secops) {
        for o in &mut rollout.owners {
            if o.webhook.is_some() {
                o.webhook = Some("(hidden)".into());
            }
        }
    }
    let ready = q.unresolved_potentially_blocked == 0;
    RolloutView {
        rollout,
        workloads,
        readiness: Readiness {
            ready,
            unresolved_potentially_blocked: q.unresolved_potentially_blocked,
            last_blocked_ms: q.last_blocked_ms,
            reason: (!ready).then(|| {
                format!(
                    "{} unresolved potentially-blocked alert(s) on its workloads in the last {} day(s)",
                    q.unresolved_potentially_blocked, r.readiness_days
                )
            }),
        },
    }
}

/// Each rollout with how quiet its workloads are now.
async fn with_quietness(s: &AppState, rs: Vec<Rollout>) -> ApiResult<Vec<(Rollout, Quietness)>> {
    let s2 = s.clone();
    blocking(move || {
        let now = now_ms();
        rs.into_iter()
            .map(|r| {
                let q = quietness(&s2, &r, now)?;
                Ok((r, q))
            })
            .collect()
    })
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/rollouts",
    tag = "rollout",
    summary = "Schedule a monitor → enforce rollout for a label selector",
    request_body = RolloutRequest,
    responses((status = 201, description = "the rollout, announced", body = RolloutView))
)]
pub async fn create(
    State(s): State<AppState>,
    p: Principal,
    Json(body): Json<Value>,
) -> ApiResult<(StatusCode, Json<RolloutView>)> {
    p.require(&[Role::Admin, Role::Secops], "schedule rollouts")?;
    let req: RolloutRequest =
        serde_json::from_value(body).map_err(|e| ApiError::invalid("(body)", e.to_string()))?;
    let mut r = check(&req, now_ms())?;
    let s2 = s.clone();
    let audit = p.audit("rollout.create");
    let r = blocking(move || {
        let json = to_json(&r)?;
        r.id = lock(&s2.control)?.create_rollout(&r.name, &json, &audit)?;
        // The workloads start in monitor mode (those still idle; enforced ones stay).
        let inventory = s2.current().inventory.clone();
        let to_monitor: Vec<String> = selected(&inventory, &r.selector)
            .filter(|w| w.mode == EnforcementMode::Idle)
            .map(|w| w.name.clone())
            .collect();
        set_modes(
            &s2,
            &Principal::system(),
            &to_monitor,
            EnforcementMode::Monitor,
            &audit_as(&r, "rollout.monitor"),
        )?;
        Ok(r)
    })
    .await?;
    // The announcement goes out now, not at the next scheduler round.
    run_once(&s, now_ms()).await?;
    let stored = get_rollout(&s, r.id).await?;
    let (stored, q) = with_quietness(&s, vec![stored]).await?.remove(0);
    Ok((StatusCode::CREATED, Json(view(&stored, &s, &q, &p))))
}

async fn get_rollout(s: &AppState, id: u64) -> ApiResult<Rollout> {
    let s2 = s.clone();
    blocking(move || {
        let stored = lock(&s2.control)?
            .rollout(id)?
            .ok_or_else(|| ApiError::NotFound(format!("rollout {id}")))?;
        from_stored(stored.id, &stored.json)
    })
    .await
}

#[utoipa::path(
    get,
    path = "/api/v1/rollouts",
    tag = "rollout",
    summary = "List rollouts with their calendar and readiness",
    responses((status = 200, description = "rollouts the caller may see", body = RolloutList))
)]
pub async fn list(State(s): State<AppState>, p: Principal) -> ApiResult<Json<RolloutList>> {
    let s2 = s.clone();
    let all = blocking(move || {
        lock(&s2.control)?
            .rollouts()?
            .into_iter()
            .map(|r| from_stored(r.id, &r.json))
            .collect::<ApiResult<Vec<_>>>()
    })
    .await?;
    let all: Vec<Rollout> = all.into_iter().filter(|r| visible(r, &s, &p)).collect();
    let items = with_quietness(&s, all)
        .await?
        .iter()
        .map(|(r, q)| view(r, &s, q, &p))
        .collect();
    Ok(Json(RolloutList { items }))
}

#[utoipa::path(
    get,
    path = "/api/v1/rollouts/{id}",
    tag = "rollout",
    summary = "Get a rollout",
    params(("id" = u64, Path)),
    responses((status = 200, description = "the rollout", body = RolloutView))
)]
pub async fn get(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<u64>,
) -> ApiResult<Json<RolloutView>> {
    let r = get_rollout(&s, id).await?;
    if !visible(&r, &s, &p) {
        return Err(ApiError::NotFound(format!("rollout {id}")));
    }
    let (r, q) = with_quietness(&s, vec![r]).await?.remove(0);
    Ok(Json(view(&r, &s, &q, &p)))
}

/// One action: every workload the rollout switched goes back to the mode it had.
#[utoipa::path(
    post,
    path = "/api/v1/rollouts/{id}/rollback",
    tag = "rollout",
    summary = "Roll back what a rollout switched to enforced, in one action",
    params(("id" = u64, Path)),
    responses((status = 200, description = "the rollout, rolled back", body = RolloutView))
)]
pub async fn rollback(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<u64>,
) -> ApiResult<Json<RolloutView>> {
    p.require(&[Role::Admin, Role::Secops], "roll back rollouts")?;
    // Read and act under the rollouts lock: the scheduler cannot complete (or enforce)
    // this rollout between the check below and the rollback.
    let guard = s.rollouts.lock().await;
    let mut r = get_rollout(&s, id).await?;
    if !matches!(
        r.state,
        RolloutState::Enforced { .. } | RolloutState::Completed { .. }
    ) {
        return Err(ApiError::Conflict(format!(
            "rollout {} has not switched anything to enforced",
            r.name
        )));
    }
    let s2 = s.clone();
    let audit = p.audit("rollout.rollback");
    let r = blocking(move || {
        let mut by_mode: BTreeMap<EnforcementMode, Vec<String>> = BTreeMap::new();
        for (w, m) in &r.previous_modes {
            by_mode.entry(*m).or_default().push(w.clone());
        }
        for (mode, names) in by_mode {
            set_modes(&s2, &Principal::system(), &names, mode, &audit)?;
        }
        r.state = RolloutState::RolledBack { at_ms: now_ms() };
        lock(&s2.control)?.update_rollout(r.id, &to_json(&r)?, &audit)?;
        Ok(r)
    })
    .await?;
    drop(guard);
    let notice = Outgoing {
        rollout: r.clone(),
        subject: format!("{}: enforcement rolled back", r.name),
        body: format!(
            "{} rolled back the enforcement of {} ({}): its workloads are back in their previous modes.",
            p.name, r.name, r.selector
        ),
        severity: bulkhead_alerts::Severity::Warning,
    };
    deliver(&s, vec![notice]).await;
    let (r, q) = with_quietness(&s, vec![r]).await?.remove(0);
    Ok(Json(view(&r, &s, &q, &p)))
}

fn audit_as(r: &Rollout, action: &str) -> AuditContext {
    AuditContext {
        actor: format!("bulkhead scheduler (rollout {})", r.name),
        source: "local".into(),
        at_ms: now_ms(),
        action: action.to_string(),
    }
}

/// Sets the mode of the named workloads in one inventory change (all or none), as the
/// scheduler (rollouts) and as a user directly (`enforcement::set_mode`): the same
/// audited change either way.
pub(crate) fn set_modes(
    s: &AppState,
    by: &Principal,
    names: &[String],
    mode: EnforcementMode,
    audit: &AuditContext,
) -> ApiResult<()> {
    if names.is_empty() {
        return Ok(());
    }
    let mut changes = Vec::new();
    {
        let c = lock(&s.control)?;
        for n in names {
            let Some(w) = c.workload(n)? else { continue };
            let mut v: Value = serde_json::from_str(&w.json)
                .map_err(|e| ApiError::Internal(format!("stored workload {n}: {e}")))?;
            v["mode"] = json!(mode.to_string());
            changes.push(Change::PutWorkload {
                name: n.clone(),
                json: v.to_string(),
            });
        }
    }
    crate::control::commit(
        s,
        by,
        audit,
        crate::control::Mutation::Inventory {
            changes,
            release: false,
        },
    )
    .map(|_| ())
}

/// How quiet the rollout's workloads are: alerts whose either end carries the selector.
fn quietness(s: &AppState, r: &Rollout, now: i64) -> ApiResult<Quietness> {
    let alerts = lock(&s.control)?.alerts(&AlertFilter {
        limit: 100_000,
        ..AlertFilter::default()
    })?;
    let touches = |details: &Value| {
        ["src_labels", "dst_labels"].iter().any(|side| {
            let labels: Labels = serde_json::from_value(details[side].clone()).unwrap_or_default();
            !labels.is_empty() && r.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
    };
    let mut q = Quietness::default();
    let window = now - i64::from(r.readiness_days) * DAY_MS;
    for a in alerts {
        let details: Value = serde_json::from_str(&a.details_json).unwrap_or_default();
        if !touches(&details) {
            continue;
        }
        match a.kind.as_str() {
            "potentially_blocked"
                if a.state != AlertState::Resolved && a.last_seen_ms >= window =>
            {
                q.unresolved_potentially_blocked += 1;
            }
            "blocked" => {
                q.last_blocked_ms = Some(q.last_blocked_ms.unwrap_or(i64::MIN).max(a.last_seen_ms));
            }
            _ => {}
        }
    }
    Ok(q)
}

/// A notice to send, after the rollout's state is stored.
#[derive(Debug, Clone)]
struct Outgoing {
    rollout: Rollout,
    subject: String,
    body: String,
    severity: bulkhead_alerts::Severity,
}

fn date(ms: i64) -> String {
    bulkhead_alerts::rfc3339_millis(ms)
        .split('T')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn notice_text(r: &Rollout, n: Notice, workloads: usize) -> (String, String) {
    let what = format!("{} ({}, {workloads} workload(s))", r.name, r.selector);
    match n {
        Notice::Announced => (
            format!(
                "{}: enforcement scheduled for {}",
                r.name,
                date(r.enforce_at_ms)
            ),
            format!(
                "Bulkhead will switch {what} from monitor to enforced mode on {}. \
                 Until then, connections the policy does not allow are reported as potentially blocked alerts: \
                 review them and ask for rules. Enforcement happens only if no such alert is left unresolved in the last {} day(s).",
                date(r.enforce_at_ms),
                r.readiness_days
            ),
        ),
        Notice::DayBefore => (
            format!(
                "{}: enforcement tomorrow ({})",
                r.name,
                date(r.enforce_at_ms)
            ),
            format!("Tomorrow Bulkhead switches {what} to enforced mode, if it is ready."),
        ),
        Notice::Enforced => (
            format!("{}: now enforced", r.name),
            format!(
                "{what} is now in enforced mode: connections the policy does not allow are dropped. \
                 Blocked connections raise alerts; the rollout completes after {} day(s) without one, and can be rolled back in one action.",
                r.watch_days
            ),
        ),
        Notice::Completed => (
            format!("{}: rollout complete", r.name),
            format!(
                "{what} has been enforced for {} day(s) without a blocked-flow alert.",
                r.watch_days
            ),
        ),
    }
}

/// Runs the calendar once for every rollout at `now_ms`; returns what it did, one line
/// per step. The scheduler calls it every round; tests call it with chosen times.
pub async fn run_once(s: &AppState, now_ms: i64) -> ApiResult<Vec<String>> {
    // One step at a time: the scheduler, a new rollout's announcement and a rollback
    // must not read the same state and both act on it.
    let _one_at_a_time = s.rollouts.lock().await;
    let s2 = s.clone();
    let (done, outgoing) = blocking(move || {
        // With several servers on one database, only the leader runs the calendar, and
        // a step's record is written only while it still leads.
        let lease = lock(&s2.control)?.lead()?;
        s2.leading
            .store(lease.is_some(), std::sync::atomic::Ordering::Relaxed);
        let Some(lease) = lease else {
            return Ok((Vec::new(), Vec::new()));
        };
        let stored = lock(&s2.control)?.rollouts()?;
        let mut done = Vec::new();
        let mut outgoing = Vec::new();
        for st in stored {
            let mut r = from_stored(st.id, &st.json)?;
            let q = quietness(&s2, &r, now_ms)?;
            let steps = plan::plan(&r, now_ms, &q);
            if steps.is_empty() {
                continue;
            }
            let inventory = s2.current().inventory.clone();
            let workloads: Vec<(String, EnforcementMode)> = selected(&inventory, &r.selector)
                .map(|w| (w.name.clone(), w.mode))
                .collect();
            for step in steps {
                match step {
                    Step::Notify(n) => {
                        let (subject, body) = notice_text(&r, n, workloads.len());
                        r.notices.push(n);
                        done.push(format!("{}: notice {n:?}", r.name));
                        outgoing.push(Outgoing {
                            rollout: r.clone(),
                            subject,
                            body,
                            severity: bulkhead_alerts::Severity::Info,
                        });
                    }
                    Step::Enforce => {
                        r.previous_modes = workloads.iter().cloned().collect();
                        let names: Vec<String> = workloads
                            .iter()
                            .filter(|(_, m)| *m != EnforcementMode::Enforced)
                            .map(|(n, _)| n.clone())
                            .collect();
                        set_modes(
                            &s2,
                            &Principal::system(),
                            &names,
                            EnforcementMode::Enforced,
                            &audit_as(&r, "rollout.enforce"),
                        )?;
                        r.state = RolloutState::Enforced { at_ms: now_ms };
                        done.push(format!("{}: enforced {} workload(s)", r.name, names.len()));
                    }
                    Step::Postpone { until_ms, reason } => {
                        r.postponements.push(plan::Postponement {
                            at_ms: now_ms,
                            until_ms,
                            reason: reason.clone(),
                        });
                        r.enforce_at_ms = until_ms;
                        // The day-before notice is due again for the new date.
                        r.notices.retain(|n| *n != Notice::DayBefore);
                        done.push(format!(
                            "{}: postponed to {}: {reason}",
                            r.name,
                            date(until_ms)
                        ));
                        outgoing.push(Outgoing {
                            rollout: r.clone(),
                            subject: format!(
                                "{}: enforcement postponed to {}",
                                r.name,
                                date(until_ms)
                            ),
                            body: format!(
                                "Enforcement of {} ({}) was due now and is postponed: {reason}.",
                                r.name, r.selector
                            ),
                            severity: bulkhead_alerts::Severity::Warning,
                        });
                    }
                    Step::Complete => {
                        r.state = RolloutState::Completed { at_ms: now_ms };
                        done.push(format!("{}: completed", r.name));
                    }
                }
            }
            let json = to_json(&r)?;
            lock(&s2.control)?.fenced(lease, |c| {
                c.update_rollout(r.id, &json, &audit_as(&r, "rollout.update"))
            })?;
        }
        Ok((done, outgoing))
    })
    .await?;
    deliver(s, outgoing).await;
    Ok(done)
}

/// Sends notices to the alert store and sinks, the owners' webhooks, and by e-mail.
/// Failures are logged with the rollout's name: the rollout itself has moved on.
async fn deliver(s: &AppState, outgoing: Vec<Outgoing>) {
    let notifier = s.notifier.clone();
    for o in outgoing {
        let now = now_ms();
        let r = &o.rollout;
        let recorded = {
            let s2 = s.clone();
            let (subject, body, name) = (o.subject.clone(), o.body.clone(), r.name.clone());
            let selector = r.selector.to_string();
            let severity = o.severity;
            blocking(move || {
                let (record, _) = lock(&s2.control)?.record_alert(AlertObservation {
                    key: format!("rollout|{name}|{subject}|{now}"),
                    kind: bulkhead_alerts::kind::ROLLOUT.into(),
                    severity: severity.as_str().into(),
                    title: subject,
                    details_json: json!({ "rollout": name, "selector": selector, "message": body })
                        .to_string(),
                    count: 1,
                    first_seen_ms: now,
                    last_seen_ms: now,
                })?;
                Ok(record)
            })
            .await
        };
        let event = match recorded {
            Ok(record) => crate::alerts::event_of(&record),
            Err(e) => {
                tracing::error!("recording a notice of rollout {}: {e}", r.name);
                continue;
            }
        };
        if let Some(d) = s.dispatcher.lock().ok().and_then(|d| d.clone()) {
            d.send(event.clone());
        }
        for owner in &r.owners {
            if let (Some(url), Some(secret)) = (&owner.webhook, &notifier.webhook_secret) {
                // The URL is not logged: its path is often the receiver's secret.
                let sink = bulkhead_alerts::WebhookSink::new(url, secret.clone()).and_then(|w| {
                    match &notifier.webhook_ca {
                        Some(pem) => w.with_root_certificates(pem),
                        None => Ok(w),
                    }
                });
                match sink {
                    Ok(sink) => {
                        if let Err(e) = sink.deliver(&event).await.result {
                            tracing::warn!(
                                "rollout {} notice to {}'s webhook ({}): {e}",
                                r.name,
                                owner.name,
                                sink.name()
                            );
                        }
                    }
                    Err(e) => {
                        tracing::warn!("rollout {} owner {}'s webhook: {e}", r.name, owner.name)
                    }
                }
            }
        }
        let emails: Vec<String> = r.owners.iter().filter_map(|o| o.email.clone()).collect();
        if let Some(m) = &notifier.mailer
            && !emails.is_empty()
            && let Err(e) = m.send(&emails, &o.subject, &o.body).await
        {
            tracing::error!("rollout {} e-mail to {emails:?}: {e}", r.name);
        }
    }
}

/// The scheduler: one round every `every`, until the runtime stops.
pub async fn scheduler(s: AppState, every: std::time::Duration) {
    loop {
        tokio::time::sleep(every).await;
        match run_once(&s, now_ms()).await {
            Ok(done) => done.iter().for_each(|d| tracing::info!("rollout {d}")),
            Err(e) => tracing::error!("rollout scheduler: {e}"),
        }
    }
}
