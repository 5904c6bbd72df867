// Pairing-profile and agent tests run against every backend: included by tests/agents.rs
// once per backend, in a module that defines `open()` and `fresh()`.

#[test]
fn pairing_profiles_round_trip_audited_without_the_hash() {
    let mut s = open();
    let p = s
        .create_pairing_profile(
            &profile("web", Some(3), Some(5_000)),
            &KEY,
            &ctx("create", 10),
        )
        .unwrap();
    assert_eq!(p.name, "web");
    assert_eq!(p.labels.to_string(), "app=shop,env=prod");
    assert_eq!(p.mode, EnforcementMode::Monitor);
    assert_eq!(
        (p.max_uses, p.uses, p.expires_at_ms),
        (Some(3), 0, Some(5_000))
    );
    assert_eq!((p.created_at_ms, p.created_by.as_str()), (10, "alice"));
    assert!(!p.revoked);
    assert_eq!(s.pairing_profile(p.id).unwrap().as_ref(), Some(&p));
    assert_eq!(s.pairing_profiles().unwrap(), vec![p.clone()]);
    assert_eq!(s.pairing_profile(p.id + 1).unwrap(), None);

    let audit = s.audit(0, 10).unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].target, format!("pairing_profile/{}", p.id));
    let after = audit[0].after.as_deref().unwrap();
    assert!(after.contains("\"web\""), "{after}");
    assert!(
        !after.contains("hash"),
        "the audit log must not hold the key hash: {after}"
    );
}

#[test]
fn a_profile_name_or_key_used_twice_is_a_conflict() {
    let mut s = open();
    s.create_pairing_profile(&profile("web", None, None), &KEY, &ctx("create", 1))
        .unwrap();
    let e = s
        .create_pairing_profile(&profile("web", None, None), &[8; 32], &ctx("create", 2))
        .unwrap_err();
    assert!(matches!(&e, StoreError::Conflict { .. }), "{e:?}");
    assert!(e.to_string().contains("\"web\" already exists"), "{e}");
    let e = s
        .create_pairing_profile(&profile("db", None, None), &KEY, &ctx("create", 3))
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict { .. }), "{e:?}");
    assert_eq!(s.pairing_profiles().unwrap().len(), 1);
    assert_eq!(s.audit(0, 10).unwrap().len(), 1);
}

#[test]
fn enrollment_counts_uses_and_stores_the_agent() {
    let mut s = open();
    let p = s
        .create_pairing_profile(&profile("web", Some(2), None), &KEY, &ctx("create", 1))
        .unwrap();
    let (a, after) = s
        .enroll_agent(&KEY, &agent("web-1", 1), 100, &ctx("enroll", 100))
        .unwrap()
        .unwrap();
    assert_eq!(after.uses, 1);
    assert_eq!(s.pairing_profile(p.id).unwrap().unwrap().uses, 1);
    assert_eq!(a.workload, "web-1");
    assert_eq!(a.pairing_profile_id, Some(p.id));
    assert_eq!((a.enrolled_at_ms, a.last_seen_ms), (100, 100));
    assert_eq!(a.host_json, r#"{"hostname":"web-1"}"#);
    assert_eq!(
        (a.applied_revision.as_ref(), a.status_json.as_ref()),
        (None, None)
    );
    assert_eq!(a.offline_since_ms, None);
    assert_eq!(s.agent(a.id).unwrap().as_ref(), Some(&a));
    assert_eq!(s.agent_by_credential(&[1; 32]).unwrap().as_ref(), Some(&a));
    assert_eq!(s.agent_by_credential(&[2; 32]).unwrap(), None);
    assert_eq!(s.agents().unwrap(), vec![a.clone()]);

    let entry = s.audit(0, 10).unwrap().pop().unwrap();
    assert_eq!(entry.target, format!("agent/{}", a.id));
    assert_eq!(entry.before, None);
    assert!(entry.after.as_deref().unwrap().contains("web-1"));
}

#[test]
fn an_unknown_key_is_refused() {
    let mut s = open();
    s.create_pairing_profile(&profile("web", None, None), &KEY, &ctx("create", 1))
        .unwrap();
    let r = s
        .enroll_agent(&[9; 32], &agent("web-1", 1), 100, &ctx("enroll", 100))
        .unwrap();
    assert_eq!(r.unwrap_err(), EnrollRefusal::UnknownKey);
    assert!(s.agents().unwrap().is_empty());
}

#[test]
fn a_revoked_profile_is_refused_and_revocation_is_audited_once() {
    let mut s = open();
    let p = s
        .create_pairing_profile(&profile("web", None, None), &KEY, &ctx("create", 1))
        .unwrap();
    assert!(s.revoke_pairing_profile(p.id, &ctx("revoke", 2)).unwrap());
    assert!(s.pairing_profile(p.id).unwrap().unwrap().revoked);
    // Again: still revoked, nothing more written.
    assert!(s.revoke_pairing_profile(p.id, &ctx("revoke", 3)).unwrap());
    assert!(
        !s.revoke_pairing_profile(p.id + 1, &ctx("revoke", 3))
            .unwrap()
    );
    let audit = s.audit(0, 10).unwrap();
    assert_eq!(audit.len(), 2);
    assert!(
        audit[1]
            .before
            .as_deref()
            .unwrap()
            .contains("\"revoked\":false")
    );
    assert!(
        audit[1]
            .after
            .as_deref()
            .unwrap()
            .contains("\"revoked\":true")
    );

    let r = s
        .enroll_agent(&KEY, &agent("web-1", 1), 100, &ctx("enroll", 100))
        .unwrap();
    assert_eq!(r.unwrap_err(), EnrollRefusal::Revoked);
    assert!(s.agents().unwrap().is_empty());
    assert_eq!(s.pairing_profile(p.id).unwrap().unwrap().uses, 0);
}

#[test]
fn an_expired_profile_is_refused_from_its_expiry_on() {
    let mut s = open();
    s.create_pairing_profile(&profile("web", None, Some(1_000)), &KEY, &ctx("create", 1))
        .unwrap();
    let r = s
        .enroll_agent(&KEY, &agent("web-1", 1), 1_000, &ctx("enroll", 1_000))
        .unwrap();
    assert_eq!(r.unwrap_err(), EnrollRefusal::Expired);
    assert!(s.agents().unwrap().is_empty());
    let r = s
        .enroll_agent(&KEY, &agent("web-1", 1), 999, &ctx("enroll", 999))
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn a_used_up_profile_is_refused() {
    let mut s = open();
    let p = s
        .create_pairing_profile(&profile("web", Some(1), None), &KEY, &ctx("create", 1))
        .unwrap();
    s.enroll_agent(&KEY, &agent("web-1", 1), 10, &ctx("enroll", 10))
        .unwrap()
        .unwrap();
    let audit_len = s.audit(0, 100).unwrap().len();
    let r = s
        .enroll_agent(&KEY, &agent("web-2", 2), 11, &ctx("enroll", 11))
        .unwrap();
    assert_eq!(r.unwrap_err(), EnrollRefusal::UsedUp);
    assert_eq!(s.agents().unwrap().len(), 1);
    assert_eq!(s.pairing_profile(p.id).unwrap().unwrap().uses, 1);
    assert_eq!(
        s.audit(0, 100).unwrap().len(),
        audit_len,
        "a refusal writes nothing"
    );
}

#[test]
fn refusals_read_clearly() {
    for (r, text) in [
        (EnrollRefusal::UnknownKey, "the pairing key is not known"),
        (EnrollRefusal::Revoked, "the pairing profile was revoked"),
        (EnrollRefusal::Expired, "the pairing profile has expired"),
        (
            EnrollRefusal::UsedUp,
            "the pairing profile has no uses left",
        ),
    ] {
        assert_eq!(r.to_string(), text);
    }
}

#[test]
fn re_enrollment_replaces_the_agent_and_its_credential() {
    let mut s = open();
    s.create_pairing_profile(&profile("web", None, None), &KEY, &ctx("create", 1))
        .unwrap();
    let (old, _) = s
        .enroll_agent(&KEY, &agent("web-1", 1), 10, &ctx("enroll", 10))
        .unwrap()
        .unwrap();
    let (other, _) = s
        .enroll_agent(&KEY, &agent("web-2", 2), 11, &ctx("enroll", 11))
        .unwrap()
        .unwrap();
    let (new, p) = s
        .enroll_agent(&KEY, &agent("web-1", 3), 20, &ctx("enroll", 20))
        .unwrap()
        .unwrap();
    assert_eq!(p.uses, 3);
    assert_ne!(new.id, old.id);
    assert_eq!(new.enrolled_at_ms, 20);
    assert_eq!(
        s.agent_by_credential(&[1; 32]).unwrap(),
        None,
        "old credential"
    );
    assert_eq!(
        s.agent_by_credential(&[3; 32]).unwrap().as_ref(),
        Some(&new)
    );
    assert_eq!(s.agent(old.id).unwrap(), None);
    assert_eq!(s.agents().unwrap(), vec![other, new.clone()]);

    let entry = s.audit(0, 100).unwrap().pop().unwrap();
    assert_eq!(entry.target, format!("agent/{}", new.id));
    assert!(
        entry
            .before
            .as_deref()
            .unwrap()
            .contains(&format!("\"id\":{}", old.id))
    );
    assert!(
        entry
            .after
            .as_deref()
            .unwrap()
            .contains(&format!("\"id\":{}", new.id))
    );
    // Another workload's credential cannot be taken over.
    let e = s
        .enroll_agent(&KEY, &agent("web-3", 2), 30, &ctx("enroll", 30))
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict { .. }), "{e:?}");
}

#[test]
fn heartbeats_update_what_is_given_and_are_not_audited() {
    let mut s = open();
    s.create_pairing_profile(&profile("web", None, None), &KEY, &ctx("create", 1))
        .unwrap();
    let (a, _) = s
        .enroll_agent(&KEY, &agent("web-1", 1), 10, &ctx("enroll", 10))
        .unwrap()
        .unwrap();
    let audit_len = s.audit(0, 100).unwrap().len();
    assert!(
        s.agent_heartbeat(a.id, 20, None, Some("rev-1"), Some(r#"{"ok":true}"#))
            .unwrap()
    );
    let b = s.agent(a.id).unwrap().unwrap();
    assert_eq!(b.last_seen_ms, 20);
    assert_eq!(b.host_json, a.host_json);
    assert_eq!(b.applied_revision.as_deref(), Some("rev-1"));
    assert_eq!(b.status_json.as_deref(), Some(r#"{"ok":true}"#));
    assert!(s.agent_heartbeat(a.id, 30, Some("{}"), None, None).unwrap());
    let c = s.agent(a.id).unwrap().unwrap();
    assert_eq!((c.last_seen_ms, c.host_json.as_str()), (30, "{}"));
    assert_eq!(c.applied_revision.as_deref(), Some("rev-1"));
    assert!(!s.agent_heartbeat(a.id + 100, 30, None, None, None).unwrap());
    assert_eq!(s.audit(0, 100).unwrap().len(), audit_len);
}

#[test]
fn going_offline_is_reported_once_until_a_heartbeat() {
    let mut s = open();
    s.create_pairing_profile(&profile("web", None, None), &KEY, &ctx("create", 1))
        .unwrap();
    let (a, _) = s
        .enroll_agent(&KEY, &agent("web-1", 1), 10, &ctx("enroll", 10))
        .unwrap()
        .unwrap();
    assert!(s.mark_agent_offline(a.id, 10).unwrap());
    assert_eq!(s.agent(a.id).unwrap().unwrap().offline_since_ms, Some(10));
    assert!(!s.mark_agent_offline(a.id, 50).unwrap(), "already offline");
    assert_eq!(s.agent(a.id).unwrap().unwrap().offline_since_ms, Some(10));
    assert!(s.agent_heartbeat(a.id, 60, None, None, None).unwrap());
    assert_eq!(s.agent(a.id).unwrap().unwrap().offline_since_ms, None);
    assert!(s.mark_agent_offline(a.id, 60).unwrap(), "offline again");
    assert!(
        !s.mark_agent_offline(a.id + 100, 60).unwrap(),
        "no such agent"
    );
}

#[test]
fn deleting_an_agent_revokes_its_credential_and_is_audited() {
    let mut s = open();
    s.create_pairing_profile(&profile("web", None, None), &KEY, &ctx("create", 1))
        .unwrap();
    let (a, _) = s
        .enroll_agent(&KEY, &agent("web-1", 1), 10, &ctx("enroll", 10))
        .unwrap()
        .unwrap();
    assert!(s.delete_agent(a.id, &ctx("delete", 20)).unwrap());
    assert_eq!(s.agent_by_credential(&[1; 32]).unwrap(), None);
    assert!(!s.delete_agent(a.id, &ctx("delete", 21)).unwrap());
    let entry = s.audit(0, 100).unwrap().pop().unwrap();
    assert_eq!(entry.target, format!("agent/{}", a.id));
    assert!(entry.before.as_deref().unwrap().contains("web-1"));
    assert_eq!(entry.after, None);
}

#[test]
fn agents_and_profiles_survive_reopening_the_database() {
    let db = fresh();
    let (p, a) = {
        let mut s = db.open();
        s.create_pairing_profile(&profile("web", Some(5), None), &KEY, &ctx("create", 1))
            .unwrap();
        let (a, p) = s
            .enroll_agent(&KEY, &agent("web-1", 1), 10, &ctx("enroll", 10))
            .unwrap()
            .unwrap();
        (p, a)
    };
    let s = db.open();
    assert_eq!(s.pairing_profiles().unwrap(), vec![p]);
    assert_eq!(s.agents().unwrap(), vec![a]);
}

#[test]
fn agents_and_pairing_profiles_are_only_written_through_the_store() {
    // The hashes are what authenticates an agent: they must be 32 bytes, unique.
    let db = fresh();
    let mut s = db.open();
    s.create_pairing_profile(&profile("web", None, None), &KEY, &ctx("create", 1))
        .unwrap();
    let short = if db.is_postgres() {
        "'\\x0102'::bytea"
    } else {
        "x'0102'"
    };
    let err = db
        .exec(&format!(
            "INSERT INTO agent (workload, credential_hash, enrolled_at_ms, last_seen_ms, host_json)
             VALUES ('w', {short}, 0, 0, '{{}}')"
        ))
        .unwrap_err();
    assert!(err.to_lowercase().contains("check"), "{err}");
    assert!(s.agents().unwrap().is_empty());
}
