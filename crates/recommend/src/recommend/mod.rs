//! From observed conversations to label-based rulesets, IP lists and services.
//!
//! The steps:
//! 1. fold summaries into conversations (source, destination, protocol, port) over the
//!    window, and drop what is excluded, out of scope, below the minimum observations or
//!    (with a current policy) already decided by it;
//! 2. name each end by its label group at the chosen granularity (workloads without
//!    labels, and addresses outside the inventory, stay addresses);
//! 3. find shared services: a provider group on one port consumed from at least
//!    `shared_min_apps` other application scopes (DNS, NTP, directory), or a consumer group
//!    reaching that many (monitoring, backup); their rules are written once, in the
//!    shared tier, for every workload;
//! 4. place every other edge in the provider's application scope (intra-app by role,
//!    inter-app with the consumer's labels spelt out), or in an unscoped ruleset when
//!    the consumer's labels cannot be spelt out under that scope;
//! 5. turn external addresses into IP lists (collapsed CIDRs, or `internet` when many
//!    public addresses call in) and ports into services (ranges where they cluster);
//! 6. report every place where what is allowed is broader than what was seen.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use bulkhead_model::{FlowSummary, Inventory, Labels, Workload};
use bulkhead_policy::{CompiledPolicy, ConnKey, Object, Policy, format::format_object};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::traffic::Traffic;

mod build;

pub const KEY_APP: &str = "app";
pub const KEY_ENV: &str = "env";
pub const KEY_ROLE: &str = "role";

/// How finely rules name workloads.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, Hash,
)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// One group per application and environment (`app`, `env`).
    App,
    /// One group per role inside an application (`app`, `env`, `role`).
    #[default]
    Role,
    /// One group per distinct label set: as close to single workloads as labels allow.
    Workload,
}

impl std::str::FromStr for Granularity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "app" => Ok(Granularity::App),
            "role" => Ok(Granularity::Role),
            "workload" => Ok(Granularity::Workload),
            _ => Err(format!(
                "unknown granularity {s:?} (expected app, role or workload)"
            )),
        }
    }
}

impl std::fmt::Display for Granularity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Granularity::App => "app",
            Granularity::Role => "role",
            Granularity::Workload => "workload",
        })
    }
}

/// The knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub granularity: Granularity,
    /// A conversation (source, destination, protocol, port) needs at least this many
    /// connections over the window to get a rule; rarer ones are counted, not allowed.
    pub min_observations: u64,
    /// Conversations with an end carrying all labels of any of these are left out.
    pub exclude: Vec<Labels>,
    /// Only conversations with an end carrying all these labels.
    pub scope: Option<Labels>,
    /// Summaries whose bucket starts in `[from_ms, to_ms)`.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// A provider (or consumer) group on one port used by this many other application
    /// scopes is a shared service, written once for every workload.
    pub shared_min_apps: usize,
    /// At least this many distinct public addresses on one edge become `iplist:internet`.
    pub internet_min_addresses: usize,
    pub shared_tier: String,
    pub application_tier: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            granularity: Granularity::Role,
            min_observations: 1,
            exclude: Vec::new(),
            scope: None,
            from_ms: None,
            to_ms: None,
            shared_min_apps: 3,
            internet_min_addresses: 32,
            shared_tier: "shared-services".into(),
            application_tier: "application".into(),
        }
    }
}

/// What kind of widening.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum WideningKind {
    /// A label selector (or `workloads`) covers workloads not seen on that side.
    Workloads,
    /// A CIDR holds addresses that were not seen.
    Cidr,
    /// Many public addresses became the whole internet.
    Internet,
    /// A port range holds ports that were not seen.
    PortRange,
}

/// One place where the proposal allows more than was observed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, utoipa::ToSchema)]
pub struct Widening {
    pub kind: WideningKind,
    /// `ruleset/rule-id` or `ip_list/name`.
    pub object: String,
    /// `from`, `to`, `services` or `include`.
    pub field: String,
    pub observed: String,
    pub allowed: String,
}

impl std::fmt::Display for Widening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: observed {}; allowed {}",
            self.object, self.field, self.observed, self.allowed
        )
    }
}

/// What happened to the input.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub summaries: u64,
    pub outside_window: u64,
    /// Distinct (source, destination, protocol, port) in the window.
    pub conversations: u64,
    pub excluded: u64,
    pub out_of_scope: u64,
    pub below_min_observations: u64,
    /// Already allowed by the current policy (nothing proposed).
    pub already_allowed: u64,
    /// Denied by an explicit rule of the current policy (nothing proposed: a deny is
    /// somebody's decision).
    pub denied_by_rule: u64,
    /// Conversations the proposal allows.
    pub recommended: u64,
    pub recommended_connections: u64,
    pub recommended_bytes: u64,
    pub rulesets: u64,
    pub rules: u64,
    pub ip_lists: u64,
    pub services: u64,
    pub label_groups: u64,
}

/// One proposed file: its name and its objects in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecommendedFile {
    pub name: String,
    pub objects: Vec<Object>,
}

impl RecommendedFile {
    /// The file in canonical form (what `bulkhead policy fmt` would write).
    pub fn text(&self, head: &str) -> String {
        let docs: Vec<String> = self
            .objects
            .iter()
            .enumerate()
            .map(|(i, o)| {
                if i == 0 && !head.is_empty() {
                    format!("{head}{}", format_object(o))
                } else {
                    format_object(o)
                }
            })
            .collect();
        docs.join("---\n")
    }
}

/// The proposal.
#[derive(Debug, Clone, Default)]
pub struct Recommendation {
    pub files: Vec<RecommendedFile>,
    pub widenings: Vec<Widening>,
    pub stats: Stats,
    /// Things a reviewer should know (unlabeled managed workloads, denied conversations).
    pub notes: Vec<String>,
}

impl Recommendation {
    /// Every proposed object.
    pub fn objects(&self) -> impl Iterator<Item = &Object> {
        self.files.iter().flat_map(|f| f.objects.iter())
    }

    /// (file name, canonical text) for each file.
    pub fn rendered_files(&self) -> Vec<(String, String)> {
        self.files
            .iter()
            .map(|f| {
                (
                    f.name.clone(),
                    f.text("# Proposed by `bulkhead recommend` from observed flows; review the widening report.\n"),
                )
            })
            .collect()
    }

    /// The widening report as text, one line per widening.
    pub fn widening_report(&self) -> String {
        let mut out = String::new();
        for w in &self.widenings {
            out.push_str(&w.to_string());
            out.push('\n');
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum End {
    Group(u32),
    Addr(IpAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum RsKey {
    Shared,
    Scope(u32),
    Unscoped,
    Unmanaged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Side {
    Workloads,
    Group(u32),
    /// An address set (index into the address-set table).
    Ext(u32),
}

#[derive(Debug, Default)]
struct Acc {
    ports: BTreeMap<u8, BTreeSet<u16>>,
    connections: u64,
    bytes: u64,
    conversations: u64,
    from_w: BTreeSet<u32>,
    to_w: BTreeSet<u32>,
}

impl Acc {
    fn add(&mut self, o: &EdgeObs, proto: u8, port: u16) {
        self.ports.entry(proto).or_default().insert(port);
        self.connections += o.connections;
        self.bytes += o.bytes;
        self.conversations += o.conversations;
        self.from_w.extend(o.src_w.iter().copied());
        self.to_w.extend(o.dst_w.iter().copied());
    }
}

#[derive(Debug, Default, Clone)]
struct EdgeObs {
    connections: u64,
    bytes: u64,
    conversations: u64,
    src_w: FxHashSet<u32>,
    dst_w: FxHashSet<u32>,
}

/// Inventory lookups the proposal needs.
struct Index<'a> {
    inv: &'a Inventory,
    by_addr: FxHashMap<IpAddr, u32>,
    group_of: Vec<Option<u32>>,
    groups: Vec<Labels>,
    scope_of: Vec<u32>,
    scopes: Vec<Labels>,
    postings: HashMap<(String, String), Vec<u32>>,
    sorted_addrs: Vec<IpAddr>,
}

fn restrict(l: &Labels, keys: &[&str]) -> Labels {
    let mut out = Labels::new();
    for (k, v) in l.iter() {
        if keys.contains(&k) {
            out.set(bulkhead_model::Label {
                key: k.to_string(),
                value: v.to_string(),
            });
        }
    }
    out
}

fn group_labels(l: &Labels, g: Granularity) -> Labels {
    let r = match g {
        Granularity::Workload => return l.clone(),
        Granularity::Role => restrict(l, &[KEY_APP, KEY_ENV, KEY_ROLE]),
        Granularity::App => {
            let r = restrict(l, &[KEY_APP, KEY_ENV]);
            if r.is_empty() {
                restrict(l, &[KEY_ROLE])
            } else {
                r
            }
        }
    };
    if r.is_empty() { l.clone() } else { r }
}

impl<'a> Index<'a> {
    fn new(inv: &'a Inventory, granularity: Granularity) -> Self {
        let mut idx = Index {
            inv,
            by_addr: FxHashMap::default(),
            group_of: Vec::with_capacity(inv.len()),
            groups: Vec::new(),
            scope_of: Vec::new(),
            scopes: Vec::new(),
            postings: HashMap::new(),
            sorted_addrs: Vec::new(),
        };
        let mut group_ids: HashMap<Labels, u32> = HashMap::new();
        let mut scope_ids: HashMap<Labels, u32> = HashMap::new();
        for (i, w) in inv.workloads().iter().enumerate() {
            for a in &w.addresses {
                idx.by_addr.insert(*a, i as u32);
                idx.sorted_addrs.push(*a);
            }
            for (k, v) in w.labels.iter() {
                idx.postings
                    .entry((k.to_string(), v.to_string()))
                    .or_default()
                    .push(i as u32);
            }
            let gl = group_labels(&w.labels, granularity);
            if gl.is_empty() {
                idx.group_of.push(None);
                continue;
            }
            let next = idx.groups.len() as u32;
            let g = *group_ids.entry(gl.clone()).or_insert_with(|| {
                idx.groups.push(gl.clone());
                let sl = restrict(&gl, &[KEY_APP, KEY_ENV]);
                let next_scope = idx.scopes.len() as u32;
                let s = *scope_ids.entry(sl.clone()).or_insert_with(|| {
                    idx.scopes.push(sl);
                    next_scope
                });
                idx.scope_of.push(s);
                next
            });
            idx.group_of.push(Some(g));
        }
        idx.sorted_addrs.sort_unstable();
        idx
    }

    fn workload(&self, i: u32) -> &Workload {
        &self.inv.workloads()[i as usize]
    }

    /// Inventory workloads carrying every label of `l` (all of them for no labels).
    fn members(&self, l: &Labels) -> Vec<u32> {
        if l.is_empty() {
            return (0..self.inv.len() as u32).collect();
        }
        let mut best: Option<&Vec<u32>> = None;
        for (k, v) in l.iter() {
            match self.postings.get(&(k.to_string(), v.to_string())) {
                None => return Vec::new(),
                Some(p) if best.is_none_or(|b| p.len() < b.len()) => best = Some(p),
                Some(_) => {}
            }
        }
        best.map(|p| {
            p.iter()
                .copied()
                .filter(|&i| self.workload(i).labels.includes(l))
                .collect()
        })
        .unwrap_or_default()
    }
}

/// Makes names unique against a set of names already taken.
#[derive(Default)]
struct Names(HashSet<String>);

impl Names {
    fn claim(&mut self, base: &str) -> String {
        let mut base: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        base.truncate(110);
        let base = base.trim_matches('-').to_string();
        let base = if base.is_empty() { "rec".into() } else { base };
        if self.0.insert(base.clone()) {
            return base;
        }
        for n in 2.. {
            let c = format!("{base}-{n}");
            if self.0.insert(c.clone()) {
                return c;
            }
        }
        unreachable!("some suffix is free")
    }
}

fn list_names<T: std::fmt::Display>(items: &[T], max: usize) -> String {
    let shown: Vec<String> = items.iter().take(max).map(|x| x.to_string()).collect();
    if items.len() > max {
        format!("{}, … ({} more)", shown.join(", "), items.len() - max)
    } else {
        shown.join(", ")
    }
}

/// Proposes policy for the observed summaries. `current`, when given, is the policy in
/// force (or the draft): conversations it already decides get nothing, and names, ids
/// and tiers are chosen to fit beside it.
pub fn recommend(
    summaries: &[FlowSummary],
    inventory: &Inventory,
    current: Option<&Policy>,
    opts: &Options,
) -> Recommendation {
    let (traffic, outside) = crate::traffic::fold(summaries, opts.from_ms, opts.to_ms);
    let mut r = recommend_traffic(&traffic, inventory, current, opts);
    r.stats.summaries += outside;
    r.stats.outside_window = outside;
    r
}

/// As [`recommend`], for traffic already folded over the window (by the flow store):
/// `opts`' window is not applied again.
pub fn recommend_traffic(
    traffic: &[Traffic],
    inventory: &Inventory,
    current: Option<&Policy>,
    opts: &Options,
) -> Recommendation {
    let mut stats = Stats::default();
    let mut notes = Vec::new();
    let idx = Index::new(inventory, opts.granularity);

    // 1. Conversations over the window, whatever the process.
    let mut convs: FxHashMap<(IpAddr, IpAddr, u8, u16), (u64, u64)> = FxHashMap::default();
    for t in traffic {
        stats.summaries += t.summaries;
        let e = convs.entry((t.src, t.dst, t.proto, t.port)).or_default();
        e.0 += t.connections;
        e.1 += t.bytes;
    }
    stats.conversations = convs.len() as u64;
    let compiled = current.map(|p| CompiledPolicy::compile(inventory, p));
    let mut denied: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    let mut unlabeled_managed: BTreeSet<String> = BTreeSet::new();
    let mut edges: FxHashMap<(End, End, u8, u16), EdgeObs> = FxHashMap::default();
    let mut conv_list: Vec<_> = convs.into_iter().collect();
    conv_list.sort_unstable_by_key(|c| c.0);
    for ((src, dst, proto, port), (conns, bytes)) in conv_list {
        let sw = idx.by_addr.get(&src).copied();
        let dw = idx.by_addr.get(&dst).copied();
        let labels = |w: Option<u32>| w.map(|i| &idx.workload(i).labels);
        let (sl, dl) = (labels(sw), labels(dw));
        let has = |l: Option<&Labels>, sel: &Labels| l.is_some_and(|l| l.includes(sel));
        if opts.exclude.iter().any(|x| has(sl, x) || has(dl, x)) {
            stats.excluded += 1;
            continue;
        }
        if let Some(sc) = &opts.scope
            && !(has(sl, sc) || has(dl, sc))
        {
            stats.out_of_scope += 1;
            continue;
        }
        if conns < opts.min_observations {
            stats.below_min_observations += 1;
            continue;
        }
        if let Some(c) = &compiled {
            let o = c.evaluate(
                &ConnKey {
                    src,
                    dst,
                    proto,
                    port,
                },
                None,
            );
            if o.decision == bulkhead_model::Decision::Allow {
                stats.already_allowed += 1;
                continue;
            }
            let rules = c.deciding_rules(&o);
            if !rules.is_empty() {
                stats.denied_by_rule += 1;
                *denied
                    .entry(rules.into_iter().map(str::to_string).collect())
                    .or_default() += 1;
                continue;
            }
        }
        let end = |w: Option<u32>, a: IpAddr, unl: &mut BTreeSet<String>| match w {
            Some(i) => match idx.group_of[i as usize] {
                Some(g) => End::Group(g),
                None => {
                    let wl = idx.workload(i);
                    if wl.managed {
                        unl.insert(wl.name.clone());
                    }
                    End::Addr(a)
                }
            },
            None => End::Addr(a),
        };
        let se = end(sw, src, &mut unlabeled_managed);
        let de = end(dw, dst, &mut unlabeled_managed);
        let e = edges.entry((se, de, proto, port)).or_default();
        e.connections += conns;
        e.bytes += bytes;
        e.conversations += 1;
        if let (End::Group(_), Some(i)) = (se, sw) {
            e.src_w.insert(i);
        }
        if let (End::Group(_), Some(i)) = (de, dw) {
            e.dst_w.insert(i);
        }
        stats.recommended += 1;
        stats.recommended_connections += conns;
        stats.recommended_bytes += bytes;
    }
    for (rules, n) in &denied {
        notes.push(format!(
            "{n} conversation(s) are denied by existing rule(s) {}; nothing was proposed for them",
            rules.join(", ")
        ));
    }
    if !unlabeled_managed.is_empty() {
        let names: Vec<&String> = unlabeled_managed.iter().collect();
        notes.push(format!(
            "managed workloads without labels are named by address in IP lists; label them and recommend again: {}",
            list_names(&names, 10)
        ));
    }

    // 3. Shared services.
    let mut in_scopes: FxHashMap<(u32, u8, u16), FxHashSet<u32>> = FxHashMap::default();
    let mut out_scopes: FxHashMap<(u32, u8, u16), FxHashSet<u32>> = FxHashMap::default();
    for (s, d, proto, port) in edges.keys() {
        if let (End::Group(s), End::Group(d)) = (s, d) {
            let (ss, ds) = (idx.scope_of[*s as usize], idx.scope_of[*d as usize]);
            if ss != ds {
                in_scopes.entry((*d, *proto, *port)).or_default().insert(ss);
                out_scopes
                    .entry((*s, *proto, *port))
                    .or_default()
                    .insert(ds);
            }
        }
    }
    let min_apps = opts.shared_min_apps.max(1);
    let shared_in = |g: u32, p: u8, port: u16| {
        in_scopes
            .get(&(g, p, port))
            .is_some_and(|s| s.len() >= min_apps)
    };
    let shared_out = |g: u32, p: u8, port: u16| {
        out_scopes
            .get(&(g, p, port))
            .is_some_and(|s| s.len() >= min_apps)
    };
    let scope_rs = |g: u32| {
        let s = idx.scope_of[g as usize];
        if idx.scopes[s as usize].is_empty() {
            RsKey::Unscoped
        } else {
            RsKey::Scope(s)
        }
    };
    // A consumer group can be written under a provider's scope only if it spells out
    // every scope key (otherwise the scope would fill in the provider's values).
    let fits = |g: u32, rs: RsKey| match rs {
        RsKey::Scope(s) => idx.scopes[s as usize]
            .keys()
            .all(|k| idx.groups[g as usize].contains_key(k)),
        _ => true,
    };

    // 4. Placement.
    let mut rules: BTreeMap<(RsKey, Side, Side), Acc> = BTreeMap::new();
    // External ends: (ruleset, the workload side, external is the source, proto, port).
    type ExtKey = (RsKey, Side, bool, u8, u16);
    let mut ext: BTreeMap<ExtKey, (BTreeSet<IpAddr>, EdgeObs)> = BTreeMap::new();
    let mut ext_ext: BTreeMap<(IpAddr, u8, u16), (BTreeSet<IpAddr>, EdgeObs)> = BTreeMap::new();
    let mut edge_list: Vec<_> = edges.into_iter().collect();
    edge_list.sort_unstable_by_key(|e| e.0);
    for ((s, d, proto, port), o) in edge_list {
        match (s, d) {
            (End::Group(gs), End::Group(gd)) => {
                let key = if shared_in(gd, proto, port) {
                    (RsKey::Shared, Side::Workloads, Side::Group(gd))
                } else if shared_out(gs, proto, port) {
                    (RsKey::Shared, Side::Group(gs), Side::Workloads)
                } else {
                    let rs = scope_rs(gd);
                    let rs = if fits(gs, rs) { rs } else { RsKey::Unscoped };
                    (rs, Side::Group(gs), Side::Group(gd))
                };
                rules.entry(key).or_default().add(&o, proto, port);
            }
            (End::Addr(a), End::Group(gd)) => {
                let rs = if shared_in(gd, proto, port) {
                    RsKey::Shared
                } else {
                    scope_rs(gd)
                };
                let e = ext
                    .entry((rs, Side::Group(gd), true, proto, port))
                    .or_default();
                e.0.insert(a);
                merge_obs(&mut e.1, &o);
            }
            (End::Group(gs), End::Addr(a)) => {
                let rs = if shared_out(gs, proto, port) {
                    RsKey::Shared
                } else {
                    scope_rs(gs)
                };
                let e = ext
                    .entry((rs, Side::Group(gs), false, proto, port))
                    .or_default();
                e.0.insert(a);
                merge_obs(&mut e.1, &o);
            }
            (End::Addr(a), End::Addr(b)) => {
                let e = ext_ext.entry((b, proto, port)).or_default();
                e.0.insert(a);
                merge_obs(&mut e.1, &o);
            }
        }
    }

    // 5. Address sets: group edges with identical sets so one list serves them.
    let mut sets: Vec<Vec<IpAddr>> = Vec::new();
    let mut set_ids: HashMap<Vec<IpAddr>, u32> = HashMap::new();
    let mut set_id = |v: Vec<IpAddr>| -> u32 {
        let next = sets.len() as u32;
        *set_ids.entry(v.clone()).or_insert_with(|| {
            sets.push(v);
            next
        })
    };
    for ((rs, side, ext_is_src, proto, port), (addrs, o)) in ext {
        let id = set_id(addrs.into_iter().collect());
        let key = if ext_is_src {
            (rs, Side::Ext(id), side)
        } else {
            (rs, side, Side::Ext(id))
        };
        rules.entry(key).or_default().add(&o, proto, port);
    }
    // External to external: (source set, destination) → ports, then destinations
    // sharing a source set and ports are merged.
    type PortSet = BTreeMap<u8, BTreeSet<u16>>;
    let mut by_src_dst: BTreeMap<(u32, IpAddr), (PortSet, EdgeObs)> = BTreeMap::new();
    for ((dst, proto, port), (srcs, o)) in ext_ext {
        let id = set_id(srcs.into_iter().collect());
        let e = by_src_dst.entry((id, dst)).or_default();
        e.0.entry(proto).or_default().insert(port);
        merge_obs(&mut e.1, &o);
    }
    type PortList = Vec<(u8, Vec<u16>)>;
    let mut by_src_ports: BTreeMap<(u32, PortList), (Vec<IpAddr>, EdgeObs)> = BTreeMap::new();
    for ((src, dst), (ports, o)) in by_src_dst {
        let pk: Vec<(u8, Vec<u16>)> = ports
            .into_iter()
            .map(|(p, s)| (p, s.into_iter().collect()))
            .collect();
        let e = by_src_ports.entry((src, pk)).or_default();
        e.0.push(dst);
        merge_obs(&mut e.1, &o);
    }
    for ((src, pk), (dsts, o)) in by_src_ports {
        let did = set_id(dsts);
        let acc = rules
            .entry((RsKey::Unmanaged, Side::Ext(src), Side::Ext(did)))
            .or_default();
        for (proto, ps) in pk {
            for p in ps {
                acc.ports.entry(proto).or_default().insert(p);
            }
        }
        acc.connections += o.connections;
        acc.bytes += o.bytes;
        acc.conversations += o.conversations;
    }

    Builder {
        idx: &idx,
        opts,
        current,
        sets,
        stats,
        notes,
    }
    .build(rules)
}

fn merge_obs(into: &mut EdgeObs, o: &EdgeObs) {
    into.connections += o.connections;
    into.bytes += o.bytes;
    into.conversations += o.conversations;
    into.src_w.extend(o.src_w.iter().copied());
    into.dst_w.extend(o.dst_w.iter().copied());
}

struct Builder<'a> {
    idx: &'a Index<'a>,
    opts: &'a Options,
    current: Option<&'a Policy>,
    sets: Vec<Vec<IpAddr>>,
    stats: Stats,
    notes: Vec<String>,
}
