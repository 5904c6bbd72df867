//! A mixed flood for the collector, shared by `tests/mixed_flood.rs` and the
//! `flood` example (bench/flood.sh): garbage, truncated templates, template storms,
//! data sets whose template never comes, and valid fixture traffic, each from its own
//! range of 127.0.0.0/8 source addresses, deterministic for a given seed.
//!
//! Only the valid exporters can produce records: the garbage is built to be rejected
//! (or held, from hosts that never send a template), truncated-template hosts and
//! storm hosts send no data, held-data hosts send no templates. So every record the
//! collector counts is a valid exporter's, and a reference decoder checks that.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/netflow")
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    let p = dir.join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// v5 and IPFIX files may hold several datagrams back to back.
fn split(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (v, f) = if rest.len() >= 4 {
            (
                u16::from_be_bytes([rest[0], rest[1]]),
                usize::from(u16::from_be_bytes([rest[2], rest[3]])),
            )
        } else {
            (0, 0)
        };
        let n = match v {
            5 if (1..=30).contains(&f) && 24 + f * 48 <= rest.len() => 24 + f * 48,
            10 if f >= 16 && f <= rest.len() => f,
            _ => rest.len(),
        };
        out.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    out
}

/// What a datagram is, for the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Valid,
    Garbage,
    TruncatedTemplate,
    TemplateStorm,
    HeldData,
}

pub const KINDS: [Kind; 5] = [
    Kind::Valid,
    Kind::Garbage,
    Kind::TruncatedTemplate,
    Kind::TemplateStorm,
    Kind::HeldData,
];

/// Where a datagram comes from. A `Steady` host keeps one socket (one source port),
/// as a real exporter does, so it always reaches the same collector worker; a
/// `Fresh` datagram comes from a new source port each time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Steady(Ipv4Addr),
    Fresh(Ipv4Addr),
}

impl Source {
    pub fn ip(self) -> Ipv4Addr {
        match self {
            Source::Steady(ip) | Source::Fresh(ip) => ip,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Packet {
    pub kind: Kind,
    pub from: Source,
    pub bytes: Vec<u8>,
}

/// The valid exporters: IPFIX (OpenBSD pflow), NetFlow v9 (softflowd, template and
/// data in one datagram) and NetFlow v5, one host each.
pub const VALID: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
];

#[derive(Debug, Clone)]
pub struct FloodConfig {
    pub seed: u64,
    /// Out of every 100 datagrams: valid, garbage, truncated templates, storm, held.
    pub mix: [u32; 5],
    /// Hosts sending garbage, truncated templates, storms, held data.
    pub garbage_hosts: u32,
    pub truncated_hosts: u32,
    pub storm_hosts: u32,
    pub held_hosts: u32,
    /// Fields per storm template (4 bytes each on the wire).
    pub storm_fields: usize,
    /// Observation domains and template ids a storm host cycles through (beyond
    /// the decoder's 64 scopes and 1024 templates per scope, so both caps bind).
    pub storm_domains: u32,
    pub storm_ids: u16,
}

impl Default for FloodConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            mix: [6, 40, 14, 25, 15],
            garbage_hosts: 2000,
            truncated_hosts: 300,
            storm_hosts: 4,
            held_hosts: 20,
            storm_fields: 1,
            storm_domains: 70,
            storm_ids: 1100,
        }
    }
}

/// splitmix64: deterministic, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in lo..hi (hi exclusive, hi > lo).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo) as u64) as usize
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Host number `n` of a 127.a.b.c range, skipping .0 and .255.
fn host(a: u8, n: u32) -> Ipv4Addr {
    Ipv4Addr::new(127, a, (n / 250) as u8, (n % 250) as u8 + 1)
}

fn ipfix(domain: u32, seq: u32, sets: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(16 + sets.len());
    d.extend(10u16.to_be_bytes());
    d.extend(((16 + sets.len()) as u16).to_be_bytes());
    d.extend(1_700_000_000u32.to_be_bytes());
    d.extend(seq.to_be_bytes());
    d.extend(domain.to_be_bytes());
    d.extend_from_slice(sets);
    d
}

fn set(id: u16, body: &[u8]) -> Vec<u8> {
    let mut s = id.to_be_bytes().to_vec();
    s.extend(((4 + body.len()) as u16).to_be_bytes());
    s.extend_from_slice(body);
    s
}

#[derive(Debug)]
struct Storm {
    domain: u32,
    next_id: u16,
    seq: u32,
}

#[derive(Debug)]
pub struct Flood {
    cfg: FloodConfig,
    rng: Rng,
    n: u64,
    ipfix_tpl: Vec<u8>,
    ipfix_data: Vec<u8>,
    v9: Vec<u8>,
    v5: Vec<Vec<u8>>,
    /// Template-carrying fixture datagrams without data sets.
    templates: Vec<Vec<u8>>,
    valid_sent: [u64; 3],
    storms: Vec<Storm>,
}

impl Flood {
    pub fn new(cfg: FloodConfig) -> Self {
        let dir = fixture_dir();
        let mut templates = Vec::new();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".dat") && n.contains("tpl") && !n.contains("data"))
            .collect();
        names.sort();
        for n in names {
            templates.extend(split(&read(&dir, &n)));
        }
        assert!(
            templates.len() > 20,
            "template fixtures in {}",
            dir.display()
        );
        let storms = (0..cfg.storm_hosts)
            .map(|_| Storm {
                domain: 0,
                next_id: 256,
                seq: 0,
            })
            .collect();
        Flood {
            rng: Rng::new(cfg.seed),
            cfg,
            n: 0,
            ipfix_tpl: read(&dir, "ipfix_test_openbsd_pflow_tpl.dat"),
            ipfix_data: read(&dir, "ipfix_test_openbsd_pflow_data.dat"),
            v9: read(&dir, "netflow9_test_softflowd_tpl_data.dat"),
            v5: split(&read(&dir, "netflow5.dat")),
            templates,
            valid_sent: [0; 3],
            storms,
        }
    }

    fn valid(&mut self) -> Packet {
        let which = (self.n % 3) as usize;
        let k = self.valid_sent[which];
        self.valid_sent[which] += 1;
        let bytes = match which {
            // A template first and again every 20 datagrams, as exporters refresh.
            0 if k.is_multiple_of(20) => self.ipfix_tpl.clone(),
            0 => self.ipfix_data.clone(),
            1 => self.v9.clone(),
            _ => self.v5[k as usize % self.v5.len()].clone(),
        };
        Packet {
            kind: Kind::Valid,
            from: Source::Steady(VALID[which]),
            bytes,
        }
    }

    fn garbage(&mut self) -> Vec<u8> {
        let r = &mut self.rng;
        let body = r.range(0, 1400);
        match r.range(0, 6) {
            // Random bytes under a version nobody speaks (or too short for one).
            0 => {
                let mut d = r.bytes(body);
                if d.len() >= 2 && matches!(u16::from_be_bytes([d[0], d[1]]), 0 | 5 | 9 | 10) {
                    d[0] = 0xff;
                }
                d
            }
            // v5 whose length disagrees with its count.
            1 => {
                let mut d = vec![0, 5];
                let count = r.range(0, 40);
                d.extend((count as u16).to_be_bytes());
                d.extend(r.bytes(body));
                if d.len() == 24 + 48 * count {
                    d.push(0);
                }
                d
            }
            // IPFIX whose header length is wrong.
            2 => {
                let mut d = ipfix(r.next_u64() as u32, 0, &r.bytes(body));
                let wrong = (d.len() as u16).wrapping_add(r.range(1, 1000) as u16);
                d[2..4].copy_from_slice(&wrong.to_be_bytes());
                d
            }
            // v9 with a header count of zero over a non-empty flowset.
            3 => {
                let mut d = vec![0, 9, 0, 0];
                d.extend(r.bytes(16));
                let id = r.next_u64() as u16;
                d.extend(set(id, &r.bytes(body.max(4))));
                d
            }
            // sFlow promising more samples than it carries.
            4 => {
                let mut d = vec![0, 0, 0, 5, 0, 0, 0, 1];
                d.extend(r.bytes(16));
                d.extend(u32::MAX.to_be_bytes());
                d.extend(r.bytes(body));
                d
            }
            // Well-formed IPFIX of random data and reserved sets: held or skipped,
            // never decoded (these hosts never send a template).
            _ => {
                let mut sets = Vec::new();
                while sets.len() < body {
                    let id = r.range(4, 65536) as u16;
                    let len = r.range(1, 300);
                    sets.extend(set(id, &r.bytes(len)));
                }
                ipfix(r.next_u64() as u32, r.next_u64() as u32, &sets)
            }
        }
    }

    fn truncated(&mut self) -> Vec<u8> {
        let t = &self.templates[self.rng.range(0, self.templates.len())];
        let cut = self.rng.range(1, t.len());
        let mut d = t[..cut].to_vec();
        if d.len() >= 4 && d[..2] == [0, 10] {
            let n = (d.len() as u16).to_be_bytes();
            d[2..4].copy_from_slice(&n);
        }
        d
    }

    fn storm(&mut self, i: usize) -> Vec<u8> {
        let (fields, domains, ids) = (
            self.cfg.storm_fields.max(1),
            self.cfg.storm_domains.max(1),
            self.cfg.storm_ids.max(1),
        );
        let s = &mut self.storms[i];
        let per = (1400 - 20) / (4 + 4 * fields);
        let mut body = Vec::new();
        for _ in 0..per.max(1) {
            body.extend(s.next_id.to_be_bytes());
            body.extend((fields as u16).to_be_bytes());
            for f in 0..fields {
                // Standard elements of every size; ids past the IANA range are
                // skipped by length, which is fine for a template.
                let ie = [8u16, 12, 7, 11, 4, 1, 2, 152, 153, 6][f % 10] + (f / 10) as u16 * 100;
                let len = [4u16, 4, 2, 2, 1, 8, 8, 8, 8, 1][f % 10];
                body.extend(ie.to_be_bytes());
                body.extend(len.to_be_bytes());
            }
            s.next_id = if s.next_id - 256 + 1 >= ids {
                s.domain = (s.domain + 1) % domains;
                256
            } else {
                s.next_id + 1
            };
        }
        s.seq = s.seq.wrapping_add(1);
        ipfix(s.domain, s.seq, &set(2, &body))
    }

    fn held(&mut self) -> Vec<u8> {
        let r = &mut self.rng;
        let mut sets = Vec::new();
        for _ in 0..r.range(1, 4) {
            let id = r.range(256, 65536) as u16;
            let len = r.range(16, 400);
            sets.extend(set(id, &r.bytes(len)));
        }
        ipfix(r.range(0, 4) as u32, 0, &sets)
    }
}

impl Iterator for Flood {
    type Item = Packet;

    fn next(&mut self) -> Option<Packet> {
        let total: u32 = self.cfg.mix.iter().sum();
        let mut pick = self.rng.range(0, total.max(1) as usize) as u32;
        let mut kind = Kind::Valid;
        for (k, w) in KINDS.iter().zip(self.cfg.mix) {
            if pick < w {
                kind = *k;
                break;
            }
            pick -= w;
        }
        self.n += 1;
        let cfg = self.cfg.clone();
        let any = |r: &mut Rng, n: u32| r.range(0, n.max(1) as usize) as u32;
        let p = match kind {
            Kind::Valid => self.valid(),
            Kind::Garbage => {
                let h = any(&mut self.rng, cfg.garbage_hosts);
                Packet {
                    kind,
                    from: Source::Fresh(host(10, h)),
                    bytes: self.garbage(),
                }
            }
            Kind::TruncatedTemplate => {
                let h = any(&mut self.rng, cfg.truncated_hosts);
                Packet {
                    kind,
                    from: Source::Fresh(host(11, h)),
                    bytes: self.truncated(),
                }
            }
            Kind::TemplateStorm => {
                let h = any(&mut self.rng, cfg.storm_hosts);
                Packet {
                    kind,
                    from: Source::Steady(host(12, h)),
                    bytes: self.storm(h as usize),
                }
            }
            Kind::HeldData => {
                let h = any(&mut self.rng, cfg.held_hosts);
                Packet {
                    kind,
                    from: Source::Fresh(host(13, h)),
                    bytes: self.held(),
                }
            }
        };
        Some(p)
    }
}
