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
}
