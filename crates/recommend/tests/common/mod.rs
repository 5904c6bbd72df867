//! Small builders shared by the recommend tests.
#![allow(dead_code)]

use std::net::IpAddr;

use bulkhead_model::{
    Bucket, EnforcementMode, FlowSummary, Inventory, Labels, SummaryKey, Workload, WorkloadKind,
};

pub fn workload(name: &str, addr: &str, labels: &str, managed: bool) -> Workload {
    Workload {
        name: name.into(),
        kind: if managed {
            WorkloadKind::Vm
        } else {
            WorkloadKind::Device
        },
        managed,
        addresses: addr
            .split_whitespace()
            .map(|a| a.parse().expect("address"))
            .collect(),
        hostname: None,
        os: None,
        os_version: None,
        labels: Labels::parse_list(labels).expect("labels"),
        mode: if managed {
            EnforcementMode::Monitor
        } else {
            EnforcementMode::Idle
        },
        owner: None,
        attributes: Default::default(),
    }
}

pub fn summary(src: IpAddr, dst: IpAddr, proto: u8, port: u16, connections: u64) -> FlowSummary {
    FlowSummary {
        key: SummaryKey {
            bucket: Bucket::Minute,
            bucket_start_ms: 1_709_542_800_000,
            src,
            dst,
            proto,
            port,
            process: None,
        },
        packets: connections * 4,
        bytes: connections * 400,
        connections,
        first_seen_ms: 1_709_542_800_000,
        last_seen_ms: 1_709_542_810_000,
        reporter: None,
        src_workload: None,
        dst_workload: None,
        src_labels: Labels::new(),
        dst_labels: Labels::new(),
        provisioned: None,
        draft: None,
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

pub fn inventory(ws: Vec<Workload>) -> Inventory {
    Inventory::new(ws).expect("inventory")
}
