use std::sync::Arc;

use bulkhead_model::{Bucket, FlowSummary, SummaryKey};
use rustc_hash::FxHashMap;

use crate::direction::orient;
use crate::{Enricher, Observation};

/// The hot part of a summary. Enrichment and verdicts are added once, when the bucket
/// is flushed, so the per-record cost is one hash update.
#[derive(Debug, Clone, Copy)]
struct Counters {
    packets: u64,
    bytes: u64,
    connections: u64,
    first_ms: i64,
    last_ms: i64,
    reporter: u32,
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
    reporters: Vec<Arc<str>>,
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
                let mut s =
                    enricher.summary(key, Some(self.reporters[c.reporter as usize].to_string()));
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
    minutes: FxHashMap<SummaryKey, Counters>,
    hours: FxHashMap<SummaryKey, Counters>,
    reporters: Vec<Arc<str>>,
    reporter_ids: FxHashMap<Arc<str>, u32>,
    /// The last reporter seen: consecutive records nearly always share it.
    last_reporter: Option<(Arc<str>, u32)>,
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
            reporters: Vec::new(),
            reporter_ids: FxHashMap::default(),
            last_reporter: None,
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

    fn reporter_id(&mut self, r: &Arc<str>) -> u32 {
        if let Some((last, id)) = &self.last_reporter
            && Arc::ptr_eq(last, r)
        {
            return *id;
        }
        let id = match self.reporter_ids.get(r) {
            Some(&id) => id,
            None => {
                let id = self.reporters.len() as u32;
                self.reporters.push(r.clone());
                self.reporter_ids.insert(r.clone(), id);
                id
            }
        };
        self.last_reporter = Some((r.clone(), id));
        id
    }

    /// Adds one observation; `now_ms` stands in for timestamps the source did not give.
    pub fn add(&mut self, o: &Observation, now_ms: i64) {
        self.records += 1;
        let dir = orient(o, &self.enricher.listening);
        let (start, end) = self.record_times(o, now_ms);
        let reporter = self.reporter_id(&o.reporter);
        let key = SummaryKey {
            bucket: Bucket::Minute,
            bucket_start_ms: Bucket::Minute.start_of(start),
            src: dir.consumer,
            dst: dir.provider,
            proto: o.proto,
            port: dir.port,
            process: o.process.clone(),
        };
        let c = self.minutes.entry(key).or_insert(Counters {
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

    fn fold_into_hour(&mut self, minute: &SummaryKey, c: &Counters) {
        let hour = SummaryKey {
            bucket: Bucket::Hour,
            bucket_start_ms: Bucket::Hour.start_of(minute.bucket_start_ms),
            ..minute.clone()
        };
        self.hours
            .entry(hour)
            .and_modify(|h| h.fold(c))
            .or_insert(*c);
    }

    fn take_closed(
        &mut self,
        bucket: Bucket,
        now_ms: i64,
        grace_ms: i64,
    ) -> Vec<(SummaryKey, Counters)> {
        let table = match bucket {
            Bucket::Minute => &mut self.minutes,
            Bucket::Hour => &mut self.hours,
        };
        let closed: Vec<SummaryKey> = table
            .keys()
            .filter(|k| k.bucket_start_ms + bucket.millis() + grace_ms <= now_ms)
            .cloned()
            .collect();
        closed
            .into_iter()
            .filter_map(|k| table.remove(&k).map(|c| (k, c)))
            .collect()
    }

    fn closed(&mut self, entries: Vec<(SummaryKey, Counters)>) -> Closed {
        self.flushed += entries.len() as u64;
        Closed {
            entries,
            reporters: self.reporters.clone(),
        }
    }

    /// Removes the buckets that ended at least `grace_ms` before `now_ms` (late records
    /// for them are not expected any more), without enriching them yet.
    pub fn flush_closed(&mut self, now_ms: i64, grace_ms: i64) -> Closed {
        let minutes = self.take_closed(Bucket::Minute, now_ms, grace_ms);
        for (k, c) in &minutes {
            self.fold_into_hour(k, c);
        }
        let mut closed = minutes;
        closed.extend(self.take_closed(Bucket::Hour, now_ms, grace_ms));
        self.closed(closed)
    }

    /// Removes every open bucket (shutdown, end of a file), without enriching them yet.
    pub fn flush_all_closed(&mut self) -> Closed {
        let minutes: Vec<(SummaryKey, Counters)> =
            std::mem::take(&mut self.minutes).into_iter().collect();
        for (k, c) in &minutes {
            self.fold_into_hour(k, c);
        }
        let mut closed = minutes;
        closed.extend(std::mem::take(&mut self.hours));
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
