//! Finished connections from conntrack (ctnetlink NEW and DESTROY events), with counters
//! and the local process.
//!
//! `netlink-packet-netfilter` frames ctnetlink messages and decodes tuples and status, but
//! not counters, timestamps or the conntrack id: those arrive as raw attributes, decoded
//! here with `netlink-packet-core`'s bounds-checked attribute iterator ([`decode_conntrack`]
//! is property-tested on arbitrary input).

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use bulkhead_api::host::{HostDirection, HostFlow, ListeningSocket, ProcessInfo};
use netlink_packet_core::{
    DefaultNla, NLA_TYPE_MASK, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, Nla, NlasIterator,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    conntrack::{ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Tuple},
};
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use crate::diag::{Diag, TCP, UDP};
use crate::info::{listening_with, local_addresses};
use crate::process::{SocketOwners, process_info};
use crate::{HostError, netlink, now_ms};

/// ctnetlink multicast groups (NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_DESTROY).
const GROUP_NEW: u32 = 1;
const GROUP_DESTROY: u32 = 3;

const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_ID: u16 = 12;
const CTA_TIMESTAMP: u16 = 20;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
const CTA_COUNTERS32_PACKETS: u16 = 3;
const CTA_COUNTERS32_BYTES: u16 = 4;
const CTA_TIMESTAMP_START: u16 = 1;
const CTA_TIMESTAMP_STOP: u16 = 2;

/// Connections seen opening and not yet closed that we keep the start and process of; past
/// this many, the oldest-inserted are forgotten (counted) so a flood cannot grow memory.
const MAX_PENDING: usize = 65_536;

/// Refresh of listening sockets and local addresses, so an inbound connection's listener is
/// known even when it started after the monitor.
const LISTENER_REFRESH: Duration = Duration::from_secs(5);
/// The soonest a cache miss may trigger another refresh or /proc scan.
const MISS_RESCAN: Duration = Duration::from_millis(200);
/// Default interval of the table walks that make the kernel evict expired entries.
const REAP_EVERY: Duration = Duration::from_secs(10);

/// Turns on per-connection packet and byte counters (`net.netfilter.nf_conntrack_acct`)
/// and start/stop timestamps (`nf_conntrack_timestamp`) for the current network
/// namespace; both are per namespace, and only connections created afterwards get them.
pub fn enable_conntrack_accounting() -> Result<(), HostError> {
    for name in ["nf_conntrack_acct", "nf_conntrack_timestamp"] {
        let path = Path::new("/proc/sys/net/netfilter").join(name);
        if fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
            continue;
        }
        fs::write(&path, "1").map_err(|source| HostError::Write { path, source })?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConntrackEventKind {
    /// A new connection (event), or an entry of a table dump.
    New,
    Destroy,
}

/// One decoded ctnetlink message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackEvent {
    pub kind: ConntrackEventKind,
    pub id: Option<u32>,
    pub protocol: u8,
    /// The original direction: the side that opened the connection → the side it reached.
    pub orig_src: SocketAddr,
    pub orig_dst: SocketAddr,
    /// The reply direction's source: differs from `orig_dst` under destination NAT.
    pub reply_src: Option<SocketAddr>,
    /// (packets, bytes) per direction, present when accounting was on at creation.
    pub orig_counters: Option<(u64, u64)>,
    pub reply_counters: Option<(u64, u64)>,
    /// Nanoseconds since the epoch, present when timestamps were on at creation.
    pub start_ns: Option<u64>,
    pub stop_ns: Option<u64>,
}

/// Decodes one netlink message from a ctnetlink socket. `Ok(None)` for messages that are
/// not conntrack NEW/DESTROY (acks, DONE, updates of other kinds). Never panics.
pub fn decode_conntrack(message: &[u8]) -> Result<Option<ConntrackEvent>, String> {
    let message =
        NetlinkMessage::<NetfilterMessage>::deserialize(message).map_err(|e| e.to_string())?;
    let NetlinkPayload::InnerMessage(NetfilterMessage {
        inner: NetfilterMessageInner::Conntrack(ct),
        ..
    }) = message.payload
    else {
        return Ok(None);
    };
    let (kind, attributes) = match ct {
        ConntrackMessage::New(a) => (ConntrackEventKind::New, a),
        ConntrackMessage::Delete(a) => (ConntrackEventKind::Destroy, a),
        _ => return Ok(None),
    };
    let mut orig = None;
    let mut reply = None;
    let mut id = None;
    let mut orig_counters = None;
    let mut reply_counters = None;
    let (mut start_ns, mut stop_ns) = (None, None);
    for a in &attributes {
        match a {
            ConntrackAttribute::CtaTupleOrig(t) => orig = Some(tuple(t)?),
            ConntrackAttribute::CtaTupleReply(t) => reply = Some(tuple(t)?),
            ConntrackAttribute::Other(nla) => {
                let value = nla_value(nla);
                // DefaultNla keeps the NESTED and byte-order flags in its kind.
                match nla.kind() & NLA_TYPE_MASK {
                    CTA_ID => id = Some(be_u32(&value)?),
                    CTA_COUNTERS_ORIG => orig_counters = Some(counters(&value)?),
                    CTA_COUNTERS_REPLY => reply_counters = Some(counters(&value)?),
                    CTA_TIMESTAMP => (start_ns, stop_ns) = timestamps(&value)?,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let (protocol, orig_src, orig_dst) = orig.ok_or("no original tuple")?;
    Ok(Some(ConntrackEvent {
        kind,
        id,
        protocol,
        orig_src,
        orig_dst,
        reply_src: reply.map(|(_, src, _)| src),
        orig_counters,
        reply_counters,
        start_ns,
        stop_ns,
    }))
}

fn nla_value(nla: &DefaultNla) -> Vec<u8> {
    let mut v = vec![0; nla.value_len()];
    nla.emit_value(&mut v);
    v
}

/// (protocol, source, destination) of a tuple; ports are zero for ICMP and the like.
fn tuple(t: &[Tuple]) -> Result<(u8, SocketAddr, SocketAddr), String> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, 0, 0);
    for part in t {
        match part {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(ps) => {
                for p in ps {
                    match p {
                        ProtoTuple::Protocol(n) => proto = Some(u8::from(*n)),
                        ProtoTuple::SourcePort(n) => sport = *n,
                        ProtoTuple::DestinationPort(n) => dport = *n,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    match (proto, src, dst) {
        (Some(p), Some(s), Some(d)) => {
            Ok((p, SocketAddr::new(s, sport), SocketAddr::new(d, dport)))
        }
        _ => Err("incomplete tuple".into()),
    }
}

fn nested(value: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), String>> {
    NlasIterator::new(value).map(|n| {
        let b = n.map_err(|e| e.to_string())?;
        let (kind, len) = (b.kind(), usize::from(b.length()));
        // new_checked guarantees 4 <= len <= the buffer's length.
        let value = b
            .into_inner()
            .get(4..len)
            .ok_or("attribute out of bounds")?;
        Ok((kind, value))
    })
}

fn counters(value: &[u8]) -> Result<(u64, u64), String> {
    let (mut packets, mut bytes) = (0, 0);
    for n in nested(value) {
        let (kind, v) = n?;
        match kind {
            CTA_COUNTERS_PACKETS => packets = be_u64(v)?,
            CTA_COUNTERS_BYTES => bytes = be_u64(v)?,
            CTA_COUNTERS32_PACKETS => packets = u64::from(be_u32(v)?),
            CTA_COUNTERS32_BYTES => bytes = u64::from(be_u32(v)?),
            _ => {}
        }
    }
    Ok((packets, bytes))
}

fn timestamps(value: &[u8]) -> Result<(Option<u64>, Option<u64>), String> {
    let (mut start, mut stop) = (None, None);
    for n in nested(value) {
        let (kind, v) = n?;
        match kind {
            CTA_TIMESTAMP_START => start = Some(be_u64(v)?),
            CTA_TIMESTAMP_STOP => stop = Some(be_u64(v)?),
            _ => {}
        }
    }
    Ok((start, stop))
}

fn be_u32(v: &[u8]) -> Result<u32, String> {
    v.get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| format!("a 4-byte value of {} bytes", v.len()))
}

fn be_u64(v: &[u8]) -> Result<u64, String> {
    v.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| format!("an 8-byte value of {} bytes", v.len()))
}

/// What a monitor has seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConntrackStats {
    pub new_events: u64,
    pub destroy_events: u64,
    /// Messages that did not decode, skipped.
    pub malformed: u64,
    /// Times the kernel dropped events because we read too slowly (ENOBUFS).
    pub overruns: u64,
    /// Flows returned without a process (its socket was gone or not found).
    pub unattributed: u64,
    /// Opened connections forgotten because too many were open at once.
    pub evicted: u64,
    /// Outbound connections whose local socket was not found when they opened, or only
    /// as a TIME_WAIT remnant without an owner (a connection over within milliseconds).
    pub socket_not_found: u64,
}

#[derive(Debug, Clone)]
struct Pending {
    start_ms: i64,
    process: Option<ProcessInfo>,
    /// The local socket, when it was found but its process was not yet (the /proc scan
    /// is rate-limited; the next one resolves every such socket at once).
    inode: Option<u64>,
}

/// What the lookup at a connection's opening found.
#[derive(Debug)]
enum Attribution {
    Process(ProcessInfo),
    /// The socket, whose owner is not in the last /proc scan.
    Socket(u64),
    Nothing,
}

/// Subscribes to the current network namespace's conntrack NEW and DESTROY events and
/// turns each finished connection into a [`HostFlow`].
///
/// Direction: inbound when the original destination (or, under DNAT, the reply source) is
/// one of the host's addresses, else outbound. Process: looked up when the connection
/// opens, because a short connection's socket is gone by the time it is destroyed; for
/// inbound connections the listener (from a cache of listening sockets refreshed every
/// few seconds), for outbound ones the connecting socket (sock_diag, then /proc/*/fd).
///
/// Conntrack only tracks a namespace once some ruleset uses it (the owned table's
/// `ct state` rules do); the kernel reports a TCP connection's end when its entry
/// expires, i.e. after the TIME_WAIT timeout (`nf_conntrack_tcp_timeout_time_wait`,
/// 120 s by default).
///
/// Reaping: the kernel evicts expired entries, and so sends their DESTROY events, only
/// when its garbage collector gets to them (adaptive, up to a minute apart; measured
/// 40-50 s on an idle namespace) or when a lookup or a table dump walks over them. The
/// monitor therefore dumps the table every reap interval (10 s by default,
/// [`ConntrackMonitor::set_reap_interval`]), discarding the answer: a flow's end is then
/// reported within that interval of its expiry. The stop timestamp the kernel reports is
/// the expiry time, not the eviction time.
#[derive(Debug)]
pub struct ConntrackMonitor {
    events: Socket,
    buf: Vec<u8>,
    diag: Diag,
    owners: SocketOwners,
    listeners: Vec<ListeningSocket>,
    local: Vec<IpAddr>,
    fixed_local: bool,
    refreshed: Instant,
    reap_every: Option<Duration>,
    reaped: Instant,
    pending: HashMap<u32, Pending>,
    /// Pending connections whose socket awaits the next /proc scan.
    unresolved: Vec<u32>,
    /// Insertion order of `pending`, for eviction.
    order: std::collections::VecDeque<u32>,
    stats: ConntrackStats,
}

impl ConntrackMonitor {
    /// Turns accounting on (see [`enable_conntrack_accounting`]), subscribes to NEW and
    /// DESTROY events, and reads the local addresses and listening sockets.
    pub fn open() -> Result<Self, HostError> {
        enable_conntrack_accounting()?;
        let events = netlink::open(NETLINK_NETFILTER, "opening a ctnetlink socket")?;
        for group in [GROUP_NEW, GROUP_DESTROY] {
            events
                .add_membership(group)
                .map_err(|source| HostError::Netlink {
                    what: "subscribing to conntrack events",
                    source,
                })?;
        }
        // Connection bursts come faster than one thread decodes them for a moment.
        events
            .set_rx_buf_sz(8 * 1024 * 1024)
            .map_err(|source| HostError::Netlink {
                what: "sizing the ctnetlink receive buffer",
                source,
            })?;
        let mut monitor = Self {
            events,
            buf: vec![0; netlink::RECV_BUF],
            diag: Diag::open()?,
            owners: SocketOwners::default(),
            listeners: Vec::new(),
            local: Vec::new(),
            fixed_local: false,
            refreshed: Instant::now(),
            reap_every: Some(REAP_EVERY),
            reaped: Instant::now(),
            pending: HashMap::new(),
            unresolved: Vec::new(),
            order: std::collections::VecDeque::new(),
            stats: ConntrackStats::default(),
        };
        monitor.refresh()?;
        Ok(monitor)
    }

    /// Uses these addresses as the host's own instead of the interfaces' (e.g. the
    /// workload addresses the server knows).
    pub fn set_local_addresses(&mut self, addresses: Vec<IpAddr>) {
        self.local = addresses;
        self.fixed_local = true;
    }

    pub fn stats(&self) -> ConntrackStats {
        self.stats
    }

    /// How often [`recv`](Self::recv) walks the table so the kernel evicts expired entries
    /// and sends their DESTROY events; `None` leaves it to the kernel's collector.
    pub fn set_reap_interval(&mut self, every: Option<Duration>) {
        self.reap_every = every;
    }

    /// Walks the connection table once (a dump whose answer is dropped): the kernel evicts
    /// the expired entries it passes, which sends their DESTROY events.
    pub fn reap(&mut self) -> Result<(), HostError> {
        let socket = netlink::open(NETLINK_NETFILTER, "opening a ctnetlink socket")?;
        netlink::drain(&socket, dump_request(), "walking the conntrack table")?;
        self.reaped = Instant::now();
        Ok(())
    }

    /// Re-reads listening sockets, their processes and (unless fixed) local addresses.
    pub fn refresh(&mut self) -> Result<(), HostError> {
        self.owners.scan();
        self.listeners = listening_with(&self.diag, &self.owners)?;
        if !self.fixed_local {
            self.local = local_addresses()?;
        }
        self.refreshed = Instant::now();
        Ok(())
    }

    /// Waits up to `timeout` for events and returns the connections that ended in the
    /// batch read (often empty: a batch may hold only openings). For a dedicated thread.
    pub fn recv(&mut self, timeout: Duration) -> Result<Vec<HostFlow>, HostError> {
        if self.refreshed.elapsed() >= LISTENER_REFRESH {
            self.refresh()?;
        }
        if self
            .reap_every
            .is_some_and(|every| self.reaped.elapsed() >= every)
        {
            self.reap()?;
        }
        self.resolve_sockets();
        // Wake for the next reap, and for the next scan while sockets await one, even
        // when no event comes.
        let mut timeout = match self.reap_every {
            Some(every) => timeout.min(every.saturating_sub(self.reaped.elapsed())),
            None => timeout,
        };
        if !self.unresolved.is_empty() {
            timeout = timeout.min(MISS_RESCAN.saturating_sub(self.owners.age()));
        }
        if !netlink::wait_readable(&self.events, timeout, "waiting for conntrack events")? {
            return Ok(Vec::new());
        }
        let Some(n) = netlink::recv(&self.events, &mut self.buf, "reading conntrack events")?
        else {
            self.stats.overruns += 1;
            return Ok(Vec::new());
        };
        let events: Vec<Result<Option<ConntrackEvent>, String>> = netlink::split(&self.buf[..n])
            .map(decode_conntrack)
            .collect();
        let mut out = Vec::new();
        for e in events {
            match e {
                Ok(Some(e)) if e.kind == ConntrackEventKind::New => {
                    self.stats.new_events += 1;
                    self.opened(&e);
                }
                Ok(Some(e)) => {
                    self.stats.destroy_events += 1;
                    out.push(self.closed(&e));
                }
                Ok(None) => {}
                Err(_) => self.stats.malformed += 1,
            }
        }
        Ok(out)
    }

    /// The current table as flows with their counters so far (`end_ms` is now), and
    /// remembers each entry's process so its DESTROY is attributed too. For a start-up
    /// snapshot and for reporting long-running connections.
    pub fn dump(&mut self) -> Result<Vec<HostFlow>, HostError> {
        let socket = netlink::open(NETLINK_NETFILTER, "opening a ctnetlink socket")?;
        let request = dump_request();
        let (entries, malformed) = netlink::request_raw(&socket, request, "dumping conntrack")?;
        self.stats.malformed += malformed;
        let now = now_ms();
        let mut out = Vec::new();
        for bytes in entries {
            let Ok(Some(e)) = decode_conntrack(&bytes) else {
                self.stats.malformed += 1;
                continue;
            };
            if e.id.is_some_and(|id| !self.pending.contains_key(&id)) {
                self.opened(&e);
            }
            let mut flow = self.closed_keep(&e);
            flow.end_ms = now;
            out.push(flow);
        }
        Ok(out)
    }

    fn direction(&self, e: &ConntrackEvent) -> HostDirection {
        let dnat_local = e
            .reply_src
            .is_some_and(|r| r.ip() != e.orig_dst.ip() && self.local.contains(&r.ip()));
        if self.local.contains(&e.orig_dst.ip()) || dnat_local {
            HostDirection::Inbound
        } else {
            HostDirection::Outbound
        }
    }

    /// Gives the sockets found at opening their process, once the scan limit allows.
    fn resolve_sockets(&mut self) {
        if self.unresolved.is_empty() || self.owners.age() < MISS_RESCAN {
            return;
        }
        self.owners.scan();
        for id in std::mem::take(&mut self.unresolved) {
            if let Some(p) = self.pending.get_mut(&id)
                && let Some(inode) = p.inode.take()
            {
                p.process = self.owners.pid(inode).and_then(process_info);
            }
        }
    }

    fn opened(&mut self, e: &ConntrackEvent) {
        let Some(id) = e.id else { return };
        let (process, inode) = match self.attribute(e) {
            Attribution::Process(p) => (Some(p), None),
            Attribution::Socket(inode) => {
                self.unresolved.push(id);
                (None, Some(inode))
            }
            Attribution::Nothing => (None, None),
        };
        if self.pending.len() >= MAX_PENDING {
            while let Some(old) = self.order.pop_front() {
                if self.pending.remove(&old).is_some() {
                    self.stats.evicted += 1;
                    break;
                }
            }
        }
        let start_ms = e.start_ns.map_or_else(now_ms, ns_to_ms);
        if self
            .pending
            .insert(
                id,
                Pending {
                    start_ms,
                    process,
                    inode,
                },
            )
            .is_none()
        {
            self.order.push_back(id);
        }
        // The order queue holds ids already closed too; keep it from outgrowing the map.
        if self.order.len() > 2 * MAX_PENDING {
            let pending = &self.pending;
            self.order.retain(|i| pending.contains_key(i));
        }
    }

    fn closed(&mut self, e: &ConntrackEvent) -> HostFlow {
        let pending = e.id.and_then(|id| self.pending.remove(&id));
        self.flow(e, pending)
    }

    fn closed_keep(&mut self, e: &ConntrackEvent) -> HostFlow {
        let pending = e.id.and_then(|id| self.pending.get(&id).cloned());
        self.flow(e, pending)
    }

    fn flow(&mut self, e: &ConntrackEvent, pending: Option<Pending>) -> HostFlow {
        let (start_ms, process) = match pending {
            Some(Pending {
                start_ms,
                process: Some(p),
                ..
            }) => (start_ms, Some(p)),
            // The socket found at opening: its process may still hold it.
            Some(Pending {
                start_ms,
                inode: Some(inode),
                ..
            }) => (
                start_ms,
                self.owners
                    .pid_rescanning(inode, MISS_RESCAN)
                    .and_then(process_info),
            ),
            // Nothing found at opening (a listener newer than the cache), or opened before
            // we listened: a listener is likely still there.
            other => (
                other.map_or_else(|| e.start_ns.map_or_else(now_ms, ns_to_ms), |p| p.start_ms),
                match self.attribute(e) {
                    Attribution::Process(p) => Some(p),
                    Attribution::Socket(inode) => self
                        .owners
                        .pid_rescanning(inode, MISS_RESCAN)
                        .and_then(process_info),
                    Attribution::Nothing => None,
                },
            ),
        };
        if process.is_none() {
            self.stats.unattributed += 1;
        }
        let (packets, bytes) = e.orig_counters.unwrap_or_default();
        let (reverse_packets, reverse_bytes) = e.reply_counters.unwrap_or_default();
        HostFlow {
            protocol: e.protocol,
            src: e.orig_src.ip(),
            src_port: e.orig_src.port(),
            dst: e.orig_dst.ip(),
            dst_port: e.orig_dst.port(),
            direction: self.direction(e),
            packets,
            bytes,
            reverse_packets,
            reverse_bytes,
            start_ms,
            end_ms: e.stop_ns.map_or_else(now_ms, ns_to_ms),
            process,
        }
    }

    /// The local process of a connection, while its socket exists.
    fn attribute(&mut self, e: &ConntrackEvent) -> Attribution {
        if e.protocol != TCP && e.protocol != UDP {
            return Attribution::Nothing;
        }
        match self.direction(e) {
            HostDirection::Inbound => {
                // Under DNAT the local service listens on the reply source.
                let local = e.reply_src.unwrap_or(e.orig_dst);
                if self.listener(e.protocol, local).is_none()
                    && self.refreshed.elapsed() >= MISS_RESCAN
                {
                    // A listener that started since the last refresh. On failure the
                    // old cache stays; the next refresh tries again.
                    let _ = self.refresh();
                }
                self.listener(e.protocol, local)
                    .map_or(Attribution::Nothing, Attribution::Process)
            }
            HostDirection::Outbound => {
                let inode = if e.protocol == TCP {
                    self.diag
                        .find_tcp(e.orig_src, e.orig_dst)
                        .ok()
                        .flatten()
                        .map(|s| s.inode)
                } else {
                    self.udp_socket(e.orig_src, e.orig_dst)
                };
                // A socket past close (TIME_WAIT) has no inode.
                match inode.filter(|i| *i != 0) {
                    None => {
                        self.stats.socket_not_found += 1;
                        Attribution::Nothing
                    }
                    Some(inode) => match self.owners.pid(inode).and_then(process_info) {
                        Some(p) => Attribution::Process(p),
                        None if self.owners.age() >= MISS_RESCAN => {
                            self.owners.scan();
                            self.owners
                                .pid(inode)
                                .and_then(process_info)
                                .map_or(Attribution::Socket(inode), Attribution::Process)
                        }
                        None => Attribution::Socket(inode),
                    },
                }
            }
        }
    }

    fn listener(&self, protocol: u8, local: SocketAddr) -> Option<ProcessInfo> {
        let name = if protocol == TCP { "tcp" } else { "udp" };
        // An exact address wins over a wildcard bind.
        let candidates = self
            .listeners
            .iter()
            .filter(|l| l.protocol == name && l.port == local.port());
        let mut wildcard = None;
        for l in candidates {
            if l.address == local.ip() {
                return l.process.clone();
            }
            if l.address.is_unspecified() && wildcard.is_none() {
                wildcard = l.process.clone();
            }
        }
        wildcard
    }

    /// A UDP socket sending from `local`: the connected one to `remote` if there is one,
    /// else the one bound to the local port.
    fn udp_socket(&self, local: SocketAddr, remote: SocketAddr) -> Option<u64> {
        let sockets = self
            .diag
            .dump(UDP, netlink_packet_sock_diag::inet::StateFlags::all())
            .ok()?;
        let same_port = |s: &&crate::diag::SockEntry| {
            s.local.port() == local.port()
                && (s.local.ip() == local.ip() || s.local.ip().is_unspecified())
        };
        sockets
            .iter()
            .filter(same_port)
            .find(|s| s.remote == remote)
            .or_else(|| sockets.iter().find(same_port))
            .map(|s| s.inode)
    }
}

/// Deletes every conntrack entry of this network namespace, both families (what
/// `conntrack -F` does). For quarantine: its table already drops packets of connections
/// opened before it, and with their entries gone nothing else on the host (another
/// table's `ct state established` accept, NAT) keeps treating them as known either.
pub fn flush_conntrack() -> Result<(), HostError> {
    let socket = netlink::open(NETLINK_NETFILTER, "opening a ctnetlink socket")?;
    for family in [NetfilterProtoFamily::IPv4, NetfilterProtoFamily::IPv6] {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK;
        let request = NetlinkMessage::new(
            header,
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(family, 0, 0),
                ConntrackMessage::Delete(vec![]),
            )),
        );
        netlink::drain(&socket, request, "flushing conntrack")?;
    }
    Ok(())
}

/// IPCTNL_MSG_CT_GET with NLM_F_DUMP, both families.
fn dump_request() -> NetlinkMessage<NetfilterMessage> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    NetlinkMessage::new(
        header,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 0),
            ConntrackMessage::Get(vec![]),
        )),
    )
}

fn ns_to_ms(ns: u64) -> i64 {
    i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An attribute: length, type, value, padding.
    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&u16::try_from(4 + value.len()).unwrap().to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    const NESTED: u16 = 0x8000;

    fn tuple(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        let ip = [nla(1, &src), nla(2, &dst)].concat();
        let pr = [
            nla(1, &[proto]),
            nla(2, &sport.to_be_bytes()),
            nla(3, &dport.to_be_bytes()),
        ]
        .concat();
        [nla(1 | NESTED, &ip), nla(2 | NESTED, &pr)].concat()
    }

    /// A ctnetlink message as the kernel sends it: netlink header, nfgenmsg, attributes.
    fn message(msg_type: u8, attrs: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        let len = u32::try_from(16 + 4 + attrs.len()).unwrap();
        v.extend_from_slice(&len.to_ne_bytes());
        v.extend_from_slice(&((1u16 << 8) | u16::from(msg_type)).to_ne_bytes());
        v.extend_from_slice(&[0; 10]);
        v.extend_from_slice(&[2, 0, 0, 0]); // AF_INET, version 0, res_id 0
        v.extend_from_slice(attrs);
        v
    }

    fn counters_nla(kind: u16, packets: u64, bytes: u64) -> Vec<u8> {
        nla(
            kind | NESTED,
            &[nla(1, &packets.to_be_bytes()), nla(2, &bytes.to_be_bytes())].concat(),
        )
    }

    fn destroy() -> Vec<u8> {
        let attrs = [
            nla(
                1 | NESTED,
                &tuple([10, 0, 0, 2], [10, 0, 0, 1], 6, 40000, 8080),
            ),
            nla(
                2 | NESTED,
                &tuple([10, 0, 0, 1], [10, 0, 0, 2], 6, 8080, 40000),
            ),
            nla(12, &7u32.to_be_bytes()),
            counters_nla(9, 80, 100_000),
            counters_nla(10, 40, 2_080),
            nla(
                20 | NESTED,
                &[
                    nla(1, &5_000_000u64.to_be_bytes()),
                    nla(2, &9_000_000u64.to_be_bytes()),
                ]
                .concat(),
            ),
        ]
        .concat();
        message(2, &attrs)
    }

    #[test]
    fn a_destroy_event_decodes_with_counters_and_timestamps() {
        let e = decode_conntrack(&destroy()).unwrap().unwrap();
        assert_eq!(e.kind, ConntrackEventKind::Destroy);
        assert_eq!(e.id, Some(7));
        assert_eq!(e.protocol, 6);
        assert_eq!(e.orig_src, "10.0.0.2:40000".parse().unwrap());
        assert_eq!(e.orig_dst, "10.0.0.1:8080".parse().unwrap());
        assert_eq!(e.reply_src, Some("10.0.0.1:8080".parse().unwrap()));
        assert_eq!(e.orig_counters, Some((80, 100_000)));
        assert_eq!(e.reply_counters, Some((40, 2_080)));
        assert_eq!((e.start_ns, e.stop_ns), (Some(5_000_000), Some(9_000_000)));
    }

    #[test]
    fn a_new_event_without_counters_decodes() {
        let attrs = nla(
            1 | NESTED,
            &tuple([10, 0, 0, 2], [10, 0, 0, 1], 17, 5353, 53),
        );
        let e = decode_conntrack(&message(0, &attrs)).unwrap().unwrap();
        assert_eq!(e.kind, ConntrackEventKind::New);
        assert_eq!((e.protocol, e.orig_dst.port()), (17, 53));
        assert_eq!((e.id, e.orig_counters), (None, None));
    }

    #[test]
    fn truncated_and_short_values_are_errors_not_panics() {
        let d = destroy();
        for cut in 0..d.len() {
            let mut m = d[..cut].to_vec();
            if m.len() >= 4 {
                m[..4].copy_from_slice(&u32::try_from(cut).unwrap().to_ne_bytes());
            }
            let _ = decode_conntrack(&m);
        }
        let bad_counter = [
            nla(1 | NESTED, &tuple([10, 0, 0, 2], [10, 0, 0, 1], 6, 1, 2)),
            nla(9 | NESTED, &nla(2, &[1, 2, 3])),
        ]
        .concat();
        assert!(decode_conntrack(&message(2, &bad_counter)).is_err());
        assert!(decode_conntrack(&message(2, &[])).is_err(), "no tuple");
    }

    proptest! {
        #[test]
        fn arbitrary_attributes_never_panic(attrs in proptest::collection::vec(any::<u8>(), 0..400), t in 0u8..4) {
            let _ = decode_conntrack(&message(t, &attrs));
        }

        #[test]
        fn mutated_destroy_events_never_panic(flips in proptest::collection::vec((0usize..400, any::<u8>()), 1..8)) {
            let mut m = destroy();
            for (at, b) in flips {
                let i = at % m.len();
                m[i] = b;
            }
            let _ = decode_conntrack(&m);
        }

        #[test]
        fn arbitrary_datagrams_never_panic(d in proptest::collection::vec(any::<u8>(), 0..400)) {
            for m in netlink::split(&d) {
                let _ = decode_conntrack(m);
            }
        }
    }
}
