//! The exporter table: per-exporter state (templates, sampling, held sets,
//! sequence tracking, counters), bounded by a segmented LRU with a TTL.
//!
//! Keyed by the exporter's IP address only: a source port is not an
//! identity (exporters pick ephemeral ports, and one host spraying ports
//! must not be able to create thousands of entries). Templates are kept
//! apart per (version, observation domain / source id) inside an entry.
//!
//! Eviction is SLRU-like: a new exporter enters *probation*; it is
//! *protected* once it has delivered records in `promote_after` distinct
//! datagrams (a template-only or one-shot sender never qualifies). When
//! the table is full, an exporter silent for longer than the TTL goes
//! first, then the least recently seen probationary one; a protected
//! exporter is evicted only when probation is empty. So a flood of
//! one-shot senders churns probation and never touches a busy exporter.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;

use crate::decoder::{Counters, DecoderConfig};
use crate::record::{Ctx, Sampling};
use crate::seq::SeqTrack;
use crate::template::Template;

#[derive(Debug, Default)]
pub(crate) struct Scope {
    pub templates: HashMap<u16, Arc<Template>>,
    pub sampling: Sampling,
    pub sys_init_ms: Option<u64>,
    pub seq: SeqTrack,
}

impl Scope {
    pub(crate) fn template_bytes(&self) -> usize {
        self.templates.values().map(|t| t.footprint()).sum()
    }
}

#[derive(Debug)]
pub(crate) struct Pending {
    pub version: u16,
    pub domain: u32,
    pub template_id: u16,
    pub ctx: Ctx,
    pub body: Box<[u8]>,
}

/// Per-exporter totals, in the units of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ExporterCounters {
    pub datagrams: u64,
    pub records: u64,
    pub templates: u64,
    pub malformed: u64,
    /// Data sets dropped because their template never arrived.
    pub no_template: u64,
    /// What the exporter's sequence numbers say it sent and we never got.
    pub sequence_gaps: u64,
    /// Sequence jumps too large (or backwards) to be loss: restarts.
    pub sequence_resets: u64,
}

#[derive(Debug)]
pub(crate) struct Exporter {
    pub scopes: HashMap<(u16, u32), Scope>,
    /// Memory of the templates of all its scopes (see `Template::footprint`).
    pub template_bytes: usize,
    pub pending: VecDeque<Pending>,
    pub pending_bytes: usize,
    pub counters: ExporterCounters,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub last_port: u16,
    /// Position in its segment's LRU order.
    tick: u64,
    protected: bool,
    /// Datagrams that delivered records since the last (de)motion.
    proven: u32,
}

/// One (version, domain) of an exporter as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScopeStats {
    /// 5, 9, 10 or [`SFLOW_V5`](crate::SFLOW_V5).
    pub version: u16,
    /// Observation domain, v9 source id, v5 engine, sFlow sub-agent id.
    pub domain: u32,
    pub templates: usize,
    pub sequence_gaps: u64,
    pub sequence_resets: u64,
}

/// A snapshot of one exporter's state, from [`Decoder::exporters`](crate::Decoder::exporters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExporterStats {
    pub address: IpAddr,
    /// Source port of the latest datagram (not part of the identity).
    pub last_port: u16,
    pub scopes: Vec<ScopeStats>,
    /// Caller's clock (milliseconds) at the first and latest datagram.
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// Proven exporters are evicted only by TTL or when probation is empty.
    pub protected: bool,
    pub counters: ExporterCounters,
    pub templates: usize,
    pub pending_sets: usize,
}

/// Table-level figures, from [`Decoder::exporter_table`](crate::Decoder::exporter_table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ExporterTableStats {
    pub exporters: usize,
    pub probation: usize,
    pub protected: usize,
    pub max_exporters: usize,
    pub max_protected: usize,
    /// New exporters that found the table full.
    pub table_full: u64,
    /// Exporters evicted (LRU) to make room.
    pub evicted: u64,
    /// Exporters dropped for silence longer than the TTL.
    pub expired: u64,
    pub promoted: u64,
    pub demoted: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Table {
    map: HashMap<IpAddr, Exporter>,
    probation: BTreeMap<u64, IpAddr>,
    protected: BTreeMap<u64, IpAddr>,
    tick: u64,
    stats: ExporterTableStats,
}

fn max_protected(cfg: &DecoderConfig) -> usize {
    // At least a fifth of the table stays open to newcomers.
    let cap = cfg.max_exporters.max(1);
    cap - cap / 5
}

impl Table {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn get_mut(&mut self, ip: &IpAddr) -> Option<&mut Exporter> {
        self.map.get_mut(ip)
    }

    pub fn get(&self, ip: &IpAddr) -> Option<&Exporter> {
        self.map.get(ip)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Exporter> {
        self.map.values_mut()
    }

    /// The exporter's entry, created (evicting another if the table is
    /// full) when it is new; marked as just seen either way.
    pub fn touch(
        &mut self,
        from: SocketAddr,
        now_ms: u64,
        cfg: &DecoderConfig,
        counters: &mut Counters,
    ) -> &mut Exporter {
        let ip = from.ip();
        self.tick += 1;
        let tick = self.tick;
        if let Some(e) = self.map.get(&ip) {
            let seg = if e.protected {
                &mut self.protected
            } else {
                &mut self.probation
            };
            seg.remove(&e.tick);
            seg.insert(tick, ip);
        } else {
            if self.map.len() >= cfg.max_exporters.max(1) {
                self.stats.table_full += 1;
                counters.exporter_table_full += 1;
                self.make_room(now_ms, cfg, counters);
            }
            self.probation.insert(tick, ip);
            self.map.insert(
                ip,
                Exporter {
                    scopes: HashMap::new(),
                    pending: VecDeque::new(),
                    pending_bytes: 0,
                    template_bytes: 0,
                    counters: ExporterCounters::default(),
                    first_seen_ms: now_ms,
                    last_seen_ms: now_ms,
                    last_port: 0,
                    tick,
                    protected: false,
                    proven: 0,
                },
            );
        }
        let e = self.map.get_mut(&ip).expect("present");
        e.tick = tick;
        e.last_seen_ms = e.last_seen_ms.max(now_ms);
        e.last_port = from.port();
        e
    }

    /// Keeps one exporter's budget of template memory free under the total by
    /// evicting unproven exporters that hold templates, least recently seen
    /// first (never `keep`, which is about to send templates, nor a protected
    /// one): a storm of spoofed senders cannot fill the total and refuse
    /// newcomers' templates.
    pub fn shed_for_templates(
        &mut self,
        keep: &IpAddr,
        cfg: &DecoderConfig,
        counters: &mut Counters,
    ) {
        let headroom = cfg.max_template_bytes_per_exporter as u64;
        while counters.template_bytes + headroom > cfg.max_template_bytes_total as u64 {
            // Only holders of templates: evicting others would free nothing.
            let victim =
                self.probation.values().copied().find(|ip| {
                    ip != keep && self.map.get(ip).is_some_and(|e| e.template_bytes > 0)
                });
            let Some(ip) = victim else { return };
            self.remove(&ip, counters);
            self.stats.evicted += 1;
            counters.exporters_evicted += 1;
        }
    }

    fn make_room(&mut self, now_ms: u64, cfg: &DecoderConfig, counters: &mut Counters) {
        // The least recently seen entry of each segment is the only one
        // that can have outlived the TTL before every other of its segment.
        for protected in [true, false] {
            let seg = if protected {
                &self.protected
            } else {
                &self.probation
            };
            if let Some((_, &ip)) = seg.first_key_value()
                && self.idle(&ip, now_ms, cfg)
            {
                self.remove(&ip, counters);
                self.stats.expired += 1;
                counters.exporters_expired += 1;
                return;
            }
        }
        let victim = self
            .probation
            .first_key_value()
            .or_else(|| self.protected.first_key_value())
            .map(|(_, &ip)| ip);
        if let Some(ip) = victim {
            self.remove(&ip, counters);
            self.stats.evicted += 1;
            counters.exporters_evicted += 1;
        }
    }

    fn idle(&self, ip: &IpAddr, now_ms: u64, cfg: &DecoderConfig) -> bool {
        self.map
            .get(ip)
            .is_some_and(|e| now_ms.saturating_sub(e.last_seen_ms) > cfg.exporter_idle_ttl_ms)
    }

    /// Drops an exporter; its held sets count as `no_template`.
    pub fn remove(&mut self, ip: &IpAddr, counters: &mut Counters) -> bool {
        let Some(e) = self.map.remove(ip) else {
            return false;
        };
        if e.protected {
            self.protected.remove(&e.tick);
        } else {
            self.probation.remove(&e.tick);
        }
        let n = e.pending.len() as u64;
        counters.no_template += n;
        counters.pending_sets -= n;
        counters.pending_bytes -= e.pending_bytes as u64;
        counters.template_bytes -= e.template_bytes as u64;
        true
    }

    /// Removes every exporter silent for longer than the TTL.
    pub fn expire_idle(
        &mut self,
        now_ms: u64,
        cfg: &DecoderConfig,
        counters: &mut Counters,
    ) -> usize {
        let idle: Vec<IpAddr> = self
            .map
            .iter()
            .filter(|(_, e)| now_ms.saturating_sub(e.last_seen_ms) > cfg.exporter_idle_ttl_ms)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in &idle {
            self.remove(ip, counters);
        }
        self.stats.expired += idle.len() as u64;
        counters.exporters_expired += idle.len() as u64;
        idle.len()
    }

    /// Records that the exporter's datagram delivered records; promotes it
    /// once it has done so often enough.
    pub fn proved(&mut self, ip: &IpAddr, cfg: &DecoderConfig) {
        let Some(e) = self.map.get_mut(ip) else {
            return;
        };
        if e.protected {
            return;
        }
        e.proven += 1;
        if e.proven < cfg.promote_after.max(1) {
            return;
        }
        e.protected = true;
        e.proven = 0;
        self.probation.remove(&e.tick);
        self.protected.insert(e.tick, *ip);
        self.stats.promoted += 1;
        if self.protected.len() > max_protected(cfg) {
            // The protected segment's least recent member goes back to
            // probation (as its most recent member) and has to re-prove.
            let (old_tick, old_ip) = self.protected.pop_first().expect("non-empty");
            self.tick += 1;
            let e = self.map.get_mut(&old_ip).expect("indexed exporter");
            debug_assert_eq!(e.tick, old_tick);
            e.protected = false;
            e.tick = self.tick;
            self.probation.insert(self.tick, old_ip);
            self.stats.demoted += 1;
        }
    }

    pub fn stats(&self, cfg: &DecoderConfig) -> ExporterTableStats {
        ExporterTableStats {
            exporters: self.map.len(),
            probation: self.probation.len(),
            protected: self.protected.len(),
            max_exporters: cfg.max_exporters.max(1),
            max_protected: max_protected(cfg),
            ..self.stats
        }
    }

    pub fn snapshot(&self) -> Vec<ExporterStats> {
        let mut v: Vec<ExporterStats> = self
            .map
            .iter()
            .map(|(ip, e)| {
                let mut scopes: Vec<ScopeStats> = e
                    .scopes
                    .iter()
                    .map(|(&(version, domain), s)| ScopeStats {
                        version,
                        domain,
                        templates: s.templates.len(),
                        sequence_gaps: s.seq.gaps,
                        sequence_resets: s.seq.resets,
                    })
                    .collect();
                scopes.sort_by_key(|s| (s.version, s.domain));
                ExporterStats {
                    address: *ip,
                    last_port: e.last_port,
                    templates: scopes.iter().map(|s| s.templates).sum(),
                    scopes,
                    first_seen_ms: e.first_seen_ms,
                    last_seen_ms: e.last_seen_ms,
                    protected: e.protected,
                    counters: e.counters,
                    pending_sets: e.pending.len(),
                }
            })
            .collect();
        v.sort_by_key(|s| s.address);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max: usize) -> DecoderConfig {
        DecoderConfig {
            max_exporters: max,
            exporter_idle_ttl_ms: 1000,
            promote_after: 2,
            ..DecoderConfig::default()
        }
    }

    fn at(i: u32) -> SocketAddr {
        SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000 + i), 2055))
    }

    #[test]
    fn full_table_evicts_least_recent_probationary() {
        let cfg = cfg(3);
        let mut c = Counters::default();
        let mut t = Table::default();
        for i in 1..=3 {
            t.touch(at(i), 0, &cfg, &mut c);
        }
        // 1 seen again: 2 is now the least recently seen.
        t.touch(at(1), 1, &cfg, &mut c);
        t.touch(at(4), 2, &cfg, &mut c);
        assert_eq!(t.len(), 3);
        assert!(t.get(&at(2).ip()).is_none());
        assert!(t.get(&at(1).ip()).is_some());
        assert_eq!((c.exporters_evicted, c.exporter_table_full), (1, 1));
    }

    #[test]
    fn protected_exporter_survives_a_flood_of_newcomers() {
        let cfg = cfg(5);
        let mut c = Counters::default();
        let mut t = Table::default();
        let busy = at(1);
        t.touch(busy, 0, &cfg, &mut c);
        t.proved(&busy.ip(), &cfg);
        assert!(!t.get(&busy.ip()).unwrap().protected);
        t.touch(busy, 0, &cfg, &mut c);
        t.proved(&busy.ip(), &cfg);
        assert!(t.get(&busy.ip()).unwrap().protected);
        for i in 100..1100 {
            t.touch(at(i), 10, &cfg, &mut c);
            assert!(t.len() <= 5);
        }
        assert!(t.get(&busy.ip()).is_some(), "busy exporter evicted");
        assert_eq!(c.exporters_evicted, 1000 - 4);
        let s = t.stats(&cfg);
        assert_eq!((s.protected, s.probation, s.exporters), (1, 4, 5));
    }

    #[test]
    fn protected_exporter_goes_after_its_ttl() {
        let cfg = cfg(2);
        let mut c = Counters::default();
        let mut t = Table::default();
        let busy = at(1);
        for _ in 0..2 {
            t.touch(busy, 0, &cfg, &mut c);
            t.proved(&busy.ip(), &cfg);
        }
        t.touch(at(2), 500, &cfg, &mut c);
        // Within the TTL the probationary newcomer goes.
        t.touch(at(3), 900, &cfg, &mut c);
        assert!(t.get(&busy.ip()).is_some() && t.get(&at(2).ip()).is_none());
        // Past it the silent protected exporter goes first.
        t.touch(at(4), 1001, &cfg, &mut c);
        assert!(t.get(&busy.ip()).is_none() && t.get(&at(3).ip()).is_some());
        assert_eq!((c.exporters_expired, c.exporters_evicted), (1, 1));
        assert_eq!(t.expire_idle(2002, &cfg, &mut c), 2);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn protected_segment_is_bounded_and_demotes() {
        let cfg = cfg(5); // at most 4 protected
        let mut c = Counters::default();
        let mut t = Table::default();
        for i in 1..=5 {
            for _ in 0..2 {
                t.touch(at(i), 0, &cfg, &mut c);
                t.proved(&at(i).ip(), &cfg);
            }
        }
        let s = t.stats(&cfg);
        assert_eq!((s.protected, s.probation, s.demoted), (4, 1, 1));
        assert!(!t.get(&at(1).ip()).unwrap().protected);
    }

    #[test]
    fn the_source_port_is_not_an_identity() {
        let cfg = cfg(3);
        let mut c = Counters::default();
        let mut t = Table::default();
        for port in 1..=30_000u16 {
            t.touch(SocketAddr::from(([192, 0, 2, 1], port)), 0, &cfg, &mut c);
        }
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&at(0).ip()).map(|_| ()), None);
        assert_eq!(c.exporter_table_full, 0);
    }
}
