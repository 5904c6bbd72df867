use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bulkhead_collector::{Collector, CollectorConfig};
use bulkhead_enrich::Aggregator;
use bulkhead_flow::{Decoder, FlowRecord, import};
use bulkhead_model::{Bucket, FlowSummary, Labels, ServicePort, VerdictKind, protocol_name};
use bulkhead_store::{FlowQuery, FlowStore, Retention, SqliteFlowStore};
use clap::{Subcommand, ValueEnum};

use crate::estate::EnrichArgs;
use crate::pcap;
use crate::{EXIT_INVALID, Reported};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ImportFormat {
    /// AWS VPC flow logs (default version 2, or a header line naming the fields).
    Aws,
    /// Azure NSG flow logs, version 2 (JSON).
    Azure,
    /// CSV with a header: start,end,src,dst,src_port,dst_port,proto,packets,bytes[,process,reporter].
    Csv,
    /// One JSON object per line, same fields as csv.
    Jsonl,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BucketArg {
    Minute,
    Hour,
}

impl From<BucketArg> for Bucket {
    fn from(b: BucketArg) -> Bucket {
        match b {
            BucketArg::Minute => Bucket::Minute,
            BucketArg::Hour => Bucket::Hour,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum FlowsCommand {
    /// Decode NetFlow v5/v9, IPFIX and sFlow from pcap/pcapng captures (any UDP port; each
    /// source address:port is one exporter) or raw datagram files (one datagram per file,
    /// all from one exporter). Prints one JSON object per flow record.
    Decode {
        /// The exporter address raw datagram files are attributed to.
        #[arg(long, default_value = "0.0.0.0:0")]
        exporter: SocketAddr,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Replay the export datagrams of a capture to a collector on this machine, paced in
    /// flow records per second (for tests and benchmarks; loopback addresses only).
    Replay {
        capture: PathBuf,
        /// Where to send: a loopback address (127.0.0.0/8 or ::1).
        #[arg(long)]
        to: SocketAddr,
        /// Flow records per second over all senders (0: as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Independent exporters (source sockets), each replaying the whole capture.
        #[arg(long, default_value_t = 1)]
        senders: usize,
    },
    /// Import flow logs into the flow store, enriched and verdicted. Any malformed line
    /// stops the import before anything is stored.
    Import {
        #[arg(long, value_enum)]
        format: ImportFormat,
        /// The data directory (the flow store is DIR/flows.sqlite).
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        enrich: EnrichArgs,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Receive NetFlow/IPFIX/sFlow over UDP into the flow store until Ctrl-C.
    Collect {
        #[arg(long)]
        data: PathBuf,
        /// Listen addresses (default: 0.0.0.0:2055, 0.0.0.0:4739, 0.0.0.0:6343).
        #[arg(long)]
        listen: Vec<SocketAddr>,
        #[command(flatten)]
        enrich: EnrichArgs,
        /// Stop after this long (e.g. 30s, 5m) instead of waiting for Ctrl-C.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Worker threads per listen address (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
        #[command(flatten)]
        record_times: crate::collector_cmd::RecordTimeArgs,
    },
    /// Query flow summaries.
    Query {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_enum, default_value = "minute")]
        bucket: BucketArg,
        /// Only the last DURATION of data (e.g. 1h, 7d), counted back from the newest summary.
        #[arg(long, value_parser = humantime::parse_duration)]
        last: Option<Duration>,
        /// Window start, RFC 3339 (e.g. 2024-03-04T09:00:00Z).
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        from: Option<SystemTime>,
        /// Window end (exclusive), RFC 3339.
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        to: Option<SystemTime>,
        /// Either side is this workload.
        #[arg(long)]
        workload: Option<String>,
        /// Either side carries these labels (k=v,k=v).
        #[arg(long)]
        labels: Option<String>,
        /// Either side has this address.
        #[arg(long)]
        address: Option<IpAddr>,
        /// Provider protocol and port, e.g. tcp/5432.
        #[arg(long)]
        port: Option<String>,
        /// allowed, potentially_blocked or blocked (against the provisioned policy).
        #[arg(long)]
        verdict: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, default_value_t = 0)]
        offset: usize,
        #[arg(long)]
        json: bool,
    },
}

fn rfc3339(ms: Option<u64>) -> serde_json::Value {
    match ms {
        Some(ms) => humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms))
            .to_string()
            .into(),
        None => serde_json::Value::Null,
    }
}

fn record_json(r: &FlowRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("start".into(), rfc3339(r.start_ms));
        o.insert("end".into(), rfc3339(r.end_ms));
        o.insert("exporter".into(), r.exporter.to_string().into());
        let extra: serde_json::Map<String, serde_json::Value> = r
            .extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone().into()))
            .collect();
        o.insert("extra".into(), extra.into());
    }
    v
}

pub fn run(cmd: FlowsCommand) -> anyhow::Result<()> {
    match cmd {
        FlowsCommand::Decode { exporter, files } => decode(exporter, &files),
        FlowsCommand::Replay {
            capture,
            to,
            rate,
            senders,
        } => replay(&capture, to, rate, senders.max(1)),
        FlowsCommand::Import {
            format,
            data,
            enrich,
            files,
        } => import_files(format, &data, &enrich, &files),
        FlowsCommand::Collect {
            data,
            listen,
            enrich,
            duration,
            workers,
            record_times,
        } => collect(&data, listen, &enrich, duration, workers, &record_times),
        FlowsCommand::Query {
            data,
            bucket,
            last,
            from,
            to,
            workload,
            labels,
            address,
            port,
            verdict,
            limit,
            offset,
            json,
        } => {
            let store = open_store(&data)?;
            let bucket = Bucket::from(bucket);
            let ms = |t: SystemTime| {
                t.duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0)
            };
            let newest = store.stats()?.get(bucket).newest_start_ms.unwrap_or(0) + bucket.millis();
            let from_ms = match (from, last) {
                (Some(f), _) => ms(f),
                (None, Some(d)) => newest - d.as_millis() as i64,
                (None, None) => i64::MIN,
            };
            let mut q = FlowQuery::new(bucket, from_ms, to.map(ms).unwrap_or(i64::MAX));
            q.workload = workload;
            q.address = address;
            q.limit = limit;
            q.offset = offset;
            if let Some(l) = labels {
                q.labels =
                    Some(Labels::parse_list(&l).map_err(|e| invalid(format!("--labels: {e}")))?);
            }
            if let Some(p) = port {
                let (proto, port) =
                    ServicePort::parse_single(&p).map_err(|e| invalid(format!("--port: {e}")))?;
                q.proto = Some(proto);
                q.port = Some(port);
            }
            if let Some(v) = verdict {
                q.verdict = Some(
                    v.parse::<VerdictKind>()
                        .map_err(|e| invalid(format!("--verdict: {e}")))?,
                );
            }
            let rows = store.query(&q)?;
            if json {
                for r in &rows {
                    outln!("{}", serde_json::to_string(r)?);
                }
            } else {
                print_summaries(&rows);
            }
            Ok(())
        }
    }
}

fn decode(exporter: SocketAddr, files: &[PathBuf]) -> anyhow::Result<()> {
    // Read everything first: a file that cannot be read stops the run before any output.
    let mut inputs = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| {
            eprintln!("error: {}: {e}", f.display());
            Reported(EXIT_INVALID)
        })?;
        let datagrams = if pcap::is_capture(&bytes) {
            pcap::udp_datagrams(&bytes).map_err(|e| {
                eprintln!("error: {}: {e}", f.display());
                Reported(EXIT_INVALID)
            })?
        } else {
            vec![pcap::Datagram {
                from: exporter,
                payload: bytes,
            }]
        };
        inputs.push((f, datagrams));
    }
    let mut decoder = Decoder::new();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut records = Vec::new();
    for (file, datagrams) in inputs {
        for (i, d) in datagrams.iter().enumerate() {
            records.clear();
            if let Err(e) = decoder.decode_into(d.from, &d.payload, &mut records) {
                eprintln!(
                    "{}: datagram {} from {}: {e}",
                    file.display(),
                    i + 1,
                    d.from
                );
            }
            for r in &records {
                let line = serde_json::to_string(&record_json(r))?;
                if let Err(e) = std::io::Write::write_all(&mut out, line.as_bytes())
                    .and_then(|_| std::io::Write::write_all(&mut out, b"\n"))
                {
                    crate::stdout_failed(e);
                }
            }
        }
    }
    if let Err(e) = std::io::Write::flush(&mut out) {
        crate::stdout_failed(e);
    }
    decoder.expire_pending();
    let c = decoder.counters();
    eprintln!(
        "{} datagrams, {} records, {} malformed, {} data sets without a template",
        c.datagrams, c.records, c.malformed, c.no_template
    );
    Ok(())
}

fn invalid(msg: String) -> anyhow::Error {
    eprintln!("error: {msg}");
    Reported(EXIT_INVALID).into()
}

pub fn open_store(data: &Path) -> anyhow::Result<SqliteFlowStore> {
    std::fs::create_dir_all(data)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", data.display()))?;
    Ok(SqliteFlowStore::open(data.join("flows.sqlite"))?)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn import_files(
    format: ImportFormat,
    data: &Path,
    enrich: &EnrichArgs,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    let enricher = Arc::new(enrich.enricher()?);
    let mut observations = Vec::new();
    let mut errors = 0;
    let mut skipped = 0;
    for f in files {
        let text =
            std::fs::read_to_string(f).map_err(|e| invalid(format!("{}: {e}", f.display())))?;
        let reporter = format!("file {}", f.display());
        let got = match format {
            ImportFormat::Aws => import::aws_vpc(&text),
            ImportFormat::Azure => import::azure_nsg(&text),
            ImportFormat::Csv => import::csv(&text, &reporter),
            ImportFormat::Jsonl => import::jsonl(&text, &reporter),
        };
        for e in &got.errors {
            eprintln!("{}:{}: {}: {}", f.display(), e.line, e.field, e.message);
        }
        errors += got.errors.len();
        skipped += got.skipped;
        observations.extend(got.observations);
    }
    if errors > 0 {
        eprintln!("{errors} error(s); nothing was imported");
        return Err(Reported(EXIT_INVALID).into());
    }
    let mut agg = Aggregator::new(enricher);
    let now = now_ms();
    for o in &observations {
        agg.add(o, now);
    }
    let summaries = agg.flush_all();
    let store = open_store(data)?;
    store.upsert(&summaries)?;
    outln!(
        "imported {} flow records ({} without flow data skipped) as {} summaries into {}",
        observations.len(),
        skipped,
        summaries.len(),
        data.join("flows.sqlite").display()
    );
    Ok(())
}

fn collect(
    data: &Path,
    listen: Vec<SocketAddr>,
    enrich: &EnrichArgs,
    duration: Option<Duration>,
    workers: Option<usize>,
    record_times: &crate::collector_cmd::RecordTimeArgs,
) -> anyhow::Result<()> {
    let enricher = Arc::new(RwLock::new(Arc::new(enrich.enricher()?)));
    let mut config = CollectorConfig {
        time_bounds: Some(record_times.bounds()),
        ..CollectorConfig::default()
    };
    if !listen.is_empty() {
        config.listen = listen;
    }
    if let Some(w) = workers {
        config.workers = w.max(1);
    }
    let store = open_store(data)?;
    let (err_tx, err_rx) = std::sync::mpsc::channel::<String>();
    let mut last_expiry = 0i64;
    let collector = Collector::start(&config, enricher, move |batch: Vec<FlowSummary>| {
        // A summary that cannot be stored is reported, never silently dropped.
        if !batch.is_empty()
            && let Err(e) = store.upsert(&batch)
        {
            let _ = err_tx.send(format!("storing {} summaries: {e}", batch.len()));
        }
        let now = now_ms();
        if now - last_expiry >= 60_000 {
            last_expiry = now;
            if let Err(e) = store.expire(Retention::DEFAULT.cutoff(now)) {
                let _ = err_tx.send(format!("expiring old summaries: {e}"));
            }
        }
    })
    .map_err(|e| anyhow::anyhow!("binding {:?}: {e}", config.listen))?;
    let addrs: Vec<String> = collector
        .local_addrs()
        .iter()
        .map(|a| a.to_string())
        .collect();
    eprintln!(
        "collecting on {} into {}",
        addrs.join(", "),
        data.join("flows.sqlite").display()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::SeqCst))?;
    let started = std::time::Instant::now();
    let mut last_report = started;
    while !stop.load(Ordering::SeqCst) && duration.is_none_or(|d| started.elapsed() < d) {
        std::thread::sleep(Duration::from_millis(100));
        while let Ok(e) = err_rx.try_recv() {
            eprintln!("error: {e}");
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = std::time::Instant::now();
            eprintln!("{}", serde_json::to_string(&collector.metrics())?);
        }
    }
    let m = collector.metrics();
    collector.stop();
    while let Ok(e) = err_rx.try_recv() {
        eprintln!("error: {e}");
    }
    outln!("{}", serde_json::to_string(&m)?);
    Ok(())
}

fn fmt_time(ms: i64) -> String {
    if ms < 0 {
        return ms.to_string();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
}

fn print_summaries(rows: &[FlowSummary]) {
    outln!(
        "{:<20} {:<24} {:<24} {:<10} {:>8} {:>10} {:>6}  verdict",
        "bucket",
        "from",
        "to",
        "service",
        "packets",
        "bytes",
        "conns"
    );
    for r in rows {
        let side = |w: &Option<String>, a: &IpAddr| w.clone().unwrap_or_else(|| a.to_string());
        let svc = match protocol_name(r.key.proto) {
            Some(p) => format!("{p}/{}", r.key.port),
            None => format!("proto/{}", r.key.proto),
        };
        let verdict = match &r.provisioned {
            Some(v) if v.rules.is_empty() => format!("{} (default)", v.verdict),
            Some(v) => format!("{} ({})", v.verdict, v.rules.join(",")),
            None => "-".into(),
        };
        outln!(
            "{:<20} {:<24} {:<24} {:<10} {:>8} {:>10} {:>6}  {verdict}",
            fmt_time(r.key.bucket_start_ms),
            side(&r.src_workload, &r.key.src),
            side(&r.dst_workload, &r.key.dst),
            svc,
            r.packets,
            r.bytes,
            r.connections
        );
    }
    outln!("{} summaries", rows.len());
}

fn replay(capture: &Path, to: SocketAddr, rate: u64, senders: usize) -> anyhow::Result<()> {
    if !to.ip().is_loopback() {
        return Err(invalid(format!(
            "--to {to}: replay only sends to loopback addresses (127.0.0.0/8, ::1)"
        )));
    }
    let bytes =
        std::fs::read(capture).map_err(|e| invalid(format!("{}: {e}", capture.display())))?;
    let datagrams =
        pcap::udp_datagrams(&bytes).map_err(|e| invalid(format!("{}: {e}", capture.display())))?;
    // Decode once to know how many records each datagram carries, so pacing is in records.
    let mut decoder = Decoder::new();
    let mut counts = Vec::with_capacity(datagrams.len());
    let mut records = Vec::new();
    for d in &datagrams {
        records.clear();
        let n = decoder
            .decode_into(d.from, &d.payload, &mut records)
            .unwrap_or(0);
        counts.push(n as u64);
    }
    let per_sender: u64 = counts.iter().sum();
    let started = std::time::Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for _ in 0..senders {
            let (datagrams, counts) = (&datagrams, &counts);
            handles.push(scope.spawn(move || -> std::io::Result<()> {
                let sock = UdpSocket::bind(if to.is_ipv6() {
                    "[::1]:0"
                } else {
                    "127.0.0.1:0"
                })?;
                let share = if rate == 0 {
                    0.0
                } else {
                    rate as f64 / senders as f64
                };
                let begin = std::time::Instant::now();
                let mut sent = 0u64;
                for (d, n) in datagrams.iter().zip(counts) {
                    if share > 0.0 {
                        let due = Duration::from_secs_f64(sent as f64 / share);
                        if let Some(wait) = due.checked_sub(begin.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                    sock.send_to(&d.payload, to)?;
                    sent += n;
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("sender thread panicked"))??;
        }
        Ok(())
    })?;
    let secs = started.elapsed().as_secs_f64();
    let total = per_sender * senders as u64;
    outln!(
        "{{\"datagrams\":{},\"records\":{},\"seconds\":{:.3},\"records_per_second\":{:.0}}}",
        datagrams.len() * senders,
        total,
        secs,
        total as f64 / secs
    );
    Ok(())
}
