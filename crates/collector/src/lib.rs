//! UDP flow collectors.
//!
//! Each listen address gets one socket per core, bound with `SO_REUSEPORT`: the kernel
//! spreads exporters over the sockets by their address, so one exporter always reaches
//! the same worker and its templates stay in that worker's decoder. Every worker
//! decodes, enriches and aggregates on its own, without locks on the per-record path,
//! and hands closed buckets to a sink thread.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bulkhead_enrich::{Aggregator, Closed, Enricher, Observation, TimeBounds};
use bulkhead_flow::{Decoder, ExporterStats, ExporterTableStats};

use bulkhead_model::FlowSummary;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::IoSliceMut;
use std::os::fd::AsRawFd;

/// Defaults: NetFlow, IPFIX and sFlow on every interface.
pub const DEFAULT_NETFLOW: &str = "0.0.0.0:2055";
pub const DEFAULT_IPFIX: &str = "0.0.0.0:4739";
pub const DEFAULT_SFLOW: &str = "0.0.0.0:6343";

#[derive(Debug, Clone)]
pub struct CollectorConfig {
    pub listen: Vec<SocketAddr>,
    /// Sockets (and worker threads) per listen address; defaults to the core count.
    pub workers: usize,
    /// Requested receive buffer per socket; the kernel caps it at `net.core.rmem_max`.
    pub recv_buffer: usize,
    /// How often workers hand closed buckets to the sink.
    pub flush_every: Duration,
    /// How long after a bucket ends late records are still folded into it.
    pub grace: Duration,
    /// How far a record's times may stray from this machine's clock before the
    /// time of receipt stands in for them (counted in the metrics). `None` takes
    /// record times as they come: for replays of captures, whose times are history.
    pub time_bounds: Option<TimeBounds>,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            listen: [DEFAULT_NETFLOW, DEFAULT_IPFIX, DEFAULT_SFLOW]
                .iter()
                .map(|a| a.parse().expect("valid default"))
                .collect(),
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            recv_buffer: 64 << 20,
            flush_every: Duration::from_secs(1),
            grace: Duration::from_secs(10),
            time_bounds: Some(TimeBounds::LIVE),
        }
    }
}

/// How long the sink thread waits for a batch before calling the sink with none.
pub const SINK_IDLE_TICK: Duration = Duration::from_secs(1);

/// Counters shared by every worker, readable at any time.
#[derive(Debug, Default)]
pub struct Metrics {
    pub datagrams: AtomicU64,
    pub records: AtomicU64,
    pub malformed: AtomicU64,
    pub no_template: AtomicU64,
    pub summaries: AtomicU64,
    pub sets_truncated: AtomicU64,
    pub sets_unsupported: AtomicU64,
    pub sequence_gaps: AtomicU64,
    pub exporter_table_full: AtomicU64,
    pub exporters_evicted: AtomicU64,
    pub exporters_expired: AtomicU64,
    pub time_clamped_future: AtomicU64,
    pub time_clamped_past: AtomicU64,
    /// A gauge: workers add what their templates grew by and take off what they shrank by.
    pub template_bytes: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MetricsSnapshot {
    pub datagrams: u64,
    pub records: u64,
    pub malformed: u64,
    pub no_template: u64,
    pub summaries: u64,
    /// Datagrams the kernel dropped on our sockets (receive buffer full).
    pub dropped: u64,
    /// Data sets that yielded no record: cut short, or of a set id we do not read.
    pub sets_truncated: u64,
    pub sets_unsupported: u64,
    /// Records the exporters' sequence numbers say were sent and never arrived.
    pub sequence_gaps: u64,
    /// New exporters that found the table full (each evicted an idle one).
    pub exporter_table_full: u64,
    pub exporters_evicted: u64,
    /// Exporters forgotten after a long silence.
    pub exporters_expired: u64,
    /// Records whose end lay beyond the allowed clock skew, filed at receipt.
    pub time_clamped_future: u64,
    /// Records whose end lay further back than any live exporter reports.
    pub time_clamped_past: u64,
    /// Memory the workers' templates hold now (each worker within its own budget).
    pub template_bytes: u64,
}

/// The inventory and policy the workers enrich with; replace it to make them use new ones.
pub type SharedEnricher = Arc<RwLock<Arc<Enricher>>>;

/// A running collector. Dropping it without [`Collector::stop`] leaves the threads running
/// until the process ends.
#[derive(Debug)]
pub struct Collector {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    sink: Option<JoinHandle<()>>,
    metrics: Arc<Metrics>,
    local: Vec<SocketAddr>,
    ports: Vec<u16>,
    /// Each worker's exporters and table, replaced at its every flush.
    exporters: Vec<Arc<Mutex<Vec<ExporterStats>>>>,
    tables: Vec<Arc<Mutex<ExporterTableStats>>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn bind(addr: SocketAddr, recv_buffer: usize) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: a small buffer only means earlier drops, which are counted.
    let _ = socket.set_recv_buffer_size(recv_buffer);
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

impl Collector {
    /// Binds every socket first (so a port in use fails before anything runs), then
    /// starts the workers and the sink thread, which calls `sink` with each batch of
    /// closed summaries, with the rest at stop, and with an empty batch after each
    /// [`SINK_IDLE_TICK`] without one.
    pub fn start<F>(
        config: &CollectorConfig,
        enricher: SharedEnricher,
        mut sink: F,
    ) -> std::io::Result<Collector>
    where
        F: FnMut(Vec<FlowSummary>) + Send + 'static,
    {
        let mut sockets = Vec::new();
        let mut local = Vec::new();
        for addr in &config.listen {
            // Port 0 means "any free port": bind the first socket, then the others to
            // the port it got, so every worker shares one address.
            let first = bind(*addr, config.recv_buffer)?;
            let bound = first.local_addr()?.as_socket().expect("inet socket");
            local.push(bound);
            sockets.push(first);
            for _ in 1..config.workers.max(1) {
                sockets.push(bind(bound, config.recv_buffer)?);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = mpsc::channel::<Closed>();
        // Enrichment and verdicts run here, off the workers' receive path.
        let sink_enricher = enricher.clone();
        let sink_thread = std::thread::Builder::new()
            .name("collector-sink".into())
            .spawn(move || {
                loop {
                    match rx.recv_timeout(SINK_IDLE_TICK) {
                        Ok(closed) => {
                            let current =
                                sink_enricher.read().map(|e| e.clone()).unwrap_or_default();
                            sink(closed.materialize(&current));
                        }
                        // A sink holding summaries its store refused retries on this
                        // call, so they are delivered when the store is back even if
                        // no traffic comes.
                        Err(mpsc::RecvTimeoutError::Timeout) => sink(Vec::new()),
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            })?;
        let mut workers = Vec::new();
        let (mut exporters, mut tables) = (Vec::new(), Vec::new());
        for (i, socket) in sockets.into_iter().enumerate() {
            let shared = Shared {
                stop: stop.clone(),
                metrics: metrics.clone(),
                exporters: Arc::default(),
                table: Arc::default(),
            };
            exporters.push(shared.exporters.clone());
            tables.push(shared.table.clone());
            let (tx, enricher) = (tx.clone(), enricher.clone());
            let pace = Pace {
                flush_every: config.flush_every,
                grace_ms: config.grace.as_millis() as i64,
                bounds: config.time_bounds,
            };
            workers.push(
                std::thread::Builder::new()
                    .name(format!("collector-{i}"))
                    .spawn(move || worker(socket, shared, tx, enricher, pace))?,
            );
        }
        let ports = local.iter().map(|a| a.port()).collect();
        Ok(Collector {
            stop,
            workers,
            sink: Some(sink_thread),
            metrics,
            local,
            ports,
            exporters,
            tables,
        })
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        let m = &self.metrics;
        MetricsSnapshot {
            datagrams: m.datagrams.load(Ordering::Relaxed),
            records: m.records.load(Ordering::Relaxed),
            malformed: m.malformed.load(Ordering::Relaxed),
            no_template: m.no_template.load(Ordering::Relaxed),
            summaries: m.summaries.load(Ordering::Relaxed),
            dropped: kernel_drops(&self.ports),
            sets_truncated: m.sets_truncated.load(Ordering::Relaxed),
            sets_unsupported: m.sets_unsupported.load(Ordering::Relaxed),
            sequence_gaps: m.sequence_gaps.load(Ordering::Relaxed),
            exporter_table_full: m.exporter_table_full.load(Ordering::Relaxed),
            exporters_evicted: m.exporters_evicted.load(Ordering::Relaxed),
            exporters_expired: m.exporters_expired.load(Ordering::Relaxed),
            time_clamped_future: m.time_clamped_future.load(Ordering::Relaxed),
            time_clamped_past: m.time_clamped_past.load(Ordering::Relaxed),
            template_bytes: m.template_bytes.load(Ordering::Relaxed),
        }
    }

    /// Every exporter the workers hold state for, as of their last flush (at most
    /// [`CollectorConfig::flush_every`] old), busiest first. An exporter whose
    /// datagrams come from several source ports may appear once per worker.
    pub fn exporters(&self) -> Vec<ExporterStats> {
        let mut all: Vec<ExporterStats> = self
            .exporters
            .iter()
            .filter_map(|w| w.lock().ok().map(|e| e.clone()))
            .flatten()
            .collect();
        all.sort_by(|a, b| {
            b.counters
                .records
                .cmp(&a.counters.records)
                .then(a.address.cmp(&b.address))
        });
        all
    }

    /// The exporter tables of every worker, added up.
    pub fn exporter_tables(&self) -> ExporterTableStats {
        let mut total = ExporterTableStats::default();
        for w in &self.tables {
            if let Ok(t) = w.lock() {
                total.exporters += t.exporters;
                total.probation += t.probation;
                total.protected += t.protected;
                total.max_exporters += t.max_exporters;
                total.max_protected += t.max_protected;
                total.table_full += t.table_full;
                total.evicted += t.evicted;
                total.expired += t.expired;
                total.promoted += t.promoted;
                total.demoted += t.demoted;
            }
        }
        total
    }

    /// Stops the workers, flushes every open summary to the sink, and waits for it.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(s) = self.sink.take() {
            let _ = s.join();
        }
    }
}

/// What a worker shares with the [`Collector`] handle.
struct Shared {
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    exporters: Arc<Mutex<Vec<ExporterStats>>>,
    table: Arc<Mutex<ExporterTableStats>>,
}

/// When a worker hands buckets on, and which record times it believes.
struct Pace {
    flush_every: Duration,
    grace_ms: i64,
    bounds: Option<TimeBounds>,
}

fn add_delta(counter: &AtomicU64, now: u64, before: u64) {
    counter.fetch_add(now.saturating_sub(before), Ordering::Relaxed);
}

fn worker(
    socket: Socket,
    shared_state: Shared,
    tx: mpsc::Sender<Closed>,
    shared: SharedEnricher,
    pace: Pace,
) {
    let Pace {
        flush_every,
        grace_ms,
        bounds,
    } = pace;
    let Shared {
        stop,
        metrics,
        exporters,
        table,
    } = shared_state;
    let socket: std::net::UdpSocket = socket.into();
    // The aggregator reads only the core fields; extra elements would cost allocations.
    let mut decoder = Decoder::with_config(bulkhead_flow::DecoderConfig {
        capture_extra: false,
        ..Default::default()
    });
    // The worker's enricher only serves provider inference (listening ports);
    // enrichment itself happens in the sink with the newest one.
    let current = shared.read().map(|e| e.clone()).unwrap_or_default();
    let mut aggregator = match bounds {
        Some(b) => Aggregator::live(current, b),
        None => Aggregator::new(current),
    };
    let mut clamped = (0, 0);
    let mut receiver = BatchReceiver::new(&socket);
    let mut records = Vec::with_capacity(64);
    let mut last_flush = std::time::Instant::now();
    let mut reported = bulkhead_flow::Counters::default();
    let mut reporters: std::collections::HashMap<SocketAddr, Arc<str>> =
        std::collections::HashMap::new();
    loop {
        match receiver.receive() {
            Ok(datagrams) => {
                let now = now_ms();
                for (from, datagram) in datagrams {
                    records.clear();
                    if decoder
                        .decode_at(from, datagram, now.max(0) as u64, &mut records)
                        .is_err()
                    {
                        continue;
                    }
                    // Spoofed source ports must not grow this without bound; the
                    // aggregator's buckets keep their own reference.
                    if reporters.len() >= MAX_REPORTER_NAMES && !reporters.contains_key(&from) {
                        reporters.clear();
                    }
                    let reporter = reporters
                        .entry(from)
                        .or_insert_with(|| format!("exporter {from}").into())
                        .clone();
                    for r in &records {
                        aggregator.add(&Observation::from_record(r, reporter.clone()), now);
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => tracing::warn!("collector receive error: {e}"),
        }
        let stopping = stop.load(Ordering::Relaxed);
        if stopping || last_flush.elapsed() >= flush_every {
            last_flush = std::time::Instant::now();
            // Publish decoder counters as deltas so several workers add up.
            let c = decoder.counters();
            metrics
                .datagrams
                .fetch_add(c.datagrams - reported.datagrams, Ordering::Relaxed);
            metrics
                .records
                .fetch_add(c.records - reported.records, Ordering::Relaxed);
            metrics
                .malformed
                .fetch_add(c.malformed - reported.malformed, Ordering::Relaxed);
            metrics
                .no_template
                .fetch_add(c.no_template - reported.no_template, Ordering::Relaxed);
            add_delta(
                &metrics.sets_truncated,
                c.sets_truncated,
                reported.sets_truncated,
            );
            add_delta(
                &metrics.sets_unsupported,
                c.sets_unsupported,
                reported.sets_unsupported,
            );
            add_delta(
                &metrics.sequence_gaps,
                c.sequence_gaps,
                reported.sequence_gaps,
            );
            add_delta(
                &metrics.exporter_table_full,
                c.exporter_table_full,
                reported.exporter_table_full,
            );
            add_delta(
                &metrics.exporters_evicted,
                c.exporters_evicted,
                reported.exporters_evicted,
            );
            add_delta(
                &metrics.exporters_expired,
                c.exporters_expired,
                reported.exporters_expired,
            );
            if c.template_bytes >= reported.template_bytes {
                add_delta(
                    &metrics.template_bytes,
                    c.template_bytes,
                    reported.template_bytes,
                );
            } else {
                metrics.template_bytes.fetch_sub(
                    reported.template_bytes - c.template_bytes,
                    Ordering::Relaxed,
                );
            }
            reported = c;
            let a = aggregator.stats();
            add_delta(&metrics.time_clamped_future, a.clamped_future, clamped.0);
            add_delta(&metrics.time_clamped_past, a.clamped_past, clamped.1);
            clamped = (a.clamped_future, a.clamped_past);
            decoder.expire_idle(now_ms().max(0) as u64);
            if let Ok(mut e) = exporters.lock() {
                *e = decoder.exporters();
            }
            if let Ok(mut t) = table.lock() {
                *t = decoder.exporter_table();
            }
            if let Ok(e) = shared.read()
                && !Arc::ptr_eq(&e, aggregator.enricher())
            {
                aggregator.set_enricher(e.clone());
            }
            let batch = if stopping {
                aggregator.flush_all_closed()
            } else {
                aggregator.flush_closed(now_ms(), grace_ms)
            };
            if !batch.is_empty() {
                metrics
                    .summaries
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                let _ = tx.send(batch);
            }
            if stopping {
                decoder.expire_pending();
                let c = decoder.counters();
                metrics
                    .no_template
                    .fetch_add(c.no_template - reported.no_template, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Names of the exporters' source addresses a worker keeps at most.
const MAX_REPORTER_NAMES: usize = 4096;

/// Datagrams taken from the socket per system call.
const RECEIVE_BATCH: usize = 32;

/// Receives up to [`RECEIVE_BATCH`] datagrams per `recvmmsg` call: at line rate a
/// system call per datagram is a visible share of a worker's time.
struct BatchReceiver<'s> {
    socket: &'s std::net::UdpSocket,
    buffers: Vec<Vec<u8>>,
    headers: MultiHeaders<SockaddrStorage>,
    received: Vec<(Option<SocketAddr>, usize)>,
}

impl<'s> BatchReceiver<'s> {
    fn new(socket: &'s std::net::UdpSocket) -> Self {
        Self {
            socket,
            // The largest UDP payload; anything shorter than a datagram would cut it.
            buffers: vec![vec![0u8; 65536]; RECEIVE_BATCH],
            headers: MultiHeaders::preallocate(RECEIVE_BATCH, None),
            received: Vec::with_capacity(RECEIVE_BATCH),
        }
    }

    /// Waits (up to the socket's read timeout) for one datagram, then takes the ones
    /// already queued behind it without waiting.
    fn receive(&mut self) -> std::io::Result<impl Iterator<Item = (SocketAddr, &[u8])>> {
        self.received.clear();
        {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
                .buffers
                .iter_mut()
                .map(|b| [IoSliceMut::new(b)])
                .collect();
            let results = recvmmsg(
                self.socket.as_raw_fd(),
                &mut self.headers,
                &mut slices,
                MsgFlags::MSG_WAITFORONE,
                None,
            )
            .map_err(std::io::Error::from)?;
            // One entry per message, even one without an inet address (none
            // arrives on these sockets), so the n-th entry stays the n-th buffer's.
            self.received.extend(results.map(|r| {
                let from = r.address.as_ref().and_then(|a| {
                    a.as_sockaddr_in()
                        .map(|v4| SocketAddr::from(*v4))
                        .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6)))
                });
                (from, r.bytes)
            }));
        }
        Ok(self
            .received
            .iter()
            .zip(&self.buffers)
            .filter_map(|(&(from, len), buffer)| Some((from?, &buffer[..len]))))
    }
}

/// Sums the kernel's per-socket drop counters for our UDP ports (`/proc/net/udp{,6}`,
/// last column). Zero where the files cannot be read.
pub fn kernel_drops(ports: &[u16]) -> u64 {
    let mut total = 0;
    for file in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let Some(local) = cols.get(1) else { continue };
            let port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if port.is_some_and(|p| ports.contains(&p)) {
                total += cols.last().and_then(|d| d.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    total
}
