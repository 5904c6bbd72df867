//! From flow records to enriched, verdicted summaries.
//!
//! 1. [`Observation`] (from `bulkhead-flow`): one flow record from any source.
//! 2. [`direction::orient`]: which side is the consumer and which the provider.
//! 3. [`Enricher`]: addresses → workloads and labels; verdicts against the provisioned
//!    policy and the draft.
//! 4. [`Aggregator`]: summaries per (consumer, provider, protocol, provider port,
//!    process) per minute and per hour.
//! 5. [`sprawl::sprawl`]: addresses the traffic shows and the inventory does not know,
//!    and workloads the inventory believes in that the traffic never shows.
//!
//! Pure: the caller supplies records and the current time.

mod aggregator;
pub mod direction;
mod enricher;
pub mod sprawl;

pub use aggregator::{Aggregator, AggregatorStats, Closed, TimeBounds};
pub use direction::{ListeningPorts, Oriented};
pub use enricher::Enricher;

pub use bulkhead_flow::Observation;
