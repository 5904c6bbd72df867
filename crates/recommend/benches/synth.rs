//! A large synthetic estate and its summaries for the benchmark and the peak-memory
//! example: 500 applications × prod/dev × (4 web, 4 app, 2 db) = 10,000 workloads plus
//! shared services; summaries spread over minute buckets, with internet clients,
//! partner calls and inter-application calls.

use std::net::{IpAddr, Ipv4Addr};

use bulkhead_model::{
    Bucket, EnforcementMode, FlowSummary, Inventory, Labels, SummaryKey, Workload, WorkloadKind,
};

pub const APPS: usize = 500;
const ROLES: [(&str, usize); 3] = [("web", 4), ("app", 4), ("db", 2)];

fn workload(name: String, addr: Ipv4Addr, labels: &str) -> Workload {
    Workload {
        name,
        kind: WorkloadKind::Vm,
        managed: true,
        addresses: vec![IpAddr::V4(addr)],
        hostname: None,
        os: None,
        os_version: None,
        labels: Labels::parse_list(labels).expect("labels"),
        mode: EnforcementMode::Monitor,
        owner: None,
        attributes: Default::default(),
    }
}

/// Address of host `n` of `role` (0..3) in app `a`, env `e` (0 prod, 1 dev).
fn addr(a: usize, e: usize, role: usize, n: usize) -> Ipv4Addr {
    let block = a * 4 + role;
    Ipv4Addr::new(
        10,
        (16 + e * 16 + block / 256) as u8,
        (block % 256) as u8,
        10 + n as u8,
    )
}

pub fn inventory() -> Inventory {
    let mut ws = Vec::new();
    for (i, svc) in ["dns", "ntp", "directory", "monitoring", "backup"]
        .iter()
        .enumerate()
    {
        ws.push(workload(
            format!("{svc}-1"),
            Ipv4Addr::new(10, 0, 0, 10 + i as u8),
            &format!("app=infra,env=shared,role={svc}"),
        ));
    }
    for a in 0..APPS {
        for (e, env) in ["prod", "dev"].iter().enumerate() {
            for (r, (role, count)) in ROLES.iter().enumerate() {
                for n in 0..*count {
                    ws.push(workload(
                        format!("app{a:03}-{role}-{}{n}", &env[..1]),
                        addr(a, e, r, n),
                        &format!("app=app{a:03},env={env},role={role}"),
                    ));
                }
            }
        }
    }
    Inventory::new(ws).expect("inventory")
}

fn shared(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10 + i))
}

/// `n` summaries, deterministic.
pub fn summaries(n: usize) -> Vec<FlowSummary> {
    let mut out = Vec::with_capacity(n);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let v4 = |a: Ipv4Addr| IpAddr::V4(a);
    for i in 0..n {
        let r = next();
        let a = (r % APPS as u64) as usize;
        let e = ((r >> 10) % 2) as usize;
        let h = |k: u64, m: usize| ((r >> k) % m as u64) as usize;
        let (src, dst, proto, port) = match (r >> 20) % 10 {
            0..=2 => (
                v4(addr(a, e, 0, h(24, 4))),
                v4(addr(a, e, 1, h(28, 4))),
                6,
                8080,
            ),
            3..=4 => (
                v4(addr(a, e, 1, h(24, 4))),
                v4(addr(a, e, 2, h(28, 2))),
                6,
                5432,
            ),
            5 => (v4(addr(a, e, h(24, 3), 0)), shared(0), 17, 53),
            6 => (shared(3), v4(addr(a, e, h(24, 3), h(28, 2))), 6, 9100),
            7 => (
                v4(Ipv4Addr::new(203, 0, 113, h(24, 250) as u8 + 1)),
                v4(addr(a, 0, 0, h(32, 4))),
                6,
                443,
            ),
            8 => (
                v4(addr(a, e, 1, h(24, 4))),
                v4(addr((a + 1) % APPS, e, 1, h(28, 4))),
                6,
                8443,
            ),
            _ => (
                v4(addr(a, e, 1, h(24, 4))),
                v4(Ipv4Addr::new(198, 51, 100, 17 + h(32, 14) as u8)),
                6,
                443,
            ),
        };
        let minute = (i % 1440) as i64;
        let start = 1_709_542_800_000 + minute * 60_000;
        out.push(FlowSummary {
            key: SummaryKey {
                bucket: Bucket::Minute,
                bucket_start_ms: start,
                src,
                dst,
                proto,
                port,
                process: None,
            },
            packets: 10,
            bytes: 1000 + (r % 5000),
            connections: 1 + (r % 3),
            first_seen_ms: start,
            last_seen_ms: start + 1000,
            reporter: None,
            src_workload: None,
            dst_workload: None,
            src_labels: Labels::new(),
            dst_labels: Labels::new(),
            provisioned: None,
            draft: None,
        });
    }
    out
}
