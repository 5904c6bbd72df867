//! Step 3 onwards: the grouped edges written out as policy objects (tiers, rulesets,
//! label groups, IP lists and services), reusing what the current policy already has,
//! with every widening beyond what was observed reported.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use bulkhead_model::{Action, Labels, ServicePort};
use bulkhead_policy::{IpList, Object, Origin, Rule, Ruleset, Selector, Service, ServiceRef, Tier};
use ipnet::IpNet;

use crate::cidr::{self, Collapsed};
use crate::ports;

use super::{
    Acc, Builder, KEY_ENV, KEY_ROLE, Names, Recommendation, RecommendedFile, RsKey, Side, Widening,
    WideningKind, list_names,
};

/// An IP list the proposal will write (or reuse), per address set.
struct ListPlan {
    internet: bool,
    /// The proposed list for the rest (None when everything is internet).
    list: Option<String>,
}

fn origin() -> Origin {
    Origin::default()
}

impl Builder<'_> {
    pub(super) fn build(mut self, rules: BTreeMap<(RsKey, Side, Side), Acc>) -> Recommendation {
        let mut widenings = Vec::new();
        let mut names = Names::default();
        let mut rule_ids = Names::default();
        let mut tier_names: BTreeSet<String> = BTreeSet::new();
        let mut max_order = 0i64;
        let mut existing_services: BTreeMap<String, Vec<ServicePort>> = BTreeMap::new();
        let mut existing_internet: Option<String> = None;
        let (inet_inc, inet_exc) = cidr::internet_ranges();
        if let Some(p) = self.current {
            for t in &p.tiers {
                tier_names.insert(t.name.clone());
                max_order = max_order.max(t.order);
            }
            for n in p.label_groups.keys() {
                names.0.insert(n.clone());
            }
            for (n, l) in &p.ip_lists {
                names.0.insert(n.clone());
                if existing_internet.is_none() && l.include == inet_inc && l.exclude == inet_exc {
                    existing_internet = Some(n.clone());
                }
            }
            for (n, s) in &p.services {
                names.0.insert(n.clone());
                if s.process.is_none() {
                    existing_services.insert(n.clone(), s.ports.clone());
                }
            }
            for rs in &p.rulesets {
                names.0.insert(rs.name.clone());
            }
            for (_, r) in p.rules() {
                rule_ids.0.insert(r.id.clone());
            }
        }

        // Tiers: reuse the current ones, add what is missing after them.
        let mut tiers = Vec::new();
        let base_order = if self.current.is_some() {
            max_order
        } else {
            10
        };
        for (i, name) in [&self.opts.shared_tier, &self.opts.application_tier]
            .into_iter()
            .enumerate()
        {
            if !tier_names.contains(name.as_str()) {
                tier_names.insert(name.clone());
                let t = Tier {
                    name: name.clone(),
                    description: Some(if i == 0 {
                        "Shared services every workload uses, written once (recommended)".into()
                    } else {
                        "Application rules (recommended)".into()
                    }),
                    order: base_order + 10 * (i as i64 + 1),
                    origin: origin(),
                };
                tiers.push(Object::Tier(t));
            }
        }

        // IP lists, one per distinct address set.
        let mut plans: Vec<ListPlan> = Vec::new();
        let mut lists: Vec<Object> = Vec::new();
        let mut list_by_content: HashMap<Vec<IpNet>, String> = HashMap::new();
        let mut internet_name: Option<String> = existing_internet.clone();
        let mut internet_object: Option<Object> = None;
        let sets = std::mem::take(&mut self.sets);
        for set in &sets {
            let public = set.iter().filter(|a| cidr::is_public(**a)).count();
            let internet = public >= self.opts.internet_min_addresses.max(1);
            let rest: Vec<IpAddr> = if internet {
                set.iter()
                    .copied()
                    .filter(|a| !cidr::is_public(*a))
                    .collect()
            } else {
                set.clone()
            };
            if internet && internet_name.is_none() {
                let name = names.claim("internet");
                internet_object = Some(Object::IpList(IpList {
                    name: name.clone(),
                    description: Some("Everything outside the private ranges".into()),
                    include: inet_inc.clone(),
                    exclude: inet_exc.clone(),
                    origin: origin(),
                }));
                internet_name = Some(name);
            }
            let list = if rest.is_empty() {
                None
            } else {
                let collapsed = cidr::collapse(&rest, &self.idx.sorted_addrs);
                let nets: Vec<IpNet> = collapsed.iter().map(|c| c.net).collect();
                let name = if let Some(n) = list_by_content.get(&nets) {
                    n.clone()
                } else {
                    let first = nets[0].to_string().replace([':', '/'], "_");
                    let base = if nets.len() == 1 {
                        format!("peers-{first}")
                    } else {
                        format!("peers-{first}-and-{}-more", nets.len() - 1)
                    };
                    let name = names.claim(&base);
                    list_by_content.insert(nets.clone(), name.clone());
                    for c in collapsed.iter().filter(|c| c.widens()) {
                        widenings.push(cidr_widening(&name, c, &rest));
                    }
                    lists.push(Object::IpList(IpList {
                        name: name.clone(),
                        description: Some(format!(
                            "{} address(es) outside the inventory seen in traffic",
                            rest.len()
                        )),
                        include: nets,
                        exclude: Vec::new(),
                        origin: origin(),
                    }));
                    name
                };
                Some(name)
            };
            plans.push(ListPlan { internet, list });
        }
        if let Some(o) = internet_object {
            lists.insert(0, o);
        }

        // Rulesets.
        let mut rulesets: BTreeMap<RsKey, Ruleset> = BTreeMap::new();
        let mut services: Vec<Object> = Vec::new();
        // Shared-service rules name their many consumers (or providers) by environment,
        // as a label group, like the example estate's `it-servers`.
        let mut groups: Vec<Object> = Vec::new();
        let mut group_names: HashMap<BTreeSet<String>, String> = HashMap::new();
        if let Some(p) = self.current {
            for g in p.label_groups.values() {
                if g.labels.len() == 1
                    && let Some(envs) = g.labels.get(KEY_ENV)
                {
                    group_names.insert(envs.clone(), g.name.clone());
                }
            }
        }
        let mut service_names: HashMap<Vec<ServicePort>, String> =
            existing_services.into_iter().map(|(n, p)| (p, n)).collect();
        for ((rs_key, from, to), acc) in &rules {
            let rs = rulesets.entry(*rs_key).or_insert_with(|| {
                let (base, scope, tier, description) = match rs_key {
                    RsKey::Shared => (
                        "shared-services".to_string(),
                        Labels::new(),
                        self.opts.shared_tier.clone(),
                        "Services many applications use, written once",
                    ),
                    RsKey::Scope(s) => {
                        let scope = self.idx.scopes[*s as usize].clone();
                        let base: Vec<&str> = scope.iter().map(|(_, v)| v).collect();
                        (
                            base.join("-"),
                            scope,
                            self.opts.application_tier.clone(),
                            "Rules of one application scope",
                        )
                    }
                    RsKey::Unscoped => (
                        "cross-scope".to_string(),
                        Labels::new(),
                        self.opts.application_tier.clone(),
                        "Rules whose ends cannot share a scope",
                    ),
                    RsKey::Unmanaged => (
                        "unmanaged-peers".to_string(),
                        Labels::new(),
                        self.opts.application_tier.clone(),
                        "Traffic between addresses outside the inventory",
                    ),
                };
                let owner = match rs_key {
                    RsKey::Scope(_) => {
                        let owners: BTreeSet<&str> = self
                            .idx
                            .members(&scope)
                            .into_iter()
                            .filter_map(|i| self.idx.workload(i).owner.as_deref())
                            .collect();
                        (owners.len() == 1)
                            .then(|| owners.into_iter().next().unwrap_or_default().to_string())
                    }
                    _ => None,
                };
                Ruleset {
                    name: names.claim(&base),
                    description: Some(format!("{description} (recommended)")),
                    scope,
                    tier,
                    tier_origin: origin(),
                    owner,
                    rules: Vec::new(),
                    origin: origin(),
                }
            });
            let scope = rs.scope.clone();
            // `workloads` narrowed to the environments of the workloads seen on that side,
            // when every one of them has an environment.
            let seen_on_workloads_side = match (from, to) {
                (Side::Workloads, _) => Some(&acc.from_w),
                (_, Side::Workloads) => Some(&acc.to_w),
                _ => None,
            };
            let env_group: Option<(String, BTreeSet<String>)> =
                seen_on_workloads_side.and_then(|seen| {
                    let envs: Option<BTreeSet<String>> = seen
                        .iter()
                        .map(|&i| self.idx.workload(i).labels.get(KEY_ENV).map(str::to_string))
                        .collect();
                    let envs = envs.filter(|e| !e.is_empty())?;
                    let name = match group_names.get(&envs) {
                        Some(n) => n.clone(),
                        None => {
                            let joined: Vec<&str> = envs.iter().map(String::as_str).collect();
                            let n = names.claim(&format!("env-{}", joined.join("-")));
                            group_names.insert(envs.clone(), n.clone());
                            groups.push(Object::LabelGroup(bulkhead_policy::LabelGroup {
                                name: n.clone(),
                                description: Some(
                                    "The environments seen using (or used by) shared services"
                                        .into(),
                                ),
                                labels: BTreeMap::from([(KEY_ENV.to_string(), envs.clone())]),
                                origin: origin(),
                            }));
                            n
                        }
                    };
                    Some((name, envs))
                });
            let workloads_sel = match &env_group {
                Some((n, _)) => Selector::Group(n.clone()),
                None => Selector::Labels(Labels::new()),
            };
            let side_sel = |s: &Side| -> Vec<Selector> {
                match s {
                    Side::Workloads => vec![workloads_sel.clone()],
                    Side::Group(g) => {
                        let gl = &self.idx.groups[*g as usize];
                        let mut l = Labels::new();
                        for (k, v) in gl.iter() {
                            if scope.get(k) != Some(v) {
                                l.set(bulkhead_model::Label {
                                    key: k.to_string(),
                                    value: v.to_string(),
                                });
                            }
                        }
                        vec![Selector::Labels(l)]
                    }
                    Side::Ext(id) => {
                        let plan = &plans[*id as usize];
                        let mut v = Vec::new();
                        if plan.internet {
                            v.push(Selector::IpList(internet_name.clone().unwrap_or_default()));
                        }
                        if let Some(n) = &plan.list {
                            v.push(Selector::IpList(n.clone()));
                        }
                        v
                    }
                }
            };
            let token = |s: &Side| -> String {
                match s {
                    Side::Workloads => match &env_group {
                        Some((n, _)) => n.clone(),
                        None => "workloads".into(),
                    },
                    Side::Group(g) => {
                        let gl = &self.idx.groups[*g as usize];
                        let own: Vec<&str> = gl
                            .iter()
                            .filter(|(k, v)| scope.get(k) != Some(v))
                            .map(|(_, v)| v)
                            .collect();
                        if own.is_empty() {
                            "all".into()
                        } else {
                            own.join("-")
                        }
                    }
                    Side::Ext(id) => {
                        if plans[*id as usize].internet {
                            "internet".into()
                        } else {
                            "peers".into()
                        }
                    }
                }
            };
            let id = rule_ids.claim(&format!("{}-{}-to-{}", rs.name, token(from), token(to)));

            // Services.
            let mut proposed = Vec::new();
            for (proto, ps) in &acc.ports {
                let ps: Vec<u16> = ps.iter().copied().collect();
                proposed.extend(ports::propose(*proto, &ps));
            }
            for p in proposed.iter().filter(|p| p.widens()) {
                widenings.push(Widening {
                    kind: WideningKind::PortRange,
                    object: format!("{}/{id}", rs.name),
                    field: "services".into(),
                    observed: format!(
                        "{} port(s): {}",
                        p.observed.len(),
                        list_names(&p.observed, 12)
                    ),
                    allowed: p.port.to_string(),
                });
            }
            let mut svc_refs: Vec<ServiceRef> =
                proposed.iter().map(|p| ServiceRef::Port(p.port)).collect();
            // Shared services get a named service, so the rule reads like the service.
            if let (RsKey::Shared, Side::Group(g)) = (rs_key, to) {
                let ports: Vec<ServicePort> = {
                    let mut v: Vec<ServicePort> = proposed.iter().map(|p| p.port).collect();
                    v.sort();
                    v.dedup();
                    v
                };
                let name = match service_names.get(&ports) {
                    Some(n) => n.clone(),
                    None => {
                        let role = self.idx.groups[*g as usize]
                            .get(KEY_ROLE)
                            .map(str::to_string)
                            .unwrap_or_else(|| token(to));
                        let n = names.claim(&role);
                        service_names.insert(ports.clone(), n.clone());
                        services.push(Object::Service(Service {
                            name: n.clone(),
                            description: Some("Seen served to many applications".into()),
                            ports,
                            process: None,
                            origin: origin(),
                        }));
                        n
                    }
                };
                svc_refs = vec![ServiceRef::Named(name)];
            }

            // Many public addresses became the internet: say so where it is used.
            for (field, side) in [("from", from), ("to", to)] {
                if let Side::Ext(id) = side
                    && plans[*id as usize].internet
                {
                    let public: Vec<IpAddr> = sets[*id as usize]
                        .iter()
                        .copied()
                        .filter(|a| cidr::is_public(*a))
                        .collect();
                    widenings.push(Widening {
                        kind: WideningKind::Internet,
                        object: format!("{}/{id}", rs.name),
                        field: field.into(),
                        observed: format!(
                            "{} public address(es): {}",
                            public.len(),
                            list_names(&public, 5)
                        ),
                        allowed: format!(
                            "iplist:{}, every address outside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 and fc00::/7",
                            internet_name.clone().unwrap_or_default()
                        ),
                    });
                }
            }
            // Workload widenings.
            for (field, side, seen) in [("from", from, &acc.from_w), ("to", to, &acc.to_w)] {
                let (effective, members) = match (side, &env_group) {
                    (Side::Workloads, Some((_, envs))) => {
                        let mut m: Vec<u32> = envs
                            .iter()
                            .flat_map(|e| {
                                let mut l = Labels::new();
                                l.set(bulkhead_model::Label {
                                    key: KEY_ENV.to_string(),
                                    value: e.clone(),
                                });
                                self.idx.members(&l)
                            })
                            .collect();
                        m.sort_unstable();
                        (None, m)
                    }
                    (Side::Workloads, None) => {
                        (Some(Labels::new()), self.idx.members(&Labels::new()))
                    }
                    (Side::Group(g), _) => {
                        let l = self.idx.groups[*g as usize].clone();
                        let m = self.idx.members(&l);
                        (Some(l), m)
                    }
                    (Side::Ext(_), _) => continue,
                };
                if members.len() > seen.len() {
                    let seen_names: Vec<&str> = seen
                        .iter()
                        .map(|&i| self.idx.workload(i).name.as_str())
                        .collect();
                    let unseen: Vec<&str> = members
                        .iter()
                        .filter(|i| !seen.contains(i))
                        .map(|&i| self.idx.workload(i).name.as_str())
                        .collect();
                    let what = match (&effective, &env_group) {
                        (None, Some((n, envs))) => {
                            let e: Vec<&str> = envs.iter().map(String::as_str).collect();
                            format!("group:{n} (env {})", e.join(", "))
                        }
                        (Some(l), _) if l.is_empty() => "every inventory workload".to_string(),
                        (Some(l), _) => {
                            format!("workloads labelled {}", Selector::Labels(l.clone()))
                        }
                        (None, None) => "every inventory workload".to_string(),
                    };
                    widenings.push(Widening {
                        kind: WideningKind::Workloads,
                        object: format!("{}/{id}", rs.name),
                        field: field.into(),
                        observed: format!(
                            "{} workload(s): {}",
                            seen_names.len(),
                            list_names(&seen_names, 8)
                        ),
                        allowed: format!(
                            "{} workload(s), {what}, including unobserved {}",
                            members.len(),
                            list_names(&unseen, 8)
                        ),
                    });
                }
            }
            let rule = Rule {
                id,
                path: format!("rules[{}]", rs.rules.len()),
                description: Some(format!(
                    "observed {} connection(s), {} byte(s) in {} conversation(s)",
                    acc.connections, acc.bytes, acc.conversations
                )),
                action: Action::Allow,
                from: side_sel(from),
                to: side_sel(to),
                services: svc_refs,
                origin: origin(),
                item_origins: Default::default(),
            };
            rs.rules.push(rule);
        }

        let mut stats = std::mem::take(&mut self.stats);
        stats.rulesets = rulesets.len() as u64;
        stats.rules = rulesets.values().map(|r| r.rules.len() as u64).sum();
        stats.ip_lists = lists.len() as u64;
        stats.services = services.len() as u64;
        stats.label_groups = groups.len() as u64;
        let mut files = Vec::new();
        if !tiers.is_empty() {
            files.push(RecommendedFile {
                name: "00-tiers.yaml".into(),
                objects: tiers,
            });
        }
        let mut objects = groups;
        objects.extend(lists);
        objects.extend(services);
        if !objects.is_empty() {
            files.push(RecommendedFile {
                name: "10-objects.yaml".into(),
                objects,
            });
        }
        for (key, rs) in rulesets {
            let prefix = match key {
                RsKey::Shared => "20",
                RsKey::Scope(_) => "40",
                RsKey::Unscoped => "50",
                RsKey::Unmanaged => "60",
            };
            files.push(RecommendedFile {
                name: format!("{prefix}-{}.yaml", rs.name),
                objects: vec![Object::Ruleset(rs)],
            });
        }
        widenings.sort();
        Recommendation {
            files,
            widenings,
            stats,
            notes: self.notes,
        }
    }
}

fn cidr_widening(list: &str, c: &Collapsed, observed: &[IpAddr]) -> Widening {
    let inside: Vec<&IpAddr> = observed.iter().filter(|a| c.net.contains(*a)).collect();
    Widening {
        kind: WideningKind::Cidr,
        object: format!("ip_list/{list}"),
        field: "include".into(),
        observed: format!("{} address(es): {}", inside.len(), list_names(&inside, 6)),
        allowed: format!("{} ({} addresses)", c.net, c.size()),
    }
}
