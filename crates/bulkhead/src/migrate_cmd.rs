//! `bulkhead migrate`: moves a SQLite deployment (one data directory, its server
//! stopped) onto PostgreSQL and ClickHouse. The control store is copied whole in one
//! transaction into an empty PostgreSQL database; flow summaries are copied day by day
//! into an empty ClickHouse database, then counted on both sides.

use std::path::PathBuf;

use bulkhead_store::{
    Bucket, ClickHouseFlowStore, ClickHouseOptions, ControlStore, FlowQuery, FlowStore,
    SqliteFlowStore,
};
use clap::Args;

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The data directory of the SQLite deployment (stop its server first).
    #[arg(long, env = "BULKHEAD_DATA")]
    pub data: PathBuf,
    /// Copy control.sqlite into this PostgreSQL database (postgres://…), which must be
    /// empty.
    #[arg(long, env = "BULKHEAD_DATABASE")]
    pub database: Option<String>,
    /// Copy flows.sqlite into this ClickHouse database (clickhouse://host:port/db),
    /// which must be empty.
    #[arg(long, env = "BULKHEAD_FLOWS")]
    pub flows: Option<String>,
}

const DAY_MS: i64 = 86_400_000;

fn existing(path: PathBuf) -> anyhow::Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        eprintln!("error: {} does not exist", path.display());
        Err(crate::Reported(crate::EXIT_INVALID).into())
    }
}

pub fn run(a: MigrateArgs) -> anyhow::Result<()> {
    if a.database.is_none() && a.flows.is_none() {
        eprintln!("error: give --database postgres://… and/or --flows clickhouse://…");
        return Err(crate::Reported(crate::EXIT_INVALID).into());
    }
    if let Some(url) = &a.database {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            eprintln!("error: --database must be a postgres:// or postgresql:// URL");
            return Err(crate::Reported(crate::EXIT_INVALID).into());
        }
        let source = ControlStore::open(existing(a.data.join("control.sqlite"))?)?;
        let mut target = ControlStore::connect_postgres(url)?;
        let report = source.copy_into(&mut target)?;
        let rows: u64 = report.iter().map(|(_, n)| n).sum();
        let tables: Vec<String> = report
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        outln!(
            "control store: copied {rows} rows into {} ({})",
            crate::redact_url(url),
            tables.join(", ")
        );
    }
    if let Some(url) = &a.flows {
        let source = SqliteFlowStore::open(existing(a.data.join("flows.sqlite"))?)?;
        // Both widths as stored: the hours are the collectors' own.
        let target =
            ClickHouseFlowStore::connect_with(url, ClickHouseOptions { hour_rollup: false })?;
        let before = target.stats()?;
        if before.minute.rows + before.hour.rows > 0 {
            anyhow::bail!(
                "{} already holds flow summaries; migrate only into an empty database",
                target.target()
            );
        }
        let stats = source.stats()?;
        let mut copied = 0u64;
        for bucket in [Bucket::Minute, Bucket::Hour] {
            let s = stats.get(bucket);
            let (Some(oldest), Some(newest)) = (s.oldest_start_ms, s.newest_start_ms) else {
                continue;
            };
            let mut day = Bucket::Hour.start_of(oldest);
            while day <= newest {
                let mut q = FlowQuery::new(bucket, day, day.saturating_add(DAY_MS));
                q.limit = usize::MAX;
                let rows = source.query(&q)?;
                for chunk in rows.chunks(50_000) {
                    target.upsert(chunk)?;
                }
                copied += rows.len() as u64;
                day = day.saturating_add(DAY_MS);
            }
        }
        let after = target.stats()?;
        let (want, got) = (
            stats.minute.rows + stats.hour.rows,
            after.minute.rows + after.hour.rows,
        );
        if got != want {
            anyhow::bail!("copied {copied} flow summaries but the target holds {got} of {want}");
        }
        outln!(
            "flow store: copied {copied} summaries ({} minute, {} hour) into {}",
            stats.minute.rows,
            stats.hour.rows,
            target.target()
        );
    }
    Ok(())
}
