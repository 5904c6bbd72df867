//! Flow decoding: NetFlow v5, v9, IPFIX (RFC 7011) and sFlow v5 datagrams to
//! [`FlowRecord`]s.
//!
//! Pure: no sockets, no files. The caller hands each datagram to
//! [`Decoder::decode`] with the address it came from; the decoder keeps the
//! template state of every exporter apart.
//!
//! ```
//! use bulkhead_flow::Decoder;
//! let mut decoder = Decoder::new();
//! let exporter = "192.0.2.1:2055".parse().unwrap();
//! assert!(decoder.decode(exporter, &[0, 9]).is_err());
//! assert_eq!(decoder.counters().malformed, 1);
//! ```

mod bytes;
mod decoder;
mod elements;
mod error;
mod exporters;
pub mod import;
mod observation;
mod record;
mod seq;
mod sets;
mod sflow;
mod sflow_counters;
mod template;
mod v5;

pub use decoder::{Counters, Decoder, DecoderConfig};
pub use error::DecodeError;
pub use exporters::{ExporterCounters, ExporterStats, ExporterTableStats, ScopeStats};
pub use observation::Observation;
pub use record::FlowRecord;
pub use sflow::{InterfaceCounters, SFLOW_V5};
