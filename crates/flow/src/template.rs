//! Templates (v9 and IPFIX) and the walk over the data records they describe.

use crate::DecodeError;
use crate::elements::{Kind, apply, classify};
use crate::record::Acc;

/// Length meaning "variable length, prefixed in the record": IPFIX's
/// encoding (RFC 7011 section 7), which v9 exporters that send
/// variable-length fields (65535 in the template) use as well.
pub(crate) const VARLEN: u16 = 0xffff;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field {
    pub kind: Kind,
    pub id: u16,
    pub pen: u32,
    pub len: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pub id: u16,
    pub fields: Box<[Field]>,
    /// Number of leading scope fields; non-zero only for options templates.
    pub scope_count: u16,
    pub options: bool,
    /// Shortest possible record: fixed lengths plus one prefix byte per
    /// variable-length field. Always at least 1, so data walks terminate.
    pub min_len: usize,
    pub has_varlen: bool,
}

impl Template {
    pub(crate) fn new(
        version: u16,
        id: u16,
        raw: Vec<(u16, u32, u16)>,
        scope_count: u16,
        options: bool,
    ) -> Result<Self, DecodeError> {
        let mut min_len = 0usize;
        let mut has_varlen = false;
        let fields: Box<[Field]> = raw
            .into_iter()
            .map(|(fid, pen, len)| {
                if len == VARLEN {
                    has_varlen = true;
                    min_len += 1;
                } else {
                    min_len += usize::from(len);
                }
                Field {
                    kind: classify(version, pen, fid, len),
                    id: fid,
                    pen,
                    len,
                }
            })
            .collect();
        if min_len == 0 {
            // A zero-length record would let a data set repeat forever.
            return Err(DecodeError::Template {
                template_id: id,
                reason: "records would be zero bytes long",
            });
        }
        Ok(Self {
            id,
            fields,
            scope_count,
            options,
            min_len,
            has_varlen,
        })
    }

    /// Memory this template holds, as counted against the template budgets:
    /// itself, its fields, and the allocation and map slot around it.
    pub(crate) fn footprint(&self) -> usize {
        const AROUND: usize = 64;
        std::mem::size_of::<Self>() + std::mem::size_of_val(&*self.fields) + AROUND
    }

    /// Decodes one record starting at `pos`, returning the position after it.
    #[inline]
    pub(crate) fn decode_record(
        &self,
        version: u16,
        data: &[u8],
        mut pos: usize,
        acc: &mut Acc,
        extra: bool,
    ) -> Result<usize, DecodeError> {
        let trunc = || DecodeError::Data {
            template_id: self.id,
            reason: "record runs past the end of its set",
        };
        if !self.has_varlen {
            let end = pos + self.min_len;
            if end > data.len() {
                return Err(trunc());
            }
            for f in self.fields.iter() {
                let l = usize::from(f.len);
                apply(f.kind, f.id, version, &data[pos..pos + l], acc, extra);
                pos += l;
            }
            return Ok(pos);
        }
        for f in self.fields.iter() {
            let l = if f.len == VARLEN {
                let first = *data.get(pos).ok_or_else(trunc)?;
                pos += 1;
                if first == 255 {
                    let b = data.get(pos..pos + 2).ok_or_else(trunc)?;
                    pos += 2;
                    usize::from(u16::from_be_bytes([b[0], b[1]]))
                } else {
                    usize::from(first)
                }
            } else {
                usize::from(f.len)
            };
            let b = data.get(pos..pos + l).ok_or_else(trunc)?;
            apply(f.kind, f.id, version, b, acc, extra);
            pos += l;
        }
        Ok(pos)
    }
}
