//! The pieces of `bench/enforce.sh` (the enforcement benchmark) that need to be fast or
//! need the library. The script creates the namespaces; this binary never does.
//!
//! ```text
//! enforce_bench apply NETNS PEERS CLIENT PORT RUNS   # render + apply timings (TSV), table left in place
//! enforce_bench iptables PEERS CLIENT PORT           # the same rules as a linear chain (iptables-restore)
//! enforce_bench serve ADDR:PORT                      # accept and close, forever
//! enforce_bench connect ADDR:PORT SECONDS THREADS    # connect + close in a loop; prints conn/s
//! ```
//!
//! The host policy: 8 inbound allow rules (tcp/8001 … tcp/8008), PEERS addresses spread
//! over them round-robin, one in ten IPv6; CLIENT is added to the last rule (tcp/PORT
//! must be 8008 for the client to be allowed). IPv4 peers come from 10.0.0.0/8 and IPv6
//! peers from fd00::/8, every other address, so no two merge into a range; they are set
//! elements only: no packet is ever sent to them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bulkhead_model::{Action, EnforcementMode, ServicePort};
use bulkhead_nft::{Nft, RenderOptions, render};
use bulkhead_policy::host::{HostPolicy, HostRule, Peers};
use ipnet::IpNet;

const RULES: u16 = 8;
const FIRST_PORT: u16 = 8001;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["apply", ns, peers, client, port, runs] => {
            apply(ns, num(peers), ip(client), num(port) as u16, num(runs))
        }
        ["iptables", peers, client, port] => iptables(num(peers), ip(client), num(port) as u16),
        ["serve", addr] => serve(addr.parse().expect("ADDR:PORT")),
        ["connect", addr, secs, threads] => connect(
            addr.parse().expect("ADDR:PORT"),
            num(secs) as u64,
            num(threads),
        ),
        _ => {
            eprintln!("usage: see the top of crates/nft/examples/enforce_bench.rs");
            std::process::exit(2);
        }
    }
}

fn num(s: &str) -> usize {
    s.parse().unwrap_or_else(|_| panic!("not a number: {s}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|_| panic!("not an address: {s}"))
}

/// Peer `i` of the generated estate: every other address, so none are adjacent.
fn peer(i: usize) -> IpAddr {
    let i = i as u32;
    if i % 10 == 9 {
        IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0,
            0,
            0,
            0,
            0,
            (i >> 15) as u16,
            (i << 1) as u16,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + 2 * i))
    }
}

/// `peers` generated addresses in 8 rules, plus `client` in the last one.
fn host_policy(peers: usize, client: IpAddr) -> HostPolicy {
    let mut per_rule: Vec<Vec<IpAddr>> = vec![Vec::new(); RULES as usize];
    for i in 0..peers {
        per_rule[i % RULES as usize].push(peer(i));
    }
    per_rule[RULES as usize - 1].push(client);
    let inbound = per_rule
        .into_iter()
        .enumerate()
        .map(|(r, mut addrs)| {
            // Sorted, IPv4 first, as the IR has them.
            addrs.sort_by_key(|a| (a.is_ipv6(), *a));
            HostRule {
                tier: "application".into(),
                tier_index: 0,
                rule_id: format!("bench-r{r}"),
                action: Action::Allow,
                local: vec![server_addr()],
                peers: Peers::Nets(addrs.into_iter().map(IpNet::from).collect()),
                services: vec![(ServicePort::tcp(FIRST_PORT + r as u16), None)],
            }
        })
        .collect();
    HostPolicy {
        workload: "bench-server".into(),
        mode: EnforcementMode::Enforced,
        addresses: vec![server_addr()],
        inbound,
        outbound: Vec::new(),
        quarantined: false,
    }
}

/// Only used to decide that every rule is about the whole host (no local match).
fn server_addr() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 168, 77, 1))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Render, apply into an empty namespace, apply over the same table, read back, check
/// for drift: the median of `runs` of each, as one TSV line (milliseconds).
fn apply(ns: &str, peers: usize, client: IpAddr, port: u16, runs: usize) {
    assert_eq!(
        port,
        FIRST_PORT + RULES - 1,
        "the client is in the last rule"
    );
    let hp = host_policy(peers, client);
    let opts = RenderOptions::default();
    let nft = Nft::in_netns(ns);
    let absent = "table inet bulkhead {}\ndelete table inet bulkhead\n";

    let mut render_t = Vec::new();
    let mut text = String::new();
    for _ in 0..runs {
        let t = Instant::now();
        text = render(&hp, &opts);
        render_t.push(t.elapsed());
    }
    let (mut new_t, mut replace_t, mut snapshot_t, mut drift_t) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        nft.apply(absent).expect("remove the table");
        let t = Instant::now();
        nft.apply(&text).expect("apply into an empty namespace");
        new_t.push(t.elapsed());
        let t = Instant::now();
        nft.apply(&text).expect("apply over the same table");
        replace_t.push(t.elapsed());
        let t = Instant::now();
        let snap = nft.snapshot().expect("read back");
        snapshot_t.push(t.elapsed());
        let t = Instant::now();
        let drift = nft.check_drift(&snap).expect("read back");
        drift_t.push(t.elapsed());
        assert!(drift.is_none(), "the table changed under the benchmark");
    }
    println!(
        "{peers}\t{}\t{}\t{}\t{}\t{}\t{}",
        text.len(),
        ms(median(render_t)),
        ms(median(new_t)),
        ms(median(replace_t)),
        ms(median(snapshot_t)),
        ms(median(drift_t)),
    );
}

/// The same IPv4 rules, one iptables rule per peer and port in the same order, after the
/// same established/related and loopback accepts, then a DROP; `iptables-restore` input.
fn iptables(peers: usize, client: IpAddr, port: u16) {
    use std::fmt::Write as _;
    assert_eq!(
        port,
        FIRST_PORT + RULES - 1,
        "the client is in the last rule"
    );
    let hp = host_policy(peers, client);
    let mut out = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n\
         -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A INPUT -i lo -j ACCEPT\n\
         -A INPUT -p tcp --dport 22 -j ACCEPT\n",
    );
    for rule in &hp.inbound {
        let Peers::Nets(nets) = &rule.peers else {
            unreachable!()
        };
        let (sp, _) = rule.services[0];
        for net in nets.iter().filter(|n| n.addr().is_ipv4()) {
            let _ = writeln!(
                out,
                "-A INPUT -s {net} -p tcp --dport {} -j ACCEPT",
                sp.ports.start
            );
        }
    }
    out.push_str("-A INPUT -j DROP\nCOMMIT\n");
    print!("{out}");
}

fn serve(addr: SocketAddr) {
    // std listens with a backlog of 128, which a fast client overflows whenever the
    // server thread is descheduled; the overflow then drops SYNs and the client waits
    // a second for the retransmission. The kernel caps this at net.core.somaxconn.
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket.bind(&addr.into()).expect("bind");
    socket.listen(4096).expect("listen");
    let listener: TcpListener = socket.into();
    println!("ready");
    let spare = listener.try_clone().expect("clone the listener");
    std::thread::spawn(move || accept_loop(&spare));
    accept_loop(&listener);
}

fn accept_loop(listener: &TcpListener) {
    loop {
        // Dropped at once: accept and close is all the server does.
        let _ = listener.accept();
    }
}

/// Completed connect + close per second, over `threads` client threads.
fn connect(addr: SocketAddr, secs: u64, threads: usize) {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                        Ok(s) => {
                            drop(s);
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("first failed connect: {e}");
                            }
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    for w in workers {
        let _ = w.join();
    }
    let n = done.load(Ordering::Relaxed);
    println!(
        "{:.0}\t{n}\t{}",
        n as f64 / elapsed.as_secs_f64(),
        failed.load(Ordering::Relaxed)
    );
}
