//! nftables for one host: the render / driver split.
//!
//! - [`render`] turns a workload's [`HostPolicy`](bulkhead_policy::host::HostPolicy) into
//!   one `nft -f` transaction that replaces Bulkhead's own table whole. Pure and
//!   deterministic, so it is golden-tested without a kernel.
//! - [`Nft`] is the driver: [`Nft::apply`] feeds a transaction to `nft -f -`,
//!   [`Nft::read_back`] lists the table, [`Nft::snapshot`] takes a canonical form of it
//!   and [`Nft::check_drift`] compares the kernel with a snapshot taken after applying.
//!
//! Everything Bulkhead puts in the kernel lives in one table (`inet bulkhead` by default);
//! nothing else is touched.

#![forbid(unsafe_code)]

mod driver;
mod render;

pub use driver::{Drift, Nft, NftError, Snapshot, apply, read_back};
pub use render::{RenderOptions, render};
