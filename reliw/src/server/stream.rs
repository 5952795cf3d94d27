//! The connection as a byte stream (`AsyncRead` + `AsyncWrite`), for the
//! `h2` codec, which polls where the HTTP/1.1 driver hands over owned
//! buffers. On io_uring the socket is read and written with non-blocking
//! syscalls when tokio's reactor (which tokio-uring runs on) says it is
//! ready, as file bodies already are; the connection's task stays on the
//! worker's io_uring runtime.
//!
//! - [`SocketStream`]: a tokio-uring socket, by readiness.
//! - [`TlsStream`]: rustls over any stream, carrying on the session the
//!   owned-buffer [`Tls`](super::tls::Tls) transport established.
//! - [`Prefixed`]: bytes already read (an h2c preface) before the rest.
//! - [`Watched`]: what the client sends, through [`FrameWatch`].
//! - [`Coalesce`]: what the codec writes in one turn, in one write.

use std::cell::Cell;
use std::io::{self, IoSlice, Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::h2_watch::{Flood, FrameWatch};

/// A tokio-uring socket read and written by readiness.
pub(crate) struct SocketStream {
    /// Owns the socket (closed on drop); not used for I/O any more.
    _owner: tokio_uring::net::TcpStream,
    fd: AsyncFd<OwnedFd>,
}

impl SocketStream {
    pub(crate) fn new(owner: tokio_uring::net::TcpStream) -> io::Result<Self> {
        let fd = super::transport::readiness(&owner)?;
        Ok(Self { _owner: owner, fd })
    }
}

fn errno(e: rustix::io::Errno) -> io::Error {
    if e == rustix::io::Errno::AGAIN {
        io::ErrorKind::WouldBlock.into()
    } else {
        e.into()
    }
}

impl AsyncRead for SocketStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let got = guard.try_io(|fd| {
                let flags = rustix::net::RecvFlags::DONTWAIT;
                rustix::net::recv(fd.get_ref(), buf.initialize_unfilled(), flags)
                    .map(|(n, _)| n)
                    .map_err(errno)
            });
            match got {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => {}
            }
        }
    }
}

impl AsyncWrite for SocketStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            let sent = guard.try_io(|fd| {
                let flags = rustix::net::SendFlags::NOSIGNAL | rustix::net::SendFlags::DONTWAIT;
                let mut control = rustix::net::SendAncillaryBuffer::default();
                rustix::net::sendmsg(fd.get_ref(), bufs, &mut control, flags).map_err(errno)
            });
            if let Ok(result) = sent {
                return Poll::Ready(result);
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = rustix::net::shutdown(self.fd.get_ref(), rustix::net::Shutdown::Write);
        Poll::Ready(Ok(()))
    }
}

/// Lets rustls's blocking-style `read_tls`/`write_tls` poll a stream:
/// `Pending` becomes `WouldBlock`, with the waker registered.
struct Polled<'a, 'b, S> {
    io: &'a mut S,
    cx: &'a mut Context<'b>,
}

impl<S: AsyncRead + Unpin> io::Read for Polled<'_, '_, S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(out);
        match Pin::new(&mut *self.io).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<S: AsyncWrite + Unpin> io::Write for Polled<'_, '_, S> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(data)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write_vectored(self.cx, bufs) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A TLS session over a stream.
pub(crate) struct TlsStream<S> {
    io: S,
    conn: rustls::Connection,
    closing: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream<S> {
    /// Carries on `conn` (handshake done; `pending`: TLS bytes read but not
    /// yet given to it) over `io`.
    pub(crate) fn new(io: S, mut conn: rustls::Connection, pending: &[u8]) -> io::Result<Self> {
        let mut rest = pending;
        while !rest.is_empty() {
            let used = conn.read_tls(&mut rest)?;
            conn.process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if used == 0 {
                break;
            }
        }
        Ok(Self {
            io,
            conn,
            closing: false,
        })
    }

    /// Writes what rustls has queued until it is out or the socket is full.
    fn poll_write_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.conn.wants_write() {
            let mut sink = Polled {
                io: &mut self.io,
                cx,
            };
            match self.conn.write_tls(&mut sink) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match this.conn.reader().read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP closed without close_notify: EOF all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(e)),
            }
            // A ticket or key update may be waiting to go; not reading for it.
            if let Poll::Ready(Err(e)) = this.poll_write_tls(cx) {
                return Poll::Ready(Err(e));
            }
            let mut source = Polled {
                io: &mut this.io,
                cx,
            };
            match this.conn.read_tls(&mut source) {
                Ok(0) => return Poll::Ready(Ok(())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
            if let Err(e) = this.conn.process_new_packets() {
                // The alert rustls queued tells the peer why.
                let _ = this.poll_write_tls(cx);
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // Room in rustls's buffer first, then take what fits.
        if let Poll::Ready(Err(e)) = this.poll_write_tls(cx) {
            return Poll::Ready(Err(e));
        }
        let taken = this.conn.writer().write(data)?;
        if let Poll::Ready(Err(e)) = this.poll_write_tls(cx) {
            return Poll::Ready(Err(e));
        }
        if taken == 0 && !data.is_empty() {
            // Full, and the socket is too: the waker is registered.
            return Poll::Pending;
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Poll::Ready(Err(e)) = this.poll_write_tls(cx) {
            return Poll::Ready(Err(e));
        }
        let taken = this.conn.writer().write_vectored(bufs)?;
        if let Poll::Ready(Err(e)) = this.poll_write_tls(cx) {
            return Poll::Ready(Err(e));
        }
        if taken == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Poll::Pending;
        }
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_write_tls(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.closing {
            this.conn.send_close_notify();
            this.closing = true;
        }
        ready!(this.poll_write_tls(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// `AsyncWrite` for a wrapper that only changes reading: every write
/// call goes to its `io` as it is.
macro_rules! write_through {
    ($wrapper:ident) => {
        impl<S: AsyncWrite + Unpin> AsyncWrite for $wrapper<S> {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                data: &[u8],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.io).poll_write(cx, data)
            }
            fn poll_write_vectored(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
            }
            fn is_write_vectored(&self) -> bool {
                self.io.is_write_vectored()
            }
            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.io).poll_flush(cx)
            }
            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.io).poll_shutdown(cx)
            }
        }
    };
}

/// `prefix` (bytes the HTTP/1.1 driver read already), then the stream.
pub(crate) struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    io: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(prefix: Vec<u8>, io: S) -> Self {
        Self { prefix, at: 0, io }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

write_through!(Prefixed);

/// Where a [`Watched`] stream reports a flood: the connection driver
/// waits on it beside the codec.
#[derive(Default)]
pub(crate) struct FloodAlarm {
    tripped: Cell<Option<Flood>>,
    notify: tokio::sync::Notify,
}

impl FloodAlarm {
    pub(crate) async fn wait(&self) -> Flood {
        loop {
            if let Some(f) = self.tripped.get() {
                return f;
            }
            self.notify.notified().await;
        }
    }
}

/// A client stream whose incoming bytes pass through a [`FrameWatch`];
/// after a flood it gives the codec nothing more to read.
pub(crate) struct Watched<S> {
    io: S,
    watch: FrameWatch,
    alarm: Rc<FloodAlarm>,
}

impl<S> Watched<S> {
    pub(crate) fn new(io: S, limit: u32, alarm: Rc<FloodAlarm>) -> Self {
        Self {
            io,
            watch: FrameWatch::new(limit),
            alarm,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.alarm.tripped.get().is_some() {
            return Poll::Pending;
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let fresh = &buf.filled()[before..];
        if let Err(flood) = this.watch.feed(fresh, std::time::Instant::now()) {
            this.alarm.tripped.set(Some(flood));
            this.alarm.notify.notify_one();
            // The frames that tipped it over are not handed on.
            buf.set_filled(before);
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
}

write_through!(Watched);

/// Bytes of output gathered before they must be written.
const COALESCE: usize = 64 * 1024;

/// Gathers what the codec writes during one turn of the connection's task
/// and writes it at the next turn, in one go. The codec flushes after
/// each DATA frame (its encoder holds one at a time), which made one
/// system call (and, under TLS, one record) per response; here the first
/// flush of a turn only wakes the task again, and the next one (or the
/// next read) writes everything gathered meanwhile.
pub(crate) struct Coalesce<S> {
    io: S,
    buf: Vec<u8>,
    /// How much of `buf` is written already.
    at: usize,
    /// A flush was put off to the next turn.
    armed: bool,
}

impl<S> Coalesce<S> {
    pub(crate) fn new(io: S) -> Self {
        Self {
            io,
            buf: Vec::new(),
            at: 0,
            armed: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Writes out everything gathered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.at < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.at += n;
        }
        self.buf.clear();
        self.at = 0;
        self.armed = false;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.armed
            && let Poll::Ready(Err(e)) = this.poll_drain(cx)
        {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if this.buf.len() + total > COALESCE {
            ready!(this.poll_drain(cx))?;
            if total >= COALESCE {
                return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
            }
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.buf.is_empty() {
            return Pin::new(&mut this.io).poll_flush(cx);
        }
        if !this.armed {
            this.armed = true;
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}
