//! The ClickHouse schema. Written for the oldest release we support (18.16, Debian's):
//! no TTL, no `SimpleAggregateFunction`, no `RowBinaryWithNamesAndTypes`.
//!
//! Writers insert plain rows into `summary_in`, a `Null` table that keeps nothing; two
//! materialized views turn each inserted block into aggregate states in `summary`, an
//! `AggregatingMergeTree` that ClickHouse compacts in the background:
//! - `summary_fold` keeps every row at its own bucket width, so that repeated writes of a
//!   key (later batches, other collectors) fold together as [`FlowSummary::merge`] says;
//! - `summary_hours` rolls the minute rows marked `derive_hour` up into hour rows, so
//!   that hours are computed where the data is rather than by every writer.
//!
//! Counters are kept twice, as an exact `UInt64` sum and as a `Float64` sum that shows
//! when the exact one wrapped, so that reads can saturate at `i64::MAX` like the SQLite
//! store. "Latest wins" columns (enrichment and verdicts) are one `argMax` over a
//! sequence number the writer assigns; the reporter is the first non-empty one (an
//! `argMin` where an empty reporter ranks last).
//!
//! Rows are partitioned by day of their bucket start, so that retention drops whole
//! partitions; the boundary day is deleted with a mutation.
//!
//! Filters on enrichment (workload, labels) can only be decided on merged states, and the
//! rows of one workload are spread over every granule of a time window, so such a query
//! would merge the whole window. `summary_terms` is an inverted index beside it, ordered
//! by term: one row per (term, key) for each workload (`w:+name`, either side) and label
//! (`s:k=v` on the consumer, `d:k=v` on the provider) a key was ever written with. A
//! filtered query first reads the keys of its term (a narrow range), then merges only
//! those; the exact filter still runs on the merged values, since the index is a
//! superset (a key relabelled later keeps its old terms).
//!
//! [`FlowSummary::merge`]: bulkhead_model::FlowSummary::merge

/// The schema version this build writes. `schema_version` holds it. Version 2 added
/// `batch_mark`.
pub const SCHEMA_VERSION: i64 = 2;

/// Milliseconds per partition.
pub const PARTITION_MS: i64 = 86_400_000;

pub const KEY: &str = "bucket, bucket_start, src, dst, proto, port, process";

const STATES: &str = "sumState(packets) AS packets_sum,
        sumState(toFloat64(packets)) AS packets_fsum,
        sumState(bytes) AS bytes_sum,
        sumState(toFloat64(bytes)) AS bytes_fsum,
        sumState(connections) AS connections_sum,
        sumState(toFloat64(connections)) AS connections_fsum,
        minState(first_seen) AS first_seen_min,
        maxState(last_seen) AS last_seen_max,
        argMinState(reporter, if(reporter = '', toUInt64(18446744073709551615), seq))
            AS reporter_first,
        argMaxState((src_workload, dst_workload, src_labels, dst_labels,
                     prov_verdict, prov_rules, draft_verdict, draft_rules), seq)
            AS enrichment_last";

/// The index terms of an inserted row; see the module comment.
const TERMS: &str = "arrayConcat(
        [concat('w:', src_workload), concat('w:', dst_workload)],
        arrayMap(l -> concat('s:', l), splitByChar(',', src_labels)),
        arrayMap(l -> concat('d:', l), splitByChar(',', dst_labels)))";

/// The statements that create the schema, in order; each is idempotent, so running
/// them all on a database of an older version migrates it.
pub fn create_statements() -> Vec<String> {
    vec![
        "CREATE TABLE IF NOT EXISTS schema_version (version Int64) ENGINE = TinyLog".into(),
        "CREATE TABLE IF NOT EXISTS summary_in (
            bucket UInt8, bucket_start Int64, src String, dst String, proto UInt8,
            port UInt16, process String,
            packets UInt64, bytes UInt64, connections UInt64,
            first_seen Int64, last_seen Int64, reporter String,
            src_workload String, dst_workload String, src_labels String, dst_labels String,
            prov_verdict UInt8, prov_rules String, draft_verdict UInt8, draft_rules String,
            seq UInt64, hour_start Int64, derive_hour UInt8
        ) ENGINE = Null"
            .into(),
        format!(
            "CREATE TABLE IF NOT EXISTS summary (
            bucket UInt8, bucket_start Int64, src String, dst String, proto UInt8,
            port UInt16, process String,
            packets_sum AggregateFunction(sum, UInt64),
            packets_fsum AggregateFunction(sum, Float64),
            bytes_sum AggregateFunction(sum, UInt64),
            bytes_fsum AggregateFunction(sum, Float64),
            connections_sum AggregateFunction(sum, UInt64),
            connections_fsum AggregateFunction(sum, Float64),
            first_seen_min AggregateFunction(min, Int64),
            last_seen_max AggregateFunction(max, Int64),
            reporter_first AggregateFunction(argMin, String, UInt64),
            enrichment_last AggregateFunction(argMax,
                Tuple(String, String, String, String, UInt8, String, UInt8, String), UInt64)
        ) ENGINE = AggregatingMergeTree()
        PARTITION BY intDiv(bucket_start, {PARTITION_MS})
        ORDER BY ({KEY})"
        ),
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS summary_fold TO summary AS
            SELECT {KEY}, {STATES} FROM summary_in GROUP BY {KEY}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS summary_terms (
            term String, bucket UInt8, bucket_start Int64, src String, dst String,
            proto UInt8, port UInt16, process String
        ) ENGINE = ReplacingMergeTree()
        PARTITION BY intDiv(bucket_start, {PARTITION_MS})
        ORDER BY (term, {KEY})"
        ),
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS summary_terms_fold TO summary_terms AS
            SELECT term, {KEY} FROM summary_in ARRAY JOIN {TERMS} AS term"
        ),
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS summary_terms_hours TO summary_terms AS
            SELECT term, toUInt8(1) AS bucket, hour_start AS bucket_start, src, dst, proto,
                port, process
            FROM summary_in ARRAY JOIN {TERMS} AS term WHERE derive_hour = 1"
        ),
        // `hour_start` comes from the writer: an alias computed here from `bucket_start`
        // would shadow the column it is computed from.
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS summary_hours TO summary AS
            SELECT toUInt8(1) AS bucket, hour_start AS bucket_start, src, dst, proto, port,
                process, {STATES}
            FROM summary_in WHERE derive_hour = 1
            GROUP BY hour_start, src, dst, proto, port, process"
        ),
        // The highest batch written of each sender's stream (`FlowStore::upsert_batch`):
        // one row per batch until merges keep the highest of each stream. Readers take
        // the `max`, so they never depend on whether a merge ran.
        "CREATE TABLE IF NOT EXISTS batch_mark (
            source String, stream String, seq UInt64, written_ms Int64
        ) ENGINE = ReplacingMergeTree(seq)
        ORDER BY (source, stream)"
            .into(),
    ]
}

/// Every summary with its states merged: the columns [`super::rows::OutRow`] reads.
/// `{where}` filters stored rows (key columns only), `{having}` merged ones.
pub fn merged(filter: &str, having: &str) -> String {
    const MAX: &str = "toUInt64(9223372036854775807)";
    // The float sum passes 1.7e19 only when the exact sum is at least near 2^64, where
    // the UInt64 one wraps; below that `least` saturates exactly.
    let counter = |c: &str| {
        format!("if(sumMerge({c}_fsum) >= 1.7e19, {MAX}, least(sumMerge({c}_sum), {MAX})) AS {c}")
    };
    format!(
        "SELECT {KEY}, {}, {}, {},
            minMerge(first_seen_min) AS first_seen,
            maxMerge(last_seen_max) AS last_seen,
            argMinMerge(reporter_first) AS reporter,
            tupleElement(argMaxMerge(enrichment_last) AS e, 1) AS src_workload,
            tupleElement(e, 2) AS dst_workload,
            tupleElement(e, 3) AS src_labels,
            tupleElement(e, 4) AS dst_labels,
            tupleElement(e, 5) AS prov_verdict,
            tupleElement(e, 6) AS prov_rules,
            tupleElement(e, 7) AS draft_verdict,
            tupleElement(e, 8) AS draft_rules
        FROM summary {filter}
        GROUP BY {KEY} {having}",
        counter("packets"),
        counter("bytes"),
        counter("connections"),
    )
}
