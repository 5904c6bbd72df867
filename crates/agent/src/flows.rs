//! The flows' way out: from the observers' buffer into the disk spool (every second,
//! whatever the server's state), and from the spool to the server, oldest batch first,
//! each removed once acknowledged.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead_api::{FlowBatch, FlowBatchAck, HostFlow};
use reqwest::Method;

use crate::agent::{Outbox, lock};
use crate::client::{Client, ClientError};
use crate::spool::{Spool, SpoolStats};

/// The spool, opened on first use and again after a failure to open it (a state
/// directory on a disk that came back): until then flows wait in memory.
#[derive(Debug)]
pub(crate) struct Spooler {
    dir: PathBuf,
    max_bytes: u64,
    spool: Option<Spool>,
    /// The last write failed (logged once until one succeeds).
    failing: bool,
}

pub(crate) type SharedSpooler = Arc<Mutex<Spooler>>;

impl Spooler {
    pub(crate) fn new(dir: PathBuf, max_bytes: u64) -> SharedSpooler {
        let mut s = Spooler {
            dir,
            max_bytes,
            spool: None,
            failing: false,
        };
        if let Err(e) = s.spool() {
            tracing::error!("{e}; flows wait in memory until the spool can be opened");
            s.failing = true;
        }
        Arc::new(Mutex::new(s))
    }

    fn spool(&mut self) -> Result<&mut Spool, crate::spool::SpoolError> {
        if self.spool.is_none() {
            self.spool = Some(Spool::open(&self.dir, self.max_bytes)?);
        }
        Ok(self.spool.as_mut().expect("opened above"))
    }

    pub(crate) fn stats(&self) -> SpoolStats {
        self.spool.as_ref().map(Spool::stats).unwrap_or_default()
    }
}

/// Moves every flow the observers buffered into the spool, in batches of at most
/// `batch` flows. On a write failure the flows go back to the front of the buffer
/// (bounded where it is filled), to be spooled on a later round.
pub(crate) fn spool_buffered(spooler: &SharedSpooler, outbox: &Arc<Mutex<Outbox>>, batch: usize) {
    loop {
        let flows: Vec<HostFlow> = {
            let mut o = lock(outbox);
            let n = o.flows.len().min(batch.max(1));
            o.flows.drain(..n).collect()
        };
        if flows.is_empty() {
            return;
        }
        let mut s = lock(spooler);
        let written = match s.spool() {
            Ok(spool) => spool.push(flows.clone()),
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => {
                if s.failing {
                    tracing::info!("flow spool writable again");
                    s.failing = false;
                }
            }
            Err(e) => {
                if !s.failing {
                    tracing::error!("{e}; flows wait in memory and are spooled when it works");
                    s.failing = true;
                }
                drop(s);
                let mut o = lock(outbox);
                for f in flows.into_iter().rev() {
                    o.flows.push_front(f);
                }
                o.status.last_error = Some(e.to_string());
                return;
            }
        }
    }
}

/// Spools the buffered flows every `every`, independently of the server.
pub(crate) async fn spool_loop(
    spooler: SharedSpooler,
    outbox: Arc<Mutex<Outbox>>,
    every: Duration,
    batch: usize,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (s, o) = (spooler.clone(), outbox.clone());
        if let Err(e) = tokio::task::spawn_blocking(move || spool_buffered(&s, &o, batch)).await {
            tracing::error!("spooling flows panicked: {e}");
        }
    }
}

/// Sends the spool's batches, oldest first, one at a time, each removed once the
/// server acknowledged it (stored now or before). Stops at the first failure; the
/// batch stays and is sent again next time.
pub(crate) async fn deliver(
    client: &Client,
    spooler: &SharedSpooler,
    outbox: &Arc<Mutex<Outbox>>,
) -> Result<(), ClientError> {
    loop {
        let s = spooler.clone();
        let next: Option<FlowBatch> = tokio::task::spawn_blocking(move || {
            lock(&s).spool.as_mut().and_then(|spool| spool.oldest())
        })
        .await
        .unwrap_or(None);
        let Some(batch) = next else {
            return Ok(());
        };
        let ack: FlowBatchAck = client
            .json(Method::POST, "/api/v1/agent/flows", Some(&batch))
            .await?;
        if ack.acked < batch.batch {
            return Err(ClientError::Protocol(
                "POST /api/v1/agent/flows".into(),
                format!("batch {} answered with ack {}", batch.batch, ack.acked),
            ));
        }
        if ack.repeated {
            tracing::info!(
                "flow batch {} was stored before (its answer was lost); not stored twice",
                batch.batch
            );
            lock(outbox).status.flow_batches_repeated += 1;
        }
        let s = spooler.clone();
        let seq = batch.batch;
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(spool) = lock(&s).spool.as_mut() {
                spool.acknowledged(seq);
            }
        })
        .await;
    }
}
