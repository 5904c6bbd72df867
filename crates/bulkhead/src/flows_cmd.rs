use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use bulkhead_flow::{Decoder, FlowRecord};
use clap::Subcommand;

use crate::pcap;
use crate::{EXIT_INVALID, Reported};

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
                serde_json::to_writer(&mut out, &record_json(r))?;
                std::io::Write::write_all(&mut out, b"\n")?;
            }
        }
    }
    std::io::Write::flush(&mut out)?;
    decoder.expire_pending();
    let c = decoder.counters();
    eprintln!(
        "{} datagrams, {} records, {} malformed, {} data sets without a template",
        c.datagrams, c.records, c.malformed, c.no_template
    );
    Ok(())
}
