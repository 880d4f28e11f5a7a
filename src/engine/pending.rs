//! Replies on their way back from shards: `Pending` for one message, `PendingBatch` for a
//! batch split across shards. Both are usable blocking (`wait`) and as a `Future` with a real
//! waker, so the sync and async APIs are one path with two ways to wait.
//!
//! A message that ran inline (its shard was free) has its reply ready before `wait` is
//! called; one that was queued is answered by the thread that drained the queue.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::api::Ack;
use crate::error::Error;
use crate::sync::oneshot::{Closed, Receiver};

/// One shard's reply: `wait` for it, or `.await` it.
#[must_use = "a pending reply does nothing unless waited for or awaited"]
pub struct Pending<T> {
    state: Option<Result<Receiver<T>, Error>>,
    spin: Duration,
}

fn lost(closed: Closed) -> Error {
    if closed.panicked {
        Error::Internal("the shard panicked while handling this request".into())
    } else {
        Error::ShuttingDown
    }
}

impl<T> Pending<T> {
    /// A reply that will arrive on `rx`; a blocking wait spins `spin` before parking.
    pub(super) fn new(rx: Receiver<T>, spin: Duration) -> Self {
        Pending {
            state: Some(Ok(rx)),
            spin,
        }
    }

    /// A request that failed before it reached a shard.
    pub(super) fn failed(e: Error) -> Self {
        Pending {
            state: Some(Err(e)),
            spin: Duration::ZERO,
        }
    }

    /// Blocks until the reply arrives (spinning briefly, then parking the thread).
    pub fn wait(mut self) -> Result<T, Error> {
        match self.state.take().expect("a pending reply is taken once") {
            Ok(rx) => rx.wait(self.spin).map_err(lost),
            Err(e) => Err(e),
        }
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.state.as_mut().expect("polled after completion") {
            Ok(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(r) => {
                    self.state = None;
                    Poll::Ready(r.map_err(lost))
                }
                Poll::Pending => Poll::Pending,
            },
            Err(_) => match self.state.take() {
                Some(Err(e)) => Poll::Ready(Err(e)),
                _ => unreachable!("checked above"),
            },
        }
    }
}

/// One shard's part of a batch: the positions of its events in the batch, and its reply.
pub(super) type Part = (Vec<usize>, Pending<Vec<Result<Ack, Error>>>);

/// The acknowledgements of a batch of events split by shard, gathered back in input order.
#[must_use = "a pending reply does nothing unless waited for or awaited"]
pub struct PendingBatch {
    results: Vec<Result<Ack, Error>>,
    parts: Vec<Part>,
}

impl PendingBatch {
    /// A batch whose `results` already hold validation errors, waiting for `parts`.
    pub(super) fn new(results: Vec<Result<Ack, Error>>, parts: Vec<Part>) -> Self {
        PendingBatch { results, parts }
    }

    /// Blocks until every shard answered; one result per event, in input order.
    pub fn wait(mut self) -> Vec<Result<Ack, Error>> {
        for (positions, part) in std::mem::take(&mut self.parts) {
            scatter(&mut self.results, positions, part.wait());
        }
        self.results
    }
}

impl Future for PendingBatch {
    type Output = Vec<Result<Ack, Error>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        while let Some((_, part)) = self.parts.last_mut() {
            match Pin::new(part).poll(cx) {
                Poll::Ready(acks) => {
                    let (positions, _) = self.parts.pop().expect("checked above");
                    scatter(&mut self.results, positions, acks);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(std::mem::take(&mut self.results))
    }
}

/// Puts one shard's acknowledgements (or its failure) at their positions in the batch.
fn scatter(
    results: &mut [Result<Ack, Error>],
    positions: Vec<usize>,
    acks: Result<Vec<Result<Ack, Error>>, Error>,
) {
    match acks {
        Ok(acks) => {
            for (i, ack) in positions.into_iter().zip(acks) {
                results[i] = ack;
            }
        }
        Err(e) => {
            for i in positions {
                results[i] = Err(e.clone());
            }
        }
    }
}

/// One message sent to every shard (a catalog change, a barrier): done once every shard has
/// handled it, then `value`.
#[must_use = "a pending reply does nothing unless waited for or awaited"]
pub struct PendingAll<T> {
    parts: Vec<Pending<()>>,
    value: Option<Result<T, Error>>,
}

impl<T> PendingAll<T> {
    /// `value` once every part is done.
    pub(super) fn new(parts: Vec<Pending<()>>, value: T) -> Self {
        PendingAll {
            parts,
            value: Some(Ok(value)),
        }
    }

    /// A request that failed before it reached the shards.
    pub(super) fn failed(e: Error) -> Self {
        PendingAll {
            parts: Vec::new(),
            value: Some(Err(e)),
        }
    }

    /// Blocks until every shard is done.
    pub fn wait(mut self) -> Result<T, Error> {
        for part in std::mem::take(&mut self.parts) {
            part.wait()?;
        }
        self.value.take().expect("a pending reply is taken once")
    }
}

impl<T: Unpin> Future for PendingAll<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        while let Some(part) = self.parts.last_mut() {
            match Pin::new(part).poll(cx) {
                Poll::Ready(Ok(())) => {
                    self.parts.pop();
                }
                Poll::Ready(Err(e)) => {
                    self.parts.clear();
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(self.value.take().expect("polled after completion"))
    }
}
