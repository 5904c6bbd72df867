//! `bulkhead flows decode` on captures and raw datagrams.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/netflow")
        .join(name)
}

/// A classic pcap with each payload in Ethernet/IPv4/UDP from `src:sport`.
fn pcap(packets: &[(&[u8], [u8; 4], u16)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(0xa1b2c3d4u32.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(4u16.to_le_bytes());
    out.extend([0u8; 8]);
    out.extend(65535u32.to_le_bytes());
    out.extend(1u32.to_le_bytes()); // Ethernet
    for (i, (payload, src, sport)) in packets.iter().enumerate() {
        let mut frame = vec![0u8; 12];
        frame.extend([0x08, 0x00]);
        let total = 20 + 8 + payload.len();
        frame.extend([
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
        ]);
        frame.extend(src);
        frame.extend([127, 0, 0, 1]);
        frame.extend(sport.to_be_bytes());
        frame.extend(9995u16.to_be_bytes());
        frame.extend(((8 + payload.len()) as u16).to_be_bytes());
        frame.extend([0, 0]);
        frame.extend(*payload);
        out.extend((i as u32).to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend((frame.len() as u32).to_le_bytes());
        out.extend((frame.len() as u32).to_le_bytes());
        out.extend(frame);
    }
    out
}

fn decode(args: &[&str]) -> (Option<i32>, Vec<serde_json::Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .arg("flows")
        .arg("decode")
        .args(args)
        .output()
        .unwrap();
    let records = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        out.status.code(),
        records,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exporters_in_a_capture_keep_their_templates_apart() {
    let tpl = std::fs::read(fixture("ipfix_test_openbsd_pflow_tpl.dat")).unwrap();
    let data = std::fs::read(fixture("ipfix_test_openbsd_pflow_data.dat")).unwrap();
    // Exporter A sends template and data; exporter B sends only data, which must not
    // be decoded with A's template.
    let capture = pcap(&[
        (&tpl, [127, 0, 0, 2], 5000),
        (&data, [127, 0, 0, 2], 5000),
        (&data, [127, 0, 0, 3], 5000),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("export.pcap");
    std::fs::write(&f, capture).unwrap();
    let (code, records, stderr) = decode(&[f.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!records.is_empty());
    assert!(
        records.iter().all(|r| r["exporter"] == "127.0.0.2:5000"),
        "{records:?}"
    );
    assert!(stderr.contains("3 datagrams"), "{stderr}");
    assert!(
        stderr.contains("1 data sets without a template"),
        "{stderr}"
    );
    let r = &records[0];
    for field in [
        "version", "src_addr", "dst_addr", "src_port", "dst_port", "protocol", "packets", "bytes",
        "start", "end",
    ] {
        assert!(!r[field].is_null(), "{field} missing in {r}");
    }
    assert_eq!(r["version"], 10);
    assert!(r["start"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn raw_datagram_files_decode_in_order_and_bad_ones_are_counted() {
    let (code, records, stderr) = decode(&[
        fixture("ipfix_test_openbsd_pflow_tpl.dat")
            .to_str()
            .unwrap(),
        fixture("ipfix_test_openbsd_pflow_data.dat")
            .to_str()
            .unwrap(),
        fixture("netflow5_test_invalid01.dat").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0));
    assert!(!records.is_empty());
    assert!(stderr.contains("1 malformed"), "{stderr}");
}

#[test]
fn an_unreadable_file_is_exit_2_with_no_output() {
    let (code, records, stderr) = decode(&[
        fixture("netflow5.dat").to_str().unwrap(),
        "/nonexistent.pcap",
    ]);
    assert_eq!(code, Some(2));
    assert!(records.is_empty());
    assert!(stderr.contains("/nonexistent.pcap"));
}
