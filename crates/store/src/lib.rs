//! The embedded store of flow summaries.
//!
//! [`FlowStore`] is what the rest of Bulkhead sees: upsert summaries, query them back
//! with filters, expire old ones, and aggregate per address for the sprawl report. No SQL
//! leaves this crate; [`SqliteFlowStore`] is the default backend (one file, WAL mode),
//! and a column store can implement the same trait when one machine is not enough.
//!
//! The trait is synchronous on purpose: SQLite is an in-process library, so the server
//! calls it from a blocking task rather than pretending it is asynchronous.
#![forbid(unsafe_code)]

mod clickhouse;
pub mod control;
mod error;
mod query;
mod sqlite;

use std::net::IpAddr;

pub use bulkhead_model::{Bucket, FlowSummary, Labels, SummaryKey, SummaryVerdict, VerdictKind};
pub use clickhouse::{
    CLICKHOUSE_SCHEMA_VERSION, ClickHouseFlowStore, ClickHouseOptions, ClickHouseUrl,
};
pub use error::StoreError;
pub use query::FlowQuery;
pub use sqlite::SqliteFlowStore;

pub use control::{
    AlertFilter, AlertObservation, AlertRecord, AlertRecorded, AlertState, AuditContext,
    AuditEntry, Change, ControlStore, DiffChange, DraftObject, Lease, NewToken, ObjectDiff,
    StoredObject, StoredWorkload, TokenMeta, Version, VersionMeta, WorkloadDiff,
};

/// A store of [`FlowSummary`] rows, one per [`SummaryKey`].
pub trait FlowStore {
    /// Writes all `summaries` in one transaction: all or nothing. A summary whose key is
    /// already stored is folded into it as by [`FlowSummary::merge`], as are repeated
    /// keys within the batch, in order. Counters saturate at `i64::MAX` (not
    /// `u64::MAX`) because that is the widest integer the backends store.
    fn upsert(&mut self, summaries: &[FlowSummary]) -> Result<(), StoreError>;

    /// The summaries matching `q`, ordered by (bucket start, src, dst, proto, port,
    /// process) with `None` before any process (bucket start descending when
    /// `q.newest_first`), then `offset`/`limit` applied.
    /// [`FlowQuery::matches`] states what matches.
    fn query(&self, q: &FlowQuery) -> Result<Vec<FlowSummary>, StoreError>;

    /// Deletes every summary whose bucket ended at or before `older_than_ms` (of either
    /// bucket width) and returns how many were deleted.
    fn expire(&mut self, older_than_ms: i64) -> Result<u64, StoreError>;

    /// Row counts and time span per bucket width.
    fn stats(&self) -> Result<StoreStats, StoreError>;

    /// One row per address seen on either side of a `bucket` summary starting in
    /// `[from_ms, to_ms)`, ordered by address. Takes the bucket width because minute
    /// and hour summaries usually describe the same traffic twice.
    fn seen_addresses(
        &self,
        bucket: Bucket,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<SeenAddress>, StoreError>;

    /// The summaries of a window folded into [`FlowGroup`]s, computed where the data
    /// is: the `limit` most recently seen groups (among groups last seen at the same
    /// millisecond, any), and whether the limit left some out. Counters saturate at
    /// `u64::MAX`.
    fn groups(&self, q: &GroupQuery) -> Result<GroupPage, StoreError>;
}

/// How long summaries are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_age_ms: i64,
}

impl Retention {
    /// Thirty days: long enough to see monthly jobs before writing rules for them.
    pub const DEFAULT: Retention = Retention {
        max_age_ms: 30 * 24 * 3_600_000,
    };

    /// The `older_than_ms` to pass to [`FlowStore::expire`] at time `now_ms`.
    pub fn cutoff(self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.max_age_ms)
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What [`FlowStore::stats`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    pub minute: BucketStats,
    pub hour: BucketStats,
}

impl StoreStats {
    pub fn get(&self, bucket: Bucket) -> &BucketStats {
        match bucket {
            Bucket::Minute => &self.minute,
            Bucket::Hour => &self.hour,
        }
    }
}

/// Rows of one bucket width; the starts are `None` when there are no rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BucketStats {
    pub rows: u64,
    pub oldest_start_ms: Option<i64>,
    pub newest_start_ms: Option<i64>,
}

/// A provider port: what an address served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServedPort {
    pub proto: u8,
    pub port: u16,
}

/// One address as the traffic shows it, for comparing with the inventory (sprawl).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenAddress {
    pub address: IpAddr,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// Bytes of every summary it took part in, on either side (saturating).
    pub bytes: u64,
    pub connections: u64,
    /// Distinct addresses it talked to, on either side.
    pub peers: u64,
    /// Ports it answered on as the provider, sorted.
    pub served: Vec<ServedPort>,
    /// Exporters and agents that reported it, sorted.
    pub reporters: Vec<String>,
    /// Workload names the enrichment gave it, sorted; empty for an address the
    /// inventory does not know.
    pub workloads: Vec<String>,
}

/// A flow store of either backend, as the server and collectors hold it.
pub type BoxedFlowStore = Box<dyn FlowStore + Send>;

/// Where flow summaries live: the embedded SQLite file (the default) or a ClickHouse
/// database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowLocation {
    Sqlite(std::path::PathBuf),
    ClickHouse(ClickHouseUrl),
}

impl FlowLocation {
    /// Reads `--flows`: absent or `sqlite` is `data_dir/flows.sqlite`; otherwise a
    /// `clickhouse://` URL. The error says what was expected.
    pub fn parse(spec: Option<&str>, data_dir: &std::path::Path) -> Result<Self, String> {
        match spec {
            None | Some("sqlite") => Ok(Self::Sqlite(data_dir.join("flows.sqlite"))),
            Some(url) if url.starts_with("clickhouse://") => {
                ClickHouseUrl::parse(url).map(Self::ClickHouse)
            }
            Some(other) => Err(format!(
                "{:?} is neither `sqlite` nor a clickhouse://host:port/database URL",
                redact_credentials(other)
            )),
        }
    }

    /// Opens (creating or migrating) the store.
    pub fn open(&self) -> Result<BoxedFlowStore, StoreError> {
        Ok(match self {
            Self::Sqlite(path) => Box::new(SqliteFlowStore::open(path)?),
            Self::ClickHouse(url) => Box::new(ClickHouseFlowStore::connect_url(url.clone())?),
        })
    }

    /// For messages: the file, or the URL without credentials.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(path) => path.display().to_string(),
            Self::ClickHouse(url) => url.target(),
        }
    }
}

/// `text` with anything between `//` and `@` replaced, so that a password never reaches
/// a message.
fn redact_credentials(text: &str) -> String {
    match (text.find("//"), text.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            format!("{}//…@{}", &text[..start], &text[at + 1..])
        }
        _ => text.to_string(),
    }
}

/// Which summaries [`FlowStore::groups`] folds together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupQuery {
    pub bucket: Bucket,
    /// Bucket starts in `[from_ms, to_ms)`.
    pub from_ms: i64,
    pub to_ms: i64,
    /// At most this many groups, the most recently seen first.
    pub limit: usize,
}

/// The traffic of a window between two ends on one service with one pair of verdicts:
/// what a map draws, without a row per minute, per client port or per process. An end
/// with a workload is the workload (with its labels); an end without one keeps its
/// address, which tells an unknown internal host from the internet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FlowGroup {
    /// The consumer's address, when no workload has it.
    #[schema(value_type = Option<String>)]
    pub src: Option<IpAddr>,
    #[schema(value_type = Option<String>)]
    pub dst: Option<IpAddr>,
    pub src_workload: Option<String>,
    pub dst_workload: Option<String>,
    pub src_labels: Labels,
    pub dst_labels: Labels,
    pub proto: u8,
    pub port: u16,
    /// The verdicts against the provisioned policy and the draft.
    pub provisioned: Option<VerdictKind>,
    pub draft: Option<VerdictKind>,
    pub packets: u64,
    pub bytes: u64,
    pub connections: u64,
    /// How many summaries it folds.
    pub summaries: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

/// What [`FlowStore::groups`] answers: the groups, and whether the limit left any out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPage {
    pub items: Vec<FlowGroup>,
    pub more: bool,
}
