//! Refused requests: every 401, 403 and 429 is counted and audited (who, what, from
//! where), and an address that keeps failing to authenticate or to enroll is turned
//! away with 429 and `Retry-After` before it reaches the store.
//!
//! The audit of refusals is itself rate-limited, so a flood of bad requests cannot
//! fill the disk: past the budget refusals are only counted, and the count of those not
//! written one by one is audited once the budget allows again.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bulkhead_store::control::AuditContext;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::{ApiError, ErrorInfo};
use crate::state::{AppState, lock, now_ms};

/// Failed authentications (bad token, bad agent credential, refused pairing key)
/// an address may make per minute before it gets 429.
pub const AUTH_FAILURES_PER_MINUTE: u32 = 20;
/// Refusals audited one by one: a burst of this many, then this many per minute.
pub const AUDITED_REFUSALS_PER_MINUTE: u32 = 120;
/// At most this many addresses are remembered as locked out; the oldest go first.
const MAX_LOCKED: usize = 100_000;

/// The audit action of a refused request (it changes nothing).
pub const REFUSED_ACTION: &str = "request.refused";

/// Who made a request, filled in by whichever extractor established it, so that the
/// refusal audit can name the caller the handler saw.
#[derive(Debug, Clone, Default)]
pub struct CallerSlot(std::sync::Arc<Mutex<Option<String>>>);

impl CallerSlot {
    pub fn set(&self, who: String) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(who);
        }
    }

    fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|s| s.clone())
    }
}

pub struct Guard {
    failures: DefaultKeyedRateLimiter<IpAddr>,
    failures_seen: AtomicU64,
    locked: Mutex<HashMap<IpAddr, Instant>>,
    audit_budget: DefaultDirectRateLimiter,
    not_audited: AtomicU64,
    /// (listener, status) → refused requests.
    refused: Mutex<BTreeMap<(&'static str, u16), u64>>,
    suppressed_total: AtomicU64,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guard")
    }
}

impl Default for Guard {
    fn default() -> Self {
        Guard::new(AUTH_FAILURES_PER_MINUTE, AUDITED_REFUSALS_PER_MINUTE)
    }
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

impl Guard {
    pub fn new(auth_failures_per_minute: u32, audited_per_minute: u32) -> Guard {
        Guard {
            failures: RateLimiter::keyed(per_minute(auth_failures_per_minute)),
            failures_seen: AtomicU64::new(0),
            locked: Mutex::default(),
            audit_budget: RateLimiter::direct(per_minute(audited_per_minute)),
            not_audited: AtomicU64::new(0),
            refused: Mutex::default(),
            suppressed_total: AtomicU64::new(0),
        }
    }

    /// How long `ip` must still wait, if it is locked out.
    fn locked_out(&self, ip: IpAddr) -> Option<Duration> {
        let mut locked = self.locked.lock().ok()?;
        let until = *locked.get(&ip)?;
        let now = Instant::now();
        if until > now {
            Some(until - now)
        } else {
            locked.remove(&ip);
            None
        }
    }

    /// Counts one failed authentication of `ip`; past the quota it is locked out for
    /// as long as the quota says.
    fn failed(&self, ip: IpAddr) {
        // The per-address state is forgotten once it would allow a full quota again, so
        // many failing addresses cannot grow it for ever.
        if self.failures_seen.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.failures.retain_recent();
            self.failures.shrink_to_fit();
        }
        if let Err(not_until) = self.failures.check_key(&ip) {
            let wait = not_until
                .wait_time_from(DefaultClock::default().now())
                .max(Duration::from_secs(1));
            if let Ok(mut locked) = self.locked.lock() {
                if locked.len() >= MAX_LOCKED {
                    let now = Instant::now();
                    locked.retain(|_, until| *until > now);
                    self.failures.retain_recent();
                }
                if locked.len() < MAX_LOCKED {
                    locked.insert(ip, Instant::now() + wait);
                }
            }
        }
    }

    fn count(&self, listener: &'static str, status: StatusCode) {
        if let Ok(mut m) = self.refused.lock() {
            *m.entry((listener, status.as_u16())).or_default() += 1;
        }
    }

    /// Whether this refusal may be audited one by one; if so, also how many before it
    /// were not (to be audited as a count).
    fn audit_allowance(&self) -> Option<u64> {
        if self.audit_budget.check().is_ok() {
            Some(self.not_audited.swap(0, Ordering::Relaxed))
        } else {
            self.not_audited.fetch_add(1, Ordering::Relaxed);
            self.suppressed_total.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// `(listener, status, count)` of refused requests so far, and how many refusals
    /// were counted but not audited one by one.
    pub fn snapshot(&self) -> (Vec<(&'static str, u16, u64)>, u64) {
        let refused = self
            .refused
            .lock()
            .map(|m| m.iter().map(|((l, s), n)| (*l, *s, *n)).collect())
            .unwrap_or_default();
        (refused, self.suppressed_total.load(Ordering::Relaxed))
    }
}

fn peer(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut resp = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(serde_json::json!({ "error": {
            "code": "too_many_requests",
            "message": format!("too many failed attempts from this address; retry in {secs} s"),
        }})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, v);
    }
    resp
}

/// Middleware on both listeners: lockout first, then the request, then the refusal's
/// count and audit entry.
pub async fn refusals(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let ip = peer(&req);
    let listener = if req.uri().path().starts_with("/api/v1/agent/") {
        "agent"
    } else {
        "api"
    };
    let what = format!("{} {}", req.method(), req.uri().path());
    // Every enrollment that does not go through is a refusal worth a trace, whatever
    // its status (a bad key, a bound key, an address another workload has).
    let enrollment = req.uri().path() == "/api/v1/agent/enroll";
    // Health checks answer whoever asks: a locked-out address must not make the
    // server look down to its orchestrator.
    let health = matches!(req.uri().path(), "/healthz" | "/readyz");
    if let Some(wait) = ip.filter(|_| !health).and_then(|ip| s.guard.locked_out(ip)) {
        s.guard.count(listener, StatusCode::TOO_MANY_REQUESTS);
        let resp = too_many(wait);
        audit_refusal(&s, ip, None, &what, resp.status(), "locked out".into());
        return resp;
    }
    let slot = CallerSlot::default();
    req.extensions_mut().insert(slot.clone());
    let resp = next.run(req).await;
    let status = resp.status();
    let refused = matches!(
        status,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS
    ) || (enrollment && status.is_client_error());
    if !refused {
        return resp;
    }
    s.guard.count(listener, status);
    let info = resp.extensions().get::<ErrorInfo>().cloned();
    // A bad token or credential, and a pairing key that was refused, are guesses an
    // attacker can repeat; a known caller refused by its role is not.
    let failed_auth = status == StatusCode::UNAUTHORIZED
        || info
            .as_ref()
            .is_some_and(|i| i.code == "enrollment_refused");
    if failed_auth && let Some(ip) = ip {
        s.guard.failed(ip);
    }
    let reason = info.map(|i| i.message).unwrap_or_default();
    audit_refusal(&s, ip, slot.get(), &what, status, reason);
    resp
}

fn audit_refusal(
    s: &AppState,
    ip: Option<IpAddr>,
    who: Option<String>,
    what: &str,
    status: StatusCode,
    reason: String,
) {
    let Some(skipped) = s.guard.audit_allowance() else {
        return;
    };
    let source = ip.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
    let entry = AuditContext {
        actor: who.unwrap_or_else(|| "anonymous".into()),
        source,
        at_ms: now_ms(),
        action: REFUSED_ACTION.into(),
    };
    let details = serde_json::json!({
        "request": what,
        "status": status.as_u16(),
        "reason": reason,
        "not_audited_before": skipped,
    })
    .to_string();
    let control = s.control.clone();
    let target = what.to_string();
    // The response does not wait for the audit write.
    tokio::task::spawn_blocking(move || {
        let result = lock(&control).and_then(|mut c| {
            c.append_audit(&entry, &target, None, Some(&details))
                .map_err(ApiError::from)
        });
        if let Err(e) = result {
            tracing::error!("auditing a refused request: {e}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_locked_out_after_its_quota_of_failures() {
        let g = Guard::new(3, 100);
        let ip: IpAddr = "127.0.0.7".parse().unwrap();
        let other: IpAddr = "127.0.0.8".parse().unwrap();
        for _ in 0..3 {
            assert!(g.locked_out(ip).is_none());
            g.failed(ip);
        }
        assert!(g.locked_out(ip).is_none(), "the quota itself is allowed");
        g.failed(ip);
        let wait = g.locked_out(ip).expect("locked out past the quota");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(60));
        assert!(g.locked_out(other).is_none(), "per address");
    }

    #[test]
    fn audit_budget_counts_what_it_skips() {
        let g = Guard::new(3, 2);
        assert_eq!(g.audit_allowance(), Some(0));
        assert_eq!(g.audit_allowance(), Some(0));
        assert_eq!(g.audit_allowance(), None);
        assert_eq!(g.audit_allowance(), None);
        assert_eq!(g.snapshot().1, 2);
    }
}
