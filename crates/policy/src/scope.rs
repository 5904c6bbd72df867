//! Write scope on the data: what a ruleset may open when its author owns only the
//! workloads inside a label scope (an app owner). See docs/policy.md, "Who may write
//! what".
//!
//! The model is Illumio's intra-scope / extra-scope rules: a rule may only open (or
//! close) connections *into* workloads its author owns. Providers (`to`) must lie
//! inside the author's scope, once the ruleset's scope has filled in the keys a
//! selector leaves open; consumers (`from`) may be anything (other applications, IP
//! lists, `any`), because whether others may reach my application is mine to decide.
//! Since a connection's decision is made from the rules whose provider side matches
//! its destination, such a rule never changes the decision of a connection to a
//! workload outside the author's scope, nor to an address outside the inventory.

use std::collections::BTreeMap;

use bulkhead_model::Labels;

use crate::document::{LabelGroup, Ruleset, Selector};

/// Why `selector`, on the provider side of a rule in `ruleset`, can reach beyond
/// `owner_scope`, if it can.
pub fn provider_outside(
    selector: &Selector,
    ruleset: &Ruleset,
    groups: &BTreeMap<String, LabelGroup>,
    owner_scope: &Labels,
) -> Option<String> {
    match selector {
        Selector::Any => Some("`any` as a provider reaches every address".into()),
        Selector::IpList(name) => Some(format!(
            "iplist:{name} as a provider names addresses, which may be anyone's workloads"
        )),
        Selector::Labels(own) => {
            let outside: Vec<String> = owner_scope
                .iter()
                .filter(|(k, v)| {
                    let value = own.get(k).or_else(|| ruleset.scope.get(k));
                    value != Some(*v)
                })
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            (!outside.is_empty()).then(|| {
                format!(
                    "{selector} selects workloads without {} (your scope is {owner_scope})",
                    outside.join(" ")
                )
            })
        }
        Selector::Group(name) => {
            let Some(group) = groups.get(name) else {
                return Some(format!("group:{name} does not exist"));
            };
            let outside: Vec<String> = owner_scope
                .iter()
                .filter(|(k, v)| match group.labels.get(*k) {
                    Some(values) => !(values.len() == 1 && values.contains(*v)),
                    None => ruleset.scope.get(k) != Some(*v),
                })
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            (!outside.is_empty()).then(|| {
                format!(
                    "group:{name} selects workloads without {} (your scope is {owner_scope})",
                    outside.join(" ")
                )
            })
        }
    }
}

/// Checks that every rule of `ruleset` names as providers only workloads inside
/// `owner_scope`: `Err((rule path, why))` for the first that does not.
pub fn providers_within(
    ruleset: &Ruleset,
    groups: &BTreeMap<String, LabelGroup>,
    owner_scope: &Labels,
) -> Result<(), (String, String)> {
    for rule in &ruleset.rules {
        for (i, selector) in rule.to.iter().enumerate() {
            if let Some(why) = provider_outside(selector, ruleset, groups, owner_scope) {
                return Err((format!("{}.to[{i}]", rule.path), why));
            }
        }
    }
    Ok(())
}
