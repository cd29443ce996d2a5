//! The broker's stop signal: a cancellation token for the tasks that wait on it, and a
//! flag that hot loops read without the token's lock.
//!
//! Every connection's loop waits on the stop signal among many other things and polls all
//! of them on each wake-up. The token answers `is_cancelled` under a mutex that every
//! connection shares (it is ~2 % of the broker's CPU in the group fan-out bench, across
//! both workers): a loop registers for the token's wake-up once and afterwards reads
//! [`Stop::is_cancelled`], one atomic load.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use tokio_util::sync::CancellationToken;

/// See the module docs. Derefs to the token, for tasks that wait on it or keep a clone.
#[derive(Debug, Default)]
pub struct Stop {
    token: CancellationToken,
    stopping: AtomicBool,
}

impl Stop {
    /// Sets the flag, then cancels the token (whose waiters, woken, see the flag set).
    pub fn cancel(&self) {
        self.stopping.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether the broker is stopping: one atomic load, no lock.
    pub fn is_cancelled(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Completes once the broker stops, for a loop that polls it on every turn: the first
    /// poll registers for the token's wake-up, later ones read the flag and poll the token
    /// only once it is set (the token's wake-up comes after the flag, see
    /// [`Stop::cancel`]).
    pub async fn stopped(&self) {
        let mut cancelled = std::pin::pin!(self.token.cancelled());
        let mut registered = false;
        std::future::poll_fn(move |cx| {
            if registered && !self.is_cancelled() {
                return Poll::Pending;
            }
            registered = true;
            cancelled.as_mut().poll(cx)
        })
        .await
    }
}

impl Deref for Stop {
    type Target = CancellationToken;

    fn deref(&self) -> &CancellationToken {
        &self.token
    }
}

#[cfg(test)]
mod tests {
    use super::Stop;

    #[tokio::test]
    async fn waiters_wake_and_the_flag_is_set() {
        let stop = std::sync::Arc::new(Stop::default());
        let clone = stop.clone();
        let waiter = tokio::spawn(async move { clone.cancelled().await });
        assert!(!stop.is_cancelled());
        tokio::task::yield_now().await;
        stop.cancel();
        waiter.await.expect("woken");
        assert!(stop.is_cancelled() && stop.token.is_cancelled());
    }

    /// A loop that polled `stopped` once (registered) and then only sees the flag still
    /// wakes and completes on `cancel`.
    #[tokio::test]
    async fn a_registered_loop_wakes_on_cancel() {
        let stop = std::sync::Arc::new(Stop::default());
        let clone = stop.clone();
        let (polled_tx, polled_rx) = tokio::sync::oneshot::channel();
        let waiter = tokio::spawn(async move {
            let stopped = clone.stopped();
            tokio::pin!(stopped);
            // First poll registers; a second one reads the flag only.
            assert!(futures_poll_once(stopped.as_mut()).await.is_pending());
            assert!(futures_poll_once(stopped.as_mut()).await.is_pending());
            let _ = polled_tx.send(());
            stopped.await;
        });
        polled_rx.await.expect("polled");
        stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(30), waiter)
            .await
            .expect("woken by cancel")
            .expect("no panic");
    }

    async fn futures_poll_once<F: Future + Unpin>(mut f: F) -> std::task::Poll<F::Output> {
        std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut f).poll(cx))).await
    }
}
