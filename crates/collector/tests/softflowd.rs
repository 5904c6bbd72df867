//! A real exporter and a real peer: softflowd turns a capture into IPFIX and NetFlow v9,
//! sent over loopback to Bulkhead's collector and to nfdump's nfcapd. Flows, packets and
//! bytes must agree with each other and with what the capture holds.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bulkhead_collector::{Collector, CollectorConfig};
use bulkhead_enrich::Enricher;
use bulkhead_flow::Decoder;
use bulkhead_model::{Bucket, FlowSummary};

type FlowTuple = (u8, String, u16, String, u16);

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s >> 16) + (s & 0xffff);
    }
    !(s as u16)
}

/// The capture, and per unidirectional flow the packets and IP bytes it holds.
struct Capture {
    pcap: Vec<u8>,
    flows: BTreeMap<FlowTuple, (u64, u64)>,
}

impl Capture {
    fn new() -> Self {
        let mut pcap = Vec::new();
        for v in [0xa1b2c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
            pcap.extend(v.to_le_bytes());
        }
        Capture {
            pcap,
            flows: BTreeMap::new(),
        }
    }

    fn packet(&mut self, t_us: u64, src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) {
        let total = 20 + l4.len();
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0,
            0,
            64,
            proto,
            0,
            0,
        ];
        ip.extend(src);
        ip.extend(dst);
        let c = checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut frame = vec![0u8; 12];
        frame.extend([0x08, 0x00]);
        frame.extend(&ip);
        frame.extend(l4);
        for v in [
            (t_us / 1_000_000) as u32,
            (t_us % 1_000_000) as u32,
            frame.len() as u32,
            frame.len() as u32,
        ] {
            self.pcap.extend(v.to_le_bytes());
        }
        self.pcap.extend(frame);
        let ports = |o: usize| {
            if proto == 1 {
                0
            } else {
                u16::from_be_bytes([l4[o], l4[o + 1]])
            }
        };
        let key = (proto, ip4(src), ports(0), ip4(dst), ports(2));
        let e = self.flows.entry(key).or_default();
        e.0 += 1;
        e.1 += total as u64;
    }
}

fn ip4(a: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(a).to_string()
}

fn tcp(sp: u16, dp: u16, flags: u8, payload: usize) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend(sp.to_be_bytes());
    h.extend(dp.to_be_bytes());
    h.extend([0, 0, 0, 1, 0, 0, 0, 1, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    h.extend(std::iter::repeat_n(b'x', payload));
    h
}

fn udp(sp: u16, dp: u16, payload: usize) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend(sp.to_be_bytes());
    h.extend(dp.to_be_bytes());
    h.extend(((8 + payload) as u16).to_be_bytes());
    h.extend([0, 0]);
    h.extend(std::iter::repeat_n(b'q', payload));
    h
}

fn capture() -> Capture {
    let mut c = Capture::new();
    let t0 = 1_700_000_000_000_000u64;
    for i in 0..12u8 {
        let (cl, sv) = ([10, 1, 0, 10 + i], [10, 1, 1, 5 + i % 3]);
        let (sp, dp) = (40000 + u16::from(i), [5432, 8080, 443][usize::from(i % 3)]);
        let t = t0 + u64::from(i) * 200_000;
        c.packet(t, cl, sv, 6, &tcp(sp, dp, 0x02, 0));
        c.packet(t + 100, sv, cl, 6, &tcp(dp, sp, 0x12, 0));
        c.packet(
            t + 200,
            cl,
            sv,
            6,
            &tcp(sp, dp, 0x10, 100 + usize::from(i) * 10),
        );
        c.packet(t + 300, sv, cl, 6, &tcp(dp, sp, 0x18, 1000));
        c.packet(t + 400, cl, sv, 6, &tcp(sp, dp, 0x11, 0));
        c.packet(t + 500, sv, cl, 6, &tcp(dp, sp, 0x11, 0));
        c.packet(t + 600, cl, sv, 6, &tcp(sp, dp, 0x10, 0));
    }
    for i in 0..6u8 {
        let t = t0 + 5_000_000 + u64::from(i) * 1000;
        c.packet(
            t,
            [10, 1, 0, 50 + i],
            [10, 0, 0, 53],
            17,
            &udp(30000 + u16::from(i), 53, 40),
        );
        c.packet(
            t + 50,
            [10, 0, 0, 53],
            [10, 1, 0, 50 + i],
            17,
            &udp(53, 30000 + u16::from(i), 120),
        );
    }
    c
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Bytes waiting in the receive queue of the IPv4 UDP socket bound to `port`, from
/// /proc/net/udp (columns: sl, local address, remote address, state, tx:rx queue).
fn udp_receive_queue(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let queues = cols.get(4)?;
            cols.get(1)?.ends_with(&local).then(|| {
                let rx = queues.split(':').nth(1).unwrap_or("0");
                u64::from_str_radix(rx, 16).unwrap_or(0)
            })
        })
        .sum()
}

fn softflowd(pcap: &std::path::Path, port: u16, version: &str) {
    let out = Command::new("softflowd")
        // -c none: softflowd 1.1.0 hangs in offline mode with its control socket.
        .args([
            "-d",
            "-r",
            pcap.to_str().unwrap(),
            "-n",
            &format!("127.0.0.1:{port}"),
            "-v",
            version,
            "-c",
            "none",
        ])
        .output()
        .expect("softflowd must be installed (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "softflowd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Nfcapd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Nfcapd {
    fn start(port: u16) -> Nfcapd {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("nfcapd")
            .args([
                "-w",
                dir.path().to_str().unwrap(),
                "-p",
                &port.to_string(),
                "-b",
                "127.0.0.1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nfcapd must be installed (scripts/setup installs nfdump)");
        // nfcapd binds after start-up; wait until the port is taken.
        let deadline = Instant::now() + Duration::from_secs(10);
        while UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            assert!(Instant::now() < deadline, "nfcapd did not bind port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nfcapd { child, dir }
    }

    /// Stops nfcapd (it writes its file on SIGTERM) and reads the flows back with nfdump.
    /// Datagrams still in its socket when the signal lands would be lost to it, so the
    /// socket must be drained first (a busy machine schedules nfcapd late).
    fn finish(mut self, port: u16) -> BTreeMap<FlowTuple, (u64, u64)> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while udp_receive_queue(port) > 0 {
            assert!(Instant::now() < deadline, "nfcapd did not read its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        self.child.wait().unwrap();
        let out = Command::new("nfdump")
            .args([
                "-R",
                self.dir.path().to_str().unwrap(),
                "-q",
                "-o",
                "fmt:%pr,%sa,%sp,%da,%dp,%pkt,%byt",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut flows = BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let proto = match f[0] {
                "TCP" => 6,
                "UDP" => 17,
                "ICMP" => 1,
                other => other.parse().unwrap(),
            };
            let key = (
                proto,
                f[1].to_string(),
                f[2].parse().unwrap(),
                f[3].to_string(),
                f[4].parse().unwrap(),
            );
            let e: &mut (u64, u64) = flows.entry(key).or_default();
            e.0 += f[5].parse::<u64>().unwrap();
            e.1 += f[6].parse::<u64>().unwrap();
        }
        flows
    }
}

impl Drop for Nfcapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Receives one softflowd run on a plain socket and decodes it with Bulkhead's decoder.
fn decoded_by_bulkhead(pcap: &std::path::Path, version: &str) -> BTreeMap<FlowTuple, (u64, u64)> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    softflowd(pcap, sock.local_addr().unwrap().port(), version);
    let mut decoder = Decoder::new();
    let mut flows = BTreeMap::new();
    let mut buf = [0u8; 65536];
    while let Ok((n, from)) = sock.recv_from(&mut buf) {
        for r in decoder
            .decode(from, &buf[..n])
            .expect("softflowd datagrams decode")
        {
            let key = (
                r.protocol,
                r.src_addr.to_string(),
                r.src_port,
                r.dst_addr.to_string(),
                r.dst_port,
            );
            let e: &mut (u64, u64) = flows.entry(key).or_default();
            e.0 += r.packets;
            e.1 += r.bytes;
        }
    }
    assert_eq!(decoder.counters().malformed, 0);
    flows
}

#[test]
fn softflowd_export_agrees_with_nfcapd_and_with_the_capture() {
    let c = capture();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("traffic.pcap");
    std::fs::write(&pcap, &c.pcap).unwrap();
    let truth = &c.flows;
    let (packets, bytes) = truth.values().fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));

    for version in ["10", "9"] {
        let ours = decoded_by_bulkhead(&pcap, version);
        let port = free_udp_port();
        let nfcapd = Nfcapd::start(port);
        softflowd(&pcap, port, version);
        let theirs = nfcapd.finish(port);
        assert_eq!(
            &ours, truth,
            "v{version}: Bulkhead's decode differs from the capture"
        );
        assert_eq!(
            &theirs, truth,
            "v{version}: nfdump's decode differs from the capture"
        );

        // And through the whole collector: received, decoded, aggregated.
        let received: Arc<Mutex<Vec<FlowSummary>>> = Arc::default();
        let sink = received.clone();
        let config = CollectorConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            workers: 2,
            // The captures' times are history, not live traffic.
            time_bounds: None,
            ..CollectorConfig::default()
        };
        let collector = Collector::start(
            &config,
            Arc::new(RwLock::new(Arc::new(Enricher::default()))),
            move |b| sink.lock().unwrap().extend(b),
        )
        .unwrap();
        softflowd(&pcap, collector.local_addrs()[0].port(), version);
        let deadline = Instant::now() + Duration::from_secs(10);
        while collector.metrics().records < truth.len() as u64 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let m = collector.metrics();
        collector.stop();
        assert_eq!(m.records, truth.len() as u64, "v{version}: flow records");
        assert_eq!((m.malformed, m.dropped), (0, 0));
        let summaries = received.lock().unwrap();
        let minute = summaries.iter().filter(|s| s.key.bucket == Bucket::Minute);
        let (p, b) = minute.fold((0, 0), |a, s| (a.0 + s.packets, a.1 + s.bytes));
        assert_eq!(
            (p, b),
            (packets, bytes),
            "v{version}: packets and bytes after aggregation"
        );
        // Requests and replies fold into one summary per conversation.
        assert_eq!(
            summaries
                .iter()
                .filter(|s| s.key.bucket == Bucket::Minute)
                .count(),
            18
        );
    }
}
