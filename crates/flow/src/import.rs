//! Flow logs from clouds and files: AWS VPC flow logs (default and custom formats),
//! Azure NSG flow logs version 2, and Bulkhead's own CSV / JSON Lines format.
//! Text in, [`Observation`]s out; every problem names its line and field.

use std::net::IpAddr;

use crate::Observation;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("line {line}: {field}: {message}")]
pub struct ImportError {
    pub line: u64,
    pub field: String,
    pub message: String,
}

/// What an import produced: observations, records that carry no flow by design (AWS
/// `NODATA`/`SKIPDATA`), and every malformed line.
#[derive(Debug, Default)]
pub struct Imported {
    pub observations: Vec<Observation>,
    pub skipped: u64,
    pub errors: Vec<ImportError>,
}

fn err(line: u64, field: &str, message: impl Into<String>) -> ImportError {
    ImportError {
        line,
        field: field.to_string(),
        message: message.into(),
    }
}

pub fn protocol_from(s: &str) -> Option<u8> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" | "t" => Some(6),
        "udp" | "u" => Some(17),
        "icmp" => Some(1),
        "icmpv6" => Some(58),
        "sctp" => Some(132),
        other => other.parse().ok(),
    }
}

const AWS_DEFAULT: &[&str] = &[
    "version",
    "account-id",
    "interface-id",
    "srcaddr",
    "dstaddr",
    "srcport",
    "dstport",
    "protocol",
    "packets",
    "bytes",
    "start",
    "end",
    "action",
    "log-status",
];

/// AWS VPC flow logs. A first line of field names (as S3 delivery writes it, with or
/// without `${}`) sets a custom field order; otherwise the default version 2 format.
pub fn aws_vpc(text: &str) -> Imported {
    let mut out = Imported::default();
    let mut fields: Vec<String> = AWS_DEFAULT.iter().map(|s| s.to_string()).collect();
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.is_empty() {
            continue;
        }
        if n == 1
            && cols
                .iter()
                .any(|c| c.trim_start_matches("${").starts_with("srcaddr"))
        {
            fields = cols
                .iter()
                .map(|c| c.trim_start_matches("${").trim_end_matches('}').to_string())
                .collect();
            for required in ["srcaddr", "dstaddr"] {
                if !fields.iter().any(|f| f == required) {
                    out.errors.push(err(
                        n,
                        required,
                        "the header names no such field; addresses are required",
                    ));
                }
            }
            continue;
        }
        if cols.len() != fields.len() {
            out.errors.push(err(
                n,
                "(line)",
                format!("{} fields, the format has {}", cols.len(), fields.len()),
            ));
            continue;
        }
        let get = |name: &str| {
            fields
                .iter()
                .position(|f| f == name)
                .map(|i| cols[i])
                .filter(|v| *v != "-")
        };
        if matches!(get("log-status"), Some("NODATA") | Some("SKIPDATA")) {
            out.skipped += 1;
            continue;
        }
        let mut bad = |field: &str, msg: String| out.errors.push(err(n, field, msg));
        let addr = |field: &str| -> Result<IpAddr, String> {
            let v = get(field).ok_or("missing")?;
            v.parse().map_err(|_| format!("{v:?} is not an IP address"))
        };
        let num = |field: &str| -> Result<u64, String> {
            match get(field) {
                None => Ok(0),
                Some(v) => v.parse().map_err(|_| format!("{v:?} is not a number")),
            }
        };
        let (src, dst) = match (addr("srcaddr"), addr("dstaddr")) {
            (Ok(s), Ok(d)) => (s, d),
            (Err(e), _) => {
                bad("srcaddr", e);
                continue;
            }
            (_, Err(e)) => {
                bad("dstaddr", e);
                continue;
            }
        };
        let mut values = [0u64; 6];
        let mut ok = true;
        for (slot, field) in [
            "srcport", "dstport", "protocol", "packets", "bytes", "start",
        ]
        .iter()
        .enumerate()
        {
            match num(field) {
                Ok(v) => values[slot] = v,
                Err(e) => {
                    bad(field, e);
                    ok = false;
                }
            }
        }
        let end = num("end").unwrap_or(values[5]);
        if !ok {
            continue;
        }
        if values[0] > 65535 || values[1] > 65535 || values[2] > 255 {
            bad("(ports/protocol)", "out of range".into());
            continue;
        }
        out.observations.push(Observation {
            reporter: format!("aws {}", get("interface-id").unwrap_or("vpc")).into(),
            src,
            dst,
            src_port: values[0] as u16,
            dst_port: values[1] as u16,
            proto: values[2] as u8,
            packets: values[3],
            bytes: values[4],
            start_ms: Some(values[5] as i64 * 1000).filter(|v| *v > 0),
            end_ms: Some(end as i64 * 1000).filter(|v| *v > 0),
            process: None,
            reverse_packets: 0,
            reverse_bytes: 0,
            icmp_type: None,
            connections: 1,
        });
    }
    out
}

/// Azure NSG flow logs, version 2 (`{"records": [{"properties": {"Version": 2, "flows":
/// [{"rule": …, "flows": [{"mac": …, "flowTuples": ["ts,src,dst,sport,dport,T|U,I|O,A|D,
/// B|C|E,pkts,bytes,rpkts,rbytes", …]}]}]}}]}`).
pub fn azure_nsg(text: &str) -> Imported {
    let mut out = Imported::default();
    let doc: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            out.errors
                .push(err(e.line() as u64, "(json)", e.to_string()));
            return out;
        }
    };
    let Some(records) = doc.get("records").and_then(|r| r.as_array()) else {
        out.errors
            .push(err(1, "records", "missing: not an NSG flow log"));
        return out;
    };
    // JSON values carry no line numbers; the tuple's position names it instead.
    for (ri, rec) in records.iter().enumerate() {
        let props = &rec["properties"];
        let version = props["Version"].as_u64().unwrap_or(0);
        if version != 2 {
            out.errors.push(err(
                0,
                &format!("records[{ri}].properties.Version"),
                format!("{version}: only version 2 is supported"),
            ));
            continue;
        }
        for (fi, rule) in props["flows"].as_array().into_iter().flatten().enumerate() {
            let rule_name = rule["rule"].as_str().unwrap_or("?");
            for (gi, group) in rule["flows"].as_array().into_iter().flatten().enumerate() {
                let mac = group["mac"].as_str().unwrap_or("?");
                for (ti, tuple) in group["flowTuples"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let path = format!(
                        "records[{ri}].properties.flows[{fi}].flows[{gi}].flowTuples[{ti}]"
                    );
                    match azure_tuple(tuple.as_str().unwrap_or(""), rule_name, mac) {
                        Ok(o) => out.observations.push(o),
                        Err(m) => out.errors.push(err(0, &path, m)),
                    }
                }
            }
        }
    }
    out
}

fn azure_tuple(t: &str, rule: &str, mac: &str) -> Result<Observation, String> {
    let f: Vec<&str> = t.split(',').collect();
    if f.len() < 9 {
        return Err(format!(
            "{t:?}: {} fields, version 2 tuples have 13",
            f.len()
        ));
    }
    let num = |i: usize| -> Result<u64, String> {
        match f.get(i).copied().unwrap_or("") {
            "" => Ok(0),
            v => v
                .parse()
                .map_err(|_| format!("field {} {v:?} is not a number", i + 1)),
        }
    };
    let ip = |i: usize| -> Result<IpAddr, String> {
        f[i].parse()
            .map_err(|_| format!("field {} {:?} is not an IP address", i + 1, f[i]))
    };
    let ts = num(0)? as i64 * 1000;
    let proto = protocol_from(f[5]).ok_or_else(|| format!("protocol {:?} is not T or U", f[5]))?;
    if !matches!(f[8], "B" | "C" | "E") {
        return Err(format!("flow state {:?} is not B, C or E", f[8]));
    }
    Ok(Observation {
        reporter: format!("azure nsg {rule} {mac}").into(),
        src: ip(1)?,
        dst: ip(2)?,
        src_port: num(3)?.try_into().map_err(|_| "source port out of range")?,
        dst_port: num(4)?
            .try_into()
            .map_err(|_| "destination port out of range")?,
        proto,
        packets: num(9)?,
        bytes: num(10)?,
        start_ms: Some(ts),
        end_ms: Some(ts),
        process: None,
        reverse_packets: num(11)?,
        reverse_bytes: num(12)?,
        icmp_type: None,
        // "B" opens a connection; "C" and "E" report more of one already counted.
        connections: u64::from(f[8] == "B"),
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRecord {
    start: Option<serde_json::Value>,
    end: Option<serde_json::Value>,
    src: String,
    dst: String,
    #[serde(default)]
    src_port: u16,
    #[serde(default)]
    dst_port: u16,
    proto: serde_json::Value,
    #[serde(default)]
    packets: u64,
    #[serde(default)]
    bytes: u64,
    process: Option<String>,
    reporter: Option<String>,
}

fn time_ms(v: &Option<serde_json::Value>) -> Result<Option<i64>, String> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("{n} is not unix milliseconds")),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) => match s.parse::<i64>() {
            Ok(ms) => Ok(Some(ms)),
            Err(_) => humantime::parse_rfc3339_weak(s)
                .map(|t| {
                    Some(
                        t.duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_millis() as i64)
                            .unwrap_or(0),
                    )
                })
                .map_err(|e| format!("{s:?} is not RFC 3339 or unix milliseconds: {e}")),
        },
        Some(other) => Err(format!("{other} is not a time")),
    }
}

fn from_file_record(
    r: FileRecord,
    default_reporter: &str,
) -> Result<Observation, (String, String)> {
    let bad = |f: &str, m: String| (f.to_string(), m);
    let proto = match &r.proto {
        serde_json::Value::Number(n) => n.as_u64().filter(|p| *p <= 255).map(|p| p as u8),
        serde_json::Value::String(s) => protocol_from(s),
        _ => None,
    }
    .ok_or_else(|| {
        bad(
            "proto",
            format!("{} is not a protocol name or number", r.proto),
        )
    })?;
    Ok(Observation {
        reporter: r
            .reporter
            .unwrap_or_else(|| default_reporter.to_string())
            .into(),
        src: r
            .src
            .parse()
            .map_err(|_| bad("src", format!("{:?} is not an IP address", r.src)))?,
        dst: r
            .dst
            .parse()
            .map_err(|_| bad("dst", format!("{:?} is not an IP address", r.dst)))?,
        src_port: r.src_port,
        dst_port: r.dst_port,
        proto,
        packets: r.packets,
        bytes: r.bytes,
        start_ms: time_ms(&r.start).map_err(|m| bad("start", m))?,
        end_ms: time_ms(&r.end).map_err(|m| bad("end", m))?,
        process: r.process.filter(|p| !p.is_empty()),
        reverse_packets: 0,
        reverse_bytes: 0,
        icmp_type: None,
        connections: 1,
    })
}

/// One JSON object per line with the fields `start`, `end` (RFC 3339 or unix ms), `src`,
/// `dst`, `src_port`, `dst_port`, `proto` (name or number), `packets`, `bytes`, and the
/// optional `process` and `reporter`.
pub fn jsonl(text: &str, reporter: &str) -> Imported {
    let mut out = Imported::default();
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<FileRecord>(line) {
            Ok(r) => match from_file_record(r, reporter) {
                Ok(o) => out.observations.push(o),
                Err((f, m)) => out.errors.push(err(n, &f, m)),
            },
            Err(e) => out.errors.push(err(n, "(json)", e.to_string())),
        }
    }
    out
}

/// The same fields as [`jsonl`], as CSV with a header row naming them.
pub fn csv(text: &str, reporter: &str) -> Imported {
    let mut out = Imported::default();
    let mut reader = ::csv::ReaderBuilder::new()
        .trim(::csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            out.errors.push(err(1, "(header)", e.to_string()));
            return out;
        }
    };
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                out.errors.push(err(
                    e.position().map(|p| p.line()).unwrap_or(0),
                    "(row)",
                    e.to_string(),
                ));
                continue;
            }
        };
        let n = record.position().map(|p| p.line()).unwrap_or(0);
        // Reuse the JSON path so both formats accept exactly the same fields.
        let mut obj = serde_json::Map::new();
        for (h, v) in headers.iter().zip(record.iter()) {
            let value = match h {
                "src_port" | "dst_port" | "packets" | "bytes" => match v.parse::<u64>() {
                    Ok(x) => serde_json::Value::from(x),
                    Err(_) if v.is_empty() => continue,
                    Err(_) => {
                        out.errors.push(err(n, h, format!("{v:?} is not a number")));
                        continue;
                    }
                },
                _ => serde_json::Value::from(v),
            };
            obj.insert(h.to_string(), value);
        }
        match serde_json::from_value::<FileRecord>(obj.into()) {
            Ok(r) => match from_file_record(r, reporter) {
                Ok(o) => out.observations.push(o),
                Err((f, m)) => out.errors.push(err(n, &f, m)),
            },
            Err(e) => out.errors.push(err(n, "(row)", e.to_string())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_default_format_and_nodata() {
        let text = "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK\n\
                    2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA\n\
                    2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK\n";
        let r = aws_vpc(text);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!((r.observations.len(), r.skipped), (2, 1));
        let o = &r.observations[0];
        assert_eq!(
            (o.src.to_string(), o.dst_port, o.proto, o.packets, o.bytes),
            ("172.31.16.139".into(), 22, 6, 20, 4249)
        );
        assert_eq!(o.start_ms, Some(1_418_530_010_000));
        assert_eq!(&*o.reporter, "aws eni-1235b8ca123456789");
    }

    #[test]
    fn aws_custom_header_sets_the_order() {
        let text = "${version} ${srcaddr} ${dstaddr} ${dstport} ${srcport} ${protocol} ${bytes} ${packets} ${start} ${end}\n\
                    5 10.0.1.5 10.0.2.9 443 50000 6 900 3 1700000000 1700000060\n\
                    5 10.0.1.5 10.0.2.9 x 50000 6 900 3 1700000000 1700000060\n";
        let r = aws_vpc(text);
        assert_eq!(r.observations.len(), 1);
        let o = &r.observations[0];
        assert_eq!(
            (o.dst_port, o.src_port, o.bytes, o.packets),
            (443, 50000, 900, 3)
        );
        assert_eq!(r.errors.len(), 1);
        assert_eq!(
            (r.errors[0].line, r.errors[0].field.as_str()),
            (3, "dstport")
        );
    }

    #[test]
    fn azure_v2_tuples() {
        let text = r#"{"records":[{"time":"2018-11-13T12:00:35.3899262Z","category":"NetworkSecurityGroupFlowEvent","operationName":"NetworkSecurityGroupFlowEvents","properties":{"Version":2,"flows":[{"rule":"DefaultRule_DenyAllInBound","flows":[{"mac":"000D3AF87856","flowTuples":["1542110402,94.102.49.190,10.5.16.4,28746,443,U,I,D,B,,,,","1542110424,176.119.4.10,10.5.16.4,56509,59336,T,I,D,B,,,,"]}]},{"rule":"DefaultRule_AllowInternetOutBound","flows":[{"mac":"000D3AF87856","flowTuples":["1542110377,10.5.16.4,13.67.143.118,59831,443,T,O,A,B,,,,","1542110379,10.5.16.4,13.67.143.117,59932,443,T,O,A,E,1,66,1,66","1542110379,10.5.16.4,nope,59932,443,T,O,A,E,1,66,1,66"]}]}]}}]}"#;
        let r = azure_nsg(text);
        assert_eq!(r.observations.len(), 4);
        assert_eq!(r.errors.len(), 1);
        assert!(
            r.errors[0].field.ends_with("flowTuples[2]"),
            "{:?}",
            r.errors
        );
        let e = &r.observations[3];
        assert_eq!(
            (
                e.packets,
                e.bytes,
                e.reverse_packets,
                e.reverse_bytes,
                e.connections
            ),
            (1, 66, 1, 66, 0)
        );
        assert_eq!(r.observations[0].proto, 17);
        assert_eq!(r.observations[2].connections, 1);
    }

    #[test]
    fn csv_and_jsonl_accept_the_same_fields() {
        let c = csv(
            "start,end,src,dst,src_port,dst_port,proto,packets,bytes,process\n2026-01-01T00:00:00Z,1767225601000,10.0.0.1,10.0.0.2,50000,5432,tcp,10,1000,postgres\n",
            "file",
        );
        let j = jsonl(
            r#"{"start":"2026-01-01T00:00:00Z","end":1767225601000,"src":"10.0.0.1","dst":"10.0.0.2","src_port":50000,"dst_port":5432,"proto":6,"packets":10,"bytes":1000,"process":"postgres"}"#,
            "file",
        );
        assert!(
            c.errors.is_empty() && j.errors.is_empty(),
            "{:?} {:?}",
            c.errors,
            j.errors
        );
        assert_eq!(c.observations, j.observations);
        assert_eq!(c.observations[0].start_ms, Some(1_767_225_600_000));
        let bad = jsonl(
            "{\"src\":\"10.0.0.1\",\"dst\":\"10.0.0.2\",\"proto\":\"tcp\",\"colour\":1}\n{\"src\":\"x\",\"dst\":\"10.0.0.2\",\"proto\":6}",
            "f",
        );
        assert_eq!(bad.errors.len(), 2);
        assert!(bad.errors[0].message.contains("colour"));
        assert_eq!(
            (bad.errors[1].line, bad.errors[1].field.as_str()),
            (2, "src")
        );
    }
}
