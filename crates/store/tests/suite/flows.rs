// The flow store suite: included by tests/flows.rs once per backend, each of which
// defines `open()` (a new, empty store).

fn store_with(summaries: &[FlowSummary]) -> Box<dyn FlowStore> {
    let store = open();
    store.upsert(summaries).unwrap();
    store
}

fn everything(store: &dyn FlowStore) -> Vec<FlowSummary> {
    let mut all = store.query(&all_minutes()).unwrap();
    let mut hours = all_minutes();
    hours.bucket = Bucket::Hour;
    all.extend(store.query(&hours).unwrap());
    all
}

#[test]
fn every_field_round_trips() {
    let mut full = summary(0, "10.0.0.1", "10.0.0.2", 6, 5432);
    full.key.process = Some("/usr/lib/postgresql/16/bin/postgres".into());
    full.packets = u64::from(u32::MAX) + 7;
    full.bytes = i64::MAX as u64;
    full.connections = 3;
    full.first_seen_ms = T0 - 1;
    full.last_seen_ms = T0 + 59_999;
    full.reporter = Some("ipfix 192.0.2.9/0".into());
    full.src_workload = Some("web-1".into());
    full.dst_workload = Some("db-1".into());
    full.src_labels = labels("app=shop,env=prod,role=web");
    full.dst_labels = labels("app=shop,env=prod,role=db,loc=eu-west");
    full.provisioned = verdict(VerdictKind::Allowed, &["shop/web-to-db", "r \"2\", odd"]);
    full.draft = verdict(VerdictKind::Blocked, &[]);

    let mut bare = summary(1, "2001:db8::1", "2001:db8::2", 17, 53);
    bare.key.bucket = Bucket::Hour;
    bare.key.bucket_start_ms = T0 + HOUR;
    bare.packets = 0;
    bare.bytes = 0;
    bare.connections = 0;

    let mut mixed = summary(2, "::ffff:10.0.0.1", "10.0.0.1", 1, 8);
    mixed.key.process = Some(String::new());
    mixed.provisioned = verdict(VerdictKind::PotentiallyBlocked, &[]);
    mixed.draft = None;
    mixed.dst_labels = labels("app=shop");

    let store = store_with(&[full.clone(), bare.clone(), mixed.clone()]);
    assert_eq!(everything(&*store), vec![full, mixed, bare]);
}

#[test]
fn process_none_and_empty_are_different_keys() {
    let none = summary(0, "10.0.0.1", "10.0.0.2", 6, 22);
    let mut empty = none.clone();
    empty.key.process = Some(String::new());
    let mut sshd = none.clone();
    sshd.key.process = Some("sshd".into());
    let store = store_with(&[sshd.clone(), empty.clone(), none.clone()]);
    assert_eq!(everything(&*store), vec![none, empty, sshd]);
}

#[test]
fn upsert_merges_like_flow_summary_merge() {
    let mut old = summary(0, "10.0.0.1", "10.0.0.2", 6, 443);
    old.key.process = Some("nginx".into());
    old.reporter = None;
    old.src_workload = Some("old-name".into());
    old.src_labels = labels("app=a");
    old.provisioned = verdict(VerdictKind::Allowed, &["r1"]);
    old.draft = verdict(VerdictKind::Allowed, &["r1"]);

    let mut new = old.clone();
    new.packets = 5;
    new.bytes = 7;
    new.connections = 2;
    new.first_seen_ms = old.first_seen_ms - 1_000;
    new.last_seen_ms = old.last_seen_ms - 1_000;
    new.reporter = Some("agent web-1".into());
    new.src_workload = None;
    new.dst_workload = Some("db".into());
    new.src_labels = Labels::new();
    new.dst_labels = labels("app=b,env=prod");
    new.provisioned = verdict(VerdictKind::Blocked, &[]);
    new.draft = None;

    let mut third = old.clone();
    third.reporter = Some("ipfix 192.0.2.1".into());
    third.last_seen_ms = old.last_seen_ms + 10_000;

    let mut expected = old.clone();
    expected.merge(&new);
    expected.merge(&third);

    // Across transactions, and repeated keys within one.
    let store = store_with(&[old.clone()]);
    store.upsert(&[new.clone()]).unwrap();
    store.upsert(&[third.clone()]).unwrap();
    assert_eq!(everything(&*store), vec![expected.clone()]);
    let store = store_with(&[old, new, third]);
    assert_eq!(everything(&*store), vec![expected]);
}

#[test]
fn counters_saturate_at_i64_max() {
    let mut a = summary(0, "10.0.0.1", "10.0.0.2", 6, 80);
    a.bytes = u64::MAX;
    a.packets = i64::MAX as u64 - 1;
    let store = store_with(&[a.clone()]);
    store.upsert(&[a]).unwrap();
    let got = everything(&*store).remove(0);
    assert_eq!(got.bytes, i64::MAX as u64);
    assert_eq!(got.packets, i64::MAX as u64);
    assert_eq!(got.connections, 2);
}

#[test]
fn empty_batch_is_fine() {
    let store = open();
    store.upsert(&[]).unwrap();
    assert!(everything(&*store).is_empty());
}

fn tags(store: &dyn FlowStore, q: &FlowQuery, model: &[FlowSummary]) -> BTreeSet<u64> {
    let got = store.query(q).unwrap();
    assert_eq!(
        got,
        expected(model, q),
        "store and FlowQuery::matches disagree"
    );
    got.iter().map(|s| s.packets).collect()
}

#[test]
fn every_filter_includes_and_excludes() {
    let model = estate();
    let store = store_with(&model);
    let set = |t: &[u64]| t.iter().copied().collect::<BTreeSet<u64>>();
    let q = all_minutes;

    assert_eq!(tags(&*store, &q(), &model), set(&[1, 2, 3, 4, 5]));

    let mut h = q();
    h.bucket = Bucket::Hour;
    assert_eq!(tags(&*store, &h, &model), set(&[6]));

    let mut t = q();
    t.from_ms = T0 + MINUTE;
    t.to_ms = T0 + 3 * MINUTE; // half-open: minute 3 is out
    assert_eq!(tags(&*store, &t, &model), set(&[3, 4]));

    let mut w = q();
    w.workload = Some("web-1".into());
    assert_eq!(tags(&*store, &w, &model), set(&[1, 2, 5]));
    w.workload = Some("db-1".into());
    assert_eq!(tags(&*store, &w, &model), set(&[1, 3]));
    w.workload = Some("nobody".into());
    assert_eq!(tags(&*store, &w, &model), set(&[]));
    // A name that exists, but as a process rather than a workload.
    w.workload = Some("sshd".into());
    assert_eq!(tags(&*store, &w, &model), set(&[]));

    let mut l = q();
    l.labels = Some(labels("role=db"));
    assert_eq!(tags(&*store, &l, &model), set(&[1, 3, 4]));
    l.labels = Some(labels("role=db,env=prod"));
    assert_eq!(tags(&*store, &l, &model), set(&[1, 3]));
    l.labels = Some(labels("env=prod"));
    assert_eq!(tags(&*store, &l, &model), set(&[1, 2, 3, 5]));
    l.labels = Some(labels("env=staging"));
    assert_eq!(tags(&*store, &l, &model), set(&[]));
    l.labels = Some(Labels::new());
    assert_eq!(tags(&*store, &l, &model), set(&[1, 2, 3, 4, 5]));

    let mut ls = q();
    ls.src_labels = Some(labels("role=web"));
    assert_eq!(tags(&*store, &ls, &model), set(&[1, 5]));
    ls.dst_labels = Some(labels("role=db"));
    assert_eq!(tags(&*store, &ls, &model), set(&[1]));
    let mut ld = q();
    ld.dst_labels = Some(labels("role=db"));
    assert_eq!(tags(&*store, &ld, &model), set(&[1, 4]));

    let mut a = q();
    a.address = Some(ip("10.0.0.1"));
    assert_eq!(tags(&*store, &a, &model), set(&[1, 2, 5]));
    a.address = Some(ip("2001:db8::5"));
    assert_eq!(tags(&*store, &a, &model), set(&[4, 5]));
    a.address = Some(ip("::ffff:10.0.0.1"));
    assert_eq!(tags(&*store, &a, &model), set(&[]));

    let mut p = q();
    p.proto = Some(17);
    assert_eq!(tags(&*store, &p, &model), set(&[3]));
    p.proto = Some(6);
    p.port = Some(5432);
    assert_eq!(tags(&*store, &p, &model), set(&[1, 4]));
    let mut port = q();
    port.port = Some(22);
    assert_eq!(tags(&*store, &port, &model), set(&[5]));

    let mut v = q();
    v.verdict = Some(VerdictKind::Allowed);
    assert_eq!(tags(&*store, &v, &model), set(&[1, 5]));
    v.verdict = Some(VerdictKind::PotentiallyBlocked);
    assert_eq!(tags(&*store, &v, &model), set(&[2]));
    // Against provisioned only: 4's draft says blocked, 3's provisioned does.
    v.verdict = Some(VerdictKind::Blocked);
    assert_eq!(tags(&*store, &v, &model), set(&[3]));

    let mut all = q();
    all.workload = Some("web-1".into());
    all.labels = Some(labels("role=db"));
    all.address = Some(ip("10.0.0.2"));
    all.proto = Some(6);
    all.port = Some(5432);
    all.verdict = Some(VerdictKind::Allowed);
    assert_eq!(tags(&*store, &all, &model), set(&[1]));
    all.port = Some(5433);
    assert_eq!(tags(&*store, &all, &model), set(&[]));
}

#[test]
fn order_limit_and_offset() {
    let mut model = Vec::new();
    for minute in [2, 0, 1] {
        for (src, dst) in [
            ("2001:db8::1", "10.0.0.1"),
            ("10.0.0.9", "10.0.0.1"),
            ("10.0.0.10", "10.0.0.1"),
            ("10.0.0.9", "10.0.0.0"),
        ] {
            for port in [443, 80] {
                for process in [Some("b"), None, Some("a")] {
                    let mut s = summary(minute, src, dst, 6, port);
                    s.key.process = process.map(str::to_string);
                    model.push(s);
                }
            }
        }
    }
    let store = store_with(&model);
    let all = store.query(&all_minutes()).unwrap();
    let mut sorted = model.clone();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(all, sorted);
    // Spot-check that the order is the numeric one, not the text one.
    assert_eq!(all[0].key.src, ip("10.0.0.9"));
    assert_eq!(all[0].key.dst, ip("10.0.0.0"));
    assert_eq!(all[0].key.process, None);

    let mut page = all_minutes();
    page.limit = 7;
    let mut pages = Vec::new();
    for offset in (0..all.len() + 7).step_by(7) {
        page.offset = offset;
        let got = store.query(&page).unwrap();
        assert!(got.len() <= 7);
        pages.extend(got);
    }
    assert_eq!(pages, all);
    page.limit = 0;
    page.offset = 0;
    assert!(store.query(&page).unwrap().is_empty());
    let mut default = all_minutes();
    default.limit = FlowQuery::DEFAULT_LIMIT;
    assert_eq!(store.query(&default).unwrap(), all);
}

#[test]
fn expire_deletes_exactly_the_buckets_that_ended() {
    let mut model = Vec::new();
    for minute in 0..5 {
        model.push(summary(minute, "10.0.0.1", "10.0.0.2", 6, 80));
    }
    for hour in 0..3 {
        let mut s = summary(0, "10.0.0.1", "10.0.0.2", 6, 80);
        s.key.bucket = Bucket::Hour;
        s.key.bucket_start_ms = T0 + hour * HOUR;
        model.push(s);
    }
    let store = store_with(&model);

    // Minute 1 ends exactly at T0 + 2 min: gone. Minute 2 is still open then: kept.
    // Hour 0 ends at T0 + 1 h, later than the cutoff: kept.
    assert_eq!(store.expire(T0 + 2 * MINUTE).unwrap(), 2);
    let left: Vec<i64> = everything(&*store)
        .iter()
        .map(|s| s.key.bucket_start_ms - T0)
        .collect();
    assert_eq!(
        left,
        vec![2 * MINUTE, 3 * MINUTE, 4 * MINUTE, 0, HOUR, 2 * HOUR]
    );

    assert_eq!(store.expire(T0 + HOUR + 1).unwrap(), 4);
    let left: Vec<i64> = everything(&*store)
        .iter()
        .map(|s| s.key.bucket_start_ms - T0)
        .collect();
    assert_eq!(left, vec![HOUR, 2 * HOUR]);
    assert_eq!(store.expire(T0 + HOUR + 1).unwrap(), 0);

    assert_eq!(Retention::default(), Retention::DEFAULT);
    assert_eq!(Retention::DEFAULT.max_age_ms, 30 * 24 * HOUR);
    assert_eq!(Retention::DEFAULT.cutoff(T0), T0 - 30 * 24 * HOUR);
    assert_eq!(Retention::DEFAULT.cutoff(i64::MIN), i64::MIN);
}

#[test]
fn stats_count_rows_per_bucket() {
    let store = open();
    let stats = store.stats().unwrap();
    assert_eq!(stats.minute.rows, 0);
    assert_eq!(stats.minute.oldest_start_ms, None);
    store.upsert(&estate()).unwrap();
    let stats = store.stats().unwrap();
    assert_eq!(stats.get(Bucket::Minute).rows, 5);
    assert_eq!(stats.minute.oldest_start_ms, Some(T0));
    assert_eq!(stats.minute.newest_start_ms, Some(T0 + 3 * MINUTE));
    assert_eq!(stats.get(Bucket::Hour).rows, 1);
    assert_eq!(stats.hour.oldest_start_ms, Some(T0));
}

#[test]
fn seen_addresses_aggregate_both_ends() {
    let mut model = estate();
    // A second reporter and a second summary for 10.0.0.2 as a provider.
    let mut extra = summary(4, "10.0.0.3", "10.0.0.2", 6, 5432);
    extra.reporter = Some("agent db-1".into());
    extra.bytes = u64::MAX;
    extra.dst_workload = Some("db-1".into());
    model.push(extra);
    model[0].reporter = Some("ipfix 192.0.2.1".into());
    let store = store_with(&model);

    let seen = store
        .seen_addresses(Bucket::Minute, T0, T0 + 5 * MINUTE)
        .unwrap();
    let addrs: Vec<_> = seen.iter().map(|s| s.address).collect();
    assert_eq!(
        addrs,
        vec![
            ip("10.0.0.1"),
            ip("10.0.0.2"),
            ip("10.0.0.3"),
            ip("10.0.0.4"),
            ip("10.9.9.9"),
            ip("2001:db8::5")
        ]
    );
    let db = &seen[1];
    assert_eq!(db.first_seen_ms, T0 + 5_000);
    assert_eq!(db.last_seen_ms, T0 + 4 * MINUTE + 6_000);
    // Counters are stored saturated at i64::MAX; the sum goes past it without failing.
    assert_eq!(db.bytes, 1_000 + 1_000 + i64::MAX as u64);
    assert_eq!(db.connections, 3);
    assert_eq!(db.peers, 3); // 10.0.0.1, 10.9.9.9, 10.0.0.3
    assert_eq!(
        db.served,
        vec![ServedPort {
            proto: 6,
            port: 5432
        }]
    );
    assert_eq!(db.reporters, vec!["agent db-1", "ipfix 192.0.2.1"]);
    assert_eq!(db.workloads, vec!["db-1"]);

    let web = &seen[0];
    assert_eq!(
        web.served,
        vec![ServedPort {
            proto: 6,
            port: 443
        }]
    );
    assert_eq!(web.peers, 3);
    let dns = &seen[4];
    assert_eq!(
        dns.served,
        vec![ServedPort {
            proto: 17,
            port: 53
        }]
    );
    assert!(dns.workloads.is_empty(), "unknown to the inventory");
    assert!(dns.reporters.is_empty());

    // The window is half-open and per bucket width.
    let seen = store
        .seen_addresses(Bucket::Minute, T0 + 4 * MINUTE, T0 + 5 * MINUTE)
        .unwrap();
    assert_eq!(seen.len(), 2);
    let seen = store.seen_addresses(Bucket::Hour, T0, T0 + HOUR).unwrap();
    assert_eq!(seen.len(), 2);
    assert!(
        store
            .seen_addresses(Bucket::Minute, T0, T0)
            .unwrap()
            .is_empty()
    );
}


#[test]
fn address_and_workload_filters_hold_across_hours_and_before_1970() {
    // The hour index truncates toward zero: -90 min is in hour -1 but -30 min and
    // +30 min are both in hour 0. A window longer than the per-hour seek limit takes the
    // other plan. Both plans must return the same rows.
    let mut model = Vec::new();
    for (i, start) in [-90 * MINUTE, -30 * MINUTE, 30 * MINUTE, 500 * 24 * HOUR]
        .into_iter()
        .enumerate()
    {
        let mut s = summary(0, "10.0.0.1", "10.0.0.2", 6, 80);
        s.key.bucket_start_ms = start;
        s.packets = i as u64;
        s.dst_workload = Some("db".into());
        model.push(s);
        let mut other = summary(0, "10.0.0.3", "10.0.0.4", 6, 80);
        other.key.bucket_start_ms = start;
        model.push(other);
    }
    let store = store_with(&model);
    for (from, to) in [
        (i64::MIN, i64::MAX),
        (-HOUR, HOUR),
        (-90 * MINUTE, -30 * MINUTE),
        (-89 * MINUTE, 31 * MINUTE),
        (HOUR, 499 * 24 * HOUR),
    ] {
        let mut q = all_minutes();
        q.from_ms = from;
        q.to_ms = to;
        q.address = Some(ip("10.0.0.2"));
        assert_eq!(
            store.query(&q).unwrap(),
            expected(&model, &q),
            "{from}..{to}"
        );
        q.address = None;
        q.workload = Some("db".into());
        assert_eq!(
            store.query(&q).unwrap(),
            expected(&model, &q),
            "{from}..{to}"
        );
    }
    let mut q = all_minutes();
    q.address = Some(ip("10.0.0.2"));
    assert_eq!(store.query(&q).unwrap().len(), 4);
}

#[test]
fn groups_fold_a_window_and_keep_the_most_recent_under_a_limit() {
    let mut model = estate();
    // The same pair over several minutes folds into one group; an address without a
    // workload stays an end of its own.
    for m in 0..5 {
        let mut s = summary(m, "10.0.0.1", "10.0.0.2", 6, 443);
        s.src_workload = Some("web".into());
        s.dst_workload = Some("db".into());
        s.last_seen_ms += m;
        model.push(s);
    }
    let store = store_with(&model);
    let (from, to) = (T0 - HOUR, T0 + HOUR);
    let all = store
        .groups(&bulkhead_store::GroupQuery {
            bucket: Bucket::Minute,
            from_ms: from,
            to_ms: to,
            limit: usize::MAX,
        })
        .unwrap();
    assert!(!all.more);
    let want = expected_groups(&model, Bucket::Minute, from, to);
    assert!(want.iter().any(|g| g.summaries == 5 && g.src.is_none()));
    assert!(want.iter().any(|g| g.src.is_some()), "an end without a workload");
    assert_eq!(canonical(all.items.clone()), want);
    // Newest first, and a limit keeps the newest.
    let lasts: Vec<i64> = all.items.iter().map(|g| g.last_seen_ms).collect();
    assert!(lasts.windows(2).all(|w| w[0] >= w[1]), "{lasts:?}");
    let two = store
        .groups(&bulkhead_store::GroupQuery {
            bucket: Bucket::Minute,
            from_ms: from,
            to_ms: to,
            limit: 2,
        })
        .unwrap();
    assert!(two.more);
    assert_eq!(two.items.len(), 2);
    let mut newest = lasts.clone();
    newest.truncate(2);
    assert_eq!(
        two.items.iter().map(|g| g.last_seen_ms).collect::<Vec<_>>(),
        newest
    );
}

#[test]
fn conversations_fold_a_window_by_conversation_process_and_enrichment() {
    let mut model = estate();
    // One conversation over several minutes folds into one row, where a minute that
    // counted no connection weighs one; another process, or other labels, stay apart.
    for m in 0..5 {
        let mut s = summary(m, "10.0.0.1", "10.0.0.2", 6, 443);
        s.src_workload = Some("web".into());
        s.dst_workload = Some("db".into());
        s.connections = if m == 0 { 0 } else { 3 };
        s.last_seen_ms += m;
        model.push(s);
    }
    let mut nginx = summary(5, "10.0.0.1", "10.0.0.2", 6, 443);
    nginx.key.process = Some("nginx".into());
    model.push(nginx);
    let mut relabelled = summary(6, "10.0.0.1", "10.0.0.2", 6, 443);
    relabelled.src_workload = Some("web".into());
    relabelled.src_labels = labels("app=shop,role=web");
    model.push(relabelled);
    let store = store_with(&model);
    let window = |bucket, limit| bulkhead_store::GroupQuery {
        bucket,
        from_ms: T0 - HOUR,
        to_ms: T0 + HOUR,
        limit,
    };
    let all = store
        .conversations(&window(Bucket::Minute, usize::MAX))
        .unwrap();
    assert!(!all.more);
    let want = expected_conversations(&model, Bucket::Minute, T0 - HOUR, T0 + HOUR);
    let folded = want.iter().find(|c| c.summaries == 5).unwrap();
    assert_eq!((folded.connections, folded.observations), (12, 13));
    assert_eq!(
        want.iter()
            .filter(|c| c.src == ip("10.0.0.1") && c.port == 443)
            .count(),
        3
    );
    assert_eq!(canonical_conversations(all.items.clone()), want);
    // Newest first, and a limit keeps the newest and says so.
    let lasts: Vec<i64> = all.items.iter().map(|c| c.last_seen_ms).collect();
    assert!(lasts.windows(2).all(|w| w[0] >= w[1]), "{lasts:?}");
    let two = store.conversations(&window(Bucket::Minute, 2)).unwrap();
    assert!(two.more);
    assert_eq!(
        two.items.iter().map(|c| c.last_seen_ms).collect::<Vec<_>>(),
        lasts[..2]
    );
    // Widths stay apart; an empty window is empty.
    let hours = store.conversations(&window(Bucket::Hour, 10)).unwrap();
    assert_eq!(
        hours.items,
        expected_conversations(&model, Bucket::Hour, T0 - HOUR, T0 + HOUR)
    );
    assert_eq!(hours.items.len(), 1);
    let mut empty = window(Bucket::Minute, 10);
    empty.to_ms = empty.from_ms;
    assert!(store.conversations(&empty).unwrap().items.is_empty());
}

#[test]
fn a_batch_of_a_stream_is_stored_once() {
    use bulkhead_store::{BatchMark, BatchWrite};
    let store = open();
    let mark = |source, stream, seq| BatchMark {
        source,
        stream,
        seq,
    };
    let one = summary(0, "10.0.0.1", "10.0.0.2", 6, 443);
    assert_eq!(store.batch_mark("agent 1", "s").unwrap(), None);
    assert_eq!(
        store
            .upsert_batch(mark("agent 1", "s", 1), T0, std::slice::from_ref(&one))
            .unwrap(),
        BatchWrite::Stored
    );
    // Re-sent: not stored again, and the answer says how far the stream is.
    assert_eq!(
        store
            .upsert_batch(mark("agent 1", "s", 1), T0, std::slice::from_ref(&one))
            .unwrap(),
        BatchWrite::Repeated { highest: 1 }
    );
    assert_eq!(everything(&*store), vec![one.clone()]);
    // A gap is fine (batches dropped by the sender); anything at or below the highest
    // is a repeat, even a number never seen.
    assert_eq!(
        store
            .upsert_batch(mark("agent 1", "s", 5), T0, std::slice::from_ref(&one))
            .unwrap(),
        BatchWrite::Stored
    );
    assert_eq!(
        store
            .upsert_batch(mark("agent 1", "s", 3), T0, std::slice::from_ref(&one))
            .unwrap(),
        BatchWrite::Repeated { highest: 5 }
    );
    // Other streams, and the same stream name of another source, are their own.
    for (source, stream) in [("agent 1", "t"), ("agent 2", "s")] {
        assert_eq!(
            store
                .upsert_batch(mark(source, stream, 1), T0, std::slice::from_ref(&one))
                .unwrap(),
            BatchWrite::Stored
        );
    }
    // An empty batch moves the mark too.
    assert_eq!(
        store.upsert_batch(mark("agent 1", "s", 6), T0, &[]).unwrap(),
        BatchWrite::Stored
    );
    assert_eq!(store.batch_mark("agent 1", "s").unwrap(), Some(6));
    assert_eq!(store.batch_mark("agent 1", "t").unwrap(), Some(1));
    let stored = everything(&*store);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].connections, 4 * one.connections, "{stored:?}");
    assert_eq!(stored[0].packets, 4 * one.packets);
}

#[test]
fn streams_not_written_for_a_while_are_forgotten() {
    use bulkhead_store::BatchMark;
    let store = open();
    let mark = |stream| BatchMark {
        source: "agent 1",
        stream,
        seq: 1,
    };
    store.upsert_batch(mark("old"), T0, &[]).unwrap();
    store.upsert_batch(mark("new"), T0 + HOUR, &[]).unwrap();
    // A stream written before and after the cutoff is still being written: kept.
    store.upsert_batch(mark("busy"), T0, &[]).unwrap();
    store
        .upsert_batch(
            BatchMark {
                seq: 2,
                ..mark("busy")
            },
            T0 + HOUR,
            &[],
        )
        .unwrap();
    assert_eq!(store.forget_batches(T0 + 1).unwrap(), 1);
    assert_eq!(store.batch_mark("agent 1", "old").unwrap(), None);
    assert_eq!(store.batch_mark("agent 1", "new").unwrap(), Some(1));
    assert_eq!(store.batch_mark("agent 1", "busy").unwrap(), Some(2));
    assert_eq!(store.forget_batches(T0 + 1).unwrap(), 0);
}
