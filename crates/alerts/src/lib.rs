//! Alert delivery sinks.
//!
//! An [`AlertEvent`] goes to a [`Dispatcher`], which hands it to every [`Sink`] through
//! one bounded queue per sink: a sink that is down and retrying never holds up the
//! others, and [`Dispatcher::send`] never waits (a full queue counts a drop).
//!
//! Sinks: [`WebhookSink`] (JSON over HTTP, HMAC-SHA256 signed, see [`verify_signature`])
//! and [`SyslogSink`] (RFC 5424, optionally with a CEF payload, over UDP or TCP with
//! octet-counting framing). Delivery is at least once: a retry after a timeout may
//! repeat an event the receiver already has; receivers deduplicate on `id`.

#![forbid(unsafe_code)]

mod dispatch;
mod email;
mod error;
mod event;
mod retry;
mod syslog;
mod timefmt;
mod webhook;

pub use dispatch::{BoxFuture, Dispatcher, Sink, SinkMetrics};
pub use email::{EmailError, Mailer};
pub use error::{AlertError, Delivery};
pub use event::{AlertEvent, Severity, kind};
pub use retry::RetryPolicy;
pub use syslog::{SyslogFormat, SyslogSink, Transport, format_cef};
pub use timefmt::rfc3339_millis;
pub use webhook::{WebhookSink, sign, verify_signature, verify_signature_fresh};
