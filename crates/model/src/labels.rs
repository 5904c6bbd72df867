use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// One `key=value` pair.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("label {0:?} is not of the form key=value")]
    NotKeyValue(String),
    #[error("label key {key:?} {why}")]
    BadKey { key: String, why: String },
    #[error("label value {value:?} {why}")]
    BadValue { value: String, why: String },
    #[error("label key {key:?} has two values: {first:?} and {second:?}")]
    DuplicateKey {
        key: String,
        first: String,
        second: String,
    },
}

/// Label keys are lowercase identifiers so that `App=x` and `app=x` cannot silently
/// mean two different things.
pub fn validate_key(key: &str) -> Result<(), LabelError> {
    let bad = |why: &str| LabelError::BadKey {
        key: key.to_string(),
        why: why.to_string(),
    };
    if key.is_empty() {
        return Err(bad("is empty"));
    }
    if key.len() > 63 {
        return Err(bad("is longer than 63 characters"));
    }
    if !key.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(bad("must start with a lowercase letter"));
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
    {
        return Err(bad(
            "may hold only lowercase letters, digits, '-', '_' and '.'",
        ));
    }
    Ok(())
}

pub fn validate_value(value: &str) -> Result<(), LabelError> {
    let bad = |why: &str| LabelError::BadValue {
        value: value.to_string(),
        why: why.to_string(),
    };
    if value.is_empty() {
        return Err(bad("is empty"));
    }
    if value.len() > 128 {
        return Err(bad("is longer than 128 characters"));
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '=' | ',' | ';'))
    {
        return Err(bad("must not contain whitespace, '=', ',' or ';'"));
    }
    Ok(())
}

impl Label {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Result<Self, LabelError> {
        let (key, value) = (key.into(), value.into());
        validate_key(&key)?;
        validate_value(&value)?;
        Ok(Self { key, value })
    }
}

impl std::str::FromStr for Label {
    type Err = LabelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| LabelError::NotKeyValue(s.to_string()))?;
        Label::new(k.trim(), v.trim())
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// A set of labels with at most one value per key, kept sorted so that equal sets
/// compare, hash and print identically.
///
/// Shared: every flow summary carries both ends' labels, and the collector makes
/// hundreds of thousands a second, so a copy is a reference count, and a change
/// copies the set only when someone else still holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Arc<BTreeMap<String, String>>);

impl Labels {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a label; a second, different value for the same key is an error.
    pub fn insert(&mut self, label: Label) -> Result<(), LabelError> {
        match self.0.get(&label.key) {
            Some(existing) if *existing != label.value => Err(LabelError::DuplicateKey {
                key: label.key,
                first: existing.clone(),
                second: label.value,
            }),
            _ => {
                Arc::make_mut(&mut self.0).insert(label.key, label.value);
                Ok(())
            }
        }
    }

    /// Sets a label, replacing any value the key had (label rules use this).
    pub fn set(&mut self, label: Label) {
        Arc::make_mut(&mut self.0).insert(label.key, label.value);
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// True when every label of `required` is present here with the same value.
    pub fn includes(&self, required: &Labels) -> bool {
        required
            .0
            .iter()
            .all(|(k, v)| self.0.get(k).is_some_and(|mine| mine == v))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses `k=v,k=v` (also `;` or whitespace separated). Empty input is the empty set.
    pub fn parse_list(s: &str) -> Result<Self, LabelError> {
        let mut labels = Labels::new();
        for part in s
            .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
            .filter(|p| !p.is_empty())
        {
            labels.insert(part.parse()?)?;
        }
        Ok(labels)
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, v) in self.0.iter() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// In the API: an object of label keys to values, `{"app": "shop", "env": "prod"}`.
impl utoipa::PartialSchema for Labels {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <BTreeMap<String, String> as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for Labels {}

impl serde::Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.as_ref().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = <BTreeMap<String, String> as serde::Deserialize>::deserialize(d)?;
        let mut labels = Labels::new();
        for (k, v) in map {
            let label = Label::new(k, v).map_err(serde::de::Error::custom)?;
            labels.insert(label).map_err(serde::de::Error::custom)?;
        }
        Ok(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_list_sorts_and_rejects_conflicts() {
        let l = Labels::parse_list("role=web, app=shop;env=prod").unwrap();
        assert_eq!(l.to_string(), "app=shop,env=prod,role=web");
        assert!(matches!(
            Labels::parse_list("app=a,app=b"),
            Err(LabelError::DuplicateKey { .. })
        ));
        assert!(Labels::parse_list("App=x").is_err());
        assert!(Labels::parse_list("app").is_err());
    }

    #[test]
    fn includes_is_subset_on_pairs() {
        let w = Labels::parse_list("app=shop,env=prod,role=web").unwrap();
        assert!(w.includes(&Labels::parse_list("app=shop,role=web").unwrap()));
        assert!(!w.includes(&Labels::parse_list("app=shop,role=db").unwrap()));
        assert!(w.includes(&Labels::new()));
    }
}
