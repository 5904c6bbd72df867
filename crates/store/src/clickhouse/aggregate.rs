//! Aggregations computed in ClickHouse: the map's groups, conversations for
//! recommendation and coverage, and the per-address activity of the sprawl report.

use bulkhead_model::Bucket;

use super::rows::{self, SeenRow, bucket_code, hex};
use super::{ClickHouseFlowStore, backend, corrupt, schema};
use crate::{SeenAddress, StoreError};

/// The sum of `expr` over a group as `{name}_total`, saturating at `u64::MAX` (the float
/// sum passes 1.8e19 only when the exact one is near 2^64, where the integer one wraps).
fn total(expr: &str, name: &str) -> String {
    format!(
        "if(sum(toFloat64({expr})) >= 1.8e19, toUInt64(18446744073709551615), \
         sum({expr})) AS {name}_total"
    )
}

/// The merged summaries of one bucket width whose buckets start in `[from_ms, to_ms)`.
fn merged_window(bucket: Bucket, from_ms: i64, to_ms: i64) -> String {
    schema::merged(
        &format!(
            "WHERE bucket = {} AND bucket_start >= {from_ms} AND bucket_start < {to_ms}",
            bucket_code(bucket)
        ),
        "",
    )
}

impl ClickHouseFlowStore {
    pub(super) fn groups_in(&self, q: &crate::GroupQuery) -> Result<crate::GroupPage, StoreError> {
        if q.limit == 0 || q.from_ms >= q.to_ms {
            return Ok(crate::GroupPage {
                items: Vec::new(),
                more: false,
            });
        }
        let merged = merged_window(q.bucket, q.from_ms, q.to_ms);
        let sql = format!(
            "SELECT if(src_workload = '', src, '') AS src_end,
                if(dst_workload = '', dst, '') AS dst_end,
                src_workload, dst_workload, src_labels, dst_labels, proto, port,
                prov_verdict, draft_verdict, {}, {}, {},
                count() AS summaries, min(first_seen) AS first, max(last_seen) AS last
             FROM ({merged})
             GROUP BY src_end, dst_end, src_workload, dst_workload, src_labels, dst_labels,
                proto, port, prov_verdict, draft_verdict
             ORDER BY last DESC LIMIT {}",
            total("packets", "packets"),
            total("bytes", "bytes"),
            total("connections", "connections"),
            q.limit.saturating_add(1).min(1 << 40),
        );
        let rows: Vec<rows::GroupRow> = self
            .fetch(sql, Vec::new())
            .map_err(backend("grouping flow summaries in ClickHouse"))?;
        let mut items = rows
            .into_iter()
            .map(|r| {
                let row = format!("group {}→{}", r.src_workload, r.dst_workload);
                r.decode().map_err(corrupt(row))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let more = items.len() > q.limit;
        items.truncate(q.limit);
        Ok(crate::GroupPage { items, more })
    }

    pub(super) fn seen_addresses_in(
        &self,
        bucket: Bucket,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<SeenAddress>, StoreError> {
        // Each summary counts once for each of its two ends; the provider end also
        // records the port it served (-1 on the consumer end).
        let merged = merged_window(bucket, from_ms, to_ms);
        let sql = format!(
            "SELECT tupleElement(end, 1) AS addr,
                min(first_seen) AS first_seen, max(last_seen) AS last_seen,
                if(sum(toFloat64(bytes)) >= 1.8e19, toUInt64(18446744073709551615),
                   sum(bytes)) AS bytes,
                if(sum(toFloat64(connections)) >= 1.8e19, toUInt64(18446744073709551615),
                   sum(connections)) AS connections,
                uniqExact(tupleElement(end, 2)) AS peers,
                groupUniqArrayIf(tupleElement(end, 3), tupleElement(end, 3) >= 0) AS served,
                groupUniqArrayIf(reporter, reporter != '') AS reporters,
                groupUniqArrayIf(tupleElement(end, 4), tupleElement(end, 4) != '')
                    AS workloads
             FROM ({merged})
             ARRAY JOIN [(src, dst, toInt32(-1), src_workload),
                         (dst, src, toInt32(proto * 65536 + port), dst_workload)]
                 AS end
             GROUP BY addr ORDER BY addr"
        );
        let rows: Vec<SeenRow> = self
            .fetch(sql, Vec::new())
            .map_err(backend("aggregating addresses in ClickHouse"))?;
        rows.into_iter()
            .map(|r| {
                let row = format!("address {}", hex(&r.addr));
                r.decode().map_err(corrupt(row))
            })
            .collect()
    }

    pub(super) fn conversations_in(
        &self,
        q: &crate::GroupQuery,
    ) -> Result<crate::ConversationPage, StoreError> {
        if q.limit == 0 || q.from_ms >= q.to_ms {
            return Ok(crate::ConversationPage {
                items: Vec::new(),
                more: false,
            });
        }
        let merged = merged_window(q.bucket, q.from_ms, q.to_ms);
        let sql = format!(
            "SELECT src, dst, proto, port, process, src_workload, dst_workload,
                src_labels, dst_labels, {}, {}, {}, {},
                count() AS summaries, min(first_seen) AS first, max(last_seen) AS last
             FROM ({merged})
             GROUP BY src, dst, proto, port, process, src_workload, dst_workload,
                src_labels, dst_labels
             ORDER BY last DESC LIMIT {}",
            total("packets", "packets"),
            total("bytes", "bytes"),
            total("connections", "connections"),
            total("greatest(connections, 1)", "observations"),
            q.limit.saturating_add(1).min(1 << 40),
        );
        let rows: Vec<rows::ConversationRow> = self.fetch(sql, Vec::new()).map_err(backend(
            "folding flow summaries into conversations in ClickHouse",
        ))?;
        let mut items = rows
            .into_iter()
            .map(|r| {
                let row = format!("conversation {} → {}", hex(&r.src), hex(&r.dst));
                r.decode().map_err(corrupt(row))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let more = items.len() > q.limit;
        items.truncate(q.limit);
        Ok(crate::ConversationPage { items, more })
    }
}
