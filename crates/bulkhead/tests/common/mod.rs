//! A `bulkhead server` process on a free loopback port, and calls to it, for the tests
//! that run the binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address a starting server prints on stderr; warnings (a data directory
/// tightened, say) may come before it.
pub fn listening_url(stderr: &mut impl BufRead) -> String {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no address in {seen}"
        );
        if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            return url.to_string();
        }
        seen.push_str(&line);
    }
}

/// Starts a server on a free loopback port; returns it and, on a first start, the admin
/// token it prints.
pub fn start(data: &Path, first: bool) -> (Server, Option<String>) {
    start_with(data, first, &[])
}

/// As [`start`], with extra environment variables.
pub fn start_with(data: &Path, first: bool, env: &[(&str, &str)]) -> (Server, Option<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args([
            "server",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let url = listening_url(&mut stderr);
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

pub fn curl(server: &Server, token: &str, method: &str, path: &str, body: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--fail-with-body",
            "-X",
            method,
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
            &format!("{}{path}", server.url),
        ])
        .output()
        .expect("curl (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "{method} {path}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
