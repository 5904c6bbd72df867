//! Policy-as-code documents: raw serde shapes with spans, checked one document at a
//! time into [`Object`]s. Cross-document references are checked in `policy.rs`.

use std::collections::{BTreeMap, BTreeSet};

use bulkhead_model::{
    Action, Label, Labels, ServicePort, validate_key, validate_name, validate_value,
};
use ipnet::IpNet;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::error::{Origin, PolicyError};

/// The only format version so far. Written in every document so that a future
/// format can be told apart instead of being misread.
pub const FORMAT_VERSION: &str = "v1";

type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDoc {
    bulkhead: Option<S<String>>,
    kind: Option<S<String>>,
    name: Option<S<String>>,
    description: Option<S<String>>,
    labels: Option<S<BTreeMap<String, S<OneOrMany>>>>,
    include: Option<S<Vec<S<String>>>>,
    exclude: Option<S<Vec<S<String>>>>,
    ports: Option<S<Vec<S<String>>>>,
    process: Option<S<String>>,
    order: Option<S<i64>>,
    scope: Option<S<BTreeMap<String, S<String>>>>,
    tier: Option<S<String>>,
    owner: Option<S<String>>,
    rules: Option<S<Vec<S<RawRule>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Option<S<String>>,
    description: Option<S<String>>,
    action: Option<S<String>>,
    from: Option<S<Vec<S<String>>>>,
    to: Option<S<Vec<S<String>>>>,
    services: Option<S<Vec<S<String>>>>,
}

/// Which workloads or addresses one side of a rule means.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Selector {
    /// Every address, in the inventory or not.
    Any,
    /// Workloads carrying all these labels (the ruleset scope fills in missing keys).
    /// No labels, written `workloads`, means every inventory workload in scope.
    Labels(Labels),
    Group(String),
    IpList(String),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Any => f.write_str("any"),
            Selector::Labels(l) if l.is_empty() => f.write_str("workloads"),
            Selector::Labels(l) => {
                let parts: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
                f.write_str(&parts.join(" "))
            }
            Selector::Group(g) => write!(f, "group:{g}"),
            Selector::IpList(l) => write!(f, "iplist:{l}"),
        }
    }
}

impl std::str::FromStr for Selector {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "any" {
            return Ok(Selector::Any);
        }
        if s == "workloads" {
            return Ok(Selector::Labels(Labels::new()));
        }
        if let Some(name) = s.strip_prefix("group:") {
            validate_name(name).map_err(|e| format!("label group name {name:?} {e}"))?;
            return Ok(Selector::Group(name.to_string()));
        }
        if let Some(name) = s.strip_prefix("iplist:") {
            validate_name(name).map_err(|e| format!("ip list name {name:?} {e}"))?;
            return Ok(Selector::IpList(name.to_string()));
        }
        if s.contains(',') || s.contains(';') {
            // In a YAML flow list `[a=1, b=2]` the comma makes two selectors (a union);
            // refusing commas here keeps the two spellings from being confused.
            return Err(format!(
                "{s:?}: separate the labels of one selector with spaces (`role=web env=prod`); \
                 list items are alternatives"
            ));
        }
        if s.is_empty() {
            return Err(
                "empty selector: write any, group:NAME, iplist:NAME or key=value labels".into(),
            );
        }
        let mut labels = Labels::new();
        for part in s.split_whitespace() {
            let label: Label = part.parse().map_err(|e| {
                format!(
                    "{e}; a selector is any, workloads, group:NAME, iplist:NAME or key=value labels"
                )
            })?;
            labels.insert(label).map_err(|e| e.to_string())?;
        }
        Ok(Selector::Labels(labels))
    }
}

/// A service a rule names: an inline port spec or a named service object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceRef {
    Port(ServicePort),
    Named(String),
}

impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceRef::Port(p) => p.fmt(f),
            ServiceRef::Named(n) => f.write_str(n),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelGroup {
    pub name: String,
    pub description: Option<String>,
    /// A workload matches when, for every key here, its value is one of the listed values.
    pub labels: BTreeMap<String, BTreeSet<String>>,
    pub origin: Origin,
}

impl LabelGroup {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.labels
            .iter()
            .all(|(k, vs)| labels.get(k).is_some_and(|v| vs.contains(v)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpList {
    pub name: String,
    pub description: Option<String>,
    pub include: Vec<IpNet>,
    pub exclude: Vec<IpNet>,
    pub origin: Origin,
}

impl IpList {
    pub fn contains(&self, addr: std::net::IpAddr) -> bool {
        self.include.iter().any(|n| n.contains(&addr))
            && !self.exclude.iter().any(|n| n.contains(&addr))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub description: Option<String>,
    pub ports: Vec<ServicePort>,
    /// The provider's process (service name or executable), when the rule is about one program.
    pub process: Option<String>,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub name: String,
    pub description: Option<String>,
    pub order: i64,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    /// Where the rule sits in its document (`rules[3]`), for error messages.
    pub path: String,
    pub description: Option<String>,
    pub action: Action,
    pub from: Vec<Selector>,
    pub to: Vec<Selector>,
    pub services: Vec<ServiceRef>,
    pub origin: Origin,
    /// Where each `from`/`to`/`services` item was written, for cross-reference errors.
    pub item_origins: RuleItemOrigins,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleItemOrigins {
    pub from: Vec<Origin>,
    pub to: Vec<Origin>,
    pub services: Vec<Origin>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub name: String,
    pub description: Option<String>,
    /// Labels both sides of every label selector default to.
    pub scope: Labels,
    pub tier: String,
    pub tier_origin: Origin,
    pub owner: Option<String>,
    pub rules: Vec<Rule>,
    pub origin: Origin,
}

/// One checked document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    LabelGroup(LabelGroup),
    IpList(IpList),
    Service(Service),
    Tier(Tier),
    Ruleset(Ruleset),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::LabelGroup(_) => "label_group",
            Object::IpList(_) => "ip_list",
            Object::Service(_) => "service",
            Object::Tier(_) => "tier",
            Object::Ruleset(_) => "ruleset",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Object::LabelGroup(o) => &o.name,
            Object::IpList(o) => &o.name,
            Object::Service(o) => &o.name,
            Object::Tier(o) => &o.name,
            Object::Ruleset(o) => &o.name,
        }
    }

    pub fn origin(&self) -> &Origin {
        match self {
            Object::LabelGroup(o) => &o.origin,
            Object::IpList(o) => &o.origin,
            Object::Service(o) => &o.origin,
            Object::Tier(o) => &o.origin,
            Object::Ruleset(o) => &o.origin,
        }
    }
}

struct Ctx<'a> {
    file: &'a str,
    errors: Vec<PolicyError>,
}

impl Ctx<'_> {
    fn origin<T>(&self, s: &S<T>) -> Origin {
        Origin {
            file: self.file.to_string(),
            line: s.referenced.line(),
            column: s.referenced.column(),
        }
    }

    fn err<T>(&mut self, at: &S<T>, field: impl Into<String>, message: impl Into<String>) {
        let origin = self.origin(at);
        self.errors.push(PolicyError::new(origin, field, message));
    }
}

/// Parses every document of one file. Returns the objects found and every error; when
/// there is any error the objects may be incomplete and must not be used, except to
/// look for more errors.
pub fn parse_file(file: &str, text: &str) -> (Vec<Object>, Vec<PolicyError>) {
    let docs: Vec<S<RawDoc>> = match serde_saphyr::from_multiple(text) {
        Ok(d) => d,
        Err(e) => return (Vec::new(), vec![yaml_error(file, text, &e)]),
    };
    let mut ctx = Ctx {
        file,
        errors: Vec::new(),
    };
    let mut objects = Vec::new();
    for doc in docs {
        if let Some(o) = check_doc(&mut ctx, doc) {
            objects.push(o);
        }
    }
    (objects, ctx.errors)
}

/// Turns a serde-saphyr error into file:line:column, the field, and why.
fn yaml_error(file: &str, text: &str, e: &serde_saphyr::Error) -> PolicyError {
    let loc = e.location();
    let (line, column) = loc.map(|l| (l.line(), l.column())).unwrap_or((1, 1));
    let raw = e.without_snippet().to_string();
    let message = raw
        .strip_prefix("error: ")
        .unwrap_or(&raw)
        .split_once(": ")
        .filter(|(prefix, _)| prefix.starts_with("line "))
        .map(|(_, m)| m.to_string())
        .unwrap_or_else(|| raw.clone());
    // The parser knows the position but not the field: take the key written on that line.
    let field = text
        .lines()
        .nth(line.saturating_sub(1) as usize)
        .and_then(|l| {
            let l = l.trim_start().trim_start_matches("- ");
            l.split_once(':').map(|(k, _)| k.trim().to_string())
        })
        .filter(|k| !k.is_empty() && !k.contains(' '))
        .unwrap_or_else(|| "(document)".to_string());
    PolicyError::new(
        Origin {
            file: file.to_string(),
            line,
            column,
        },
        field,
        message,
    )
}

const KIND_FIELDS: &[(&str, &[&str])] = &[
    ("label_group", &["labels"]),
    ("ip_list", &["include", "exclude"]),
    ("service", &["ports", "process"]),
    ("tier", &["order"]),
    ("ruleset", &["scope", "tier", "owner", "rules"]),
];

fn check_doc(ctx: &mut Ctx<'_>, doc: S<RawDoc>) -> Option<Object> {
    let at = doc.referenced;
    let d = doc.value;
    let doc_origin = Origin {
        file: ctx.file.to_string(),
        line: at.line(),
        column: at.column(),
    };
    let mut ok = true;
    match &d.bulkhead {
        None => {
            ctx.errors.push(PolicyError::new(
                doc_origin.clone(),
                "bulkhead",
                format!("missing; every document starts with `bulkhead: {FORMAT_VERSION}`"),
            ));
            ok = false;
        }
        Some(v) if v.value != FORMAT_VERSION => {
            ctx.err(
                v,
                "bulkhead",
                format!(
                    "unsupported format version {:?} (this build reads {FORMAT_VERSION})",
                    v.value
                ),
            );
            ok = false;
        }
        _ => {}
    }
    let Some(kind) = &d.kind else {
        ctx.errors.push(PolicyError::new(
            doc_origin,
            "kind",
            "missing; one of label_group, ip_list, service, tier, ruleset",
        ));
        return None;
    };
    let Some((_, allowed)) = KIND_FIELDS.iter().find(|(k, _)| *k == kind.value) else {
        ctx.err(
            kind,
            "kind",
            format!(
                "unknown kind {:?}; one of label_group, ip_list, service, tier, ruleset",
                kind.value
            ),
        );
        return None;
    };
    // The raw shape is the union of all kinds; refuse fields of other kinds here so
    // a misplaced field is never silently ignored.
    let present: [(&str, Option<Location>); 10] = [
        ("labels", d.labels.as_ref().map(|s| s.referenced)),
        ("include", d.include.as_ref().map(|s| s.referenced)),
        ("exclude", d.exclude.as_ref().map(|s| s.referenced)),
        ("ports", d.ports.as_ref().map(|s| s.referenced)),
        ("process", d.process.as_ref().map(|s| s.referenced)),
        ("order", d.order.as_ref().map(|s| s.referenced)),
        ("scope", d.scope.as_ref().map(|s| s.referenced)),
        ("tier", d.tier.as_ref().map(|s| s.referenced)),
        ("owner", d.owner.as_ref().map(|s| s.referenced)),
        ("rules", d.rules.as_ref().map(|s| s.referenced)),
    ];
    for (field, loc) in present {
        if let Some(loc) = loc
            && !allowed.contains(&field)
        {
            ctx.errors.push(PolicyError::new(
                Origin {
                    file: ctx.file.to_string(),
                    line: loc.line(),
                    column: loc.column(),
                },
                field,
                format!("not a field of kind {}", kind.value),
            ));
            ok = false;
        }
    }
    let name = match &d.name {
        None => {
            ctx.err(kind, "name", "missing");
            return None;
        }
        Some(n) => {
            if let Err(e) = validate_name(&n.value) {
                ctx.err(n, "name", e);
                ok = false;
            }
            n
        }
    };
    let origin = ctx.origin(name);
    let description = d.description.as_ref().map(|s| s.value.clone());
    let before = ctx.errors.len();
    let object = match kind.value.as_str() {
        "label_group" => check_label_group(ctx, &d, name, description, origin),
        "ip_list" => check_ip_list(ctx, &d, name, description, origin),
        "service" => check_service(ctx, &d, name, description, origin),
        "tier" => check_tier(ctx, &d, name, description, origin),
        _ => check_ruleset(ctx, &d, name.value.clone(), description, origin, kind),
    };
    // Kept even when this document had errors, so that references to and from it are
    // still checked and every error is reported in one pass; callers never use objects
    // from input with errors.
    let _ = (ok, before);
    object
}

use serde_saphyr::Location;

fn missing(ctx: &mut Ctx<'_>, kind: &S<String>, field: &str, why: &str) {
    ctx.err(kind, field, format!("missing; {why}"));
}

fn check_label_group(
    ctx: &mut Ctx<'_>,
    d: &RawDoc,
    name: &S<String>,
    description: Option<String>,
    origin: Origin,
) -> Option<Object> {
    let Some(raw) = &d.labels else {
        missing(
            ctx,
            name,
            "labels",
            "a label group lists key: value or key: [values]",
        );
        return None;
    };
    if raw.value.is_empty() {
        ctx.err(raw, "labels", "empty; a group without labels would match every workload (write `any` in the rule instead)");
    }
    let mut labels = BTreeMap::new();
    for (key, values) in &raw.value {
        let field = format!("labels.{key}");
        if let Err(e) = validate_key(key) {
            ctx.err(values, &field, e.to_string());
            continue;
        }
        let list: Vec<String> = match &values.value {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(vs) => vs.clone(),
        };
        if list.is_empty() {
            ctx.err(values, &field, "no values; a key needs at least one");
        }
        let mut set = BTreeSet::new();
        for v in list {
            if let Err(e) = validate_value(&v) {
                ctx.err(values, &field, e.to_string());
            }
            set.insert(v);
        }
        labels.insert(key.clone(), set);
    }
    Some(Object::LabelGroup(LabelGroup {
        name: name.value.clone(),
        description,
        labels,
        origin,
    }))
}

fn check_cidrs(ctx: &mut Ctx<'_>, list: &S<Vec<S<String>>>, field: &str) -> Vec<IpNet> {
    let mut nets = Vec::new();
    for (i, item) in list.value.iter().enumerate() {
        let s = item.value.trim();
        let parsed = s
            .parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) if net.trunc() != net => ctx.err(
                item,
                format!("{field}[{i}]"),
                format!("{s:?} has host bits set; did you mean {}?", net.trunc()),
            ),
            Ok(net) => nets.push(net),
            Err(_) => ctx.err(
                item,
                format!("{field}[{i}]"),
                format!("{s:?} is not an IPv4/IPv6 address or CIDR"),
            ),
        }
    }
    nets.sort();
    nets.dedup();
    nets
}

fn check_ip_list(
    ctx: &mut Ctx<'_>,
    d: &RawDoc,
    name: &S<String>,
    description: Option<String>,
    origin: Origin,
) -> Option<Object> {
    let Some(inc) = &d.include else {
        missing(ctx, name, "include", "an IP list needs CIDRs to include");
        return None;
    };
    if inc.value.is_empty() {
        ctx.err(inc, "include", "empty; an IP list needs at least one CIDR");
    }
    let include = check_cidrs(ctx, inc, "include");
    let exclude = d
        .exclude
        .as_ref()
        .map(|e| check_cidrs(ctx, e, "exclude"))
        .unwrap_or_default();
    Some(Object::IpList(IpList {
        name: name.value.clone(),
        description,
        include,
        exclude,
        origin,
    }))
}

fn check_service(
    ctx: &mut Ctx<'_>,
    d: &RawDoc,
    name: &S<String>,
    description: Option<String>,
    origin: Origin,
) -> Option<Object> {
    if ServicePort::looks_like(&name.value) {
        ctx.err(
            name,
            "name",
            "a service name must not look like a port spec (tcp/80, icmp, any)",
        );
    }
    let Some(raw) = &d.ports else {
        missing(ctx, name, "ports", "a service lists ports such as tcp/5432");
        return None;
    };
    if raw.value.is_empty() {
        ctx.err(raw, "ports", "empty; a service needs at least one port");
    }
    let mut ports = Vec::new();
    for (i, p) in raw.value.iter().enumerate() {
        match p.value.parse::<ServicePort>() {
            Ok(sp) => ports.push(sp),
            Err(e) => ctx.err(p, format!("ports[{i}]"), e.to_string()),
        }
    }
    ports.sort();
    ports.dedup();
    let process = match &d.process {
        Some(p) if p.value.trim().is_empty() => {
            ctx.err(p, "process", "empty; omit the field for any process");
            None
        }
        Some(p) => Some(p.value.trim().to_string()),
        None => None,
    };
    Some(Object::Service(Service {
        name: name.value.clone(),
        description,
        ports,
        process,
        origin,
    }))
}

fn check_tier(
    ctx: &mut Ctx<'_>,
    d: &RawDoc,
    name: &S<String>,
    description: Option<String>,
    origin: Origin,
) -> Option<Object> {
    let Some(order) = &d.order else {
        missing(ctx, name, "order", "tiers are evaluated by ascending order");
        return None;
    };
    Some(Object::Tier(Tier {
        name: name.value.clone(),
        description,
        order: order.value,
        origin,
    }))
}

fn check_selectors(
    ctx: &mut Ctx<'_>,
    list: &Option<S<Vec<S<String>>>>,
    rule: &S<RawRule>,
    field: &str,
) -> (Vec<Selector>, Vec<Origin>) {
    let Some(list) = list else {
        ctx.err(rule, field, "missing; write `any` to mean every address");
        return (Vec::new(), Vec::new());
    };
    if list.value.is_empty() {
        ctx.err(
            list,
            field,
            "empty; a rule side needs at least one selector (or `any`)",
        );
    }
    let mut out = Vec::new();
    let mut origins = Vec::new();
    for (i, item) in list.value.iter().enumerate() {
        match item.value.parse::<Selector>() {
            Ok(s) => {
                out.push(s);
                origins.push(ctx.origin(item));
            }
            Err(e) => ctx.err(item, format!("{field}[{i}]"), e),
        }
    }
    (out, origins)
}

fn check_ruleset(
    ctx: &mut Ctx<'_>,
    d: &RawDoc,
    name: String,
    description: Option<String>,
    origin: Origin,
    kind: &S<String>,
) -> Option<Object> {
    let mut scope = Labels::new();
    if let Some(raw) = &d.scope {
        for (k, v) in &raw.value {
            match Label::new(k.clone(), v.value.clone()) {
                Ok(l) => {
                    if let Err(e) = scope.insert(l) {
                        ctx.err(v, format!("scope.{k}"), e.to_string());
                    }
                }
                Err(e) => ctx.err(v, format!("scope.{k}"), e.to_string()),
            }
        }
    }
    let Some(tier) = &d.tier else {
        missing(ctx, kind, "tier", "a ruleset belongs to one tier");
        return None;
    };
    let Some(raw_rules) = &d.rules else {
        missing(ctx, kind, "rules", "write `rules: []` for an empty ruleset");
        return None;
    };
    let mut rules = Vec::new();
    for (i, r) in raw_rules.value.iter().enumerate() {
        let p = format!("rules[{i}]");
        let id = match &r.value.id {
            None => {
                ctx.err(
                    r,
                    format!("{p}.id"),
                    "missing; every rule has an id unique across the policy",
                );
                String::new()
            }
            Some(id) => {
                if let Err(e) = validate_name(&id.value) {
                    ctx.err(id, format!("{p}.id"), e);
                }
                id.value.clone()
            }
        };
        let action = match &r.value.action {
            None => {
                ctx.err(r, format!("{p}.action"), "missing; allow or deny");
                Action::Deny
            }
            Some(a) => match a.value.as_str() {
                "allow" => Action::Allow,
                "deny" => Action::Deny,
                other => {
                    ctx.err(
                        a,
                        format!("{p}.action"),
                        format!("{other:?} is not allow or deny"),
                    );
                    Action::Deny
                }
            },
        };
        let (from, from_o) = check_selectors(ctx, &r.value.from, r, &format!("{p}.from"));
        let (to, to_o) = check_selectors(ctx, &r.value.to, r, &format!("{p}.to"));
        let mut services = Vec::new();
        let mut svc_o = Vec::new();
        match &r.value.services {
            None => ctx.err(
                r,
                format!("{p}.services"),
                "missing; list ports (tcp/443) or service names, or `any`",
            ),
            Some(list) => {
                if list.value.is_empty() {
                    ctx.err(
                        list,
                        format!("{p}.services"),
                        "empty; a rule needs at least one service (or `any`)",
                    );
                }
                for (j, s) in list.value.iter().enumerate() {
                    let v = s.value.trim();
                    if ServicePort::looks_like(v) {
                        match v.parse::<ServicePort>() {
                            Ok(sp) => services.push(ServiceRef::Port(sp)),
                            Err(e) => {
                                ctx.err(s, format!("{p}.services[{j}]"), e.to_string());
                                continue;
                            }
                        }
                    } else {
                        if let Err(e) = validate_name(v) {
                            ctx.err(
                                s,
                                format!("{p}.services[{j}]"),
                                format!("service name {v:?} {e}"),
                            );
                            continue;
                        }
                        services.push(ServiceRef::Named(v.to_string()));
                    }
                    svc_o.push(ctx.origin(s));
                }
            }
        }
        rules.push(Rule {
            id,
            path: p.clone(),
            description: r.value.description.as_ref().map(|d| d.value.clone()),
            action,
            from,
            to,
            services,
            origin: ctx.origin(r),
            item_origins: RuleItemOrigins {
                from: from_o,
                to: to_o,
                services: svc_o,
            },
        });
    }
    Some(Object::Ruleset(Ruleset {
        name,
        description,
        scope,
        tier: tier.value.clone(),
        tier_origin: ctx.origin(tier),
        owner: d.owner.as_ref().map(|o| o.value.clone()),
        rules,
        origin,
    }))
}
