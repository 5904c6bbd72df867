//! The accept loop both listeners share (plain HTTP for the API and console, TLS for
//! agents), with the limits that keep one client from starving the others: a cap on
//! connections per address and in all, a TLS handshake timeout, a header-read timeout
//! that also closes idle keep-alive connections, and a back-off when accepting fails
//! (out of file descriptors) instead of a busy loop.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tower::ServiceExt as _;

/// How much one client may hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A client must send a request's headers within this, counted from the
    /// connection's start or from the end of the previous response (so it is also the
    /// idle timeout of a keep-alive connection).
    pub header_read_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    /// Open connections from one address.
    pub per_address: usize,
    /// Open connections in all, kept under the file descriptor limit.
    pub total: usize,
    /// How long in-flight requests get to finish at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(15),
            tls_handshake_timeout: Duration::from_secs(10),
            per_address: 256,
            total: 4096,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Connections turned away by the caps, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub refused_per_address: AtomicU64,
    pub refused_total: AtomicU64,
    pub accept_errors: AtomicU64,
}

#[derive(Default)]
struct Open {
    by_address: HashMap<IpAddr, usize>,
    total: usize,
}

/// One open connection's place under the caps, given back when it closes.
struct Slot {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut o) = self.open.lock() {
            o.total = o.total.saturating_sub(1);
            if let Some(n) = o.by_address.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    o.by_address.remove(&self.ip);
                }
            }
        }
    }
}

fn take_slot(
    open: &Arc<Mutex<Open>>,
    ip: IpAddr,
    limits: &Limits,
    stats: &ConnectionStats,
) -> Option<Slot> {
    let mut o = open.lock().ok()?;
    if o.total >= limits.total {
        stats.refused_total.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    let n = o.by_address.entry(ip).or_default();
    if *n >= limits.per_address {
        stats.refused_per_address.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    *n += 1;
    o.total += 1;
    Some(Slot {
        open: open.clone(),
        ip,
    })
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown`
/// resolves, then lets in-flight requests finish for `limits.shutdown_grace`. Each
/// request carries its peer's address as `ConnectInfo`.
pub async fn serve(
    app: Router,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    stats: Arc<ConnectionStats>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let open: Arc<Mutex<Open>> = Arc::default();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut backoff = Duration::from_millis(5);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(5);
                    a
                }
                Err(e) => {
                    // EMFILE and friends: the next accept would fail the same way at
                    // once, so wait for connections to close instead of spinning.
                    stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("accept: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = take_slot(&open, peer.ip(), &limits, &stats) else {
            drop(tcp);
            continue;
        };
        let app = app.clone();
        let tls = tls.clone();
        let limits = limits.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(tcp));
                    match handshake.await {
                        Ok(Ok(stream)) => serve_one(app, stream, peer, &limits, watcher).await,
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {peer}: {e}"),
                        Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
                    }
                }
                None => serve_one(app, tcp, peer, &limits, watcher).await,
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: requests still in flight after the grace period");
    }
    Ok(())
}

async fn serve_one<IO>(
    app: Router,
    io: IO,
    peer: SocketAddr,
    limits: &Limits,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req)
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!("connection {peer}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_address_and_in_all_and_given_back() {
        let limits = Limits {
            per_address: 2,
            total: 3,
            ..Limits::default()
        };
        let stats = ConnectionStats::default();
        let open: Arc<Mutex<Open>> = Arc::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let a1 = take_slot(&open, a, &limits, &stats).unwrap();
        let _a2 = take_slot(&open, a, &limits, &stats).unwrap();
        assert!(take_slot(&open, a, &limits, &stats).is_none());
        let _b1 = take_slot(&open, b, &limits, &stats).unwrap();
        assert!(take_slot(&open, b, &limits, &stats).is_none(), "total cap");
        drop(a1);
        assert!(take_slot(&open, a, &limits, &stats).is_some());
        assert_eq!(stats.refused_per_address.load(Ordering::Relaxed), 1);
        assert_eq!(stats.refused_total.load(Ordering::Relaxed), 1);
    }
}
