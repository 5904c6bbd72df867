//! `bulkhead rollout …`, `bulkhead quarantine` and `bulkhead release`: the enforcement
//! lifecycle against a running server (`--server`, `--token`), as thin clients of the
//! REST API so that the CLI and the console can never disagree.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::policy_cmd::Remote;
use crate::{EXIT_INVALID, Reported};

#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Announce a rollout: the selected workloads go to enforced mode at the date, if
    /// they are quiet by then; the owners are told along the way.
    Create(CreateArgs),
    /// Every rollout, with its state, dates and readiness.
    List {
        #[command(flatten)]
        remote: Remote,
        /// The API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One rollout in full: workloads, notices sent, postponements.
    Show {
        id: u64,
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        json: bool,
    },
    /// Put every workload the rollout switched back to the mode it had, in one action.
    Rollback {
        id: u64,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The rollout's name (e.g. payments-enforce).
    pub name: String,
    /// The workloads it moves, as labels: 'app=payments env=prod'.
    #[arg(long)]
    pub selector: String,
    /// An owner to tell: 'name=Alice,email=alice@example.com,webhook=http://…' (email
    /// and webhook optional); may be repeated.
    #[arg(long = "owner")]
    pub owners: Vec<String>,
    /// The enforcement date, UTC: 2026-12-17 or 2026-12-17T09:00:00Z.
    #[arg(long, conflicts_with = "enforce_in")]
    pub enforce_at: Option<String>,
    /// The enforcement date as a delay from now: 14d, 36h [default: 14d].
    #[arg(long)]
    pub enforce_in: Option<String>,
    /// Ready means no unresolved potentially-blocked alert in the last N days [default: 7].
    #[arg(long)]
    pub readiness_days: Option<u32>,
    /// Days after enforcement without a blocked-flow alert before it is complete [default: 14].
    #[arg(long)]
    pub watch_days: Option<u32>,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Args, Debug)]
pub struct QuarantineArgs {
    /// The workload to isolate.
    pub workload: String,
    /// Why (kept in the audit log and the alert).
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Args, Debug)]
pub struct ReleaseArgs {
    /// The workload to release from quarantine.
    pub workload: String,
    #[command(flatten)]
    pub remote: Remote,
}

fn invalid(flag: &str, value: &str, why: impl std::fmt::Display) -> anyhow::Error {
    eprintln!("error: {flag} {value:?}: {why}");
    Reported(EXIT_INVALID).into()
}

fn parse_owner(text: &str) -> anyhow::Result<Value> {
    let mut owner = serde_json::Map::new();
    for part in text.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            return Err(invalid(
                "--owner",
                text,
                format!("{part:?} is not key=value"),
            ));
        };
        match k.trim() {
            key @ ("name" | "email" | "webhook") => {
                owner.insert(key.into(), json!(v.trim()));
            }
            other => {
                return Err(invalid(
                    "--owner",
                    text,
                    format!("unknown key {other:?} (name, email, webhook)"),
                ));
            }
        }
    }
    if !owner.contains_key("name") {
        return Err(invalid("--owner", text, "needs name=…"));
    }
    Ok(Value::Object(owner))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn enforce_at_ms(a: &CreateArgs) -> anyhow::Result<Option<i64>> {
    if let Some(at) = &a.enforce_at {
        let full = if at.len() == 10 {
            format!("{at}T00:00:00Z")
        } else {
            at.clone()
        };
        let t = humantime::parse_rfc3339_weak(&full).map_err(|e| invalid("--enforce-at", at, e))?;
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map_err(|e| invalid("--enforce-at", at, e))?
            .as_millis() as i64;
        return Ok(Some(ms));
    }
    if let Some(d) = &a.enforce_in {
        let d: Duration =
            humantime::parse_duration(d).map_err(|e| invalid("--enforce-in", d, e))?;
        return Ok(Some(now_ms() + d.as_millis() as i64));
    }
    Ok(None)
}

fn date(ms: Option<i64>) -> String {
    match ms {
        Some(ms) if ms >= 0 => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms as u64))
                .to_string()
        }
        _ => "-".into(),
    }
}

fn summary_line(r: &Value) -> String {
    let ready = &r["readiness"];
    let readiness = if ready["ready"] == json!(true) {
        "ready".to_string()
    } else {
        format!(
            "not ready: {}",
            ready["reason"].as_str().unwrap_or("unknown")
        )
    };
    format!(
        "{:>4}  {:<24} {:<28} {:<12} enforce {}  {}",
        r["id"],
        r["name"].as_str().unwrap_or(""),
        selector_text(&r["selector"]),
        r["state"].as_str().unwrap_or(""),
        date(r["enforce_at_ms"].as_i64()),
        readiness
    )
}

fn selector_text(v: &Value) -> String {
    match v.as_object() {
        Some(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(" "),
        None => v.to_string(),
    }
}

fn print_rollout(r: &Value) {
    println!("{}", summary_line(r));
    println!("      announced {}", date(r["announced_ms"].as_i64()));
    if let Some(at) = r["at_ms"].as_i64() {
        println!(
            "      {} at {}",
            r["state"].as_str().unwrap_or(""),
            date(Some(at))
        );
    }
    for o in r["owners"].as_array().into_iter().flatten() {
        println!(
            "      owner {} {} {}",
            o["name"].as_str().unwrap_or(""),
            o["email"].as_str().unwrap_or(""),
            o["webhook"].as_str().unwrap_or("")
        );
    }
    for w in r["workloads"].as_array().into_iter().flatten() {
        println!(
            "      workload {} ({})",
            w["name"].as_str().unwrap_or(""),
            w["mode"].as_str().unwrap_or("")
        );
    }
    for p in r["postponements"].as_array().into_iter().flatten() {
        println!(
            "      postponed at {} to {}: {}",
            date(p["at_ms"].as_i64()),
            date(p["until_ms"].as_i64()),
            p["reason"].as_str().unwrap_or("")
        );
    }
    let notices: Vec<&str> = r["notices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !notices.is_empty() {
        println!("      notices sent: {}", notices.join(", "));
    }
}

pub fn run(c: RolloutCommand) -> anyhow::Result<()> {
    match c {
        RolloutCommand::Create(a) => {
            let owners = a
                .owners
                .iter()
                .map(|o| parse_owner(o))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut body = json!({
                "name": a.name,
                "selector": a.selector,
                "owners": owners,
            });
            if let Some(at) = enforce_at_ms(&a)? {
                body["enforce_at_ms"] = json!(at);
            }
            if let Some(d) = a.readiness_days {
                body["readiness_days"] = json!(d);
            }
            if let Some(d) = a.watch_days {
                body["watch_days"] = json!(d);
            }
            let r = a.remote.call("POST", "/api/v1/rollouts", Some(body))?;
            print_rollout(&r);
        }
        RolloutCommand::List { remote, json } => {
            let r = remote.call("GET", "/api/v1/rollouts", None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for item in r["items"].as_array().into_iter().flatten() {
                    println!("{}", summary_line(item));
                }
            }
        }
        RolloutCommand::Show { id, remote, json } => {
            let r = remote.call("GET", &format!("/api/v1/rollouts/{id}"), None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_rollout(&r);
            }
        }
        RolloutCommand::Rollback { id, remote } => {
            let r = remote.call("POST", &format!("/api/v1/rollouts/{id}/rollback"), None)?;
            print_rollout(&r);
        }
    }
    Ok(())
}

pub fn quarantine(a: QuarantineArgs) -> anyhow::Result<()> {
    let r = a.remote.call(
        "POST",
        &format!("/api/v1/workloads/{}/quarantine", a.workload),
        Some(json!({ "reason": a.reason })),
    )?;
    let already = if r["changed"] == json!(false) {
        " (it already was)"
    } else {
        ""
    };
    // Asked is not enforced: the server says whether the agent has applied it.
    println!(
        "{} is quarantined{already}. {}",
        a.workload,
        r["summary"].as_str().unwrap_or_default()
    );
    println!(
        "`bulkhead enforcement {}` shows when it is enforced",
        a.workload
    );
    Ok(())
}

pub fn release(a: ReleaseArgs) -> anyhow::Result<()> {
    let r = a.remote.call(
        "POST",
        &format!("/api/v1/workloads/{}/release", a.workload),
        None,
    )?;
    if r["changed"] == json!(false) {
        println!("{} was not quarantined", a.workload);
    } else {
        println!(
            "{} is released from quarantine: its policy applies again",
            a.workload
        );
    }
    Ok(())
}
