//! Collapsing observed addresses into CIDRs, and what counts as "the internet".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Ranges the generated `internet` list leaves out: the private and unique-local ranges,
/// as in the example estate's list.
pub const PRIVATE_RANGES: &[&str] = &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"];

/// Whether an address is inside the `internet` list Bulkhead proposes (everything but
/// the private ranges).
pub fn is_public(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => !(v.is_private()),
        IpAddr::V6(v) => (v.segments()[0] & 0xfe00) != 0xfc00,
    }
}

/// The `internet` list's include and exclude, parsed.
pub fn internet_ranges() -> (Vec<IpNet>, Vec<IpNet>) {
    let include = vec![
        "0.0.0.0/0".parse().expect("valid"),
        "::/0".parse().expect("valid"),
    ];
    let exclude = PRIVATE_RANGES
        .iter()
        .map(|s| s.parse().expect("valid"))
        .collect();
    (include, exclude)
}

/// One collapsed prefix and how many observed addresses it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collapsed {
    pub net: IpNet,
    pub observed: u64,
}

impl Collapsed {
    /// Whether the prefix allows more addresses than were observed in it.
    pub fn widens(&self) -> bool {
        let host_bits = u32::from(self.net.max_prefix_len() - self.net.prefix_len());
        host_bits >= 64 || (1u64 << host_bits) > self.observed
    }

    /// Number of addresses in the prefix, as text (an IPv6 /64 does not fit a u64).
    pub fn size(&self) -> String {
        let host_bits = u32::from(self.net.max_prefix_len() - self.net.prefix_len());
        if host_bits >= 64 {
            format!("2^{host_bits}")
        } else {
            (1u64 << host_bits).to_string()
        }
    }
}

/// The widest prefix a collapse starts from: a /16 for IPv4 and a /64 for IPv6. Above
/// these nothing is merged; the density rule below would rarely allow it anyway.
const TOP_V4: u8 = 16;
const TOP_V6: u8 = 64;

/// Collapses addresses into prefixes: a prefix is used when more than half of its
/// addresses were observed (so a widening is less than twice what was seen) and it holds
/// no inventory address that was not observed (`inventory` sorted, so an IP list never
/// silently covers a managed workload); otherwise it is split in two. Exact addresses
/// are the leaves. Output sorted.
pub fn collapse(addrs: &[IpAddr], inventory: &[IpAddr]) -> Vec<Collapsed> {
    let mut v4: Vec<u128> = Vec::new();
    let mut v6: Vec<u128> = Vec::new();
    for a in addrs {
        match a {
            IpAddr::V4(x) => v4.push(u128::from(u32::from(*x))),
            IpAddr::V6(x) => v6.push(u128::from(*x)),
        }
    }
    let inv4: Vec<u128> = inventory
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(x) => Some(u128::from(u32::from(*x))),
            IpAddr::V6(_) => None,
        })
        .collect();
    let inv6: Vec<u128> = inventory
        .iter()
        .filter_map(|a| match a {
            IpAddr::V6(x) => Some(u128::from(*x)),
            IpAddr::V4(_) => None,
        })
        .collect();
    let mut out = Vec::new();
    for (mut list, inv, bits, top) in [(v4, inv4, 32u8, TOP_V4), (v6, inv6, 128u8, TOP_V6)] {
        list.sort_unstable();
        list.dedup();
        let ctx = Ctx {
            bits,
            inventory: &inv,
            observed: &list,
        };
        let mut i = 0;
        while i < list.len() {
            let base = mask(list[i], top, bits);
            let end = list[i..]
                .iter()
                .position(|&a| mask(a, top, bits) != base)
                .map_or(list.len(), |p| i + p);
            ctx.split(base, top, &list[i..end], &mut out);
            i = end;
        }
    }
    out
}

fn mask(a: u128, len: u8, bits: u8) -> u128 {
    let host = u32::from(bits - len);
    if host >= 128 { 0 } else { a >> host << host }
}

struct Ctx<'a> {
    bits: u8,
    inventory: &'a [u128],
    observed: &'a [u128],
}

impl Ctx<'_> {
    fn net(&self, base: u128, len: u8) -> IpNet {
        if self.bits == 32 {
            IpNet::V4(Ipv4Net::new(Ipv4Addr::from(base as u32), len).expect("valid prefix"))
        } else {
            IpNet::V6(Ipv6Net::new(Ipv6Addr::from(base), len).expect("valid prefix"))
        }
    }

    /// Does the prefix hold an inventory address that was not observed?
    fn holds_unobserved_inventory(&self, base: u128, last: u128) -> bool {
        let from = self.inventory.partition_point(|&a| a < base);
        self.inventory[from..]
            .iter()
            .take_while(|&&a| a <= last)
            .any(|a| self.observed.binary_search(a).is_err())
    }

    fn split(&self, base: u128, len: u8, addrs: &[u128], out: &mut Vec<Collapsed>) {
        let host_bits = u32::from(self.bits - len);
        let count = addrs.len() as u128;
        let dense = host_bits < 127 && count * 2 > (1u128 << host_bits);
        let last = if host_bits >= 128 {
            u128::MAX
        } else {
            base | ((1u128 << host_bits) - 1)
        };
        if host_bits == 0 || (dense && !self.holds_unobserved_inventory(base, last)) {
            out.push(Collapsed {
                net: self.net(base, len),
                observed: addrs.len() as u64,
            });
            return;
        }
        let half = base | (1u128 << (host_bits - 1));
        let cut = addrs.partition_point(|&a| a < half);
        if cut > 0 {
            self.split(base, len + 1, &addrs[..cut], out);
        }
        if cut < addrs.len() {
            self.split(half, len + 1, &addrs[cut..], out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn dense_clusters_collapse_sparse_ones_do_not() {
        let addrs: Vec<IpAddr> = (17..=30).map(|h| v4(&format!("198.51.100.{h}"))).collect();
        let c = collapse(&addrs, &[]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].net.to_string(), "198.51.100.16/28");
        assert_eq!(c[0].observed, 14);
        assert!(c[0].widens());

        let c = collapse(&[v4("10.1.0.1"), v4("10.1.200.1")], &[]);
        let nets: Vec<String> = c.iter().map(|c| c.net.to_string()).collect();
        assert_eq!(nets, ["10.1.0.1/32", "10.1.200.1/32"]);
        assert!(!c[0].widens());
    }

    #[test]
    fn never_covers_an_unobserved_inventory_address() {
        let addrs: Vec<IpAddr> = (16..=30).map(|h| v4(&format!("198.51.100.{h}"))).collect();
        let c = collapse(&addrs, &[v4("198.51.100.31")]);
        assert!(c.iter().all(|c| !c.net.contains(&v4("198.51.100.31"))));
        // Every observed address is still covered.
        for a in &addrs {
            assert!(c.iter().any(|c| c.net.contains(a)), "{a}");
        }
    }

    #[test]
    fn ipv6_and_public() {
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "fd00::1".parse().unwrap();
        assert!(is_public(a) && !is_public(b));
        assert!(!is_public(v4("10.2.3.4")) && is_public(v4("203.0.113.9")));
        let c = collapse(
            &[
                a,
                "2001:db8::2".parse().unwrap(),
                "2001:db8::3".parse().unwrap(),
            ],
            &[],
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].net.to_string(), "2001:db8::/126");
    }
}
