//! Keeps the kernel's owned table equal to the last policy applied.
//!
//! Replacement is always one `nft -f` transaction (render → apply), so there is never a
//! moment without enforcement, and a policy the kernel refuses leaves the previous table
//! in place. After every apply the table is read back as the reference for tamper checks.

use bulkhead_api::WirePolicy;
use bulkhead_nft::{Nft, RenderOptions, Snapshot};

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error("policy {revision} is invalid: {message}")]
    Invalid { revision: String, message: String },
    #[error("applying policy {revision}: {source}")]
    Apply {
        revision: String,
        #[source]
        source: bulkhead_nft::NftError,
    },
    #[error("reading the table back: {0}")]
    ReadBack(#[source] bulkhead_nft::NftError),
}

/// A difference found between the kernel and what was applied, after it was repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tamper {
    pub difference: String,
}

#[derive(Debug)]
pub struct Enforcer {
    nft: Nft,
    table: String,
    control_plane: Vec<std::net::SocketAddr>,
    applied: Option<Applied>,
    /// When the current revision first went into the kernel, and the last check.
    applied_at_ms: Option<i64>,
    checked_at_ms: Option<i64>,
}

/// Process name → the cgroup paths of the services it runs as.
type ServiceCgroups = std::collections::BTreeMap<String, Vec<String>>;

#[derive(Debug)]
struct Applied {
    policy: WirePolicy,
    expected: Snapshot,
    /// The services the process rules were rendered for; `None` when they were left
    /// out (the fallback), so the next check tries to render them again.
    services: Option<ServiceCgroups>,
    names_process: bool,
    /// The nftables generation `expected` was read at, when known for sure: while the
    /// kernel's generation has not moved, nothing can differ, and the read-back (0.25 s
    /// of nft's time at 100,000 peers) is skipped.
    generation: Option<u32>,
}

impl Enforcer {
    pub fn new(nft: Nft, table: &str) -> Enforcer {
        Enforcer {
            nft,
            table: table.to_string(),
            control_plane: Vec::new(),
            applied: None,
            applied_at_ms: None,
            checked_at_ms: None,
        }
    }

    /// When the revision in the kernel was first applied, and when it was last checked.
    pub fn times(&self) -> (Option<i64>, Option<i64>) {
        (self.applied_at_ms, self.checked_at_ms)
    }

    /// The server's endpoints, kept reachable by every table this enforcer applies
    /// (from the next apply on).
    pub fn set_control_plane(&mut self, endpoints: Vec<std::net::SocketAddr>) {
        self.control_plane = endpoints;
    }

    /// Whether nft acts on this process's own network namespace (so a watch of this
    /// namespace's nftables changes sees the table's).
    pub fn in_own_namespace(&self) -> bool {
        self.nft.in_own_namespace()
    }

    /// New control-plane endpoints (the server's name resolved again): when they
    /// differ, the applied policy is rendered and applied again with them. `Ok(true)`
    /// when it was.
    pub fn follow_control_plane(
        &mut self,
        mut endpoints: Vec<std::net::SocketAddr>,
    ) -> Result<bool, EnforceError> {
        endpoints.sort();
        endpoints.dedup();
        if endpoints == self.control_plane {
            return Ok(false);
        }
        let before = std::mem::replace(&mut self.control_plane, endpoints);
        if let Err(e) = self.reapply() {
            // The kernel kept the old table; so does the reference.
            self.control_plane = before;
            return Err(e);
        }
        Ok(self.applied.is_some())
    }

    pub fn applied_revision(&self) -> Option<&str> {
        self.applied.as_ref().map(|a| a.policy.revision.as_str())
    }

    pub fn applied_policy(&self) -> Option<&WirePolicy> {
        self.applied.as_ref().map(|a| &a.policy)
    }

    /// Checks, renders and applies `policy` in one transaction. On any error the kernel
    /// and `self` keep the previous policy.
    ///
    /// A policy whose process rules name services is loaded again without those rules
    /// (they then match nothing) when the first load fails: a service that stops
    /// between finding its cgroup and loading the rule must not get the whole revision
    /// rejected. The next check renders them again for the services there are then.
    pub fn apply(&mut self, policy: &WirePolicy) -> Result<(), EnforceError> {
        match self.apply_with(policy, true) {
            Ok(()) => Ok(()),
            Err(first @ EnforceError::Invalid { .. }) => Err(first),
            Err(first) => {
                if !Self::names_process(policy) {
                    return Err(first);
                }
                tracing::warn!("{first}; applying it without its process rules");
                self.apply_with(policy, false).map_err(|_| first)
            }
        }
    }

    /// Whether any inbound rule names its provider's process (read off the wire form,
    /// without converting the whole policy again).
    fn names_process(policy: &WirePolicy) -> bool {
        policy
            .inbound
            .iter()
            .any(|r| r.services.iter().any(|s| s.process.is_some()))
    }

    /// The services process rules match now (empty when the policy has none).
    fn services_now(names_process: bool) -> ServiceCgroups {
        if !names_process {
            return ServiceCgroups::default();
        }
        bulkhead_host::service_cgroups().unwrap_or_else(|e| {
            tracing::warn!(
                "finding the services that listen here: {e}; rules naming a process will not match"
            );
            ServiceCgroups::default()
        })
    }

    /// `discover_services: false` renders rules naming a process as matching nothing
    /// (the fallback when a service's cgroup vanished between looking and loading).
    fn apply_with(
        &mut self,
        policy: &WirePolicy,
        discover_services: bool,
    ) -> Result<(), EnforceError> {
        let invalid = |e: bulkhead_api::WireError| EnforceError::Invalid {
            revision: policy.revision.clone(),
            message: e.to_string(),
        };
        let (host, failsafe_ports) = policy.to_host_policy().map_err(invalid)?;
        let failsafe_outbound = policy.failsafe_outbound().map_err(invalid)?;
        // Rules that name the provider's process need to know which services it runs
        // as here, at this moment; `check` watches for a change of services and renders
        // again (nft resolves a cgroup path when it loads the rule, and a restarted
        // service is a new cgroup).
        let names_process = Self::names_process(policy);
        let process_cgroups = if discover_services {
            Self::services_now(names_process)
        } else {
            ServiceCgroups::default()
        };
        let opts = RenderOptions {
            failsafe_ports,
            failsafe_outbound,
            log_group: policy.log_group,
            table: self.table.clone(),
            control_plane: self.control_plane.clone(),
            process_cgroups: process_cgroups.clone(),
        };
        let text = bulkhead_nft::render(&host, &opts);
        self.nft
            .apply(&text)
            .map_err(|source| EnforceError::Apply {
                revision: policy.revision.clone(),
                source,
            })?;
        let was_quarantined = self.applied.as_ref().is_some_and(|a| a.policy.quarantined);
        if host.quarantined && !was_quarantined && self.nft.in_own_namespace() {
            // The table already drops what was open before; this makes the rest of
            // the host forget those connections too.
            match bulkhead_host::flush_conntrack() {
                Ok(()) => tracing::info!("quarantined: connection tracking flushed"),
                Err(e) => tracing::warn!("quarantined, but flushing conntrack failed: {e}"),
            }
        }
        let (expected, generation) = self.snapshot()?;
        // A repair or a re-render of the same revision keeps its time.
        if self.applied_revision() != Some(policy.revision.as_str()) {
            self.applied_at_ms = Some(crate::agent::now_ms());
        }
        self.applied = Some(Applied {
            policy: policy.clone(),
            expected,
            generation,
            services: discover_services.then_some(process_cgroups),
            names_process,
        });
        Ok(())
    }

    /// Applies the applied policy again, rendered anew; if that fails (a service's
    /// cgroup vanished meanwhile), without its process rules, which then match nothing:
    /// the host is never left without its table because of one service.
    fn reapply(&mut self) -> Result<(), EnforceError> {
        let Some(policy) = self.applied.as_ref().map(|a| a.policy.clone()) else {
            return Ok(());
        };
        self.apply(&policy)
    }

    /// The ruleset generation, where it describes the ruleset `nft` acts on.
    fn generation(&self) -> Option<u32> {
        if !self.nft.in_own_namespace() {
            return None;
        }
        bulkhead_host::nftables_generation()
            .inspect_err(|e| tracing::debug!("{e}; tamper checks read the table back"))
            .ok()
    }

    /// A snapshot with the generation it was taken at: the same generation before and
    /// after reading means no transaction came in between.
    fn snapshot(&self) -> Result<(Snapshot, Option<u32>), EnforceError> {
        let before = self.generation();
        let snapshot = self.nft.snapshot().map_err(EnforceError::ReadBack)?;
        let after = self.generation();
        Ok((snapshot, before.filter(|_| before == after)))
    }

    /// Compares the kernel with the reference; on any difference re-applies the same
    /// transaction and returns what was different.
    pub fn check(&mut self) -> Result<Option<Tamper>, EnforceError> {
        let Some(applied) = &self.applied else {
            return Ok(None);
        };
        self.checked_at_ms = Some(crate::agent::now_ms());
        // Services come and go without any nftables transaction: a rule rendered for a
        // service's cgroup stops matching when the service restarts, so the services
        // are compared on every check and the policy rendered again when they changed.
        if applied.names_process {
            let now = Self::services_now(true);
            if applied.services.as_ref() != Some(&now) {
                tracing::info!("the services the process rules name changed; applying again");
                self.reapply()?;
                return Ok(None);
            }
        }
        let Some(known) = self.applied.as_ref().map(|a| a.generation) else {
            return Ok(None);
        };
        let now = self.generation();
        if known.is_some() && known == now {
            return Ok(None);
        }
        let Some(applied) = &mut self.applied else {
            return Ok(None);
        };
        let Some(drift) = self
            .nft
            .check_drift(&applied.expected)
            .map_err(EnforceError::ReadBack)?
        else {
            // Some other transaction (another table, or a change undone): the table is
            // as applied at `now` at least, which is the safe generation to remember.
            applied.generation = now;
            return Ok(None);
        };
        // Reported whether or not the repair worked: a table someone changed is news
        // either way, and a failed repair more so.
        let repaired = self.reapply();
        let describe = |items: &[String]| -> String {
            items
                .iter()
                .take(20)
                .map(|i| i.chars().take(300).collect::<String>())
                .collect::<Vec<_>>()
                .join("\n  ")
        };
        let difference = match (drift.missing.is_empty(), drift.unexpected.is_empty()) {
            (true, true) => "the table's items were reordered".to_string(),
            _ => format!(
                "missing ({}):\n  {}\nunexpected ({}):\n  {}",
                drift.missing.len(),
                describe(&drift.missing),
                drift.unexpected.len(),
                describe(&drift.unexpected)
            ),
        };
        let difference = match repaired {
            Ok(()) => difference,
            Err(e) => {
                tracing::error!("restoring the table failed: {e}");
                format!("{difference}\nrestoring the table FAILED: {e}")
            }
        };
        Ok(Some(Tamper { difference }))
    }
}
