//! Writes: upserts that merge into stored summaries, interning, expiry.

use rustc_hash::FxHashMap;

use bulkhead_model::{Bucket, FlowSummary, Labels, SummaryVerdict};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::Writer;
use super::decode::{AddrBytes, bucket_code, counter, verdict_code};
use crate::{BatchMark, BatchWrite, StoreError};

/// Caches of interned ids are dropped past this size, so that a flood of distinct
/// process names cannot grow memory without bound.
const MAX_CACHED_IDS: usize = 100_000;

const UPSERT: &str = "INSERT INTO summary (
        bucket, bucket_start, src, dst, proto, port, process,
        packets, bytes, connections, first_seen, last_seen, reporter,
        src_workload, dst_workload, src_labels, dst_labels,
        prov_verdict, prov_rules, draft_verdict, draft_rules)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
        ?18, ?19, ?20, ?21)
    ON CONFLICT (bucket, bucket_start, src, dst, proto, port, process) DO UPDATE SET
        packets = CASE WHEN excluded.packets > 9223372036854775807 - packets
            THEN 9223372036854775807 ELSE packets + excluded.packets END,
        bytes = CASE WHEN excluded.bytes > 9223372036854775807 - bytes
            THEN 9223372036854775807 ELSE bytes + excluded.bytes END,
        connections = CASE WHEN excluded.connections > 9223372036854775807 - connections
            THEN 9223372036854775807 ELSE connections + excluded.connections END,
        first_seen = min(first_seen, excluded.first_seen),
        last_seen = max(last_seen, excluded.last_seen),
        reporter = coalesce(reporter, excluded.reporter),
        src_workload = excluded.src_workload,
        dst_workload = excluded.dst_workload,
        src_labels = excluded.src_labels,
        dst_labels = excluded.dst_labels,
        prov_verdict = excluded.prov_verdict,
        prov_rules = excluded.prov_rules,
        draft_verdict = excluded.draft_verdict,
        draft_rules = excluded.draft_rules";

impl Writer {
    /// One upsert, in one transaction; `before_commit` runs inside it (a test hook).
    pub(super) fn upsert(
        &mut self,
        summaries: &[FlowSummary],
        before_commit: impl FnOnce(),
    ) -> Result<(), StoreError> {
        self.upsert_marked(None, summaries, before_commit)
            .map(|_| ())
    }

    /// One upsert, in one transaction; with a batch mark, the check that the batch is
    /// new and the move of the stream's mark are in it too.
    pub(super) fn upsert_marked(
        &mut self,
        mark: Option<(BatchMark<'_>, i64)>,
        summaries: &[FlowSummary],
        before_commit: impl FnOnce(),
    ) -> Result<BatchWrite, StoreError> {
        let result = self.upsert_in_transaction(mark, summaries, before_commit);
        if result.is_err() {
            self.forget_ids();
        }
        result
    }

    pub(super) fn forget_batches(&mut self, older_than_ms: i64) -> Result<u64, StoreError> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM batch_mark WHERE written_ms < ?1")
            .and_then(|mut s| s.execute([older_than_ms]))
            .map_err(StoreError::backend("forgetting old batch marks"))?;
        Ok(n as u64)
    }

    pub(super) fn forget_ids(&mut self) {
        self.names.clear();
        self.rule_lists.clear();
        self.label_sets.clear();
    }

    fn upsert_in_transaction(
        &mut self,
        mark: Option<(BatchMark<'_>, i64)>,
        summaries: &[FlowSummary],
        before_commit: impl FnOnce(),
    ) -> Result<BatchWrite, StoreError> {
        if self.names.len() + self.rule_lists.len() + self.label_sets.len() > MAX_CACHED_IDS {
            self.forget_ids();
        }
        let Self {
            conn,
            names,
            rule_lists,
            label_sets,
        } = self;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::backend("starting a flow summary write"))?;
        if let Some((m, _)) = &mark {
            let highest = batch_mark_in(&tx, m.source, m.stream)?;
            if let Some(highest) = highest.filter(|&h| h >= m.seq) {
                // Dropped without a commit: rolled back, nothing written.
                return Ok(BatchWrite::Repeated { highest });
            }
        }
        {
            let mut ids = Interner {
                conn: &tx,
                names,
                rule_lists,
                label_sets,
            };
            let mut stmt = tx
                .prepare_cached(UPSERT)
                .map_err(StoreError::backend("preparing the summary upsert"))?;
            for s in summaries {
                let k = &s.key;
                let process = match &k.process {
                    Some(p) => ids.name(p)?,
                    None => 0,
                };
                let reporter = s.reporter.as_deref().map(|r| ids.name(r)).transpose()?;
                let src_workload = s.src_workload.as_deref().map(|w| ids.name(w)).transpose()?;
                let dst_workload = s.dst_workload.as_deref().map(|w| ids.name(w)).transpose()?;
                let src_labels = ids.label_set(&s.src_labels)?;
                let dst_labels = ids.label_set(&s.dst_labels)?;
                let (prov_verdict, prov_rules) = ids.verdict(s.provisioned.as_ref())?;
                let (draft_verdict, draft_rules) = ids.verdict(s.draft.as_ref())?;
                let src = AddrBytes::new(k.src);
                let dst = AddrBytes::new(k.dst);
                stmt.execute(params![
                    bucket_code(k.bucket),
                    k.bucket_start_ms,
                    src.as_slice(),
                    dst.as_slice(),
                    k.proto,
                    k.port,
                    process,
                    counter(s.packets),
                    counter(s.bytes),
                    counter(s.connections),
                    s.first_seen_ms,
                    s.last_seen_ms,
                    reporter,
                    src_workload,
                    dst_workload,
                    src_labels,
                    dst_labels,
                    prov_verdict,
                    prov_rules,
                    draft_verdict,
                    draft_rules,
                ])
                .map_err(StoreError::backend("writing a flow summary"))?;
            }
        }
        if let Some((m, at_ms)) = &mark {
            let seq = i64::try_from(m.seq).map_err(|_| StoreError::Backend {
                context: "recording a batch number",
                source: format!("batch {} is past 2^63 - 1", m.seq).into(),
            })?;
            tx.prepare_cached(
                "INSERT INTO batch_mark (source, stream, seq, written_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (source, stream) DO UPDATE SET
                     seq = excluded.seq, written_ms = excluded.written_ms",
            )
            .and_then(|mut s| s.execute(params![m.source, m.stream, seq, at_ms]))
            .map_err(StoreError::backend("recording a batch number"))?;
        }
        before_commit();
        tx.commit()
            .map_err(StoreError::backend("committing flow summaries"))?;
        Ok(BatchWrite::Stored)
    }

    pub(super) fn expire(&mut self, older_than_ms: i64) -> Result<u64, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::backend("starting expiry"))?;
        let mut deleted = 0u64;
        for bucket in [Bucket::Minute, Bucket::Hour] {
            // A bucket ends at start + width (exclusive), so it is wholly past when
            // start + width <= older_than.
            let last_start = older_than_ms.saturating_sub(bucket.millis());
            let n = tx
                .prepare_cached("DELETE FROM summary WHERE bucket = ?1 AND bucket_start <= ?2")
                .and_then(|mut s| s.execute(params![bucket_code(bucket), last_start]))
                .map_err(StoreError::backend("deleting expired flow summaries"))?;
            deleted += n as u64;
        }
        tx.commit()
            .map_err(StoreError::backend("committing expiry"))?;
        Ok(deleted)
    }
}

/// The highest batch recorded for a stream, read on `conn` (a transaction's, or a
/// reader's).
pub(super) fn batch_mark_in(
    conn: &Connection,
    source: &str,
    stream: &str,
) -> Result<Option<u64>, StoreError> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT seq FROM batch_mark WHERE source = ?1 AND stream = ?2")
        .and_then(|mut s| s.query_row([source, stream], |r| r.get(0)).optional())
        .map_err(StoreError::backend("reading a batch mark"))?;
    Ok(seq.map(|s| s.max(0).cast_unsigned()))
}

/// Interns strings and label sets inside the write transaction.
struct Interner<'a> {
    conn: &'a Connection,
    names: &'a mut FxHashMap<String, i64>,
    rule_lists: &'a mut FxHashMap<Vec<String>, i64>,
    label_sets: &'a mut FxHashMap<Labels, i64>,
}

impl Interner<'_> {
    fn name(&mut self, text: &str) -> Result<i64, StoreError> {
        if let Some(&id) = self.names.get(text) {
            return Ok(id);
        }
        let id = intern_text(self.conn, text)?;
        self.names.insert(text.to_string(), id);
        Ok(id)
    }

    fn verdict(
        &mut self,
        v: Option<&SummaryVerdict>,
    ) -> Result<(Option<i64>, Option<i64>), StoreError> {
        let Some(v) = v else {
            return Ok((None, None));
        };
        let rules = match self.rule_lists.get(v.rules.as_slice()) {
            Some(&id) => id,
            None => {
                // JSON, because rule ids are free text and order matters.
                let text = serde_json::to_string(&v.rules).map_err(|e| StoreError::Backend {
                    context: "encoding a rule list",
                    source: Box::new(e),
                })?;
                let id = intern_text(self.conn, &text)?;
                self.rule_lists.insert(v.rules.clone(), id);
                id
            }
        };
        Ok((Some(verdict_code(v.verdict)), Some(rules)))
    }

    fn label_set(&mut self, labels: &Labels) -> Result<i64, StoreError> {
        if let Some(&id) = self.label_sets.get(labels) {
            return Ok(id);
        }
        // `Labels` displays sorted `k=v,k=v`, and keys and values cannot hold ',' or
        // '=', so the text is canonical and parses back.
        let canon = labels.to_string();
        let err = StoreError::backend("interning a label set");
        let existing: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM labelset WHERE canon = ?1")
            .and_then(|mut s| s.query_row([&canon], |r| r.get(0)).optional())
            .map_err(StoreError::backend("looking up a label set"))?;
        let id = match existing {
            Some(id) => id,
            None => {
                let insert = || -> rusqlite::Result<i64> {
                    self.conn
                        .prepare_cached("INSERT INTO labelset (canon) VALUES (?1)")?
                        .execute([&canon])?;
                    let id = self.conn.last_insert_rowid();
                    let mut member = self.conn.prepare_cached(
                        "INSERT INTO labelset_label (key, value, set_id) VALUES (?1, ?2, ?3)",
                    )?;
                    for (k, v) in labels.iter() {
                        member.execute(params![k, v, id])?;
                    }
                    Ok(id)
                };
                insert().map_err(err)?
            }
        };
        self.label_sets.insert(labels.clone(), id);
        Ok(id)
    }
}

fn intern_text(conn: &Connection, text: &str) -> Result<i64, StoreError> {
    let existing: Option<i64> = conn
        .prepare_cached("SELECT id FROM dict WHERE text = ?1")
        .and_then(|mut s| s.query_row([text], |r| r.get(0)).optional())
        .map_err(StoreError::backend("looking up a name"))?;
    if let Some(id) = existing {
        return Ok(id);
    }
    conn.prepare_cached("INSERT INTO dict (text) VALUES (?1)")
        .and_then(|mut s| s.execute([text]))
        .map_err(StoreError::backend("interning a name"))?;
    Ok(conn.last_insert_rowid())
}
