//! Differences between two sets of policy objects or workloads: pure functions.

use std::collections::{BTreeMap, BTreeSet};

use super::{StoredObject, StoredWorkload};

/// How one object differs between two sets.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DiffChange {
    /// Only in the second set.
    Added,
    /// Only in the first set.
    Removed,
    /// In both, with different text.
    Changed,
}

impl DiffChange {
    pub fn as_str(self) -> &'static str {
        match self {
            DiffChange::Added => "added",
            DiffChange::Removed => "removed",
            DiffChange::Changed => "changed",
        }
    }
}

/// One policy object that differs. `before` is its text in the first set (`None` when
/// added), `after` in the second (`None` when removed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ObjectDiff {
    pub kind: String,
    pub name: String,
    pub change: DiffChange,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// One workload that differs, as [`ObjectDiff`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkloadDiff {
    pub name: String,
    pub change: DiffChange,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// The objects that differ between `a` and `b`, sorted by (kind, name). Only the text
/// counts: `updated_ms` and `updated_by` are ignored. Should a (kind, name) appear
/// twice in one input, the last one counts.
pub fn diff(a: &[StoredObject], b: &[StoredObject]) -> Vec<ObjectDiff> {
    fn key(o: &StoredObject) -> ((&str, &str), &str) {
        ((o.kind.as_str(), o.name.as_str()), o.yaml.as_str())
    }
    let a: BTreeMap<_, _> = a.iter().map(key).collect();
    let b: BTreeMap<_, _> = b.iter().map(key).collect();
    diff_maps(&a, &b)
        .into_iter()
        .map(|((kind, name), change, before, after)| ObjectDiff {
            kind: kind.to_string(),
            name: name.to_string(),
            change,
            before,
            after,
        })
        .collect()
}

/// The workloads that differ between `a` and `b`, sorted by name; as [`diff`].
pub fn diff_workloads(a: &[StoredWorkload], b: &[StoredWorkload]) -> Vec<WorkloadDiff> {
    fn key(w: &StoredWorkload) -> (&str, &str) {
        (w.name.as_str(), w.json.as_str())
    }
    let a: BTreeMap<_, _> = a.iter().map(key).collect();
    let b: BTreeMap<_, _> = b.iter().map(key).collect();
    diff_maps(&a, &b)
        .into_iter()
        .map(|(name, change, before, after)| WorkloadDiff {
            name: name.to_string(),
            change,
            before,
            after,
        })
        .collect()
}

type Entry<K> = (K, DiffChange, Option<String>, Option<String>);

fn diff_maps<K: Ord + Copy>(a: &BTreeMap<K, &str>, b: &BTreeMap<K, &str>) -> Vec<Entry<K>> {
    let keys: BTreeSet<K> = a.keys().chain(b.keys()).copied().collect();
    keys.into_iter()
        .filter_map(|k| {
            let before = a.get(&k).copied();
            let after = b.get(&k).copied();
            let change = match (before, after) {
                (None, Some(_)) => DiffChange::Added,
                (Some(_), None) => DiffChange::Removed,
                (Some(x), Some(y)) if x != y => DiffChange::Changed,
                _ => return None,
            };
            Some((
                k,
                change,
                before.map(str::to_string),
                after.map(str::to_string),
            ))
        })
        .collect()
}
