//! From flow records to enriched, verdicted summaries.
//!
//! 1. [`Observation`]: one flow record from any source (exporter, cloud log, file, agent).
//! 2. [`direction::orient`]: which side is the consumer and which the provider.
//! 3. [`Enricher`]: addresses → workloads and labels; verdicts against the provisioned
//!    policy and the draft.
//! 4. [`Aggregator`]: summaries per (consumer, provider, protocol, provider port,
//!    process) per minute and per hour.
//!
//! Pure: the caller supplies records and the current time.

mod aggregator;
pub mod direction;
mod enricher;

pub use aggregator::{Aggregator, AggregatorStats};
pub use direction::{ListeningPorts, Oriented};
pub use enricher::Enricher;

use std::net::IpAddr;

/// One flow as any source reports it, before we know who opened it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Who reported it: `exporter 192.0.2.1:2055`, `aws vpc flow logs`, an agent's name.
    pub reporter: String,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub packets: u64,
    pub bytes: u64,
    /// Unix milliseconds; `None` when the source did not say.
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    /// The provider's process when the reporter knows it (agents do).
    pub process: Option<String>,
    /// RFC 5103 biflow: traffic in the other direction, counted in the same summary.
    pub reverse_packets: u64,
    pub reverse_bytes: u64,
    pub icmp_type: Option<u8>,
}

impl From<&bulkhead_flow::FlowRecord> for Observation {
    fn from(r: &bulkhead_flow::FlowRecord) -> Self {
        Observation {
            reporter: format!("exporter {}", r.exporter),
            src: r.src_addr,
            dst: r.dst_addr,
            src_port: r.src_port,
            dst_port: r.dst_port,
            proto: r.protocol,
            packets: r.packets,
            bytes: r.bytes,
            start_ms: r.start_ms.map(|v| v as i64),
            end_ms: r.end_ms.map(|v| v as i64),
            process: None,
            reverse_packets: r.reverse_packets.unwrap_or(0),
            reverse_bytes: r.reverse_bytes.unwrap_or(0),
            icmp_type: r.icmp_type,
        }
    }
}
