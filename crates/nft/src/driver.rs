//! The driver: runs `nft`, the only thing in Bulkhead that touches the kernel's tables.
//!
//! Applying is one `nft -f -` transaction, so a batch the kernel refuses leaves the
//! previous table exactly as it was. Reading back goes through `nft` too; drift is
//! judged on nft's own JSON listing with handles removed, because nft normalises what it
//! is given (priority names, symbolic ICMP types, element order) and the only faithful
//! picture of "what we applied" is what nft lists right after applying it.

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("could not run {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{command}: output is not the JSON listing expected: {why}")]
    Json { command: String, why: String },
}

/// How to reach nft, and which table is ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nft {
    /// The argv that runs nft (`["nft"]`, or `["ip", "netns", "exec", NS, "nft"]`).
    program: Vec<String>,
    table: String,
}

impl Default for Nft {
    fn default() -> Self {
        Self {
            program: vec!["nft".into()],
            table: "bulkhead".into(),
        }
    }
}

/// Applies a transaction on this host, with nft from `PATH`.
pub fn apply(text: &str) -> Result<(), NftError> {
    Nft::default().apply(text)
}

/// Lists the `inet bulkhead` table on this host.
pub fn read_back() -> Result<String, NftError> {
    Nft::default().read_back()
}

impl Nft {
    /// nft on this host, table `inet bulkhead`.
    pub fn new() -> Self {
        Self::default()
    }

    /// nft inside a named network namespace (`ip netns exec NS nft`).
    pub fn in_netns(namespace: &str) -> Self {
        Self {
            program: ["ip", "netns", "exec", namespace, "nft"]
                .map(String::from)
                .to_vec(),
            ..Self::default()
        }
    }

    /// Whether nft runs in this process's own network namespace (not `in_netns`), so
    /// that what the process reads of the kernel (e.g. the ruleset generation) is about
    /// the same ruleset.
    pub fn in_own_namespace(&self) -> bool {
        self.program.len() == 1
    }

    /// The owned table's name, in the `inet` family (must match `RenderOptions::table`).
    pub fn with_table(mut self, table: &str) -> Self {
        self.table = table.to_string();
        self
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
        let command = self
            .program
            .iter()
            .map(String::as_str)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        let spawn_err = |source| NftError::Spawn {
            command: command.clone(),
            source,
        };
        let mut child = Command::new(&self.program[0])
            .args(&self.program[1..])
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        if let Some(text) = stdin {
            // nft reads the whole file before it parses anything, so writing all of it
            // before reading its output cannot deadlock. Dropping the pipe sends EOF.
            let mut pipe = child.stdin.take().expect("stdin is piped");
            pipe.write_all(text.as_bytes()).map_err(spawn_err)?;
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        if !out.status.success() {
            return Err(NftError::Failed {
                command,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs one transaction (`nft -f -`). All or nothing: on error the kernel keeps
    /// what it had before.
    pub fn apply(&self, text: &str) -> Result<(), NftError> {
        self.run(&["-f", "-"], Some(text)).map(drop)
    }

    /// `nft list table inet TABLE`: the table as nft prints it.
    pub fn read_back(&self) -> Result<String, NftError> {
        self.run(&["list", "table", "inet", &self.table], None)
    }

    /// The table in canonical form: nft's JSON listing without handles (which change
    /// on every replacement) and without nft's version banner. An absent table is an
    /// empty snapshot, which is what an idle workload should have.
    pub fn snapshot(&self) -> Result<Snapshot, NftError> {
        let command = format!("nft -j list table inet {}", self.table);
        let json_err = |why: String| NftError::Json {
            command: command.clone(),
            why,
        };
        let text = match self.run(&["-j", "list", "table", "inet", &self.table], None) {
            Ok(text) => text,
            Err(e @ NftError::Failed { .. }) => {
                // Absent, or a real failure? Ask for the list of tables, which works
                // either way, instead of parsing an error message.
                if self.table_exists()? {
                    return Err(e);
                }
                return Ok(Snapshot::default());
            }
            Err(e) => return Err(e),
        };
        let value: Value = serde_json::from_str(&text).map_err(|e| json_err(e.to_string()))?;
        let items = value
            .get("nftables")
            .and_then(Value::as_array)
            .ok_or_else(|| json_err("no \"nftables\" array".into()))?;
        let mut items: Vec<Value> = items
            .iter()
            .filter(|item| item.get("metainfo").is_none())
            .cloned()
            .collect();
        items.iter_mut().for_each(strip_handles);
        Ok(Snapshot { items })
    }

    fn table_exists(&self) -> Result<bool, NftError> {
        let text = self.run(&["-j", "list", "tables", "inet"], None)?;
        let value: Value = serde_json::from_str(&text).map_err(|e| NftError::Json {
            command: "nft -j list tables inet".into(),
            why: e.to_string(),
        })?;
        Ok(value
            .get("nftables")
            .and_then(Value::as_array)
            .is_some_and(|items| {
                items.iter().any(|i| {
                    i.pointer("/table/name").and_then(Value::as_str) == Some(self.table.as_str())
                })
            }))
    }

    /// Compares the kernel with what it held right after our last apply. `None` means no
    /// drift; anything else is someone else's hand in our table (or a lost table).
    pub fn check_drift(&self, expected: &Snapshot) -> Result<Option<Drift>, NftError> {
        let actual = self.snapshot()?;
        Ok(expected.drift(&actual))
    }
}

fn strip_handles(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("handle");
            map.values_mut().for_each(strip_handles);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_handles),
        _ => {}
    }
}

/// The owned table in canonical form (see [`Nft::snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Table, sets, chains and rules as nft lists them, in listing order.
    pub items: Vec<Value>,
}

impl Snapshot {
    pub fn is_absent(&self) -> bool {
        self.items.is_empty()
    }

    /// What differs between `self` (expected) and `actual`; `None` when they are equal.
    /// Order matters for rules, so a reordered chain is drift too.
    pub fn drift(&self, actual: &Snapshot) -> Option<Drift> {
        if self == actual {
            return None;
        }
        let show = |v: &Value| v.to_string();
        let missing = self
            .items
            .iter()
            .filter(|i| !actual.items.contains(i))
            .map(show)
            .collect();
        let unexpected = actual
            .items
            .iter()
            .filter(|i| !self.items.contains(i))
            .map(show)
            .collect();
        Some(Drift {
            missing,
            unexpected,
        })
    }
}

/// How the kernel's table departs from what was applied. Both lists empty means the
/// same items in another order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// Expected items (JSON) the kernel no longer has.
    pub missing: Vec<String>,
    /// Items (JSON) in the kernel that were never applied.
    pub unexpected: Vec<String>,
}
