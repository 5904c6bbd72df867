//! The fast path. Inventory + policy compile into:
//!
//! 1. identity classes: every address maps to a class, and addresses whose labels and
//!    IP-list memberships are equal share one, so the tables below grow with label
//!    combinations, not with workloads;
//! 2. per rule, the set of source classes it admits (a bitset);
//! 3. per destination class, per protocol, a partition of the port space where each
//!    interval lists the candidate rules already sorted in decision order.
//!
//! Evaluating a connection is then two hash lookups, one binary search and a short scan
//! testing one bit per candidate.

use std::collections::BTreeSet;
use std::hash::Hash;
use std::net::IpAddr;

use bulkhead_model::{
    Action, DecidedBy, Decision, End, Exemption, HostEnd, Inventory, Labels, ProtoMatch,
    Quarantine, ServicePort, Verdict, VerdictKind,
};
use ipnet::IpNet;
use rustc_hash::FxHashMap;

use crate::context::{HostContext, through_tables};
use crate::document::{IpList, Ruleset, Selector, ServiceRef};
use crate::policy::Policy;

/// The 5-tuple minus the source port, as policy sees a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AddrInfo {
    class: u32,
    managed: bool,
    enforces: bool,
    quarantine: Quarantine,
}

impl AddrInfo {
    fn unmanaged(class: u32) -> AddrInfo {
        AddrInfo {
            class,
            managed: false,
            enforces: false,
            quarantine: Quarantine::None,
        }
    }

    /// This address as an end of a connection; an unmanaged one has no table, so
    /// nothing exempts anything there.
    fn end(self, exempt: Option<Exemption>) -> HostEnd {
        HostEnd {
            enforces: self.enforces,
            quarantine: self.quarantine,
            exempt: exempt.filter(|_| self.managed),
        }
    }
}

trait AddrKey: Copy + Eq + Hash {
    const BITS: u8;
    fn masked(self, len: u8) -> Self;
}

impl AddrKey for u32 {
    const BITS: u8 = 32;
    fn masked(self, len: u8) -> Self {
        if len == 0 {
            0
        } else {
            self & (u32::MAX << (32 - len))
        }
    }
}

impl AddrKey for u128 {
    const BITS: u8 = 128;
    fn masked(self, len: u8) -> Self {
        if len == 0 {
            0
        } else {
            self & (u128::MAX << (128 - len))
        }
    }
}

/// Exact host addresses first, then IP-list prefixes longest first.
#[derive(Debug, Default)]
struct AddrTable<K> {
    exact: FxHashMap<K, AddrInfo>,
    by_len: Vec<(u8, FxHashMap<K, AddrInfo>)>,
}

impl<K: AddrKey> AddrTable<K> {
    fn insert(&mut self, key: K, len: u8, info: AddrInfo) {
        if len == K::BITS {
            self.exact.entry(key).or_insert(info);
            return;
        }
        let pos = match self.by_len.iter().position(|(l, _)| *l <= len) {
            Some(p) if self.by_len[p].0 == len => p,
            Some(p) => {
                self.by_len.insert(p, (len, FxHashMap::default()));
                p
            }
            None => {
                self.by_len.push((len, FxHashMap::default()));
                self.by_len.len() - 1
            }
        };
        self.by_len[pos].1.entry(key.masked(len)).or_insert(info);
    }

    #[inline]
    fn lookup(&self, key: K) -> Option<AddrInfo> {
        if let Some(i) = self.exact.get(&key) {
            return Some(*i);
        }
        for (len, map) in &self.by_len {
            if let Some(i) = map.get(&key.masked(*len)) {
                return Some(*i);
            }
        }
        None
    }
}

const NO_PROCESS: u32 = u32::MAX;
/// A process name the policy never mentions: equal to no constraint.
const UNLISTED_PROCESS: u32 = u32::MAX - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Entry {
    tier: u32,
    /// Denies sort before allows of the same tier: the first match decides.
    allow: bool,
    rule: u32,
    process: u32,
}

#[derive(Debug, Default)]
struct IntervalTable {
    starts: Box<[u16]>,
    /// (offset, len) into the entry arena, one per interval.
    slices: Box<[(u32, u32)]>,
}

#[derive(Debug, Default)]
struct DstTable {
    protos: Vec<(u8, IntervalTable)>,
    other: IntervalTable,
}

#[derive(Debug)]
struct RuleMeta {
    id: String,
    tier: u32,
}

/// Inventory + policy, compiled for fast evaluation. Immutable; rebuild to change.
#[derive(Debug)]
pub struct CompiledPolicy {
    v4: AddrTable<u32>,
    v6: AddrTable<u128>,
    unknown: AddrInfo,
    class_table: Vec<u32>,
    tables: Vec<DstTable>,
    entries: Vec<Entry>,
    words: usize,
    src_bits: Vec<u64>,
    rules: Vec<RuleMeta>,
    tiers: Vec<String>,
    processes: FxHashMap<String, u32>,
    class_count: usize,
    hosts: HostContext,
    /// The workload of each quarantined address, to name it in a verdict.
    quarantined: FxHashMap<IpAddr, String>,
}

/// The result of the fast path, with enough context to name the deciding rules later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: VerdictKind,
    pub decision: Decision,
    src_class: u32,
    process: u32,
    /// Index of the first deciding entry and the end of its interval; `first == u32::MAX`
    /// means the default decided.
    first: u32,
    end: u32,
    /// The quarantined end that decided, if any.
    pub quarantined: Option<End>,
    pub exempt: Option<Exemption>,
}

/// What [`CompiledPolicy::deciding_rules`] names when a quarantine decided (flow
/// summaries list it where they list rule ids; agents' logged drops say the same).
pub const QUARANTINE: &str = "quarantine";

struct ClassKey {
    labels: Option<Labels>,
    members: Vec<bool>,
}

/// The effective label requirement of a label or group selector after scope defaults:
/// for each key, the allowed values.
type LabelExpr = Vec<(String, BTreeSet<String>)>;

enum Match {
    Any,
    Labels(LabelExpr),
    IpList(usize),
}

fn resolve_selector(
    policy: &Policy,
    rs: &Ruleset,
    sel: &Selector,
    list_index: &FxHashMap<&str, usize>,
) -> Match {
    let with_scope = |mut expr: LabelExpr| {
        for (k, v) in rs.scope.iter() {
            if !expr.iter().any(|(ek, _)| ek == k) {
                expr.push((k.to_string(), BTreeSet::from([v.to_string()])));
            }
        }
        Match::Labels(expr)
    };
    match sel {
        Selector::Any => Match::Any,
        Selector::Labels(l) => with_scope(
            l.iter()
                .map(|(k, v)| (k.to_string(), BTreeSet::from([v.to_string()])))
                .collect(),
        ),
        Selector::Group(g) => with_scope(
            policy.label_groups[g]
                .labels
                .iter()
                .map(|(k, vs)| (k.clone(), vs.clone()))
                .collect(),
        ),
        Selector::IpList(n) => Match::IpList(list_index[n.as_str()]),
    }
}

/// The identity classes as bit sets (one bit per class), by label and by IP list, so
/// that resolving a selector costs a few word-wide ANDs and ORs per label instead of a
/// label lookup per class: compiling is rules × words, not rules × classes × labels.
struct ClassIndex<'a> {
    words: usize,
    all: Vec<u64>,
    labelled: Vec<u64>,
    by_label: FxHashMap<(&'a str, &'a str), Vec<u64>>,
    by_list: Vec<Vec<u64>>,
}

impl<'a> ClassIndex<'a> {
    fn new(classes: &'a [ClassKey], lists: usize, words: usize) -> Self {
        let set = |bits: &mut Vec<u64>, ci: usize| bits[ci / 64] |= 1 << (ci % 64);
        let mut index = ClassIndex {
            words,
            all: vec![0; words],
            labelled: vec![0; words],
            by_label: FxHashMap::default(),
            by_list: vec![vec![0; words]; lists],
        };
        for (ci, c) in classes.iter().enumerate() {
            set(&mut index.all, ci);
            if let Some(l) = &c.labels {
                set(&mut index.labelled, ci);
                for kv in l.iter() {
                    set(
                        index.by_label.entry(kv).or_insert_with(|| vec![0; words]),
                        ci,
                    );
                }
            }
            for (li, member) in c.members.iter().enumerate() {
                if *member {
                    set(&mut index.by_list[li], ci);
                }
            }
        }
        index
    }

    /// The classes `m` matches, ORed into `out`.
    fn add_matches(&self, m: &Match, out: &mut [u64]) {
        match m {
            Match::Any => or_into(out, &self.all),
            Match::IpList(i) => or_into(out, &self.by_list[*i]),
            Match::Labels(expr) => {
                // Every key must have one of its values: AND over keys of (OR over values).
                let mut acc = self.labelled.clone();
                let mut any = vec![0u64; self.words];
                for (k, vs) in expr {
                    any.iter_mut().for_each(|w| *w = 0);
                    for v in vs {
                        if let Some(bits) = self.by_label.get(&(k.as_str(), v.as_str())) {
                            or_into(&mut any, bits);
                        }
                    }
                    acc.iter_mut().zip(&any).for_each(|(a, b)| *a &= b);
                }
                or_into(out, &acc);
            }
        }
    }
}

fn or_into(out: &mut [u64], bits: &[u64]) {
    out.iter_mut().zip(bits).for_each(|(o, b)| *o |= b);
}

fn membership_of_net(lists: &[&IpList], net: &IpNet) -> Vec<bool> {
    lists
        .iter()
        .map(|l| {
            l.include.iter().any(|n| n.contains(net)) && !l.exclude.iter().any(|n| n.contains(net))
        })
        .collect()
}

fn build_intervals(
    items: &[(Entry, u16, u16)],
    arena: &mut Vec<Entry>,
    interned: &mut FxHashMap<Vec<Entry>, (u32, u32)>,
) -> IntervalTable {
    let mut bounds: BTreeSet<u32> = BTreeSet::from([0]);
    for (_, a, b) in items {
        bounds.insert(*a as u32);
        bounds.insert(*b as u32 + 1);
    }
    bounds.remove(&65536);
    let starts: Vec<u16> = bounds.iter().map(|&b| b as u16).collect();
    let mut slices = Vec::with_capacity(starts.len());
    for &s in &starts {
        let mut list: Vec<Entry> = items
            .iter()
            .filter(|(_, a, b)| *a <= s && s <= *b)
            .map(|(e, _, _)| *e)
            .collect();
        list.sort();
        list.dedup();
        let slice = *interned.entry(list).or_insert_with_key(|list| {
            let off = arena.len() as u32;
            arena.extend_from_slice(list);
            (off, list.len() as u32)
        });
        slices.push(slice);
    }
    IntervalTable {
        starts: starts.into(),
        slices: slices.into(),
    }
}

impl CompiledPolicy {
    /// Policy alone: no failsafe port, no control plane, quarantines requested only
    /// (what recommendation and the CLI's checks want).
    pub fn compile(inventory: &Inventory, policy: &Policy) -> CompiledPolicy {
        Self::compile_with(inventory, policy, &HostContext::default())
    }

    /// With what the hosts' tables add, so verdicts say what the kernel does (the
    /// server's enrichment).
    pub fn compile_with(
        inventory: &Inventory,
        policy: &Policy,
        hosts: &HostContext,
    ) -> CompiledPolicy {
        let lists: Vec<&IpList> = policy.ip_lists.values().collect();
        let list_index: FxHashMap<&str, usize> = lists
            .iter()
            .enumerate()
            .map(|(i, l)| (l.name.as_str(), i))
            .collect();

        // 1. Identity classes.
        let mut classes: Vec<ClassKey> = Vec::new();
        let mut class_ids: FxHashMap<(Option<Labels>, Vec<bool>), u32> = FxHashMap::default();
        let mut intern =
            |labels: Option<Labels>, members: Vec<bool>, classes: &mut Vec<ClassKey>| -> u32 {
                *class_ids
                    .entry((labels.clone(), members.clone()))
                    .or_insert_with(|| {
                        classes.push(ClassKey { labels, members });
                        (classes.len() - 1) as u32
                    })
            };
        let mut v4 = AddrTable::<u32>::default();
        let mut v6 = AddrTable::<u128>::default();
        let mut quarantined = FxHashMap::default();
        for w in inventory.workloads() {
            for a in &w.addresses {
                let members = membership_of_net(&lists, &IpNet::from(*a));
                let info = AddrInfo {
                    class: intern(Some(w.labels.clone()), members, &mut classes),
                    managed: w.managed,
                    enforces: w.enforces(),
                    quarantine: hosts.quarantine_of(w),
                };
                if w.quarantined() {
                    quarantined.insert(*a, w.name.clone());
                }
                match a {
                    IpAddr::V4(x) => v4.insert(u32::from(*x), 32, info),
                    IpAddr::V6(x) => v6.insert(u128::from(*x), 128, info),
                }
            }
        }
        // Addresses outside the inventory: their longest matching list prefix decides
        // their memberships, because every prefix containing them contains that one.
        for l in &lists {
            for net in l.include.iter().chain(&l.exclude) {
                let info =
                    AddrInfo::unmanaged(intern(None, membership_of_net(&lists, net), &mut classes));
                match net {
                    IpNet::V4(n) => v4.insert(u32::from(n.network()), n.prefix_len(), info),
                    IpNet::V6(n) => v6.insert(u128::from(n.network()), n.prefix_len(), info),
                }
            }
        }
        let unknown = AddrInfo::unmanaged(intern(None, vec![false; lists.len()], &mut classes));
        let class_count = classes.len();
        let words = class_count.div_ceil(64).max(1);
        let index = ClassIndex::new(&classes, lists.len(), words);

        // 2. Rules, flattened, with their source and destination class sets.
        let mut processes: FxHashMap<String, u32> = FxHashMap::default();
        let mut rules = Vec::new();
        let mut src_bits = Vec::new();
        let mut candidates: Vec<Vec<u32>> = vec![Vec::new(); class_count];
        let mut rule_services: Vec<Vec<(ServicePort, u32)>> = Vec::new();
        let mut rule_allow = Vec::new();
        for (rs, rule) in policy.rules() {
            let tier = policy
                .tier_index(&rs.tier)
                .expect("checked policy names known tiers") as u32;
            let from: Vec<Match> = rule
                .from
                .iter()
                .map(|s| resolve_selector(policy, rs, s, &list_index))
                .collect();
            let to: Vec<Match> = rule
                .to
                .iter()
                .map(|s| resolve_selector(policy, rs, s, &list_index))
                .collect();
            let mut bits = vec![0u64; words];
            let rule_index = rules.len() as u32;
            for m in &from {
                index.add_matches(m, &mut bits);
            }
            let mut dst = vec![0u64; words];
            for m in &to {
                index.add_matches(m, &mut dst);
            }
            for (wi, mut word) in dst.into_iter().enumerate() {
                while word != 0 {
                    let ci = wi * 64 + word.trailing_zeros() as usize;
                    candidates[ci].push(rule_index);
                    word &= word - 1;
                }
            }
            src_bits.extend(bits);
            let mut svcs = Vec::new();
            for s in &rule.services {
                match s {
                    ServiceRef::Port(p) => svcs.push((*p, NO_PROCESS)),
                    ServiceRef::Named(n) => {
                        let svc = &policy.services[n];
                        let pid = match &svc.process {
                            None => NO_PROCESS,
                            Some(p) => {
                                let next = processes.len() as u32;
                                *processes.entry(p.clone()).or_insert(next)
                            }
                        };
                        svcs.extend(svc.ports.iter().map(|p| (*p, pid)));
                    }
                }
            }
            rule_services.push(svcs);
            rule_allow.push(rule.action == Action::Allow);
            rules.push(RuleMeta {
                id: rule.id.clone(),
                tier,
            });
        }

        // 3. Per destination class, port-interval tables; classes with the same
        // candidate rules share one table.
        let mut entries = Vec::new();
        let mut interned_lists = FxHashMap::default();
        let mut tables = Vec::new();
        let mut table_ids: FxHashMap<Vec<u32>, u32> = FxHashMap::default();
        let mut class_table = Vec::with_capacity(class_count);
        for relevant in candidates {
            if let Some(&t) = table_ids.get(&relevant) {
                class_table.push(t);
                continue;
            }
            let mut items: Vec<(Option<u8>, Entry, u16, u16)> = Vec::new();
            for &r in &relevant {
                for (sp, pid) in &rule_services[r as usize] {
                    let e = Entry {
                        tier: rules[r as usize].tier,
                        allow: rule_allow[r as usize],
                        rule: r,
                        process: *pid,
                    };
                    match sp.proto {
                        ProtoMatch::Any => items.push((None, e, 0, u16::MAX)),
                        ProtoMatch::Proto(p) => {
                            items.push((Some(p), e, sp.ports.start, sp.ports.end))
                        }
                    }
                }
            }
            let protos: BTreeSet<u8> = items.iter().filter_map(|(p, ..)| *p).collect();
            let mut table = DstTable::default();
            for p in protos {
                let for_p: Vec<(Entry, u16, u16)> = items
                    .iter()
                    .filter(|(ip, ..)| ip.is_none() || *ip == Some(p))
                    .map(|(_, e, a, b)| (*e, *a, *b))
                    .collect();
                table.protos.push((
                    p,
                    build_intervals(&for_p, &mut entries, &mut interned_lists),
                ));
            }
            let any: Vec<(Entry, u16, u16)> = items
                .iter()
                .filter(|(ip, ..)| ip.is_none())
                .map(|(_, e, a, b)| (*e, *a, *b))
                .collect();
            table.other = build_intervals(&any, &mut entries, &mut interned_lists);
            let id = tables.len() as u32;
            tables.push(table);
            table_ids.insert(relevant, id);
            class_table.push(id);
        }

        CompiledPolicy {
            v4,
            v6,
            unknown,
            class_table,
            tables,
            entries,
            words,
            src_bits,
            rules,
            tiers: policy.tiers.iter().map(|t| t.name.clone()).collect(),
            processes,
            class_count,
            hosts: hosts.clone(),
            quarantined,
        }
    }

    /// Number of identity classes (distinct label sets × IP-list memberships).
    pub fn class_count(&self) -> usize {
        self.class_count
    }

    pub fn table_count(&self) -> usize {
        self.tables.len()
    }

    #[inline]
    fn lookup(&self, a: IpAddr) -> AddrInfo {
        match a {
            IpAddr::V4(x) => self.v4.lookup(u32::from(x)),
            IpAddr::V6(x) => self.v6.lookup(u128::from(x)),
        }
        .unwrap_or(self.unknown)
    }

    #[inline]
    fn admits(&self, e: &Entry, src_class: u32, process: u32) -> bool {
        let bit = self.src_bits[e.rule as usize * self.words + src_class as usize / 64]
            >> (src_class % 64)
            & 1
            == 1;
        bit && (e.process == NO_PROCESS
            || if e.allow {
                process == e.process
            } else {
                process == NO_PROCESS || process == e.process
            })
    }

    /// The fast path: verdict for a connection, with the provider's process if known.
    #[inline]
    pub fn evaluate(&self, k: &ConnKey, process: Option<&str>) -> Outcome {
        let s = self.lookup(k.src);
        let d = self.lookup(k.dst);
        let table = &self.tables[self.class_table[d.class as usize] as usize];
        let it = table
            .protos
            .iter()
            .find(|(p, _)| *p == k.proto)
            .map_or(&table.other, |(_, t)| t);
        let i = it.starts.partition_point(|&st| st <= k.port) - 1;
        let (off, len) = it.slices[i];
        let pid = match process {
            None => NO_PROCESS,
            Some(p) => self.processes.get(p).copied().unwrap_or(UNLISTED_PROCESS),
        };
        let end = off + len;
        let (decision, first) = (off..end)
            .find(|&idx| self.admits(&self.entries[idx as usize], s.class, pid))
            .map_or((Decision::Deny, u32::MAX), |idx| {
                let allow = self.entries[idx as usize].allow;
                (
                    if allow {
                        Decision::Allow
                    } else {
                        Decision::Deny
                    },
                    idx,
                )
            });
        // Only a managed end has a table that exempts anything (and most ends are not).
        let src_exempt = s
            .managed
            .then(|| self.hosts.source_exemption(k.dst, k.proto, k.port))
            .flatten();
        let dst_exempt = d
            .managed
            .then(|| self.hosts.destination_exemption(k.proto, k.port))
            .flatten();
        let (at, exempt) = through_tables(decision, s.end(src_exempt), d.end(dst_exempt));
        Outcome {
            verdict: at.verdict,
            decision: at.decision,
            src_class: s.class,
            process: pid,
            first,
            end,
            quarantined: at.quarantined,
            exempt,
        }
    }

    /// What the rules alone decide (before a quarantine overrules them): what a table
    /// that is not quarantined applies.
    pub fn rules_decision(&self, o: &Outcome) -> Decision {
        match self.entries.get(o.first as usize) {
            Some(e) if e.allow => Decision::Allow,
            _ => Decision::Deny,
        }
    }

    /// The ids of the deciding rules (all matches of the deciding action in the
    /// deciding tier), sorted; empty when the default decided.
    pub fn deciding_rules(&self, o: &Outcome) -> Vec<&str> {
        if o.quarantined.is_some() {
            return vec![QUARANTINE];
        }
        if o.first == u32::MAX {
            return Vec::new();
        }
        let first = self.entries[o.first as usize];
        let mut ids: Vec<&str> = self.entries[o.first as usize..o.end as usize]
            .iter()
            .take_while(|e| e.tier == first.tier && e.allow == first.allow)
            .filter(|e| self.admits(e, o.src_class, o.process))
            .map(|e| self.rules[e.rule as usize].id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The full verdict, with rule ids, as the oracle reports it.
    pub fn verdict(&self, k: &ConnKey, process: Option<&str>) -> Verdict {
        let o = self.evaluate(k, process);
        let quarantined = o.quarantined.and_then(|e| {
            self.quarantined.get(&match e {
                End::Src => k.src,
                End::Dst => k.dst,
            })
        });
        let decided_by = if let Some(workload) = quarantined {
            DecidedBy::Quarantine {
                workload: workload.clone(),
                applied: self.hosts.quarantine_applied.contains(workload),
            }
        } else if o.first == u32::MAX {
            DecidedBy::Default
        } else {
            let tier = self.rules[self.entries[o.first as usize].rule as usize].tier;
            DecidedBy::Rules {
                tier: self.tiers[tier as usize].clone(),
                rule_ids: self
                    .deciding_rules(&o)
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
            }
        };
        Verdict {
            verdict: o.verdict,
            decision: o.decision,
            decided_by,
            exempt: o.exempt,
        }
    }
}
