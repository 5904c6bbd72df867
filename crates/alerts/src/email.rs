//! E-mail through an SMTP relay, for notices addressed to people (rollout owners).
//!
//! The relay does the hard parts (queueing, DKIM, retries to the final MX); we hand it
//! one message per notice. Plain SMTP to a relay the operator configures, usually on
//! the same host or network; lettre builds the message (headers, encoding) and speaks
//! the protocol.

use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("invalid relay {0:?}: expected HOST:PORT")]
    Relay(String),
    #[error("invalid address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("building the message: {0}")]
    Message(String),
    #[error("relay {relay}: {reason}")]
    Send { relay: String, reason: String },
}

/// Sends mail through one relay.
#[derive(Clone)]
pub struct Mailer {
    relay: String,
    from: Mailbox,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mailer(relay {}, from {})", self.relay, self.from)
    }
}

fn mailbox(address: &str) -> Result<Mailbox, EmailError> {
    address
        .parse()
        .map_err(|e: lettre::address::AddressError| EmailError::Address {
            address: address.to_string(),
            reason: e.to_string(),
        })
}

impl Mailer {
    /// Checks an address the way sending will, so bad ones are refused when configured.
    pub fn check_address(address: &str) -> Result<(), EmailError> {
        mailbox(address).map(drop)
    }

    /// `relay` is `HOST:PORT`; `from` the sender address.
    pub fn new(relay: &str, from: &str) -> Result<Mailer, EmailError> {
        let (host, port) = relay
            .rsplit_once(':')
            .and_then(|(h, p)| {
                Some((
                    h.trim_start_matches('[').trim_end_matches(']'),
                    p.parse::<u16>().ok()?,
                ))
            })
            .ok_or_else(|| EmailError::Relay(relay.to_string()))?;
        // A relay on the operator's network, without TLS: STARTTLS to a local relay
        // adds nothing, and an unencrypted hop is the operator's explicit choice.
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(std::time::Duration::from_secs(15)))
            .build();
        Ok(Mailer {
            relay: relay.to_string(),
            from: mailbox(from)?,
            transport,
        })
    }

    /// One message to every address in `to`. Fails as a whole: the relay accepted it
    /// for all recipients, or the caller retries it.
    pub async fn send(&self, to: &[String], subject: &str, body: &str) -> Result<(), EmailError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        for address in to {
            builder = builder.to(mailbox(address)?);
        }
        let message = builder
            .body(body.to_string())
            .map_err(|e| EmailError::Message(e.to_string()))?;
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|e| EmailError::Send {
                relay: self.relay.clone(),
                reason: e.to_string(),
            })
    }
}
