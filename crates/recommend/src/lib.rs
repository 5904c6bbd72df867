//! Rule recommendation and coverage, from flow summaries or the [`Traffic`] a flow store
//! folds them into. Pure: no IO, no clock.
//!
//! - [`recommend`] turns observed conversations plus the inventory into label-based
//!   policy-as-code (rulesets per application scope, shared services written once, IP
//!   lists for unmanaged peers, port ranges where ports cluster) and lists every place
//!   where the proposal allows more than was observed ([`Widening`]).
//! - [`coverage`] measures a policy against observed traffic: the share of connections
//!   and bytes it allows, what it would block grouped by source, destination and port,
//!   and the rules nothing used. It evaluates with [`bulkhead_policy::CompiledPolicy`].

#![forbid(unsafe_code)]

pub mod cidr;
mod coverage;
pub mod ports;
mod recommend;
mod traffic;

pub use coverage::{
    BlockedGroup, Coverage, CoverageOptions, OVER_BROAD_FACTOR, OverBroad, RuleHits, coverage,
    coverage_of_traffic,
};
pub use recommend::{
    Granularity, KEY_APP, KEY_ENV, KEY_ROLE, Options, Recommendation, RecommendedFile, Stats,
    Widening, WideningKind, recommend, recommend_traffic,
};
pub use traffic::{Traffic, fold};
