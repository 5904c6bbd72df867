use serde::{Deserialize, Serialize};

/// Well-known values of [`AlertEvent::kind`]; the field stays a string so that new
/// kinds need no change here.
pub mod kind {
    pub const POTENTIALLY_BLOCKED: &str = "potentially_blocked";
    pub const BLOCKED: &str = "blocked";
    pub const AGENT_OFFLINE: &str = "agent_offline";
    pub const TAMPER: &str = "tamper";
    pub const QUARANTINE: &str = "quarantine";
    pub const ROLLOUT: &str = "rollout";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// The RFC 5424 severity code (2 critical, 4 warning, 6 informational).
    pub fn syslog_code(self) -> u8 {
        match self {
            Severity::Critical => 2,
            Severity::Warning => 4,
            Severity::Info => 6,
        }
    }

    /// The CEF severity (0-10): the middle of the low, medium and very-high bands.
    pub fn cef_severity(self) -> u8 {
        match self {
            Severity::Info => 3,
            Severity::Warning => 6,
            Severity::Critical => 9,
        }
    }
}

/// One alert, as every sink receives it. `key` is the deduplication key: repeated
/// occurrences of the same condition update `count` and `last_seen_ms` of one alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub id: u64,
    pub kind: String,
    pub severity: Severity,
    pub title: String,
    pub key: String,
    pub src_group: Option<String>,
    pub dst_group: Option<String>,
    pub proto: Option<u8>,
    pub port: Option<u16>,
    pub count: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub state: String,
    pub details: serde_json::Value,
}
