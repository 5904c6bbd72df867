use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bulkhead_model::EnforcementMode;
use bulkhead_sim::{Estate, IpfixEncoder, SimConfig};
use clap::Args;

use crate::{EXIT_INVALID, Reported};

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Directory for inventory.csv, policy/ and export.pcap.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Which day of traffic: the same estate with other draws (times, clients, sizes), to
    /// recommend from some days and check the policy against another.
    #[arg(long, default_value_t = 0)]
    pub day: u64,
    #[arg(long, default_value_t = 3)]
    pub apps: usize,
    /// Minutes of traffic.
    #[arg(long, default_value_t = 10)]
    pub minutes: i64,
    #[arg(long, default_value_t = 600)]
    pub flows_per_minute: usize,
    /// Addresses that talk but are not in the inventory.
    #[arg(long, default_value_t = 3)]
    pub unknown_devices: usize,
    /// Inventory workloads that never talk.
    #[arg(long, default_value_t = 2)]
    pub idle: usize,
    /// Add an attacker who scans a prod subnet and moves laterally.
    #[arg(long)]
    pub attacker: bool,
    /// Enforcement mode of prod workloads in the written inventory.
    #[arg(long, default_value = "monitor")]
    pub prod_mode: String,
    /// Start of the traffic, RFC 3339 (default: `minutes` before now, so the data is recent
    /// and inside the flow store's retention).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    pub start: Option<std::time::SystemTime>,
    /// Also send the IPFIX export over UDP to this loopback address.
    #[arg(long)]
    pub send: Option<SocketAddr>,
    /// Flow records per second when sending (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

/// The datagrams as a pcap (UDP 127.0.0.1:9995 → 127.0.0.1:4739), readable by
/// `bulkhead flows decode`, tshark and nfdump's tools alike.
fn pcap(datagrams: &[Vec<u8>], start_ms: i64) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [0xa1b2c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        out.extend(v.to_le_bytes());
    }
    for (i, d) in datagrams.iter().enumerate() {
        let total = 28 + d.len();
        let mut frame = vec![0u8; 12];
        frame.extend([
            0x08,
            0x00,
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
            127,
            0,
            0,
            1,
            127,
            0,
            0,
            1,
        ]);
        frame.extend(9995u16.to_be_bytes());
        frame.extend(4739u16.to_be_bytes());
        frame.extend(((8 + d.len()) as u16).to_be_bytes());
        frame.extend([0, 0]);
        frame.extend(d);
        let t = start_ms as u64 * 1000 + i as u64;
        for v in [
            (t / 1_000_000) as u32,
            (t % 1_000_000) as u32,
            frame.len() as u32,
            frame.len() as u32,
        ] {
            out.extend(v.to_le_bytes());
        }
        out.extend(frame);
    }
    out
}

pub fn run(a: SimulateArgs) -> anyhow::Result<()> {
    if let Some(to) = a.send
        && !to.ip().is_loopback()
    {
        eprintln!(
            "error: --send {to}: the simulator only sends to loopback addresses (127.0.0.0/8, ::1)"
        );
        return Err(Reported(EXIT_INVALID).into());
    }
    let prod_mode: EnforcementMode = a.prod_mode.parse().map_err(|e: String| {
        eprintln!("error: --prod-mode: {e}");
        Reported(EXIT_INVALID)
    })?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let start_ms = match a.start {
        Some(t) => t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        None => now_ms - a.minutes * 60_000,
    };
    let config = SimConfig {
        start_ms,
        seed: a.seed,
        day: a.day,
        apps: a.apps,
        duration_ms: a.minutes * 60_000,
        flows_per_minute: a.flows_per_minute,
        unknown_devices: a.unknown_devices,
        idle_workloads: a.idle,
        attacker: a.attacker,
        prod_mode,
        ..SimConfig::default()
    };
    let estate = Estate::try_generate(&config).map_err(|e| {
        eprintln!("error: {e}");
        Reported(EXIT_INVALID)
    })?;
    let policy_dir = a.out.join("policy");
    std::fs::create_dir_all(&policy_dir)?;
    std::fs::write(a.out.join("inventory.csv"), estate.inventory_csv())?;
    for (name, text) in estate.policy_files() {
        std::fs::write(policy_dir.join(name), text)?;
    }
    let flows: Vec<_> = estate.flows().collect();
    let datagrams = IpfixEncoder::new(1).encode(&flows);
    std::fs::write(a.out.join("export.pcap"), pcap(&datagrams, config.start_ms))?;
    outln!(
        "wrote {} workloads, {} policy files, {} flows in {} IPFIX datagrams to {}",
        estate.workloads().len(),
        estate.policy_files().len(),
        flows.len(),
        datagrams.len(),
        a.out.display()
    );
    if let Some(to) = a.send {
        let sock = UdpSocket::bind(if to.is_ipv6() {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        })?;
        let per_datagram = flows.len() as f64 / datagrams.len().max(1) as f64;
        let started = Instant::now();
        for (i, d) in datagrams.iter().enumerate() {
            if a.rate > 0 {
                let due = Duration::from_secs_f64(i as f64 * per_datagram / a.rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            sock.send_to(d, to)?;
        }
        outln!(
            "sent {} datagrams to {to} in {:.2?}",
            datagrams.len(),
            started.elapsed()
        );
    }
    Ok(())
}
