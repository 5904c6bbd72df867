// Rollouts and label rules against every backend: included by tests/agents.rs once per
// backend, in a module that defines `open()` and `fresh()`.

#[test]
fn rollouts_are_stored_updated_and_audited_only_when_they_change() {
    let mut s = open();
    let id = s
        .create_rollout("pay", r#"{"state":"scheduled"}"#, &ctx("rollout.create", 10))
        .unwrap();
    let r = s.rollout(id).unwrap().unwrap();
    assert_eq!((r.name.as_str(), r.json.as_str()), ("pay", r#"{"state":"scheduled"}"#));
    assert_eq!((r.created_at_ms, r.updated_at_ms), (10, 10));
    assert!(matches!(
        s.create_rollout("pay", "{}", &ctx("rollout.create", 11)),
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        s.create_rollout("", "{}", &ctx("rollout.create", 11)),
        Err(StoreError::Invalid { .. })
    ));

    // The scheduler saves what it looked at every round: unchanged is not a change.
    assert!(s.update_rollout(id, r#"{"state":"scheduled"}"#, &ctx("rollout.update", 20)).unwrap());
    assert_eq!(s.audit(0, 100).unwrap().len(), 1);
    assert!(s.update_rollout(id, r#"{"state":"enforced"}"#, &ctx("rollout.enforce", 30)).unwrap());
    let r = s.rollout(id).unwrap().unwrap();
    assert_eq!((r.json.as_str(), r.updated_at_ms), (r#"{"state":"enforced"}"#, 30));
    let audit = s.audit(0, 100).unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[1].target, format!("rollout/{id}"));
    assert_eq!(audit[1].before.as_deref(), Some(r#"{"state":"scheduled"}"#));
    assert_eq!(audit[1].after.as_deref(), Some(r#"{"state":"enforced"}"#));
    assert!(!s.update_rollout(id + 1, "{}", &ctx("rollout.update", 40)).unwrap());
    assert_eq!(s.rollouts().unwrap().len(), 1);
    assert_eq!(s.rollout(id + 1).unwrap(), None);
}

#[test]
fn label_rules_are_one_document_audited_before_and_after() {
    let mut s = open();
    assert_eq!(s.label_rules().unwrap(), None);
    assert!(!s.set_label_rules("", &ctx("label_rules.set", 5)).unwrap(), "none is none");
    assert!(s.set_label_rules("a: 1\n", &ctx("label_rules.set", 10)).unwrap());
    assert!(!s.set_label_rules("a: 1\n", &ctx("label_rules.set", 11)).unwrap());
    assert!(s.set_label_rules("a: 2\n", &ctx("label_rules.set", 12)).unwrap());
    let r = s.label_rules().unwrap().unwrap();
    assert_eq!((r.yaml.as_str(), r.updated_at_ms), ("a: 2\n", 12));
    let audit = s.audit(0, 100).unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0].before, None);
    assert_eq!(
        (audit[1].before.as_deref(), audit[1].after.as_deref()),
        (Some("a: 1\n"), Some("a: 2\n"))
    );
}
