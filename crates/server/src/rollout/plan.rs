//! The rollout calendar as a pure function: given a rollout, the time, and how quiet its
//! workloads' alerts are, what should happen now. No clock, no IO, so every date rule
//! is tested without waiting two weeks.

use std::collections::BTreeMap;

use bulkhead_model::{EnforcementMode, Labels};
use serde::{Deserialize, Serialize};

pub const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Owner {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RolloutState {
    /// Announced; workloads in monitor mode until the enforcement date.
    Scheduled,
    /// Switched to enforced at `at_ms`; watched until completion.
    Enforced { at_ms: i64 },
    /// Watched long enough with no blocked-flow alert.
    Completed { at_ms: i64 },
    /// Put back to the modes the workloads had before enforcement.
    RolledBack { at_ms: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Postponement {
    pub at_ms: i64,
    pub until_ms: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rollout {
    pub id: u64,
    pub name: String,
    /// The workloads this rollout moves to enforcement (`app=payments env=prod`).
    pub selector: Labels,
    pub owners: Vec<Owner>,
    pub announced_ms: i64,
    /// When the workloads went (or go) to monitor mode.
    pub monitor_start_ms: i64,
    /// The announced enforcement date; moves when the rollout is postponed.
    pub enforce_at_ms: i64,
    /// Ready means: no unresolved potentially-blocked alert on its workloads seen in the
    /// last `readiness_days`.
    pub readiness_days: u32,
    /// Days after enforcement without a blocked-flow alert before it is complete.
    pub watch_days: u32,
    #[serde(flatten)]
    pub state: RolloutState,
    /// Notices already sent, so a restart never sends one twice.
    #[serde(default)]
    pub notices: Vec<Notice>,
    #[serde(default)]
    pub postponements: Vec<Postponement>,
    /// Each workload's mode before enforcement: what a rollback restores.
    #[serde(default)]
    pub previous_modes: BTreeMap<String, EnforcementMode>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    Announced,
    DayBefore,
    Enforced,
    Completed,
}

/// How the rollout's workloads have behaved, as the alert store tells it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quietness {
    /// Unresolved potentially-blocked alerts on its workloads seen in the readiness window.
    pub unresolved_potentially_blocked: usize,
    /// The last time any blocked-flow alert on its workloads was seen.
    pub last_blocked_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Notify(Notice),
    /// Switch every selected workload to enforced.
    Enforce,
    /// Not ready at the date: move it, and tell the owners why.
    Postpone {
        until_ms: i64,
        reason: String,
    },
    Complete,
}

/// What should happen to `r` at `now_ms`, in order.
pub fn plan(r: &Rollout, now_ms: i64, q: &Quietness) -> Vec<Step> {
    let sent = |n: Notice| r.notices.contains(&n);
    let mut steps = Vec::new();
    match r.state {
        RolloutState::Scheduled => {
            if !sent(Notice::Announced) {
                steps.push(Step::Notify(Notice::Announced));
            }
            if now_ms >= r.enforce_at_ms {
                if q.unresolved_potentially_blocked == 0 {
                    steps.push(Step::Enforce);
                    steps.push(Step::Notify(Notice::Enforced));
                } else {
                    steps.push(Step::Postpone {
                        until_ms: now_ms + DAY_MS,
                        reason: format!(
                            "{} unresolved potentially-blocked alert(s) on its workloads in the last {} day(s): enforcing now would break traffic the policy does not allow yet",
                            q.unresolved_potentially_blocked, r.readiness_days
                        ),
                    });
                }
            } else if now_ms >= r.enforce_at_ms - DAY_MS && !sent(Notice::DayBefore) {
                steps.push(Step::Notify(Notice::DayBefore));
            }
        }
        RolloutState::Enforced { at_ms } => {
            let quiet_since = q.last_blocked_ms.map_or(at_ms, |b| b.max(at_ms));
            if now_ms - quiet_since >= i64::from(r.watch_days) * DAY_MS {
                steps.push(Step::Complete);
                steps.push(Step::Notify(Notice::Completed));
            }
        }
        RolloutState::Completed { .. } | RolloutState::RolledBack { .. } => {}
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout() -> Rollout {
        Rollout {
            id: 1,
            name: "payments".into(),
            selector: Labels::parse_list("app=payments").unwrap(),
            owners: vec![],
            announced_ms: 0,
            monitor_start_ms: 0,
            enforce_at_ms: 14 * DAY_MS,
            readiness_days: 7,
            watch_days: 14,
            state: RolloutState::Scheduled,
            notices: vec![],
            postponements: vec![],
            previous_modes: BTreeMap::new(),
        }
    }

    #[test]
    fn announces_once_then_warns_the_day_before() {
        let mut r = rollout();
        let quiet = Quietness::default();
        assert_eq!(plan(&r, 0, &quiet), vec![Step::Notify(Notice::Announced)]);
        r.notices.push(Notice::Announced);
        assert_eq!(plan(&r, 12 * DAY_MS, &quiet), vec![]);
        assert_eq!(
            plan(&r, 13 * DAY_MS, &quiet),
            vec![Step::Notify(Notice::DayBefore)]
        );
        r.notices.push(Notice::DayBefore);
        assert_eq!(plan(&r, 13 * DAY_MS + 1, &quiet), vec![]);
    }

    #[test]
    fn enforces_on_the_date_only_when_ready() {
        let mut r = rollout();
        r.notices = vec![Notice::Announced, Notice::DayBefore];
        let noisy = Quietness {
            unresolved_potentially_blocked: 3,
            last_blocked_ms: None,
        };
        let steps = plan(&r, 14 * DAY_MS, &noisy);
        assert!(
            matches!(&steps[..], [Step::Postpone { until_ms, reason }] if *until_ms == 15 * DAY_MS && reason.contains("3 unresolved")),
            "{steps:?}"
        );
        assert_eq!(
            plan(&r, 14 * DAY_MS, &Quietness::default()),
            vec![Step::Enforce, Step::Notify(Notice::Enforced)]
        );
    }

    #[test]
    fn completes_after_the_watch_without_blocked_flows() {
        let mut r = rollout();
        r.state = RolloutState::Enforced { at_ms: 14 * DAY_MS };
        let quiet = Quietness::default();
        assert_eq!(plan(&r, 27 * DAY_MS, &quiet), vec![]);
        assert_eq!(
            plan(&r, 28 * DAY_MS, &quiet),
            vec![Step::Complete, Step::Notify(Notice::Completed)]
        );
        // A blocked flow restarts the watch.
        let blocked = Quietness {
            unresolved_potentially_blocked: 0,
            last_blocked_ms: Some(20 * DAY_MS),
        };
        assert_eq!(plan(&r, 28 * DAY_MS, &blocked), vec![]);
        assert_eq!(
            plan(&r, 34 * DAY_MS, &blocked),
            vec![Step::Complete, Step::Notify(Notice::Completed)]
        );
    }

    #[test]
    fn finished_rollouts_do_nothing() {
        let mut r = rollout();
        r.state = RolloutState::RolledBack { at_ms: 1 };
        assert_eq!(plan(&r, 100 * DAY_MS, &Quietness::default()), vec![]);
    }
}
