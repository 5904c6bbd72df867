use std::collections::BTreeMap;
use std::net::IpAddr;

use bulkhead_model::{
    EnforcementMode, Label, Labels, Workload, WorkloadKind, validate_key, validate_name,
};
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::{InventoryErrors, InventoryFileError, Located};

const COLUMNS: &[&str] = &[
    "name",
    "kind",
    "managed",
    "addresses",
    "hostname",
    "os",
    "os_version",
    "labels",
    "mode",
    "owner",
];

/// Field values as text, whichever format they came from, so both formats share checks.
#[derive(Default)]
struct RawFields {
    name: Option<String>,
    kind: Option<String>,
    managed: Option<String>,
    addresses: Vec<String>,
    hostname: Option<String>,
    os: Option<String>,
    os_version: Option<String>,
    labels: Vec<(String, String)>,
    mode: Option<String>,
    owner: Option<String>,
    attributes: BTreeMap<String, String>,
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn build(
    file: &str,
    line: u64,
    raw: RawFields,
    errors: &mut Vec<InventoryFileError>,
) -> Option<Workload> {
    let before = errors.len();
    let mut err = |field: &str, message: String| {
        errors.push(InventoryFileError {
            file: file.to_string(),
            line,
            field: field.to_string(),
            message,
        })
    };
    let name = nonempty(raw.name).unwrap_or_default();
    if let Err(e) = validate_name(&name) {
        err("name", format!("workload name {name:?} {e}"));
    }
    let kind = match nonempty(raw.kind) {
        None => {
            err(
                "kind",
                "missing; one of vm, host, container, device, external".into(),
            );
            WorkloadKind::Vm
        }
        Some(k) => k.parse().unwrap_or_else(|e: String| {
            err("kind", e);
            WorkloadKind::Vm
        }),
    };
    let managed = match nonempty(raw.managed)
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("false") | Some("no") | Some("0") => false,
        Some("true") | Some("yes") | Some("1") => true,
        Some(other) => {
            err("managed", format!("{other:?} is not true or false"));
            false
        }
    };
    let mut addresses = Vec::new();
    for a in raw
        .addresses
        .iter()
        .flat_map(|a| a.split([' ', ';', ',']))
        .filter(|a| !a.is_empty())
    {
        match a.parse::<IpAddr>() {
            Ok(ip) if addresses.contains(&ip) => {
                err("addresses", format!("address {ip} is listed twice"))
            }
            Ok(ip) => addresses.push(ip),
            Err(_) => err(
                "addresses",
                format!(
                    "{a:?} is not an IPv4 or IPv6 address (ranges belong in IP lists, not workloads)"
                ),
            ),
        }
    }
    let written = raw.addresses.iter().any(|a| !a.trim().is_empty());
    if !written {
        err("addresses", "a workload needs at least one address".into());
    }
    let mut labels = Labels::new();
    for (k, v) in raw.labels {
        match Label::new(k.trim(), v.trim()) {
            Ok(l) => {
                if let Err(e) = labels.insert(l) {
                    err("labels", e.to_string());
                }
            }
            Err(e) => err("labels", e.to_string()),
        }
    }
    let mode = match nonempty(raw.mode) {
        None => EnforcementMode::Idle,
        Some(m) => m.parse().unwrap_or_else(|e: String| {
            err("mode", e);
            EnforcementMode::Idle
        }),
    };
    if !managed && mode != EnforcementMode::Idle {
        err(
            "mode",
            format!(
                "{mode} needs a managed workload: nothing enforces on an unmanaged one (set managed=true or mode=idle)"
            ),
        );
    }
    for k in raw.attributes.keys() {
        if let Err(e) = validate_key(k) {
            err("attributes", format!("attribute {e}"));
        }
    }
    if errors.len() > before {
        return None;
    }
    Some(Workload {
        name,
        kind,
        managed,
        addresses,
        hostname: nonempty(raw.hostname),
        os: nonempty(raw.os),
        os_version: nonempty(raw.os_version),
        labels,
        mode,
        owner: nonempty(raw.owner),
        attributes: raw.attributes,
    })
}

fn split_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split([';', ' ', ','])
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("{p:?} is not key=value"))
        })
        .collect()
}

/// CSV with a header row. Columns: name, kind, managed, addresses (separated by spaces or
/// `;`), hostname, os, os_version, labels (`k=v;k=v`), mode, owner, and `attr.KEY` for
/// free-form attributes. Unknown columns are errors: a typo must not drop data.
pub fn parse_csv(file: &str, text: &str) -> Result<Vec<Located>, InventoryErrors> {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            return Err(InventoryErrors(vec![InventoryFileError {
                file: file.into(),
                line: 1,
                field: "(header)".into(),
                message: e.to_string(),
            }]));
        }
    };
    for h in headers.iter() {
        if !COLUMNS.contains(&h) && !h.starts_with("attr.") {
            errors.push(InventoryFileError {
                file: file.into(),
                line: 1,
                field: h.to_string(),
                message: format!(
                    "unknown column; expected {} or attr.KEY",
                    COLUMNS.join(", ")
                ),
            });
        }
    }
    for required in ["name", "kind", "addresses"] {
        if !headers.iter().any(|h| h == required) {
            errors.push(InventoryFileError {
                file: file.into(),
                line: 1,
                field: required.into(),
                message: "required column is missing".into(),
            });
        }
    }
    if !errors.is_empty() {
        return Err(InventoryErrors(errors));
    }
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                errors.push(InventoryFileError {
                    file: file.into(),
                    line,
                    field: "(row)".into(),
                    message: e.to_string(),
                });
                continue;
            }
        };
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let mut raw = RawFields::default();
        for (h, v) in headers.iter().zip(record.iter()) {
            let v = v.to_string();
            match h {
                "name" => raw.name = Some(v),
                "kind" => raw.kind = Some(v),
                "managed" => raw.managed = Some(v),
                "addresses" => raw.addresses = vec![v],
                "hostname" => raw.hostname = Some(v),
                "os" => raw.os = Some(v),
                "os_version" => raw.os_version = Some(v),
                "labels" => match split_labels(&v) {
                    Ok(l) => raw.labels = l,
                    Err(m) => errors.push(InventoryFileError {
                        file: file.into(),
                        line,
                        field: "labels".into(),
                        message: m,
                    }),
                },
                "mode" => raw.mode = Some(v),
                "owner" => raw.owner = Some(v),
                attr => {
                    if !v.is_empty() {
                        raw.attributes
                            .insert(attr.trim_start_matches("attr.").to_string(), v);
                    }
                }
            }
        }
        if let Some(w) = build(file, line, raw, &mut errors) {
            out.push(Located {
                workload: w,
                file: file.into(),
                line,
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(InventoryErrors(errors))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    name: Option<String>,
    kind: Option<String>,
    managed: Option<bool>,
    #[serde(default)]
    addresses: Vec<String>,
    hostname: Option<String>,
    os: Option<String>,
    os_version: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    mode: Option<String>,
    owner: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapper {
    workloads: Vec<Spanned<RawWorkload>>,
}

/// JSON or YAML: a list of workload objects, or `{"workloads": [...]}`. Fields as in the
/// CSV, with `labels` and `attributes` as maps. Unknown fields are errors.
pub fn parse_structured(file: &str, text: &str) -> Result<Vec<Located>, InventoryErrors> {
    let yaml_err = |e: serde_saphyr::Error| {
        let loc = e.location();
        let raw = e.without_snippet().to_string();
        let message = raw
            .strip_prefix("error: ")
            .unwrap_or(&raw)
            .split_once(": ")
            .filter(|(p, _)| p.starts_with("line "))
            .map(|(_, m)| m.to_string())
            .unwrap_or(raw.clone());
        InventoryErrors(vec![InventoryFileError {
            file: file.into(),
            line: loc.map(|l| l.line()).unwrap_or(1),
            field: "(document)".into(),
            message,
        }])
    };
    let items: Vec<Spanned<RawWorkload>> =
        if text.trim_start().starts_with('{') || text.trim_start().starts_with("workloads:") {
            serde_saphyr::from_str::<Wrapper>(text)
                .map_err(yaml_err)?
                .workloads
        } else {
            serde_saphyr::from_str(text).map_err(yaml_err)?
        };
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for item in items {
        let line = item.referenced.line();
        let r = item.value;
        let raw = RawFields {
            name: r.name,
            kind: r.kind,
            managed: r.managed.map(|m| m.to_string()),
            addresses: r.addresses,
            hostname: r.hostname,
            os: r.os,
            os_version: r.os_version,
            labels: r.labels.into_iter().collect(),
            mode: r.mode,
            owner: r.owner,
            attributes: r.attributes,
        };
        if let Some(w) = build(file, line, raw, &mut errors) {
            out.push(Located {
                workload: w,
                file: file.into(),
                line,
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(InventoryErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_errors_name_the_line_and_field() {
        let text = "name,kind,managed,addresses,labels\nweb-1,vm,true,10.0.0.1,app=a;role=web\nweb-2,vm,true,10.0.0.300,app=a\n";
        let e = parse_csv("inv.csv", text).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].line, 3);
        assert_eq!(e.0[0].field, "addresses");
    }

    #[test]
    fn csv_unknown_column_is_an_error() {
        let e = parse_csv("inv.csv", "name,kind,adresses\nx,vm,10.0.0.1\n").unwrap_err();
        assert!(e.0.iter().any(|e| e.field == "adresses" && e.line == 1));
    }

    #[test]
    fn json_reports_lines_of_bad_records() {
        let text = "[\n  {\"name\": \"a\", \"kind\": \"vm\", \"addresses\": [\"10.0.0.1\"]},\n  {\"name\": \"b\", \"kind\": \"toaster\", \"addresses\": [\"10.0.0.2\"]}\n]\n";
        let e = parse_structured("inv.json", text).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!((e.0[0].line, e.0[0].field.as_str()), (3, "kind"));
        let e = parse_structured(
            "inv.json",
            "[{\"name\": \"a\", \"kind\": \"vm\", \"adresses\": []}]",
        )
        .unwrap_err();
        assert!(e.0[0].message.contains("adresses"), "{e}");
    }
}
