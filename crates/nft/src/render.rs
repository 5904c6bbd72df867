//! Host rule IR → nftables text. Pure: no kernel, no clock; the same input always gives
//! the same bytes, so the output can be golden-tested and hashed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use bulkhead_model::{Action, EnforcementMode, PortRange, ProtoMatch, ServicePort, protocol_name};
use bulkhead_policy::host::{HostPolicy, HostRule, Peers};
use ipnet::IpNet;

const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMPV6: u8 = 58;
const SCTP: u8 = 132;

/// The kernel keeps at most 127 bytes of a log prefix (NF_LOG_PREFIXLEN with its NUL).
const MAX_LOG_PREFIX: usize = 127;

/// How to render: what the renderer cannot learn from policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// Inbound ports that are always accepted, whatever the policy says, so that a wrong
    /// policy can never lock the operators out of the host.
    pub failsafe_ports: Vec<ServicePort>,
    /// Outbound ports always accepted (DNS, NTP, a management network), whatever the
    /// policy and even in quarantine: the outbound half of Calico's failsafe lists.
    pub failsafe_outbound: Vec<ServicePort>,
    /// NFLOG group the agent listens on for denied and would-be-denied connections.
    pub log_group: u16,
    /// The one table Bulkhead owns, in the `inet` family.
    pub table: String,
    /// The control plane's TCP endpoints, always reachable on the way out: an enforced
    /// host whose policy forgot them would otherwise cut off its own agent, which could
    /// then never receive the policy that fixes it.
    pub control_plane: Vec<SocketAddr>,
    /// Where the host knows it: a provider process name → the cgroup v2 paths of the
    /// systemd services it runs in, relative to `/sys/fs/cgroup` (e.g.
    /// `system.slice/postgresql.service`). An inbound allow that names the process then
    /// matches the receiving socket's cgroup (`socket cgroupv2`); a process not listed
    /// here stays invisible to the kernel and its allow never matches.
    pub process_cgroups: BTreeMap<String, Vec<String>>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            failsafe_ports: vec![ServicePort::tcp(22)],
            failsafe_outbound: Vec::new(),
            log_group: 100,
            table: "bulkhead".to_string(),
            control_plane: Vec::new(),
            process_cgroups: BTreeMap::new(),
        }
    }
}

/// One `nft -f` transaction that replaces the owned table atomically: create it if
/// absent (so the delete cannot fail), delete it, define it in full. The kernel applies
/// all of it or none of it, so there is no moment with a half-built table.
///
/// Idle workloads get only the delete: nothing of ours stays in the kernel.
pub fn render(hp: &HostPolicy, opts: &RenderOptions) -> String {
    let t = &opts.table;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# bulkhead: workload {}, mode {}. Generated; the agent replaces this table whole.",
        safe(&hp.workload),
        hp.mode
    );
    let _ = writeln!(out, "table inet {t} {{}}");
    let _ = writeln!(out, "delete table inet {t}");
    if hp.mode == EnforcementMode::Idle && !hp.quarantined {
        return out;
    }
    let input = Direction::Inbound.render(hp, &hp.inbound, opts);
    let output = Direction::Outbound.render(hp, &hp.outbound, opts);

    let _ = writeln!(out, "table inet {t} {{");
    let _ = writeln!(
        out,
        "\tcomment \"bulkhead workload {} mode {}{}\"",
        safe(&hp.workload),
        hp.mode,
        if hp.quarantined { " quarantined" } else { "" }
    );
    for set in input.sets.iter().chain(&output.sets) {
        out.push_str(set);
    }
    for (name, hook, chain) in [("input", "input", &input), ("output", "output", &output)] {
        let _ = writeln!(out, "\tchain {name} {{");
        // Policy accept: every verdict is an explicit rule below, so the one place that
        // decides the default is the last rule, with its log statement.
        let _ = writeln!(
            out,
            "\t\ttype filter hook {hook} priority 0; policy accept;"
        );
        for line in &chain.lines {
            let _ = writeln!(out, "\t\t{line}");
        }
        let _ = writeln!(out, "\t}}");
    }
    out.push_str("}\n");
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(a: &IpAddr) -> Family {
        if a.is_ipv4() { Family::V4 } else { Family::V6 }
    }
    fn of_net(n: &IpNet) -> Family {
        Family::of(&n.addr())
    }
    fn payload(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
    fn set_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }
    fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
}

#[derive(Debug, Default)]
struct Chain {
    sets: Vec<String>,
    lines: Vec<String>,
}

impl Direction {
    fn prefix(self) -> &'static str {
        match self {
            Direction::Inbound => "in",
            Direction::Outbound => "out",
        }
    }
    /// (peer field, local field): inbound matches the peer as source.
    fn fields(self) -> (&'static str, &'static str) {
        match self {
            Direction::Inbound => ("saddr", "daddr"),
            Direction::Outbound => ("daddr", "saddr"),
        }
    }
    fn loopback(self) -> &'static str {
        match self {
            Direction::Inbound => "iif \"lo\" accept",
            Direction::Outbound => "oif \"lo\" accept",
        }
    }

    fn render(self, hp: &HostPolicy, rules: &[HostRule], opts: &RenderOptions) -> Chain {
        if hp.quarantined {
            return self.isolate(opts);
        }
        let mut chain = Chain::default();
        // Replies and related ICMP errors of connections already accepted: policy is
        // about who may open a connection, and replies are implied (stateful).
        chain
            .lines
            .push("ct state established,related accept".into());
        chain.lines.push(self.loopback().into());
        if self == Direction::Inbound {
            // Failsafe on the way in only: management sessions are opened to the host,
            // and their replies leave through the conntrack rule above.
            for l4 in l4_matches(opts.failsafe_ports.iter().copied()) {
                chain
                    .lines
                    .push(join(&[&l4.text(), "accept comment \"bulkhead failsafe\""]));
            }
        }
        if self == Direction::Outbound {
            for l4 in l4_matches(opts.failsafe_outbound.iter().copied()) {
                chain.lines.push(join(&[
                    &l4.text(),
                    "accept comment \"bulkhead failsafe out\"",
                ]));
            }
            for ep in &opts.control_plane {
                let family = Family::of(&ep.ip()).payload();
                chain.lines.push(format!(
                    "{family} daddr {} tcp dport {} accept comment \"bulkhead control plane\"",
                    ep.ip(),
                    ep.port()
                ));
            }
        }
        for (i, rule) in rules.iter().enumerate() {
            self.render_rule(hp, i, rule, opts, &mut chain);
        }
        let default = match hp.mode {
            EnforcementMode::Enforced => log_verdict(opts.log_group, "default-deny", "drop"),
            _ => log_verdict(opts.log_group, "would-default-deny", "accept"),
        };
        chain.lines.push(format!("{default} comment \"default\""));
        chain
    }

    /// Quarantine: no `ct state established` accept, so connections opened before it
    /// are cut too (a command-and-control link as much as an inbound session). What
    /// stays: loopback, the failsafe ports and their replies, the control plane. The
    /// reply rules match ports rather than conntrack state, so a session the agent's
    /// conntrack flush forgot is picked up again mid-stream instead of dropped.
    fn isolate(self, opts: &RenderOptions) -> Chain {
        let mut chain = Chain::default();
        chain.lines.push(self.loopback().into());
        // IPv6 neighbour discovery: without it the failsafe and control-plane peers
        // become unreachable once the neighbour cache expires.
        chain.lines.push(
            "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept comment \"bulkhead neighbour discovery\"".into(),
        );
        for l4 in l4_matches(opts.failsafe_ports.iter().copied()) {
            let text = match self {
                Direction::Inbound => l4.text(),
                Direction::Outbound => l4.reply_text(),
            };
            chain
                .lines
                .push(join(&[&text, "accept comment \"bulkhead failsafe\""]));
        }
        for l4 in l4_matches(opts.failsafe_outbound.iter().copied()) {
            let text = match self {
                Direction::Outbound => l4.text(),
                Direction::Inbound => l4.reply_text(),
            };
            chain
                .lines
                .push(join(&[&text, "accept comment \"bulkhead failsafe out\""]));
        }
        for ep in &opts.control_plane {
            let family = Family::of(&ep.ip()).payload();
            let (addr, port) = match self {
                Direction::Outbound => ("daddr", "dport"),
                Direction::Inbound => ("saddr", "sport"),
            };
            chain.lines.push(format!(
                "{family} {addr} {} tcp {port} {} accept comment \"bulkhead control plane\"",
                ep.ip(),
                ep.port()
            ));
        }
        let drop = log_verdict(opts.log_group, "quarantine", "drop");
        chain.lines.push(format!("{drop} comment \"quarantine\""));
        chain
    }

    fn render_rule(
        self,
        hp: &HostPolicy,
        index: usize,
        rule: &HostRule,
        opts: &RenderOptions,
        chain: &mut Chain,
    ) {
        let id = safe(&rule.rule_id);
        // nftables sees a process only as the cgroup of the socket a packet goes to, and
        // only on the way in (the provider is this host): an allow that requires a
        // process matches when that process runs as a known systemd service, and never
        // otherwise; a deny that names one always matches (the oracle's fail-closed
        // rule).
        let ports: Vec<ServicePort> = rule
            .services
            .iter()
            .filter(|(_, process)| rule.action == Action::Deny || process.is_none())
            .map(|(sp, _)| *sp)
            .collect();
        let mut by_cgroup: BTreeMap<&str, Vec<ServicePort>> = BTreeMap::new();
        if self == Direction::Inbound && rule.action == Action::Allow {
            for (sp, process) in &rule.services {
                let Some(p) = process else { continue };
                for cg in opts.process_cgroups.get(p).into_iter().flatten() {
                    let cg = cg.trim_start_matches('/');
                    if nft_safe_path(cg) {
                        by_cgroup.entry(cg).or_default().push(*sp);
                    }
                }
            }
        }
        if ports.is_empty() && by_cgroup.is_empty() {
            chain.lines.push(format!(
                "# {id}: allows only connections to a named process that runs as no known service here; not allowed"
            ));
            return;
        }
        let verdict = match (rule.action, hp.mode) {
            (Action::Allow, _) => "accept".to_string(),
            (Action::Deny, EnforcementMode::Enforced) => {
                log_verdict(opts.log_group, &format!("deny {id}"), "drop")
            }
            (Action::Deny, _) => log_verdict(opts.log_group, &format!("would-deny {id}"), "accept"),
        };
        let verdict = format!("{verdict} comment \"{id}\"");
        let (peer_field, local_field) = self.fields();

        // The local side needs a match only when the rule is about some of the host's
        // addresses; otherwise it holds for the whole host, including addresses the
        // inventory does not know (container bridges, link-local).
        let local_subset = rule.local.len() < hp.addresses.len();
        let locals = |f: Family| -> Vec<IpAddr> {
            rule.local
                .iter()
                .copied()
                .filter(|a| Family::of(a) == f)
                .collect()
        };
        // (socket match, L4 matches): the plain ports, then each service cgroup's.
        let mut l4s: Vec<(String, L4)> = l4_matches(ports.into_iter())
            .into_iter()
            .map(|l4| (String::new(), l4))
            .collect();
        for (cg, sps) in by_cgroup {
            let level = cg.split('/').filter(|c| !c.is_empty()).count();
            let socket = format!("socket cgroupv2 level {level} \"{cg}\"");
            l4s.extend(
                l4_matches(sps.into_iter())
                    .into_iter()
                    .map(|l4| (socket.clone(), l4)),
            );
        }
        let emit = |chain: &mut Chain, family: Option<Family>, peer: String| {
            let local = match family {
                Some(f) if local_subset => {
                    let l = locals(f);
                    if l.is_empty() {
                        return;
                    }
                    format!("{} {local_field} {}", f.payload(), anon_set(&l))
                }
                _ => String::new(),
            };
            for (socket, l4) in &l4s {
                if let (Some(f), Some(only)) = (family, l4.family()) {
                    // `icmp type` is IPv4 only and `icmpv6 type` IPv6 only: such a
                    // pairing can never match, and nft refuses it.
                    if f != only {
                        continue;
                    }
                }
                chain
                    .lines
                    .push(join(&[&peer, &local, &l4.text(), socket, &verdict]));
            }
        };
        match &rule.peers {
            Peers::Any if local_subset => {
                for f in [Family::V4, Family::V6] {
                    emit(chain, Some(f), String::new());
                }
            }
            Peers::Any => emit(chain, None, String::new()),
            Peers::Nets(nets) => {
                for f in [Family::V4, Family::V6] {
                    let fam: Vec<&IpNet> = nets.iter().filter(|n| Family::of_net(n) == f).collect();
                    if fam.is_empty() {
                        continue;
                    }
                    // A named set per rule: lookup cost stays flat however many peers a
                    // rule has, and the set shows up by name in the listing. Interval
                    // sets only where a prefix needs one: a set of single addresses (a
                    // hash) loads about twice as fast (docs/benchmarks.md).
                    let name = format!("{}_{index}_{}", self.prefix(), f.suffix());
                    let elements: Vec<String> = fam.iter().map(|n| net_text(n)).collect();
                    let flags = if fam.iter().any(|n| n.prefix_len() != n.max_prefix_len()) {
                        "\t\tflags interval\n"
                    } else {
                        ""
                    };
                    chain.sets.push(format!(
                        "\tset {name} {{\n\t\ttype {}\n{flags}\t\tcomment \"{id}\"\n\t\telements = {{ {} }}\n\t}}\n",
                        f.set_type(),
                        elements.join(", ")
                    ));
                    emit(
                        chain,
                        Some(f),
                        format!("{} {peer_field} @{name}", f.payload()),
                    );
                }
            }
        }
    }
}

/// `log group N prefix "bulkhead WHAT " VERDICT`, with the prefix cut to what the
/// kernel keeps (the rule comment still carries the full id).
fn log_verdict(group: u16, what: &str, verdict: &str) -> String {
    let mut prefix = format!("bulkhead {what}");
    prefix.truncate(MAX_LOG_PREFIX - 1);
    format!("log group {group} prefix \"{prefix} \" {verdict}")
}

/// Names are validated to `[A-Za-z0-9._-]`; anything else is replaced so that no input
/// can close a quoted string in the transaction.
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether a cgroup path can go into a quoted nft string as it is. Unit names with
/// systemd's `\x2d` escapes (or anything else) are left out: such a process stays
/// invisible to the kernel, so its allow does not match (fail closed) rather than
/// making the whole transaction fail.
fn nft_safe_path(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '@' | ':'))
}

fn join(parts: &[&str]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Hosts as bare addresses, as nft itself lists them.
fn net_text(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

fn anon_set(addrs: &[IpAddr]) -> String {
    match addrs {
        [one] => one.to_string(),
        _ => format!(
            "{{ {} }}",
            addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// One protocol match: no protocol at all (`any`), a whole protocol, or some of its
/// ports (ICMP: message types), merged and sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum L4 {
    Any,
    Proto(u8, Option<Vec<PortRange>>),
}

fn full_range(proto: u8) -> PortRange {
    match proto {
        ICMP | ICMPV6 => PortRange::ALL_ICMP_TYPES,
        _ => PortRange::ALL,
    }
}

/// Groups service ports by protocol; `any` swallows everything.
fn l4_matches(ports: impl Iterator<Item = ServicePort>) -> Vec<L4> {
    let mut by_proto: BTreeMap<u8, Option<Vec<PortRange>>> = BTreeMap::new();
    for sp in ports {
        let ProtoMatch::Proto(p) = sp.proto else {
            return vec![L4::Any];
        };
        let whole = sp.ports == full_range(p) || !matches!(p, TCP | UDP | SCTP | ICMP | ICMPV6);
        let entry = by_proto.entry(p).or_insert_with(|| Some(Vec::new()));
        match entry {
            Some(ranges) if !whole => ranges.push(sp.ports),
            _ => *entry = None,
        }
    }
    by_proto
        .into_iter()
        .map(|(p, ranges)| L4::Proto(p, ranges.map(merge_ranges)))
        .collect()
}

/// Sorted, overlapping and adjacent ranges joined: nft refuses overlapping intervals in
/// one set, and merged output is the same whatever order the policy listed ports in.
fn merge_ranges(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort();
    let mut out: Vec<PortRange> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(last) if u32::from(r.start) <= u32::from(last.end) + 1 => {
                last.end = last.end.max(r.end);
            }
            _ => out.push(r),
        }
    }
    out
}

impl L4 {
    /// Only one IP family can carry this match.
    fn family(&self) -> Option<Family> {
        match self {
            L4::Proto(ICMP, Some(_)) => Some(Family::V4),
            L4::Proto(ICMPV6, Some(_)) => Some(Family::V6),
            _ => None,
        }
    }

    /// The replies of connections this match accepts, and nothing that could open one:
    /// TCP from the same ports, but never a bare SYN (a session the conntrack flush
    /// forgot is still picked up mid-stream, while no one can open a connection from
    /// such a source port); other protocols only as conntrack replies, and ICMP
    /// whatever its reply type (an echo request's reply is another type).
    fn reply_text(&self) -> String {
        match self {
            L4::Proto(TCP, Some(_)) => {
                let text = self.text().replacen("tcp dport", "tcp sport", 1);
                format!("{text} tcp flags & (syn | ack) != syn")
            }
            L4::Proto(p @ (UDP | SCTP), Some(_)) => {
                let field = protocol_name(*p).unwrap_or("sctp");
                let text =
                    self.text()
                        .replacen(&format!("{field} dport"), &format!("{field} sport"), 1);
                join(&["ct state established", &text])
            }
            L4::Proto(p @ (ICMP | ICMPV6), _) => {
                join(&["ct state established,related", &L4::Proto(*p, None).text()])
            }
            L4::Proto(..) => join(&["ct state established,related", &self.text()]),
            // Never a bare accept: `any` is refused as a failsafe port; were it given,
            // its replies are conntrack replies.
            L4::Any => "ct state established,related".to_string(),
        }
    }

    fn text(&self) -> String {
        match self {
            L4::Any => String::new(),
            L4::Proto(p, None) => match protocol_name(*p) {
                Some(name) => format!("meta l4proto {name}"),
                None => format!("meta l4proto {p}"),
            },
            L4::Proto(p, Some(ranges)) => {
                let field = match *p {
                    ICMP => "icmp type",
                    ICMPV6 => "icmpv6 type",
                    TCP => "tcp dport",
                    UDP => "udp dport",
                    _ => "sctp dport",
                };
                let items: Vec<String> = ranges
                    .iter()
                    .map(|r| {
                        if r.start == r.end {
                            r.start.to_string()
                        } else {
                            format!("{}-{}", r.start, r.end)
                        }
                    })
                    .collect();
                match items.as_slice() {
                    [one] => format!("{field} {one}"),
                    _ => format!("{field} {{ {} }}", items.join(", ")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(s: &str) -> ServicePort {
        s.parse().unwrap()
    }

    #[test]
    fn ports_group_by_protocol_and_merge() {
        let got = l4_matches(
            [
                "tcp/80-90",
                "tcp/22",
                "tcp/91",
                "udp/53",
                "icmp/8",
                "icmp/0",
                "proto/47",
            ]
            .into_iter()
            .map(sp),
        );
        let text: Vec<String> = got.iter().map(L4::text).collect();
        assert_eq!(
            text,
            [
                "icmp type { 0, 8 }",
                "tcp dport { 22, 80-91 }",
                "udp dport 53",
                "meta l4proto 47",
            ]
        );
        assert_eq!(
            l4_matches(["tcp/22", "any"].into_iter().map(sp)),
            vec![L4::Any]
        );
        assert_eq!(
            l4_matches(["tcp/22", "tcp"].into_iter().map(sp))[0].text(),
            "meta l4proto tcp"
        );
        assert_eq!(
            l4_matches(["icmpv6"].into_iter().map(sp))[0].text(),
            "meta l4proto icmpv6"
        );
    }

    #[test]
    fn log_prefixes_fit_the_kernel_limit() {
        let long = "x".repeat(128);
        let v = log_verdict(100, &format!("would-deny {long}"), "accept");
        let prefix = v.split('"').nth(1).unwrap();
        assert_eq!(prefix.len(), MAX_LOG_PREFIX);
        assert!(prefix.ends_with(' '));
    }

    #[test]
    fn quarantine_keeps_failsafe_and_control_plane_and_nothing_established() {
        let hp = HostPolicy {
            workload: "db".into(),
            mode: EnforcementMode::Monitor,
            addresses: vec!["10.0.0.3".parse().unwrap()],
            inbound: Vec::new(),
            outbound: Vec::new(),
            quarantined: true,
        };
        let opts = RenderOptions {
            failsafe_ports: vec![sp("tcp/22"), sp("udp/161"), sp("icmp/8")],
            failsafe_outbound: vec![sp("udp/53")],
            control_plane: vec!["10.0.0.1:8443".parse().unwrap()],
            ..RenderOptions::default()
        };
        let text = render(&hp, &opts);
        assert!(
            !text.contains("ct state established,related accept"),
            "{text}"
        );
        for line in [
            "tcp dport 22 accept comment \"bulkhead failsafe\"",
            "tcp sport 22 tcp flags & (syn | ack) != syn accept comment \"bulkhead failsafe\"",
            "ct state established udp sport 161 accept comment \"bulkhead failsafe\"",
            "ct state established,related meta l4proto icmp accept",
            "ip daddr 10.0.0.1 tcp dport 8443 accept",
            "udp dport 53 accept comment \"bulkhead failsafe out\"",
            "ct state established udp sport 53 accept comment \"bulkhead failsafe out\"",
            "ip saddr 10.0.0.1 tcp sport 8443 accept",
            "log group 100 prefix \"bulkhead quarantine \" drop comment \"quarantine\"",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        // Monitor mode does not soften it: the drop is the last word in both chains.
        assert_eq!(
            text.matches("prefix \"bulkhead quarantine \" drop").count(),
            2
        );
    }

    #[test]
    fn quotes_cannot_escape() {
        assert_eq!(safe("a\" accept; x"), "a__accept__x");
    }
}
