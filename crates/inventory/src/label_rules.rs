use std::collections::BTreeMap;

use bulkhead_model::{Label, Labels, Workload};
use ipnet::IpNet;
use regex::Regex;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::{InventoryErrors, InventoryFileError};

/// Assigns labels from workload attributes. Every condition given must hold.
#[derive(Debug, Clone)]
pub struct LabelRule {
    pub name: String,
    pub hostname: Option<Regex>,
    pub os: Option<Regex>,
    pub os_version: Option<Regex>,
    pub kind: Option<String>,
    pub subnet: Option<IpNet>,
    pub attributes: Vec<(String, Regex)>,
    pub set: Labels,
}

impl LabelRule {
    pub fn matches(&self, w: &Workload) -> bool {
        let re = |r: &Option<Regex>, v: &Option<String>| match r {
            None => true,
            Some(r) => v.as_deref().is_some_and(|v| r.is_match(v)),
        };
        re(&self.hostname, &w.hostname)
            && re(&self.os, &w.os)
            && re(&self.os_version, &w.os_version)
            && self.kind.as_ref().is_none_or(|k| *k == w.kind.to_string())
            && self
                .subnet
                .is_none_or(|n| w.addresses.iter().any(|a| n.contains(a)))
            && self
                .attributes
                .iter()
                .all(|(k, r)| w.attributes.get(k).is_some_and(|v| r.is_match(v)))
    }
}

/// Ordered label rules. A rule only fills keys a workload does not have yet: labels
/// written by people win over automatic ones, and earlier rules over later ones.
#[derive(Debug, Clone, Default)]
pub struct LabelRules(pub Vec<LabelRule>);

impl LabelRules {
    pub fn apply(&self, w: &mut Workload) {
        for rule in &self.0 {
            if rule.matches(w) {
                for (k, v) in rule.set.iter() {
                    if !w.labels.contains_key(k) {
                        w.labels.set(Label {
                            key: k.to_string(),
                            value: v.to_string(),
                        });
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    bulkhead: String,
    kind: String,
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(rename = "match")]
    when: RawMatch,
    set: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    hostname: Option<String>,
    os: Option<String>,
    os_version: Option<String>,
    kind: Option<String>,
    subnet: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

/// Reads a `kind: label_rules` YAML document.
pub fn parse_label_rules(file: &str, text: &str) -> Result<LabelRules, InventoryErrors> {
    let raw: Spanned<RawFile> = serde_saphyr::from_str(text).map_err(|e| {
        InventoryErrors(vec![InventoryFileError {
            file: file.into(),
            line: e.location().map(|l| l.line()).unwrap_or(1),
            field: "(document)".into(),
            message: e.without_snippet().to_string(),
        }])
    })?;
    let mut errors = Vec::new();
    let line0 = raw.referenced.line();
    let mut err = |line: u64, field: String, message: String| {
        errors.push(InventoryFileError {
            file: file.into(),
            line,
            field,
            message,
        })
    };
    if raw.value.bulkhead != "v1" {
        err(
            line0,
            "bulkhead".into(),
            format!("unsupported format version {:?}", raw.value.bulkhead),
        );
    }
    if raw.value.kind != "label_rules" {
        err(
            line0,
            "kind".into(),
            format!("expected label_rules, found {:?}", raw.value.kind),
        );
    }
    let mut rules = Vec::new();
    for (i, r) in raw.value.rules.into_iter().enumerate() {
        let line = r.referenced.line();
        let r = r.value;
        let p = format!("rules[{i}]");
        let mut re = |field: &str, s: &Option<String>| -> Option<Regex> {
            s.as_ref().and_then(|s| match Regex::new(s) {
                Ok(r) => Some(r),
                Err(e) => {
                    err(
                        line,
                        format!("{p}.match.{field}"),
                        format!("bad regular expression: {e}"),
                    );
                    None
                }
            })
        };
        let hostname = re("hostname", &r.when.hostname);
        let os = re("os", &r.when.os);
        let os_version = re("os_version", &r.when.os_version);
        let mut attributes = Vec::new();
        for (k, v) in &r.when.attributes {
            if let Some(rx) = re(&format!("attributes.{k}"), &Some(v.clone())) {
                attributes.push((k.clone(), rx));
            }
        }
        let subnet = match &r.when.subnet {
            None => None,
            Some(s) => match s.parse::<IpNet>() {
                Ok(n) => Some(n),
                Err(_) => {
                    err(
                        line,
                        format!("{p}.match.subnet"),
                        format!("{s:?} is not a CIDR"),
                    );
                    None
                }
            },
        };
        if let Some(k) = &r.when.kind
            && let Err(e) = k.parse::<bulkhead_model::WorkloadKind>()
        {
            err(line, format!("{p}.match.kind"), e);
        }
        let mut set = Labels::new();
        for (k, v) in &r.set {
            match Label::new(k.clone(), v.clone()) {
                Ok(l) => {
                    let _ = set.insert(l);
                }
                Err(e) => err(line, format!("{p}.set.{k}"), e.to_string()),
            }
        }
        if set.is_empty() {
            err(line, format!("{p}.set"), "sets no label".into());
        }
        rules.push(LabelRule {
            name: r.name,
            hostname,
            os,
            os_version,
            kind: r.when.kind,
            subnet,
            attributes,
            set,
        });
    }
    if errors.is_empty() {
        Ok(LabelRules(rules))
    } else {
        Err(InventoryErrors(errors))
    }
}
