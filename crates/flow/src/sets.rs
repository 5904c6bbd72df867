//! v9 / IPFIX sets: framing, template records, data records, and the data
//! sets held while their template is unknown.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::DecodeError;
use crate::bytes::Reader;
use crate::decoder::{Counters, DecoderConfig};
use crate::exporters::{Exporter, Pending, Scope};
use crate::record::{Acc, Ctx, FlowRecord};
use crate::template::Template;

/// Validates the framing of every set before any is interpreted, so that a
/// datagram with broken framing changes no state.
pub(crate) fn split_sets(version: u16, mut body: &[u8]) -> Result<Vec<(u16, &[u8])>, DecodeError> {
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

/// Learns (or withdraws) the templates of one template set, within the
/// exporter's and the decoder's template memory; gives the ids learned.
pub(crate) fn parse_templates(
    version: u16,
    set: &[u8],
    options: bool,
    scope: &mut Scope,
    exporter_bytes: &mut usize,
    cfg: &DecoderConfig,
    counters: &mut Counters,
) -> Result<Vec<u16>, DecodeError> {
    let mut learned = Vec::new();
    let mut r = Reader::new(set, "template record");
    loop {
        let rest = r.rest();
        if rest.is_empty() || (rest.len() < 4) || rest.iter().all(|&b| b == 0) {
            // Sets are padded to 4-byte boundaries with zeros.
            return Ok(learned);
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
                withdraw(scope, id, options, exporter_bytes, counters);
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
        let replaced = scope.templates.get(&id).map_or(0, |t| t.footprint());
        let added = t.footprint();
        let exporter_after = *exporter_bytes - replaced + added;
        let total_after = counters.template_bytes - replaced as u64 + added as u64;
        if exporter_after > cfg.max_template_bytes_per_exporter {
            return Err(DecodeError::TemplateMemory {
                budget: "exporter",
                limit: cfg.max_template_bytes_per_exporter,
            });
        }
        if added > replaced && total_after > cfg.max_template_bytes_total as u64 {
            return Err(DecodeError::TemplateMemory {
                budget: "collector",
                limit: cfg.max_template_bytes_total,
            });
        }
        scope.templates.insert(id, Arc::new(t));
        *exporter_bytes = exporter_after;
        counters.template_bytes = total_after;
        counters.templates += 1;
        if !learned.contains(&id) {
            learned.push(id);
        }
    }
}

/// RFC 7011 8.1: a template record with no fields withdraws its id; the set
/// id itself as template id withdraws all templates of that kind.
fn withdraw(
    scope: &mut Scope,
    id: u16,
    options: bool,
    exporter_bytes: &mut usize,
    counters: &mut Counters,
) {
    let all = if options { 3 } else { 2 };
    let (before, bytes_before) = (scope.templates.len(), scope.template_bytes());
    if id == all {
        scope.templates.retain(|_, t| t.options != options);
    } else {
        scope.templates.remove(&id);
    }
    let freed = bytes_before - scope.template_bytes();
    *exporter_bytes -= freed;
    counters.template_bytes -= freed as u64;
    counters.templates_withdrawn += (before - scope.templates.len()) as u64;
}

/// Decodes every record of one data set; returns how many data records
/// (flows, non-IP and options records alike) it held, which is what IPFIX
/// sequence numbers count.
pub(crate) fn decode_data_set(
    t: &Template,
    set: &[u8],
    ctx: &Ctx,
    scope: &mut Scope,
    extra: bool,
    counters: &mut Counters,
    out: &mut Vec<FlowRecord>,
) -> Result<u32, DecodeError> {
    let mut pos = 0;
    let mut n = 0u32;
    let mut non_ip = 0u32;
    while set.len() - pos >= t.min_len {
        // With variable-length fields the shortest record can be shorter
        // than the up-to-3 bytes of zero padding that end a set.
        if t.has_varlen && set.len() - pos < 4 && set[pos..].iter().all(|&b| b == 0) {
            break;
        }
        let mut acc = Acc::default();
        pos = t.decode_record(ctx.version, set, pos, &mut acc, extra)?;
        n += 1;
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
                None => {
                    counters.non_ip_records += 1;
                    non_ip += 1;
                }
            }
        }
    }
    // What is left is either padding (zeros, fine) or the start of a record
    // cut short, which would otherwise vanish without a trace.
    if set[pos..].iter().any(|&b| b != 0) {
        counters.sets_truncated += 1;
    } else if n > 0 && non_ip == n {
        counters.sets_non_ip += 1;
    }
    Ok(n)
}

pub(crate) fn hold(
    exp: &mut Exporter,
    cfg: &DecoderConfig,
    counters: &mut Counters,
    ctx: &Ctx,
    template_id: u16,
    set: &[u8],
) {
    let over_total =
        |c: &Counters| c.pending_bytes + set.len() as u64 > cfg.max_pending_bytes_total as u64;
    if set.len() > cfg.max_pending_bytes || cfg.max_pending_sets == 0 {
        counters.no_template += 1;
        return;
    }
    while exp.pending.len() >= cfg.max_pending_sets
        || exp.pending_bytes + set.len() > cfg.max_pending_bytes
        || over_total(counters)
    {
        let Some(old) = exp.pending.pop_front() else {
            break;
        };
        exp.pending_bytes -= old.body.len();
        counters.pending_bytes -= old.body.len() as u64;
        counters.pending_sets -= 1;
        counters.no_template += 1;
    }
    if over_total(counters) {
        // Other exporters hold the rest: this set cannot wait.
        counters.no_template += 1;
        return;
    }
    exp.pending_bytes += set.len();
    counters.pending_bytes += set.len() as u64;
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
pub(crate) fn release(
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
        counters.pending_bytes -= p.body.len() as u64;
        counters.pending_sets -= 1;
        let before = out.len();
        if decode_data_set(&t, &p.body, &p.ctx, scope, extra, counters, out).is_err() {
            out.truncate(before);
            counters.malformed += 1;
            exp.counters.malformed += 1;
        }
    }
    exp.pending = keep;
}
