// The control-store tests that run against every backend: included by tests/control.rs
// once per backend, in a module that defines `open()` (a new, empty store), `fresh()`
// (a new database, see common::backends) and `PROPTEST_CASES`.

#[test]
fn draft_objects_round_trip_with_audit_before_and_after() {
    let mut store = open();
    let entries = store
        .apply(
            &[
                put("ruleset", "payments", "name: payments\nrules: []\n"),
                put("label_group", "web", "name: web\n"),
            ],
            &alice(),
        )
        .unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].target, "ruleset/payments");
    assert_eq!(entries[0].before, None);
    assert_eq!(
        entries[0].after.as_deref(),
        Some("name: payments\nrules: []\n")
    );
    assert_eq!(entries[0].actor, "alice");
    assert_eq!(entries[0].source, "192.0.2.10:53211");
    assert_eq!(entries[0].action, "ruleset.update");
    assert_eq!(entries[0].at_ms, T0);
    assert!(entries[0].id < entries[1].id);

    // Sorted by (kind, name).
    let all = store.draft_objects().unwrap();
    assert_eq!(
        texts(&all),
        vec![
            ("label_group".into(), "web".into(), "name: web\n".into()),
            (
                "ruleset".into(),
                "payments".into(),
                "name: payments\nrules: []\n".into()
            ),
        ]
    );
    let one = store.draft_object("ruleset", "payments").unwrap().unwrap();
    assert_eq!(one.updated_ms, T0);
    assert_eq!(one.updated_by, "alice");
    assert_eq!(store.draft_object("ruleset", "nope").unwrap(), None);
    assert_eq!(store.draft_object("tier", "payments").unwrap(), None);

    // A change records the old text.
    let bob = ctx("bob", T0 + 5, "ruleset.update");
    let e = store
        .apply(
            &[put("ruleset", "payments", "name: payments\nrules: [x]\n")],
            &bob,
        )
        .unwrap();
    assert_eq!(e[0].before.as_deref(), Some("name: payments\nrules: []\n"));
    assert_eq!(e[0].after.as_deref(), Some("name: payments\nrules: [x]\n"));
    let one = store.draft_object("ruleset", "payments").unwrap().unwrap();
    assert_eq!((one.updated_ms, one.updated_by.as_str()), (T0 + 5, "bob"));

    // Putting the same text is recorded but changes nothing.
    let carol = ctx("carol", T0 + 9, "ruleset.update");
    let e = store
        .apply(
            &[put("ruleset", "payments", "name: payments\nrules: [x]\n")],
            &carol,
        )
        .unwrap();
    assert_eq!(e[0].before, e[0].after);
    let one = store.draft_object("ruleset", "payments").unwrap().unwrap();
    assert_eq!((one.updated_ms, one.updated_by.as_str()), (T0 + 5, "bob"));

    // Delete.
    let e = store
        .apply(
            &[Change::DeleteObject {
                kind: "label_group".into(),
                name: "web".into(),
            }],
            &alice(),
        )
        .unwrap();
    assert_eq!(e[0].target, "label_group/web");
    assert_eq!(e[0].before.as_deref(), Some("name: web\n"));
    assert_eq!(e[0].after, None);
    assert_eq!(store.draft_objects().unwrap().len(), 1);

    // The log holds exactly what apply returned.
    let log = store.audit(0, 100).unwrap();
    assert_eq!(log.len(), 5);
    assert_eq!(log[4], e[0]);
}

#[test]
fn every_kind_is_accepted_and_others_are_refused() {
    let mut store = open();
    for kind in OBJECT_KINDS {
        store.apply(&[put(kind, "x", "y")], &alice()).unwrap();
    }
    assert_eq!(store.draft_objects().unwrap().len(), 5);
    for bad in [put("rule", "x", "y"), put("ruleset", "", "y")] {
        let err = store.apply(&[bad], &alice()).unwrap_err();
        assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    }
    let err = store
        .apply(&[put_workload("", "{}")], &alice())
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
}

#[test]
fn a_failing_apply_changes_nothing() {
    let mut store = open();
    store
        .apply(
            &[put("ruleset", "keep", "a"), put_workload("db-1", "{}")],
            &alice(),
        )
        .unwrap();
    let before = everything_in(&store);

    let failing: Vec<Vec<Change>> = vec![
        // The last change fails after others succeeded.
        vec![
            put("ruleset", "new", "b"),
            put_workload("db-2", "{}"),
            Change::DeleteWorkload {
                name: "db-1".into(),
            },
            Change::DeleteObject {
                kind: "ruleset".into(),
                name: "missing".into(),
            },
        ],
        vec![
            put("ruleset", "keep", "changed"),
            Change::DeleteWorkload {
                name: "missing".into(),
            },
        ],
        vec![put("ruleset", "keep", "changed"), put("nonsense", "x", "y")],
        vec![
            put_workload("db-1", "{\"changed\":true}"),
            draft(&[("ruleset", "a", "1"), ("ruleset", "a", "2")]),
        ],
    ];
    for changes in failing {
        let err = store.apply(&changes, &alice()).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::NotFound { .. } | StoreError::Invalid { .. }
            ),
            "{err}"
        );
        assert_eq!(everything_in(&store), before, "{changes:?}");
    }

    // Other failing mutations change nothing either.
    assert!(matches!(
        store.revert_draft_to(7, &alice()).unwrap_err(),
        StoreError::NotFound { .. }
    ));
    assert!(matches!(
        store.revoke_token(7, &alice()).unwrap_err(),
        StoreError::NotFound { .. }
    ));
    assert_eq!(everything_in(&store), before);
    assert!(store.versions().unwrap().is_empty());
}

#[test]
fn an_empty_apply_writes_nothing() {
    let mut store = open();
    assert!(store.apply(&[], &alice()).unwrap().is_empty());
    assert!(store.audit(0, 10).unwrap().is_empty());
}

#[test]
fn workloads_round_trip_with_audit() {
    let mut store = open();
    let e = store
        .apply(
            &[
                put_workload("web-2", r#"{"ips":["10.0.0.2"]}"#),
                put_workload("web-1", r#"{"ips":["10.0.0.1"]}"#),
            ],
            &ctx("importer", T0, "inventory.import"),
        )
        .unwrap();
    assert_eq!(e[0].target, "workload/web-2");
    assert_eq!(e[0].before, None);
    let names: Vec<_> = store
        .workloads()
        .unwrap()
        .into_iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(names, ["web-1", "web-2"]);
    let w = store.workload("web-1").unwrap().unwrap();
    assert_eq!(w.json, r#"{"ips":["10.0.0.1"]}"#);
    assert_eq!((w.updated_ms, w.updated_by.as_str()), (T0, "importer"));
    assert_eq!(store.workload("web-3").unwrap(), None);

    let e = store
        .apply(
            &[
                put_workload("web-1", r#"{"ips":["10.0.0.9"]}"#),
                Change::DeleteWorkload {
                    name: "web-2".into(),
                },
            ],
            &ctx("bob", T0 + 1, "workload.update"),
        )
        .unwrap();
    assert_eq!(e[0].before.as_deref(), Some(r#"{"ips":["10.0.0.1"]}"#));
    assert_eq!(e[0].after.as_deref(), Some(r#"{"ips":["10.0.0.9"]}"#));
    assert_eq!(e[1].target, "workload/web-2");
    assert_eq!(e[1].before.as_deref(), Some(r#"{"ips":["10.0.0.2"]}"#));
    assert_eq!(e[1].after, None);
    assert_eq!(store.workloads().unwrap().len(), 1);
    assert_eq!(store.workload("web-1").unwrap().unwrap().updated_by, "bob");
}

#[test]
fn replace_draft_writes_only_the_differences() {
    let mut store = open();
    store
        .apply(
            &[draft(&[
                ("ruleset", "a", "1"),
                ("ruleset", "b", "1"),
                ("tier", "t", "1"),
            ])],
            &ctx("alice", T0, "policy.push"),
        )
        .unwrap();
    let bob = ctx("bob", T0 + 10, "policy.push");
    let e = store
        .apply(
            &[draft(&[
                ("tier", "t", "1"),
                ("ruleset", "b", "2"),
                ("ip_list", "corp", "1"),
            ])],
            &bob,
        )
        .unwrap();
    let got: Vec<_> = e
        .iter()
        .map(|e| (e.target.as_str(), e.before.as_deref(), e.after.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("ip_list/corp", None, Some("1")),
            ("ruleset/a", Some("1"), None),
            ("ruleset/b", Some("1"), Some("2")),
        ]
    );
    // The unchanged tier keeps its author; the changed ruleset has the new one.
    let t = store.draft_object("tier", "t").unwrap().unwrap();
    assert_eq!((t.updated_ms, t.updated_by.as_str()), (T0, "alice"));
    let b = store.draft_object("ruleset", "b").unwrap().unwrap();
    assert_eq!((b.updated_ms, b.updated_by.as_str()), (T0 + 10, "bob"));

    // A push that changes nothing is still on record.
    let e = store
        .apply(
            &[draft(&[
                ("ruleset", "b", "2"),
                ("tier", "t", "1"),
                ("ip_list", "corp", "1"),
            ])],
            &bob,
        )
        .unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(
        (
            e[0].target.as_str(),
            e[0].before.as_deref(),
            e[0].after.as_deref()
        ),
        ("draft", None, None)
    );

    // Replacing with nothing empties the draft; workloads are not policy objects.
    store
        .apply(&[put_workload("w", "{}"), draft(&[])], &bob)
        .unwrap();
    assert!(store.draft_objects().unwrap().is_empty());
    assert_eq!(store.workloads().unwrap().len(), 1);
}

#[test]
fn versions_are_numbered_immutable_snapshots() {
    let mut store = open();
    assert_eq!(store.latest_version().unwrap(), None);
    store
        .apply(
            &[
                put("ruleset", "shop", "v1"),
                put("tier", "app", "t"),
                put_workload("web-1", "{\"a\":1}"),
            ],
            &alice(),
        )
        .unwrap();
    let prov = ctx("secops", T0 + 100, "policy.provision");
    let v1 = store.provision("first", &prov).unwrap();
    assert_eq!(v1.id, 1);
    assert_eq!(v1.comment, "first");
    assert_eq!(v1.author, "secops");
    assert_eq!(v1.created_ms, T0 + 100);
    assert_eq!((v1.objects, v1.workloads), (2, 1));
    let v1_full = store.version(1).unwrap().unwrap();
    assert_eq!(v1_full.meta, v1);
    assert_eq!(v1_full.objects, store.draft_objects().unwrap());
    assert_eq!(v1_full.workloads, store.workloads().unwrap());

    // The provision is audited with the version's metadata.
    let log = store.audit(0, 100).unwrap();
    let last = log.last().unwrap();
    assert_eq!(last.target, "version/1");
    assert_eq!(last.before, None);
    let after: serde_json::Value = serde_json::from_str(last.after.as_deref().unwrap()).unwrap();
    assert_eq!(after["id"], 1);
    assert_eq!(after["comment"], "first");

    // Editing the draft does not touch version 1.
    store
        .apply(
            &[
                put("ruleset", "shop", "v2"),
                Change::DeleteObject {
                    kind: "tier".into(),
                    name: "app".into(),
                },
                put_workload("web-1", "{\"a\":2}"),
                put_workload("web-2", "{}"),
            ],
            &alice(),
        )
        .unwrap();
    assert_eq!(store.version(1).unwrap().unwrap(), v1_full);

    let v2 = store.provision("second", &prov).unwrap();
    assert_eq!(v2.id, 2);
    assert_eq!((v2.objects, v2.workloads), (1, 2));
    let v2_full = store.latest_version().unwrap().unwrap();
    assert_eq!(v2_full.meta, v2);
    assert_eq!(
        texts(&v2_full.objects),
        [("ruleset".into(), "shop".into(), "v2".into())]
    );
    assert_eq!(store.versions().unwrap(), [v1.clone(), v2.clone()]);
    assert_eq!(store.version(3).unwrap(), None);
    assert_eq!(store.version(0).unwrap(), None);

    let log = store.audit(0, 100).unwrap();
    let before: serde_json::Value =
        serde_json::from_str(log.last().unwrap().before.as_deref().unwrap()).unwrap();
    assert_eq!(before["id"], 1);

    // An empty draft still provisions (a valid, if strict, policy).
    store.apply(&[draft(&[])], &alice()).unwrap();
    let v3 = store.provision("", &prov).unwrap();
    assert_eq!((v3.id, v3.objects), (3, 0));
    assert!(store.version(3).unwrap().unwrap().objects.is_empty());
}

#[test]
fn revert_makes_the_draft_a_versions_objects_and_leaves_workloads() {
    let mut store = open();
    store
        .apply(
            &[
                put("ruleset", "shop", "v1"),
                put("tier", "app", "t1"),
                put_workload("web-1", "{\"v\":1}"),
            ],
            &alice(),
        )
        .unwrap();
    store.provision("good", &alice()).unwrap();
    store
        .apply(
            &[
                put("ruleset", "shop", "broken"),
                Change::DeleteObject {
                    kind: "tier".into(),
                    name: "app".into(),
                },
                put("ip_list", "new", "x"),
                put_workload("web-1", "{\"v\":2}"),
            ],
            &alice(),
        )
        .unwrap();
    store.provision("bad", &alice()).unwrap();

    let bob = ctx("bob", T0 + 50, "draft.revert");
    let e = store.revert_draft_to(1, &bob).unwrap();
    let got: Vec<_> = e
        .iter()
        .map(|e| {
            (
                e.target.as_str(),
                e.before.as_deref(),
                e.after.as_deref().map(|a| a.len()),
            )
        })
        .collect();
    assert_eq!(got[0].0, "version/1");
    assert_eq!(
        &got[1..],
        [
            ("ip_list/new", Some("x"), None),
            ("ruleset/shop", Some("broken"), Some(2)),
            ("tier/app", None, Some(2)),
        ]
    );
    let v1 = store.version(1).unwrap().unwrap();
    assert_eq!(texts(&store.draft_objects().unwrap()), texts(&v1.objects));
    // Reverted objects are edits by the reverter.
    let shop = store.draft_object("ruleset", "shop").unwrap().unwrap();
    assert_eq!(
        (shop.updated_ms, shop.updated_by.as_str()),
        (T0 + 50, "bob")
    );
    // Workloads are untouched, and no version was made.
    assert_eq!(store.workload("web-1").unwrap().unwrap().json, "{\"v\":2}");
    assert_eq!(store.versions().unwrap().len(), 2);

    // Reverting to what the draft already is records the revert only.
    let e = store.revert_draft_to(1, &bob).unwrap();
    assert_eq!(e.len(), 1);

    let n = store.audit(0, 1000).unwrap().len();
    assert!(matches!(
        store.revert_draft_to(3, &bob).unwrap_err(),
        StoreError::NotFound { .. }
    ));
    assert_eq!(store.audit(0, 1000).unwrap().len(), n);
}

#[test]
fn tokens_are_found_by_hash_and_revoked() {
    let mut store = open();
    let admin = ctx("admin", T0, "token.create");
    let t1 = store.create_token(token("ci", 1), &admin).unwrap();
    let t2 = store
        .create_token(
            NewToken {
                scope: None,
                expires_ms: None,
                ..token("ops", 2)
            },
            &admin,
        )
        .unwrap();
    assert_eq!(t1.id, 1);
    assert_eq!(t2.id, 2);
    assert_eq!(t1.name, "ci");
    assert_eq!(t1.role, "operator");
    assert_eq!(t1.scope.as_deref(), Some("app=shop"));
    assert_eq!(t1.created_ms, T0);
    assert_eq!(t1.created_by, "admin");
    assert_eq!(t1.expires_ms, Some(T0 + 86_400_000));
    assert_eq!((t1.revoked_ms, t1.last_used_ms), (None, None));
    assert_eq!(t2.scope, None);

    assert_eq!(store.token_by_hash(&[1; 32]).unwrap(), Some(t1.clone()));
    assert_eq!(store.token_by_hash(&[2; 32]).unwrap(), Some(t2.clone()));
    assert_eq!(store.token_by_hash(&[3; 32]).unwrap(), None);
    assert_eq!(store.token(1).unwrap(), Some(t1.clone()));
    assert_eq!(store.tokens().unwrap(), [t1.clone(), t2.clone()]);

    // The audit entry describes the token but never carries its hash.
    let log = store.audit(0, 10).unwrap();
    assert_eq!(log[0].target, "token/1");
    let after: serde_json::Value = serde_json::from_str(log[0].after.as_deref().unwrap()).unwrap();
    assert_eq!(after["name"], "ci");
    assert!(after.get("hash").is_none());

    // A hash is unique; an empty name or role is refused.
    let n = store.audit(0, 100).unwrap().len();
    assert!(matches!(
        store.create_token(token("again", 1), &admin).unwrap_err(),
        StoreError::Conflict { .. }
    ));
    assert!(matches!(
        store.create_token(token("", 9), &admin).unwrap_err(),
        StoreError::Invalid { .. }
    ));
    assert_eq!(store.tokens().unwrap().len(), 2);
    assert_eq!(store.audit(0, 100).unwrap().len(), n);

    // Revocation is reported by the lookup; the first revocation stands.
    let revoker = ctx("secops", T0 + 7, "token.revoke");
    assert!(store.revoke_token(1, &revoker).unwrap());
    let t = store.token_by_hash(&[1; 32]).unwrap().unwrap();
    assert_eq!(t.revoked_ms, Some(T0 + 7));
    assert_eq!(t.revoked_by.as_deref(), Some("secops"));
    let e = store.audit(0, 100).unwrap().pop().unwrap();
    assert_eq!(e.target, "token/1");
    assert!(e.before.as_deref().unwrap().contains("\"revoked_ms\":null"));
    assert!(
        e.after
            .as_deref()
            .unwrap()
            .contains(&format!("\"revoked_ms\":{}", T0 + 7))
    );
    assert!(
        !store
            .revoke_token(1, &ctx("late", T0 + 99, "token.revoke"))
            .unwrap()
    );
    assert_eq!(store.token(1).unwrap().unwrap().revoked_ms, Some(T0 + 7));
    assert_eq!(store.audit(0, 100).unwrap().len(), n + 1);
    assert!(matches!(
        store.revoke_token(99, &revoker).unwrap_err(),
        StoreError::NotFound { .. }
    ));
    assert_eq!(store.token(2).unwrap().unwrap().revoked_ms, None);
}

#[test]
fn token_use_is_recorded_coarsely_and_not_audited() {
    let mut store = open();
    let t = store.create_token(token("ci", 1), &alice()).unwrap();
    let n = store.audit(0, 100).unwrap().len();
    assert!(store.touch_token(t.id, T0 + 1_000).unwrap());
    assert_eq!(
        store.token(t.id).unwrap().unwrap().last_used_ms,
        Some(T0 + 1_000)
    );
    // Within the granularity: not rewritten.
    assert!(store.touch_token(t.id, T0 + 2_000).unwrap());
    assert_eq!(
        store.token(t.id).unwrap().unwrap().last_used_ms,
        Some(T0 + 1_000)
    );
    let later = T0 + 1_000 + TOKEN_TOUCH_GRANULARITY_MS;
    assert!(store.touch_token(t.id, later).unwrap());
    assert_eq!(
        store.token(t.id).unwrap().unwrap().last_used_ms,
        Some(later)
    );
    assert!(!store.touch_token(99, later).unwrap());
    assert_eq!(store.audit(0, 100).unwrap().len(), n);
}

#[test]
fn audit_pages_by_id_and_appends_standalone_entries() {
    let mut store = open();
    let mut ids = Vec::new();
    for i in 0..7 {
        let e = store
            .append_audit(
                &ctx("mallory", T0 + i, "auth.failure"),
                "session",
                None,
                Some("bad token"),
            )
            .unwrap();
        ids.push(e.id);
    }
    assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7]);
    let first = store.audit(0, 3).unwrap();
    assert_eq!(first.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(first[0].after.as_deref(), Some("bad token"));
    assert_eq!(first[0].target, "session");
    let next = store.audit(3, 3).unwrap();
    assert_eq!(next.iter().map(|e| e.id).collect::<Vec<_>>(), [4, 5, 6]);
    assert_eq!(store.audit(6, 100).unwrap().len(), 1);
    assert!(store.audit(7, 100).unwrap().is_empty());
    assert!(store.audit(0, 0).unwrap().is_empty());
}

#[test]
fn alerts_are_deduplicated_by_key() {
    let mut store = open();
    let (a, how) = store
        .record_alert(sighting(KEY, 3, T0 + 10, T0 + 20))
        .unwrap();
    assert_eq!(how, AlertRecorded::New);
    assert_eq!(a.id, 1);
    assert_eq!(a.key, KEY);
    assert_eq!(a.state, AlertState::Open);
    assert_eq!(
        (a.count, a.first_seen_ms, a.last_seen_ms),
        (3, T0 + 10, T0 + 20)
    );

    let mut later = sighting(KEY, 2, T0, T0 + 15);
    later.severity = "high".into();
    later.title = "renamed".into();
    let (b, how) = store.record_alert(later).unwrap();
    assert_eq!(how, AlertRecorded::Repeated);
    assert_eq!(b.id, a.id);
    assert_eq!((b.count, b.first_seen_ms, b.last_seen_ms), (5, T0, T0 + 20));
    assert_eq!((b.severity.as_str(), b.title.as_str()), ("high", "renamed"));
    assert_eq!(b.details_json, "{\"count\":2}");

    let (c, how) = store.record_alert(sighting("other", 1, T0, T0)).unwrap();
    assert_eq!((c.id, how), (2, AlertRecorded::New));
    assert_eq!(store.alert(1).unwrap(), Some(b));
    assert_eq!(store.alert(3).unwrap(), None);

    // Counts saturate.
    let (d, _) = store
        .record_alert(sighting(KEY, u64::MAX, T0, T0 + 20))
        .unwrap();
    assert_eq!(d.count, i64::MAX as u64);
    // Recording alerts is not an audited action.
    assert!(store.audit(0, 10).unwrap().is_empty());
}

#[test]
fn a_batch_of_alerts_is_one_transaction_in_order() {
    let mut store = open();
    let out = store
        .record_alerts(vec![
            sighting(KEY, 1, T0, T0),
            sighting("other", 2, T0, T0),
            sighting(KEY, 3, T0 + 1, T0 + 5),
        ])
        .unwrap();
    let how: Vec<AlertRecorded> = out.iter().map(|(_, h)| *h).collect();
    assert_eq!(
        how,
        [AlertRecorded::New, AlertRecorded::New, AlertRecorded::Repeated]
    );
    assert_eq!(out[2].0.count, 4);
    // One bad sighting refuses the whole batch.
    assert!(matches!(
        store
            .record_alerts(vec![sighting("third", 1, T0, T0), sighting("", 1, T0, T0)])
            .unwrap_err(),
        StoreError::Invalid { .. }
    ));
    assert_eq!(store.alerts(&AlertFilter::default()).unwrap().len(), 2);
}

#[test]
fn bad_alert_observations_are_refused() {
    let mut store = open();
    for bad in [sighting("", 1, T0, T0), sighting("k", 1, T0 + 1, T0)] {
        assert!(matches!(
            store.record_alert(bad).unwrap_err(),
            StoreError::Invalid { .. }
        ));
    }
    assert!(store.alerts(&AlertFilter::default()).unwrap().is_empty());
}

#[test]
fn alert_states_record_who_and_when_and_reopen() {
    let mut store = open();
    let (a, _) = store.record_alert(sighting(KEY, 1, T0, T0)).unwrap();

    let ack = ctx("oncall", T0 + 100, "alert.acknowledge");
    let r = store
        .set_alert_state(a.id, AlertState::Acknowledged, &ack)
        .unwrap()
        .unwrap();
    assert_eq!(r.state, AlertState::Acknowledged);
    assert_eq!(r.acknowledged_by.as_deref(), Some("oncall"));
    assert_eq!(r.acknowledged_ms, Some(T0 + 100));
    let e = store.audit(0, 10).unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(
        (
            e[0].target.as_str(),
            e[0].before.as_deref(),
            e[0].after.as_deref()
        ),
        ("alert/1", Some("open"), Some("acknowledged"))
    );
    // The same state again writes nothing.
    let same = store
        .set_alert_state(a.id, AlertState::Acknowledged, &ctx("x", T0 + 101, "a"))
        .unwrap()
        .unwrap();
    assert_eq!(same.acknowledged_by.as_deref(), Some("oncall"));
    assert_eq!(store.audit(0, 10).unwrap().len(), 1);

    // Seen again while acknowledged: stays acknowledged.
    let (r, how) = store
        .record_alert(sighting(KEY, 1, T0 + 150, T0 + 150))
        .unwrap();
    assert_eq!(
        (how, r.state),
        (AlertRecorded::Repeated, AlertState::Acknowledged)
    );

    let res = ctx("owner", T0 + 200, "alert.resolve");
    let r = store
        .set_alert_state(a.id, AlertState::Resolved, &res)
        .unwrap()
        .unwrap();
    assert_eq!(r.state, AlertState::Resolved);
    assert_eq!(r.resolved_by.as_deref(), Some("owner"));
    assert_eq!(r.resolved_ms, Some(T0 + 200));
    assert_eq!(r.acknowledged_by.as_deref(), Some("oncall"), "history kept");

    // A late report of traffic from before the resolution does not reopen it.
    let (r, how) = store
        .record_alert(sighting(KEY, 4, T0 + 120, T0 + 200))
        .unwrap();
    assert_eq!(
        (how, r.state),
        (AlertRecorded::Repeated, AlertState::Resolved)
    );
    assert_eq!(r.count, 6);

    // Traffic after the resolution does, and clears ack and resolution.
    let (r, how) = store
        .record_alert(sighting(KEY, 1, T0 + 201, T0 + 300))
        .unwrap();
    assert_eq!((how, r.state), (AlertRecorded::Reopened, AlertState::Open));
    assert_eq!(r.count, 7);
    assert_eq!(r.last_seen_ms, T0 + 300);
    assert_eq!((r.acknowledged_by, r.acknowledged_ms), (None, None));
    assert_eq!((r.resolved_by, r.resolved_ms), (None, None));

    // Manual transitions: resolved → open by hand, acknowledged → open.
    store
        .set_alert_state(a.id, AlertState::Resolved, &res)
        .unwrap();
    let r = store
        .set_alert_state(
            a.id,
            AlertState::Open,
            &ctx("owner", T0 + 400, "alert.reopen"),
        )
        .unwrap()
        .unwrap();
    assert_eq!((r.state, r.resolved_ms), (AlertState::Open, None));
    let e = store.audit(0, 100).unwrap();
    let states: Vec<_> = e
        .iter()
        .map(|e| (e.before.as_deref().unwrap(), e.after.as_deref().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("open", "acknowledged"),
            ("acknowledged", "resolved"),
            ("open", "resolved"),
            ("resolved", "open"),
        ]
    );

    // No such alert.
    assert_eq!(
        store
            .set_alert_state(99, AlertState::Resolved, &res)
            .unwrap(),
        None
    );
    assert_eq!(store.audit(0, 100).unwrap().len(), 4);
}

#[test]
fn alerts_filter_and_page_newest_first() {
    let mut store = open();
    for i in 0..10_i64 {
        let mut s = sighting(&format!("k{i}"), 1, T0 + i, T0 + i);
        if i % 2 == 0 {
            s.kind = "tamper".into();
            s.severity = "high".into();
        }
        store.record_alert(s).unwrap();
    }
    store
        .set_alert_state(3, AlertState::Acknowledged, &alice())
        .unwrap();
    store
        .set_alert_state(4, AlertState::Resolved, &alice())
        .unwrap();
    let keys = |f: AlertFilter| -> Vec<String> {
        store
            .alerts(&f)
            .unwrap()
            .into_iter()
            .map(|a| a.key)
            .collect()
    };
    assert_eq!(
        keys(AlertFilter::default()),
        ["k9", "k8", "k7", "k6", "k5", "k4", "k3", "k2", "k1", "k0"]
    );
    assert_eq!(
        keys(AlertFilter {
            limit: 3,
            offset: 2,
            ..Default::default()
        }),
        ["k7", "k6", "k5"]
    );
    assert_eq!(
        keys(AlertFilter {
            kind: Some("tamper".into()),
            ..Default::default()
        }),
        ["k8", "k6", "k4", "k2", "k0"]
    );
    assert_eq!(
        keys(AlertFilter {
            severity: Some("medium".into()),
            since_ms: Some(T0 + 5),
            ..Default::default()
        }),
        ["k9", "k7", "k5"]
    );
    assert_eq!(
        keys(AlertFilter {
            state: Some(AlertState::Acknowledged),
            ..Default::default()
        }),
        ["k2"]
    );
    assert_eq!(
        keys(AlertFilter {
            state: Some(AlertState::Open),
            kind: Some("tamper".into()),
            ..Default::default()
        }),
        ["k8", "k6", "k4", "k0"]
    );
    assert_eq!(
        keys(AlertFilter {
            state: Some(AlertState::Resolved),
            ..Default::default()
        }),
        ["k3"]
    );
    assert!(
        keys(AlertFilter {
            since_ms: Some(T0 + 10),
            ..Default::default()
        })
        .is_empty()
    );
    assert_eq!(
        "acknowledged".parse::<AlertState>().unwrap(),
        AlertState::Acknowledged
    );
    assert!("closed".parse::<AlertState>().is_err());
    assert_eq!(AlertState::Resolved.to_string(), "resolved");
}

#[test]
fn replace_draft_in_the_store_matches_diff() {
    // One store for every case: each case replaces the whole draft twice, so what an
    // earlier case left does not matter.
    let store = std::cell::RefCell::new(open());
    let to_draft = |objects: &[StoredObject]| Change::ReplaceDraft {
        objects: objects
            .iter()
            .map(|o| DraftObject {
                kind: o.kind.clone(),
                name: o.name.clone(),
                yaml: o.yaml.clone(),
            })
            .collect(),
    };
    let config = ProptestConfig {
        cases: PROPTEST_CASES,
        ..ProptestConfig::default()
    };
    proptest!(config, |(a in objects_strategy(), b in objects_strategy())| {
        let mut store = store.borrow_mut();
        store.apply(&[to_draft(&a)], &alice()).unwrap();
        let entries = store.apply(&[to_draft(&b)], &alice()).unwrap();
        prop_assert_eq!(as_map(&store.draft_objects().unwrap()), as_map(&b));
        let d = control::diff(&a, &b);
        if d.is_empty() {
            prop_assert_eq!(entries.len(), 1);
            prop_assert_eq!(entries[0].target.as_str(), "draft");
        } else {
            let got: Vec<_> = entries
                .iter()
                .map(|e| (e.target.clone(), e.before.clone(), e.after.clone()))
                .collect();
            let want: Vec<_> = d
                .iter()
                .map(|e| (format!("{}/{}", e.kind, e.name), e.before.clone(), e.after.clone()))
                .collect();
            prop_assert_eq!(got, want);
        }
    });
}

#[test]
fn versions_and_their_contents_refuse_update_and_delete_in_sql() {
    let db = fresh();
    let mut store = db.open();
    store
        .apply(
            &[put("ruleset", "shop", "v1"), put_workload("web-1", "{}")],
            &alice(),
        )
        .unwrap();
    store.provision("first", &alice()).unwrap();
    let before = store.version(1).unwrap().unwrap();
    let mut statements = vec![
        "UPDATE version SET comment = 'rewritten'",
        "DELETE FROM version",
        "UPDATE version_object SET content = content",
        "DELETE FROM version_object",
        "UPDATE version_workload SET updated_by = 'x'",
        "DELETE FROM version_workload",
        "UPDATE content SET text = 'v666'",
        "DELETE FROM content",
    ];
    if db.is_postgres() {
        statements.extend([
            "TRUNCATE version CASCADE",
            "TRUNCATE version_object",
            "TRUNCATE version_workload",
            "TRUNCATE content CASCADE",
            "INSERT INTO version (id, comment, author, created_ms, objects, workloads)
                VALUES (1, 'x', 'x', 0, 0, 0)
                ON CONFLICT (id) DO UPDATE SET comment = 'x'",
        ]);
    } else {
        statements.extend([
            "INSERT OR REPLACE INTO version VALUES (1, 'x', 'x', 0, 0, 0)",
            "INSERT OR REPLACE INTO version_object
                SELECT version, kind, name, content, 0, 'x' FROM version_object",
            "INSERT OR REPLACE INTO content (id, hash, text) SELECT id, 0, 'x' FROM content",
        ]);
    }
    for sql in statements {
        let err = db.exec(sql).unwrap_err();
        assert!(
            err.contains("provisioned versions are immutable"),
            "{sql}: {err}"
        );
    }
    assert_eq!(store.version(1).unwrap().unwrap(), before);
}

#[test]
fn version_contents_are_stored_once() {
    let db = fresh();
    let mut store = db.open();
    let changes: Vec<Change> = (0..20)
        .map(|i| put_workload(&format!("w{i}"), &format!("{{\"i\":{i}}}")))
        .chain([
            put("ruleset", "r", "same text"),
            put("tier", "t", "same text"),
        ])
        .collect();
    store.apply(&changes, &alice()).unwrap();
    for i in 0..5 {
        store.provision(&format!("v{i}"), &alice()).unwrap();
    }
    let contents = db.query_i64("SELECT count(*) FROM content");
    assert_eq!(contents, 21, "20 workload texts and one shared object text");
    for id in 1..=5 {
        assert_eq!(store.version(id).unwrap().unwrap().workloads.len(), 20);
    }
}

#[test]
fn the_audit_log_refuses_update_and_delete_in_sql() {
    let db = fresh();
    let mut store = db.open();
    store
        .apply(
            &[put("ruleset", "a", "1"), put("ruleset", "b", "1")],
            &alice(),
        )
        .unwrap();
    let before = store.audit(0, 100).unwrap();
    let mut statements = vec![
        "UPDATE audit SET actor = 'nobody'",
        "UPDATE audit SET after = NULL WHERE id = 1",
        "DELETE FROM audit",
        "DELETE FROM audit WHERE id = 2",
    ];
    if db.is_postgres() {
        statements.extend([
            "TRUNCATE audit",
            "INSERT INTO audit (id, at_ms, actor, source, action, target)
                OVERRIDING SYSTEM VALUE VALUES (1, 0, 'x', 'x', 'x', 'x')
                ON CONFLICT (id) DO UPDATE SET actor = 'x'",
        ]);
    } else {
        statements.extend([
            "INSERT OR REPLACE INTO audit (id, at_ms, actor, source, action, target)
                VALUES (1, 0, 'x', 'x', 'x', 'x')",
            "INSERT INTO audit (id, at_ms, actor, source, action, target)
                VALUES (1, 0, 'x', 'x', 'x', 'x')
                ON CONFLICT (id) DO UPDATE SET actor = 'x'",
        ]);
    }
    for sql in statements {
        let err = db.exec(sql).unwrap_err();
        assert!(err.contains("the audit log is append-only"), "{sql}: {err}");
    }
    // Appending through SQL is allowed: the log is append-only, not read-only.
    db.exec(
        "INSERT INTO audit (at_ms, actor, source, action, target) VALUES (0, 'x', 'x', 'x', 'x')",
    )
    .unwrap();
    let after = store.audit(0, 100).unwrap();
    assert_eq!(&after[..2], &before[..]);
    assert_eq!(after.len(), 3);
}

#[test]
fn a_failing_write_leaves_no_audit_entry() {
    let db = fresh();
    let mut store = db.open();
    store.apply(&[put("ruleset", "a", "1")], &alice()).unwrap();
    // Make every draft write fail inside SQL, after the first change's audit entry.
    db.exec(if db.is_postgres() {
        "CREATE FUNCTION fail_tier() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'injected failure'; END $$;
         CREATE TRIGGER fail_tier BEFORE INSERT ON draft_object
            FOR EACH ROW WHEN (NEW.kind = 'tier') EXECUTE FUNCTION fail_tier();"
    } else {
        "CREATE TRIGGER fail_tier BEFORE INSERT ON draft_object WHEN NEW.kind = 'tier'
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
    })
    .unwrap();
    let before = everything_in(&store);
    let err = store
        .apply(&[put("ruleset", "b", "1"), put("tier", "t", "1")], &alice())
        .unwrap_err();
    assert!(
        format!("{err} {:?}", std::error::Error::source(&err)).contains("injected failure"),
        "{err:?}"
    );
    assert_eq!(everything_in(&store), before);
}

#[test]
fn a_database_keeps_everything_across_reopen() {
    let db = fresh();
    let mut store = db.open();
    assert_eq!(store.schema_version().unwrap(), CONTROL_SCHEMA_VERSION);
    store
        .apply(
            &[put("ruleset", "a", "1"), put_workload("w", "{}")],
            &alice(),
        )
        .unwrap();
    store.provision("v", &alice()).unwrap();
    store.create_token(token("ci", 1), &alice()).unwrap();
    store.record_alert(sighting(KEY, 1, T0, T0)).unwrap();
    let snapshot = |s: &ControlStore| {
        (
            everything_in(s),
            s.versions().unwrap(),
            s.latest_version().unwrap(),
            s.tokens().unwrap(),
            s.alerts(&AlertFilter::default()).unwrap(),
        )
    };
    let before = snapshot(&store);
    drop(store);
    let store = db.open();
    assert_eq!(snapshot(&store), before);
    assert_eq!(store.schema_version().unwrap(), CONTROL_SCHEMA_VERSION);
}

#[test]
fn a_newer_control_schema_is_refused() {
    let db = fresh();
    drop(db.open());
    db.exec("UPDATE control_schema_version SET version = 99")
        .unwrap();
    let err = db.try_open().unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, supported } if supported == CONTROL_SCHEMA_VERSION),
        "{err}"
    );
}
