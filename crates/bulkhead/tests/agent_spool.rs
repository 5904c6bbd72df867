//! Issue 15, item 5: agent flows lose nothing. A real `bulkhead server` and a real
//! `bulkhead agent` in a network namespace of their own (loopback, and a veth pair with
//! both ends inside holding the host's one address, 192.0.2.10 from the documentation
//! range: the namespace has no link anywhere, so no packet can leave it). Connections to a
//! listener on the host are seen by the agent's conntrack monitor; the test counts
//! them in the flow store:
//!
//! 1. server up: the first connections are stored;
//! 2. server `kill -9`ed: more connections, spooled by the agent on disk;
//! 3. agent `kill -9`ed with them pending, server and agent restarted: every
//!    connection is stored exactly once;
//! 4. a batch the server stored whose answer was "lost" (its file put back in the
//!    spool, as after a `kill -9` between the server's answer and the file's removal)
//!    is re-sent, recognised as a repeat, and not counted again.
//!
//! Needs root, iproute2, nftables, python3 and curl (`scripts/setup` installs them; a
//! missing one fails the test).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bulkhead_testkit::command::{curl_in_netns, ok, run};
use bulkhead_testkit::wait_for;
use serde_json::{Value, json};

const HOST: &str = "192.0.2.10";
const PORT: u16 = 7001;
/// Long enough for conntrack to report a closed connection (TIME_WAIT, 1 s here, then
/// the monitor's reap interval of 10 s), a spool round and a heartbeat, many times over.
const LIMIT: Duration = Duration::from_secs(120);

/// The namespace, the processes in it and their data; all removed on drop.
struct Lab {
    ns: String,
    dir: tempfile::TempDir,
    children: Vec<(String, Child)>,
    token: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = run(&["ip", "netns", "del", &self.ns]);
    }
}

impl Lab {
    fn new() -> Lab {
        let lab = Lab {
            ns: format!("bhspool{}", std::process::id()),
            dir: tempfile::tempdir().unwrap(),
            children: Vec::new(),
            token: String::new(),
        };
        ok(&["ip", "netns", "add", &lab.ns]);
        ok(&["ip", "-n", &lab.ns, "link", "set", "lo", "up"]);
        // A veth pair with both ends inside: an interface for the host's address,
        // linked to nothing outside the namespace.
        ok(&[
            "ip", "-n", &lab.ns, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        ]);
        ok(&[
            "ip",
            "-n",
            &lab.ns,
            "addr",
            "add",
            &format!("{HOST}/24"),
            "dev",
            "veth0",
        ]);
        for dev in ["veth0", "veth1"] {
            ok(&["ip", "-n", &lab.ns, "link", "set", dev, "up"]);
        }
        lab
    }

    fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", self.ns.as_str()];
        full.extend_from_slice(args);
        ok(&full)
    }

    /// Starts a long-running process in the namespace (`ip netns exec` execs in place,
    /// so the child's pid is the process's own and `kill` is a SIGKILL to it).
    fn spawn(&mut self, name: &str, args: &[&str]) -> std::process::ChildStdout {
        let mut full = vec!["netns", "exec", self.ns.as_str()];
        full.extend_from_slice(args);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .unwrap();
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

    /// `kill -9`.
    fn kill(&mut self, name: &str) {
        let i = self
            .children
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} is not running"));
        let (_, mut c) = self.children.remove(i);
        c.kill().unwrap();
        c.wait().unwrap();
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    fn start_server(&mut self) {
        let data = self.dir.path().join("server");
        let data = data.to_str().unwrap().to_string();
        let bin = env!("CARGO_BIN_EXE_bulkhead");
        let stdout = self.spawn(
            "server",
            &[
                bin,
                "server",
                "--data",
                &data,
                "--listen",
                "127.0.0.1:8080",
                "--agent-listen",
                "127.0.0.1:8443",
            ],
        );
        let mut stdout = BufReader::new(stdout);
        if self.token.is_empty() {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            self.token = line
                .split_whitespace()
                .last()
                .filter(|t| t.starts_with("bh_"))
                .unwrap_or_else(|| panic!("no admin token in {line:?}"))
                .to_string();
        }
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        wait_for("the server to answer", LIMIT, || {
            self.try_api("GET", "/healthz", None).map(|_| ())
        });
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    fn spool_dir(&self) -> PathBuf {
        self.state_dir().join("spool")
    }

    fn start_agent(&mut self, pairing_key: Option<&str>) {
        let state = self.state_dir();
        let state = state.to_str().unwrap().to_string();
        let mut args = vec![
            env!("CARGO_BIN_EXE_bulkhead"),
            "agent",
            "--server",
            "https://127.0.0.1:8443",
            "--state-dir",
            &state,
            "--name",
            "spoolhost",
            "--heartbeat-secs",
            "1",
            "--tamper-check-secs",
            "1",
        ];
        if let Some(k) = pairing_key {
            args.extend(["--pairing-key", k]);
        }
        let stdout = self.spawn("agent", &args);
        std::thread::spawn(move || {
            std::io::copy(&mut BufReader::new(stdout), &mut std::io::sink())
        });
    }

    fn try_api(&self, method: &str, path: &str, body: Option<&Value>) -> Option<Value> {
        let url = format!("http://127.0.0.1:8080{path}");
        let body = body.map(Value::to_string);
        let text = curl_in_netns(&self.ns, method, &url, &self.token, body.as_deref())?;
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

    fn agent(&self) -> Option<Value> {
        self.api("GET", "/api/v1/agents", None)["items"]
            .as_array()
            .and_then(|a| a.first().cloned())
    }

    /// Connections to the listener in the flow store, as the agent reported them.
    fn stored(&self) -> u64 {
        let flows = self.api(
            "GET",
            &format!("/api/v1/flows?address={HOST}&limit=10000"),
            None,
        );
        flows["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| {
                f["port"] == json!(PORT)
                    && f["reporter"]
                        .as_str()
                        .is_some_and(|r| r.starts_with("agent "))
            })
            .map(|f| f["connections"].as_u64().unwrap_or(0))
            .sum()
    }

    fn listen(&mut self) {
        const SCRIPT: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(64)
print("ready", flush=True)
while True:
    conn, _ = s.accept()
    conn.sendall(b"x" * 100)
    conn.close()
"#;
        let port = PORT.to_string();
        let stdout = self.spawn("listener", &["python3", "-c", SCRIPT, HOST, &port]);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the listener did not start");
    }

    /// `n` TCP connections to the listener, each read to its end and closed.
    fn connect(&self, n: u32) {
        const SCRIPT: &str = r#"
import socket, sys
for _ in range(int(sys.argv[3])):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    while s.recv(1000):
        pass
    s.close()
print("done")
"#;
        let out = self.exec(&[
            "python3",
            "-c",
            SCRIPT,
            HOST,
            &PORT.to_string(),
            &n.to_string(),
        ]);
        assert_eq!(out.trim(), "done");
    }
}

/// The batch files in a spool and the listener's flows each holds (a test reads the
/// format: a header line, then the batch as JSON).
fn spooled(dir: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("batch") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // removed meanwhile
        };
        let (_, body) = text.split_once('\n').expect("a header line");
        let batch: Value = serde_json::from_str(body).expect("a batch");
        let n = batch["flows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["dst_port"] == json!(PORT))
            .count() as u64;
        out.push((path, n));
    }
    out.sort();
    out
}

fn spooled_flows(dir: &Path) -> u64 {
    spooled(dir).iter().map(|(_, n)| n).sum()
}

#[test]
fn kill_9_with_the_server_down_loses_no_flow_and_stores_none_twice() {
    let mut lab = Lab::new();
    lab.start_server();
    let key = lab.api(
        "POST",
        "/api/v1/pairing-profiles",
        Some(
            &json!({"name": "spool", "labels": {"app": "spool"}, "mode": "monitor", "max_uses": 1}),
        ),
    )["pairing_key"]
        .as_str()
        .unwrap()
        .to_string();
    lab.start_agent(Some(&key));
    wait_for("the agent to apply its policy", LIMIT, || {
        lab.agent()
            .filter(|a| a["in_sync"] == json!(true))
            .map(|_| ())
    });
    // Closed connections reach the agent when their conntrack entry goes, 120 s after
    // the close by default; the namespace's own setting keeps the test short. The
    // agent's table has loaded conntrack.
    lab.exec(&[
        "sysctl",
        "-qw",
        "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1",
    ]);
    lab.listen();

    // 1. The server is up: flows arrive.
    lab.connect(4);
    wait_for("the first 4 connections to be stored", LIMIT, || {
        (lab.stored() == 4).then_some(())
    });

    // 2. The server dies (kill -9); the agent keeps observing and spools to disk.
    lab.kill("server");
    lab.connect(20);
    let spool = lab.spool_dir();
    wait_for("20 connections in the agent's spool", LIMIT, || {
        (spooled_flows(&spool) == 20).then_some(())
    });
    // A batch that holds some of them, kept to play a lost answer later.
    let (replay_path, replay_flows) = spooled(&spool).into_iter().find(|(_, n)| *n > 0).unwrap();
    let replay = std::fs::read(&replay_path).unwrap();

    // 3. The agent dies too (kill -9) with the batches pending; both come back.
    lab.kill("agent");
    assert_eq!(spooled_flows(&spool), 20, "the spool survives kill -9");
    lab.start_server();
    lab.start_agent(None);
    wait_for("the spooled connections to be stored", LIMIT, || {
        (lab.stored() == 24 && spooled_flows(&spool) == 0).then_some(())
    });
    let log = lab.log("agent");
    assert!(log.contains("from before the restart"), "{log}");
    // Nothing arrives twice once everything is delivered: the spool is empty and the
    // agent has reported since.
    wait_for("the agent to report an empty spool", LIMIT, || {
        lab.agent()
            .filter(|a| a["status"]["spool_flows"] == json!(0) && a["online"] == json!(true))
            .map(|_| ())
    });
    assert_eq!(lab.stored(), 24, "every connection stored exactly once");

    // 4. A lost answer: the server stored a batch, the agent was killed before it
    //    removed the file. Put back, it is sent again and not stored twice.
    lab.kill("agent");
    std::fs::write(&replay_path, &replay).unwrap();
    assert_eq!(spooled_flows(&spool), replay_flows);
    lab.start_agent(None);
    let agent = wait_for("the re-sent batch to be recognised", LIMIT, || {
        let stored = lab.stored();
        assert_eq!(stored, 24, "a re-sent batch was stored twice");
        lab.agent().filter(|a| {
            a["status"]["flow_batches_repeated"].as_u64() >= Some(1)
                && a["status"]["spool_flows"] == json!(0)
        })
    });
    assert_eq!(spooled_flows(&spool), 0, "acknowledged, so removed");
    assert_eq!(lab.stored(), 24, "the repeat was not stored: {agent}");
    assert_eq!(agent["status"]["spool_flows_dropped"], json!(0), "{agent}");
    assert_eq!(agent["status"]["spool_corrupt"], json!(0), "{agent}");
    let server_log = lab.log("server");
    assert!(
        server_log.contains("stored before"),
        "the server saw the repeat: {server_log}"
    );
}
