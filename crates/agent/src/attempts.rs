//! One connection attempt, one logged packet: a client whose SYN is dropped sends it
//! again (after 1, 3, 7… seconds), and every copy is logged by the kernel. Counting
//! each as a connection would multiply the blocked connections a host reports, so the
//! copies of an attempt (same protocol, addresses and ports, within the retransmission
//! window) are recognised and only counted.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use bulkhead_api::LoggedPacket;

/// TCP gives up on a SYN after about 2 minutes by default (6 retries); a new attempt
/// from the same source port within it is almost always the same connection.
const WINDOW_MS: i64 = 130_000;
/// Attempts remembered at most; past this the oldest are forgotten (a repeat of a
/// forgotten one then counts again: a bounded over-count, never a lost attempt).
const CAPACITY: usize = 16_384;

type Key = (u8, IpAddr, u16, IpAddr, u16);

#[derive(Debug, Default)]
pub struct Attempts {
    seen: HashMap<Key, i64>,
    order: VecDeque<(Key, i64)>,
}

impl Attempts {
    /// Whether this packet starts an attempt (`false`: a copy of one already logged).
    pub fn first(&mut self, p: &LoggedPacket) -> bool {
        let key = (p.protocol, p.src, p.src_port, p.dst, p.dst_port);
        while let Some(&(k, at)) = self.order.front() {
            if p.at_ms - at <= WINDOW_MS && self.order.len() < CAPACITY {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&k) == Some(&at) {
                self.seen.remove(&k);
            }
        }
        match self.seen.get(&key) {
            Some(&at) if p.at_ms - at <= WINDOW_MS && p.at_ms >= at => false,
            _ => {
                self.seen.insert(key, p.at_ms);
                self.order.push_back((key, p.at_ms));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn(at_ms: i64, src_port: u16) -> LoggedPacket {
        LoggedPacket {
            at_ms,
            prefix: "bulkhead default-deny ".into(),
            protocol: 6,
            src: "10.0.0.66".parse().unwrap(),
            dst: "10.0.0.13".parse().unwrap(),
            src_port,
            dst_port: 5432,
        }
    }

    #[test]
    fn retransmitted_syns_are_one_attempt_and_new_ports_new_ones() {
        let mut a = Attempts::default();
        assert!(a.first(&syn(0, 40000)));
        for retry in [1_000, 3_000, 7_000, 15_000, 31_000, 63_000] {
            assert!(!a.first(&syn(retry, 40000)), "retry at {retry} ms");
        }
        assert!(
            a.first(&syn(63_000, 40001)),
            "another source port is another attempt"
        );
        assert!(
            a.first(&syn(200_000, 40000)),
            "past the window the port is reused"
        );
    }

    #[test]
    fn memory_is_bounded() {
        let mut a = Attempts::default();
        for i in 0..(CAPACITY as u32 * 3) {
            let mut p = syn(i64::from(i), (i % 60_000) as u16);
            p.src = std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(a.first(&p));
        }
        assert!(a.seen.len() <= CAPACITY && a.order.len() <= CAPACITY);
    }
}
