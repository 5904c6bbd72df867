//! `bulkhead server` as a process, and `policy push` / `policy pull` against it: the round
//! trip gives back files `policy check` accepts, a broken push changes nothing, and a
//! restarted server has everything that was acknowledged.

mod common;
#[path = "../../store/tests/common/pg.rs"]
mod pg;

use common::{Server, curl, listening_url, start, start_with};

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

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
    // The token from a file (it stays out of the process list); a missing file is an
    // input error that names it, and sends nothing.
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let from_file = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["policy", "pull", "--out", pulled.path().to_str().unwrap()])
        .env("BULKHEAD_SERVER", &server.url)
        .env("BULKHEAD_TOKEN_FILE", &token_file)
        .output()
        .unwrap();
    assert!(
        from_file.status.success(),
        "{}",
        String::from_utf8_lossy(&from_file.stderr)
    );
    let missing = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["policy", "pull", "--out", pulled.path().to_str().unwrap()])
        .args(["--token-file", "/nonexistent/bulkhead-token"])
        .env("BULKHEAD_SERVER", &server.url)
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/bulkhead-token"));
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

/// The same round trip with the control store in PostgreSQL (a throwaway cluster from
/// Debian's package): the server is killed with SIGKILL and restarted with a new, empty
/// data directory, so everything it gives back came from the database.
#[test]
fn push_pull_and_restart_with_the_control_store_in_postgres() {
    let cluster = pg::Cluster::start();
    let url = cluster.url("postgres");
    let data = tempfile::tempdir().unwrap();
    let (server, token) = start_with(data.path(), true, &[("BULKHEAD_DATABASE", &url)]);
    let token = token.expect("first start prints an admin token");
    assert!(
        !data.path().join("control.sqlite").exists(),
        "the control store must not be in the data directory"
    );
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

    // Kill -9 (Server's Drop), then start on an empty data directory with --database.
    drop(server);
    let data2 = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["server", "--data", data2.path().to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--database", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let url2 = listening_url(&mut stderr);
    let server = Server { child, url: url2 };
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let restored = tempfile::tempdir().unwrap();
    let out = bulkhead(
        &["policy", "pull", "--out", restored.path().to_str().unwrap()],
        &server,
        &token,
    );
    assert!(
        out.status.success(),
        "the admin token and the draft come from PostgreSQL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files = 0;
    for e in std::fs::read_dir(pulled.path()).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(
            std::fs::read(&p).unwrap(),
            std::fs::read(restored.path().join(p.file_name().unwrap())).unwrap()
        );
        files += 1;
    }
    assert!(files > 0);
}

#[test]
fn a_database_that_is_not_postgres_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["server", "--data", data.path().to_str().unwrap()])
        .args(["--database", "mysql://localhost/bulkhead"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("postgres://"));

    // `database:` in the config file is read (and refused the same way)…
    let config = data.path().join("bulkhead.yaml");
    std::fs::write(&config, "database: mysql://localhost/bulkhead\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["server", "--data", data.path().to_str().unwrap()])
        .args(["--config", config.to_str().unwrap()])
        .env_remove("BULKHEAD_DATABASE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // …and the flag wins over it: this one is a PostgreSQL URL, with nothing behind it.
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["server", "--data", data.path().to_str().unwrap()])
        .args(["--config", config.to_str().unwrap()])
        .args([
            "--database",
            "postgresql://bulkhead:s3cret@%2Fnonexistent/bulkhead",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot connect to the control store at bulkhead@/nonexistent"),
        "{err}"
    );
    assert!(
        !err.contains("s3cret"),
        "the password must not be printed: {err}"
    );
}

/// One API call with curl (the CLI has no inventory upload; the console and CMDB
/// integrations use this endpoint).
fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn rollouts_and_quarantine_from_the_cli() {
    let data = tempfile::tempdir().unwrap();
    let (server, token) = start(data.path(), true);
    let token = token.unwrap();
    curl(
        &server,
        &token,
        "POST",
        "/api/v1/workloads/import",
        r#"[
            {"name": "pay-web", "kind": "vm", "managed": true, "addresses": ["10.0.1.1"], "labels": {"app": "payments", "role": "web"}, "mode": "monitor"},
            {"name": "pay-db", "kind": "vm", "managed": true, "addresses": ["10.0.1.2"], "labels": {"app": "payments", "role": "db"}, "mode": "monitor"},
            {"name": "shop-web", "kind": "vm", "managed": true, "addresses": ["10.0.2.1"], "labels": {"app": "shop", "role": "web"}, "mode": "monitor"}
        ]"#,
    );

    let out = bulkhead(
        &[
            "rollout",
            "create",
            "payments-enforce",
            "--selector",
            "app=payments",
            "--owner",
            "name=Alice,email=alice@example.com",
            "--enforce-at",
            "2099-01-15",
        ],
        &server,
        &token,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("payments-enforce"), "{stdout}");
    assert!(stdout.contains("app=payments"), "{stdout}");
    assert!(stdout.contains("scheduled"), "{stdout}");
    assert!(stdout.contains("enforce 2099-01-15T00:00:00Z"), "{stdout}");
    assert!(stdout.contains("workload pay-db (monitor)"), "{stdout}");
    assert!(!stdout.contains("shop-web"), "{stdout}");
    assert!(stdout.contains("owner Alice alice@example.com"), "{stdout}");
    assert!(stdout.contains("notices sent: announced"), "{stdout}");

    let out = bulkhead(&["rollout", "list"], &server, &token);
    let (stdout, _) = text(&out);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("payments-enforce") && stdout.contains("ready"),
        "{stdout}"
    );

    // Bad input: refused with exit 2 naming what is wrong, and nothing stored.
    for (args, says) in [
        (
            vec![
                "rollout",
                "create",
                "x",
                "--selector",
                "app=shop",
                "--owner",
                "Alice",
            ],
            "--owner",
        ),
        (
            vec![
                "rollout",
                "create",
                "x",
                "--selector",
                "app=shop",
                "--enforce-at",
                "soon",
            ],
            "--enforce-at",
        ),
        (vec!["rollout", "create", "x", "--selector", ""], "selector"),
        (
            vec![
                "rollout",
                "create",
                "payments-enforce",
                "--selector",
                "app=shop",
            ],
            "already exists",
        ),
    ] {
        let out = bulkhead(&args, &server, &token);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let out = bulkhead(&["rollout", "list", "--json"], &server, &token);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");

    // Nothing was switched yet, so there is nothing to roll back.
    let out = bulkhead(&["rollout", "rollback", "1"], &server, &token);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("has not switched anything"), "{stderr}");

    // Quarantine and release, each audited.
    let out = bulkhead(
        &["quarantine", "pay-db", "--reason", "incident 42"],
        &server,
        &token,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("pay-db is quarantined"), "{stdout}");
    assert!(
        stdout.contains("no agent is enrolled"),
        "asked is not enforced: {stdout}"
    );
    let out = bulkhead(&["enforcement", "pay-db"], &server, &token);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("quarantine        no_agent (incident 42)"),
        "{stdout}"
    );
    let w: serde_json::Value = serde_json::from_str(&curl(
        &server,
        &token,
        "GET",
        "/api/v1/workloads/pay-db",
        "",
    ))
    .unwrap();
    assert!(w.to_string().contains("incident 42"), "{w}");
    let out = bulkhead(&["release", "pay-db"], &server, &token);
    assert!(text(&out).0.contains("released"), "{:?}", text(&out));
    let out = bulkhead(&["release", "pay-db"], &server, &token);
    assert!(
        text(&out).0.contains("was not quarantined"),
        "{:?}",
        text(&out)
    );
    let audit = curl(&server, &token, "GET", "/api/v1/audit?limit=1000", "");
    assert!(
        audit.contains("quarantine") && audit.contains("rollout.create"),
        "{audit}"
    );
    let out = bulkhead(&["quarantine", "nope", "--reason", "x"], &server, &token);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));

    // Enforcement modes set directly: previewed, then applied, the same audited change.
    let out = bulkhead(
        &["enforce", "--labels", "app=payments", "--mode", "enforced"],
        &server,
        &token,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("would switch 2 of 2"), "{stdout}");
    assert!(stdout.contains("nothing written"), "{stdout}");
    let out = bulkhead(
        &[
            "enforce",
            "--workload",
            "pay-db",
            "--mode",
            "enforced",
            "--apply",
        ],
        &server,
        &token,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("switched 1 of 1"), "{stdout}");
    let w = curl(&server, &token, "GET", "/api/v1/workloads/pay-db", "");
    assert!(w.contains("\"mode\":\"enforced\""), "{w}");
    let out = bulkhead(
        &["enforce", "--workload", "pay-db", "--mode", "strict"],
        &server,
        &token,
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("mode"), "{stderr}");
}
