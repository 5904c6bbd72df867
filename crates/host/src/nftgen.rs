//! The nftables ruleset generation of this network namespace: a counter the kernel bumps
//! with every committed nftables transaction (any table, any program). While it has not
//! moved, no rule, chain or set element of any table can have changed, so a tamper check
//! can skip reading a large table back.

use std::io;
use std::time::Duration;

use netlink_sys::protocols::NETLINK_NETFILTER;

use crate::HostError;
use crate::netlink;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
/// Attribute type bits that are flags, not the type.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// The current generation (`NFT_MSG_GETGEN`).
pub fn nftables_generation() -> Result<u32, HostError> {
    const WHAT: &str = "reading the nftables generation";
    let socket = netlink::open(NETLINK_NETFILTER, WHAT)?;
    socket
        .send(&getgen_request(1), 0)
        .map_err(|source| HostError::Netlink { what: WHAT, source })?;
    let mut buf = vec![0u8; 8192];
    for _ in 0..4 {
        if !netlink::wait_readable(&socket, Duration::from_secs(2), WHAT)? {
            break;
        }
        let Some(n) = netlink::recv(&socket, &mut buf, WHAT)? else {
            continue;
        };
        match decode_generation(&buf[..n]) {
            Ok(Some(g)) => return Ok(g),
            Ok(None) => continue,
            Err(code) => {
                return Err(HostError::Refused {
                    what: WHAT,
                    source: io::Error::from_raw_os_error(code),
                });
            }
        }
    }
    Err(HostError::Timeout {
        what: WHAT,
        seconds: 2,
    })
}

/// nlmsghdr + nfgenmsg (family unspec, version 0, res_id 0), native byte order.
fn getgen_request(seq: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(20);
    m.extend_from_slice(&20u32.to_ne_bytes());
    m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN).to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m
}

/// The generation in a datagram's NEWGEN message: `Ok(None)` when it holds none (an
/// acknowledgement), `Err(errno)` when the kernel answered with an error.
fn decode_generation(datagram: &[u8]) -> Result<Option<u32>, i32> {
    for msg in netlink::split(datagram) {
        let (Some(kind), Some(body)) = (
            msg.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]])),
            msg.get(16..),
        ) else {
            continue;
        };
        if kind == NLMSG_ERROR {
            let code = body
                .get(..4)
                .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(0);
            if code != 0 {
                return Err(code.checked_neg().unwrap_or(i32::MAX));
            }
            continue;
        }
        if kind != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
            continue;
        }
        // After the 4-byte nfgenmsg, attributes: length, type, value, padded to 4.
        let mut attrs = body.get(4..).unwrap_or_default();
        while let Some(head) = attrs.get(..4) {
            let len = usize::from(u16::from_ne_bytes([head[0], head[1]]));
            let kind = u16::from_ne_bytes([head[2], head[3]]) & NLA_TYPE_MASK;
            if len < 4 {
                break;
            }
            let Some(value) = attrs.get(4..len) else {
                break;
            };
            if kind == NFTA_GEN_ID
                && let Some(v) = value.get(..4)
            {
                return Ok(Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]])));
            }
            attrs = attrs.get((len + 3) & !3..).unwrap_or_default();
        }
    }
    Ok(None)
}

/// NFNLGRP_NFTABLES: every committed nftables change is multicast to this group (what
/// `nft monitor` reads).
const GROUP_NFTABLES: u32 = 7;

/// Wakes on every nftables change in this network namespace, as it is committed, so a
/// tamper is seen at once instead of at the next poll. It only says *that* something
/// changed; comparing the generation and reading the table back stays the checker's job.
#[derive(Debug)]
pub struct NftablesWatch {
    socket: netlink_sys::Socket,
    buf: Vec<u8>,
}

impl NftablesWatch {
    pub fn open() -> Result<Self, HostError> {
        const WHAT: &str = "watching nftables changes";
        let socket = netlink::open(NETLINK_NETFILTER, WHAT)?;
        socket
            .add_membership(GROUP_NFTABLES)
            .map_err(|source| HostError::Netlink { what: WHAT, source })?;
        // A large transaction (100k set elements) is one message per element.
        let _ = socket.set_rx_buf_sz(4 * 1024 * 1024);
        Ok(Self {
            socket,
            buf: vec![0; netlink::RECV_BUF],
        })
    }

    /// Waits up to `timeout` for a change; `true` when one (or more) came, having read
    /// every message queued so far. A receive buffer that overflowed counts as a change:
    /// messages were lost, so something did change.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, HostError> {
        const WHAT: &str = "reading nftables changes";
        if !netlink::wait_readable(&self.socket, timeout, WHAT)? {
            return Ok(false);
        }
        loop {
            // Non-blocking drain: the first read is known to be ready.
            let _ = netlink::recv(&self.socket, &mut self.buf, WHAT)?;
            if !netlink::wait_readable(&self.socket, Duration::ZERO, WHAT)? {
                return Ok(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&(16 + body.len() as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&1u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn the_generation_is_read_from_newgen_and_errors_are_told_apart() {
        let mut body = vec![0, 0, 0, 7];
        // NFTA_GEN_ID = 0x01020304, then NFTA_GEN_PROC_PID.
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&1u16.to_ne_bytes());
        body.extend_from_slice(&[1, 2, 3, 4]);
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&2u16.to_ne_bytes());
        body.extend_from_slice(&[0, 0, 0, 9]);
        let newgen = message((10 << 8) | 15, &body);
        assert_eq!(decode_generation(&newgen), Ok(Some(0x0102_0304)));
        let ack = message(2, &[0; 20]);
        assert_eq!(decode_generation(&ack), Ok(None));
        let mut refused = (-1i32).to_ne_bytes().to_vec();
        refused.extend_from_slice(&[0; 16]);
        assert_eq!(decode_generation(&message(2, &refused)), Err(1));
        let mut both = ack.clone();
        both.extend_from_slice(&newgen);
        assert_eq!(decode_generation(&both), Ok(Some(0x0102_0304)));
        assert_eq!(getgen_request(1).len(), 20);
    }

    proptest! {
        #[test]
        fn decoding_never_panics(d in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_generation(&d);
        }
    }
}
