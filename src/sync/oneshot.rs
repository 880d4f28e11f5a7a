//! A one-shot reply channel that a caller can wait on by spinning briefly then parking its
//! thread, or await as a future. This is the crate's only `unsafe` code.
//!
//! The value crosses threads through an `UnsafeCell` guarded by an atomic state machine
//! (`EMPTY → FULL → TAKEN`, or `EMPTY → CLOSED`/`PANICKED` when the sender is dropped unused). The waiter
//! (a parked thread or a task's waker) sits behind a small mutex that is taken once per send and
//! at most once per wait, so a wake-up can never be lost: the sender publishes `FULL` before it
//! locks, and the receiver registers itself under the lock before it re-checks the state.

use std::cell::UnsafeCell;
use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

const EMPTY: u8 = 0;
const FULL: u8 = 1;
const CLOSED: u8 = 2;
const TAKEN: u8 = 3;
/// The sender was dropped unused while its thread was panicking.
const PANICKED: u8 = 4;

enum Waiter {
    Nobody,
    Thread(Thread),
    Task(Waker),
}

struct Inner<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
    waiter: Mutex<Waiter>,
}

// SAFETY: the value is written once by the single `Sender` before `FULL` is published with
// Release, and read once by the single `Receiver` after it observes `FULL` with Acquire; no two
// threads ever access the cell at the same time. `T: Send` is required to move it across.
unsafe impl<T: Send> Sync for Inner<T> {}
// SAFETY: as above; the cell only ever holds a `T: Send`.
unsafe impl<T: Send> Send for Inner<T> {}

impl<T> Drop for Inner<T> {
    fn drop(&mut self) {
        if *self.state.get_mut() == FULL {
            // SAFETY: `FULL` means the value was written and never taken; we have `&mut self`,
            // so no other reference to the cell exists.
            unsafe { self.value.get_mut().assume_init_drop() };
        }
    }
}

impl<T> Inner<T> {
    fn wake(&self) {
        let waiter = std::mem::replace(&mut *self.waiter.lock(), Waiter::Nobody);
        match waiter {
            Waiter::Nobody => {}
            Waiter::Thread(t) => t.unpark(),
            Waiter::Task(w) => w.wake(),
        }
    }

    /// Takes the value if the state is `FULL`; `Err(())` if the sender closed unused.
    fn try_take(&self) -> Option<Result<T, Closed>> {
        match self.state.load(Ordering::Acquire) {
            FULL => {
                self.state.store(TAKEN, Ordering::Relaxed);
                // SAFETY: `FULL` was published with Release after the write, observed here with
                // Acquire; only the single receiver reaches this, and it sets `TAKEN` first so
                // it (and `Drop`) never reads the value again.
                Some(Ok(unsafe { (*self.value.get()).assume_init_read() }))
            }
            CLOSED | TAKEN => Some(Err(Closed { panicked: false })),
            PANICKED => Some(Err(Closed { panicked: true })),
            _ => None,
        }
    }
}

/// The sender dropped without sending (the other side went away).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    /// Whether it was dropped by a panic unwinding through its holder.
    pub panicked: bool,
}

/// The sending half; `send` consumes it. Dropping it unused wakes the receiver with `Closed`.
pub struct Sender<T> {
    inner: Option<Arc<Inner<T>>>,
}

/// The receiving half: `wait` blocks, or `.await` it.
pub struct Receiver<T> {
    inner: Arc<Inner<T>>,
}

/// A new channel.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: AtomicU8::new(EMPTY),
        value: UnsafeCell::new(MaybeUninit::uninit()),
        waiter: Mutex::new(Waiter::Nobody),
    });
    (
        Sender {
            inner: Some(inner.clone()),
        },
        Receiver { inner },
    )
}

impl<T> Sender<T> {
    /// Sends the value and wakes the receiver.
    pub fn send(mut self, value: T) {
        // `inner` is only `None` after `send` or `drop`, and `send` consumes `self`.
        let inner = self.inner.take().expect("sender used once");
        // SAFETY: state is `EMPTY` (only this sender moves it out of `EMPTY`, once), so the
        // receiver does not read the cell until it observes the `FULL` stored below.
        unsafe { (*inner.value.get()).write(value) };
        inner.state.store(FULL, Ordering::Release);
        inner.wake();
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let state = if std::thread::panicking() {
                PANICKED
            } else {
                CLOSED
            };
            inner.state.store(state, Ordering::Release);
            inner.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// Waits for the value: spins for up to `spin`, then parks the thread.
    pub fn wait(self, spin: Duration) -> Result<T, Closed> {
        let inner = &self.inner;
        let start = Instant::now();
        let mut rounds = 0u32;
        loop {
            if let Some(r) = inner.try_take() {
                return r;
            }
            rounds += 1;
            if rounds % 64 == 0 && start.elapsed() >= spin {
                break;
            }
            std::hint::spin_loop();
        }
        *inner.waiter.lock() = Waiter::Thread(std::thread::current());
        loop {
            if let Some(r) = inner.try_take() {
                return r;
            }
            std::thread::park();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, Closed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &self.inner;
        if let Some(r) = inner.try_take() {
            return Poll::Ready(r);
        }
        *inner.waiter.lock() = Waiter::Task(cx.waker().clone());
        match inner.try_take() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_crosses_threads() {
        for spin in [Duration::ZERO, Duration::from_micros(50)] {
            let (tx, rx) = channel();
            let t = std::thread::spawn(move || tx.send(String::from("hi")));
            assert_eq!(rx.wait(spin).unwrap(), "hi");
            t.join().unwrap();
        }
    }

    #[test]
    fn dropped_sender_closes() {
        let (tx, rx) = channel::<u32>();
        drop(tx);
        assert_eq!(rx.wait(Duration::ZERO), Err(Closed { panicked: false }));
    }

    #[test]
    fn unreceived_value_is_dropped() {
        let marker = Arc::new(());
        let (tx, rx) = channel();
        tx.send(marker.clone());
        drop(rx);
        assert_eq!(Arc::strong_count(&marker), 1);
    }
}
