//! The stateful front door: per-exporter template caches, options state,
//! held-back data sets, counters.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::DecodeError;
use crate::bytes::Reader;
use crate::record::{Acc, Ctx, FlowRecord, Sampling};
use crate::template::Template;
use crate::{sflow, v5};

/// Limits that bound the memory one exporter can make the decoder hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Report non-core elements in [`FlowRecord::extra`]. Costs allocations
    /// per record; collectors that only aggregate can turn it off.
    pub capture_extra: bool,
    /// Exporters with template state. Bounds what spoofed source
    /// addresses can make the decoder allocate.
    pub max_exporters: usize,
    /// Templates kept per (exporter, version, observation domain).
    pub max_templates_per_scope: usize,
    /// Observation domains / source ids kept per exporter.
    pub max_scopes_per_exporter: usize,
    /// Data sets held per exporter while their template is unknown.
    pub max_pending_sets: usize,
    /// Bytes of data sets held per exporter while their template is unknown.
    pub max_pending_bytes: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            capture_extra: true,
            max_exporters: 10_000,
            max_templates_per_scope: 1024,
            max_scopes_per_exporter: 64,
            max_pending_sets: 64,
            max_pending_bytes: 256 * 1024,
        }
    }
}

/// Running totals since the decoder was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Datagrams handed to [`Decoder::decode`].
    pub datagrams: u64,
    /// Flow records returned (including ones decoded from held data sets).
    pub records: u64,
    /// Datagrams rejected with an error, plus held data sets that failed to
    /// decode once their template arrived.
    pub malformed: u64,
    /// Data sets dropped because their template never arrived in time
    /// (evicted from the hold queue or expired by [`Decoder::expire_pending`]).
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
    /// sFlow samples that were not IP flow samples (counters, non-IP frames).
    pub sflow_skipped: u64,
}

#[derive(Debug, Default)]
struct Scope {
    templates: HashMap<u16, Arc<Template>>,
    sampling: Sampling,
    sys_init_ms: Option<u64>,
}

#[derive(Debug)]
struct Pending {
    version: u16,
    domain: u32,
    template_id: u16,
    ctx: Ctx,
    body: Box<[u8]>,
}

#[derive(Debug, Default)]
struct Exporter {
    scopes: HashMap<(u16, u32), Scope>,
    pending: VecDeque<Pending>,
    pending_bytes: usize,
}

/// Decodes NetFlow v5, v9, IPFIX and sFlow v5 datagrams into [`FlowRecord`]s,
/// keeping template state apart per exporter address and observation domain.
///
/// Pure: the caller receives datagrams (from a socket, a pcap, a test) and
/// passes them in with the address they came from.
#[derive(Debug, Default)]
pub struct Decoder {
    config: DecoderConfig,
    exporters: HashMap<SocketAddr, Exporter>,
    counters: Counters,
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
    /// part stay learned.
    pub fn decode_into(
        &mut self,
        exporter: SocketAddr,
        datagram: &[u8],
        out: &mut Vec<FlowRecord>,
    ) -> Result<usize, DecodeError> {
        self.counters.datagrams += 1;
        let before = out.len();
        let res = self.dispatch(exporter, datagram, out);
        match res {
            Ok(()) => {
                let n = out.len() - before;
                self.counters.records += n as u64;
                Ok(n)
            }
            Err(e) => {
                out.truncate(before);
                self.counters.malformed += 1;
                Err(e)
            }
        }
    }

    fn dispatch(
        &mut self,
        exporter: SocketAddr,
        d: &[u8],
        out: &mut Vec<FlowRecord>,
    ) -> Result<(), DecodeError> {
        if d.len() < 2 {
            return Err(DecodeError::Empty);
        }
        let extra = self.config.capture_extra;
        match u16::from_be_bytes([d[0], d[1]]) {
            5 => v5::decode(exporter, d, extra, out),
            9 | 10 => self.decode_templated(exporter, d, out),
            // sFlow's version is a 32-bit word, so its first half is zero.
            0 if d.len() >= 4 && d[2] == 0 && d[3] == 5 => {
                sflow::decode(exporter, d, &mut self.counters, out)
            }
            v => Err(DecodeError::UnsupportedVersion(v)),
        }
    }

    /// Drops every held data set, counting each as `no_template`. A collector
    /// calls this periodically (or on shutdown) so that sets whose template
    /// never comes are accounted for. Returns how many were dropped.
    pub fn expire_pending(&mut self) -> u64 {
        let mut n = 0u64;
        for e in self.exporters.values_mut() {
            n += e.pending.len() as u64;
            e.pending.clear();
            e.pending_bytes = 0;
        }
        self.counters.no_template += n;
        self.counters.pending_sets = 0;
        n
    }

    /// Forgets all state of one exporter (templates, sampling, held sets),
    /// e.g. when it restarts or goes away. Held sets count as `no_template`.
    pub fn forget_exporter(&mut self, exporter: &SocketAddr) {
        if let Some(e) = self.exporters.remove(exporter) {
            let n = e.pending.len() as u64;
            self.counters.no_template += n;
            self.counters.pending_sets -= n;
        }
    }

    /// Number of exporters with state.
    pub fn exporter_count(&self) -> usize {
        self.exporters.len()
    }

    /// Number of templates known for one exporter, all versions and domains.
    pub fn template_count(&self, exporter: &SocketAddr) -> usize {
        self.exporters
            .get(exporter)
            .map_or(0, |e| e.scopes.values().map(|s| s.templates.len()).sum())
    }

    fn decode_templated(
        &mut self,
        exporter: SocketAddr,
        d: &[u8],
        out: &mut Vec<FlowRecord>,
    ) -> Result<(), DecodeError> {
        let mut r = Reader::new(d, "header");
        let version = r.u16()?;
        let mut v9_count = 0;
        let (ctx, body) = if version == 9 {
            v9_count = r.u16()?;
            let sys_uptime = r.u32()?;
            let unix_secs = r.u32()?;
            let _seq = r.u32()?;
            let domain = r.u32()?;
            let ctx = Ctx {
                exporter,
                version,
                domain,
                export_ms: u64::from(unix_secs) * 1000,
                sys_uptime: Some(sys_uptime),
            };
            (ctx, r.rest())
        } else {
            let length = usize::from(r.u16()?);
            let export_secs = r.u32()?;
            let _seq = r.u32()?;
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
            (ctx, r.rest())
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
        if !self.exporters.contains_key(&exporter) && self.exporters.len() >= cfg.max_exporters {
            return Err(DecodeError::ExporterLimit(cfg.max_exporters));
        }
        let exp = self.exporters.entry(exporter).or_default();
        let key = (version, ctx.domain);
        if !exp.scopes.contains_key(&key) && exp.scopes.len() >= cfg.max_scopes_per_exporter {
            return Err(DecodeError::TemplateLimit(cfg.max_scopes_per_exporter));
        }
        let mut learned: Vec<u16> = Vec::new();
        for (set_id, set) in sets {
            let scope = exp.scopes.entry(key).or_default();
            match (version, set_id) {
                (9, 0) | (10, 2) => parse_templates(
                    version,
                    set,
                    false,
                    scope,
                    cfg,
                    &mut self.counters,
                    &mut learned,
                )?,
                (9, 1) | (10, 3) => parse_templates(
                    version,
                    set,
                    true,
                    scope,
                    cfg,
                    &mut self.counters,
                    &mut learned,
                )?,
                (_, id) if id >= 256 => match scope.templates.get(&id) {
                    Some(t) => {
                        let t = Arc::clone(t);
                        decode_data_set(
                            &t,
                            set,
                            &ctx,
                            scope,
                            cfg.capture_extra,
                            &mut self.counters,
                            out,
                        )?;
                    }
                    None => hold(exp, cfg, &mut self.counters, &ctx, id, set),
                },
                // Reserved set ids carry nothing we can interpret; RFC 7011
                // says to skip them.
                _ => {}
            }
        }
        if !learned.is_empty() && !exp.pending.is_empty() {
            release(
                exp,
                key,
                &learned,
                cfg.capture_extra,
                &mut self.counters,
                out,
            );
        }
        Ok(())
    }
}

/// Validates the framing of every set before any is interpreted, so that a
/// datagram with broken framing changes no state.
fn split_sets(version: u16, mut body: &[u8]) -> Result<Vec<(u16, &[u8])>, DecodeError> {
    let mut sets = Vec::with_capacity(4);
    while body.len() >= 4 {
        let id = u16::from_be_bytes([body[0], body[1]]);
        let len = usize::from(u16::from_be_bytes([body[2], body[3]]));
        if version == 9 && body.iter().all(|&b| b == 0) {
            // v9 has no message length; some exporters (Cisco ACI) pad the
            // datagram with zeros after the last flowset.
            body = &[];
            break;
        }
        if len < 4 || len > body.len() {
            return Err(DecodeError::SetLength {
                set_id: id,
                length: len,
            });
        }
        sets.push((id, &body[4..len]));
        body = &body[len..];
    }
    // IPFIX message lengths cover whole sets exactly; v9 has no message
    // length, so a few trailing bytes are only tolerated there.
    if !body.is_empty() && version == 10 {
        return Err(DecodeError::SetLength {
            set_id: 0,
            length: body.len(),
        });
    }
    Ok(sets)
}

fn parse_templates(
    version: u16,
    set: &[u8],
    options: bool,
    scope: &mut Scope,
    cfg: &DecoderConfig,
    counters: &mut Counters,
    learned: &mut Vec<u16>,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(set, "template record");
    loop {
        let rest = r.rest();
        if rest.is_empty() || (rest.len() < 4) || rest.iter().all(|&b| b == 0) {
            // Sets are padded to 4-byte boundaries with zeros.
            return Ok(());
        }
        let id = r.u16()?;
        let t = if version == 9 && options {
            let scope_len = usize::from(r.u16()?);
            let opt_len = usize::from(r.u16()?);
            if scope_len % 4 != 0 || opt_len % 4 != 0 {
                return Err(DecodeError::Template {
                    template_id: id,
                    reason: "options scope/field lengths are not multiples of 4",
                });
            }
            let mut raw = Vec::with_capacity((scope_len + opt_len) / 4);
            for i in 0..(scope_len + opt_len) / 4 {
                let fid = r.u16()?;
                let len = r.u16()?;
                // v9 scope field types (system, interface, …) are not
                // information elements: never interpret them as such.
                let pen = if i < scope_len / 4 { u32::MAX } else { 0 };
                raw.push((fid, pen, len));
            }
            Template::new(version, id, raw, (scope_len / 4) as u16, true)?
        } else {
            let count = r.u16()?;
            if count == 0 {
                if version == 9 {
                    return Err(DecodeError::Template {
                        template_id: id,
                        reason: "template has no fields",
                    });
                }
                withdraw(scope, id, options, counters);
                continue;
            }
            let scope_count = if options { r.u16()? } else { 0 };
            if options && (scope_count == 0 || scope_count > count) {
                return Err(DecodeError::Template {
                    template_id: id,
                    reason: "options template scope count out of range",
                });
            }
            let mut raw = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let fid = r.u16()?;
                let len = r.u16()?;
                let pen = if version == 10 && fid & 0x8000 != 0 {
                    r.u32()?
                } else {
                    0
                };
                let fid = if version == 10 { fid & 0x7fff } else { fid };
                raw.push((fid, pen, len));
            }
            Template::new(version, id, raw, scope_count, options)?
        };
        if id < 256 {
            return Err(DecodeError::Template {
                template_id: id,
                reason: "template id below 256",
            });
        }
        if !scope.templates.contains_key(&id)
            && scope.templates.len() >= cfg.max_templates_per_scope
        {
            return Err(DecodeError::TemplateLimit(cfg.max_templates_per_scope));
        }
        scope.templates.insert(id, Arc::new(t));
        counters.templates += 1;
        if !learned.contains(&id) {
            learned.push(id);
        }
    }
}

/// RFC 7011 8.1: a template record with no fields withdraws its id; the set
/// id itself as template id withdraws all templates of that kind.
fn withdraw(scope: &mut Scope, id: u16, options: bool, counters: &mut Counters) {
    let all = if options { 3 } else { 2 };
    let before = scope.templates.len();
    if id == all {
        scope.templates.retain(|_, t| t.options != options);
    } else {
        scope.templates.remove(&id);
    }
    counters.templates_withdrawn += (before - scope.templates.len()) as u64;
}

fn decode_data_set(
    t: &Template,
    set: &[u8],
    ctx: &Ctx,
    scope: &mut Scope,
    extra: bool,
    counters: &mut Counters,
    out: &mut Vec<FlowRecord>,
) -> Result<(), DecodeError> {
    let mut pos = 0;
    while set.len() - pos >= t.min_len {
        // With variable-length fields the shortest record can be shorter
        // than the up-to-3 bytes of zero padding that end a set.
        if t.has_varlen && set.len() - pos < 4 && set[pos..].iter().all(|&b| b == 0) {
            break;
        }
        let mut acc = Acc::default();
        pos = t.decode_record(ctx.version, set, pos, &mut acc, extra)?;
        if t.options {
            counters.options_records += 1;
            if let Some(i) = acc.announced_interval() {
                scope.sampling.set(acc.sampler_id, i);
            }
            if let Some(init) = acc.sys_init_ms {
                scope.sys_init_ms = Some(init);
            }
        } else {
            match acc.into_record(ctx, &scope.sampling, scope.sys_init_ms) {
                Some(r) => out.push(r),
                None => counters.non_ip_records += 1,
            }
        }
    }
    Ok(())
}

fn hold(
    exp: &mut Exporter,
    cfg: &DecoderConfig,
    counters: &mut Counters,
    ctx: &Ctx,
    template_id: u16,
    set: &[u8],
) {
    if set.len() > cfg.max_pending_bytes || cfg.max_pending_sets == 0 {
        counters.no_template += 1;
        return;
    }
    while exp.pending.len() >= cfg.max_pending_sets
        || exp.pending_bytes + set.len() > cfg.max_pending_bytes
    {
        let Some(old) = exp.pending.pop_front() else {
            break;
        };
        exp.pending_bytes -= old.body.len();
        counters.pending_sets -= 1;
        counters.no_template += 1;
    }
    exp.pending_bytes += set.len();
    counters.pending_sets += 1;
    exp.pending.push_back(Pending {
        version: ctx.version,
        domain: ctx.domain,
        template_id,
        ctx: *ctx,
        body: set.into(),
    });
}

/// Decodes held data sets whose template has just been learned, in the order
/// they arrived.
fn release(
    exp: &mut Exporter,
    key: (u16, u32),
    learned: &[u16],
    extra: bool,
    counters: &mut Counters,
    out: &mut Vec<FlowRecord>,
) {
    let Some(scope) = exp.scopes.get_mut(&key) else {
        return;
    };
    let mut keep = VecDeque::with_capacity(exp.pending.len());
    for p in exp.pending.drain(..) {
        let matches = (p.version, p.domain) == key && learned.contains(&p.template_id);
        let Some(t) = scope.templates.get(&p.template_id).filter(|_| matches) else {
            keep.push_back(p);
            continue;
        };
        let t = Arc::clone(t);
        exp.pending_bytes -= p.body.len();
        counters.pending_sets -= 1;
        let before = out.len();
        if decode_data_set(&t, &p.body, &p.ctx, scope, extra, counters, out).is_err() {
            out.truncate(before);
            counters.malformed += 1;
        }
    }
    exp.pending = keep;
}
