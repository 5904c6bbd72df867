//! The server's address moving (DNS, failover): the table's control-plane rule follows
//! it, applied as one transaction, and the tamper reference with it. Real nftables in a
//! namespace this test creates and removes; no traffic.

use std::net::IpAddr;
use std::process::Command;

use bulkhead_agent::enforcer::Enforcer;
use bulkhead_api::WirePolicy;
use bulkhead_model::{EnforcementMode, ServicePort};
use bulkhead_nft::Nft;
use bulkhead_policy::host::HostPolicy;
use bulkhead_testkit::command::ok;

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .output();
    }
}

#[test]
fn the_control_plane_rule_follows_the_servers_new_address() {
    let ns = Netns(format!("bh-cp-{}", std::process::id()));
    ok(&["ip", "netns", "add", &ns.0]);
    let local: IpAddr = "10.80.0.2".parse().unwrap();
    let policy = WirePolicy::new(
        &HostPolicy {
            workload: "db".into(),
            mode: EnforcementMode::Enforced,
            addresses: vec![local],
            inbound: Vec::new(),
            outbound: Vec::new(),
            quarantined: false,
        },
        &[ServicePort::tcp(22)],
        100,
        false,
    );
    let mut enforcer = Enforcer::new(Nft::in_netns(&ns.0), "bulkhead");
    enforcer.set_control_plane(vec!["10.80.0.1:8443".parse().unwrap()]);
    enforcer.apply(&policy).unwrap();
    let table = || {
        ok(&[
            "ip", "netns", "exec", &ns.0, "nft", "list", "table", "inet", "bulkhead",
        ])
    };
    assert!(
        table().contains("ip daddr 10.80.0.1 tcp dport 8443 accept"),
        "{}",
        table()
    );

    // The same endpoints: nothing to do.
    let same = enforcer
        .follow_control_plane(vec!["10.80.0.1:8443".parse().unwrap()])
        .unwrap();
    assert!(!same);
    // Moved: applied again with the new address only.
    let moved = enforcer
        .follow_control_plane(vec!["10.80.0.9:8443".parse().unwrap()])
        .unwrap();
    assert!(moved);
    let now = table();
    assert!(
        now.contains("ip daddr 10.80.0.9 tcp dport 8443 accept"),
        "{now}"
    );
    assert!(!now.contains("10.80.0.1"), "{now}");
    // The new table is the reference: not a tamper.
    assert!(enforcer.check().unwrap().is_none());
}
