use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use bulkhead_model::{Bucket, FlowSummary, SummaryKey};
use rustc_hash::FxHashMap;

use crate::direction::orient;
use crate::{Enricher, Observation};

/// Process names interned so that records carrying one do not allocate; past this
/// many the cache starts over (open keys keep their own reference).
const MAX_INTERNED_PROCESSES: usize = 10_000;

/// The aggregation key as the hot path hashes it: addresses as integers and the
/// process shared, so a record costs a few integer hashes and no allocation.
/// [`SummaryKey`] (enum addresses, an owned process name) is built once per bucket, at
/// flush.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HotKey {
    start_ms: i64,
    src: u128,
    dst: u128,
    port: u16,
    proto: u8,
    /// Bit 0: `src` is IPv6; bit 1: `dst` is. Keeps `::ffff:a.b.c.d` apart from `a.b.c.d`.
    v6: u8,
    process: Option<Arc<str>>,
}

fn pack(addr: IpAddr) -> (u128, bool) {
    match addr {
        IpAddr::V4(a) => (u32::from(a) as u128, false),
        IpAddr::V6(a) => (u128::from(a), true),
    }
}

fn unpack(bits: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(bits))
    } else {
        IpAddr::V4(Ipv4Addr::from(bits as u32))
    }
}

impl HotKey {
    fn summary_key(&self, bucket: Bucket) -> SummaryKey {
        SummaryKey {
            bucket,
            bucket_start_ms: self.start_ms,
            src: unpack(self.src, self.v6 & 1 != 0),
            dst: unpack(self.dst, self.v6 & 2 != 0),
            proto: self.proto,
            port: self.port,
            process: self.process.as_deref().map(str::to_string),
        }
    }
}

/// The hot part of a summary. Enrichment and verdicts are added once, when the bucket
/// is flushed, so the per-record cost is one hash update.
#[derive(Debug, Clone)]
struct Counters {
    packets: u64,
    bytes: u64,
    connections: u64,
    first_ms: i64,
    last_ms: i64,
    /// The first reporter of the bucket; shared, so a new bucket costs no allocation.
    reporter: Arc<str>,
}

impl Counters {
    fn fold(&mut self, o: &Counters) {
        self.packets = self.packets.saturating_add(o.packets);
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.connections = self.connections.saturating_add(o.connections);
        self.first_ms = self.first_ms.min(o.first_ms);
        self.last_ms = self.last_ms.max(o.last_ms);
    }
}

/// Closed summaries with their counters but not yet enriched: enrichment and verdicts
/// cost far more than counting, so a collector does them off its receive path.
#[derive(Debug, Default)]
pub struct Closed {
    entries: Vec<(SummaryKey, Counters)>,
}

impl Closed {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Enriched and verdicted summaries, sorted by key.
    pub fn materialize(self, enricher: &Enricher) -> Vec<FlowSummary> {
        let mut out: Vec<FlowSummary> = self
            .entries
            .into_iter()
            .map(|(key, c)| {
                let mut s = enricher.summary(key, Some(c.reporter.to_string()));
                s.packets = c.packets;
                s.bytes = c.bytes;
                // A conversation seen only as replies still happened once.
                s.connections = c.connections.max(1);
                s.first_seen_ms = c.first_ms;
                s.last_seen_ms = c.last_ms;
                s
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AggregatorStats {
    pub records: u64,
    pub open_minute: usize,
    pub open_hour: usize,
    pub flushed: u64,
    /// Records that said they ended later than the clock plus the allowed skew.
    pub clamped_future: u64,
    /// Records that said they ended longer ago than any live source reports.
    pub clamped_past: u64,
}

/// How far a live source's record times may stray from the receiver's clock.
///
/// An exporter with a wrong clock (or a NetFlow v5 uptime that wrapped) would
/// otherwise file its flows minutes ahead, where the console shows a connection
/// that has not happened yet, or decades back, where retention drops it at once.
/// A time outside these bounds cannot be true, so the time of receipt stands in
/// for it, and the record is counted. Times ahead by less than the skew are clock
/// jitter: they are pulled back to the clock without being counted, so no summary
/// ever ends after the moment it was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBounds {
    pub max_ahead_ms: i64,
    pub max_behind_ms: i64,
}

impl TimeBounds {
    /// Five seconds of skew; a day back (active timeouts are minutes long).
    pub const LIVE: TimeBounds = TimeBounds {
        max_ahead_ms: 5_000,
        max_behind_ms: 86_400_000,
    };
}

/// Folds observations into per-minute summaries, and closed minutes into per-hour ones.
///
/// Records only touch the minute table; an hour summary is the sum of its minutes, folded
/// in when each minute closes. An hour closes after its last minute (same grace), so
/// nothing arrives late to it.
#[derive(Debug)]
pub struct Aggregator {
    enricher: Arc<Enricher>,
    minutes: FxHashMap<HotKey, Counters>,
    hours: FxHashMap<HotKey, Counters>,
    processes: FxHashMap<String, Arc<str>>,
    /// `None` for files and replays, whose times are history, not live.
    time_bounds: Option<TimeBounds>,
    records: u64,
    flushed: u64,
    clamped_future: u64,
    clamped_past: u64,
}

impl Aggregator {
    pub fn new(enricher: Arc<Enricher>) -> Self {
        Self {
            enricher,
            minutes: FxHashMap::default(),
            hours: FxHashMap::default(),
            processes: FxHashMap::default(),
            time_bounds: None,
            records: 0,
            flushed: 0,
            clamped_future: 0,
            clamped_past: 0,
        }
    }

    /// An aggregator for a live source: record times are held to `bounds` around
    /// the `now_ms` each record is added with.
    pub fn live(enricher: Arc<Enricher>, bounds: TimeBounds) -> Self {
        Self {
            time_bounds: Some(bounds),
            ..Self::new(enricher)
        }
    }

    /// The record's start and end, held to the time bounds.
    fn record_times(&mut self, o: &Observation, now_ms: i64) -> (i64, i64) {
        let start = o.start_ms.unwrap_or(now_ms);
        let end = o.end_ms.unwrap_or(start).max(start);
        let Some(bounds) = self.time_bounds else {
            return (start, end);
        };
        if end > now_ms.saturating_add(bounds.max_ahead_ms) {
            self.clamped_future += 1;
        }
        if end < now_ms.saturating_sub(bounds.max_behind_ms) {
            self.clamped_past += 1;
            return (now_ms, now_ms);
        }
        let end = end.min(now_ms);
        let start = start
            .min(end)
            .max(now_ms.saturating_sub(bounds.max_behind_ms));
        (start, end)
    }

    /// Swaps in new inventory or policy; open buckets are enriched with it at flush.
    pub fn set_enricher(&mut self, enricher: Arc<Enricher>) {
        self.enricher = enricher;
    }

    pub fn enricher(&self) -> &Arc<Enricher> {
        &self.enricher
    }

    fn process(&mut self, name: &str) -> Arc<str> {
        if let Some(p) = self.processes.get(name) {
            return p.clone();
        }
        if self.processes.len() >= MAX_INTERNED_PROCESSES {
            self.processes.clear();
        }
        let p: Arc<str> = name.into();
        self.processes.insert(name.to_string(), p.clone());
        p
    }

    /// Adds one observation; `now_ms` stands in for timestamps the source did not give.
    pub fn add(&mut self, o: &Observation, now_ms: i64) {
        self.records += 1;
        let dir = orient(o, &self.enricher.listening);
        let (start, end) = self.record_times(o, now_ms);
        let (src, src_v6) = pack(dir.consumer);
        let (dst, dst_v6) = pack(dir.provider);
        let process = o.process.as_deref().map(|p| self.process(p));
        let key = HotKey {
            start_ms: Bucket::Minute.start_of(start),
            src,
            dst,
            port: dir.port,
            proto: o.proto,
            v6: src_v6 as u8 | (dst_v6 as u8) << 1,
            process,
        };
        let c = self.minutes.entry(key).or_insert_with(|| Counters {
            packets: 0,
            bytes: 0,
            connections: 0,
            first_ms: start,
            last_ms: end,
            reporter: o.reporter.clone(),
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

    fn fold_into_hour(hours: &mut FxHashMap<HotKey, Counters>, minute: &HotKey, c: &Counters) {
        let hour = HotKey {
            start_ms: Bucket::Hour.start_of(minute.start_ms),
            ..minute.clone()
        };
        hours
            .entry(hour)
            .and_modify(|h| h.fold(c))
            .or_insert_with(|| c.clone());
    }

    /// Takes the buckets of `table` that ended at least `grace_ms` before `now_ms`,
    /// handing each minute to `closing` first.
    fn take_closed(
        table: &mut FxHashMap<HotKey, Counters>,
        bucket: Bucket,
        now_ms: i64,
        grace_ms: i64,
        mut closing: impl FnMut(&HotKey, &Counters),
    ) -> Vec<(SummaryKey, Counters)> {
        let mut closed = Vec::new();
        table.retain(|k, c| {
            if k.start_ms + bucket.millis() + grace_ms > now_ms {
                return true;
            }
            closing(k, c);
            closed.push((k.summary_key(bucket), c.clone()));
            false
        });
        closed
    }

    fn closed(&mut self, entries: Vec<(SummaryKey, Counters)>) -> Closed {
        self.flushed += entries.len() as u64;
        Closed { entries }
    }

    /// Removes the buckets that ended at least `grace_ms` before `now_ms` (late records
    /// for them are not expected any more), without enriching them yet.
    pub fn flush_closed(&mut self, now_ms: i64, grace_ms: i64) -> Closed {
        let hours = &mut self.hours;
        let mut closed = Self::take_closed(
            &mut self.minutes,
            Bucket::Minute,
            now_ms,
            grace_ms,
            |k, c| Self::fold_into_hour(hours, k, c),
        );
        closed.extend(Self::take_closed(
            &mut self.hours,
            Bucket::Hour,
            now_ms,
            grace_ms,
            |_, _| {},
        ));
        self.closed(closed)
    }

    /// Removes every open bucket (shutdown, end of a file), without enriching them yet.
    pub fn flush_all_closed(&mut self) -> Closed {
        let mut closed = Vec::with_capacity(self.minutes.len() + self.hours.len());
        for (k, c) in std::mem::take(&mut self.minutes) {
            Self::fold_into_hour(&mut self.hours, &k, &c);
            closed.push((k.summary_key(Bucket::Minute), c));
        }
        for (k, c) in std::mem::take(&mut self.hours) {
            closed.push((k.summary_key(Bucket::Hour), c));
        }
        self.closed(closed)
    }

    /// [`Aggregator::flush_closed`], enriched with the current enricher.
    pub fn flush(&mut self, now_ms: i64, grace_ms: i64) -> Vec<FlowSummary> {
        let enricher = self.enricher.clone();
        self.flush_closed(now_ms, grace_ms).materialize(&enricher)
    }

    /// [`Aggregator::flush_all_closed`], enriched with the current enricher.
    pub fn flush_all(&mut self) -> Vec<FlowSummary> {
        let enricher = self.enricher.clone();
        self.flush_all_closed().materialize(&enricher)
    }

    pub fn stats(&self) -> AggregatorStats {
        AggregatorStats {
            records: self.records,
            open_minute: self.minutes.len(),
            open_hour: self.hours.len(),
            flushed: self.flushed,
            clamped_future: self.clamped_future,
            clamped_past: self.clamped_past,
        }
    }

    /// Open summaries of both widths.
    pub fn open_len(&self) -> usize {
        self.minutes.len() + self.hours.len()
    }
}
