//! The stateful front door: configuration, counters, and the dispatch of a
//! datagram to its version's decoder with the exporter's state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::DecodeError;
use crate::bytes::{Reader, be_u16, be_u32};
use crate::exporters::{ExporterCounters, ExporterStats, ExporterTableStats, Scope, Table};
use crate::record::{Ctx, FlowRecord};
use crate::sets::{decode_data_set, hold, parse_templates, release, split_sets};
use crate::sflow::InterfaceCounters;
use crate::{sflow, v5};

/// Limits that bound the memory one exporter (or a flood of spoofed ones)
/// can make the decoder hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Report non-core elements in [`FlowRecord::extra`]. Costs allocations
    /// per record; collectors that only aggregate can turn it off.
    pub capture_extra: bool,
    /// Exporters (IP addresses) with state. When full, an idle or unproven
    /// exporter is evicted to make room; a new one is never refused.
    pub max_exporters: usize,
    /// Exporters silent for longer than this (caller's milliseconds) are
    /// the first to go when room is needed, and all go on
    /// [`Decoder::expire_idle`].
    pub exporter_idle_ttl_ms: u64,
    /// Datagrams that must deliver records before an exporter is protected
    /// from eviction by newcomers.
    pub promote_after: u32,
    /// Templates kept per (exporter, version, observation domain).
    pub max_templates_per_scope: usize,
    /// Memory the templates of one exporter may hold, over all its scopes: a
    /// host that sends template after template fills its own budget, not the
    /// collector's memory. Its further new templates are refused (the datagram
    /// counts as malformed); refreshing a known one of the same size still works.
    pub max_template_bytes_per_exporter: usize,
    /// Memory the templates of all exporters may hold together.
    pub max_template_bytes_total: usize,
    /// (version, observation domain / source id) scopes kept per exporter.
    pub max_scopes_per_exporter: usize,
    /// Data sets held per exporter while their template is unknown.
    pub max_pending_sets: usize,
    /// Bytes of data sets held per exporter while their template is unknown.
    pub max_pending_bytes: usize,
    /// Bytes of data sets held over all exporters.
    pub max_pending_bytes_total: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            capture_extra: true,
            max_exporters: 10_000,
            exporter_idle_ttl_ms: 30 * 60 * 1000,
            promote_after: 2,
            max_templates_per_scope: 1024,
            // A router's templates (tens of templates of tens of fields per
            // domain) take tens of KiB; this leaves room for forty times that.
            max_template_bytes_per_exporter: 1 << 20,
            max_template_bytes_total: 256 << 20,
            max_scopes_per_exporter: 64,
            max_pending_sets: 64,
            max_pending_bytes: 256 * 1024,
            max_pending_bytes_total: 64 * 1024 * 1024,
        }
    }
}

/// Running totals since the decoder was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Datagrams handed to the decoder.
    pub datagrams: u64,
    /// Flow records returned (including ones decoded from held data sets).
    pub records: u64,
    /// Datagrams rejected with an error, plus held data sets that failed to
    /// decode once their template arrived.
    pub malformed: u64,
    /// Data sets dropped because their template never arrived in time
    /// (evicted from the hold queue, expired by [`Decoder::expire_pending`],
    /// or held by an exporter that was evicted or forgotten).
    pub no_template: u64,
    /// Template and options-template records received (new or refreshed).
    pub templates: u64,
    /// Templates removed by IPFIX withdrawal messages.
    pub templates_withdrawn: u64,
    /// Options data records applied (sampling, system init time).
    pub options_records: u64,
    /// Data records without any IP address, which are not flows we report.
    pub non_ip_records: u64,
    /// Data sets currently held waiting for their template.
    pub pending_sets: u64,
    /// Bytes of the data sets currently held.
    pub pending_bytes: u64,
    /// Memory held by the templates of all exporters (see
    /// [`DecoderConfig::max_template_bytes_total`]).
    pub template_bytes: u64,
    /// Data sets ending in (or consisting of) a record cut short: the
    /// non-zero tail is too short for the template.
    pub sets_truncated: u64,
    /// Sets with a reserved set id, which carry nothing we can interpret.
    pub sets_unsupported: u64,
    /// Data sets whose records all lacked addresses we decode.
    pub sets_non_ip: u64,
    /// sFlow samples that were neither IP flow samples nor interface
    /// counters (other counter records, non-IP frames).
    pub sflow_skipped: u64,
    /// sFlow generic interface counter records decoded.
    pub sflow_interface_counters: u64,
    /// New exporters that found the exporter table full.
    pub exporter_table_full: u64,
    /// Exporters evicted to make room (least recently seen first).
    pub exporters_evicted: u64,
    /// Exporters dropped after a silence longer than the TTL.
    pub exporters_expired: u64,
    /// Units (v9 packets, IPFIX data records, v5 flows, sFlow datagrams)
    /// that exporters' sequence numbers say were sent and never arrived.
    pub sequence_gaps: u64,
    /// Sequence jumps read as exporter restarts rather than loss.
    pub sequence_resets: u64,
}

/// Decodes NetFlow v5, v9, IPFIX and sFlow v5 datagrams into [`FlowRecord`]s,
/// keeping template state apart per exporter IP address and observation
/// domain.
///
/// Pure: the caller receives datagrams (from a socket, a pcap, a test) and
/// passes them in with the address they came from and, for the time-based
/// parts (exporter TTL, first/last seen), its own clock.
#[derive(Debug, Default)]
pub struct Decoder {
    config: DecoderConfig,
    table: Table,
    counters: Counters,
    /// Latest time a caller gave; the clock of calls that give none.
    clock_ms: u64,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_config(config: DecoderConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Decodes one datagram and returns its flow records, plus records of
    /// earlier held data sets whose template this datagram delivered.
    pub fn decode(
        &mut self,
        exporter: SocketAddr,
        datagram: &[u8],
    ) -> Result<Vec<FlowRecord>, DecodeError> {
        let mut out = Vec::new();
        self.decode_into(exporter, datagram, &mut out)?;
        Ok(out)
    }

    /// Like [`decode`](Self::decode), appending to `out` so that a collector
    /// can reuse one buffer. Returns the number of records appended. On error
    /// nothing is appended, but templates from sets that preceded the broken
    /// part stay learned. Time stands still at the latest `now_ms` given to
    /// [`decode_at`](Self::decode_at).
    pub fn decode_into(
        &mut self,
        exporter: SocketAddr,
        datagram: &[u8],
        out: &mut Vec<FlowRecord>,
    ) -> Result<usize, DecodeError> {
        self.run(exporter, datagram, self.clock_ms, out, None)
    }

    /// Like [`decode_into`](Self::decode_into) at the caller's time
    /// `now_ms` (any monotonic milliseconds), which drives the exporter
    /// TTL and first/last seen.
    pub fn decode_at(
        &mut self,
        exporter: SocketAddr,
        datagram: &[u8],
        now_ms: u64,
        out: &mut Vec<FlowRecord>,
    ) -> Result<usize, DecodeError> {
        self.run(exporter, datagram, now_ms, out, None)
    }

    /// Like [`decode_at`](Self::decode_at), also appending the sFlow
    /// interface counters the datagram carries to `interfaces` (other
    /// calls count and drop them).
    pub fn decode_full(
        &mut self,
        exporter: SocketAddr,
        datagram: &[u8],
        now_ms: u64,
        out: &mut Vec<FlowRecord>,
        interfaces: &mut Vec<InterfaceCounters>,
    ) -> Result<usize, DecodeError> {
        self.run(exporter, datagram, now_ms, out, Some(interfaces))
    }

    fn run(
        &mut self,
        exporter: SocketAddr,
        datagram: &[u8],
        now_ms: u64,
        out: &mut Vec<FlowRecord>,
        mut interfaces: Option<&mut Vec<InterfaceCounters>>,
    ) -> Result<usize, DecodeError> {
        self.clock_ms = self.clock_ms.max(now_ms);
        self.counters.datagrams += 1;
        let before = out.len();
        let if_before = interfaces.as_ref().map_or(0, |v| v.len());
        let was = self.counters;
        let res = self.dispatch(exporter, datagram, now_ms, out, interfaces.as_deref_mut());
        let n = out.len() - before;
        if res.is_err() {
            out.truncate(before);
            if let Some(v) = interfaces {
                v.truncate(if_before);
            }
            self.counters.malformed += 1;
        } else {
            self.counters.records += n as u64;
        }
        let ip = exporter.ip();
        if let Some(e) = self.table.get_mut(&ip) {
            let c = &mut e.counters;
            c.datagrams += 1;
            c.templates += self.counters.templates - was.templates;
            c.no_template += self.counters.no_template - was.no_template;
            if res.is_err() {
                c.malformed += 1;
            } else {
                c.records += n as u64;
                if n > 0 {
                    self.table.proved(&ip, &self.config);
                }
            }
        }
        res.map(|()| n)
    }

    fn dispatch(
        &mut self,
        exporter: SocketAddr,
        d: &[u8],
        now_ms: u64,
        out: &mut Vec<FlowRecord>,
        interfaces: Option<&mut Vec<InterfaceCounters>>,
    ) -> Result<(), DecodeError> {
        if d.len() < 2 {
            return Err(DecodeError::Empty);
        }
        let cfg = &self.config;
        match u16::from_be_bytes([d[0], d[1]]) {
            5 => {
                v5::decode(exporter, d, cfg.capture_extra, out)?;
                let e = self.table.touch(exporter, now_ms, cfg, &mut self.counters);
                // flow_sequence counts flows; engine type and id name the
                // flow cache, like a v9 source id.
                let key = (5, u32::from(be_u16(d, 20)));
                let scope = scope(&mut e.scopes, key, cfg)?;
                let advance = Some(u32::from(be_u16(d, 2)));
                track(
                    scope,
                    &mut e.counters,
                    &mut self.counters,
                    be_u32(d, 16),
                    advance,
                );
                Ok(())
            }
            9 | 10 => self.decode_templated(exporter, d, now_ms, out),
            // sFlow's version is a 32-bit word, so its first half is zero.
            0 if d.len() >= 4 && d[2] == 0 && d[3] == 5 => {
                let h = sflow::decode(exporter, d, &mut self.counters, out, interfaces)?;
                let e = self.table.touch(exporter, now_ms, cfg, &mut self.counters);
                // Sequence numbers count datagrams per sub-agent; the agent
                // is taken to be the sender.
                let key = (sflow::SFLOW_V5, h.sub_agent);
                let scope = scope(&mut e.scopes, key, cfg)?;
                track(
                    scope,
                    &mut e.counters,
                    &mut self.counters,
                    h.sequence,
                    Some(1),
                );
                Ok(())
            }
            v => Err(DecodeError::UnsupportedVersion(v)),
        }
    }

    /// Drops every held data set, counting each as `no_template`. A collector
    /// calls this periodically (or on shutdown) so that sets whose template
    /// never comes are accounted for. Returns how many were dropped.
    pub fn expire_pending(&mut self) -> u64 {
        let mut n = 0u64;
        for e in self.table.values_mut() {
            let k = e.pending.len() as u64;
            e.counters.no_template += k;
            n += k;
            e.pending.clear();
            e.pending_bytes = 0;
        }
        self.counters.no_template += n;
        self.counters.pending_sets = 0;
        self.counters.pending_bytes = 0;
        n
    }

    /// Drops the state of every exporter silent for longer than
    /// [`DecoderConfig::exporter_idle_ttl_ms`] before `now_ms`; their held
    /// sets count as `no_template`. Returns how many went.
    pub fn expire_idle(&mut self, now_ms: u64) -> usize {
        self.clock_ms = self.clock_ms.max(now_ms);
        self.table
            .expire_idle(now_ms, &self.config, &mut self.counters)
    }

    /// Forgets all state of the exporter at this address (any port:
    /// templates, sampling, held sets, counters), e.g. when it restarts or
    /// goes away. Held sets count as `no_template`.
    pub fn forget_exporter(&mut self, exporter: &SocketAddr) {
        self.table.remove(&exporter.ip(), &mut self.counters);
    }

    /// Number of exporters (IP addresses) with state.
    pub fn exporter_count(&self) -> usize {
        self.table.len()
    }

    /// Number of templates known for the exporter at this address (any
    /// port), all versions and domains.
    pub fn template_count(&self, exporter: &SocketAddr) -> usize {
        self.table
            .get(&exporter.ip())
            .map_or(0, |e| e.scopes.values().map(|s| s.templates.len()).sum())
    }

    /// A snapshot of every exporter's state and counters, by address.
    pub fn exporters(&self) -> Vec<ExporterStats> {
        self.table.snapshot()
    }

    /// Sizes and eviction figures of the exporter table.
    pub fn exporter_table(&self) -> ExporterTableStats {
        self.table.stats(&self.config)
    }

    fn decode_templated(
        &mut self,
        exporter: SocketAddr,
        d: &[u8],
        now_ms: u64,
        out: &mut Vec<FlowRecord>,
    ) -> Result<(), DecodeError> {
        let mut r = Reader::new(d, "header");
        let version = r.u16()?;
        let mut v9_count = 0;
        let (ctx, seq, body) = if version == 9 {
            v9_count = r.u16()?;
            let sys_uptime = r.u32()?;
            let unix_secs = r.u32()?;
            let seq = r.u32()?;
            let domain = r.u32()?;
            let ctx = Ctx {
                exporter,
                version,
                domain,
                export_ms: u64::from(unix_secs) * 1000,
                sys_uptime: Some(sys_uptime),
            };
            (ctx, seq, r.rest())
        } else {
            let length = usize::from(r.u16()?);
            let export_secs = r.u32()?;
            let seq = r.u32()?;
            let domain = r.u32()?;
            if length != d.len() {
                return Err(DecodeError::MessageLength {
                    declared: length,
                    actual: d.len(),
                });
            }
            let ctx = Ctx {
                exporter,
                version,
                domain,
                export_ms: u64::from(export_secs) * 1000,
                sys_uptime: None,
            };
            (ctx, seq, r.rest())
        };

        let sets = split_sets(version, body)?;
        if version == 9 {
            // RFC 3954 counts records; many exporters count flowsets instead.
            // Either reading gives at least one per non-empty flowset, so a
            // smaller count means the header and the body disagree.
            let flowsets = sets.iter().filter(|s| !s.1.is_empty()).count();
            if usize::from(v9_count) < flowsets {
                return Err(DecodeError::V9Count {
                    count: v9_count,
                    flowsets,
                });
            }
        }
        let cfg = &self.config;
        let counters = &mut self.counters;
        let template_sets =
            |&(id, _): &(u16, &[u8])| matches!((version, id), (9, 0 | 1) | (10, 2 | 3));
        if sets.iter().any(template_sets) {
            self.table.shed_for_templates(&exporter.ip(), cfg, counters);
        }
        let exp = self.table.touch(exporter, now_ms, cfg, counters);
        let key = (version, ctx.domain);
        scope(&mut exp.scopes, key, cfg)?;
        let mut learned: Vec<u16> = Vec::new();
        let mut data_records = 0u32;
        let mut held = false;
        for (set_id, set) in sets {
            let scope = exp.scopes.entry(key).or_default();
            match (version, set_id) {
                (9, 0) | (10, 2) | (9, 1) | (10, 3) => {
                    let options = matches!((version, set_id), (9, 1) | (10, 3));
                    let budget = &mut exp.template_bytes;
                    let ids = parse_templates(version, set, options, scope, budget, cfg, counters)?;
                    for id in ids {
                        if !learned.contains(&id) {
                            learned.push(id);
                        }
                    }
                }
                (_, id) if id >= 256 => match scope.templates.get(&id) {
                    Some(t) => {
                        let t = Arc::clone(t);
                        let extra = cfg.capture_extra;
                        let n = decode_data_set(&t, set, &ctx, scope, extra, counters, out)?;
                        data_records = data_records.saturating_add(n);
                    }
                    // An empty set carries no record: nothing to hold, or to
                    // lose if its template never comes (found by fuzzing).
                    None if set.is_empty() => {}
                    None => {
                        held = true;
                        hold(exp, cfg, counters, &ctx, id, set);
                    }
                },
                // Reserved set ids carry nothing we can interpret; RFC 7011
                // says to skip them.
                _ => counters.sets_unsupported += 1,
            }
        }
        if !learned.is_empty() && !exp.pending.is_empty() {
            release(exp, key, &learned, cfg.capture_extra, counters, out);
        }
        // v9 sequence numbers count export packets (RFC 3954 section 5.1);
        // IPFIX ones count data records before this message (RFC 7011
        // section 3.1), so a held set leaves the next number unknown.
        let advance = match version {
            9 => Some(1),
            _ if held => None,
            _ => Some(data_records),
        };
        let scope = exp.scopes.get_mut(&key).expect("scope created above");
        track(scope, &mut exp.counters, counters, seq, advance);
        Ok(())
    }
}

/// The exporter's scope for `key`, created within the per-exporter limit.
fn scope<'a>(
    scopes: &'a mut HashMap<(u16, u32), Scope>,
    key: (u16, u32),
    cfg: &DecoderConfig,
) -> Result<&'a mut Scope, DecodeError> {
    if !scopes.contains_key(&key) && scopes.len() >= cfg.max_scopes_per_exporter {
        return Err(DecodeError::TemplateLimit(cfg.max_scopes_per_exporter));
    }
    Ok(scopes.entry(key).or_default())
}

fn track(
    scope: &mut Scope,
    ec: &mut ExporterCounters,
    c: &mut Counters,
    seq: u32,
    advance: Option<u32>,
) {
    let resets = scope.seq.resets;
    let gap = scope.seq.observe(seq, advance);
    let reset = scope.seq.resets - resets;
    ec.sequence_gaps += gap;
    ec.sequence_resets += reset;
    c.sequence_gaps += gap;
    c.sequence_resets += reset;
}
