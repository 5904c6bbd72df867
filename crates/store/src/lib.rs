//! The embedded store of flow summaries.
//!
//! [`FlowStore`] is what the rest of Bulkhead sees: upsert summaries, query them back
//! with filters, expire old ones, and aggregate per address for the sprawl report. No SQL
//! leaves this crate; [`SqliteFlowStore`] is the default backend (one file, WAL mode,
//! one writer and a pool of readers), and [`ClickHouseFlowStore`] the one for estates
//! that outgrow one machine.
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
///
/// Shared between threads as it is (`&self` throughout): reads run side by side, and
/// each backend orders writes itself (SQLite has one writer connection behind a lock;
/// ClickHouse takes concurrent inserts). The server holds one as an [`SharedFlowStore`].
pub trait FlowStore: Send + Sync {
    /// Writes all `summaries` in one transaction: all or nothing. A summary whose key is
    /// already stored is folded into it as by [`FlowSummary::merge`], as are repeated
    /// keys within the batch, in order. Counters saturate at `i64::MAX` (not
    /// `u64::MAX`) because that is the widest integer the backends store.
    fn upsert(&self, summaries: &[FlowSummary]) -> Result<(), StoreError>;

    /// Writes `summaries` as [`Self::upsert`] does, as batch `mark.seq` of the stream
    /// `(mark.source, mark.stream)`, unless a batch of that stream numbered `mark.seq` or
    /// higher was written before: then it writes nothing and answers
    /// [`BatchWrite::Repeated`]. So a sender that delivers a stream's batches in
    /// increasing order can re-send one whose answer it lost and have it stored once.
    /// Only the highest number of each stream is kept (with `at_ms`, the time of its
    /// write), so the memory is one row per stream, not per batch.
    ///
    /// SQLite checks, writes the summaries and records the number in one transaction:
    /// exactly once. ClickHouse has no transactions: it checks, inserts the summaries,
    /// then records the number, so a crash or an error between the insert and the record
    /// lets a re-sent batch be stored twice (at least once, never lost), and two writes
    /// of one batch racing each other can both pass the check (callers serialize a
    /// stream's writes).
    fn upsert_batch(
        &self,
        mark: BatchMark<'_>,
        at_ms: i64,
        summaries: &[FlowSummary],
    ) -> Result<BatchWrite, StoreError>;

    /// Forgets the streams whose last batch was written before `older_than_ms` (a batch
    /// of theirs re-sent later would be stored again) and returns how many.
    fn forget_batches(&self, older_than_ms: i64) -> Result<u64, StoreError>;

    /// The highest batch number written for a stream, if any is remembered.
    fn batch_mark(&self, source: &str, stream: &str) -> Result<Option<u64>, StoreError>;

    /// The summaries matching `q`, ordered by (bucket start, src, dst, proto, port,
    /// process) with `None` before any process (bucket start descending when
    /// `q.newest_first`), then `offset`/`limit` applied.
    /// [`FlowQuery::matches`] states what matches.
    fn query(&self, q: &FlowQuery) -> Result<Vec<FlowSummary>, StoreError>;

    /// Deletes every summary whose bucket ended at or before `older_than_ms` (of either
    /// bucket width) and returns how many were deleted.
    fn expire(&self, older_than_ms: i64) -> Result<u64, StoreError>;

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

    /// The summaries of a window folded into one [`Conversation`] per source, destination,
    /// protocol, port, process and enrichment, computed where the data is: what
    /// recommendation and coverage read instead of every summary. The `limit` most
    /// recently seen (among conversations last seen at the same millisecond, any), and
    /// whether the limit left some out. Counters saturate at `u64::MAX`.
    fn conversations(&self, q: &GroupQuery) -> Result<ConversationPage, StoreError>;
}

/// Which batch of which stream a write is, for [`FlowStore::upsert_batch`]: `source`
/// names the sender (an agent), `stream` one sequence of its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMark<'a> {
    pub source: &'a str,
    pub stream: &'a str,
    /// From 1; at most `i64::MAX`, the widest integer the backends store.
    pub seq: u64,
}

/// What [`FlowStore::upsert_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchWrite {
    /// Written; the stream's highest batch is now this one.
    Stored,
    /// A batch numbered this or higher was written before; nothing was written. Holds
    /// the stream's highest batch.
    Repeated { highest: u64 },
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

/// A flow store of either backend, as [`FlowLocation::open`] makes it.
pub type BoxedFlowStore = Box<dyn FlowStore>;

/// A flow store of either backend, as the server and collectors share it between
/// request handlers and writers: no lock around it (see [`FlowStore`]).
pub type SharedFlowStore = std::sync::Arc<dyn FlowStore>;

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

/// Which summaries [`FlowStore::groups`] and [`FlowStore::conversations`] fold together.
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

/// The traffic of a window between two addresses on one service and process, with the
/// enrichment it was written with. Summaries of one conversation enriched differently
/// (the inventory changed during the window) stay apart, so each row's labels are the
/// ones its summaries carry: what a caller's visibility is decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub port: u16,
    pub process: Option<String>,
    pub src_workload: Option<String>,
    pub dst_workload: Option<String>,
    pub src_labels: Labels,
    pub dst_labels: Labels,
    pub packets: u64,
    pub bytes: u64,
    pub connections: u64,
    /// Connections, counting a summary that counted none as one: the weight the
    /// recommender and coverage give traffic (an exporter that does not count
    /// connections still saw the conversation once per summary).
    pub observations: u64,
    /// How many summaries it folds.
    pub summaries: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

/// What [`FlowStore::conversations`] answers: the conversations, and whether the limit
/// left any out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationPage {
    pub items: Vec<Conversation>,
    pub more: bool,
}
