//! The one I/O seam: what a connection driver needs from a socket, with
//! owned buffers (the io_uring model), implemented for tokio-uring and for
//! plain tokio (epoll). tokio-uring's types never leave this module.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd as _, BorrowedFd, OwnedFd};
use std::rc::Rc;

use bytes::Bytes;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_uring::buf::BoundedBuf as _;

/// A listening socket of one runtime.
pub(crate) trait Acceptor {
    type Conn: Connect + IntoStream;
    /// The next connection (with TCP_NODELAY set).
    async fn accept(&self) -> io::Result<(Self::Conn, std::net::SocketAddr)>;
    /// Stops listening now, even with an accept still pending.
    fn close(self);
}

/// tokio-uring's listener.
pub(crate) struct UringListener {
    listener: tokio_uring::net::TcpListener,
    /// A handle to shut the socket down: an abandoned io_uring accept keeps
    /// the listener open until it completes.
    stopper: std::net::TcpListener,
}

impl UringListener {
    pub(crate) fn new(listener: std::net::TcpListener) -> io::Result<Self> {
        let stopper = listener.try_clone()?;
        Ok(Self {
            listener: tokio_uring::net::TcpListener::from_std(listener),
            stopper,
        })
    }
}

impl Acceptor for UringListener {
    type Conn = Uring;

    async fn accept(&self) -> io::Result<(Uring, std::net::SocketAddr)> {
        let (stream, peer) = self.listener.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((Uring::new(stream), peer))
    }

    fn close(self) {
        let _ = socket2::SockRef::from(&self.stopper).shutdown(std::net::Shutdown::Both);
    }
}

/// tokio's (epoll) listener.
pub(crate) struct EpollListener(tokio::net::TcpListener);

impl EpollListener {
    pub(crate) fn new(listener: std::net::TcpListener) -> io::Result<Self> {
        tokio::net::TcpListener::from_std(listener).map(Self)
    }
}

impl Acceptor for EpollListener {
    type Conn = Epoll;

    async fn accept(&self) -> io::Result<(Epoll, std::net::SocketAddr)> {
        let (stream, peer) = self.0.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((Epoll(stream), peer))
    }

    fn close(self) {}
}

/// A connected socket, driven with owned buffers.
pub(crate) trait Transport {
    /// Reads into the spare capacity of `buf` (appending); `Ok(0)` is EOF.
    async fn read(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>);
    /// Writes all of `buf`.
    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>);
    /// Writes `head` then `body` (one vectored write where possible).
    async fn write_head_body(&mut self, head: Vec<u8>, body: Bytes) -> io::Result<()>;
    /// Writes `head`, then `len` bytes of `file` from `start`, with
    /// sendfile (no copy through user space).
    async fn write_head_file(
        &mut self,
        head: Vec<u8>,
        file: Rc<File>,
        start: u64,
        len: u64,
    ) -> io::Result<()>;
    /// Waits until a read would return at once (data, EOF or an error)
    /// without taking anything, so it can lose a `select!` safely: the
    /// relay of an upgraded connection waits on both sides with it.
    async fn wait_readable(&mut self) -> io::Result<()>;
    /// The socket underneath, for non-blocking checks.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Says goodbye at the protocol level before a half-close (TLS:
    /// close_notify); nothing for plain TCP.
    async fn finish(&mut self) {}
    /// Half-closes the write side so the peer sees EOF after our last byte.
    fn shutdown_write(&self);
    /// Shuts both directions. With io_uring this also completes a read that
    /// a timeout abandoned; until it completes, the kernel keeps the socket.
    fn shutdown_both(&self);
}

/// A client connection that can become a byte stream for the `h2` codec
/// (see `stream`), after which the owned-buffer methods are not used.
pub(crate) trait IntoStream {
    type Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static;
    fn into_stream(self) -> io::Result<Self::Stream>;
}

impl IntoStream for Uring {
    type Stream = super::stream::SocketStream;
    fn into_stream(self) -> io::Result<Self::Stream> {
        super::stream::SocketStream::new(self.stream)
    }
}

impl IntoStream for Epoll {
    type Stream = tokio::net::TcpStream;
    fn into_stream(self) -> io::Result<Self::Stream> {
        Ok(self.0)
    }
}

/// A socket reliw opens itself (to an upstream), on the same runtime as
/// the connections it accepts.
pub(crate) trait Connect: Transport + Sized + 'static {
    /// Connects (TCP_NODELAY set).
    async fn connect(addr: std::net::SocketAddr) -> io::Result<Self>;
}

impl Connect for Uring {
    async fn connect(addr: std::net::SocketAddr) -> io::Result<Self> {
        let stream = tokio_uring::net::TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        Ok(Self::new(stream))
    }
}

impl Connect for Epoll {
    async fn connect(addr: std::net::SocketAddr) -> io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        Ok(Self(stream))
    }
}

/// tokio-uring (io_uring) sockets. File bodies go out with sendfile on a
/// non-blocking duplicate of the socket, waiting for room through tokio's
/// reactor (tokio-uring runs on top of one); tokio-uring has no splice or
/// TCP send_zc operation to do it on the ring.
pub(crate) struct Uring {
    stream: tokio_uring::net::TcpStream,
    ready: Option<AsyncFd<OwnedFd>>,
}

impl Uring {
    pub(crate) fn new(stream: tokio_uring::net::TcpStream) -> Self {
        Self {
            stream,
            ready: None,
        }
    }

    /// The socket registered with tokio's reactor for readiness (set up on
    /// first use).
    fn readiness(&mut self) -> io::Result<&AsyncFd<OwnedFd>> {
        if self.ready.is_none() {
            self.ready = Some(readiness(&self.stream)?);
        }
        self.ready
            .as_ref()
            .ok_or_else(|| io::Error::other("no readiness handle"))
    }
}

/// A non-blocking duplicate of a tokio-uring socket, registered with
/// tokio's reactor for readiness.
pub(crate) fn readiness(stream: &tokio_uring::net::TcpStream) -> io::Result<AsyncFd<OwnedFd>> {
    #[allow(unsafe_code)]
    // SAFETY: the fd belongs to `stream`, which is alive for the whole
    // borrow; we only duplicate it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let dup = rustix::io::fcntl_dupfd_cloexec(borrowed, 0)?;
    // Shared with the original: io_uring handles non-blocking sockets.
    rustix::io::ioctl_fionbio(&dup, true)?;
    register(dup, Interest::WRITABLE | Interest::READABLE)
}

/// Registers a socket we own with tokio's reactor.
pub(crate) fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    #[allow(unsafe_code)]
    // SAFETY: `fd` is an OwnedFd moved into the AsyncFd: it stays open and
    // the same for the AsyncFd's whole life.
    let registered = unsafe { AsyncFd::register_with_interest(fd, interest) };
    registered.map_err(|e| io::Error::other(e.to_string()))
}

impl Transport for Uring {
    async fn read(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        // Into the spare capacity: tokio-uring reads a whole `Vec` from its
        // first byte, which would overwrite what the buffer already holds
        // (a head that arrived in pieces, a partial chunk-size line).
        let held = buf.len();
        let (res, slice) = self.stream.read(buf.slice(held..)).await;
        (res, slice.into_inner())
    }

    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        self.stream.write_all(buf).await
    }

    async fn write_head_body(&mut self, head: Vec<u8>, body: Bytes) -> io::Result<()> {
        let total = head.len() + body.len();
        let head = Bytes::from(head);
        let (res, bufs) = self.stream.writev(vec![head, body]).await;
        let mut written = res?;
        if written == total {
            return Ok(());
        }
        // A short vectored write: send the rest of each buffer in turn.
        for buf in bufs {
            if written >= buf.len() {
                written -= buf.len();
                continue;
            }
            let (res, _) = self.stream.write_all(buf.slice(written..)).await;
            res?;
            written = 0;
        }
        Ok(())
    }

    async fn write_head_file(
        &mut self,
        head: Vec<u8>,
        file: Rc<File>,
        start: u64,
        len: u64,
    ) -> io::Result<()> {
        let fd = self.readiness()?;
        let mut sent = 0;
        while sent < head.len() {
            let mut guard = fd.writable().await?;
            if let Ok(n) = guard.try_io(|fd| send_more(fd.get_ref(), &head[sent..])) {
                sent += n?;
            }
        }
        let mut offset = start;
        let end = start + len;
        while offset < end {
            let mut guard = fd.writable().await?;
            if let Ok(result) = guard.try_io(|fd| send_file(fd.get_ref(), &file, &mut offset, end))
            {
                result?;
            }
        }
        Ok(())
    }

    async fn wait_readable(&mut self) -> io::Result<()> {
        let fd = self.readiness()?;
        loop {
            let mut guard = fd.readable().await?;
            if guard.try_io(|fd| peek(fd.get_ref())).is_ok() {
                return Ok(());
            }
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        #[allow(unsafe_code)]
        // SAFETY: the fd belongs to `self.stream`, which outlives the borrow.
        unsafe {
            BorrowedFd::borrow_raw(self.stream.as_raw_fd())
        }
    }

    fn shutdown_write(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }

    fn shutdown_both(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Plain tokio (epoll) sockets: the fallback where io_uring is unavailable.
pub(crate) struct Epoll(pub(crate) tokio::net::TcpStream);

impl Transport for Epoll {
    async fn read(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        let res = self.0.read_buf(&mut buf).await;
        (res, buf)
    }

    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let res = self.0.write_all(&buf).await;
        (res, buf)
    }

    async fn write_head_body(&mut self, head: Vec<u8>, body: Bytes) -> io::Result<()> {
        if head.len() + body.len() <= 64 * 1024 {
            let mut all = head;
            all.extend_from_slice(&body);
            return self.0.write_all(&all).await;
        }
        self.0.write_all(&head).await?;
        self.0.write_all(&body).await
    }

    async fn write_head_file(
        &mut self,
        head: Vec<u8>,
        file: Rc<File>,
        start: u64,
        len: u64,
    ) -> io::Result<()> {
        let mut sent = 0;
        while sent < head.len() {
            self.0.writable().await?;
            match self.0.try_io(tokio::io::Interest::WRITABLE, || {
                send_more(&self.0, &head[sent..])
            }) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        let mut offset = start;
        let end = start + len;
        while offset < end {
            self.0.writable().await?;
            match self.0.try_io(tokio::io::Interest::WRITABLE, || {
                send_file(&self.0, &file, &mut offset, end)
            }) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn wait_readable(&mut self) -> io::Result<()> {
        loop {
            self.0.readable().await?;
            match self.0.try_io(Interest::READABLE, || peek(&self.0)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                _ => return Ok(()),
            }
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    fn shutdown_write(&self) {
        let sock = socket2::SockRef::from(&self.0);
        let _ = sock.shutdown(std::net::Shutdown::Write);
    }

    fn shutdown_both(&self) {
        let sock = socket2::SockRef::from(&self.0);
        let _ = sock.shutdown(std::net::Shutdown::Both);
    }
}

/// recv(2) with MSG_PEEK: `WouldBlock` unless data, EOF or an error waits.
fn peek(socket: impl AsFd) -> io::Result<usize> {
    let mut byte = [0u8; 1];
    let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
    match rustix::net::recv(socket, &mut byte, flags) {
        Ok((n, _)) => Ok(n),
        Err(rustix::io::Errno::AGAIN) => Err(io::ErrorKind::WouldBlock.into()),
        // An error is something to read too: the read reports it.
        Err(_) => Ok(0),
    }
}

/// Whether an idle connection is still fit for a request: nothing to read
/// (no EOF, no stray bytes, no error) and still open.
pub(crate) fn idle_and_open(socket: impl AsFd) -> bool {
    matches!(peek(socket), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// A non-blocking recv(2) into the spare room of `buf`: `Ok(None)` when
/// nothing is waiting, `Ok(Some(0))` at EOF.
pub(crate) fn recv_now(socket: impl AsFd, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    let start = buf.len();
    buf.resize(buf.capacity(), 0);
    let got = rustix::net::recv(socket, &mut buf[start..], rustix::net::RecvFlags::DONTWAIT);
    match got {
        Ok((n, _)) => {
            buf.truncate(start + n);
            Ok(Some(n))
        }
        Err(rustix::io::Errno::AGAIN) => {
            buf.truncate(start);
            Ok(None)
        }
        Err(e) => {
            buf.truncate(start);
            Err(e.into())
        }
    }
}

/// send(2) with MSG_MORE: the head waits to share a segment with the body.
fn send_more(socket: impl AsFd, bytes: &[u8]) -> io::Result<usize> {
    rustix::net::send(socket, bytes, rustix::net::SendFlags::MORE).map_err(io::Error::from)
}

/// One sendfile(2) call from `offset` towards `end`; `WouldBlock` when the
/// socket is full, `UnexpectedEof` if the file shrank under us.
fn send_file(socket: impl AsFd, file: &File, offset: &mut u64, end: u64) -> io::Result<()> {
    let want = usize::try_from(end - *offset)
        .unwrap_or(usize::MAX)
        .min(1 << 30);
    match rustix::fs::sendfile(socket, file, Some(offset), want) {
        Ok(0) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file shrank while sending",
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
