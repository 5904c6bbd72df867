use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::Env;
use crate::estate::{Estate, Role, SimWorkload, ephemeral_ports};
use crate::rng::Rng;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

/// TCP flag bits as exported in `tcpControlBits`.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    /// A complete short connection, as one direction of it is seen.
    pub const SESSION: u8 = FIN | SYN | PSH | ACK;
}

/// Why a flow is in the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowKind {
    /// What the estate is built to do; the policy allows all of it.
    Normal,
    /// The port scan and lateral movement; the policy allows none of it.
    Attacker,
    /// Traffic from or to an address outside the inventory (sprawl); no rule allows it.
    Unknown,
}

/// One unidirectional flow, consumer to provider, as an exporter would report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SimFlow {
    /// Unix milliseconds.
    pub start_ms: i64,
    pub end_ms: i64,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub packets: u64,
    pub bytes: u64,
    /// Union of the TCP flags seen (0 for UDP).
    pub tcp_flags: u8,
    pub kind: FlowKind,
}

/// Size and duration ranges of one kind of exchange, seen from the consumer.
#[derive(Debug)]
pub(crate) struct Profile {
    packets: (u64, u64),
    bytes_per_packet: (u64, u64),
    duration_ms: (u64, u64),
}

const HTTP_API: Profile = Profile {
    packets: (4, 40),
    bytes_per_packet: (80, 700),
    duration_ms: (3, 1500),
};
const HTTPS: Profile = Profile {
    packets: (8, 80),
    bytes_per_packet: (90, 900),
    duration_ms: (40, 20_000),
};
const POSTGRES: Profile = Profile {
    packets: (6, 200),
    bytes_per_packet: (60, 600),
    duration_ms: (2, 5000),
};
const DNS: Profile = Profile {
    packets: (1, 1),
    bytes_per_packet: (58, 110),
    duration_ms: (0, 0),
};
const NTP: Profile = Profile {
    packets: (1, 1),
    bytes_per_packet: (76, 76),
    duration_ms: (0, 0),
};
const LDAP: Profile = Profile {
    packets: (5, 20),
    bytes_per_packet: (70, 400),
    duration_ms: (5, 300),
};
const METRICS: Profile = Profile {
    packets: (5, 9),
    bytes_per_packet: (60, 250),
    duration_ms: (5, 120),
};
/// The director's side of a backup: mostly acknowledgements of the data coming back.
const BACKUP: Profile = Profile {
    packets: (500, 20_000),
    bytes_per_packet: (52, 120),
    duration_ms: (60_000, 600_000),
};
const SCAN: Profile = Profile {
    packets: (1, 1),
    bytes_per_packet: (44, 44),
    duration_ms: (0, 0),
};
const SSH: Profile = Profile {
    packets: (20, 400),
    bytes_per_packet: (60, 200),
    duration_ms: (10_000, 300_000),
};
const SMB: Profile = Profile {
    packets: (30, 300),
    bytes_per_packet: (100, 1400),
    duration_ms: (500, 30_000),
};
const EXFIL: Profile = Profile {
    packets: (50, 2000),
    bytes_per_packet: (60, 400),
    duration_ms: (1000, 60_000),
};

/// An address that is either fixed or drawn per flow from a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Addr(IpAddr),
    /// Customers on the internet (203.0.113.0/24, 192.0.2.0/24).
    Internet4,
    /// Customers on the internet over IPv6 (2001:db8::/32).
    Internet6,
    /// The partner APIs' range (`policy::PARTNER_APIS`).
    Partner,
}

/// A recurring exchange between two endpoints; traffic is drawn from these by weight.
#[derive(Debug, Clone)]
pub(crate) struct Conversation {
    src: Endpoint,
    dst: Endpoint,
    proto: u8,
    dst_port: u16,
    ephemeral: (u16, u16),
    profile: &'static Profile,
    pub(crate) weight: u32,
    kind: FlowKind,
}

impl Endpoint {
    fn resolve(self, rng: &mut Rng) -> IpAddr {
        match self {
            Endpoint::Addr(a) => a,
            Endpoint::Internet4 => {
                let net = if rng.chance(3, 4) {
                    [203, 0, 113]
                } else {
                    [192, 0, 2]
                };
                IpAddr::V4(Ipv4Addr::new(
                    net[0],
                    net[1],
                    net[2],
                    rng.between(1, 254) as u8,
                ))
            }
            Endpoint::Internet6 => IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0x0db8,
                rng.below(0x1_0000) as u16,
                rng.below(0x1_0000) as u16,
                0,
                0,
                0,
                rng.between(1, 0xffff) as u16,
            )),
            Endpoint::Partner => IpAddr::V4(Ipv4Addr::new(198, 51, 100, rng.between(17, 30) as u8)),
        }
    }
}

fn conv(
    src: &SimWorkload,
    dst: IpAddr,
    proto: u8,
    dst_port: u16,
    profile: &'static Profile,
    weight: u32,
) -> Conversation {
    Conversation {
        src: Endpoint::Addr(src.ipv4()),
        dst: Endpoint::Addr(dst),
        proto,
        dst_port,
        ephemeral: src.ephemeral_ports(),
        profile,
        weight,
        kind: FlowKind::Normal,
    }
}

/// Relative weights, in flows per conversation; a web request is far more frequent
/// than a backup.
mod weight {
    pub const WEB_TO_APP: u32 = 400;
    pub const APP_TO_DB: u32 = 300;
    pub const INTERNET4: u32 = 450;
    pub const INTERNET6: u32 = 150;
    pub const PARTNER: u32 = 100;
    pub const DNS: u32 = 80;
    pub const NTP: u32 = 10;
    pub const DIRECTORY: u32 = 20;
    pub const METRICS: u32 = 40;
    pub const BACKUP: u32 = 2;
    pub const UNKNOWN: u32 = 30;
}

pub(crate) fn conversations(estate: &Estate, rng: &mut Rng) -> Vec<Conversation> {
    let active: Vec<&SimWorkload> = estate.workloads().iter().filter(|w| !w.idle).collect();
    let with_role = |role: Role| -> Vec<&SimWorkload> {
        active.iter().copied().filter(|w| w.role == role).collect()
    };
    let same_tier = |w: &SimWorkload, role: Role| -> Vec<&SimWorkload> {
        active
            .iter()
            .copied()
            .filter(|o| o.app == w.app && o.env == w.env && o.role == role)
            .collect()
    };
    let mut out = Vec::new();
    for w in &active {
        match w.role {
            Role::Web => {
                for a in same_tier(w, Role::App) {
                    out.push(conv(w, a.ipv4(), TCP, 8080, &HTTP_API, weight::WEB_TO_APP));
                }
                if w.env == Some(Env::Prod) {
                    out.push(Conversation {
                        src: Endpoint::Internet4,
                        dst: Endpoint::Addr(w.ipv4()),
                        proto: TCP,
                        dst_port: 443,
                        ephemeral: (1024, 65535),
                        profile: &HTTPS,
                        weight: weight::INTERNET4,
                        kind: FlowKind::Normal,
                    });
                    if let Some(v6) = w.addresses.iter().find(|a| a.is_ipv6()) {
                        out.push(Conversation {
                            src: Endpoint::Internet6,
                            dst: Endpoint::Addr(*v6),
                            proto: TCP,
                            dst_port: 443,
                            ephemeral: (1024, 65535),
                            profile: &HTTPS,
                            weight: weight::INTERNET6,
                            kind: FlowKind::Normal,
                        });
                    }
                }
            }
            Role::App => {
                for d in same_tier(w, Role::Db) {
                    out.push(conv(w, d.ipv4(), TCP, 5432, &POSTGRES, weight::APP_TO_DB));
                }
                if w.env == Some(Env::Prod) {
                    let mut c = conv(w, w.ipv4(), TCP, 443, &HTTPS, weight::PARTNER);
                    c.dst = Endpoint::Partner;
                    out.push(c);
                }
            }
            _ => {}
        }
        let dns = with_role(Role::Dns);
        for d in dns.iter().filter(|d| d.name != w.name) {
            let share = (weight::DNS / dns.len() as u32).max(1);
            out.push(conv(w, d.ipv4(), UDP, 53, &DNS, share));
        }
        for n in with_role(Role::Ntp).iter().filter(|n| n.name != w.name) {
            out.push(conv(w, n.ipv4(), UDP, 123, &NTP, weight::NTP));
        }
        for d in with_role(Role::Directory)
            .iter()
            .filter(|d| d.name != w.name)
        {
            out.push(conv(w, d.ipv4(), TCP, 389, &LDAP, weight::DIRECTORY));
        }
        for m in with_role(Role::Monitoring)
            .iter()
            .filter(|m| m.name != w.name)
        {
            out.push(conv(m, w.ipv4(), TCP, 9100, &METRICS, weight::METRICS));
        }
        for b in with_role(Role::Backup).iter().filter(|b| b.name != w.name) {
            out.push(conv(b, w.ipv4(), TCP, 9102, &BACKUP, weight::BACKUP));
        }
    }

    let app_roles: Vec<Vec<&SimWorkload>> = [Role::Web, Role::App, Role::Db, Role::Dns]
        .into_iter()
        .map(with_role)
        .collect();
    let linux = ephemeral_ports("linux");
    for &dev in estate.unknown_devices() {
        let n = rng.between(1, 3);
        for _ in 0..n {
            let choice = rng.below(5) as usize;
            let (pool, proto, port, profile): (&[&SimWorkload], u8, u16, &'static Profile) =
                match choice {
                    0 => (&app_roles[0], TCP, 443, &HTTPS),
                    1 => (&app_roles[3], UDP, 53, &DNS),
                    2 => (&app_roles[1], TCP, 8080, &HTTP_API),
                    // An application depends on a server nobody registered.
                    3 => (&app_roles[1], TCP, 8443, &HTTPS),
                    _ => (&app_roles[2], TCP, 5432, &POSTGRES),
                };
            if pool.is_empty() {
                continue;
            }
            let w = *rng.pick(pool);
            let (src, dst, ephemeral) = if choice == 3 {
                (w.ipv4(), dev, w.ephemeral_ports())
            } else {
                (dev, w.ipv4(), linux)
            };
            out.push(Conversation {
                src: Endpoint::Addr(src),
                dst: Endpoint::Addr(dst),
                proto,
                dst_port: port,
                ephemeral,
                profile,
                weight: weight::UNKNOWN,
                kind: FlowKind::Unknown,
            });
        }
    }
    out
}

fn make_flow(c: &Conversation, start_ms: i64, rng: &mut Rng) -> SimFlow {
    let p = c.profile;
    let packets = rng.between(p.packets.0, p.packets.1);
    let bytes = packets * rng.between(p.bytes_per_packet.0, p.bytes_per_packet.1);
    let duration = if packets == 1 {
        0
    } else {
        rng.between(p.duration_ms.0, p.duration_ms.1) as i64
    };
    SimFlow {
        start_ms,
        end_ms: start_ms + duration,
        src: c.src.resolve(rng),
        dst: c.dst.resolve(rng),
        src_port: rng.between(u64::from(c.ephemeral.0), u64::from(c.ephemeral.1)) as u16,
        dst_port: c.dst_port,
        proto: c.proto,
        packets,
        bytes,
        tcp_flags: if c.proto == TCP {
            tcp_flags::SESSION
        } else {
            0
        },
        kind: c.kind,
    }
}

/// Ports an attacker's first sweep tries: remote access, file sharing, databases,
/// web and management.
pub const SCAN_PORTS: &[u16] = &[
    21, 22, 23, 25, 53, 80, 110, 135, 139, 143, 389, 443, 445, 636, 993, 1433, 1521, 2049, 3306,
    3389, 5432, 5900, 5985, 6379, 8080, 8443, 9100, 9200, 11211, 27017,
];

fn attack_flows(estate: &Estate, rng: &mut Rng) -> Vec<SimFlow> {
    let Some(a) = estate.attacker() else {
        return Vec::new();
    };
    let cfg = estate.config();
    let (start, duration) = (cfg.start_ms, cfg.duration_ms);
    let mut out = Vec::new();

    // SYN scan: one source port for the whole sweep, probes in random order, one
    // unanswered SYN each.
    let net = a.scanned_subnet.0.octets();
    let mut probes: Vec<(u8, u16)> = (1..=254u8)
        .flat_map(|h| SCAN_PORTS.iter().map(move |&p| (h, p)))
        .collect();
    for i in (1..probes.len()).rev() {
        probes.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let scan_start = start + duration * 35 / 100;
    let span = (duration / 5).min(40_000);
    let sport = rng.between(u64::from(a.ephemeral.0), u64::from(a.ephemeral.1)) as u16;
    let n = probes.len() as i64;
    for (i, (host, port)) in probes.into_iter().enumerate() {
        let t = scan_start + span * i as i64 / n;
        out.push(SimFlow {
            start_ms: t,
            end_ms: t,
            src: a.addr,
            dst: IpAddr::V4(Ipv4Addr::new(net[0], net[1], net[2], host)),
            src_port: sport,
            dst_port: port,
            proto: TCP,
            packets: 1,
            bytes: SCAN.bytes_per_packet.0,
            tcp_flags: tcp_flags::SYN,
            kind: FlowKind::Attacker,
        });
    }

    // Lateral movement: a shell and a file share on each target, then the database.
    let lateral_start = start + duration * 60 / 100;
    let window = (duration / 4).clamp(1, 120_000) as u64;
    let mut push = |rng: &mut Rng, dst: IpAddr, port: u16, profile: &'static Profile| {
        let c = Conversation {
            src: Endpoint::Addr(a.addr),
            dst: Endpoint::Addr(dst),
            proto: TCP,
            dst_port: port,
            ephemeral: a.ephemeral,
            profile,
            weight: 0,
            kind: FlowKind::Attacker,
        };
        let t = lateral_start + rng.below(window) as i64;
        out.push(make_flow(&c, t, rng));
    };
    for &t in &a.targets {
        push(rng, t, 22, &SSH);
        push(rng, t, 445, &SMB);
    }
    let dbs: Vec<IpAddr> = estate
        .workloads()
        .iter()
        .filter(|w| w.app == Some(0) && w.env == Some(Env::Prod) && w.role == Role::Db)
        .map(SimWorkload::ipv4)
        .collect();
    for db in dbs.iter().take(2) {
        for _ in 0..3 {
            push(rng, *db, 5432, &EXFIL);
        }
    }
    out.sort_by_key(|f| f.start_ms);
    out
}

const CHUNK_MS: i64 = 60_000;

/// The estate's traffic in start-time order, generated one minute at a time so that
/// long runs need no more memory than a minute of flows.
#[derive(Debug)]
pub struct Flows<'a> {
    estate: &'a Estate,
    rng: Rng,
    chunk_start: i64,
    end: i64,
    buf: Vec<SimFlow>,
    pos: usize,
    /// One occurrence of every conversation at a random time: (start, conversation).
    guaranteed: Vec<(i64, u32)>,
    gi: usize,
    attack: Vec<SimFlow>,
    ai: usize,
}

impl<'a> Flows<'a> {
    pub(crate) fn new(estate: &'a Estate) -> Self {
        let cfg = estate.config();
        let (start, duration) = (cfg.start_ms, cfg.duration_ms);
        let mut rng = Rng::fork(cfg.traffic_seed(), 2);
        let mut guaranteed: Vec<(i64, u32)> = if duration > 0 {
            (0..estate.conversations.len() as u32)
                .map(|i| (start + rng.below(duration as u64) as i64, i))
                .collect()
        } else {
            Vec::new()
        };
        guaranteed.sort_unstable();
        let attack = if duration > 0 {
            attack_flows(estate, &mut Rng::fork(cfg.traffic_seed(), 3))
        } else {
            Vec::new()
        };
        Flows {
            estate,
            rng: Rng::fork(cfg.traffic_seed(), 4),
            chunk_start: start,
            end: start + duration,
            buf: Vec::new(),
            pos: 0,
            guaranteed,
            gi: 0,
            attack,
            ai: 0,
        }
    }

    /// Flows the rate asks for between the start and `t`.
    fn target(&self, t: i64) -> u64 {
        let cfg = self.estate.config();
        let elapsed = (t - cfg.start_ms) as u128;
        (cfg.flows_per_minute as u128 * elapsed / CHUNK_MS as u128) as u64
    }

    fn fill(&mut self) -> bool {
        if self.chunk_start >= self.end {
            return false;
        }
        let t0 = self.chunk_start;
        let t1 = (t0 + CHUNK_MS).min(self.end);
        self.chunk_start = t1;
        self.buf.clear();
        self.pos = 0;
        let convs = &self.estate.conversations;
        while let Some(&(t, i)) = self.guaranteed.get(self.gi) {
            if t >= t1 {
                break;
            }
            self.buf
                .push(make_flow(&convs[i as usize], t, &mut self.rng));
            self.gi += 1;
        }
        let want = self.target(t1) - self.target(t0);
        let extra = want.saturating_sub(self.buf.len() as u64);
        let cumulative = &self.estate.cumulative;
        if let Some(&total) = cumulative.last() {
            self.buf.reserve(extra as usize);
            for _ in 0..extra {
                let r = self.rng.below(total);
                let i = cumulative.partition_point(|&c| c <= r);
                let t = t0 + self.rng.below((t1 - t0) as u64) as i64;
                self.buf.push(make_flow(&convs[i], t, &mut self.rng));
            }
        }
        while let Some(f) = self.attack.get(self.ai) {
            if f.start_ms >= t1 {
                break;
            }
            self.buf.push(*f);
            self.ai += 1;
        }
        // A flow still open when the window ends is exported as it stands then, as
        // an exporter's active timeout would: no record ends after the window (the
        // demo streams windows that end now, so none ends in the future).
        for f in &mut self.buf {
            f.end_ms = f.end_ms.min(self.end).max(f.start_ms);
        }
        self.buf.sort_by_key(|f| f.start_ms);
        true
    }
}

impl Iterator for Flows<'_> {
    type Item = SimFlow;

    fn next(&mut self) -> Option<SimFlow> {
        while self.pos >= self.buf.len() {
            if !self.fill() {
                return None;
            }
        }
        let f = self.buf[self.pos];
        self.pos += 1;
        Some(f)
    }
}

impl Estate {
    /// The traffic: normal, unknown-device and (if configured) attacker flows, ordered
    /// by start time. Deterministic for a given configuration; call again to replay.
    pub fn flows(&self) -> Flows<'_> {
        Flows::new(self)
    }
}
