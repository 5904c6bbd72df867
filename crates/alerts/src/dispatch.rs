use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{AlertError, AlertEvent, Delivery, SyslogSink, WebhookSink};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Somewhere alerts go. A sink retries on its own (its policy knows what is worth
/// retrying) and reports how many attempts it made.
pub trait Sink: Send + Sync + fmt::Debug + 'static {
    /// The name metrics are reported under.
    fn name(&self) -> &str;
    fn deliver<'a>(&'a self, event: &'a AlertEvent) -> BoxFuture<'a, Delivery>;
}

impl Sink for WebhookSink {
    fn name(&self) -> &str {
        WebhookSink::name(self)
    }
    fn deliver<'a>(&'a self, event: &'a AlertEvent) -> BoxFuture<'a, Delivery> {
        Box::pin(WebhookSink::deliver(self, event))
    }
}

impl Sink for SyslogSink {
    fn name(&self) -> &str {
        SyslogSink::name(self)
    }
    fn deliver<'a>(&'a self, event: &'a AlertEvent) -> BoxFuture<'a, Delivery> {
        Box::pin(SyslogSink::deliver(self, event))
    }
}

/// One sink's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkMetrics {
    pub sink: String,
    /// Events the sink accepted.
    pub delivered: u64,
    /// Attempts beyond the first, over all events.
    pub retried: u64,
    /// Events given up on: attempts exhausted or refused for good (a 4xx).
    pub dead_lettered: u64,
    /// Events never queued: the queue was full or the dispatcher shut down.
    pub dropped: u64,
    /// Events waiting in the queue now.
    pub queued: u64,
    /// The error that dead-lettered the latest event that was.
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    fn record(&self, sink: &str, delivery: Delivery) {
        let retried = u64::from(delivery.attempts.saturating_sub(1));
        self.retried.fetch_add(retried, Ordering::Relaxed);
        match delivery.result {
            Ok(()) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::warn!(
                    sink,
                    attempts = delivery.attempts,
                    %error,
                    "alert dead-lettered"
                );
                *self
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
                self.dead_lettered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[derive(Debug)]
struct Lane {
    name: String,
    capacity: usize,
    counters: Arc<Counters>,
}

/// Fans events out to sinks, each through its own bounded queue and worker task, so
/// a sink that is down delays only itself. Within one sink events go out one at a
/// time, in order.
#[derive(Debug)]
pub struct Dispatcher {
    lanes: Vec<Lane>,
    /// `None` once shut down.
    queues: RwLock<Option<Vec<mpsc::Sender<Arc<AlertEvent>>>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Dispatcher {
    /// Starts one worker per sink, each with a queue of `queue_capacity` events
    /// (at least 1).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(sinks: Vec<Arc<dyn Sink>>, queue_capacity: usize) -> Self {
        let capacity = queue_capacity.max(1);
        let mut lanes = Vec::with_capacity(sinks.len());
        let mut queues = Vec::with_capacity(sinks.len());
        let mut workers = Vec::with_capacity(sinks.len());
        for sink in sinks {
            let (tx, rx) = mpsc::channel(capacity);
            let counters = Arc::new(Counters::default());
            lanes.push(Lane {
                name: sink.name().to_owned(),
                capacity,
                counters: Arc::clone(&counters),
            });
            queues.push(tx);
            workers.push(tokio::spawn(work(sink, rx, counters)));
        }
        Dispatcher {
            lanes,
            queues: RwLock::new(Some(queues)),
            workers: Mutex::new(workers),
        }
    }

    /// Queues `event` for every sink without waiting. Returns whether every sink took
    /// it; each sink that did not counts a drop.
    pub fn send(&self, event: AlertEvent) -> bool {
        let event = Arc::new(event);
        let queues = self.queues.read().unwrap_or_else(PoisonError::into_inner);
        let mut all = true;
        for (i, lane) in self.lanes.iter().enumerate() {
            let queued = queues
                .as_ref()
                .and_then(|q| q.get(i))
                .is_some_and(|tx| tx.try_send(Arc::clone(&event)).is_ok());
            if !queued {
                lane.counters.dropped.fetch_add(1, Ordering::Relaxed);
                all = false;
            }
        }
        all
    }

    /// Stops taking events and waits until every queued one is delivered or
    /// dead-lettered. Later [`send`](Self::send)s count drops.
    pub async fn shutdown(&self) {
        drop(
            self.queues
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let workers =
            std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        for worker in workers {
            let _ = worker.await;
        }
    }

    /// Counters per sink, in the order the sinks were given.
    pub fn metrics(&self) -> Vec<SinkMetrics> {
        let queues = self.queues.read().unwrap_or_else(PoisonError::into_inner);
        self.lanes
            .iter()
            .enumerate()
            .map(|(i, lane)| {
                let c = &lane.counters;
                let free = queues
                    .as_ref()
                    .and_then(|q| q.get(i))
                    .map_or(lane.capacity, |tx| tx.capacity());
                SinkMetrics {
                    sink: lane.name.clone(),
                    delivered: c.delivered.load(Ordering::Relaxed),
                    retried: c.retried.load(Ordering::Relaxed),
                    dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
                    dropped: c.dropped.load(Ordering::Relaxed),
                    queued: (lane.capacity - free) as u64,
                    last_error: c
                        .last_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone(),
                }
            })
            .collect()
    }
}

async fn work(
    sink: Arc<dyn Sink>,
    mut queue: mpsc::Receiver<Arc<AlertEvent>>,
    counters: Arc<Counters>,
) {
    while let Some(event) = queue.recv().await {
        // Each delivery runs as its own task so that a panicking sink loses one event,
        // not its worker and everything queued behind it.
        let task = {
            let sink = Arc::clone(&sink);
            tokio::spawn(async move { sink.deliver(&event).await })
        };
        let delivery = task.await.unwrap_or(Delivery {
            attempts: 1,
            result: Err(AlertError::Panicked),
        });
        counters.record(sink.name(), delivery);
    }
}
