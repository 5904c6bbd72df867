//! A throwaway ClickHouse server for tests, from Debian's `clickhouse-server` package
//! (`scripts/setup` installs it). A missing ClickHouse fails the test: it is never a
//! reason to skip.
//!
//! One server per test process, started on first use, in a temporary directory, serving
//! HTTP on a free loopback port only (no native-protocol or interserver port). Each test
//! gets a database of its own. As with the PostgreSQL cluster of the store's tests, the
//! server is owned by a small shell process that stops it and removes the directory when
//! its standard input (a pipe from this process) closes, however the tests end; on that
//! pipe a test can also have it killed and started again on the same data.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

const SERVER: &str = "/usr/sbin/clickhouse-server";

const KEEPER: &str = r#"
set -eu
dir=$1 port=$2 server=$3
pid=
cleanup() {
    if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$dir"
}
start() {
    "$server" --config-file="$dir/config.xml" >>"$dir/stdout.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do
        if curl -fsS "http://127.0.0.1:$port/ping" >/dev/null 2>&1; then echo ready; return; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "the server exited:"; cat "$dir/stdout.log" "$dir/error.log" 2>/dev/null; pid=; cleanup; exit 1
        fi
        sleep 0.1
    done
    echo "the server did not answer in 60 s:"; cat "$dir/error.log" 2>/dev/null; cleanup; exit 1
}
trap '' INT
start
# One command per line; end of input (the test process went away) cleans up.
while read -r command; do
    case "$command" in
        kill) kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=; echo killed ;;
        start) start ;;
    esac
done
cleanup
"#;

/// The configuration of a server that keeps everything under `dir`, answers HTTP on
/// 127.0.0.1:`http_port` only and lets the passwordless `default` user in from loopback.
pub fn server_config(dir: &std::path::Path, http_port: u16) -> (String, String) {
    let d = dir.display();
    let config = format!(
        r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog><console>0</console></logger>
  <http_port>{http_port}</http_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>134217728</uncompressed_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <users_config>{d}/users.xml</users_config>
</yandex>
"#
    );
    let users = r#"<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"#
    .to_string();
    (config, users)
}

#[derive(Debug)]
pub struct ClickHouse {
    pub dir: PathBuf,
    pub http_port: u16,
    keeper: Mutex<Option<(Child, ChildStdin, BufReader<ChildStdout>)>>,
}

impl ClickHouse {
    /// A server of the caller's own (most tests share [`clickhouse`]).
    pub fn start() -> ClickHouse {
        assert!(
            std::path::Path::new(SERVER).exists(),
            "ClickHouse is not installed ({SERVER} is missing): run scripts/setup, \
             or apt-get install clickhouse-server"
        );
        let dir = tempfile::Builder::new()
            .prefix("bh-ch-")
            .tempdir_in("/tmp")
            .expect("creating the server's directory")
            .keep();
        let http_port = free_port();
        let (config, users) = server_config(&dir, http_port);
        std::fs::write(dir.join("config.xml"), config).expect("writing config.xml");
        std::fs::write(dir.join("users.xml"), users).expect("writing users.xml");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(KEEPER)
            .arg("keeper")
            .arg(&dir)
            .arg(http_port.to_string())
            .arg(SERVER)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting sh for the ClickHouse server");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stdout = BufReader::new(stdout);
        let mut first = String::new();
        let _ = stdout.read_line(&mut first);
        if first.trim() != "ready" {
            let rest: Vec<String> = stdout.lines().map_while(Result::ok).collect();
            panic!("could not start ClickHouse: {first}\n{}", rest.join("\n"));
        }
        ClickHouse {
            dir,
            http_port,
            keeper: Mutex::new(Some((child, stdin, stdout))),
        }
    }

    /// The URL of a new, empty database name on this server (the store creates it), as
    /// `--flows` takes it.
    pub fn fresh_url(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        format!("clickhouse://127.0.0.1:{}/{name}", self.http_port)
    }

    /// Runs one statement over HTTP and returns the response body.
    pub fn query(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("curl")
            .args(["-sS", "--fail-with-body", "--data-binary", "@-"])
            .arg(format!("http://127.0.0.1:{}/", self.http_port))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write as _;
                c.stdin.take().unwrap().write_all(sql.as_bytes())?;
                c.wait_with_output()
            })
            .map_err(|e| e.to_string())?;
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(body)
        } else {
            Err(format!("{body}{}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// Kills the server (`kill -9`), keeping its data for [`ClickHouse::restart`].
    pub fn kill(&self) {
        self.command("kill", "killed");
    }

    /// Starts the server again on the same port and data, after [`ClickHouse::kill`];
    /// returns once it answers.
    pub fn restart(&self) {
        self.command("start", "ready");
    }

    fn command(&self, command: &str, answer: &str) {
        use std::io::Write as _;
        let mut keeper = self.keeper.lock().unwrap();
        let (_, stdin, stdout) = keeper.as_mut().expect("the server was stopped");
        writeln!(stdin, "{command}").expect("telling the keeper");
        stdin.flush().expect("telling the keeper");
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the keeper's answer");
        assert_eq!(line.trim(), answer, "the keeper, asked to {command}");
    }

    /// Stops the server now (as `kill -9` would) and removes its directory.
    pub fn stop(&self) {
        if let Some((mut child, stdin, _)) = self.keeper.lock().unwrap().take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The process's server, started on first use.
pub fn clickhouse() -> &'static ClickHouse {
    static SERVER: OnceLock<ClickHouse> = OnceLock::new();
    SERVER.get_or_init(ClickHouse::start)
}

/// A loopback port nobody listens on at the moment of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("finding a free port")
}
