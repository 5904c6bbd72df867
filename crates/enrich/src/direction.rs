//! Which side of a unidirectional record is the provider (the one listening).
//!
//! Exporters report packets, not connections: a reply from a database to its client is a
//! record with the database as source. We fold both directions into one summary keyed by
//! consumer → provider, so the provider must be inferred, in this order of trust:
//! 1. a port an agent saw a process listening on, at that address;
//! 2. a well-known service port on exactly one side;
//! 3. the lower port, unless it is in the ephemeral range and the other is not.

use std::net::IpAddr;

use rustc_hash::FxHashSet;

use crate::Observation;

/// Ports agents have seen processes listening on, per address.
#[derive(Debug, Clone, Default)]
pub struct ListeningPorts(FxHashSet<(IpAddr, u8, u16)>);

impl ListeningPorts {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, addr: IpAddr, proto: u8, port: u16) {
        self.0.insert((addr, proto, port));
    }

    pub fn contains(&self, addr: IpAddr, proto: u8, port: u16) -> bool {
        self.0.contains(&(addr, proto, port))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An observation with its consumer and provider known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oriented {
    pub consumer: IpAddr,
    pub provider: IpAddr,
    /// The provider's port (for ICMP: the message type).
    pub port: u16,
    /// True when the record's source was the provider (a reply direction).
    pub reversed: bool,
}

/// Ports that are services far more often than they are ephemeral ports.
fn is_well_known(proto: u8, port: u16) -> bool {
    if port == 0 {
        return false;
    }
    if port < 1024 {
        return true;
    }
    match proto {
        6 => matches!(
            port,
            1433 | 1521
                | 2049
                | 2379
                | 3000
                | 3268
                | 3306
                | 3389
                | 4222
                | 5000
                | 5044
                | 5432
                | 5601
                | 5671
                | 5672
                | 5900
                | 5985
                | 5986
                | 6379
                | 6443
                | 7001
                | 8000
                | 8008
                | 8080
                | 8081
                | 8088
                | 8443
                | 8888
                | 9000
                | 9042
                | 9090
                | 9092
                | 9093
                | 9100
                | 9102
                | 9200
                | 9300
                | 9418
                | 10250
                | 11211
                | 15672
                | 27017
        ),
        17 => matches!(
            port,
            1194 | 1812 | 1813 | 2055 | 4739 | 4789 | 5353 | 6343 | 8125 | 51820
        ),
        _ => false,
    }
}

const EPHEMERAL_START: u16 = 32768;

fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132)
}

pub fn orient(o: &Observation, listening: &ListeningPorts) -> Oriented {
    let forward = Oriented {
        consumer: o.src,
        provider: o.dst,
        port: o.dst_port,
        reversed: false,
    };
    if !has_ports(o.proto) {
        // ICMP: the sender of a request is the consumer; the "port" is the type.
        let port = match o.proto {
            1 | 58 => o.icmp_type.map(u16::from).unwrap_or(o.dst_port >> 8),
            _ => 0,
        };
        // An echo reply comes from the side that was asked: fold it into the request.
        return match (o.proto, port) {
            (1, 0) => Oriented {
                consumer: o.dst,
                provider: o.src,
                port: 8,
                reversed: true,
            },
            (58, 129) => Oriented {
                consumer: o.dst,
                provider: o.src,
                port: 128,
                reversed: true,
            },
            _ => Oriented { port, ..forward },
        };
    }
    let reverse = Oriented {
        consumer: o.dst,
        provider: o.src,
        port: o.src_port,
        reversed: true,
    };
    let dst_listens = listening.contains(o.dst, o.proto, o.dst_port);
    let src_listens = listening.contains(o.src, o.proto, o.src_port);
    if dst_listens != src_listens {
        return if dst_listens { forward } else { reverse };
    }
    let dst_known = is_well_known(o.proto, o.dst_port);
    let src_known = is_well_known(o.proto, o.src_port);
    if dst_known != src_known {
        return if dst_known { forward } else { reverse };
    }
    let dst_eph = o.dst_port >= EPHEMERAL_START;
    let src_eph = o.src_port >= EPHEMERAL_START;
    if dst_eph != src_eph {
        return if src_eph { forward } else { reverse };
    }
    if o.src_port < o.dst_port {
        reverse
    } else {
        forward
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(src_port: u16, dst_port: u16, proto: u8) -> Observation {
        Observation {
            reporter: "t".into(),
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            src_port,
            dst_port,
            proto,
            packets: 1,
            bytes: 60,
            start_ms: None,
            end_ms: None,
            process: None,
            reverse_packets: 0,
            reverse_bytes: 0,
            icmp_type: None,
            connections: 1,
        }
    }

    #[test]
    fn replies_are_turned_around() {
        let none = ListeningPorts::new();
        let fwd = orient(&obs(51000, 5432, 6), &none);
        assert!(!fwd.reversed && fwd.port == 5432);
        let rev = orient(&obs(5432, 51000, 6), &none);
        assert!(rev.reversed && rev.port == 5432 && rev.provider.to_string() == "10.0.0.1");
        // Neither well known: the ephemeral side is the consumer.
        assert_eq!(orient(&obs(40000, 7777, 6), &none).port, 7777);
        assert_eq!(orient(&obs(7777, 40000, 6), &none).port, 7777);
        // Both low: the lower one.
        assert_eq!(orient(&obs(443, 22, 6), &none).port, 22);
    }

    #[test]
    fn agents_knowledge_wins() {
        let mut l = ListeningPorts::new();
        l.insert("10.0.0.1".parse().unwrap(), 6, 40001);
        let o = orient(&obs(40001, 443, 6), &l);
        assert!(o.reversed && o.port == 40001);
    }

    #[test]
    fn icmp_uses_the_type() {
        let mut o = obs(0, 8 << 8, 1);
        assert_eq!(orient(&o, &ListeningPorts::new()).port, 8);
        o.icmp_type = Some(0);
        let reply = orient(&o, &ListeningPorts::new());
        assert!(reply.reversed && reply.port == 8);
    }
}
