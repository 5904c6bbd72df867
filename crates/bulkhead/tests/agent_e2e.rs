//! The whole enforcement loop, end to end, with the real binaries on a small network of
//! namespaces this test builds (and always removes):
//!
//! ```text
//!   ctl 10.77.0.1 (server)   web .11   app .12   db .13   attacker .66
//!          └──────────────── bridge in namespace `sw` ─────────────┘
//! ```
//!
//! Agents enroll over TLS with pairing keys, enforce `web → app tcp/8080` and
//! `app → db tcp/5432` in monitor mode, then db in enforced mode; real connections and
//! nmap from the attacker check what the kernel does; a hand-flushed table comes back;
//! a stopped server leaves enforcement in place. The namespaces have no route out, and
//! every address used is inside them.
//!
//! Needs root, iproute2, nftables, python3, curl and nmap (`scripts/setup` installs
//! them; a missing one fails the test).

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bulkhead_testkit::command::{curl_in_netns, ok, run};
use bulkhead_testkit::sessions::{self, Session};
use bulkhead_testkit::wait_for;
use serde_json::{Value, json};

const CTL: &str = "10.77.0.1";
const WEB: &str = "10.77.0.11";
const APP: &str = "10.77.0.12";
const DB: &str = "10.77.0.13";
const ATTACKER: &str = "10.77.0.66";

/// The lab: namespaces, processes, and a data directory; torn down on drop, whatever
/// happened.
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
    dir: tempfile::TempDir,
    token: String,
}

impl Lab {
    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn new() -> Lab {
        let prefix = format!("bhe2e{}", std::process::id());
        let mut lab = Lab {
            prefix,
            namespaces: Vec::new(),
            children: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
            token: String::new(),
        };
        let sw = lab.ns("sw");
        ok(&["ip", "netns", "add", &sw]);
        lab.namespaces.push(sw.clone());
        ok(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ok(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        for (i, (host, addr)) in [
            ("ctl", CTL),
            ("web", WEB),
            ("app", APP),
            ("db", DB),
            ("attacker", ATTACKER),
        ]
        .into_iter()
        .enumerate()
        {
            let ns = lab.ns(host);
            ok(&["ip", "netns", "add", &ns]);
            lab.namespaces.push(ns.clone());
            ok(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            let port = format!("p{i}");
            ok(&[
                "ip", "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &sw,
            ]);
            ok(&["ip", "-n", &sw, "link", "set", &port, "master", "br0"]);
            ok(&["ip", "-n", &sw, "link", "set", &port, "up"]);
            ok(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ok(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        }
        lab
    }

    /// Starts a long-running process inside a host's namespace. `ip netns exec` execs
    /// the command in place, so the child's pid is the process's own.
    fn spawn(&mut self, name: &str, host: &str, args: &[&str]) -> std::process::ChildStdout {
        let ns = self.ns(host);
        let mut full = vec!["netns", "exec", ns.as_str()];
        full.extend_from_slice(args);
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let mut child = Command::new("ip")
            .args(&full)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .env("BULKHEAD_LOG", "info")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {args:?}: {e}"));
        let stdout = child.stdout.take().unwrap();
        self.children.push((name.to_string(), child));
        stdout
    }

    fn stop(&mut self, name: &str) {
        if let Some(i) = self.children.iter().position(|(n, _)| n == name) {
            let (_, mut c) = self.children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    fn start_server(&mut self) {
        let data = self.dir.path().join("server");
        let data = data.to_str().unwrap().to_string();
        let stdout = self.spawn(
            "server",
            "ctl",
            &[
                env!("CARGO_BIN_EXE_bulkhead"),
                "server",
                "--data",
                &data,
                "--listen",
                &format!("{CTL}:8080"),
                "--agent-listen",
                &format!("{CTL}:8443"),
                "--agent-offline-after",
                "3",
            ],
        );
        if self.token.is_empty() {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).unwrap();
            self.token = line
                .split_whitespace()
                .last()
                .filter(|t| t.starts_with("bh_"))
                .unwrap_or_else(|| panic!("no admin token in {line:?}"))
                .to_string();
        }
        wait_for("the server to answer", Duration::from_secs(30), || {
            self.try_api("GET", "/healthz", None).map(|_| ())
        });
    }

    /// One API call from inside the control namespace (the server is not reachable
    /// from the test's own namespace, by design).
    fn try_api(&self, method: &str, path: &str, body: Option<&Value>) -> Option<Value> {
        let url = format!("http://{CTL}:8080{path}");
        let body = body.map(Value::to_string);
        let text = curl_in_netns(&self.ns("ctl"), method, &url, &self.token, body.as_deref())?;
        Some(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn api(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.try_api(method, path, body).unwrap_or_else(|| {
            panic!(
                "{method} {path} failed; server log:\n{}",
                self.log("server")
            )
        })
    }

    fn listen(&mut self, host: &str, addr: &str, ports: &[u16]) {
        const SCRIPT: &str = r#"
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in sys.argv[2:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(port)))
    s.listen(64)
    sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        conn.sendall(b"x" * 1000)
        conn.close()
"#;
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let mut args = vec!["python3", "-c", SCRIPT, addr];
        args.extend(ports.iter().map(String::as_str));
        let stdout = self.spawn(&format!("listener-{host}"), host, &args);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "listener in {host} did not start");
    }

    /// One TCP connection attempt: "connected", "timeout" (dropped) or "refused".
    fn connect(&self, from: &str, to: &str, port: u16) -> String {
        const SCRIPT: &str = r#"
import socket, sys
s = socket.socket()
s.settimeout(2)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    s.recv(2000)
    print("connected")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
"#;
        let ns = self.ns(from);
        ok(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "python3",
            "-c",
            SCRIPT,
            to,
            &port.to_string(),
        ])
        .trim()
        .to_string()
    }

    /// An echo server in a host's namespace.
    fn echo(&mut self, host: &str, addr: &str, port: u16) {
        let port = port.to_string();
        let stdout = self.spawn(
            &format!("echo-{host}-{port}"),
            host,
            &["python3", "-c", sessions::ECHO_SERVER, addr, &port],
        );
        sessions::wait_ready(stdout);
    }

    /// A long-lived connection from a host that pings an echo server.
    fn session(&mut self, from: &str, to: &str, port: u16) -> Session {
        let port = port.to_string();
        let stdout = self.spawn(
            &format!("session-{from}-{to}-{port}"),
            from,
            &["python3", "-c", sessions::SESSION, to, &port],
        );
        Session::opened(stdout)
    }

    fn start_agent(&mut self, host: &str, pairing_key: Option<&str>) {
        let state = self.dir.path().join(format!("agent-{host}"));
        let state = state.to_str().unwrap().to_string();
        let server = format!("https://{CTL}:8443");
        let mut args = vec![
            env!("CARGO_BIN_EXE_bulkhead"),
            "agent",
            "--server",
            &server,
            "--state-dir",
            &state,
            "--name",
            host,
            "--heartbeat-secs",
            "1",
            "--tamper-check-secs",
            "1",
        ];
        if let Some(k) = pairing_key {
            args.extend(["--pairing-key", k]);
        }
        let _ = self.spawn(&format!("agent-{host}"), host, &args);
    }

    fn agents(&self) -> Vec<Value> {
        self.api("GET", "/api/v1/agents", None)["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until every named agent reports the policy the server wants it to run.
    fn wait_in_sync(&self, hosts: &[&str]) {
        wait_for(
            &format!("agents {hosts:?} to apply their policy"),
            Duration::from_secs(40),
            || {
                let agents = self.agents();
                hosts
                    .iter()
                    .all(|h| {
                        agents
                            .iter()
                            .any(|a| a["workload"] == json!(h) && a["in_sync"] == json!(true))
                    })
                    .then_some(())
            },
        );
    }

    /// Connections `src` → `dst`:`port` in the flow store that the server found allowed,
    /// as reported by agents (dropped attempts are stored as blocked and not counted).
    fn allowed_connections(&self, src: &str, dst: &str, port: u16) -> u64 {
        let flows = self.api(
            "GET",
            &format!("/api/v1/flows?address={dst}&limit=10000"),
            None,
        );
        flows["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| {
                f["src"] == json!(src)
                    && f["dst"] == json!(dst)
                    && f["port"] == json!(port)
                    && f["provisioned"]["verdict"] == json!("allowed")
                    && f["reporter"]
                        .as_str()
                        .is_some_and(|r| r.starts_with("agent "))
            })
            .map(|f| f["connections"].as_u64().unwrap_or(0))
            .sum()
    }

    fn alerts(&self) -> Vec<Value> {
        self.api("GET", "/api/v1/alerts?limit=1000", None)["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn table(&self, host: &str) -> String {
        let ns = self.ns(host);
        let out = run(&[
            "ip", "netns", "exec", &ns, "nft", "list", "table", "inet", "bulkhead",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn nmap_open(&self, target: &str, ports: &str) -> Vec<u16> {
        let ns = self.ns("attacker");
        let xml = ok(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "nmap",
            "-sS",
            "-Pn",
            "-n",
            "-T4",
            "--max-retries",
            "1",
            "--host-timeout",
            "60s",
            "-p",
            ports,
            "-oX",
            "-",
            target,
        ]);
        // <port protocol="tcp" portid="22"><state state="open" …
        let mut open = Vec::new();
        for chunk in xml.split("<port ").skip(1) {
            let port = chunk
                .split("portid=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .and_then(|p| p.parse().ok());
            if let Some(p) = port
                && chunk.contains("state=\"open\"")
            {
                open.push(p);
            }
        }
        open.sort();
        open
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            // The logs die with the temporary directory: show the failed run's.
            for (name, _) in &self.children {
                let log = self.log(name);
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(60)..];
                eprintln!("----- {name} (last 60 lines) -----\n{}", tail.join("\n"));
            }
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

const POLICY: &str = "\
bulkhead: v1
kind: tier
name: application
order: 10
---
bulkhead: v1
kind: ruleset
name: shop
tier: application
scope:
  app: shop
rules:
  - id: web-to-app
    action: allow
    from: [role=web]
    to: [role=app]
    services: [tcp/8080]
  - id: app-to-db
    action: allow
    from: [role=app]
    to: [role=db]
    services: [tcp/5432]
";

fn pairing_key(lab: &Lab, role: &str) -> String {
    let created = lab.api(
        "POST",
        "/api/v1/pairing-profiles",
        Some(&json!({
            "name": format!("shop-{role}"),
            "labels": { "app": "shop", "role": role },
            "mode": "monitor",
            "max_uses": 1,
        })),
    );
    let key = created["pairing_key"].as_str().unwrap().to_string();
    assert!(
        key.contains(':'),
        "the key carries the CA fingerprint: {key}"
    );
    key
}

fn has_alert(alerts: &[Value], kind: &str, dst_workload: &str, service: &str) -> bool {
    alerts.iter().any(|a| {
        a["kind"] == json!(kind)
            && a["details"]["dst_workload"] == json!(dst_workload)
            && a["details"]["service"] == json!(service)
    })
}

#[test]
fn agents_enforce_policy_end_to_end() {
    let mut lab = Lab::new();
    lab.start_server();
    lab.listen("web", WEB, &[80]);
    lab.listen("app", APP, &[8080]);
    lab.listen("db", DB, &[5432, 22]);

    // Enrollment: one single-use pairing key per role.
    for host in ["web", "app", "db"] {
        let key = pairing_key(&lab, host);
        lab.start_agent(host, Some(&key));
    }
    let reused = lab.try_api(
        "POST",
        "/api/v1/agent/enroll",
        Some(&json!({ "pairing_key": "bh_pair_00", "host": { "hostname": "x", "os_name": "", "os_version": "", "kernel": "" } })),
    );
    assert!(reused.is_none(), "an unknown pairing key is refused");

    lab.api(
        "PUT",
        "/api/v1/draft/files",
        Some(&json!({ "files": [{ "name": "shop.yaml", "content": POLICY }] })),
    );
    lab.api(
        "POST",
        "/api/v1/provision",
        Some(&json!({ "comment": "shop: web → app → db" })),
    );
    lab.wait_in_sync(&["web", "app", "db"]);
    let agents = lab.agents();
    assert_eq!(agents.len(), 3);
    for a in &agents {
        assert_eq!(a["online"], json!(true), "{a}");
    }
    assert!(lab.table("db").contains("app-to-db"), "{}", lab.table("db"));
    // The kernel reports a TCP connection's end (and so the agent its flow) when its
    // conntrack entry expires, 120 s after the close by default; the namespaces' own
    // setting keeps the test short. The owned table's ct rules have loaded conntrack.
    for host in ["web", "app", "db"] {
        ok(&[
            "ip",
            "netns",
            "exec",
            &lab.ns(host),
            "sysctl",
            "-qw",
            "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1",
        ]);
    }

    // Monitor: everything connects; the attacker's connection to the database is
    // reported as potentially blocked, naming the workload and port.
    assert_eq!(lab.connect("web", APP, 8080), "connected");
    assert_eq!(lab.connect("app", DB, 5432), "connected");
    assert_eq!(lab.connect("attacker", DB, 5432), "connected");
    wait_for(
        "a potentially-blocked alert for attacker → db tcp/5432",
        Duration::from_secs(30),
        || has_alert(&lab.alerts(), "potentially_blocked", "db", "tcp/5432").then_some(()),
    );
    let alerts = lab.alerts();
    let a = alerts
        .iter()
        .find(|a| {
            has_alert(
                std::slice::from_ref(a),
                "potentially_blocked",
                "db",
                "tcp/5432",
            )
        })
        .unwrap();
    assert_eq!(a["details"]["src"], json!(ATTACKER), "{a}");
    assert!(
        !has_alert(&alerts, "potentially_blocked", "db", "tcp/22"),
        "failsafe ports are never reported"
    );

    // Enforce the database.
    let mut db = lab.api("GET", "/api/v1/workloads/db", None);
    db["mode"] = json!("enforced");
    let db = lab.api("PUT", "/api/v1/workloads/db", Some(&db));
    assert_eq!(db["mode"], json!("enforced"), "{db}");
    lab.wait_in_sync(&["db"]);
    assert_eq!(lab.connect("app", DB, 5432), "connected");
    assert_eq!(lab.connect("attacker", DB, 5432), "timeout");
    wait_for(
        "a blocked alert for attacker → db tcp/5432",
        Duration::from_secs(30),
        || has_alert(&lab.alerts(), "blocked", "db", "tcp/5432").then_some(()),
    );
    assert_eq!(
        lab.nmap_open(DB, "22,80,5432,8080"),
        vec![22],
        "from the attacker only the failsafe port answers"
    );
    // Monitor-mode hosts still let everything through.
    assert_eq!(lab.connect("attacker", APP, 8080), "connected");

    // Tamper: a table flushed by hand is back within seconds, and alerted.
    ok(&[
        "ip",
        "netns",
        "exec",
        &lab.ns("db"),
        "nft",
        "flush",
        "table",
        "inet",
        "bulkhead",
    ]);
    wait_for(
        "the agent to restore its table",
        Duration::from_secs(20),
        // `flush table` keeps the chains and sets but empties the chains: the
        // default-deny rule is back only once the table is.
        || {
            lab.table("db")
                .contains("bulkhead default-deny")
                .then_some(())
        },
    );
    assert_eq!(lab.connect("attacker", DB, 5432), "timeout");
    wait_for("a tamper alert", Duration::from_secs(20), || {
        lab.alerts()
            .iter()
            .any(|a| a["kind"] == json!("tamper") && a["details"]["workload"] == json!("db"))
            .then_some(())
    });

    // Flows from the agents' conntrack reach the flow store, with the process.
    wait_for("agent flows app → db", Duration::from_secs(30), || {
        let flows = lab.api("GET", "/api/v1/flows?workload=db&limit=1000", None);
        flows["items"]
            .as_array()?
            .iter()
            .any(|f| {
                f["src"] == json!(APP)
                    && f["dst"] == json!(DB)
                    && f["port"] == json!(5432)
                    && f["reporter"]
                        .as_str()
                        .is_some_and(|r| r.starts_with("agent "))
                    && f["process"] == json!("python3")
            })
            .then_some(())
    });

    // Quarantine isolates a workload whatever its mode and rules say, connections
    // already open included: an inbound session and an outbound, command-and-control
    // style link, both opened while app is in monitor mode.
    lab.echo("app", APP, 7000);
    lab.echo("attacker", ATTACKER, 7001);
    let mut inbound = lab.session("web", APP, 7000);
    let mut outbound = lab.session("app", ATTACKER, 7001);
    assert_eq!(inbound.next_line(), "alive");
    assert_eq!(outbound.next_line(), "alive");
    let asked = lab.api(
        "POST",
        "/api/v1/workloads/app/quarantine",
        Some(&json!({ "reason": "e2e: suspected compromise" })),
    );
    assert_eq!(asked["quarantined"], json!(true), "{asked}");
    assert_ne!(
        asked["enforcement"],
        json!("applied"),
        "not enforced before the agent says so: {asked}"
    );
    let enforced = wait_for(
        "app's agent to report the quarantine applied",
        Duration::from_secs(30),
        || {
            let v = lab.api("GET", "/api/v1/workloads/app/enforcement", None);
            (v["quarantine"]["state"] == json!("applied")).then_some(v)
        },
    );
    assert_eq!(enforced["state"], json!("applied"), "{enforced}");
    assert_eq!(
        enforced["desired_revision"], enforced["applied_revision"],
        "{enforced}"
    );
    // When, as the agent says: applied, and checked since (its guard runs every second
    // here, and the heartbeat that reported the revision may precede the first check).
    assert!(enforced["applied_at_ms"].as_i64().is_some(), "{enforced}");
    wait_for("a tamper check reported", Duration::from_secs(10), || {
        let v = lab.api("GET", "/api/v1/workloads/app/enforcement", None);
        (v["last_check_ms"].as_i64()? >= v["applied_at_ms"].as_i64()?).then_some(())
    });
    // Each ping waits a second at most: ten lines are far more than were in flight
    // when the agent reported the table.
    for (name, session) in [("inbound", &mut inbound), ("outbound", &mut outbound)] {
        session.skip_printed();
        let lines = session.until_end(10);
        assert_eq!(
            lines.last().map(String::as_str),
            Some("cut"),
            "{name} session survived the quarantine: {lines:?}"
        );
    }
    assert_eq!(lab.connect("web", APP, 8080), "timeout");
    assert!(lab.log("agent-app").contains("connection tracking flushed"));
    // The verdicts say what the kernel does, and why.
    let explained = lab.api(
        "POST",
        "/api/v1/explain",
        Some(&json!({ "from": WEB, "to": APP, "port": "tcp/8080", "against": "provisioned" })),
    );
    assert_eq!(explained["verdict"], json!("blocked"), "{explained}");
    assert_eq!(
        explained["decided_by"],
        json!({ "quarantine": { "workload": "app", "applied": true } }),
        "{explained}"
    );
    // Management access stays: the failsafe port is explained as such.
    let failsafe = lab.api(
        "POST",
        "/api/v1/explain",
        Some(&json!({ "from": WEB, "to": APP, "port": "tcp/22", "against": "provisioned" })),
    );
    assert_eq!(failsafe["exempt"], json!("failsafe"), "{failsafe}");
    assert_ne!(failsafe["verdict"], json!("blocked"), "{failsafe}");
    wait_for(
        "a blocked flow web → app naming the quarantine",
        Duration::from_secs(30),
        || {
            lab.connect("web", APP, 8080);
            let flows = lab.api("GET", "/api/v1/flows?workload=app&limit=1000", None);
            flows["items"]
                .as_array()?
                .iter()
                .any(|f| {
                    f["src"] == json!(WEB)
                        && f["port"] == json!(8080)
                        && f["provisioned"]["verdict"] == json!("blocked")
                        && f["provisioned"]["rules"] == json!(["quarantine"])
                })
                .then_some(())
        },
    );
    assert!(
        lab.alerts()
            .iter()
            .any(|a| a["kind"] == json!("quarantine") && a["details"]["workload"] == json!("app")),
        "a quarantine alert"
    );
    lab.api("POST", "/api/v1/workloads/app/release", Some(&json!({})));
    wait_for("app to be released", Duration::from_secs(30), || {
        (lab.connect("web", APP, 8080) == "connected").then_some(())
    });

    // A silent agent is marked offline and alerted; its table stays in the kernel.
    lab.stop("agent-web");
    wait_for(
        "an agent-offline alert for web",
        Duration::from_secs(30),
        || {
            lab.alerts()
                .iter()
                .any(|a| {
                    a["kind"] == json!("agent_offline") && a["details"]["workload"] == json!("web")
                })
                .then_some(())
        },
    );
    assert!(lab.table("web").contains("web-to-app"));

    // Flows seen while the server is away are kept and delivered once it is back, each
    // once. Counted: allowed web → app connections as the app's agent reports them,
    // settled first (a connection is reported within the reap interval of its end).
    let before = settled(|| lab.allowed_connections(WEB, APP, 8080));

    // With the server gone, enforcement stays exactly as it was.
    lab.stop("server");
    std::thread::sleep(Duration::from_secs(3));
    for _ in 0..3 {
        assert_eq!(lab.connect("web", APP, 8080), "connected");
    }
    assert_eq!(lab.connect("attacker", DB, 5432), "timeout");
    assert_eq!(lab.connect("app", DB, 5432), "connected");
    assert!(lab.table("db").contains("app-to-db"));

    // An agent restarted while the server is away keeps (re-applies) its last policy.
    lab.stop("agent-db");
    lab.start_agent("db", None);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lab.connect("attacker", DB, 5432), "timeout");
    assert_eq!(lab.connect("app", DB, 5432), "connected");
    let log = lab.log("agent-db");
    assert!(log.contains("restored policy"), "{log}");

    // The app's agent has seen the three connections end and holds their flows; the
    // server comes back and gets them, exactly once.
    std::thread::sleep(REPORTED_WITHIN);
    lab.start_server();
    wait_for(
        "the flows of the outage to arrive",
        Duration::from_secs(60),
        || (lab.allowed_connections(WEB, APP, 8080) == before + 3).then_some(()),
    );
    assert_eq!(
        settled(|| lab.allowed_connections(WEB, APP, 8080)),
        before + 3,
        "each connection stored once"
    );
}

/// How long after its end a connection is surely reported by its agent: conntrack's
/// TIME_WAIT (1 s in the test namespaces) + the monitor's reap interval (10 s) + a
/// heartbeat.
const REPORTED_WITHIN: Duration = Duration::from_secs(13);

/// A count that has stopped moving: equal twice, `REPORTED_WITHIN` apart.
fn settled(mut count: impl FnMut() -> u64) -> u64 {
    let mut last = count();
    for _ in 0..10 {
        std::thread::sleep(REPORTED_WITHIN);
        let now = count();
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the count never settled (last {last})");
}
