//! The library against the real kernel, inside network namespaces these tests create: two
//! namespaces joined by a veth pair (10.77.0.1/24 and 10.77.0.2/24, no default route, so
//! no packet can leave them), the library run in one with `ip netns exec NS host-probe`,
//! python3 as the peer. Needs root, iproute2, nftables and python3 (scripts/setup).
//! Every namespace and process is removed by a Drop guard, by name or pid.

use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use bulkhead_host::{HostDirection, HostFlow, HostInfo, LoggedPacket};

const PROBE: &str = env!("CARGO_BIN_EXE_host-probe");
const SERVER_IP: &str = "10.77.0.1";
const CLIENT_IP: &str = "10.77.0.2";

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (scripts/setup installs what is needed)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace, deleted (with its end of the veth) when dropped.
struct Netns {
    name: String,
}

impl Netns {
    fn new(name: String) -> Self {
        // A namespace left over from a killed run of the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "delete", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name };
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]));
        ns
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    fn sh(&self, script: &str) {
        run(self.cmd("sh").args(["-c", script]));
    }

    fn nft(&self, ruleset: &str) {
        let mut child = self
            .cmd("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nft (scripts/setup installs nftables)");
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), ruleset.as_bytes()).unwrap();
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}

/// Two namespaces joined by a veth pair: `server` (10.77.0.1) and `client` (10.77.0.2).
struct Pair {
    server: Netns,
    client: Netns,
}

fn pair() -> Pair {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let base = format!("bh-host-{}-{n}", std::process::id());
    let server = Netns::new(format!("{base}-s"));
    let client = Netns::new(format!("{base}-c"));
    // Created inside the namespaces, so parallel tests never clash on interface names.
    run(Command::new("ip").args([
        "-n",
        &server.name,
        "link",
        "add",
        "veth0",
        "type",
        "veth",
        "peer",
        "name",
        "veth1",
        "netns",
        &client.name,
    ]));
    for (ns, dev, ip) in [(&server, "veth0", SERVER_IP), (&client, "veth1", CLIENT_IP)] {
        run(Command::new("ip").args([
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            dev,
        ]));
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", dev, "up"]));
    }
    Pair { server, client }
}

/// A child process killed by pid when dropped.
struct Proc {
    child: Child,
    lines: Option<mpsc::Receiver<String>>,
}

impl Proc {
    /// Starts `cmd` with stdout piped and read line by line on a thread.
    fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines: Some(rx),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&self, within: Duration) -> Option<String> {
        self.lines.as_ref()?.recv_timeout(within).ok()
    }

    fn expect_line(&mut self, want: &str, within: Duration) {
        match self.line(within) {
            Some(l) if l == want => {}
            other => panic!(
                "expected {want:?}, got {other:?}; stderr: {}",
                self.stderr_now()
            ),
        }
    }

    /// Waits for exit and returns the remaining stdout lines.
    fn finish(mut self, within: Duration) -> (Vec<String>, String) {
        let rx = self.lines.take().unwrap();
        let mut lines = Vec::new();
        let deadline = std::time::Instant::now() + within;
        while let Ok(l) =
            rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        {
            lines.push(l);
        }
        let stderr = self.stderr_now();
        (lines, stderr)
    }

    fn stderr_now(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// python3 listening on tcp/8080 in `ns`; prints "listening" once bound. With `serve`, it
/// accepts one connection, reads it to the end, answers "ok" and prints the byte count.
fn listener(ns: &Netns, serve: bool) -> Proc {
    let script = format!(
        r#"
import socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen()
print("listening", flush=True)
if {serve}:
    c, _ = s.accept()
    n = 0
    while True:
        d = c.recv(65536)
        if not d:
            break
        n += len(d)
    c.sendall(b"ok")
    c.close()
    print(n, flush=True)
time.sleep(60)
"#,
        serve = if serve { "True" } else { "False" }
    );
    let mut p = Proc::spawn(ns.cmd("python3").args(["-c", &script]));
    p.expect_line("listening", Duration::from_secs(10));
    p
}

#[test]
fn host_info_in_a_namespace_lists_its_veth_and_the_python_listener() {
    let pair = pair();
    let server = listener(&pair.server, false);
    let out = run(pair.server.cmd(PROBE).arg("info"));
    let info: HostInfo = serde_json::from_slice(&out.stdout).expect("host-probe prints HostInfo");

    assert!(!info.hostname.is_empty());
    assert!(!info.kernel.is_empty());
    assert!(!info.os_name.is_empty(), "os-release ID");
    let names: Vec<&str> = info.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        ["lo", "veth0"],
        "only the namespace's own interfaces"
    );
    let veth = &info.interfaces[1];
    assert!(veth.mac.as_ref().is_some_and(|m| m.len() == 17), "{veth:?}");
    assert!(
        veth.addresses
            .contains(&format!("{SERVER_IP}/24").parse().unwrap()),
        "{veth:?}"
    );
    assert_eq!(
        info.workload_addresses().first(),
        Some(&SERVER_IP.parse::<IpAddr>().unwrap())
    );

    let l = info
        .listening
        .iter()
        .find(|l| l.protocol == "tcp" && l.port == 8080)
        .unwrap_or_else(|| panic!("no tcp/8080 in {:?}", info.listening));
    assert_eq!(l.address, "0.0.0.0".parse::<IpAddr>().unwrap());
    let p = l.process.as_ref().expect("the listener's process");
    assert_eq!(p.name, "python3");
    assert_eq!(p.pid, server.pid(), "ip netns exec execs python3 in place");
    assert!(
        p.exe.as_deref().is_some_and(|e| e.contains("python")),
        "{p:?}"
    );
    assert_eq!((p.uid, p.user.as_deref()), (Some(0), Some("root")));
    assert!(
        p.cgroup.as_deref().is_some_and(|c| c.starts_with('/')),
        "{p:?}"
    );
    drop(server);
}

#[test]
fn nflog_reader_gets_the_logged_connection_with_prefix_addresses_and_ports() {
    const PREFIX: &str = "bulkhead would-default-deny ";
    let pair = pair();
    pair.server.nft(&format!(
        r#"table inet bhtest {{
  chain input {{
    type filter hook input priority 0;
    tcp dport 8080 log group 7 prefix "{PREFIX}"
    udp dport 5353 log group 7 prefix "{PREFIX}"
  }}
}}
"#
    ));
    let mut probe = Proc::spawn(pair.server.cmd(PROBE).args(["nflog", "7", "2", "30"]));
    probe.expect_line("ready", Duration::from_secs(10));

    // Nothing listens on 8080: the SYN is logged (the rule only logs), then refused.
    run(pair.client.cmd("python3").args([
        "-c",
        &format!(
            r#"
import socket
c = socket.socket()
c.settimeout(2)
c.bind(("{CLIENT_IP}", 41000))
try:
    c.connect(("{SERVER_IP}", 8080))
except OSError:
    pass
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("{CLIENT_IP}", 41001))
u.sendto(b"x", ("{SERVER_IP}", 5353))
"#
        ),
    ]));
    let (lines, stderr) = probe.finish(Duration::from_secs(30));
    let packets: Vec<LoggedPacket> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(packets.len(), 2, "{packets:?}; probe stderr: {stderr}");
    let tcp = packets
        .iter()
        .find(|p| p.protocol == 6)
        .expect("the tcp syn");
    assert_eq!(tcp.prefix, PREFIX);
    assert_eq!(tcp.src, CLIENT_IP.parse::<IpAddr>().unwrap());
    assert_eq!(tcp.dst, SERVER_IP.parse::<IpAddr>().unwrap());
    assert_eq!((tcp.src_port, tcp.dst_port), (41000, 8080));
    let meaning = tcp.meaning().expect("the renderer's prefix reads back");
    assert!(!meaning.dropped && meaning.rule.is_none());
    let udp = packets
        .iter()
        .find(|p| p.protocol == 17)
        .expect("the udp datagram");
    assert_eq!((udp.src_port, udp.dst_port), (41001, 5353));
    assert!(stderr.contains("malformed: 0"), "{stderr}");
}

#[test]
fn conntrack_reports_a_finished_connection_with_counters_direction_and_process() {
    const PAYLOAD: u64 = 100_000;
    let pair = pair();
    for ns in [&pair.server, &pair.client] {
        // Conntrack only tracks a namespace some ruleset uses it in (the agent's table
        // does); TIME_WAIT shortened so the entry expires a second after the close.
        ns.nft(
            "table inet bhtest {
  chain input { type filter hook input priority 0; ct state new counter; }
  chain output { type filter hook output priority 0; ct state new counter; }
}
",
        );
        ns.sh("echo 1 > /proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait");
    }
    let server = listener(&pair.server, true);
    // One flow each; the table is walked every 500 ms so the expired entry is evicted.
    let mut inbound = Proc::spawn(pair.server.cmd(PROBE).args(["conntrack", "1", "60", "500"]));
    let mut outbound = Proc::spawn(pair.client.cmd(PROBE).args(["conntrack", "1", "60", "500"]));
    inbound.expect_line("ready", Duration::from_secs(10));
    outbound.expect_line("ready", Duration::from_secs(10));
    for ns in [&pair.server, &pair.client] {
        let acct = run(ns
            .cmd("cat")
            .arg("/proc/sys/net/netfilter/nf_conntrack_acct"));
        assert_eq!(
            String::from_utf8_lossy(&acct.stdout).trim(),
            "1",
            "the monitor turns accounting on"
        );
    }

    let mut client = Proc::spawn(pair.client.cmd("python3").args([
        "-c",
        &format!(
            r#"
import socket, time
c = socket.create_connection(("{SERVER_IP}", 8080), source_address=("{CLIENT_IP}", 41002))
# The monitor looks the client's socket up when the NEW event arrives, a millisecond or
# so after the SYN; a connection over by then has left only a TIME_WAIT remnant without
# an owner (see the crate README). A connection that lives a moment is attributable.
time.sleep(0.3)
c.sendall(b"x" * {PAYLOAD})
c.shutdown(socket.SHUT_WR)
while c.recv(100):
    pass
print("done", flush=True)
c.close()
"#
        ),
    ]));
    let client_pid = client.pid();
    client.expect_line("done", Duration::from_secs(10));
    assert_eq!(
        server.line(Duration::from_secs(5)).as_deref(),
        Some("100000")
    );

    for (probe, direction, pid) in [
        (inbound, HostDirection::Inbound, server.pid()),
        (outbound, HostDirection::Outbound, client_pid),
    ] {
        let (lines, stderr) = probe.finish(Duration::from_secs(60));
        let flows: Vec<HostFlow> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect();
        assert_eq!(
            flows.len(),
            1,
            "{direction:?}: {flows:?}; probe stderr: {stderr}"
        );
        let f = &flows[0];
        assert_eq!(f.direction, direction, "{f:?}");
        assert_eq!(f.protocol, 6);
        assert_eq!(
            (f.src, f.src_port),
            (CLIENT_IP.parse::<IpAddr>().unwrap(), 41002)
        );
        assert_eq!(
            (f.dst, f.dst_port),
            (SERVER_IP.parse::<IpAddr>().unwrap(), 8080)
        );
        assert!(f.bytes >= PAYLOAD, "{f:?}");
        assert!(f.packets > 2 && f.reverse_packets > 2, "{f:?}");
        assert!(f.reverse_bytes >= 2, "the answer: {f:?}");
        assert!(f.start_ms > 0 && f.start_ms <= f.end_ms, "{f:?}");
        let p = f
            .process
            .as_ref()
            .unwrap_or_else(|| panic!("{direction:?} flow without process: {f:?}; {stderr}"));
        assert_eq!((p.name.as_str(), p.pid), ("python3", pid), "{direction:?}");
    }
    drop(client);
}

#[test]
fn conntrack_dump_lists_an_open_connection_with_counters_so_far_and_its_process() {
    let pair = pair();
    pair.server.nft(
        "table inet bhtest {
  chain input { type filter hook input priority 0; ct state new counter; }
}
",
    );
    // Accounting must be on before the connection opens (the monitor is started after).
    pair.server
        .sh("echo 1 > /proc/sys/net/netfilter/nf_conntrack_acct");
    let server = listener(&pair.server, true);
    let mut client = Proc::spawn(pair.client.cmd("python3").args([
        "-c",
        &format!(
            r#"
import socket, time
c = socket.create_connection(("{SERVER_IP}", 8080), source_address=("{CLIENT_IP}", 41003))
c.sendall(b"y" * 5000)
print("sent", flush=True)
time.sleep(30)
"#
        ),
    ]));
    client.expect_line("sent", Duration::from_secs(10));
    // The bytes are acknowledged once the server has read them; give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    let out = run(pair.server.cmd(PROBE).arg("conntrack-dump"));
    let flows: Vec<HostFlow> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let f = flows
        .iter()
        .find(|f| f.dst_port == 8080 && f.src_port == 41003)
        .unwrap_or_else(|| panic!("the open connection is not in {flows:?}"));
    assert_eq!(f.direction, HostDirection::Inbound);
    assert!(f.bytes >= 5000, "{f:?}");
    assert!(f.start_ms <= f.end_ms, "{f:?}");
    let p = f.process.as_ref().expect("the listener's process");
    assert_eq!((p.name.as_str(), p.pid), ("python3", server.pid()));
    drop(client);
}

/// Quarantine's conntrack flush: an open connection's entry is gone afterwards, and
/// nothing else about the namespace changed (the connection itself is the table's to cut).
#[test]
fn conntrack_flush_forgets_open_connections() {
    let pair = pair();
    pair.server.nft(
        "table inet bhtest {
  chain input { type filter hook input priority 0; ct state new counter; }
}
",
    );
    let _server = listener(&pair.server, true);
    let mut client = Proc::spawn(pair.client.cmd("python3").args([
        "-c",
        &format!(
            r#"
import socket, time
c = socket.create_connection(("{SERVER_IP}", 8080), source_address=("{CLIENT_IP}", 41004))
print("sent", flush=True)
time.sleep(30)
"#
        ),
    ]));
    client.expect_line("sent", Duration::from_secs(10));
    let open = |pair: &Pair| -> bool {
        let out = run(pair.server.cmd(PROBE).arg("conntrack-dump"));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<HostFlow>(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .any(|f| f.dst_port == 8080 && f.src_port == 41004)
    };
    assert!(open(&pair), "the connection is tracked before the flush");
    run(pair.server.cmd(PROBE).arg("conntrack-flush"));
    assert!(!open(&pair), "and forgotten after it");
    drop(client);
}

#[test]
fn the_nftables_generation_moves_with_every_transaction_and_only_then() {
    let pair = pair();
    let generation = || -> u64 {
        let out = run(pair.server.cmd(PROBE).arg("nft-generation"));
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("host-probe prints the generation")
    };
    let before = generation();
    assert_eq!(generation(), before, "reading it changes nothing");
    pair.server.nft(
        "table inet gen_test {\n chain c {\n type filter hook input priority 0;\n tcp dport 9 accept\n }\n}\n",
    );
    let after = generation();
    assert!(after > before, "{before} → {after}");
    // Another namespace's transactions are not this one's.
    pair.client.nft("table inet other { }");
    assert_eq!(generation(), after);
    // A change is a committed transaction; one that changes nothing commits nothing.
    pair.server.nft("flush table inet gen_test");
    let flushed = generation();
    assert!(flushed > after, "{after} → {flushed}");
    pair.server.nft("flush table inet gen_test");
    assert_eq!(
        generation(),
        flushed,
        "flushing an empty table changes nothing"
    );
}
