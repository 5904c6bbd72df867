//! Write scope on the data: a ruleset that `scope::providers_within` lets an app owner
//! write never changes the verdict of a connection into a workload outside the
//! owner's scope, nor into an address outside the inventory (checked with the oracle
//! on random estates, policies, owner scopes and rulesets).

mod common;

use bulkhead_model::{Action, Labels};
use bulkhead_policy::{Object, Origin, Policy, Rule, Ruleset, Selector, ServiceRef, oracle, scope};
use common::*;
use proptest::prelude::*;

fn objects_of(p: &Policy) -> Vec<Object> {
    let mut out: Vec<Object> = Vec::new();
    out.extend(p.label_groups.values().cloned().map(Object::LabelGroup));
    out.extend(p.ip_lists.values().cloned().map(Object::IpList));
    out.extend(p.services.values().cloned().map(Object::Service));
    out.extend(p.tiers.iter().cloned().map(Object::Tier));
    out.extend(p.rulesets.iter().cloned().map(Object::Ruleset));
    out
}

/// The owner's ruleset: its scope is the owner's plus `extra`, its rules drawn like any.
fn owner_ruleset(shape: &Shape, owner: &Labels, extra: &Labels, rules: &[RawRule]) -> Ruleset {
    let mut ruleset_scope = extra.clone();
    for (k, v) in owner.iter() {
        ruleset_scope
            .insert(bulkhead_model::Label::new(k, v).unwrap())
            .ok();
    }
    let sel = |(kind, labels, idx): &(u8, Labels, usize)| match kind {
        0 => Selector::Any,
        1 | 2 => Selector::Group(format!("g{}", idx % shape.groups.len())),
        3 | 4 => Selector::IpList(format!("l{}", idx % shape.lists.len())),
        _ => Selector::Labels(labels.clone()),
    };
    Ruleset {
        name: "owners".into(),
        description: None,
        scope: ruleset_scope,
        tier: "t0".into(),
        tier_origin: Origin::default(),
        owner: None,
        rules: rules
            .iter()
            .enumerate()
            .map(|(i, r)| Rule {
                id: format!("owner-r{i}"),
                path: format!("rules[{i}]"),
                description: None,
                action: if r.deny { Action::Deny } else { Action::Allow },
                from: r.from.iter().map(sel).collect(),
                to: r.to.iter().map(sel).collect(),
                services: r
                    .services
                    .iter()
                    .map(|(_, p, _)| ServiceRef::Port(*p))
                    .collect(),
                origin: Origin::default(),
                item_origins: Default::default(),
            })
            .collect(),
        origin: Origin::default(),
    }
}

fn owner_scope() -> impl Strategy<Value = Labels> {
    (0..KEYS.len(), 0..VALUES.len(), labels()).prop_map(|(k, v, more)| {
        let mut l = more;
        l.insert(bulkhead_model::Label::new(KEYS[k], VALUES[v]).unwrap())
            .ok();
        l
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn an_accepted_owner_ruleset_never_changes_access_outside_the_owners_scope(
        inv in inventory(),
        base in shape(),
        owner in owner_scope(),
        extra in labels(),
        raw in shape(),
        conns in proptest::collection::vec(connection(), 64),
    ) {
        let before = build_policy(&base);
        let Some((_, _, rules)) = raw.rulesets.first() else { return Ok(()) };
        // What an app owner could store: each rule keeps the providers the check lets
        // through (a rule left with none is dropped).
        let mut rs = owner_ruleset(&base, &owner, &extra, rules);
        let unchecked = rs.clone();
        rs.rules.retain_mut(|r| {
            r.to.retain(|s| scope::provider_outside(s, &unchecked, &before.label_groups, &owner).is_none());
            !r.to.is_empty()
        });
        prop_assert!(scope::providers_within(&rs, &before.label_groups, &owner).is_ok());
        let mut objects = objects_of(&before);
        objects.push(Object::Ruleset(rs));
        let after = Policy::from_objects(objects).expect("the owner's ruleset checks");
        for c in &conns {
            let inside = inv.by_address(c.dst).is_some_and(|w| w.labels.includes(&owner));
            if inside {
                continue;
            }
            prop_assert_eq!(
                oracle::evaluate(&before, &inv, c),
                oracle::evaluate(&after, &inv, c),
                "{:?} into a workload outside {}", c, owner
            );
        }
    }

    /// The check is not vacuous: a provider it refuses can change such a verdict.
    #[test]
    fn refused_providers_are_those_that_can_reach_outside(
        base in shape(),
        owner in owner_scope(),
        extra in labels(),
        raw in shape(),
    ) {
        let before = build_policy(&base);
        let Some((_, _, rules)) = raw.rulesets.first() else { return Ok(()) };
        let rs = owner_ruleset(&base, &owner, &extra, rules);
        for rule in &rs.rules {
            for s in &rule.to {
                let refused = scope::provider_outside(s, &rs, &before.label_groups, &owner).is_some();
                let reaches_outside = match s {
                    Selector::Any | Selector::IpList(_) => true,
                    Selector::Labels(l) => owner.iter().any(|(k, v)| {
                        l.get(k).or_else(|| rs.scope.get(k)) != Some(v)
                    }),
                    Selector::Group(g) => {
                        let group = &before.label_groups[g];
                        owner.iter().any(|(k, v)| match group.labels.get(k) {
                            Some(vs) => vs.iter().any(|x| x != v),
                            None => rs.scope.get(k) != Some(v),
                        })
                    }
                };
                prop_assert_eq!(refused, reaches_outside, "{} in {:?}", s, rs.scope);
            }
        }
    }
}
