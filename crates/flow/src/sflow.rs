//! sFlow v5.

use std::net::SocketAddr;

use crate::DecodeError;
use crate::decoder::Counters;
use crate::record::FlowRecord;

pub(crate) fn decode(
    _exporter: SocketAddr,
    _d: &[u8],
    _counters: &mut Counters,
    _out: &mut Vec<FlowRecord>,
) -> Result<(), DecodeError> {
    Err(DecodeError::Sflow("not implemented"))
}
