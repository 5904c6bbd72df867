use std::net::IpAddr;
use std::sync::Arc;

use crate::FlowRecord;

/// One flow as any source reports it (exporter, cloud flow log, file, agent), before we
/// know which side opened it. The common input of enrichment and aggregation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Observation {
    /// Who reported it: `exporter 192.0.2.1:2055`, `aws eni-0a1b…`, an agent's name.
    /// Shared, because one exporter reports millions of records.
    pub reporter: Arc<str>,
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
    /// Traffic in the other direction carried by the same record (RFC 5103 biflows,
    /// Azure NSG tuples), counted in the same summary.
    pub reverse_packets: u64,
    pub reverse_bytes: u64,
    pub icmp_type: Option<u8>,
    /// Connections this record starts: 1 for an exporter's flow record, 0 for an update
    /// of a connection reported before (Azure's "continuing" and "end" tuples).
    pub connections: u64,
}

impl From<&FlowRecord> for Observation {
    fn from(r: &FlowRecord) -> Self {
        Observation::from_record(r, format!("exporter {}", r.exporter).into())
    }
}

impl Observation {
    /// The collector's hot path: the reporter name is made once per exporter, not per
    /// record.
    pub fn from_record(r: &FlowRecord, reporter: Arc<str>) -> Self {
        Observation {
            reporter,
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
            connections: 1,
        }
    }
}
