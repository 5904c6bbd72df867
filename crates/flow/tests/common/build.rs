//! Byte-level builders for synthetic export datagrams.

#![allow(dead_code)]

/// A template field: (element id, length, enterprise number).
pub type F = (u16, u16, Option<u32>);

pub fn f(id: u16, len: u16) -> F {
    (id, len, None)
}

/// srcIPv4, dstIPv4, srcPort, dstPort, protocol, packets, octets.
pub fn basic_fields() -> Vec<F> {
    vec![
        f(8, 4),
        f(12, 4),
        f(7, 2),
        f(11, 2),
        f(4, 1),
        f(2, 4),
        f(1, 4),
    ]
}

pub fn fe(id: u16, len: u16, pen: u32) -> F {
    (id, len, Some(pen))
}

pub fn set(id: u16, body: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(4 + body.len());
    s.extend_from_slice(&id.to_be_bytes());
    s.extend_from_slice(&((4 + body.len()) as u16).to_be_bytes());
    s.extend_from_slice(body);
    s
}

fn fields(out: &mut Vec<u8>, fs: &[F]) {
    for (id, len, pen) in fs {
        match pen {
            Some(p) => {
                out.extend_from_slice(&(id | 0x8000).to_be_bytes());
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&p.to_be_bytes());
            }
            None => {
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
    }
}

/// IPFIX (and v9) template record.
pub fn tpl(id: u16, fs: &[F]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&id.to_be_bytes());
    r.extend_from_slice(&(fs.len() as u16).to_be_bytes());
    fields(&mut r, fs);
    r
}

/// IPFIX options template record: the first `scope` fields are scope fields.
pub fn opt_tpl(id: u16, scope: u16, fs: &[F]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&id.to_be_bytes());
    r.extend_from_slice(&(fs.len() as u16).to_be_bytes());
    r.extend_from_slice(&scope.to_be_bytes());
    fields(&mut r, fs);
    r
}

/// v9 options template record.
pub fn v9_opt_tpl(id: u16, scope: &[(u16, u16)], opts: &[(u16, u16)]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&id.to_be_bytes());
    r.extend_from_slice(&((scope.len() * 4) as u16).to_be_bytes());
    r.extend_from_slice(&((opts.len() * 4) as u16).to_be_bytes());
    for (t, l) in scope.iter().chain(opts) {
        r.extend_from_slice(&t.to_be_bytes());
        r.extend_from_slice(&l.to_be_bytes());
    }
    r
}

pub fn ipfix(domain: u32, export_secs: u32, sets: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = sets.concat();
    let mut m = Vec::with_capacity(16 + body.len());
    m.extend_from_slice(&10u16.to_be_bytes());
    m.extend_from_slice(&((16 + body.len()) as u16).to_be_bytes());
    m.extend_from_slice(&export_secs.to_be_bytes());
    m.extend_from_slice(&0u32.to_be_bytes());
    m.extend_from_slice(&domain.to_be_bytes());
    m.extend_from_slice(&body);
    m
}

pub fn v9(
    source_id: u32,
    sys_uptime: u32,
    unix_secs: u32,
    count: u16,
    sets: &[Vec<u8>],
) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&9u16.to_be_bytes());
    m.extend_from_slice(&count.to_be_bytes());
    m.extend_from_slice(&sys_uptime.to_be_bytes());
    m.extend_from_slice(&unix_secs.to_be_bytes());
    m.extend_from_slice(&0u32.to_be_bytes());
    m.extend_from_slice(&source_id.to_be_bytes());
    m.extend_from_slice(&sets.concat());
    m
}

/// Big-endian bytes of `v`, `len` bytes wide.
pub fn be(v: u64, len: usize) -> Vec<u8> {
    v.to_be_bytes()[8 - len..].to_vec()
}

/// A record from (value, width) pairs.
pub fn rec(vals: &[(u64, usize)]) -> Vec<u8> {
    vals.iter().flat_map(|(v, l)| be(*v, *l)).collect()
}
