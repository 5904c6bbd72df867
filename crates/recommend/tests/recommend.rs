//! Recommendation on a small hand-made estate: the shape of the proposal, the widening
//! report, and that the output is canonical, checked policy-as-code.

mod common;

use bulkhead_model::Labels;
use bulkhead_policy::{CompiledPolicy, ConnKey, Policy, format};
use bulkhead_recommend::{
    CoverageOptions, Granularity, Options, WideningKind, coverage, recommend,
};
use common::*;

const TCP: u8 = 6;
const UDP: u8 = 17;

fn estate() -> (bulkhead_model::Inventory, Vec<bulkhead_model::FlowSummary>) {
    let mut ws = vec![
        workload("dns-1", "10.0.0.53", "app=infra env=shared role=dns", true),
        workload(
            "mon-1",
            "10.0.0.90",
            "app=infra env=shared role=monitoring",
            true,
        ),
        workload("jump-1", "10.0.9.10", "role=jump", true),
        workload("mystery", "10.0.7.7", "", true),
    ];
    for (i, app) in ["shop", "payments", "hr", "crm"].iter().enumerate() {
        for (j, role) in ["web", "app", "db"].iter().enumerate() {
            for n in 0..2 {
                ws.push(workload(
                    &format!("{app}-{role}-p{n}"),
                    &format!("10.{}.{}.{}", 16 + i, j, 10 + n),
                    &format!("app={app} env=prod role={role}"),
                    true,
                ));
            }
        }
    }
    let inv = inventory(ws);
    let a = |n: &str| inv.by_name(n).unwrap().addresses[0];
    let mut s = Vec::new();
    for app in ["shop", "payments", "hr", "crm"] {
        for n in 0..2 {
            for m in 0..2 {
                s.push(summary(
                    a(&format!("{app}-web-p{n}")),
                    a(&format!("{app}-app-p{m}")),
                    TCP,
                    8080,
                    10,
                ));
            }
            // Only app-p0 talks to the db: the role rule covers app-p1 too.
            s.push(summary(
                a(&format!("{app}-app-p0")),
                a(&format!("{app}-db-p{n}")),
                TCP,
                5432,
                5,
            ));
            s.push(summary(
                a(&format!("{app}-web-p{n}")),
                a("dns-1"),
                UDP,
                53,
                3,
            ));
            s.push(summary(
                a("mon-1"),
                a(&format!("{app}-db-p{n}")),
                TCP,
                9100,
                2,
            ));
        }
    }
    // shop calls payments.
    s.push(summary(
        a("shop-app-p0"),
        a("payments-app-p0"),
        TCP,
        8443,
        7,
    ));
    // Partners: 14 addresses of a /28.
    for h in 17..=30 {
        s.push(summary(
            a("payments-app-p1"),
            ip(&format!("198.51.100.{h}")),
            TCP,
            443,
            1,
        ));
    }
    // Many internet clients reach the shop's web servers.
    for h in 1..=40 {
        s.push(summary(
            ip(&format!("203.0.113.{h}")),
            a("shop-web-p0"),
            TCP,
            443,
            1,
        ));
    }
    // An exporter on the hr db answers on a cluster of ports.
    for p in [9000, 9001, 9003, 9005] {
        s.push(summary(a("hr-app-p0"), a("hr-db-p0"), TCP, p, 1));
    }
    // The jump host has no app: its rule cannot live under a scope.
    s.push(summary(a("jump-1"), a("crm-db-p0"), TCP, 22, 1));
    // A managed workload without labels.
    s.push(summary(a("mystery"), a("crm-web-p0"), TCP, 80, 1));
    // Rare: below a minimum of 2.
    s.push(summary(a("crm-web-p1"), a("hr-web-p0"), TCP, 81, 1));
    (inv, s)
}

fn check(files: &[(String, String)], extra: &[(String, String)]) -> Policy {
    for (name, text) in files {
        let f = format::format_file(name, text).expect("parses");
        assert_eq!(&f, text, "{name} is not canonical");
    }
    let mut all = files.to_vec();
    all.extend(extra.iter().cloned());
    Policy::from_sources(&all).unwrap_or_else(|e| panic!("{e}\n{all:#?}"))
}

#[test]
fn proposes_scoped_shared_and_external_rules_and_lists_every_widening() {
    let (inv, s) = estate();
    let r = recommend(&s, &inv, None, &Options::default());
    let files = r.rendered_files();
    let text: String = files.iter().map(|(n, t)| format!("## {n}\n{t}")).collect();
    let policy = check(&files, &[]);
    let compiled = CompiledPolicy::compile(&inv, &policy);

    // Intra-app by role, in the app's scope.
    let shop = policy
        .rulesets
        .iter()
        .find(|r| r.name == "shop-prod")
        .expect("shop-prod\n{text}");
    assert_eq!(shop.scope, Labels::parse_list("app=shop,env=prod").unwrap());
    let web_app = shop
        .rules
        .iter()
        .find(|r| r.id == "shop-prod-web-to-app")
        .expect(&text);
    assert_eq!(web_app.from[0].to_string(), "role=web");
    assert_eq!(web_app.to[0].to_string(), "role=app");
    assert_eq!(web_app.services[0].to_string(), "tcp/8080");
    // Inter-app: in the provider's ruleset, the consumer spelt out.
    let pay = policy
        .rulesets
        .iter()
        .find(|r| r.name == "payments-prod")
        .expect(&text);
    assert!(
        pay.rules
            .iter()
            .any(|r| r.from[0].to_string() == "app=shop role=app"
                && r.services[0].to_string() == "tcp/8443"),
        "{text}"
    );
    // Shared services written once, for every workload.
    let shared = policy
        .rulesets
        .iter()
        .find(|r| r.name == "shared-services")
        .expect(&text);
    assert_eq!(shared.tier, "shared-services");
    assert!(
        shared
            .rules
            .iter()
            .any(|r| r.from[0].to_string() == "group:env-prod"
                && r.to[0].to_string() == "app=infra env=shared role=dns"
                && r.services[0].to_string() == "dns"),
        "{text}"
    );
    assert!(
        shared.rules.iter().any(|r| r.from[0].to_string()
            == "app=infra env=shared role=monitoring"
            && r.to[0].to_string() == "group:env-prod"),
        "{text}"
    );
    assert_eq!(policy.services["dns"].ports[0].to_string(), "udp/53");
    // The partner /28 and the internet.
    assert!(
        policy.ip_lists.values().any(|l| l
            .include
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            == ["198.51.100.16/28"]),
        "{text}"
    );
    assert!(policy.ip_lists.contains_key("internet"), "{text}");
    // A port range.
    assert!(text.contains("tcp/9000-9005"), "{text}");
    // The jump host's rule cannot sit under crm's scope.
    assert!(
        policy.rulesets.iter().any(|r| r.name == "cross-scope"
            && r.rules.iter().any(|x| x.from[0].to_string() == "role=jump")),
        "{text}"
    );
    // The unlabeled managed workload is named by address, and a note says so.
    assert!(
        r.notes.iter().any(|n| n.contains("mystery")),
        "{:?}",
        r.notes
    );

    let kinds = |k: WideningKind| r.widenings.iter().filter(|w| w.kind == k).count();
    assert!(kinds(WideningKind::Cidr) >= 1, "{}", r.widening_report());
    assert!(
        kinds(WideningKind::Internet) == 1,
        "{}",
        r.widening_report()
    );
    assert!(
        kinds(WideningKind::PortRange) == 1,
        "{}",
        r.widening_report()
    );
    // app-p1 never reached the db, yet role=app covers it.
    assert!(
        r.widenings.iter().any(|w| w.kind == WideningKind::Workloads
            && w.object == "shop-prod/shop-prod-app-to-db"
            && w.field == "from"
            && w.allowed.contains("shop-app-p1")),
        "{}",
        r.widening_report()
    );
    // Shared services name their consumers by environment, as a label group; it covers
    // prod workloads never seen asking.
    let g = &policy.label_groups["env-prod"];
    assert_eq!(g.labels["env"].iter().collect::<Vec<_>>(), ["prod"]);
    assert!(
        r.widenings.iter().any(|w| w.kind == WideningKind::Workloads
            && w.object.ends_with("-to-infra-shared-dns")
            && w.allowed.contains("group:env-prod (env prod)")
            && w.allowed.contains("shop-db-p0")),
        "{}",
        r.widening_report()
    );

    // Everything observed is allowed; coverage agrees.
    for x in &s {
        let v = compiled.verdict(
            &ConnKey {
                src: x.key.src,
                dst: x.key.dst,
                proto: x.key.proto,
                port: x.key.port,
            },
            None,
        );
        assert_eq!(
            v.decision,
            bulkhead_model::Decision::Allow,
            "{:?}\n{text}",
            x.key
        );
    }
    let c = coverage(&compiled, &policy, &inv, &s, &CoverageOptions::default());
    assert_eq!(c.connections_allowed, c.connections);
    assert!(c.would_block.is_empty());
    assert!(c.unused_rules.is_empty(), "{:?}", c.unused_rules);
    assert!(c.over_broad.is_empty(), "{:?}", c.over_broad);
    assert_eq!(r.stats.recommended, s.len() as u64);
}

#[test]
fn knobs_min_observations_exclude_scope_and_granularity() {
    let (inv, s) = estate();
    let rare = (ip("10.19.0.11"), ip("10.18.0.10"));
    let opts = Options {
        min_observations: 2,
        ..Options::default()
    };
    let r = recommend(&s, &inv, None, &opts);
    let policy = check(&r.rendered_files(), &[]);
    let compiled = CompiledPolicy::compile(&inv, &policy);
    let v = compiled.verdict(
        &ConnKey {
            src: rare.0,
            dst: rare.1,
            proto: TCP,
            port: 81,
        },
        None,
    );
    assert_eq!(v.decision, bulkhead_model::Decision::Deny);
    assert!(r.stats.below_min_observations > 0);

    let opts = Options {
        exclude: vec![Labels::parse_list("app=hr").unwrap()],
        ..Options::default()
    };
    let r = recommend(&s, &inv, None, &opts);
    assert!(r.stats.excluded > 0);
    assert!(
        !r.rendered_files()
            .iter()
            .any(|(_, t)| t.contains("app: hr"))
    );

    let opts = Options {
        scope: Some(Labels::parse_list("app=payments").unwrap()),
        ..Options::default()
    };
    let r = recommend(&s, &inv, None, &opts);
    let names: Vec<&str> = r.files.iter().map(|f| f.name.as_str()).collect();
    assert!(
        names.contains(&"40-payments-prod.yaml") && !names.contains(&"40-shop-prod.yaml"),
        "{names:?}"
    );
    assert!(r.stats.out_of_scope > 0);

    let opts = Options {
        granularity: Granularity::App,
        ..Options::default()
    };
    let r = recommend(&s, &inv, None, &opts);
    let policy = check(&r.rendered_files(), &[]);
    let shop = policy
        .rulesets
        .iter()
        .find(|r| r.name == "shop-prod")
        .unwrap();
    assert!(
        shop.rules
            .iter()
            .all(|r| r.from[0].to_string() == "workloads"
                || r.from[0].to_string().starts_with("iplist:"))
    );

    let opts = Options {
        granularity: Granularity::Workload,
        ..Options::default()
    };
    let r = recommend(&s, &inv, None, &opts);
    check(&r.rendered_files(), &[]);
}

#[test]
fn beside_a_current_policy_only_the_gaps_are_proposed() {
    let (inv, s) = estate();
    let current = vec![
        ("00-tiers.yaml".to_string(), "bulkhead: v1\nkind: tier\nname: guardrails\norder: 10\n---\nbulkhead: v1\nkind: tier\nname: application\norder: 30\n".to_string()),
        ("40-shop-prod.yaml".to_string(), "bulkhead: v1\nkind: ruleset\nname: shop-prod\ntier: application\nscope:\n  app: shop\n  env: prod\nrules:\n  - id: shop-prod-web-to-app\n    action: allow\n    from:\n      - role=web\n    to:\n      - role=app\n    services:\n      - tcp/8080\n".to_string()),
        ("20-guardrails.yaml".to_string(), "bulkhead: v1\nkind: ruleset\nname: guardrails\ntier: guardrails\nrules:\n  - id: no-jump-to-crm\n    action: deny\n    from:\n      - role=jump\n    to:\n      - app=crm\n    services:\n      - any\n".to_string()),
    ];
    let policy = Policy::from_sources(&current).unwrap();
    let r = recommend(&s, &inv, Some(&policy), &Options::default());
    assert_eq!(r.stats.already_allowed, 4);
    assert_eq!(r.stats.denied_by_rule, 1);
    assert!(r.notes.iter().any(|n| n.contains("no-jump-to-crm")));
    let files = r.rendered_files();
    // Names and ids do not collide with the current policy; together they check.
    let merged = check(&files, &current);
    assert!(merged.rulesets.iter().any(|r| r.name == "shop-prod-2"));
    assert!(
        merged
            .tiers
            .iter()
            .any(|t| t.name == "shared-services" && t.order == 40)
    );
    let compiled = CompiledPolicy::compile(&inv, &merged);
    let c = coverage(&compiled, &merged, &inv, &s, &CoverageOptions::default());
    // Only the conversation the guardrail denies is left.
    assert_eq!(c.would_block.len(), 1, "{:?}", c.would_block);
    assert_eq!(c.would_block[0].denied_by, ["no-jump-to-crm"]);
    assert_eq!(c.would_block[0].source, "role=jump");
    assert!(c.connection_share < 1.0);
}

#[test]
fn coverage_flags_rules_much_broader_than_their_traffic() {
    let (inv, s) = estate();
    let files = vec![
        ("t.yaml".to_string(), "bulkhead: v1\nkind: tier\nname: application\norder: 30\n".to_string()),
        ("r.yaml".to_string(), "bulkhead: v1\nkind: ruleset\nname: shop-prod\ntier: application\nscope:\n  app: shop\n  env: prod\nrules:\n  - id: web-to-app-range\n    action: allow\n    from: [role=web]\n    to: [role=app]\n    services: [tcp/8000-8999]\n  - id: app-to-db\n    action: allow\n    from: [role=app]\n    to: [role=db]\n    services: [tcp/5432]\n  - id: anything-to-web\n    action: allow\n    from: [any]\n    to: [role=web]\n    services: [any]\n".to_string()),
    ];
    let policy = Policy::from_sources(&files).unwrap();
    let compiled = CompiledPolicy::compile(&inv, &policy);
    let c = coverage(&compiled, &policy, &inv, &s, &CoverageOptions::default());
    let flagged: Vec<&str> = c.over_broad.iter().map(|o| o.rule.as_str()).collect();
    assert_eq!(
        flagged,
        ["shop-prod/web-to-app-range", "shop-prod/anything-to-web"],
        "{:?}",
        c.over_broad
    );
    let range = &c.over_broad[0];
    assert_eq!((range.allowed_ports, range.used_ports), (1000, 1));
    assert_eq!(range.used, ["tcp/8080"]);
    assert!(c.unused_rules.is_empty(), "{:?}", c.unused_rules);
    assert!(c.connection_share < 1.0);
}
