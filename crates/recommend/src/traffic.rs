//! What recommendation and coverage read of observed traffic: one row per conversation
//! and process with its weight, not the summaries themselves. The server asks the flow
//! store for these rows folded in the database (a window's hour summaries are many
//! times more); [`fold`] makes them from summaries for callers that hold those.

use std::net::IpAddr;

use bulkhead_model::FlowSummary;
use rustc_hash::FxHashMap;

/// The traffic of a window between two addresses on one service and process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traffic {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub port: u16,
    pub process: Option<String>,
    /// Connections, counting a summary that counted none as one (an exporter that does
    /// not count connections still saw the conversation).
    pub connections: u64,
    pub bytes: u64,
    /// The summaries it folds.
    pub summaries: u64,
}

/// The summaries starting in `[from_ms, to_ms)` (either bound optional) folded into
/// traffic rows ordered by conversation and process, and how many summaries fell
/// outside the window.
pub fn fold(
    summaries: &[FlowSummary],
    from_ms: Option<i64>,
    to_ms: Option<i64>,
) -> (Vec<Traffic>, u64) {
    type Key<'a> = (IpAddr, IpAddr, u8, u16, Option<&'a str>);
    let mut rows: FxHashMap<Key<'_>, (u64, u64, u64)> = FxHashMap::default();
    let mut outside = 0;
    for s in summaries {
        let t = s.key.bucket_start_ms;
        if from_ms.is_some_and(|f| t < f) || to_ms.is_some_and(|e| t >= e) {
            outside += 1;
            continue;
        }
        let k = &s.key;
        let e = rows
            .entry((k.src, k.dst, k.proto, k.port, k.process.as_deref()))
            .or_default();
        e.0 += s.connections.max(1);
        e.1 += s.bytes;
        e.2 += 1;
    }
    let mut out: Vec<Traffic> = rows
        .into_iter()
        .map(
            |((src, dst, proto, port, process), (connections, bytes, summaries))| Traffic {
                src,
                dst,
                proto,
                port,
                process: process.map(str::to_string),
                connections,
                bytes,
                summaries,
            },
        )
        .collect();
    out.sort_unstable_by(|a, b| {
        (a.src, a.dst, a.proto, a.port, &a.process)
            .cmp(&(b.src, b.dst, b.proto, b.port, &b.process))
    });
    (out, outside)
}
