//! Alerts: recorded from sightings (deduplicated by key, counted, reopened by a later
//! sighting), listed by filter, and moved through their states by people.

use std::fmt;
use std::str::FromStr;

use super::sql::{Db, Row, RowError, Val, all, args, exec, int, one};
use super::{AuditContext, ControlStore, insert_audit, to_i64};
use crate::StoreError;

const ALERT_COLUMNS: &str = "id, key, kind, severity, title, details_json, count, \
    first_seen_ms, last_seen_ms, state, acknowledged_by, acknowledged_ms, resolved_by, \
    resolved_ms";

/// Where an alert is in its life.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Open,
    Acknowledged,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Open => "open",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }
}

impl fmt::Display for AlertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AlertState {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        match s {
            "open" => Ok(AlertState::Open),
            "acknowledged" => Ok(AlertState::Acknowledged),
            "resolved" => Ok(AlertState::Resolved),
            other => Err(StoreError::Invalid {
                what: format!("alert state {other:?} is not one of open, acknowledged, resolved"),
            }),
        }
    }
}

/// One or more sightings of what an alert is about, as the server saw them. Alerts are
/// deduplicated by `key`, which the server builds from what makes two sightings the
/// same alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertObservation {
    pub key: String,
    pub kind: String,
    pub severity: String,
    pub title: String,
    pub details_json: String,
    /// Sightings in this observation (flows, connections…).
    pub count: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

/// What [`ControlStore::record_alert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertRecorded {
    /// A new alert: notify.
    New,
    /// A resolved alert seen again after its resolution: open again, notify.
    Reopened,
    /// Added to an alert that was open or acknowledged (or resolved, for sightings from
    /// before its resolution): no news.
    Repeated,
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AlertRecord {
    pub id: u64,
    pub key: String,
    pub kind: String,
    pub severity: String,
    pub title: String,
    pub details_json: String,
    pub count: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub state: AlertState,
    pub acknowledged_by: Option<String>,
    pub acknowledged_ms: Option<i64>,
    pub resolved_by: Option<String>,
    pub resolved_ms: Option<i64>,
}

/// Which alerts [`ControlStore::alerts`] returns: all filters must match. Ordered by
/// last sighting, newest first (then id, newest first), then paged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertFilter {
    pub state: Option<AlertState>,
    pub kind: Option<String>,
    pub severity: Option<String>,
    /// Only alerts last seen at or after this time.
    pub since_ms: Option<i64>,
    pub limit: usize,
    pub offset: usize,
}

impl AlertFilter {
    pub const DEFAULT_LIMIT: usize = 100;
}

impl Default for AlertFilter {
    fn default() -> Self {
        Self {
            state: None,
            kind: None,
            severity: None,
            since_ms: None,
            limit: Self::DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

impl ControlStore {
    /// Records an observation: a new alert (state open) if its key is new; otherwise the
    /// count is added (saturating), first/last seen widen, and kind, severity, title and
    /// details take the new values. A resolved alert is reopened (state open, ack and
    /// resolution cleared) only by a sighting after its resolution: a late report of
    /// traffic from before it (an hour summary closing late) is counted but does not
    /// reopen it. An acknowledged alert stays acknowledged.
    pub fn record_alert(
        &mut self,
        a: AlertObservation,
    ) -> Result<(AlertRecord, AlertRecorded), StoreError> {
        let mut out = self.record_alerts(vec![a])?;
        out.pop().ok_or_else(|| StoreError::Backend {
            context: "recording an alert",
            source: "no alert was recorded".into(),
        })
    }

    /// As [`ControlStore::record_alert`] for many sightings, in one transaction: a
    /// batch of flow summaries costs one commit (one fsync), not one per alert, so the
    /// store's lock is not held for long whatever the batch. All or nothing; the
    /// results are in the order of `observations`.
    pub fn record_alerts(
        &mut self,
        observations: Vec<AlertObservation>,
    ) -> Result<Vec<(AlertRecord, AlertRecorded)>, StoreError> {
        for a in &observations {
            check_observation(a)?;
        }
        if observations.is_empty() {
            return Ok(Vec::new());
        }
        self.write("recording alerts", |db| {
            observations
                .iter()
                .map(|a| record_alert_row(db, a))
                .collect()
        })
    }

    /// The alerts matching `filter`, last seen newest first.
    pub fn alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
        let mut clauses = Vec::new();
        let mut params: Vec<Val> = Vec::new();
        if let Some(state) = filter.state {
            params.push(state.as_str().into());
            clauses.push(format!("state = ?{}", params.len()));
        }
        if let Some(kind) = &filter.kind {
            params.push(kind.into());
            clauses.push(format!("kind = ?{}", params.len()));
        }
        if let Some(severity) = &filter.severity {
            params.push(severity.into());
            clauses.push(format!("severity = ?{}", params.len()));
        }
        if let Some(since) = filter.since_ms {
            params.push(since.into());
            clauses.push(format!("last_seen_ms >= ?{}", params.len()));
        }
        let mut sql = format!("SELECT {ALERT_COLUMNS} FROM alert");
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        params.push(to_i64(filter.limit as u64).into());
        params.push(to_i64(filter.offset as u64).into());
        sql.push_str(&format!(
            " ORDER BY last_seen_ms DESC, id DESC LIMIT ?{} OFFSET ?{}",
            params.len() - 1,
            params.len()
        ));
        let ctx = "reading alerts";
        self.query(ctx, |db| all(db, ctx, &sql, &params, alert_row))
    }

    /// One alert.
    pub fn alert(&self, id: u64) -> Result<Option<AlertRecord>, StoreError> {
        self.query("reading an alert", |db| {
            get_alert(db, "id = ?1", to_i64(id).into())
        })
    }

    /// Moves an alert to `state`, recording who and when: acknowledging sets
    /// `acknowledged_by/ms`, resolving sets `resolved_by/ms`, opening clears both. Any
    /// state may move to any other; a change is audited (`alert/ID`, before and after
    /// its state), setting the state it already has writes nothing. `None` if there is
    /// no such alert.
    pub fn set_alert_state(
        &mut self,
        id: u64,
        state: AlertState,
        audit: &AuditContext,
    ) -> Result<Option<AlertRecord>, StoreError> {
        self.write("changing an alert's state", |db| {
            let Some(old) = get_alert(db, "id = ?1", to_i64(id).into())? else {
                return Ok(None);
            };
            if old.state == state {
                return Ok(Some(old));
            }
            set_state_row(db, id, state, Some(audit))?;
            insert_audit(
                db,
                audit,
                &format!("alert/{id}"),
                Some(old.state.as_str()),
                Some(state.as_str()),
            )?;
            get_alert(db, "id = ?1", to_i64(id).into())
        })
    }
}

fn set_state_row(
    db: &mut dyn Db,
    id: u64,
    state: AlertState,
    audit: Option<&AuditContext>,
) -> Result<(), StoreError> {
    let ctx = "changing an alert's state";
    match state {
        AlertState::Open => exec(
            db,
            ctx,
            "UPDATE alert SET state = 'open', acknowledged_by = NULL,
                acknowledged_ms = NULL, resolved_by = NULL, resolved_ms = NULL
             WHERE id = ?1",
            args![to_i64(id)],
        ),
        AlertState::Acknowledged | AlertState::Resolved => {
            let sql = if state == AlertState::Acknowledged {
                "UPDATE alert SET state = 'acknowledged', acknowledged_by = ?2,
                    acknowledged_ms = ?3, resolved_by = NULL, resolved_ms = NULL
                 WHERE id = ?1"
            } else {
                "UPDATE alert SET state = 'resolved', resolved_by = ?2, resolved_ms = ?3
                 WHERE id = ?1"
            };
            let who = audit.map(|a| a.actor.as_str());
            let at = audit.map(|a| a.at_ms);
            exec(db, ctx, sql, args![to_i64(id), who, at])
        }
    }?;
    Ok(())
}

fn get_alert(
    db: &mut dyn Db,
    condition: &str,
    arg: Val,
) -> Result<Option<AlertRecord>, StoreError> {
    one(
        db,
        "reading an alert",
        &format!("SELECT {ALERT_COLUMNS} FROM alert WHERE {condition}"),
        &[arg],
        alert_row,
    )
}

fn alert_row(r: &Row) -> Result<AlertRecord, RowError> {
    Ok(AlertRecord {
        id: r.unsigned(0)?,
        key: r.text(1)?,
        kind: r.text(2)?,
        severity: r.text(3)?,
        title: r.text(4)?,
        details_json: r.text(5)?,
        count: r.unsigned(6)?,
        first_seen_ms: r.int(7)?,
        last_seen_ms: r.int(8)?,
        state: r
            .text(9)?
            .parse()
            .map_err(|e: StoreError| RowError(e.to_string()))?,
        acknowledged_by: r.opt_text(10)?,
        acknowledged_ms: r.opt_int(11)?,
        resolved_by: r.opt_text(12)?,
        resolved_ms: r.opt_int(13)?,
    })
}

fn check_observation(a: &AlertObservation) -> Result<(), StoreError> {
    if a.key.is_empty() {
        return Err(StoreError::Invalid {
            what: "an alert needs a key".into(),
        });
    }
    if a.first_seen_ms > a.last_seen_ms {
        return Err(StoreError::Invalid {
            what: format!(
                "alert {} is first seen ({}) after it is last seen ({})",
                a.key, a.first_seen_ms, a.last_seen_ms
            ),
        });
    }
    Ok(())
}

fn record_alert_row(
    db: &mut dyn Db,
    a: &AlertObservation,
) -> Result<(AlertRecord, AlertRecorded), StoreError> {
    let count = to_i64(a.count);
    let ctx = "recording an alert";
    let existing = get_alert(db, "key = ?1", Val::from(&a.key))?;
    let (id, recorded) = match existing {
        None => {
            let id = int(
                db,
                ctx,
                "INSERT INTO alert (key, kind, severity, title, details_json, count,
                    first_seen_ms, last_seen_ms, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'open') RETURNING id",
                args![
                    &a.key,
                    &a.kind,
                    &a.severity,
                    &a.title,
                    &a.details_json,
                    count,
                    a.first_seen_ms,
                    a.last_seen_ms
                ],
            )?;
            (id, AlertRecorded::New)
        }
        Some(old) => {
            let reopen = old.state == AlertState::Resolved
                && old.resolved_ms.is_none_or(|r| a.last_seen_ms > r);
            // CASE rather than min()/max(): SQLite's two-argument forms are
            // PostgreSQL's LEAST/GREATEST.
            exec(
                db,
                ctx,
                "UPDATE alert SET kind = ?2, severity = ?3, title = ?4,
                    details_json = ?5,
                    count = CASE WHEN ?6 > 9223372036854775807 - count
                        THEN 9223372036854775807 ELSE count + ?6 END,
                    first_seen_ms = CASE WHEN ?7 < first_seen_ms
                        THEN ?7 ELSE first_seen_ms END,
                    last_seen_ms = CASE WHEN ?8 > last_seen_ms
                        THEN ?8 ELSE last_seen_ms END
                 WHERE id = ?1",
                args![
                    to_i64(old.id),
                    &a.kind,
                    &a.severity,
                    &a.title,
                    &a.details_json,
                    count,
                    a.first_seen_ms,
                    a.last_seen_ms
                ],
            )?;
            if reopen {
                set_state_row(db, old.id, AlertState::Open, None)?;
                (to_i64(old.id), AlertRecorded::Reopened)
            } else {
                (to_i64(old.id), AlertRecorded::Repeated)
            }
        }
    };
    let record = get_alert(db, "id = ?1", id.into())?.ok_or_else(|| StoreError::Backend {
        context: ctx,
        source: "the alert just written is not there".into(),
    })?;
    Ok((record, recorded))
}
