//! End to end, against the real kernel: rendered policy applied inside a network
//! namespace, probed with real connections from a second namespace over a veth pair.
//!
//! Needs root, `ip` (iproute2), `nft` (nftables) and `python3` (listeners and probes);
//! `scripts/setup` installs them. A missing tool fails the test: it is never skipped.
//! Traffic stays between the two namespaces the test creates, which have no default
//! route. Namespaces and processes are removed by Drop guards, whatever happens.

use std::io::{BufRead as _, BufReader};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use bulkhead_model::Inventory;
use bulkhead_nft::{Nft, RenderOptions, render};
use bulkhead_policy::Policy;
use bulkhead_policy::host::host_policy;
use bulkhead_testkit::command::ok as run;
use bulkhead_testkit::sessions::{self, Session};

/// A network namespace that is deleted when dropped.
#[derive(Debug)]
struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
        run(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        run(&["ip", "-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Best effort: a panic here would hide the test's own failure. Deleting the
        // namespace also deletes its end of the veth pair, and with it the pair.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Two namespaces joined by a veth pair: A (the workload, 10.200.N.1) and B (its peer,
/// 10.200.N.2), on one /24 and with no other route.
#[derive(Debug)]
struct Lab {
    // Field order matters: processes are killed in Drop::drop before the namespaces
    // (dropped after it, as fields) are deleted.
    children: Vec<Child>,
    a: Netns,
    b: Netns,
    a_ip: Ipv4Addr,
    b_ip: Ipv4Addr,
}

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

impl Lab {
    fn new() -> Lab {
        let k = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let n = (k % 250 + 1) as u8;
        let a = Netns::new(format!("bh-t-{pid}-{k}a"));
        let b = Netns::new(format!("bh-t-{pid}-{k}b"));
        let lab = Lab {
            children: Vec::new(),
            a_ip: Ipv4Addr::new(10, 200, n, 1),
            b_ip: Ipv4Addr::new(10, 200, n, 2),
            a,
            b,
        };
        // Created directly inside the namespaces, so no interface ever appears on the
        // host and names cannot collide with anything there.
        run(&[
            "ip", "link", "add", "veth0", "netns", &lab.a.0, "type", "veth", "peer", "name",
            "veth0", "netns", &lab.b.0,
        ]);
        for (ns, ip) in [(&lab.a.0, lab.a_ip), (&lab.b.0, lab.b_ip)] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "veth0",
            ]);
            run(&["ip", "-n", ns, "link", "set", "veth0", "up"]);
        }
        lab
    }

    /// Starts a TCP listener in a namespace that accepts and closes every connection;
    /// returns once every port is bound (the listener says so on stdout).
    fn listen(&mut self, ns: &str, ip: Ipv4Addr, ports: &[u16]) {
        const SCRIPT: &str = bulkhead_testkit::sessions::ACCEPT_AND_CLOSE;
        let ip = ip.to_string();
        let mut args = vec!["netns", "exec", ns, "python3", "-c", SCRIPT, &ip];
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        args.extend(ports.iter().map(String::as_str));
        // `ip netns exec` execs python in place, so this pid is the listener's.
        let mut child = Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start a listener with ip/python3: {e}"));
        let stdout = child.stdout.take().expect("piped");
        self.children.push(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "listener in {ns} did not start");
    }

    /// One TCP connection attempt from a namespace. A dropped SYN shows as a timeout;
    /// the timeout is only how long we wait for that, not something the test measures.
    fn connect(&self, from: &str, to: Ipv4Addr, port: u16) -> String {
        const SCRIPT: &str = r#"
import socket, sys
s = socket.socket()
s.settimeout(2)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("connected")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
"#;
        run(&[
            "ip",
            "netns",
            "exec",
            from,
            "python3",
            "-c",
            SCRIPT,
            &to.to_string(),
            &port.to_string(),
        ])
        .trim()
        .to_string()
    }

    /// An echo server on `ip:port` in a namespace.
    fn echo(&mut self, ns: &str, ip: Ipv4Addr, port: u16) {
        let stdout = self.spawn(
            ns,
            &[
                "python3",
                "-c",
                sessions::ECHO_SERVER,
                &ip.to_string(),
                &port.to_string(),
            ],
        );
        sessions::wait_ready(stdout);
    }

    /// A long-lived connection that pings its echo server.
    fn session(&mut self, from: &str, to: Ipv4Addr, port: u16) -> Session {
        let stdout = self.spawn(
            from,
            &[
                "python3",
                "-c",
                sessions::SESSION,
                &to.to_string(),
                &port.to_string(),
            ],
        );
        Session::opened(stdout)
    }

    fn spawn(&mut self, ns: &str, args: &[&str]) -> std::process::ChildStdout {
        let mut full = vec!["netns", "exec", ns];
        full.extend_from_slice(args);
        let mut child = Command::new("ip")
            .args(&full)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {args:?} with ip: {e}"));
        let stdout = child.stdout.take().expect("piped");
        self.children.push(child);
        stdout
    }

    /// Renders the lab policy for the workload in A, in the given mode.
    fn render(&self, mode: &str) -> String {
        let inventory = format!(
            "name,kind,managed,addresses,labels,mode\n\
             web,vm,true,{},role=web,{mode}\n\
             client,vm,false,{},role=client,\n",
            self.a_ip, self.b_ip
        );
        let inv: Inventory = bulkhead_inventory::load(&[("lab.csv", inventory)], None).unwrap();
        let policy = Policy::from_sources(&[("lab.yaml", LAB_POLICY)]).unwrap();
        render(
            &host_policy(&policy, &inv, "web").unwrap(),
            &RenderOptions::default(),
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The client may reach the web server on 8080 and explicitly not on 9090; 7070 is
/// left to the default; 22 is the failsafe port.
const LAB_POLICY: &str = "\
bulkhead: v1
kind: tier
name: application
order: 10
---
bulkhead: v1
kind: ruleset
name: lab
tier: application
rules:
  - id: client-to-web
    action: allow
    from: [role=client]
    to: [role=web]
    services: [tcp/8080]
  - id: no-admin-port
    action: deny
    from: [role=client]
    to: [role=web]
    services: [tcp/9090]
";

const ALLOWED: u16 = 8080;
const DENIED: u16 = 9090;
const UNLISTED: u16 = 7070;
const FAILSAFE: u16 = 22;

fn start(mode: &str) -> Lab {
    let mut lab = Lab::new();
    let (a, b) = (lab.a.0.clone(), lab.b.0.clone());
    lab.listen(&a, lab.a_ip, &[ALLOWED, DENIED, UNLISTED, FAILSAFE]);
    lab.listen(&b, lab.b_ip, &[ALLOWED]);
    // Without policy every port is open: the probes themselves work.
    for port in [ALLOWED, DENIED, UNLISTED, FAILSAFE] {
        assert_eq!(lab.connect(&b, lab.a_ip, port), "connected", "port {port}");
    }
    let text = lab.render(mode);
    Nft::in_netns(&a).apply(&text).unwrap();
    lab
}

#[test]
fn enforced_policy_drops_what_it_does_not_allow() {
    let lab = start("enforced");
    let (a, b) = (&lab.a.0, &lab.b.0);
    assert_eq!(lab.connect(b, lab.a_ip, ALLOWED), "connected");
    assert_eq!(
        lab.connect(b, lab.a_ip, DENIED),
        "timeout",
        "explicit deny drops"
    );
    assert_eq!(
        lab.connect(b, lab.a_ip, UNLISTED),
        "timeout",
        "default deny drops"
    );
    assert_eq!(lab.connect(b, lab.a_ip, FAILSAFE), "connected", "failsafe");
    // Outbound: no rule lets web open connections, so its own SYNs are dropped.
    assert_eq!(
        lab.connect(a, lab.b_ip, ALLOWED),
        "timeout",
        "outbound default"
    );
}

#[test]
fn monitor_policy_drops_nothing() {
    let lab = start("monitor");
    let (a, b) = (&lab.a.0, &lab.b.0);
    for port in [ALLOWED, DENIED, UNLISTED, FAILSAFE] {
        assert_eq!(lab.connect(b, lab.a_ip, port), "connected", "port {port}");
    }
    assert_eq!(lab.connect(a, lab.b_ip, ALLOWED), "connected", "outbound");
}

#[test]
fn idle_policy_removes_the_table() {
    let lab = start("enforced");
    let nft = Nft::in_netns(&lab.a.0);
    assert!(!nft.snapshot().unwrap().is_absent());
    nft.apply(&lab.render("idle")).unwrap();
    assert!(nft.snapshot().unwrap().is_absent());
    assert_eq!(lab.connect(&lab.b.0, lab.a_ip, UNLISTED), "connected");
}

#[test]
fn a_failing_batch_keeps_the_previous_table() {
    let lab = start("enforced");
    let nft = Nft::in_netns(&lab.a.0);
    let before = nft.read_back().unwrap();
    let snapshot = nft.snapshot().unwrap();

    // Refused by nft's parser: nothing reaches the kernel.
    let syntax = format!("{}\nthis is not nft\n", lab.render("monitor"));
    assert!(nft.apply(&syntax).is_err());
    assert_eq!(nft.read_back().unwrap(), before);

    // Refused by the kernel halfway through the transaction, after the delete and the
    // new definition: the kernel must roll all of it back.
    let kernel = format!(
        "{}delete table inet bh_absent_{}\n",
        lab.render("monitor"),
        std::process::id()
    );
    let err = nft.apply(&kernel).unwrap_err();
    assert!(err.to_string().contains("No such file"), "{err}");
    assert_eq!(nft.read_back().unwrap(), before);
    assert_eq!(nft.check_drift(&snapshot).unwrap(), None);
    // And the kernel still enforces the old policy.
    assert_eq!(lab.connect(&lab.b.0, lab.a_ip, DENIED), "timeout");
}

#[test]
fn drift_is_detected_and_reapplying_heals_it() {
    let lab = start("enforced");
    let nft = Nft::in_netns(&lab.a.0);
    let expected = nft.snapshot().unwrap();
    assert_eq!(nft.check_drift(&expected).unwrap(), None);

    // Replacing the table with the same text changes every handle but nothing else.
    nft.apply(&lab.render("enforced")).unwrap();
    assert_eq!(nft.check_drift(&expected).unwrap(), None);

    // Someone opens a port by hand.
    nft.apply("insert rule inet bulkhead input tcp dport 7070 accept\n")
        .unwrap();
    assert_eq!(lab.connect(&lab.b.0, lab.a_ip, UNLISTED), "connected");
    let drift = nft.check_drift(&expected).unwrap().expect("drift");
    assert!(drift.missing.is_empty(), "{drift:?}");
    assert_eq!(drift.unexpected.len(), 1, "{drift:?}");
    assert!(drift.unexpected[0].contains("7070"), "{drift:?}");

    nft.apply(&lab.render("enforced")).unwrap();
    assert_eq!(nft.check_drift(&expected).unwrap(), None);
    assert_eq!(lab.connect(&lab.b.0, lab.a_ip, UNLISTED), "timeout");
}

/// Every golden file is a transaction the kernel accepts, applied one after the other
/// in one namespace: each replaces the previous table even where set definitions change.
#[test]
fn golden_files_load_into_the_kernel() {
    let lab = Lab::new();
    let nft = Nft::in_netns(&lab.a.0);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "nft"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 6,
        "golden files missing in {}",
        dir.display()
    );
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        nft.apply(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let idle = text.contains("mode idle");
        assert_eq!(
            nft.snapshot().unwrap().is_absent(),
            idle,
            "{}",
            path.display()
        );
        if !idle {
            let listing = nft.read_back().unwrap();
            assert!(listing.contains("comment \"default\""), "{listing}");
        }
    }
}

/// Quarantine cuts connections that were open before it, both ways (an inbound session
/// and an outbound, command-and-control style link), while a session on the failsafe
/// port keeps working: the quarantine chains have no `ct state established` accept.
#[test]
fn quarantine_cuts_established_connections_but_not_the_failsafe_port() {
    let mut lab = Lab::new();
    let (a, b) = (lab.a.0.clone(), lab.b.0.clone());
    lab.echo(&a, lab.a_ip, ALLOWED);
    lab.echo(&a, lab.a_ip, FAILSAFE);
    lab.echo(&b, lab.b_ip, ALLOWED);
    let nft = Nft::in_netns(&a);
    nft.apply(&lab.render("monitor")).unwrap();
    let mut inbound = lab.session(&b, lab.a_ip, ALLOWED);
    let mut outbound = lab.session(&a, lab.b_ip, ALLOWED);
    let mut failsafe = lab.session(&b, lab.a_ip, FAILSAFE);
    for s in [&mut inbound, &mut outbound, &mut failsafe] {
        assert_eq!(s.next_line(), "alive");
    }

    let inventory = format!(
        "name,kind,managed,addresses,labels,mode\n\
         web,vm,true,{},role=web,monitor\n\
         client,vm,false,{},role=client,\n",
        lab.a_ip, lab.b_ip
    );
    let inv: Inventory = bulkhead_inventory::load(&[("lab.csv", inventory)], None).unwrap();
    let policy = Policy::from_sources(&[("lab.yaml", LAB_POLICY)]).unwrap();
    let mut hp = host_policy(&policy, &inv, "web").unwrap();
    hp.quarantined = true;
    nft.apply(&render(&hp, &RenderOptions::default())).unwrap();

    // Each ping waits at most a second for its answer: ten lines are far more than
    // the pings already in flight when the table changed.
    for (name, s) in [("inbound", &mut inbound), ("outbound", &mut outbound)] {
        s.skip_printed();
        let lines = s.until_end(10);
        assert_eq!(
            lines.last().map(String::as_str),
            Some("cut"),
            "{name}: {lines:?}"
        );
    }
    failsafe.skip_printed();
    let lines = failsafe.until_end(5);
    assert!(lines.iter().all(|l| l == "alive"), "failsafe: {lines:?}");
    assert_eq!(
        lab.connect(&b, lab.a_ip, ALLOWED),
        "timeout",
        "new connections too"
    );
    assert_eq!(lab.connect(&b, lab.a_ip, FAILSAFE), "connected");
}
