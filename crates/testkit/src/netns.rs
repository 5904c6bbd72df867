//! Network namespaces for kernel tests: two joined by a veth pair on one /24, with no
//! other route, deleted (with the pair and every process left inside) when dropped.

use std::process::{Command, Stdio};

use crate::command::ok;

/// A network namespace, deleted when dropped, with whatever still runs inside.
#[derive(Debug)]
pub struct Netns(pub String);

impl Netns {
    pub fn new(name: String) -> Netns {
        // A namespace left over from a killed run of the same pid would make `add` fail.
        let _ = Command::new("ip")
            .args(["netns", "delete", &name])
            .stderr(Stdio::null())
            .status();
        ok(&["ip", "netns", "add", &name]);
        ok(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Best effort: a panic here would hide the test's own failure.
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.0]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").arg(pid).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// Two namespaces, `a` at `PREFIX.1` and `b` at `PREFIX.2` on `PREFIX.0/24`, joined by a
/// veth pair created inside them (nothing appears on the host).
#[derive(Debug)]
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
    pub a_ip: String,
    pub b_ip: String,
}

impl Pair {
    /// `tag` keeps names apart between tests; `prefix` is e.g. "10.202.7".
    pub fn new(tag: &str, prefix: &str) -> Pair {
        let pid = std::process::id();
        let pair = Pair {
            a: Netns::new(format!("bh-{tag}-{pid}a")),
            b: Netns::new(format!("bh-{tag}-{pid}b")),
            a_ip: format!("{prefix}.1"),
            b_ip: format!("{prefix}.2"),
        };
        ok(&[
            "ip", "link", "add", "veth0", "netns", &pair.a.0, "type", "veth", "peer", "name",
            "veth0", "netns", &pair.b.0,
        ]);
        for (ns, ip) in [(&pair.a.0, &pair.a_ip), (&pair.b.0, &pair.b_ip)] {
            ok(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "veth0",
            ]);
            ok(&["ip", "-n", ns, "link", "set", "veth0", "up"]);
        }
        pair
    }
}
