//! Reading from the client without a read buffer per idle connection.
//!
//! Most connections are quiet most of the time (a phone sends a PINGREQ every few
//! minutes). A quiet connection waits for bytes without owning any buffer: when the socket
//! has data, it is read into one scratch buffer per worker thread and only the bytes read
//! are copied to the connection's own buffer, which the session then decodes and which is
//! dropped again once no partial packet is left in it. A busy connection (its last read
//! filled at least half its room) reads straight into its own buffer, as before, so the
//! hot path costs no copy.
//!
//! This relies on the `AsyncRead` contract: a read that returns `Pending` has not consumed
//! anything, so the scratch buffer is only borrowed inside one `poll` and never across an
//! `.await`.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Size of the per-thread scratch buffer: one read of a quiet connection takes at most this.
pub(super) const SCRATCH: usize = 4 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// Reads what is available into `rbuf`: straight into it when `hot`, else through the
/// thread's scratch buffer (`rbuf` then grows by exactly the bytes read). `Ok(0)` is the
/// end of the stream.
pub(super) async fn read_into<R: AsyncRead + Unpin>(
    rd: &mut R,
    rbuf: &mut BytesMut,
    hot: bool,
) -> io::Result<usize> {
    if hot {
        return rd.read_buf(rbuf).await;
    }
    poll_fn(|cx| poll_scratch(rd, rbuf, cx)).await
}

/// Runs `f` with this thread's scratch buffer. Nothing on this thread reads while another
/// read holds the buffer (a poll does not re-enter); should one ever, it gets a buffer of
/// its own.
fn with_scratch<T>(f: impl FnOnce(&mut [u8]) -> T) -> T {
    SCRATCH_BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut b) => f(&mut b),
        Err(_) => f(&mut vec![0; SCRATCH]),
    })
}

/// One poll of a quiet connection's read through the thread's scratch buffer: `rbuf`
/// grows by exactly the bytes read. `Pending` registers `cx`'s waker with the socket
/// (the parker's way of waiting for bytes, see `parker`).
pub(super) fn poll_scratch<R: AsyncRead + Unpin>(
    rd: &mut R,
    rbuf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    with_scratch(|scratch| {
        let mut rb = ReadBuf::new(scratch);
        match Pin::new(&mut *rd).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let filled = rb.filled();
                rbuf.extend_from_slice(filled);
                Poll::Ready(Ok(filled.len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// Drops `rbuf`'s memory when it holds no partial packet and the connection is quiet.
pub(super) fn release_if_idle(rbuf: &mut BytesMut, hot: bool) {
    if !hot && rbuf.is_empty() && rbuf.capacity() > 0 {
        *rbuf = BytesMut::new();
    }
}

/// Reads what a parked connection's socket (non-blocking, see `readiness`) has through the
/// thread's scratch buffer: `rbuf` grows by exactly the bytes read. `WouldBlock` when there
/// is nothing (the socket's next bytes are a new readiness edge); `Ok(0)` is the end of
/// the stream.
pub(super) fn read_ready<R: io::Read>(rd: &mut R, rbuf: &mut BytesMut) -> io::Result<usize> {
    with_scratch(|scratch| {
        loop {
            match rd.read(scratch) {
                Ok(n) => {
                    rbuf.extend_from_slice(scratch.get(..n).unwrap_or_default());
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    })
}
