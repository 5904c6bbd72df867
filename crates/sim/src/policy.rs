//! The estate's policy as code, written as text in the canonical form of
//! `bulkhead policy fmt` so that a generated directory passes `fmt --check`.

use std::fmt::Write;

use crate::config::Env;
use crate::estate::Estate;

/// Partner APIs the prod application tiers call (documentation range: only data).
pub const PARTNER_APIS: &str = "198.51.100.16/28";

struct Rule<'a> {
    id: String,
    description: Option<&'a str>,
    action: &'a str,
    from: &'a str,
    to: &'a str,
    services: &'a [&'a str],
}

fn ruleset(
    out: &mut String,
    name: &str,
    tier: &str,
    owner: &str,
    scope: &[(&str, &str)],
    rules: &[Rule],
) {
    let _ = writeln!(
        out,
        "bulkhead: v1\nkind: ruleset\nname: {name}\ntier: {tier}\nowner: {owner}"
    );
    if !scope.is_empty() {
        out.push_str("scope:\n");
        for (k, v) in scope {
            let _ = writeln!(out, "  {k}: {v}");
        }
    }
    out.push_str("rules:\n");
    for r in rules {
        let _ = writeln!(out, "  - id: {}", r.id);
        if let Some(d) = r.description {
            let _ = writeln!(out, "    description: {d}");
        }
        let _ = writeln!(out, "    action: {}", r.action);
        let _ = writeln!(out, "    from:\n      - {}", r.from);
        let _ = writeln!(out, "    to:\n      - {}", r.to);
        out.push_str("    services:\n");
        for s in r.services {
            let _ = writeln!(out, "      - {s}");
        }
    }
}

pub(crate) fn files(estate: &Estate) -> Vec<(String, String)> {
    let mut files = Vec::new();

    files.push((
        "00-tiers.yaml".to_string(),
        "# Tiers are consulted in ascending order; the first tier with a matching rule decides.
bulkhead: v1
kind: tier
name: guardrails
description: SecOps rules no application rule can override
order: 10
---
bulkhead: v1
kind: tier
name: shared-services
description: Infrastructure every workload needs, written once
order: 20
---
bulkhead: v1
kind: tier
name: application
description: Rules owned by application teams
order: 30
"
        .to_string(),
    ));

    let mut envs: Vec<&str> = estate.envs().iter().map(|e| e.name()).collect();
    envs.push("shared");
    envs.sort_unstable();
    let mut objects = String::new();
    let _ = write!(
        objects,
        "bulkhead: v1
kind: label_group
name: it-servers
description: Every server environment
labels:
  env: [{}]
",
        envs.join(", ")
    );
    let _ = write!(
        objects,
        "---
bulkhead: v1
kind: ip_list
name: internet
description: Everything outside the private ranges
include:
  - 0.0.0.0/0
  - \"::/0\"
exclude:
  - 10.0.0.0/8
  - 172.16.0.0/12
  - 192.168.0.0/16
  - fc00::/7
---
bulkhead: v1
kind: ip_list
name: partner-apis
description: APIs of partners the production application tiers call
include:
  - {PARTNER_APIS}
---
bulkhead: v1
kind: service
name: postgres
ports:
  - tcp/5432
---
bulkhead: v1
kind: service
name: directory
description: LDAP and LDAPS
ports:
  - tcp/389
  - tcp/636
---
bulkhead: v1
kind: service
name: node-exporter
description: Metrics scraped by monitoring
ports:
  - tcp/9100
---
bulkhead: v1
kind: service
name: backup-agent
description: Backup file daemon (flow exports do not name processes, so no process constraint)
ports:
  - tcp/9102
"
    );
    files.push(("10-objects.yaml".to_string(), objects));

    let mut guard = String::new();
    ruleset(
        &mut guard,
        "guardrails",
        "guardrails",
        "secops@example.com",
        &[],
        &[Rule {
            id: "deny-dev-to-prod".into(),
            description: Some("Development never reaches production"),
            action: "deny",
            from: "env=dev",
            to: "env=prod",
            services: &["any"],
        }],
    );
    files.push(("20-guardrails.yaml".to_string(), guard));

    let mut shared = String::new();
    let it = "group:it-servers";
    let r =
        |id: &str, from: &'static str, to: &'static str, services: &'static [&'static str]| Rule {
            id: id.to_string(),
            description: None,
            action: "allow",
            from,
            to,
            services,
        };
    ruleset(
        &mut shared,
        "shared-services",
        "shared-services",
        "infra@example.com",
        &[],
        &[
            r("allow-dns", it, "role=dns", &["tcp/53", "udp/53"]),
            r("allow-ntp", it, "role=ntp", &["udp/123"]),
            r("allow-directory", it, "role=directory", &["directory"]),
            r("allow-backup", "role=backup", it, &["backup-agent"]),
            r(
                "allow-monitoring",
                "role=monitoring",
                it,
                &["node-exporter"],
            ),
        ],
    );
    files.push(("30-shared-services.yaml".to_string(), shared));

    for app in estate.app_names() {
        for &env in estate.envs() {
            let name = format!("{app}-{}", env.name());
            let mut rules = vec![
                Rule {
                    id: format!("{name}-web-to-app"),
                    description: None,
                    action: "allow",
                    from: "role=web",
                    to: "role=app",
                    services: &["tcp/8080"],
                },
                Rule {
                    id: format!("{name}-app-to-db"),
                    description: None,
                    action: "allow",
                    from: "role=app",
                    to: "role=db",
                    services: &["postgres"],
                },
            ];
            if env == Env::Prod {
                rules.push(Rule {
                    id: format!("{name}-public-web"),
                    description: Some("Customers reach the web tier from the internet"),
                    action: "allow",
                    from: "iplist:internet",
                    to: "role=web",
                    services: &["tcp/443"],
                });
                rules.push(Rule {
                    id: format!("{name}-to-partners"),
                    description: None,
                    action: "allow",
                    from: "role=app",
                    to: "iplist:partner-apis",
                    services: &["tcp/443"],
                });
            }
            let mut text = String::new();
            ruleset(
                &mut text,
                &name,
                "application",
                &format!("{app}-team@example.com"),
                &[("app", app), ("env", env.name())],
                &rules,
            );
            files.push((format!("40-{name}.yaml"), text));
        }
    }
    files
}
