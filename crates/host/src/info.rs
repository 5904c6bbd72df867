//! The host's identity and what it exposes: [`host_info`].

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::path::Path;

use bulkhead_api::host::{HostInfo, Interface, ListeningSocket};
use ipnet::IpNet;
use netlink_packet_sock_diag::inet::StateFlags;

use crate::HostError;
use crate::diag::{Diag, STATE_LISTEN, TCP, UDP};
use crate::process::{SocketOwners, process_info};

/// Hostname, OS, kernel, machine id, the current network namespace's interfaces and its
/// listening TCP and bound UDP sockets with their processes.
pub fn host_info() -> Result<HostInfo, HostError> {
    let os_release = read_first(&["/etc/os-release", "/usr/lib/os-release"]).unwrap_or_default();
    let os = parse_os_release(&os_release);
    Ok(HostInfo {
        hostname: read_trimmed("/proc/sys/kernel/hostname")?,
        os_name: os.get("ID").cloned().unwrap_or_default(),
        os_version: os.get("VERSION_ID").cloned().unwrap_or_default(),
        kernel: read_trimmed("/proc/sys/kernel/osrelease")?,
        // Optional: minimal containers and fresh images may have none.
        machine_id: fs::read_to_string("/etc/machine-id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
        interfaces: interfaces()?,
        listening: listening_sockets()?,
    })
}

/// Every address of the current namespace's interfaces (loopback included), sorted: what
/// conntrack direction is decided against.
pub fn local_addresses() -> Result<Vec<IpAddr>, HostError> {
    let mut out: Vec<IpAddr> = interfaces()?
        .iter()
        .flat_map(|i| i.addresses.iter().map(IpNet::addr))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Interfaces by name, each with its MAC (none for all-zero ones, as on loopback) and its
/// addresses with prefix lengths, from getifaddrs (netlink underneath).
fn interfaces() -> Result<Vec<Interface>, HostError> {
    let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(HostError::Interfaces)? {
        let entry = by_name
            .entry(ifa.interface_name.clone())
            .or_insert_with(|| Interface {
                name: ifa.interface_name.clone(),
                ..Interface::default()
            });
        let Some(address) = ifa.address else {
            continue;
        };
        if let Some(link) = address.as_link_addr() {
            if let Some(mac) = link.addr().filter(|m| m.iter().any(|b| *b != 0)) {
                entry.mac = Some(format_mac(&mac));
            }
            continue;
        }
        let (ip, mask): (IpAddr, Option<IpAddr>) = if let Some(v4) = address.as_sockaddr_in() {
            (
                IpAddr::V4(v4.ip()),
                ifa.netmask
                    .and_then(|m| m.as_sockaddr_in().map(|m| IpAddr::V4(m.ip()))),
            )
        } else if let Some(v6) = address.as_sockaddr_in6() {
            (
                IpAddr::V6(v6.ip()),
                ifa.netmask
                    .and_then(|m| m.as_sockaddr_in6().map(|m| IpAddr::V6(m.ip()))),
            )
        } else {
            continue;
        };
        let prefix = mask.map_or(
            match ip {
                IpAddr::V4(_) => 32,
                IpAddr::V6(_) => 128,
            },
            prefix_len,
        );
        if let Ok(net) = IpNet::new(ip, prefix) {
            entry.addresses.push(net);
        }
    }
    let mut out: Vec<Interface> = by_name.into_values().collect();
    for i in &mut out {
        i.addresses.sort();
        i.addresses.dedup();
    }
    Ok(out)
}

/// Listening TCP sockets and bound, unconnected UDP sockets of the current namespace, each
/// with the process holding it when one could be found, sorted by protocol, port, address.
pub fn listening_sockets() -> Result<Vec<ListeningSocket>, HostError> {
    let diag = Diag::open()?;
    let mut owners = SocketOwners::default();
    owners.scan();
    listening_with(&diag, &owners)
}

pub(crate) fn listening_with(
    diag: &Diag,
    owners: &SocketOwners,
) -> Result<Vec<ListeningSocket>, HostError> {
    let mut sockets = diag.dump(TCP, StateFlags::LISTEN)?;
    sockets.retain(|s| s.state == STATE_LISTEN);
    // A UDP socket with a remote port is a client's connected socket, not a service.
    sockets.extend(
        diag.dump(UDP, StateFlags::all())?
            .into_iter()
            .filter(|s| s.remote.port() == 0),
    );
    let mut out: Vec<ListeningSocket> = sockets
        .into_iter()
        .map(|s| ListeningSocket {
            protocol: if s.protocol == TCP { "tcp" } else { "udp" }.to_string(),
            address: s.local.ip(),
            port: s.local.port(),
            process: owners.pid(s.inode).and_then(process_info),
        })
        .collect();
    out.sort_by(|a, b| (&a.protocol, a.port, a.address).cmp(&(&b.protocol, b.port, b.address)));
    out.dedup_by(|a, b| (&a.protocol, a.port, a.address) == (&b.protocol, b.port, b.address));
    Ok(out)
}

fn read_trimmed(path: &str) -> Result<String, HostError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| HostError::Read {
            path: path.into(),
            source,
        })
}

fn read_first(paths: &[&str]) -> Option<String> {
    paths
        .iter()
        .find_map(|p| fs::read_to_string(Path::new(p)).ok())
}

/// os-release(5): KEY=value lines, values optionally quoted with shell quoting (we undo
/// the quotes and backslash escapes, which is all the format allows).
fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            Some((k.trim().to_string(), unquote(v.trim())))
        })
        .collect()
}

fn unquote(v: &str) -> String {
    let inner = ['"', '\'']
        .iter()
        .find_map(|q| v.strip_prefix(*q).and_then(|r| r.strip_suffix(*q)))
        .unwrap_or(v);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn prefix_len(mask: IpAddr) -> u8 {
    let ones = match mask {
        IpAddr::V4(m) => u32::from(m).count_ones(),
        IpAddr::V6(m) => u128::from(m).count_ones(),
    };
    u8::try_from(ones).unwrap_or(0)
}

fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_values_are_unquoted() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n# comment\nID=debian\nVERSION_ID=\"12\"\nNAME='Some \\\"x\\\"'\n";
        let m = parse_os_release(text);
        assert_eq!(m["ID"], "debian");
        assert_eq!(m["VERSION_ID"], "12");
        assert_eq!(m["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(m["NAME"], "Some \"x\"");
    }

    #[test]
    fn masks_give_prefix_lengths() {
        assert_eq!(prefix_len("255.255.255.0".parse().unwrap()), 24);
        assert_eq!(prefix_len("ffff:ffff:ffff:ffff::".parse().unwrap()), 64);
        assert_eq!(
            format_mac(&[0x02, 0, 0xab, 1, 2, 0xff]),
            "02:00:ab:01:02:ff"
        );
    }
}

/// The processes listening here that run as systemd services, by name, each with the
/// cgroup v2 paths of its services relative to `/sys/fs/cgroup` (what nftables'
/// `socket cgroupv2` resolves): on a hybrid hierarchy the v2 tree is mounted below it,
/// at `/sys/fs/cgroup/unified`, and the paths carry that prefix. Empty when cgroup v2 is
/// mounted nowhere under `/sys/fs/cgroup`.
pub fn service_cgroups() -> Result<std::collections::BTreeMap<String, Vec<String>>, HostError> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Some(prefix) = cgroup2_prefix(&mountinfo) else {
        return Ok(out);
    };
    for s in listening_sockets()? {
        let Some(p) = s.process else { continue };
        let (Some(_unit), Some(cgroup)) = (&p.systemd_unit, &p.cgroup) else {
            continue;
        };
        let path = format!("{prefix}{}", cgroup.trim_start_matches('/'));
        let paths = out.entry(p.name.clone()).or_default();
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    for paths in out.values_mut() {
        paths.sort();
    }
    Ok(out)
}

/// Where cgroup v2 is mounted, as a prefix relative to `/sys/fs/cgroup` ("" when it is
/// `/sys/fs/cgroup` itself, "unified/" on hybrid hierarchies).
fn cgroup2_prefix(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mountpoint = left.split_whitespace().nth(4)?;
        if mountpoint == "/sys/fs/cgroup" {
            Some(String::new())
        } else {
            mountpoint
                .strip_prefix("/sys/fs/cgroup/")
                .map(|rest| format!("{rest}/"))
        }
    })
}

#[cfg(test)]
mod cgroup_tests {
    use super::cgroup2_prefix;

    #[test]
    fn the_cgroup2_mount_is_found_on_unified_and_hybrid_hierarchies() {
        let unified = "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_prefix(unified).as_deref(), Some(""));
        let hybrid = "30 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                      31 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_prefix(hybrid).as_deref(), Some("unified/"));
        let elsewhere = "31 25 0:28 / /mnt/cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_prefix(elsewhere), None);
        assert_eq!(cgroup2_prefix(""), None);
    }
}
