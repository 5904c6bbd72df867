//! Secrets given to `bulkhead server`: the webhook secret can come from a file, a secret
//! typed on the command line is warned about, and no message shows the password of a
//! database or webhook URL.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn server(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bulkhead"));
    cmd.args(["server", "--data", data.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("BULKHEAD_WEBHOOK_SECRET")
        .env_remove("BULKHEAD_WEBHOOK_SECRET_FILE")
        .env_remove("BULKHEAD_DATABASE")
        .envs(env.iter().copied());
    cmd
}

/// Runs a server that is expected to stop on its own; (exit code, stdout + stderr).
fn run(data: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = server(data, args, env).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    (status.code().expect("exited"), text)
}

/// Starts a server that is expected to serve, and returns what it wrote to stderr up to
/// the line announcing it; the server is stopped.
fn start(data: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut child = server(data, args, env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let _ = child.wait();
            panic!("the server stopped before serving:\n{seen}");
        }
        seen.push_str(&line);
        if line.contains("bulkhead server on http://") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    seen
}

#[test]
fn a_database_password_is_never_shown() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Nothing listens on port 1: connecting fails at once.
    for url in [
        "postgres://bulkhead:s3cretpw@127.0.0.1:1/bulkhead",
        "postgres://bulkhead:s3cretpw@127.0.0.1:notaport/bulkhead",
        "postgresql://bulkhead:s3cretpw@127.0.0.1:1/bulkhead?connect_timeout=oops",
    ] {
        let (code, out) = run(&data, &["--database", url], &[]);
        assert_ne!(code, 0, "{url}: {out}");
        assert!(!out.contains("s3cretpw"), "{url}: {out}");
        assert!(out.contains("process list"), "{url}: warned: {out}");

        // From the environment it is not in the process list: no warning.
        let (code, out) = run(&data, &[], &[("BULKHEAD_DATABASE", url)]);
        assert_ne!(code, 0, "{url}: {out}");
        assert!(!out.contains("s3cretpw"), "{url}: {out}");
        assert!(!out.contains("process list"), "{url}: {out}");
    }
}

#[test]
fn a_webhook_password_is_never_shown() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (code, out) = run(
        &data,
        &["--webhook", "http://hooks:h00kpw@127.0.0.1:1/alerts"],
        &[("BULKHEAD_WEBHOOK_SECRET", "signing-secret")],
    );
    assert_eq!(code, 2, "invalid input: {out}");
    assert!(!out.contains("h00kpw"), "{out}");
    assert!(
        out.contains("hooks:***@127.0.0.1:1"),
        "the URL is named: {out}"
    );
}

#[test]
fn the_webhook_secret_file_must_be_readable_and_not_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let webhook = ["--webhook", "http://127.0.0.1:1/alerts"];

    let missing = tmp.path().join("no-such-secret");
    let missing = missing.to_str().unwrap();
    let (code, out) = run(
        &data,
        &[&webhook[..], &["--webhook-secret-file", missing]].concat(),
        &[],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(missing), "the error names the file: {out}");

    let (code, out) = run(&data, &[], &[("BULKHEAD_WEBHOOK_SECRET_FILE", missing)]);
    assert_eq!(code, 2, "from the environment too: {out}");
    assert!(out.contains(missing), "{out}");

    let empty = tmp.path().join("empty-secret");
    std::fs::write(&empty, "\n").unwrap();
    let empty = empty.to_str().unwrap();
    let (code, out) = run(
        &data,
        &[&webhook[..], &["--webhook-secret-file", empty]].concat(),
        &[],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(empty) && out.contains("empty"), "{out}");

    // The config file may name one too.
    let config = tmp.path().join("bulkhead.yaml");
    std::fs::write(&config, format!("webhook_secret_file: {missing}\n")).unwrap();
    let (code, out) = run(&data, &["--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(missing), "{out}");

    // A file and the secret itself: which one is meant is unclear.
    let file = tmp.path().join("secret");
    std::fs::write(&file, "from-the-file\n").unwrap();
    let file = file.to_str().unwrap();
    let (code, out) = run(
        &data,
        &["--webhook-secret-file", file],
        &[("BULKHEAD_WEBHOOK_SECRET", "from-the-environment")],
    );
    assert_eq!(code, 2, "{out}");
    assert!(!out.contains("from-the-environment"), "{out}");
}

#[test]
fn a_secret_from_a_file_or_the_environment_starts_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let file = tmp.path().join("secret");
    std::fs::write(&file, "w3bhook-secret\n").unwrap();
    let webhook = ["--webhook", "http://127.0.0.1:1/alerts"];

    let out = start(
        &data,
        &[
            &webhook[..],
            &["--webhook-secret-file", file.to_str().unwrap()],
        ]
        .concat(),
        &[],
    );
    assert!(!out.contains("warning"), "{out}");
    assert!(!out.contains("w3bhook-secret"), "{out}");

    let out = start(
        &data,
        &webhook,
        &[("BULKHEAD_WEBHOOK_SECRET", "w3bhook-secret")],
    );
    assert!(!out.contains("warning"), "{out}");

    // Still accepted on the command line, where every local user can read it.
    let out = start(
        &data,
        &[&webhook[..], &["--webhook-secret", "w3bhook-secret"]].concat(),
        &[],
    );
    assert!(
        out.contains("warning: --webhook-secret is visible") && out.contains("process list"),
        "{out}"
    );
    assert!(!out.contains("w3bhook-secret"), "{out}");
}
