//! Loading what enrichment needs from the command line: inventory, label rules, the
//! provisioned policy and a draft. All optional; without an inventory nothing is
//! enriched, without a policy nothing is verdicted.

use std::path::PathBuf;
use std::sync::Arc;

use bulkhead_enrich::Enricher;
use bulkhead_model::Inventory;
use bulkhead_policy::CompiledPolicy;
use clap::Args;

use crate::policy_cmd::{load_inventory, load_policy};

#[derive(Args, Debug, Default)]
pub struct EnrichArgs {
    /// Inventory file(s) (CSV, JSON or YAML) to name workloads and labels.
    #[arg(long)]
    pub inventory: Vec<PathBuf>,
    #[arg(long)]
    pub label_rules: Option<PathBuf>,
    /// The provisioned policy (files or directories): every summary gets its verdict.
    #[arg(long)]
    pub policy: Vec<PathBuf>,
    /// A draft policy: every summary also gets its verdict against the draft.
    #[arg(long)]
    pub draft: Vec<PathBuf>,
}

impl EnrichArgs {
    pub fn inventory(&self) -> anyhow::Result<Inventory> {
        if self.inventory.is_empty() {
            return Ok(Inventory::default());
        }
        load_inventory(&self.inventory, self.label_rules.as_deref())
    }

    pub fn enricher(&self) -> anyhow::Result<Enricher> {
        let inventory = self.inventory()?;
        let compile = |paths: &[PathBuf]| -> anyhow::Result<Option<Arc<CompiledPolicy>>> {
            if paths.is_empty() {
                return Ok(None);
            }
            let p = load_policy(paths)?;
            Ok(Some(Arc::new(CompiledPolicy::compile(&inventory, &p))))
        };
        let provisioned = compile(&self.policy)?;
        let draft = compile(&self.draft)?;
        Ok(Enricher {
            inventory: Arc::new(inventory),
            provisioned,
            draft,
            listening: Default::default(),
            hosts: Default::default(),
        })
    }
}
