//! A throwaway PostgreSQL cluster for tests, from Debian's `postgresql` package
//! (`scripts/setup` installs it). A missing PostgreSQL fails the test: it is never a
//! reason to skip.
//!
//! One cluster per test process, started on first use: `initdb` into a temporary
//! directory (as the `postgres` user when running as root, since initdb refuses root),
//! listening on a Unix socket in that directory only (no TCP port, so nothing to clash
//! with and nothing reachable from outside). Each test gets a database of its own.
//!
//! The cluster is owned by a small shell process that waits for its standard input to
//! close, then stops the server and removes the directory: the input is a pipe from
//! this process, so it closes however the tests end (normally, by panic, or killed),
//! which a `Drop` on a process-wide value would not guarantee.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

pub struct Cluster {
    pub dir: PathBuf,
    bin: PathBuf,
    /// Kept open for as long as the process lives; see the module comment.
    _keeper: Mutex<(Child, ChildStdin)>,
}

const KEEPER: &str = r#"
set -eu
dir=$1 bin=$2
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
    as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap '' INT
echo "-c listen_addresses='' -c unix_socket_directories='$dir' -c fsync=on" >"$dir/options"
if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
if ! as_pg "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --no-sync \
        >"$dir/initdb.log" 2>&1; then
    echo "initdb failed:"; cat "$dir/initdb.log"; cleanup; exit 1
fi
if ! as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "$(cat "$dir/options")" start >/dev/null 2>&1; then
    echo "the server did not start:"; cat "$dir/server.log"; cleanup; exit 1
fi
echo ready
cat >/dev/null || true
cleanup
"#;

/// The newest `bin` directory of Debian's PostgreSQL packages.
fn postgres_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("BULKHEAD_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): \
             run scripts/setup, or apt-get install postgresql"
        ),
    }
}

impl Cluster {
    /// A cluster of the caller's own (most tests share [`cluster`]); stopped and
    /// removed when dropped or when the process ends.
    pub fn start() -> Cluster {
        let bin = postgres_bin();
        // Short: the socket path must fit in 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("bh-pg-")
            .tempdir_in("/tmp")
            .expect("creating the cluster's directory")
            .keep();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(KEEPER)
            .arg("keeper")
            .arg(&dir)
            .arg(&bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting sh for the PostgreSQL cluster");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        if first != "ready" {
            let rest: Vec<String> = lines.map_while(Result::ok).collect();
            panic!(
                "could not start a PostgreSQL cluster with {}: {first}\n{}",
                bin.display(),
                rest.join("\n")
            );
        }
        Cluster {
            dir,
            bin,
            _keeper: Mutex::new((child, stdin)),
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::ExitStatus {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.dir.join("data");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_ctl);
            c
        } else {
            Command::new(pg_ctl)
        };
        cmd.arg("-D")
            .arg(data)
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("running pg_ctl")
    }

    /// Crashes the server (every process quits at once, no checkpoint) and starts it
    /// again, which replays the WAL.
    pub fn crash_and_restart(&self) {
        assert!(self.pg_ctl(&["-m", "immediate", "-w", "stop"]).success());
        let options = std::fs::read_to_string(self.dir.join("options")).unwrap();
        let log = self.dir.join("server.log");
        let log = log.to_str().unwrap();
        let status = self.pg_ctl(&["-l", log, "-w", "-t", "60", "-o", options.trim(), "start"]);
        assert!(status.success(), "restarting:\n{}", self.server_log());
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// libpq-style settings for `dbname` on this cluster.
    pub fn conninfo(&self, dbname: &str) -> String {
        format!("host={} user=postgres dbname={dbname}", self.dir.display())
    }

    /// The same as a URL, as `bulkhead server --database` takes it.
    pub fn url(&self, dbname: &str) -> String {
        let host: String = self.dir.display().to_string().replace('/', "%2F");
        format!("postgresql://postgres@{host}/{dbname}")
    }

    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// A new, empty database; returns its settings.
    pub fn fresh_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = postgres::Client::connect(&self.conninfo("postgres"), postgres::NoTls)
            .expect("connecting to the test cluster");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("creating a test database");
        self.conninfo(&name)
    }

    /// A raw connection, to do what the store would never do.
    pub fn raw(&self, conninfo: &str) -> postgres::Client {
        postgres::Client::connect(conninfo, postgres::NoTls)
            .expect("connecting to the test cluster")
    }
}

/// The process's cluster, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(Cluster::start)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}
