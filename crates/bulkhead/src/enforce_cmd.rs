//! `bulkhead enforce` and `bulkhead enforcement`: set the enforcement mode of workloads
//! on a server directly (the impact on recent traffic first), and see what a host really
//! runs.

use clap::Args;
use serde_json::{Value, json};

use crate::policy_cmd::Remote;

#[derive(Args, Debug)]
pub struct EnforceArgs {
    /// The mode to set: idle, monitor or enforced.
    #[arg(long)]
    pub mode: String,
    /// One workload by name.
    #[arg(long, conflicts_with = "labels", required_unless_present = "labels")]
    pub workload: Option<String>,
    /// Every managed workload carrying these labels (`app=shop,env=prod`).
    #[arg(long)]
    pub labels: Option<String>,
    /// Days of stored traffic the impact replays.
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// Write the change (admin, secops). Without it, only the impact is shown.
    #[arg(long)]
    pub apply: bool,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Args, Debug)]
pub struct EnforcementArgs {
    /// The workload.
    pub workload: String,
    #[command(flatten)]
    pub remote: Remote,
}

pub fn enforce(a: EnforceArgs) -> anyhow::Result<()> {
    let r = a.remote.call(
        "POST",
        "/api/v1/enforcement/mode",
        Some(json!({
            "workload": a.workload,
            "labels": a.labels,
            "mode": a.mode,
            "days": a.days,
            "apply": a.apply,
        })),
    )?;
    println!("{}", r["summary"].as_str().unwrap_or_default());
    let impact = &r["impact"];
    let groups = impact["groups"].as_array().cloned().unwrap_or_default();
    if !groups.is_empty() {
        println!();
        println!(
            "{:<24} {:<24} {:<12} {:<42} {:>11}",
            "consumer", "provider", "service", "verdict", "connections"
        );
        for g in &groups {
            println!(
                "{:<24} {:<24} {:<12} {:<42} {:>11}",
                text(&g["consumer"]),
                text(&g["provider"]),
                text(&g["service"]),
                format!("{} -> {}", text(&g["from"]), text(&g["to"])),
                g["connections"]
            );
        }
        if impact["groups_left_out"].as_u64().unwrap_or(0) > 0 {
            println!("(and {} more groups)", impact["groups_left_out"]);
        }
    }
    if let Some(note) = impact["note"].as_str() {
        println!("note: {note}");
    }
    if !a.apply && r["changing"].as_array().is_some_and(|c| !c.is_empty()) {
        println!();
        println!("nothing written: add --apply to switch them");
    }
    Ok(())
}

pub fn enforcement(a: EnforcementArgs) -> anyhow::Result<()> {
    let r = a.remote.call(
        "GET",
        &format!("/api/v1/workloads/{}/enforcement", a.workload),
        None,
    )?;
    println!("{}", r["summary"].as_str().unwrap_or_default());
    println!("mode              {}", text(&r["mode"]));
    println!("state             {}", text(&r["state"]));
    println!("desired revision  {}", text(&r["desired_revision"]));
    println!("applied revision  {}", text(&r["applied_revision"]));
    if let Some(q) = r["quarantine"].as_object() {
        println!(
            "quarantine        {} ({})",
            text(&q["state"]),
            text(&q["reason"])
        );
    }
    Ok(())
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}
