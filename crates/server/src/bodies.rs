//! Small response bodies several handlers share, typed so that the OpenAPI document
//! (derived from them) says exactly what is sent.

use serde::Serialize;
use utoipa::ToSchema;

/// Something named was deleted.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedName {
    pub deleted: String,
}

/// Something numbered was deleted.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedId {
    pub deleted: u64,
}

/// Something numbered was revoked (it stays listed, marked).
#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedId {
    pub revoked: u64,
}

/// A pending agent was let in as its workload.
#[derive(Debug, Serialize, ToSchema)]
pub struct Approved {
    pub approved: u64,
    pub workload: String,
}

/// How many events of a batch were taken.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub accepted: usize,
}

/// How many objects the draft now holds after a whole replacement.
#[derive(Debug, Serialize, ToSchema)]
pub struct DraftReplaced {
    pub objects: usize,
}

/// The version the draft was set back to.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reverted {
    pub draft_reverted_to: u64,
}
