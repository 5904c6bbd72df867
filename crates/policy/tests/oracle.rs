//! The compiled evaluator must agree with the reference oracle on every connection of
//! random estates: same verdict, same decision, same tier and rule ids.

use bulkhead_policy::{CompiledPolicy, ConnKey, Object, format::format_object, oracle, parse_file};
use proptest::prelude::*;

mod common;
use common::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn compiled_agrees_with_oracle(inv in inventory(), s in shape(), conns in proptest::collection::vec(connection(), 40)) {
        let policy = build_policy(&s);
        let compiled = CompiledPolicy::compile(&inv, &policy);
        for c in &conns {
            let expected = oracle::evaluate(&policy, &inv, c);
            let got = compiled.verdict(&ConnKey { src: c.src, dst: c.dst, proto: c.proto, port: c.port }, c.process.as_deref());
            prop_assert_eq!(&got, &expected, "connection {:?}", c);
        }
    }

    /// The same with what the hosts add: quarantines, failsafe ports, the control
    /// plane. Both evaluators end in the same `through_tables`, but each finds the ends
    /// on its own (the oracle in the inventory, the compiled one in its address tables).
    #[test]
    fn compiled_agrees_with_oracle_through_the_hosts(
        inv in inventory(),
        s in shape(),
        marks in proptest::collection::vec(0u8..3, 30),
        failsafe in proptest::collection::vec(service_port(), 0..3),
        failsafe_out in proptest::collection::vec(service_port(), 0..2),
        control in proptest::option::of((0usize..30, proptest::sample::select(vec![80u16, 443]))),
        conns in proptest::collection::vec(connection(), 40),
    ) {
        let (inv, hosts) = with_hosts(&inv, &marks, &failsafe, &failsafe_out, control);
        let policy = build_policy(&s);
        let compiled = CompiledPolicy::compile_with(&inv, &policy, &hosts);
        for c in &conns {
            let expected = oracle::evaluate_with(&policy, &inv, &hosts, c);
            let got = compiled.verdict(&ConnKey { src: c.src, dst: c.dst, proto: c.proto, port: c.port }, c.process.as_deref());
            prop_assert_eq!(&got, &expected, "connection {:?}", c);
        }
    }

    #[test]
    fn canonical_form_parses_back_to_itself(s in shape()) {
        let policy = build_policy(&s);
        let mut objects: Vec<Object> = Vec::new();
        objects.extend(policy.label_groups.values().cloned().map(Object::LabelGroup));
        objects.extend(policy.ip_lists.values().cloned().map(Object::IpList));
        objects.extend(policy.services.values().cloned().map(Object::Service));
        objects.extend(policy.tiers.iter().cloned().map(Object::Tier));
        objects.extend(policy.rulesets.iter().cloned().map(Object::Ruleset));
        for o in objects {
            let text = format_object(&o);
            let (back, errors) = parse_file("x.yaml", &text);
            prop_assert!(errors.is_empty(), "{:?}\n{}", errors, text);
            prop_assert_eq!(back.len(), 1);
            prop_assert_eq!(format_object(&back[0]), text);
        }
    }
}
