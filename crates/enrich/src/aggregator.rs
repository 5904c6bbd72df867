use std::sync::Arc;

use bulkhead_model::{Bucket, FlowSummary, SummaryKey};
use rustc_hash::FxHashMap;

use crate::direction::orient;
use crate::{Enricher, Observation};

/// The hot part of a summary. Enrichment and verdicts are added once, when the bucket
/// is flushed, so the per-record cost is two hash updates.
#[derive(Debug, Clone, Copy)]
struct Counters {
    packets: u64,
    bytes: u64,
    connections: u64,
    first_ms: i64,
    last_ms: i64,
    reporter: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AggregatorStats {
    pub records: u64,
    pub open_minute: usize,
    pub open_hour: usize,
    pub flushed: u64,
}

/// Folds observations into per-minute and per-hour summaries.
#[derive(Debug)]
pub struct Aggregator {
    enricher: Arc<Enricher>,
    open: FxHashMap<SummaryKey, Counters>,
    reporters: Vec<String>,
    reporter_ids: FxHashMap<String, u32>,
    records: u64,
    flushed: u64,
}

impl Aggregator {
    pub fn new(enricher: Arc<Enricher>) -> Self {
        Self {
            enricher,
            open: FxHashMap::default(),
            reporters: Vec::new(),
            reporter_ids: FxHashMap::default(),
            records: 0,
            flushed: 0,
        }
    }

    /// Swaps in new inventory or policy; open buckets are enriched with it at flush.
    pub fn set_enricher(&mut self, enricher: Arc<Enricher>) {
        self.enricher = enricher;
    }

    pub fn enricher(&self) -> &Arc<Enricher> {
        &self.enricher
    }

    fn reporter_id(&mut self, r: &str) -> u32 {
        if let Some(&id) = self.reporter_ids.get(r) {
            return id;
        }
        let id = self.reporters.len() as u32;
        self.reporters.push(r.to_string());
        self.reporter_ids.insert(r.to_string(), id);
        id
    }

    /// Adds one observation; `now_ms` stands in for timestamps the source did not give.
    pub fn add(&mut self, o: &Observation, now_ms: i64) {
        self.records += 1;
        let dir = orient(o, &self.enricher.listening);
        let start = o.start_ms.unwrap_or(now_ms);
        let end = o.end_ms.unwrap_or(start).max(start);
        let reporter = self.reporter_id(&o.reporter);
        for bucket in [Bucket::Minute, Bucket::Hour] {
            let key = SummaryKey {
                bucket,
                bucket_start_ms: bucket.start_of(start),
                src: dir.consumer,
                dst: dir.provider,
                proto: o.proto,
                port: dir.port,
                process: o.process.clone(),
            };
            let c = self.open.entry(key).or_insert(Counters {
                packets: 0,
                bytes: 0,
                connections: 0,
                first_ms: start,
                last_ms: end,
                reporter,
            });
            c.packets = c
                .packets
                .saturating_add(o.packets)
                .saturating_add(o.reverse_packets);
            c.bytes = c
                .bytes
                .saturating_add(o.bytes)
                .saturating_add(o.reverse_bytes);
            // A reply record is the same connection seen from the other side.
            c.connections += if dir.reversed { 0 } else { o.connections };
            c.first_ms = c.first_ms.min(start);
            c.last_ms = c.last_ms.max(end);
        }
    }

    fn materialize(&self, key: SummaryKey, c: Counters) -> FlowSummary {
        let mut s = self
            .enricher
            .summary(key, Some(self.reporters[c.reporter as usize].clone()));
        s.packets = c.packets;
        s.bytes = c.bytes;
        // A conversation seen only as replies still happened once.
        s.connections = c.connections.max(1);
        s.first_seen_ms = c.first_ms;
        s.last_seen_ms = c.last_ms;
        s
    }

    /// Removes and returns the summaries of buckets that ended at least `grace_ms`
    /// before `now_ms`: late records for them are not expected any more.
    pub fn flush(&mut self, now_ms: i64, grace_ms: i64) -> Vec<FlowSummary> {
        let closed: Vec<SummaryKey> = self
            .open
            .keys()
            .filter(|k| k.bucket_start_ms + k.bucket.millis() + grace_ms <= now_ms)
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(closed.len());
        for k in closed {
            if let Some(c) = self.open.remove(&k) {
                out.push(self.materialize(k, c));
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        self.flushed += out.len() as u64;
        out
    }

    /// Removes and returns every open summary (shutdown, end of a file).
    pub fn flush_all(&mut self) -> Vec<FlowSummary> {
        let open = std::mem::take(&mut self.open);
        let mut out: Vec<FlowSummary> = open
            .into_iter()
            .map(|(k, c)| self.materialize(k, c))
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        self.flushed += out.len() as u64;
        out
    }

    pub fn stats(&self) -> AggregatorStats {
        let open_minute = self
            .open
            .keys()
            .filter(|k| k.bucket == Bucket::Minute)
            .count();
        AggregatorStats {
            records: self.records,
            open_minute,
            open_hour: self.open.len() - open_minute,
            flushed: self.flushed,
        }
    }

    pub fn open_len(&self) -> usize {
        self.open.len()
    }
}
