//! The recommendation's promise on random estates and traffic: every observed
//! conversation that passes the knobs is allowed by the proposed policy (compiled
//! evaluator), the proposal is canonical checked policy-as-code, and coverage of the
//! proposal over that traffic is 100%.

mod common;

use std::collections::HashMap;
use std::net::IpAddr;

use bulkhead_model::{Decision, FlowSummary, Labels};
use bulkhead_policy::{CompiledPolicy, ConnKey, Policy, format};
use bulkhead_recommend::{CoverageOptions, Granularity, Options, coverage, recommend};
use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct W {
    app: Option<u8>,
    env: Option<u8>,
    role: Option<u8>,
    managed: bool,
}

fn arb_workload() -> impl Strategy<Value = W> {
    (
        proptest::option::weighted(0.85, 0u8..4),
        proptest::option::weighted(0.85, 0u8..2),
        proptest::option::weighted(0.85, 0u8..4),
        proptest::bool::weighted(0.8),
    )
        .prop_map(|(app, env, role, managed)| W {
            app,
            env,
            role,
            managed,
        })
}

/// An end of a flow: an inventory workload (by index) or an outside address.
#[derive(Debug, Clone)]
enum E {
    W(usize),
    Private(u8),
    Public(u8),
    V6(u16),
}

fn arb_end() -> impl Strategy<Value = E> {
    prop_oneof![
        6 => any::<usize>().prop_map(E::W),
        1 => (0u8..40).prop_map(E::Private),
        1 => (0u8..60).prop_map(E::Public),
        1 => (0u16..50).prop_map(E::V6),
    ]
}

fn arb_service() -> impl Strategy<Value = (u8, u16)> {
    prop_oneof![
        4 => (Just(6u8), prop_oneof![Just(22u16), Just(443), Just(5432), Just(8080), 9000u16..9010]),
        2 => (Just(17u8), prop_oneof![Just(53u16), Just(123), 3000u16..3004]),
        1 => (Just(1u8), prop_oneof![Just(0u16), Just(8)]),
        1 => (Just(47u8), Just(0u16)),
    ]
}

fn addr(e: &E, ws: &[bulkhead_model::Workload]) -> IpAddr {
    match e {
        E::W(i) => ws[i % ws.len()].addresses[0],
        E::Private(h) => ip(&format!("10.99.0.{h}")),
        E::Public(h) => ip(&format!("203.0.113.{h}")),
        E::V6(h) => ip(&format!("2001:db8::{h:x}")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_observed_flow_is_allowed_and_covered(
        wspec in proptest::collection::vec(arb_workload(), 1..24),
        flows in proptest::collection::vec((arb_end(), arb_end(), arb_service(), 1u64..4), 1..80),
        granularity in prop_oneof![Just(Granularity::App), Just(Granularity::Role), Just(Granularity::Workload)],
        min_observations in 1u64..4,
        exclude_app in proptest::option::of(0u8..4),
        shared_min_apps in 1usize..4,
        internet_min_addresses in 1usize..40,
    ) {
        let apps = ["shop", "pay", "hr", "crm"];
        let envs = ["prod", "dev"];
        let roles = ["web", "app", "db", "dns"];
        let ws: Vec<_> = wspec.iter().enumerate().map(|(i, w)| {
            let mut l = Vec::new();
            if let Some(a) = w.app { l.push(format!("app={}", apps[a as usize])); }
            if let Some(e) = w.env { l.push(format!("env={}", envs[e as usize])); }
            if let Some(r) = w.role { l.push(format!("role={}", roles[r as usize])); }
            workload(&format!("w{i}"), &format!("10.{}.0.{}", 16 + i / 200, 10 + i % 200), &l.join(","), w.managed)
        }).collect();
        let inv = inventory(ws.clone());
        let summaries: Vec<FlowSummary> = flows.iter().map(|(s, d, (proto, port), n)| {
            summary(addr(s, &ws), addr(d, &ws), *proto, *port, *n)
        }).collect();
        let exclude: Vec<Labels> = exclude_app
            .map(|a| vec![Labels::parse_list(&format!("app={}", apps[a as usize])).unwrap()])
            .unwrap_or_default();
        let opts = Options {
            granularity,
            min_observations,
            exclude: exclude.clone(),
            shared_min_apps,
            internet_min_addresses,
            ..Options::default()
        };
        let r = recommend(&summaries, &inv, None, &opts);
        let files = r.rendered_files();
        for (name, text) in &files {
            let f = format::format_file(name, text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&f, text, "{} is not canonical", name);
        }
        let policy = Policy::from_sources(&files).map_err(|e| TestCaseError::fail(format!("{e}\n{files:#?}")))?;
        let compiled = CompiledPolicy::compile(&inv, &policy);

        // What the knobs let through, computed here independently.
        let mut convs: HashMap<(IpAddr, IpAddr, u8, u16), u64> = HashMap::new();
        for s in &summaries {
            *convs.entry((s.key.src, s.key.dst, s.key.proto, s.key.port)).or_default() += s.connections;
        }
        let excluded = |a: IpAddr| inv.by_address(a).is_some_and(|w| exclude.iter().any(|x| w.labels.includes(x)));
        let mut eligible = Vec::new();
        for ((src, dst, proto, port), n) in &convs {
            if *n < min_observations || excluded(*src) || excluded(*dst) {
                continue;
            }
            let v = compiled.verdict(&ConnKey { src: *src, dst: *dst, proto: *proto, port: *port }, None);
            prop_assert_eq!(v.decision, Decision::Allow, "{} -> {} {}/{} not allowed\n{:#?}", src, dst, proto, port, files);
            eligible.push((*src, *dst, *proto, *port));
        }
        prop_assert_eq!(r.stats.recommended, eligible.len() as u64);
        let covered: Vec<FlowSummary> = summaries
            .iter()
            .filter(|s| eligible.contains(&(s.key.src, s.key.dst, s.key.proto, s.key.port)))
            .cloned()
            .collect();
        let c = coverage(&compiled, &policy, &inv, &covered, &CoverageOptions::default());
        prop_assert_eq!(c.connections_allowed, c.connections);
        prop_assert_eq!(c.bytes_allowed, c.bytes);
        prop_assert!(c.would_block.is_empty());
    }
}
