//! A rule whose provider is a process, enforced by the kernel: when the process runs as
//! a systemd service, the agent matches its cgroup (`socket cgroupv2`), so only that
//! service's sockets are reachable through the rule. Real nftables in two namespaces
//! this test creates (10.79.0.1 ↔ 10.79.0.2 over a veth pair, no route out), a cgroup
//! named like a service under the host's cgroup v2 tree, and python3 listeners; all are
//! removed by Drop guards, by name or pid.

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use bulkhead_api::WirePolicy;
use bulkhead_model::{Action, EnforcementMode, ServicePort};
use bulkhead_policy::host::{HostPolicy, HostRule, Peers};

const PROBE: &str = env!("CARGO_BIN_EXE_enforce-probe");
const SERVER_IP: &str = "10.79.0.1";
const CLIENT_IP: &str = "10.79.0.2";

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (scripts/setup installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "delete", ns]).output();
        }
    }
}

/// A process killed by pid when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A cgroup directory, removed (once its processes are gone) when dropped.
struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// The cgroup v2 mount point, from /proc/self/mountinfo.
fn cgroup2_mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| PathBuf::from(left.split_whitespace().nth(4).unwrap()))
        })
        .expect("cgroup v2 is mounted")
}

/// A python3 listener in `ns`, started inside `cgroup` when given: a socket belongs to
/// the cgroup its process was in when it created the socket, as under systemd.
fn listener(ns: &str, port: u16, cgroup: Option<&Cgroup>) -> Proc {
    let procs = cgroup.map(|c| c.0.join("cgroup.procs"));
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"[ -z "$0" ] || echo $$ > "$0"; exec "$@""#)
        .arg(procs.as_deref().unwrap_or(std::path::Path::new("")))
        .args(["ip", "netns", "exec", ns, "python3", "-c"])
        .arg(
            "import socket, sys\n\
             s = socket.socket()\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind((sys.argv[1], int(sys.argv[2])))\n\
             s.listen(16)\n\
             print('ready', flush=True)\n\
             while True:\n    c, _ = s.accept(); c.sendall(b'x'); c.close()\n",
        )
        .args([SERVER_IP, &port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    Proc(child)
}

fn connect(ns: &str, port: u16) -> String {
    let out = run(Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c"])
        .arg(
            "import socket, sys\n\
             s = socket.socket(); s.settimeout(2)\n\
             try:\n    s.connect((sys.argv[1], int(sys.argv[2]))); s.recv(1); print('connected')\n\
             except socket.timeout:\n    print('timeout')\n\
             except ConnectionRefusedError:\n    print('refused')\n",
        )
        .args([SERVER_IP, &port.to_string()]));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn an_allow_for_a_process_reaches_only_that_service() {
    let base = format!("bh-agent-{}", std::process::id());
    let (server, client) = (format!("{base}-s"), format!("{base}-c"));
    let _ns = Namespaces(vec![server.clone(), client.clone()]);
    for ns in [&server, &client] {
        run(Command::new("ip").args(["netns", "add", ns]));
        run(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]));
    }
    run(Command::new("ip").args([
        "-n", &server, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns",
        &client,
    ]));
    for (ns, dev, ip) in [(&server, "veth0", SERVER_IP), (&client, "veth1", CLIENT_IP)] {
        run(Command::new("ip").args(["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev]));
        run(Command::new("ip").args(["-n", ns, "link", "set", dev, "up"]));
    }

    // Two python3 listeners: one runs as a service (its own cgroup, named like a
    // systemd unit), the other does not.
    let unit = format!("bh-test-{}.service", std::process::id());
    let cgroup = Cgroup(cgroup2_mount().join(&unit));
    std::fs::create_dir(&cgroup.0).expect("creating a cgroup (needs root)");
    let in_service = listener(&server, 9000, Some(&cgroup));
    let outside = listener(&server, 9001, None);

    // Enforced: inbound, only "python3" on 9000 and 9001 is allowed.
    let hp = HostPolicy {
        workload: "db".into(),
        mode: EnforcementMode::Enforced,
        addresses: vec![SERVER_IP.parse::<IpAddr>().unwrap()],
        inbound: vec![HostRule {
            tier: "application".into(),
            tier_index: 0,
            rule_id: "to-python".into(),
            action: Action::Allow,
            local: vec![SERVER_IP.parse().unwrap()],
            peers: Peers::Any,
            services: vec![
                (ServicePort::tcp(9000), Some("python3".into())),
                (ServicePort::tcp(9001), Some("python3".into())),
            ],
        }],
        outbound: vec![],
        quarantined: false,
    };
    let policy = WirePolicy::new(&hp, &[ServicePort::tcp(22)], 100, false);
    // `ip netns exec` gives the probe a fresh /sys without the host's cgroup mounts;
    // mounting cgroup v2 there (in the probe's own mount namespace, gone when it exits)
    // shows it the tree a host agent sees, where nft resolves the service's path. The
    // probe applies the policy, then runs the agent's tamper check every 200 ms.
    let mut probe = Proc(
        Command::new("ip")
            .args(["netns", "exec", &server, "sh", "-c"])
            .arg("mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec \"$0\" watch 60")
            .arg(PROBE)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    probe
        .0
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&policy).unwrap().as_bytes())
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = probe.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_line = |prefix: &str| -> String {
        loop {
            let line = lines
                .recv_timeout(std::time::Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("the probe never printed {prefix:?}"));
            if line.starts_with(prefix) {
                return line;
            }
            assert!(!line.starts_with("error"), "{line}");
        }
    };
    wait_line("applied");
    // Listed as the agent sees it (with the cgroup tree, so paths print as paths).
    let table = || {
        let out = run(Command::new("ip")
            .args(["netns", "exec", &server, "sh", "-c"])
            .arg("mount -t cgroup2 cgroup2 /sys/fs/cgroup && nft list table inet bulkhead"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let t = table();
    assert!(
        t.contains("socket cgroupv2 level") && t.contains(&unit),
        "the rule matches the service's cgroup:\n{t}"
    );

    assert_eq!(connect(&client, 9000), "connected", "the service's socket");
    assert_eq!(
        connect(&client, 9001),
        "timeout",
        "the same program outside the service is not the provider the rule names"
    );

    // The service stops (its cgroup goes): the agent renders again without it, and the
    // host keeps its table; nothing reaches the other python3.
    drop(in_service);
    drop(cgroup);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while table().contains("socket cgroupv2") {
        assert!(
            std::time::Instant::now() < deadline,
            "never rendered again:\n{}",
            table()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(table().contains("bulkhead default-deny"), "{}", table());
    assert_eq!(connect(&client, 9001), "timeout");

    // A table changed by hand while the service is gone is still restored (re-rendered
    // for the services there are now) and reported.
    run(Command::new("ip").args([
        "netns", "exec", &server, "nft", "flush", "table", "inet", "bulkhead",
    ]));
    let tamper = wait_line("tamper:");
    assert!(!tamper.contains("FAILED"), "{tamper}");
    assert!(table().contains("bulkhead default-deny"), "{}", table());
    assert_eq!(connect(&client, 9001), "timeout");
    drop(outside);
    drop(probe);
}
