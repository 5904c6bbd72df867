//! Inventory import and automatic labelling.
//!
//! Every function takes file names and contents and returns checked values or every
//! error with file, line and field; reading files is the caller's job.

mod import;
mod label_rules;

use std::fmt;

pub use import::{parse_csv, parse_structured};
pub use label_rules::{LabelRule, LabelRules, parse_label_rules};

use bulkhead_model::{Inventory, InventoryError, Workload};

/// One problem in an inventory or label-rules file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("{file}:{line}: {field}: {message}")]
pub struct InventoryFileError {
    pub file: String,
    pub line: u64,
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InventoryErrors(pub Vec<InventoryFileError>);

impl fmt::Display for InventoryErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InventoryErrors {}

/// A workload and the line it was defined on, for errors that span records.
#[derive(Debug, Clone)]
pub struct Located {
    pub workload: Workload,
    pub file: String,
    pub line: u64,
}

/// Parses inventory files (format by extension: `.csv`, otherwise JSON or YAML), applies
/// label rules, and checks the whole set (unique names and addresses).
pub fn load<N: AsRef<str>, T: AsRef<str>>(
    files: &[(N, T)],
    rules: Option<&LabelRules>,
) -> Result<Inventory, InventoryErrors> {
    let mut located = Vec::new();
    let mut errors = Vec::new();
    for (name, text) in files {
        let (name, text) = (name.as_ref(), text.as_ref());
        let parsed = if name.ends_with(".csv") {
            parse_csv(name, text)
        } else {
            parse_structured(name, text)
        };
        match parsed {
            Ok(ws) => located.extend(ws),
            Err(InventoryErrors(es)) => errors.extend(es),
        }
    }
    if !errors.is_empty() {
        return Err(InventoryErrors(errors));
    }
    load_located(located, rules)
}

/// Applies label rules to already parsed workloads and checks the whole set (unique names
/// and addresses). For callers that parse workloads one by one, as the server does with
/// its stored inventory.
pub fn load_located(
    mut located: Vec<Located>,
    rules: Option<&LabelRules>,
) -> Result<Inventory, InventoryErrors> {
    let mut errors = Vec::new();
    if let Some(rules) = rules {
        for l in &mut located {
            rules.apply(&mut l.workload);
        }
    }
    // Check uniqueness here, where lines are known, so the message can point at both.
    let mut names = std::collections::HashMap::new();
    let mut addrs = std::collections::HashMap::new();
    for l in &located {
        if let Some(first) = names.insert(l.workload.name.clone(), (l.file.clone(), l.line)) {
            errors.push(InventoryFileError {
                file: l.file.clone(),
                line: l.line,
                field: "name".into(),
                message: format!(
                    "workload name {:?} is already used at {}:{}",
                    l.workload.name, first.0, first.1
                ),
            });
        }
        for a in &l.workload.addresses {
            if let Some((f, line, w)) =
                addrs.insert(*a, (l.file.clone(), l.line, l.workload.name.clone()))
            {
                errors.push(InventoryFileError {
                    file: l.file.clone(),
                    line: l.line,
                    field: "addresses".into(),
                    message: format!(
                        "address {a} of {:?} already belongs to {w:?} at {f}:{line}",
                        l.workload.name
                    ),
                });
            }
        }
    }
    if !errors.is_empty() {
        return Err(InventoryErrors(errors));
    }
    Inventory::new(located.into_iter().map(|l| l.workload).collect()).map_err(
        |e: InventoryError| {
            InventoryErrors(vec![InventoryFileError {
                file: String::new(),
                line: 0,
                field: String::new(),
                message: e.to_string(),
            }])
        },
    )
}
