//! The system tools end-to-end tests drive (ip, nft, curl, nmap…), run to completion.

use std::process::{Command, Output, Stdio};

/// Runs `args[0]` with the rest as its arguments; a missing tool fails the test and
/// points at scripts/setup, which installs it.
pub fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?} (see scripts/setup): {e}"))
}

/// Runs a command that must succeed, and gives its standard output.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One JSON API call with curl from inside a network namespace (where a lab's server
/// is reachable and the test's own namespace is not): the body of a 2xx answer, or
/// `None` for anything else.
pub fn curl_in_netns(
    ns: &str,
    method: &str,
    url: &str,
    token: &str,
    body: Option<&str>,
) -> Option<String> {
    let auth = format!("Authorization: Bearer {token}");
    let mut args = vec![
        "ip",
        "netns",
        "exec",
        ns,
        "curl",
        "-sS",
        "--fail-with-body",
        "-m",
        "10",
        "-X",
        method,
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
    ];
    if let Some(b) = body {
        args.extend(["--data-binary", b]);
    }
    args.push(url);
    let out = run(&args);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
