//! TLS termination with rustls (ring provider: it builds with nothing but
//! a C compiler, where aws-lc-rs needs cmake and more on a fresh machine,
//! and the handshake cost is not what limits an edge node serving small
//! files over keep-alive).
//!
//! rustls does no I/O: [`Tls`] feeds it the bytes the connection's own
//! owned-buffer reads return and writes out what it produces, so it sits
//! on either runtime's [`Transport`] without an AsyncRead/AsyncWrite
//! adapter, and is itself a [`Transport`] for the HTTP driver.
//!
//! Certificates: `ssl.default` and `ssl.hosts` chosen by SNI (unknown or
//! no SNI: the default), and ACME-issued ones before both for their names. TLS 1.2 and 1.3, ALPN `h2` (see `h2`) and `http/1.1`, session tickets
//! and a session cache for resumption. [`load`] builds a config from the
//! files; SIGHUP swaps in a new one for new connections, keeping the old
//! one when the new files are bad.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::transport::Transport;
use crate::acme::LiveCertificates;
use crate::config::{CertPair, SslConfig};

/// Why certificates could not be loaded (names the file).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read certificates from {path}: {detail}")]
    Cert {
        key: String,
        path: String,
        detail: String,
    },
    #[error("{key}: cannot use the private key in {path}: {detail}")]
    Key {
        key: String,
        path: String,
        detail: String,
    },
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// Certificates by SNI name, with a default (none: a name without a
/// certificate of its own fails the handshake, as RELIW without
/// `ssl.default`).
/// For a name: its ACME certificate (renewed in place), its file, a
/// wildcard ACME certificate one label up, then the default: the most
/// specific certificate wins, and a managed one before a file.
#[derive(Debug)]
struct SniResolver {
    default: Option<Arc<CertifiedKey>>,
    hosts: HashMap<String, Arc<CertifiedKey>>,
    acme: Arc<LiveCertificates>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            let found = self
                .acme
                .exact(&name)
                .or_else(|| self.hosts.get(&name).cloned())
                .or_else(|| self.acme.wildcard(&name));
            if found.is_some() {
                return found;
            }
        }
        self.default.clone()
    }
}

fn certified_key(
    key_name: &str,
    pair: &CertPair,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_err = |detail: String| TlsError::Cert {
        key: format!("{key_name}.cert"),
        path: pair.cert.display().to_string(),
        detail,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pair.cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err(String::from("no PEM certificate in the file")));
    }
    let key_err = |detail: String| TlsError::Key {
        key: format!("{key_name}.key"),
        path: pair.key.display().to_string(),
        detail,
    };
    let key = PrivateKeyDer::from_pem_file(&pair.key).map_err(|e| key_err(e.to_string()))?;
    CertifiedKey::from_der(chain, key, provider)
        .map(Arc::new)
        .map_err(|e| key_err(e.to_string()))
}

/// Builds the server config from the `ssl` section and the ACME
/// certificates of `acme`; `h2`: offer HTTP/2 in ALPN (preferred to
/// HTTP/1.1 when the client offers both).
pub fn load(
    ssl: &SslConfig,
    h2: bool,
    acme: &Arc<LiveCertificates>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let default = match &ssl.default {
        Some(pair) => Some(certified_key("ssl.default", pair, &provider)?),
        None => None,
    };
    let mut hosts = HashMap::new();
    for (name, pair) in &ssl.hosts {
        let key = certified_key(&format!("ssl.hosts.{name}"), pair, &provider)?;
        hosts.insert(name.to_ascii_lowercase(), key);
    }
    let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver {
            default,
            hosts,
            acme: Arc::clone(acme),
        }));
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| TlsError::Setup(e.to_string()))?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    Ok(Arc::new(config))
}

/// Most plaintext queued in rustls before it is written out.
const WRITE_CHUNK: usize = 64 * 1024;

/// A TLS connection over a [`Transport`]: the server side of a client's
/// connection, or the client side of one to an upstream.
pub(crate) struct Tls<T> {
    io: T,
    conn: rustls::Connection,
    /// TLS bytes read but not yet taken by rustls.
    incoming: Vec<u8>,
}

impl<T: Transport> Tls<T> {
    /// Runs the handshake within `timeout`.
    pub(crate) async fn accept(
        io: T,
        config: Arc<ServerConfig>,
        timeout: Duration,
    ) -> io::Result<Self> {
        let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
        Self::handshake(io, conn.into(), timeout).await
    }

    /// Connects as a client to `name` (SNI, and the name the certificate
    /// must carry unless the config says otherwise) within `timeout`.
    pub(crate) async fn connect(
        io: T,
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
        timeout: Duration,
    ) -> io::Result<Self> {
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        Self::handshake(io, conn.into(), timeout).await
    }

    async fn handshake(io: T, conn: rustls::Connection, timeout: Duration) -> io::Result<Self> {
        let mut tls = Self {
            io,
            conn,
            incoming: Vec::with_capacity(16 * 1024),
        };
        let handshake = async {
            while tls.conn.is_handshaking() {
                tls.flush().await?;
                if tls.conn.is_handshaking() && tls.fill().await? == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
            }
            tls.flush().await
        };
        match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(())) => Ok(tls),
            Ok(Err(e)) => {
                tls.io.shutdown_both();
                Err(e)
            }
            Err(_) => {
                tls.io.shutdown_both();
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timeout",
                ))
            }
        }
    }

    /// The SNI name the client sent.
    pub(crate) fn server_name(&self) -> Option<&str> {
        match &self.conn {
            rustls::Connection::Server(c) => c.server_name(),
            rustls::Connection::Client(_) => None,
        }
    }

    /// The client chose HTTP/2 (ALPN `h2`).
    pub(crate) fn is_h2(&self) -> bool {
        self.conn.alpn_protocol() == Some(b"h2")
    }

    /// Feeds what `incoming` holds to rustls; whether a read would now
    /// return at once (plaintext, the peer's close, or an error).
    fn has_buffered(&mut self) -> bool {
        while !self.incoming.is_empty() {
            match self.conn.read_tls(&mut &self.incoming[..]) {
                Ok(0) => break,
                Ok(used) => {
                    self.incoming.drain(..used);
                }
                Err(_) => return true,
            }
            if self.conn.process_new_packets().is_err() {
                return true;
            }
        }
        match self.conn.process_new_packets() {
            Ok(state) => state.plaintext_bytes_to_read() > 0 || state.peer_has_closed(),
            Err(_) => true,
        }
    }

    /// Writes out whatever rustls has queued.
    async fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            let mut out = Vec::with_capacity(16 * 1024);
            while self.conn.wants_write() {
                self.conn.write_tls(&mut out)?;
            }
            let (result, _) = self.io.write_all(out).await;
            result?;
        }
        Ok(())
    }

    /// Reads TLS bytes and hands them to rustls: how many were read (0 at EOF).
    async fn fill(&mut self) -> io::Result<usize> {
        let buf = std::mem::take(&mut self.incoming);
        let (result, buf) = self.io.read(buf).await;
        self.incoming = buf;
        let n = result?;
        if n == 0 {
            return Ok(0);
        }
        while !self.incoming.is_empty() {
            let used = self.conn.read_tls(&mut &self.incoming[..])?;
            self.incoming.drain(..used);
            if let Err(e) = self.conn.process_new_packets() {
                // Tell the peer why (the alert rustls queued), then fail.
                let _ = self.flush().await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if used == 0 {
                break;
            }
        }
        Ok(n)
    }

    /// Encrypts `data` and writes it out, in bounded pieces.
    async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        for piece in data.chunks(WRITE_CHUNK) {
            self.conn.writer().write_all(piece)?;
            self.flush().await?;
        }
        Ok(())
    }
}

impl<T: Transport + super::transport::IntoStream> super::transport::IntoStream for Tls<T> {
    type Stream = super::stream::TlsStream<T::Stream>;
    fn into_stream(self) -> io::Result<Self::Stream> {
        super::stream::TlsStream::new(self.io.into_stream()?, self.conn, &self.incoming)
    }
}

impl<T: Transport> Transport for Tls<T> {
    async fn read(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        loop {
            if buf.capacity() == buf.len() {
                buf.reserve(16 * 1024);
            }
            let start = buf.len();
            buf.resize(buf.capacity(), 0);
            let got = self.conn.reader().read(&mut buf[start..]);
            match got {
                Ok(n) => {
                    buf.truncate(start + n);
                    return (Ok(n), buf);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => buf.truncate(start),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    // TCP closed without close_notify: EOF all the same.
                    buf.truncate(start);
                    return (Ok(0), buf);
                }
                Err(e) => {
                    buf.truncate(start);
                    return (Err(e), buf);
                }
            }
            match self.fill().await {
                Ok(0) => return (Ok(0), buf),
                Ok(_) => {
                    // A KeyUpdate or ticket may need an answer.
                    if let Err(e) = self.flush().await {
                        return (Err(e), buf);
                    }
                }
                Err(e) => return (Err(e), buf),
            }
        }
    }

    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let result = self.send(&buf).await;
        (result, buf)
    }

    async fn write_head_body(&mut self, head: Vec<u8>, body: Bytes) -> io::Result<()> {
        // One record for small responses: head and body together.
        if head.len() + body.len() <= WRITE_CHUNK {
            self.conn.writer().write_all(&head)?;
            self.conn.writer().write_all(&body)?;
            return self.flush().await;
        }
        self.send(&head).await?;
        self.send(&body).await
    }

    async fn write_head_file(
        &mut self,
        head: Vec<u8>,
        file: Rc<File>,
        start: u64,
        len: u64,
    ) -> io::Result<()> {
        // No sendfile through TLS (no kTLS here): read and encrypt in pieces.
        self.send(&head).await?;
        let mut chunk = vec![0u8; WRITE_CHUNK];
        let mut done = 0u64;
        while done < len {
            let want = usize::try_from((len - done).min(WRITE_CHUNK as u64)).unwrap_or(WRITE_CHUNK);
            let n = file.read_at(&mut chunk[..want], start + done)?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            self.send(&chunk[..n]).await?;
            done += n as u64;
        }
        Ok(())
    }

    async fn wait_readable(&mut self) -> io::Result<()> {
        loop {
            if self.has_buffered() {
                return Ok(());
            }
            self.io.wait_readable().await?;
            // Take what arrived without awaiting, so losing a select! loses
            // nothing; a ticket or half a record is not yet something to read.
            match super::transport::recv_now(self.io.fd(), &mut self.incoming) {
                Ok(Some(0)) | Err(_) => return Ok(()),
                Ok(_) => {}
            }
        }
    }

    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.io.fd()
    }

    async fn finish(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush().await;
    }

    fn shutdown_write(&self) {
        self.io.shutdown_write();
    }

    fn shutdown_both(&self) {
        self.io.shutdown_both();
    }
}
