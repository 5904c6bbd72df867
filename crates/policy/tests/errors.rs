//! Broken policy files: every error names file:line:column and the field, and no
//! policy comes out of input with any error.

use bulkhead_policy::{Policy, PolicyError};

fn errors_of(name: &str) -> Vec<PolicyError> {
    let path = format!("{}/tests/data/broken/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    Policy::from_sources(&[(name, text)])
        .expect_err("broken input must not produce a policy")
        .0
}

fn has(errors: &[PolicyError], line: u64, field: &str, words: &str) {
    assert!(
        errors
            .iter()
            .any(|e| e.origin.line == line && e.field == field && e.message.contains(words)),
        "no error at line {line} field {field} with {words:?} in:\n{}",
        errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn unknown_field_is_an_error_with_its_line() {
    let e = errors_of("unknown-field.yaml");
    has(&e, 11, "comment", "unknown field `comment`");
    assert_eq!(e[0].origin.file, "unknown-field.yaml");
    assert!(e[0].origin.column > 0);
}

#[test]
fn every_bad_value_is_reported_at_once() {
    let e = errors_of("bad-values.yaml");
    has(&e, 6, "include[1]", "not an IPv4/IPv6 address or CIDR");
    has(&e, 13, "ports[1]", "not a number from 0 to 65535");
    has(&e, 18, "tier", "unknown tier \"nowhere\"");
    has(&e, 21, "rules[0].action", "not allow or deny");
    has(
        &e,
        27,
        "rules[1].from[0]",
        "must start with a lowercase letter",
    );
    has(
        &e,
        29,
        "rules[1].services[0]",
        "unknown service \"nosuchservice\"",
    );
    // A rule with one bad field is still checked for its references.
    has(&e, 23, "rules[0].to[0]", "unknown label group \"missing\"");
}

#[test]
fn field_of_another_kind_is_refused() {
    let e = errors_of("wrong-kind-field.yaml");
    has(&e, 5, "rules", "not a field of kind tier");
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    let e = errors_of("not-yaml.yaml");
    assert_eq!(e.len(), 1);
    assert!(e[0].origin.line >= 3, "{:?}", e[0]);
}

#[test]
fn missing_references_point_at_the_item() {
    let text = "bulkhead: v1\nkind: tier\nname: t\norder: 1\n---\nbulkhead: v1\nkind: ruleset\nname: rs\ntier: t\nrules:\n  - id: a\n    action: allow\n    from: [any]\n    to:\n      - role=db\n      - group:nope\n    services: [any]\n";
    let e = Policy::from_sources(&[("x.yaml", text)]).unwrap_err().0;
    has(&e, 16, "rules[0].to[1]", "unknown label group \"nope\"");
}

#[test]
fn duplicates_are_reported_with_the_first_definition() {
    let text = "bulkhead: v1\nkind: tier\nname: t\norder: 1\n---\nbulkhead: v1\nkind: tier\nname: u\norder: 1\n---\nbulkhead: v1\nkind: tier\nname: t\norder: 2\n";
    let e = Policy::from_sources(&[("x.yaml", text)]).unwrap_err().0;
    has(&e, 13, "name", "already defined at x.yaml:3");
    has(&e, 8, "order", "same order 1");
}

#[test]
fn a_comma_in_a_selector_is_refused_not_misread() {
    let text = "bulkhead: v1\nkind: tier\nname: t\norder: 1\n---\nbulkhead: v1\nkind: ruleset\nname: rs\ntier: t\nrules:\n  - id: a\n    action: allow\n    from:\n      - role=web,env=prod\n    to: [any]\n    services: [any]\n";
    let e = Policy::from_sources(&[("x.yaml", text)]).unwrap_err().0;
    has(
        &e,
        14,
        "rules[0].from[0]",
        "separate the labels of one selector with spaces",
    );
}
