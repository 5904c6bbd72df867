//! The flow store suite, on SQLite and on ClickHouse (a throwaway server, see
//! bulkhead_testkit::clickhouse): both backends must behave the same, down to the order
//! of rows and the saturation of counters.

mod common;

use std::collections::BTreeSet;

use bulkhead_store::{
    Bucket, ClickHouseFlowStore, ClickHouseOptions, FlowQuery, FlowStore, FlowSummary, Labels,
    Retention, ServedPort, SqliteFlowStore, VerdictKind,
};
use common::*;

mod sqlite {
    use super::*;

    fn open() -> Box<dyn FlowStore> {
        Box::new(SqliteFlowStore::in_memory().unwrap())
    }

    include!("suite/flows.rs");
}

mod clickhouse {
    use super::*;

    /// A new database, with both bucket widths stored as written (the suite writes hour
    /// summaries of its own); the roll-up is tested in tests/clickhouse.rs.
    fn open() -> Box<dyn FlowStore> {
        let url = bulkhead_testkit::clickhouse::clickhouse().fresh_url();
        Box::new(
            ClickHouseFlowStore::connect_with(&url, ClickHouseOptions { hour_rollup: false })
                .unwrap(),
        )
    }

    include!("suite/flows.rs");
}
