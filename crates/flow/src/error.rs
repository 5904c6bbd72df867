use thiserror::Error;

/// Why a datagram was rejected. Every rejection is also counted in
/// [`Counters::malformed`](crate::Counters::malformed).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("empty datagram")]
    Empty,
    #[error("unsupported export version {0}")]
    UnsupportedVersion(u16),
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("netflow v5 record count {0} out of range 1..=30")]
    V5Count(u16),
    #[error("{0} bytes after the last netflow v5 record")]
    TrailingBytes(usize),
    #[error("netflow v9 header count {count} is below the {flowsets} flowsets present")]
    V9Count { count: u16, flowsets: usize },
    #[error("ipfix message length {declared} does not match datagram length {actual}")]
    MessageLength { declared: usize, actual: usize },
    #[error("set {set_id} has invalid length {length}")]
    SetLength { set_id: u16, length: usize },
    #[error("template {template_id}: {reason}")]
    Template {
        template_id: u16,
        reason: &'static str,
    },
    #[error("data set {template_id}: {reason}")]
    Data {
        template_id: u16,
        reason: &'static str,
    },
    #[error("too many templates for one exporter scope (limit {0})")]
    TemplateLimit(usize),
    #[error("template memory of the {budget} is full (limit {limit} bytes)")]
    TemplateMemory { budget: &'static str, limit: usize },
    /// No longer returned: a full exporter table evicts an idle or
    /// unproven exporter instead (see [`DecoderConfig`](crate::DecoderConfig)).
    /// Kept so that matches on it keep compiling.
    #[error("too many exporters with template state (limit {0})")]
    ExporterLimit(usize),
    #[error("sflow: {0}")]
    Sflow(&'static str),
}
