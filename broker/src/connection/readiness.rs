//! The parker's own readiness watch: parked plain-TCP sockets are registered with one
//! `epoll` of the parker's (through `mio`) instead of tokio's reactor.
//!
//! A socket registered with tokio keeps a `ScheduledIo` (the readiness and wakers tokio
//! tracks per socket, padded to a cache line: 256 B of heap with its `Arc`) for as long as
//! it is registered. A parked connection needs none of that: it needs one word when bytes
//! arrive, its record's key in the parker. So a connection that parks leaves tokio's reactor (its
//! socket is duplicated, and the tokio stream dropped, which deregisters it) and its socket
//! joins this watch, keyed by that record's key; when it wakes, the socket goes back to
//! tokio (`TcpStream::from_std`) before the connection's task runs again. The kernel keeps
//! one `epoll` entry per socket either way.
//!
//! One thread waits on the watch (`epoll_wait`, no timeout) and hands every readable key to
//! the parker (see `parker::Shared::ready_id`). The registration is edge-triggered: the
//! parker reads a woken socket until it would block (or has bytes, which resume the
//! connection), so no edge is missed. The thread ends once the parker is gone (its `Drop`
//! wakes the thread, which then finds no parker).

use std::io;
use std::os::fd::AsFd;
use std::sync::Weak;

use mio::{Events, Interest, Poll, Registry, Token};
use tracing::warn;

/// The token of the watch's own waker (record keys never reach it).
const WAKE: Token = Token(usize::MAX);
/// Readiness events taken per `epoll_wait`.
const EVENTS: usize = 1024;

/// The watch: where parked sockets are registered, and how its thread is woken.
pub(super) struct Watch {
    registry: Registry,
    waker: mio::Waker,
}

impl Watch {
    /// Starts the watch and its thread; `ready` is called with each readable connection's
    /// id while `owner` is alive.
    pub(super) fn start<T: Send + Sync + 'static>(
        owner: Weak<T>,
        ready: fn(&T, u64),
    ) -> io::Result<Watch> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = mio::Waker::new(poll.registry(), WAKE)?;
        std::thread::Builder::new()
            .name("sb-parker-watch".into())
            .spawn(move || run(poll, owner, ready))?;
        Ok(Watch { registry, waker })
    }

    /// A parked connection's socket, taken out of tokio's reactor and registered here.
    /// `Err` leaves the tokio stream as it was (the caller keeps using it).
    pub(super) fn register(
        &self,
        stream: &tokio::net::TcpStream,
        id: u64,
    ) -> io::Result<mio::net::TcpStream> {
        let token = usize::try_from(id)
            .ok()
            .filter(|&t| t != WAKE.0)
            .ok_or_else(|| io::Error::other("connection id out of the watch's range"))?;
        let fd = stream.as_fd().try_clone_to_owned()?;
        // The duplicate shares the socket's file status, non-blocking included.
        let mut own = mio::net::TcpStream::from_std(std::net::TcpStream::from(fd));
        self.registry
            .register(&mut own, Token(token), Interest::READABLE)?;
        Ok(own)
    }

    /// A waking connection's socket, out of the watch and back in tokio's reactor.
    pub(super) fn release(
        &self,
        mut stream: mio::net::TcpStream,
    ) -> io::Result<tokio::net::TcpStream> {
        // A failure leaves a stale entry at worst: its events name a connection that is
        // not parked any more, which the parker ignores; closing the socket removes it.
        let _ = self.registry.deregister(&mut stream);
        tokio::net::TcpStream::from_std(std::net::TcpStream::from(stream))
    }

    /// Wakes the thread, which ends if the parker is gone.
    pub(super) fn nudge(&self) {
        let _ = self.waker.wake();
    }
}

/// The watch's thread: hands readable keys to the owner until it is gone.
fn run<T>(mut poll: Poll, owner: Weak<T>, ready: fn(&T, u64)) {
    let mut events = Events::with_capacity(EVENTS);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            warn!(error = %e, "parker's readiness watch failed: parked connections wake only on deliveries and deadlines");
            return;
        }
        let Some(owner) = owner.upgrade() else {
            return;
        };
        for ev in &events {
            if ev.token() != WAKE {
                ready(&owner, ev.token().0 as u64);
            }
        }
    }
}
