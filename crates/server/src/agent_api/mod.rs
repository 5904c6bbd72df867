//! Host agents: pairing profiles, enrollment, heartbeats, per-host policy, events and
//! flows (the server side of `bulkhead_api::agent`), and the offline watch.
//!
//! Agents authenticate with their own credential (`bh_agent_…`, hashed at rest like API
//! tokens), which carries no role: it can only read its own workload's policy and report
//! about its own host. Users manage pairing profiles and agents with ordinary tokens.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use bulkhead_api::{
    AgentEvent, AgentEvents, EnrollRequest, EnrollResponse, FlowBatch, FlowBatchAck, Heartbeat,
    HeartbeatResponse, HostFlow, LoggedPacket, WirePolicy,
};
use bulkhead_model::{Bucket, EnforcementMode, Labels, SummaryKey, SummaryVerdict, VerdictKind};
use bulkhead_store::control::{
    AgentRecord, AlertObservation, AlertRecord, AlertRecorded, AuditContext, Change, NewAgent,
    NewPairingProfile,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Principal, Role, token_hash};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, blocking, lock, now_ms};

pub use crate::state::AgentSettings;

pub(crate) mod agents;
pub(crate) mod calls;
pub(crate) mod enroll;
pub(crate) mod pairing;

pub use agents::{approve_agent, delete_agent, list_agents, watch_offline};
pub use calls::{AgentCaller, events, flows, heartbeat, policy, wire_policy};
pub use enroll::enroll;
pub use pairing::{create_pairing_profile, list_pairing_profiles, revoke_pairing_profile};

fn random_secret(prefix: &str) -> ApiResult<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::Internal(format!("no randomness: {e}")))?;
    Ok(format!("{prefix}{}", hex::encode(bytes)))
}

fn parse_body<T: serde::de::DeserializeOwned>(body: Value) -> ApiResult<T> {
    serde_json::from_value(body).map_err(|e| {
        // serde names the field in its message ("missing field `name`", "unknown field …").
        let msg = e.to_string();
        let field = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.contains("field"))
            .unwrap_or("(body)")
            .to_string();
        ApiError::invalid(field, msg)
    })
}

fn flow_acked(a: &AgentRecord) -> u64 {
    a.status_json
        .as_deref()
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|v| v["flow_batch_acked"].as_u64())
        .unwrap_or(0)
}

/// Records one alert and returns it when it is new or reopened (to announce).
fn record(
    c: &mut bulkhead_store::control::ControlStore,
    obs: AlertObservation,
) -> ApiResult<Option<AlertRecord>> {
    let (record, recorded) = c.record_alert(obs)?;
    Ok((recorded != AlertRecorded::Repeated).then_some(record))
}

fn announce(s: &AppState, alerts: &[AlertRecord]) {
    if let Some(d) = s.dispatcher.lock().ok().and_then(|d| d.clone()) {
        for a in alerts {
            d.send(crate::alerts::event_of(a));
        }
    }
}
