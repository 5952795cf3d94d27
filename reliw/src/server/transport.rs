//! The one I/O seam: what a connection driver needs from a socket, with
//! owned buffers (the io_uring model), implemented for tokio-uring and for
//! plain tokio (epoll). tokio-uring's types never leave this module.

use std::fs::File;
use std::io;

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Size of the buffer used to send files that are not cached.
pub(crate) const FILE_CHUNK: usize = 256 * 1024;

/// A connected socket, driven with owned buffers.
pub(crate) trait Transport {
    /// Reads into the spare capacity of `buf` (appending); `Ok(0)` is EOF.
    async fn read(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>);
    /// Writes all of `buf`.
    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>);
    /// Writes `head` then `body` (one vectored write where possible).
    async fn write_head_body(&mut self, head: Vec<u8>, body: Bytes) -> io::Result<()>;
    /// Writes `head`, then `len` bytes of `file` from `start`.
    async fn write_head_file(
        &mut self,
        head: Vec<u8>,
        file: File,
        start: u64,
        len: u64,
    ) -> io::Result<()>;
    /// Half-closes the write side so the peer sees EOF after our last byte.
    fn shutdown_write(&self);
    /// Shuts both directions. With io_uring this also completes a read that
    /// a timeout abandoned; until it completes, the kernel keeps the socket.
    fn shutdown_both(&self);
}

/// tokio-uring (io_uring) sockets.
pub(crate) struct Uring(pub(crate) tokio_uring::net::TcpStream);

impl Transport for Uring {
    async fn read(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        self.0.read(buf).await
    }

    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        self.0.write_all(buf).await
    }

    async fn write_head_body(&mut self, head: Vec<u8>, body: Bytes) -> io::Result<()> {
        let total = head.len() + body.len();
        let head = Bytes::from(head);
        let (res, bufs) = self.0.writev(vec![head, body]).await;
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
            let (res, _) = self.0.write_all(buf.slice(written..)).await;
            res?;
            written = 0;
        }
        Ok(())
    }

    async fn write_head_file(
        &mut self,
        head: Vec<u8>,
        file: File,
        start: u64,
        len: u64,
    ) -> io::Result<()> {
        let (res, _) = self.0.write_all(head).await;
        res?;
        let file = tokio_uring::fs::File::from_std(file);
        let mut buf = Vec::with_capacity(FILE_CHUNK.min(len as usize));
        let mut pos = start;
        let end = start + len;
        let result = async {
            while pos < end {
                buf.clear();
                let want = ((end - pos) as usize).min(FILE_CHUNK);
                let (res, b) = file.read_at(buf.slice_mut_limit(want), pos).await;
                let n = res?;
                buf = b.into_inner();
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while sending",
                    ));
                }
                pos += n as u64;
                let (res, b) = self.0.write_all(buf).await;
                res?;
                buf = b;
            }
            Ok(())
        }
        .await;
        let _ = file.close().await;
        result
    }

    fn shutdown_write(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Write);
    }

    fn shutdown_both(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

/// Limits a read to `n` bytes of a Vec's capacity.
trait SliceLimit {
    fn slice_mut_limit(self, n: usize) -> tokio_uring::buf::Slice<Vec<u8>>;
}

impl SliceLimit for Vec<u8> {
    fn slice_mut_limit(self, n: usize) -> tokio_uring::buf::Slice<Vec<u8>> {
        use tokio_uring::buf::BoundedBuf as _;
        let cap = self.capacity().min(n);
        self.slice(0..cap)
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

    /// sendfile(2): the file goes from the page cache to the socket
    /// without passing through user space.
    async fn write_head_file(
        &mut self,
        head: Vec<u8>,
        file: File,
        start: u64,
        len: u64,
    ) -> io::Result<()> {
        self.0.write_all(&head).await?;
        let mut offset = start;
        let end = start + len;
        while offset < end {
            self.0.writable().await?;
            let want = usize::try_from(end - offset)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            let sent = self.0.try_io(tokio::io::Interest::WRITABLE, || {
                rustix::fs::sendfile(&self.0, &file, Some(&mut offset), want)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while sending",
                    ));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
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
