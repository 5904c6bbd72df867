//! `bulkhead server` as a process, and `policy push` / `policy pull` against it: the round
//! trip gives back files `policy check` accepts, a broken push changes nothing, and a
//! restarted server has everything that was acknowledged.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server on a free loopback port; returns it and, on a first start, the admin
/// token it prints.
fn start(data: &Path, first: bool) -> (Server, Option<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args([
            "server",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect(&line)
        .to_string();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let token = if first {
        // Printed before the server starts listening, so it is already there.
        let mut l = String::new();
        stdout.read_line(&mut l).unwrap();
        assert!(l.contains("admin token"), "{l}");
        l.split_whitespace().last().map(String::from)
    } else {
        None
    };
    // Whatever else it prints goes to a thread, so a full pipe never blocks the server.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (Server { child, url }, token)
}

fn bulkhead(args: &[&str], server: &Server, token: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(args)
        .env("BULKHEAD_SERVER", &server.url)
        .env("BULKHEAD_TOKEN", token)
        .output()
        .unwrap()
}

#[test]
fn push_pull_round_trip_and_restart() {
    let data = tempfile::tempdir().unwrap();
    let (server, token) = start(data.path(), true);
    let token = token.expect("first start prints an admin token");
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/estate/policy");

    let out = bulkhead(
        &["policy", "push", policy.to_str().unwrap()],
        &server,
        &token,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("24 rules"));

    let pulled = tempfile::tempdir().unwrap();
    let out = bulkhead(
        &["policy", "pull", "--out", pulled.path().to_str().unwrap()],
        &server,
        &token,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["policy", "check", pulled.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        String::from_utf8_lossy(&check.stdout).starts_with("ok: 3 tiers, 9 rulesets, 24 rules")
    );

    // A broken file is refused locally (exit 2) and the draft stays as it was.
    let broken =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/tests/data/broken/bad-values.yaml");
    let out = bulkhead(
        &["policy", "push", broken.to_str().unwrap()],
        &server,
        &token,
    );
    assert_eq!(out.status.code(), Some(2));
    let again = tempfile::tempdir().unwrap();
    bulkhead(
        &["policy", "pull", "--out", again.path().to_str().unwrap()],
        &server,
        &token,
    );
    for e in std::fs::read_dir(pulled.path()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap();
        assert_eq!(
            std::fs::read(&p).unwrap(),
            std::fs::read(again.path().join(name)).unwrap()
        );
    }

    // A wrong token is refused with exit 2.
    let out = bulkhead(
        &["policy", "pull", "--out", again.path().to_str().unwrap()],
        &server,
        "bh_wrong",
    );
    assert_eq!(out.status.code(), Some(2));

    // Kill -9 and restart: everything acknowledged is there, and no new admin token.
    drop(server);
    let (server, _) = start(data.path(), false);
    let restored = tempfile::tempdir().unwrap();
    let out = bulkhead(
        &["policy", "pull", "--out", restored.path().to_str().unwrap()],
        &server,
        &token,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for e in std::fs::read_dir(pulled.path()).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(
            std::fs::read(&p).unwrap(),
            std::fs::read(restored.path().join(p.file_name().unwrap())).unwrap()
        );
    }
}

#[test]
fn config_file_fills_what_flags_and_environment_leave_unset() {
    let dir = tempfile::tempdir().unwrap();
    let from_file = dir.path().join("from-file");
    let from_flag = dir.path().join("from-flag");
    let config = dir.path().join("bulkhead.yaml");
    std::fs::write(
        &config,
        format!("data: {}\nlisten: 127.0.0.1:0\n", from_file.display()),
    )
    .unwrap();

    // The file alone: its data directory is used.
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["server", "--config", config.to_str().unwrap()])
        .env_remove("BULKHEAD_DATA")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.contains(&format!("data in {}", from_file.display())),
        "{line}"
    );

    // A flag wins over the file.
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args([
            "server",
            "--config",
            config.to_str().unwrap(),
            "--data",
            from_flag.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.contains(&format!("data in {}", from_flag.display())),
        "{line}"
    );

    // A typo in the file is an error naming the line, exit 2, and nothing starts.
    std::fs::write(&config, "listen: 127.0.0.1:0\ndatta: /tmp/x\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["server", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bulkhead.yaml:2") && err.contains("datta"),
        "{err}"
    );
}
