//! A whole policy: every object, cross-references checked.

use std::collections::{BTreeMap, HashMap};

use crate::document::{
    IpList, LabelGroup, Object, Ruleset, Selector, Service, ServiceRef, Tier, parse_file,
};
use crate::error::{PolicyError, PolicyErrors};

/// A checked policy. Exists only if every document parsed and every reference resolves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    pub label_groups: BTreeMap<String, LabelGroup>,
    pub ip_lists: BTreeMap<String, IpList>,
    pub services: BTreeMap<String, Service>,
    /// By ascending `order`: the evaluation order.
    pub tiers: Vec<Tier>,
    /// By name, for deterministic output.
    pub rulesets: Vec<Ruleset>,
}

impl Policy {
    /// Parses and checks a set of files given as (name, contents). All errors of all
    /// files are returned together; on any error no policy is produced.
    pub fn from_sources<N: AsRef<str>, T: AsRef<str>>(
        sources: &[(N, T)],
    ) -> Result<Policy, PolicyErrors> {
        let mut objects = Vec::new();
        let mut errors = Vec::new();
        for (name, text) in sources {
            let (objs, errs) = parse_file(name.as_ref(), text.as_ref());
            objects.extend(objs);
            errors.extend(errs);
        }
        match Policy::from_objects(objects) {
            Ok(p) if errors.is_empty() => Ok(p),
            Ok(_) => Err(PolicyErrors(errors)),
            Err(PolicyErrors(more)) => {
                errors.extend(more);
                Err(PolicyErrors(errors))
            }
        }
    }

    pub fn from_objects(objects: Vec<Object>) -> Result<Policy, PolicyErrors> {
        let mut errors = Vec::new();
        let mut p = Policy::default();
        let mut seen: HashMap<(&'static str, String), crate::error::Origin> = HashMap::new();
        let mut rulesets = Vec::new();
        for o in objects {
            let key = (o.kind(), o.name().to_string());
            if let Some(first) = seen.get(&key) {
                errors.push(PolicyError::new(
                    o.origin().clone(),
                    "name",
                    format!("{} {:?} is already defined at {first}", o.kind(), o.name()),
                ));
                continue;
            }
            seen.insert(key, o.origin().clone());
            match o {
                Object::LabelGroup(g) => {
                    p.label_groups.insert(g.name.clone(), g);
                }
                Object::IpList(l) => {
                    p.ip_lists.insert(l.name.clone(), l);
                }
                Object::Service(s) => {
                    p.services.insert(s.name.clone(), s);
                }
                Object::Tier(t) => p.tiers.push(t),
                Object::Ruleset(r) => rulesets.push(r),
            }
        }
        p.tiers
            .sort_by(|a, b| a.order.cmp(&b.order).then(a.name.cmp(&b.name)));
        for pair in p.tiers.windows(2) {
            if pair[0].order == pair[1].order {
                errors.push(PolicyError::new(
                    pair[1].origin.clone(),
                    "order",
                    format!(
                        "tier {:?} has the same order {} as tier {:?} ({}); tier order must be unambiguous",
                        pair[1].name, pair[1].order, pair[0].name, pair[0].origin
                    ),
                ));
            }
        }
        let mut rule_ids: HashMap<String, crate::error::Origin> = HashMap::new();
        for rs in &rulesets {
            if !p.tiers.iter().any(|t| t.name == rs.tier) {
                errors.push(PolicyError::new(
                    rs.tier_origin.clone(),
                    "tier",
                    format!(
                        "unknown tier {:?}; define it with a `kind: tier` document",
                        rs.tier
                    ),
                ));
            }
            for rule in &rs.rules {
                let i = &rule.path;
                if rule.id.is_empty() {
                    // Already reported as missing.
                } else if let Some(first) = rule_ids.get(&rule.id) {
                    errors.push(PolicyError::new(
                        rule.origin.clone(),
                        format!("{i}.id"),
                        format!("rule id {:?} is already used at {first}", rule.id),
                    ));
                } else {
                    rule_ids.insert(rule.id.clone(), rule.origin.clone());
                }
                for (side, sels, origins) in [
                    ("from", &rule.from, &rule.item_origins.from),
                    ("to", &rule.to, &rule.item_origins.to),
                ] {
                    for (j, sel) in sels.iter().enumerate() {
                        let missing = match sel {
                            Selector::Group(g) if !p.label_groups.contains_key(g) => {
                                Some(format!("unknown label group {g:?}"))
                            }
                            Selector::IpList(l) if !p.ip_lists.contains_key(l) => {
                                Some(format!("unknown ip list {l:?}"))
                            }
                            _ => None,
                        };
                        if let Some(m) = missing {
                            errors.push(PolicyError::new(
                                origins
                                    .get(j)
                                    .cloned()
                                    .unwrap_or_else(|| rule.origin.clone()),
                                format!("{i}.{side}[{j}]"),
                                m,
                            ));
                        }
                    }
                }
                for (j, s) in rule.services.iter().enumerate() {
                    if let ServiceRef::Named(n) = s
                        && !p.services.contains_key(n)
                    {
                        errors.push(PolicyError::new(
                            rule.item_origins.services.get(j).cloned().unwrap_or_else(|| rule.origin.clone()),
                            format!("{i}.services[{j}]"),
                            format!("unknown service {n:?}; define it with a `kind: service` document or write a port such as tcp/443"),
                        ));
                    }
                }
            }
        }
        rulesets.sort_by(|a, b| a.name.cmp(&b.name));
        p.rulesets = rulesets;
        if errors.is_empty() {
            Ok(p)
        } else {
            errors.sort_by(|a, b| {
                (&a.origin.file, a.origin.line, a.origin.column).cmp(&(
                    &b.origin.file,
                    b.origin.line,
                    b.origin.column,
                ))
            });
            Err(PolicyErrors(errors))
        }
    }

    pub fn tier_index(&self, name: &str) -> Option<usize> {
        self.tiers.iter().position(|t| t.name == name)
    }

    /// Every rule with its ruleset, in no particular evaluation order.
    pub fn rules(&self) -> impl Iterator<Item = (&Ruleset, &crate::document::Rule)> {
        self.rulesets
            .iter()
            .flat_map(|rs| rs.rules.iter().map(move |r| (rs, r)))
    }

    pub fn rule_count(&self) -> usize {
        self.rulesets.iter().map(|r| r.rules.len()).sum()
    }
}
