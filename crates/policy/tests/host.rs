//! The per-host rule IR must decide like the oracle: for random estates, evaluating a
//! managed workload's inbound (outbound) host rules top to bottom, first match wins, no
//! match is the default deny, gives the oracle's decision for every connection to (from)
//! that workload — and the first matching rule is one of the oracle's deciding rules.
//!
//! The estate generators are shared with tests/oracle.rs (tests/common) so both suites
//! explore the same shapes.

use std::net::IpAddr;

use bulkhead_model::{Action, Connection, DecidedBy, Decision, Inventory};
use bulkhead_policy::host::{HostError, HostRule, Peers, host_policy};
use bulkhead_policy::{Policy, oracle};
use ipnet::IpNet;
use proptest::prelude::*;

mod common;
use common::*;

/// Sequential evaluation, as the kernel does it: the first matching rule decides.
fn first_match<'a>(
    rules: &'a [HostRule],
    local: IpAddr,
    peer: IpAddr,
    c: &Connection,
) -> Option<&'a HostRule> {
    rules
        .iter()
        .find(|r| r.matches(local, peer, c.proto, c.port, c.process.as_deref()))
}

fn check(
    policy: &Policy,
    inv: &Inventory,
    c: &Connection,
    hit: Option<&HostRule>,
) -> Result<(), TestCaseError> {
    let expected = oracle::evaluate(policy, inv, c);
    match (hit, &expected.decided_by) {
        (None, DecidedBy::Default) => {}
        (Some(r), DecidedBy::Rules { tier, rule_ids }) => {
            let decision = match r.action {
                Action::Allow => Decision::Allow,
                Action::Deny => Decision::Deny,
            };
            prop_assert_eq!(
                decision,
                expected.decision,
                "connection {:?}, host rule {:?}",
                c,
                r
            );
            prop_assert_eq!(&r.tier, tier);
            prop_assert!(
                rule_ids.contains(&r.rule_id),
                "{} not in {:?}",
                r.rule_id,
                rule_ids
            );
        }
        (hit, decided) => prop_assert!(
            false,
            "connection {:?}: host rule {:?}, oracle {:?}",
            c,
            hit,
            decided
        ),
    }
    Ok(())
}

fn peers_are_sorted_and_disjoint(rules: &[HostRule]) -> Result<(), TestCaseError> {
    for r in rules {
        if let Peers::Nets(nets) = &r.peers {
            prop_assert_eq!(
                &IpNet::aggregate(nets),
                nets,
                "rule {} peers not merged",
                &r.rule_id
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn host_rules_decide_like_the_oracle(
        inv in inventory(),
        s in shape(),
        pick in any::<usize>(),
        conns in proptest::collection::vec(connection(), 40),
    ) {
        let policy = build_policy(&s);
        if inv.is_empty() {
            prop_assert_eq!(host_policy(&policy, &inv, "w0"), Err(HostError::UnknownWorkload("w0".into())));
            return Ok(());
        }
        let w = &inv.workloads()[pick % inv.len()];
        let hp = match host_policy(&policy, &inv, &w.name) {
            Err(HostError::Unmanaged(name)) => {
                prop_assert!(!w.managed);
                prop_assert_eq!(name, w.name.clone());
                return Ok(());
            }
            other => other.unwrap(),
        };
        prop_assert!(w.managed);
        prop_assert_eq!(hp.mode, w.mode);
        peers_are_sorted_and_disjoint(&hp.inbound)?;
        peers_are_sorted_and_disjoint(&hp.outbound)?;
        for (i, c) in conns.iter().enumerate() {
            // Point one end of each random connection at the host, alternating addresses.
            let me = w.addresses[i % w.addresses.len()];
            let inbound = Connection { dst: me, ..c.clone() };
            check(&policy, &inv, &inbound, first_match(&hp.inbound, me, inbound.src, &inbound))?;
            let outbound = Connection { src: me, ..c.clone() };
            check(&policy, &inv, &outbound, first_match(&hp.outbound, me, outbound.dst, &outbound))?;
        }
    }
}
