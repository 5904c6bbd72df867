//! Long-lived TCP sessions for tests that cut connections (quarantine): an echo server
//! and a client that pings it, both python3 scripts run inside a test's namespace.

use std::io::{BufRead as _, BufReader};
use std::process::ChildStdout;

/// `python3 -c ACCEPT_AND_CLOSE ADDR PORT…`: listens on every port, accepts and closes
/// each connection (a reachability probe's other end); prints "ready" once bound.
pub const ACCEPT_AND_CLOSE: &str = r#"
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in sys.argv[2:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(port)))
    s.listen(64)
    sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        conn.close()
"#;

/// `python3 -c ECHO_SERVER ADDR PORT`: echoes every connection, one thread each; prints
/// "ready" once listening.
pub const ECHO_SERVER: &str = r#"
import socket, sys, threading
def serve(c):
    while True:
        d = c.recv(100)
        if not d:
            return
        c.sendall(d)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// `python3 -c SESSION ADDR PORT`: opens one connection ("open"), then pings it and
/// prints one line per ping: "alive" while answers come back, "cut" once one does not
/// within a second (or "closed"), and exits.
pub const SESSION: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
s.settimeout(1)
print("open", flush=True)
while True:
    try:
        s.sendall(b"p")
        if not s.recv(10):
            print("closed", flush=True)
            break
        print("alive", flush=True)
    except OSError:
        print("cut", flush=True)
        break
    time.sleep(0.1)
"#;

/// The output of a [`SESSION`] client, read by a thread of its own so that lines
/// printed while the test waited can be told from the ones printed after.
#[derive(Debug)]
pub struct Session {
    lines: std::sync::mpsc::Receiver<String>,
    /// The last line, when [`Session::skip_printed`] skipped the end.
    ended: Option<String>,
}

impl Session {
    /// Waits for "open": the connection is established.
    pub fn opened(stdout: ChildStdout) -> Session {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line.trim().to_string()).is_err() {
                    return;
                }
            }
        });
        let mut s = Session {
            lines: rx,
            ended: None,
        };
        let first = s.next_line();
        assert_eq!(first, "open", "the session did not open");
        s
    }

    /// The next line; "" once the client has exited.
    pub fn next_line(&mut self) -> String {
        if let Some(end) = self.ended.take() {
            return end;
        }
        self.lines.recv().unwrap_or_default()
    }

    /// Forgets the "alive" lines printed so far: what follows is about what happens
    /// from now (an end already printed is kept).
    pub fn skip_printed(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            if line != "alive" {
                self.ended = Some(line);
                return;
            }
        }
    }

    /// Lines until the session ends ("cut", "closed", or the client exited) or `most`
    /// lines were read.
    pub fn until_end(&mut self, most: usize) -> Vec<String> {
        let mut lines = Vec::new();
        while lines.len() < most {
            let line = self.next_line();
            let end = line != "alive";
            lines.push(line);
            if end {
                break;
            }
        }
        lines
    }
}

/// Waits for an [`ECHO_SERVER`]'s "ready".
pub fn wait_ready(stdout: ChildStdout) {
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("reading the echo server");
    assert_eq!(line.trim(), "ready", "the echo server did not start");
}
