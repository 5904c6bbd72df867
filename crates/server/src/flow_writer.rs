//! Writes the collectors' summaries to the flow store, holding them while the store
//! refuses (a ClickHouse restart, a full disk) and delivering them in order once it
//! accepts again. What is held is bounded: past the bound the oldest batches are
//! dropped, counted and logged, so that an outage costs memory up to a known amount and
//! never the newest traffic.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use bulkhead_model::FlowSummary;
use bulkhead_store::FlowStore;

/// Summaries held at most while the store refuses writes (about 400 bytes each).
pub const MAX_HELD_SUMMARIES: usize = 1_000_000;

/// What the writer did, for `/metrics`.
#[derive(Debug, Default)]
pub struct FlowWriteCounters {
    pub stored: AtomicU64,
    /// Summaries waiting for the store now.
    pub held: AtomicU64,
    /// Summaries dropped because the store refused them for too long.
    pub dropped: AtomicU64,
    /// Writes the store refused.
    pub failures: AtomicU64,
}

#[derive(Debug)]
pub struct FlowBacklog {
    pending: VecDeque<Vec<FlowSummary>>,
    held: usize,
    limit: usize,
}

impl Default for FlowBacklog {
    fn default() -> Self {
        Self::with_limit(MAX_HELD_SUMMARIES)
    }
}

impl FlowBacklog {
    pub fn with_limit(limit: usize) -> Self {
        Self {
            pending: VecDeque::new(),
            held: 0,
            limit,
        }
    }

    /// Summaries held now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Queues `batch` behind what is held and writes as much as the store accepts, in
    /// order. Returns whether everything held was delivered.
    pub fn write(
        &mut self,
        store: &dyn FlowStore,
        batch: Vec<FlowSummary>,
        counters: &FlowWriteCounters,
    ) -> bool {
        if !batch.is_empty() {
            self.held += batch.len();
            self.pending.push_back(batch);
        }
        while self.held > self.limit {
            let Some(oldest) = self.pending.pop_front() else {
                break;
            };
            self.held -= oldest.len();
            counters
                .dropped
                .fetch_add(oldest.len() as u64, Ordering::Relaxed);
            tracing::error!(
                "dropped {} flow summaries: the flow store refused writes while {} more \
                 arrived (the bound is {})",
                oldest.len(),
                self.held,
                self.limit
            );
        }
        let mut delivered = true;
        while let Some(front) = self.pending.front() {
            match store.upsert(front) {
                Ok(()) => {
                    counters
                        .stored
                        .fetch_add(front.len() as u64, Ordering::Relaxed);
                    self.held -= front.len();
                    self.pending.pop_front();
                }
                Err(e) => {
                    counters.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "the flow store refused {} summaries; holding {} until it accepts \
                         again: {e}",
                        front.len(),
                        self.held
                    );
                    delivered = false;
                    break;
                }
            }
        }
        counters.held.store(self.held as u64, Ordering::Relaxed);
        delivered
    }
}
