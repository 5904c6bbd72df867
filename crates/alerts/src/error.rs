use std::time::Duration;

/// Why one attempt, or one sink's configuration, failed.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("invalid webhook url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: &'static str },
    #[error("encoding the event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("resolving {addr}: {reason}")]
    Resolve { addr: String, reason: String },
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("sending to {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("http exchange with {addr}: {source}")]
    Http {
        addr: String,
        source: reqwest::Error,
    },
    #[error("{addr} answered http {status}")]
    Status { addr: String, status: u16 },
    #[error("{addr} did not complete within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("the sink panicked")]
    Panicked,
}

/// The outcome of delivering one event to one sink, retries included.
#[derive(Debug)]
pub struct Delivery {
    /// Attempts made, at least 1.
    pub attempts: u32,
    /// `Err` holds the last attempt's error: the event is dead-lettered.
    pub result: Result<(), AlertError>,
}

impl Delivery {
    pub fn is_delivered(&self) -> bool {
        self.result.is_ok()
    }
}

/// One failed attempt and whether trying again could help.
pub(crate) struct Failure {
    pub(crate) error: AlertError,
    pub(crate) retryable: bool,
}

impl Failure {
    pub(crate) fn retry(error: AlertError) -> Self {
        Failure {
            error,
            retryable: true,
        }
    }

    pub(crate) fn fatal(error: AlertError) -> Self {
        Failure {
            error,
            retryable: false,
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, or `policy` runs out.
pub(crate) async fn with_retries<F, Fut>(policy: &crate::RetryPolicy, mut attempt: F) -> Delivery
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    let max = policy.attempts();
    let mut made = 0;
    loop {
        made += 1;
        match attempt().await {
            Ok(()) => {
                return Delivery {
                    attempts: made,
                    result: Ok(()),
                };
            }
            Err(f) if !f.retryable || made >= max => {
                return Delivery {
                    attempts: made,
                    result: Err(f.error),
                };
            }
            Err(_) => tokio::time::sleep(policy.backoff(made)).await,
        }
    }
}
