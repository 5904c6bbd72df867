use std::fmt;

/// An inclusive range of destination ports (or ICMP types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub const ALL: PortRange = PortRange {
        start: 0,
        end: u16::MAX,
    };
    pub const ALL_ICMP_TYPES: PortRange = PortRange { start: 0, end: 255 };

    pub fn single(port: u16) -> Self {
        Self {
            start: port,
            end: port,
        }
    }

    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }
}

/// Which IP protocol a service port means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtoMatch {
    Any,
    Proto(u8),
}

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const SCTP: u8 = 132;
pub const ICMPV6: u8 = 58;

pub fn protocol_number(name: &str) -> Option<u8> {
    match name {
        "tcp" => Some(TCP),
        "udp" => Some(UDP),
        "icmp" => Some(ICMP),
        "icmpv6" => Some(ICMPV6),
        "sctp" => Some(SCTP),
        _ => None,
    }
}

pub fn protocol_name(number: u8) -> Option<&'static str> {
    match number {
        TCP => Some("tcp"),
        UDP => Some("udp"),
        ICMP => Some("icmp"),
        ICMPV6 => Some("icmpv6"),
        SCTP => Some("sctp"),
        _ => None,
    }
}

/// Protocols whose "port" is a destination port; ICMP's is the message type.
fn has_ports(proto: u8) -> bool {
    matches!(proto, TCP | UDP | SCTP)
}

fn is_icmp(proto: u8) -> bool {
    matches!(proto, ICMP | ICMPV6)
}

/// Protocol plus destination port range: `tcp/5432`, `udp/53`, `tcp/8000-8099`,
/// `tcp` (every port), `icmp`, `icmp/8` (echo request only), `proto/47`, `any`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePort {
    pub proto: ProtoMatch,
    pub ports: PortRange,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error(
        "{0:?} is not a service port: expected tcp/PORT, udp/PORT, tcp/FROM-TO, sctp/PORT, icmp, icmp/TYPE, icmpv6, proto/NUMBER or any"
    )]
    Syntax(String),
    #[error("port {0:?} is not a number from 0 to 65535")]
    BadPort(String),
    #[error("port range {0}-{1} runs backwards")]
    Backwards(u16, u16),
    #[error("ICMP type {0} is above 255")]
    BadIcmpType(u16),
    #[error("protocol {0} has no ports; write proto/{0} without a port")]
    NoPorts(u8),
}

impl ServicePort {
    pub const ANY: ServicePort = ServicePort {
        proto: ProtoMatch::Any,
        ports: PortRange::ALL,
    };

    pub fn tcp(port: u16) -> Self {
        Self {
            proto: ProtoMatch::Proto(TCP),
            ports: PortRange::single(port),
        }
    }

    pub fn matches(&self, proto: u8, port: u16) -> bool {
        match self.proto {
            ProtoMatch::Any => true,
            ProtoMatch::Proto(p) => p == proto && self.ports.contains(port),
        }
    }

    /// Whether a string looks like a service port rather than a service name.
    pub fn looks_like(s: &str) -> bool {
        s == "any" || s.contains('/') || protocol_number(s).is_some()
    }
}

impl ServicePort {
    /// Parses what a connection has: one protocol and one port (or ICMP type), such as
    /// `tcp/5432`, `udp/53`, `icmp/8` or `proto/47`. Ranges and `any` are refused.
    pub fn parse_single(s: &str) -> Result<(u8, u16), String> {
        let sp: ServicePort = s.parse().map_err(|e: ServiceError| e.to_string())?;
        match sp.proto {
            ProtoMatch::Proto(p) if sp.ports.start == sp.ports.end => Ok((p, sp.ports.start)),
            ProtoMatch::Proto(p) if !has_ports(p) && !is_icmp(p) => Ok((p, 0)),
            _ => Err(format!(
                "{s:?} must name one protocol and one port, e.g. tcp/5432"
            )),
        }
    }
}

fn parse_port(s: &str) -> Result<u16, ServiceError> {
    s.parse::<u16>()
        .map_err(|_| ServiceError::BadPort(s.to_string()))
}

impl std::str::FromStr for ServicePort {
    type Err = ServiceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "any" {
            return Ok(Self::ANY);
        }
        let (proto_str, range) = match s.split_once('/') {
            Some((p, r)) => (p, Some(r)),
            None => (s, None),
        };
        let proto = if proto_str == "proto" || proto_str == "ip" {
            let n = range
                .ok_or_else(|| ServiceError::Syntax(s.to_string()))?
                .parse::<u8>()
                .map_err(|_| ServiceError::Syntax(s.to_string()))?;
            let ports = if is_icmp(n) {
                PortRange::ALL_ICMP_TYPES
            } else {
                PortRange::ALL
            };
            return Ok(Self {
                proto: ProtoMatch::Proto(n),
                ports,
            });
        } else {
            protocol_number(proto_str).ok_or_else(|| ServiceError::Syntax(s.to_string()))?
        };
        let ports = match range {
            None if is_icmp(proto) => PortRange::ALL_ICMP_TYPES,
            None => PortRange::ALL,
            Some(r) => {
                let (a, b) = match r.split_once('-') {
                    Some((a, b)) => (parse_port(a)?, parse_port(b)?),
                    None => {
                        let p = parse_port(r)?;
                        (p, p)
                    }
                };
                if a > b {
                    return Err(ServiceError::Backwards(a, b));
                }
                if is_icmp(proto) && b > 255 {
                    return Err(ServiceError::BadIcmpType(b));
                }
                if !has_ports(proto) && !is_icmp(proto) {
                    return Err(ServiceError::NoPorts(proto));
                }
                PortRange { start: a, end: b }
            }
        };
        Ok(Self {
            proto: ProtoMatch::Proto(proto),
            ports,
        })
    }
}

impl fmt::Display for ServicePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = match self.proto {
            ProtoMatch::Any => return f.write_str("any"),
            ProtoMatch::Proto(p) => p,
        };
        let full = if is_icmp(p) {
            PortRange::ALL_ICMP_TYPES
        } else {
            PortRange::ALL
        };
        match protocol_name(p) {
            Some(name) => f.write_str(name)?,
            None => return write!(f, "proto/{p}"),
        }
        if self.ports == full {
            Ok(())
        } else if self.ports.start == self.ports.end {
            write!(f, "/{}", self.ports.start)
        } else {
            write!(f, "/{}-{}", self.ports.start, self.ports.end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_canonically() {
        for s in [
            "tcp/80",
            "udp/53",
            "tcp/8000-8099",
            "tcp",
            "icmp",
            "icmp/8",
            "icmpv6",
            "proto/47",
            "any",
            "sctp/3868",
        ] {
            let p: ServicePort = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        assert_eq!(
            "tcp/0-65535".parse::<ServicePort>().unwrap().to_string(),
            "tcp"
        );
    }

    #[test]
    fn rejects_nonsense() {
        assert!("tcp/90000".parse::<ServicePort>().is_err());
        assert!("tcp/90-80".parse::<ServicePort>().is_err());
        assert!("icmp/300".parse::<ServicePort>().is_err());
        assert!("http".parse::<ServicePort>().is_err());
        assert!("tcp/".parse::<ServicePort>().is_err());
    }

    #[test]
    fn matching() {
        let p: ServicePort = "tcp/8000-8099".parse().unwrap();
        assert!(p.matches(TCP, 8000) && p.matches(TCP, 8099));
        assert!(!p.matches(TCP, 8100) && !p.matches(UDP, 8050));
        assert!(ServicePort::ANY.matches(47, 0));
    }
}
