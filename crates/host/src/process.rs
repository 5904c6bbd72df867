//! Processes from /proc: who owns a socket inode (scanning /proc/*/fd, as `ss -p` does:
//! sock_diag gives the inode but no pid), and what a process is (name, executable, user,
//! cgroup v2 path and systemd unit).

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use bulkhead_api::host::ProcessInfo;
use nix::unistd::{Uid, User};

/// Socket inode → owning pid, from one scan of /proc/*/fd.
#[derive(Debug, Default)]
pub(crate) struct SocketOwners {
    by_inode: HashMap<u64, u32>,
    scanned: Option<Instant>,
}

impl SocketOwners {
    /// Scans /proc now. A socket shared by several processes (a pre-forking server's
    /// listener) is given to the lowest pid, normally the parent, so the answer is stable.
    pub(crate) fn scan(&mut self) {
        let mut by_inode: HashMap<u64, u32> = HashMap::new();
        let Ok(procs) = fs::read_dir("/proc") else {
            self.by_inode = by_inode;
            self.scanned = Some(Instant::now());
            return;
        };
        for proc_entry in procs.flatten() {
            let Some(pid) = proc_entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // Processes come and go during the scan; a vanished one is simply skipped.
            let Ok(fds) = fs::read_dir(proc_entry.path().join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                let Ok(target) = fs::read_link(fd.path()) else {
                    continue;
                };
                if let Some(inode) = socket_inode(&target.to_string_lossy()) {
                    by_inode
                        .entry(inode)
                        .and_modify(|p| *p = (*p).min(pid))
                        .or_insert(pid);
                }
            }
        }
        self.by_inode = by_inode;
        self.scanned = Some(Instant::now());
    }

    /// Time since the last scan (a long time when there was none).
    pub(crate) fn age(&self) -> Duration {
        self.scanned.map_or(Duration::MAX, |t| t.elapsed())
    }

    pub(crate) fn pid(&self, inode: u64) -> Option<u32> {
        self.by_inode.get(&inode).copied()
    }

    /// The owner of `inode`, rescanning /proc first when the inode is unknown and the last
    /// scan is older than `min_age` (a new socket's process is not in an old scan; the
    /// limit keeps a burst of unknown sockets from rescanning /proc for each one).
    pub(crate) fn pid_rescanning(&mut self, inode: u64, min_age: Duration) -> Option<u32> {
        if let Some(pid) = self.pid(inode) {
            return Some(pid);
        }
        if self.age() >= min_age {
            self.scan();
        }
        self.pid(inode)
    }
}

/// "socket:[12345]" → 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// What a process is, from /proc/PID; `None` when it has gone.
pub fn process_info(pid: u32) -> Option<ProcessInfo> {
    let dir = Path::new("/proc").join(pid.to_string());
    let name = fs::read_to_string(dir.join("comm"))
        .ok()?
        .trim_end()
        .to_string();
    let exe = fs::read_link(dir.join("exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let uid = fs::read_to_string(dir.join("status"))
        .ok()
        .and_then(|s| effective_uid(&s));
    let user = uid.and_then(|u| {
        User::from_uid(Uid::from_raw(u))
            .ok()
            .flatten()
            .map(|u| u.name)
    });
    let cgroup = fs::read_to_string(dir.join("cgroup"))
        .ok()
        .and_then(|s| cgroup_v2_path(&s));
    let systemd_unit = cgroup.as_deref().and_then(systemd_unit);
    Some(ProcessInfo {
        pid,
        name,
        exe,
        user,
        uid,
        systemd_unit,
        cgroup,
    })
}

/// The effective uid from /proc/PID/status ("Uid: real effective saved fs"): the one the
/// process acts as after a service drops privileges.
fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The cgroup v2 path: the "0::PATH" line of /proc/PID/cgroup (also present on hybrid
/// hierarchies, where v1 controllers have lines of their own).
fn cgroup_v2_path(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
}

/// The systemd unit a cgroup path belongs to: its deepest component that names a unit
/// ("/system.slice/nginx.service" → "nginx.service"; a service's own sub-cgroups, as with
/// delegation, still belong to the service). Slices are groupings, not units that run.
fn systemd_unit(path: &str) -> Option<String> {
    const KINDS: [&str; 5] = [".service", ".scope", ".socket", ".mount", ".swap"];
    path.split('/')
        .rfind(|c| KINDS.iter().any(|k| c.len() > k.len() && c.ends_with(k)))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_links_give_inodes() {
        assert_eq!(socket_inode("socket:[4242]"), Some(4242));
        assert_eq!(socket_inode("pipe:[4242]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }

    #[test]
    fn cgroup_v2_line_is_found_on_hybrid_hierarchies() {
        let hybrid = "9:name=systemd:/\n4:memory:/x\n0::/system.slice/nginx.service\n";
        assert_eq!(
            cgroup_v2_path(hybrid).as_deref(),
            Some("/system.slice/nginx.service")
        );
        assert_eq!(cgroup_v2_path("4:memory:/x\n"), None);
    }

    #[test]
    fn systemd_units_are_read_from_cgroup_paths() {
        assert_eq!(
            systemd_unit("/system.slice/nginx.service").as_deref(),
            Some("nginx.service")
        );
        assert_eq!(
            systemd_unit("/system.slice/system-postgresql.slice/postgresql@15-main.service")
                .as_deref(),
            Some("postgresql@15-main.service")
        );
        assert_eq!(
            systemd_unit("/user.slice/user-1000.slice/session-3.scope").as_deref(),
            Some("session-3.scope")
        );
        assert_eq!(
            systemd_unit("/system.slice/docker.service/payload").as_deref(),
            Some("docker.service")
        );
        assert_eq!(systemd_unit("/"), None);
        assert_eq!(systemd_unit("/system.slice"), None);
    }

    #[test]
    fn effective_uid_is_the_second_field() {
        let status = "Name:\tnginx\nUid:\t0\t33\t33\t33\nGid:\t0\t33\t33\t33\n";
        assert_eq!(effective_uid(status), Some(33));
    }

    #[test]
    fn own_process_is_described() {
        let me = process_info(std::process::id()).expect("this process is in /proc");
        assert_eq!(me.pid, std::process::id());
        assert!(!me.name.is_empty());
        assert_eq!(me.uid, Some(nix::unistd::geteuid().as_raw()));
        assert!(me.exe.is_some());
    }
}
