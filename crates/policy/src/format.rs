//! The canonical form of policy files: fixed key order, sorted maps, one style of
//! lists and quoting, so that reviews show only real changes. Comments are not kept.

use std::fmt::Write;

use crate::document::{Object, parse_file};
use crate::error::PolicyErrors;

/// Could YAML read this plain scalar as something other than a string (a number in any
/// base or notation, infinity, NaN, a sexagesimal, a boolean or null)?
fn yaml_might_not_read_as_string(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    s.starts_with('.')
        || s.parse::<f64>().is_ok()
        || lower.starts_with("0x")
        || lower.starts_with("0o")
        || lower.starts_with("0b")
        || s.chars()
            .all(|c| c.is_ascii_digit() || "_+-.eE:".contains(c))
        || matches!(
            lower.as_str(),
            "true"
                | "false"
                | "yes"
                | "no"
                | "on"
                | "off"
                | "null"
                | "y"
                | "n"
                | "inf"
                | "nan"
                | "~"
        )
}

/// Quotes a string only when YAML would misread it plain.
fn scalar(s: &str) -> String {
    let plain_ok = !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/'))
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || " _-./@=:+,()'".contains(c))
        && !s.ends_with(' ')
        && !s.contains(": ")
        && !s.ends_with(':')
        && !yaml_might_not_read_as_string(s);
    if plain_ok {
        return s.to_string();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes a block list, sorted and without repeats: every list in the format is a set.
fn list<T: Ord + std::fmt::Display>(
    out: &mut String,
    indent: &str,
    key: &str,
    items: impl IntoIterator<Item = T>,
) {
    let items: std::collections::BTreeSet<T> = items.into_iter().collect();
    let _ = writeln!(out, "{indent}{key}:");
    for i in items {
        let _ = writeln!(out, "{indent}  - {}", scalar(&i.to_string()));
    }
}

/// Renders one checked object in canonical form.
pub fn format_object(o: &Object) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "bulkhead: {}", crate::FORMAT_VERSION);
    let _ = writeln!(out, "kind: {}", o.kind());
    let _ = writeln!(out, "name: {}", scalar(o.name()));
    let description = match o {
        Object::LabelGroup(x) => &x.description,
        Object::IpList(x) => &x.description,
        Object::Service(x) => &x.description,
        Object::Tier(x) => &x.description,
        Object::Ruleset(x) => &x.description,
    };
    if let Some(d) = description {
        let _ = writeln!(out, "description: {}", scalar(d));
    }
    match o {
        Object::LabelGroup(g) => {
            let _ = writeln!(out, "labels:");
            for (k, vs) in &g.labels {
                if vs.len() == 1 {
                    let v = vs.iter().next().expect("one value");
                    let _ = writeln!(out, "  {k}: {}", scalar(v));
                } else {
                    let vals: Vec<String> = vs.iter().map(|v| scalar(v)).collect();
                    let _ = writeln!(out, "  {k}: [{}]", vals.join(", "));
                }
            }
        }
        Object::IpList(l) => {
            list(&mut out, "", "include", l.include.iter());
            if !l.exclude.is_empty() {
                list(&mut out, "", "exclude", l.exclude.iter());
            }
        }
        Object::Service(s) => {
            list(&mut out, "", "ports", s.ports.iter());
            if let Some(p) = &s.process {
                let _ = writeln!(out, "process: {}", scalar(p));
            }
        }
        Object::Tier(t) => {
            let _ = writeln!(out, "order: {}", t.order);
        }
        Object::Ruleset(rs) => {
            let _ = writeln!(out, "tier: {}", scalar(&rs.tier));
            if let Some(o) = &rs.owner {
                let _ = writeln!(out, "owner: {}", scalar(o));
            }
            if !rs.scope.is_empty() {
                let _ = writeln!(out, "scope:");
                for (k, v) in rs.scope.iter() {
                    let _ = writeln!(out, "  {k}: {}", scalar(v));
                }
            }
            if rs.rules.is_empty() {
                let _ = writeln!(out, "rules: []");
            } else {
                let _ = writeln!(out, "rules:");
            }
            for r in &rs.rules {
                let _ = writeln!(out, "  - id: {}", scalar(&r.id));
                if let Some(d) = &r.description {
                    let _ = writeln!(out, "    description: {}", scalar(d));
                }
                let _ = writeln!(out, "    action: {}", r.action);
                list(&mut out, "    ", "from", r.from.iter());
                list(&mut out, "    ", "to", r.to.iter());
                list(&mut out, "    ", "services", r.services.iter());
            }
        }
    }
    out
}

/// Formats a whole file: its documents in their written order, each canonical.
/// A file with any error is not formatted (and must not be rewritten).
pub fn format_file(file: &str, text: &str) -> Result<String, PolicyErrors> {
    let (objects, errors) = parse_file(file, text);
    if !errors.is_empty() {
        return Err(PolicyErrors(errors));
    }
    let heads = head_comments(text);
    let keep_heads = heads.len() == objects.len();
    Ok(objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let head = if keep_heads { heads[i].as_str() } else { "" };
            format!("{head}{}", format_object(o))
        })
        .collect::<Vec<_>>()
        .join("---\n"))
}

/// The comment lines that open each non-empty document of a YAML stream.
fn head_comments(text: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut current = String::new();
    let mut in_head = true;
    let mut has_content = false;
    for line in text.lines() {
        if line.starts_with("---") {
            if has_content {
                heads.push(std::mem::take(&mut current));
            }
            current.clear();
            in_head = true;
            has_content = false;
            continue;
        }
        let t = line.trim();
        if in_head && t.starts_with('#') {
            current.push_str(t);
            current.push('\n');
        } else if !t.is_empty() {
            in_head = false;
            has_content = true;
        }
    }
    if has_content {
        heads.push(current);
    }
    heads
}

#[cfg(test)]
mod tests {
    use super::scalar;

    #[test]
    fn strings_yaml_would_misread_are_quoted() {
        for s in [
            ".inf", ".NaN", "0x10", "0o7", "1_000", "1:20", "12", "-1.5e3", "true", "No", "~",
            "null", "- x", "#x", "a: b", "x:", "@x", "'x", "\"x", " x", "x ",
        ] {
            let q = scalar(s);
            assert!(q.starts_with('"'), "{s:?} was written plain as {q}");
            let back: String = serde_saphyr::from_str(&q).unwrap();
            assert_eq!(back, s);
        }
        for s in [
            "role=web",
            "tcp/80",
            "10.0.0.0/8",
            "web server (prod)",
            "shop-team@example.com",
        ] {
            assert_eq!(scalar(s), s);
        }
    }
}
