// Shared by the fuzz targets: the input is a sequence of datagrams, each
// prefixed by a 2-byte length, fed to one decoder so that templates from
// early datagrams meet data in later ones. `head` forces the version bytes,
// so every input reaches the decoder under test instead of the version check.

use bulkhead_flow::Decoder;

pub fn run(head: &[u8], data: &[u8]) {
    let mut decoder = Decoder::new();
    let exporter = "192.0.2.1:2055".parse().expect("addr");
    let mut rest = data;
    let mut buf = Vec::with_capacity(2048);
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        buf.clear();
        buf.extend_from_slice(head);
        buf.extend_from_slice(&rest[2..2 + len]);
        if head == [0, 10] && buf.len() >= 4 {
            // Agree with the IPFIX length check often, so sets get parsed.
            let n = (buf.len() as u16).to_be_bytes();
            buf[2] = n[0];
            buf[3] = n[1];
        }
        let before = decoder.counters();
        let res = decoder.decode(exporter, &buf);
        let after = decoder.counters();
        assert_eq!(after.datagrams, before.datagrams + 1);
        match res {
            Ok(records) => assert_eq!(after.records - before.records, records.len() as u64),
            Err(_) => assert_eq!(after.malformed, before.malformed + 1),
        }
        rest = &rest[2 + len..];
    }
    decoder.expire_pending();
    assert_eq!(decoder.counters().pending_sets, 0);
}
