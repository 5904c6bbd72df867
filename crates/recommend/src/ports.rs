//! Turning observed (protocol, port) pairs into service ports, with ranges where ports
//! cluster.

use bulkhead_model::{PortRange, ProtoMatch, ServicePort};

/// One proposed service port and the observed ports it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposed {
    pub port: ServicePort,
    pub observed: Vec<u16>,
}

impl Proposed {
    /// Whether it allows ports (or ICMP types) that were not observed.
    pub fn widens(&self) -> bool {
        // Protocols without ports (GRE, ESP, …) are allowed whole: nothing was narrower.
        if let ProtoMatch::Proto(p) = self.port.proto
            && !matches!(p, TCP | UDP | SCTP | ICMP | ICMPV6)
        {
            return false;
        }
        let span = u32::from(self.port.ports.end) - u32::from(self.port.ports.start) + 1;
        span as usize > self.observed.len()
    }
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// Ranges need this many observed ports (fewer stay single ports unless they are
/// contiguous, which widens nothing).
pub const MIN_PORTS_FOR_RANGE: usize = 3;

/// Proposes service ports for one protocol's observed ports (sorted, unique).
///
/// Ports cluster into a range while at least half the ports of the range were
/// observed; a cluster of fewer than [`MIN_PORTS_FOR_RANGE`] ports that is not
/// contiguous stays as single ports. Protocols without ports become `proto/N`; an ICMP
/// "port" above 255 (not a message type) becomes the whole protocol.
pub fn propose(proto: u8, ports: &[u16]) -> Vec<Proposed> {
    let all = |range: PortRange| {
        vec![Proposed {
            port: ServicePort {
                proto: ProtoMatch::Proto(proto),
                ports: range,
            },
            observed: ports.to_vec(),
        }]
    };
    match proto {
        TCP | UDP | SCTP => {}
        ICMP | ICMPV6 if ports.iter().all(|&p| p <= 255) => {
            return ports
                .iter()
                .map(|&p| Proposed {
                    port: ServicePort {
                        proto: ProtoMatch::Proto(proto),
                        ports: PortRange::single(p),
                    },
                    observed: vec![p],
                })
                .collect();
        }
        ICMP | ICMPV6 => return all(PortRange::ALL_ICMP_TYPES),
        _ => return all(PortRange::ALL),
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < ports.len() {
        let mut j = i;
        while j + 1 < ports.len() {
            let span = u32::from(ports[j + 1]) - u32::from(ports[i]) + 1;
            let count = (j + 2 - i) as u32;
            if count * 2 >= span {
                j += 1;
            } else {
                break;
            }
        }
        let count = j + 1 - i;
        let span = usize::from(ports[j] - ports[i]) + 1;
        if count >= MIN_PORTS_FOR_RANGE || count == span {
            out.push(Proposed {
                port: ServicePort {
                    proto: ProtoMatch::Proto(proto),
                    ports: PortRange {
                        start: ports[i],
                        end: ports[j],
                    },
                },
                observed: ports[i..=j].to_vec(),
            });
        } else {
            for &p in &ports[i..=j] {
                out.push(Proposed {
                    port: ServicePort {
                        proto: ProtoMatch::Proto(proto),
                        ports: PortRange::single(p),
                    },
                    observed: vec![p],
                });
            }
        }
        i = j + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(v: &[Proposed]) -> Vec<String> {
        v.iter().map(|p| p.port.to_string()).collect()
    }

    #[test]
    fn clusters_become_ranges_and_say_so() {
        let p = propose(TCP, &[8000, 8001, 8003, 8005, 9100]);
        assert_eq!(shown(&p), ["tcp/8000-8005", "tcp/9100"]);
        assert!(p[0].widens() && !p[1].widens());
        assert_eq!(shown(&propose(TCP, &[80, 443])), ["tcp/80", "tcp/443"]);
        assert_eq!(shown(&propose(TCP, &[5432, 5433])), ["tcp/5432-5433"]);
        assert!(!propose(TCP, &[5432, 5433])[0].widens());
        assert_eq!(shown(&propose(ICMP, &[0, 8])), ["icmp/0", "icmp/8"]);
        assert_eq!(shown(&propose(47, &[0])), ["proto/47"]);
        assert!(!propose(47, &[0])[0].widens());
        // An exporter's ICMP type*256+code is not a type: the whole protocol, reported.
        let icmp = propose(ICMP, &[2048]);
        assert_eq!(shown(&icmp), ["icmp"]);
        assert!(icmp[0].widens());
    }

    #[test]
    fn every_observed_port_is_covered() {
        let ports = [1, 2, 3, 10, 50, 51, 53, 60, 1000, 1002, 65535];
        let p = propose(UDP, &ports);
        for port in ports {
            assert!(p.iter().any(|s| s.port.matches(UDP, port)), "{port}");
        }
    }
}
