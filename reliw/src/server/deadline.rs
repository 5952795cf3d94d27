//! One read with a deadline, on tokio's clock (virtual under the test
//! harness's paused time), used by the connection driver and the proxy.

use tokio::sync::watch;
use tokio::time::Instant;

use super::transport::Transport;

/// Why a read gave no bytes.
pub(crate) enum ReadError {
    Timeout,
    Shutdown,
    Io,
}

/// One read with a deadline, optionally abandoned on shutdown (only while
/// idle between requests, so in-flight requests finish).
pub(crate) async fn read_until<T: Transport>(
    io: &mut T,
    buf: Vec<u8>,
    deadline: Instant,
    shutdown: Option<&mut watch::Receiver<bool>>,
) -> (Result<usize, ReadError>, Vec<u8>) {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return (Err(ReadError::Timeout), buf);
    }
    let read = tokio::time::timeout(remaining, io.read(buf));
    let result = match shutdown {
        Some(rx) => {
            if *rx.borrow() {
                return (Err(ReadError::Shutdown), Vec::new());
            }
            tokio::select! {
                r = read => r,
                _ = rx.changed() => return (Err(ReadError::Shutdown), Vec::new()),
            }
        }
        None => read.await,
    };
    match result {
        Ok((Ok(n), b)) => (Ok(n), b),
        Ok((Err(_), b)) => (Err(ReadError::Io), b),
        // The buffer went with the cancelled read; the connection ends anyway.
        Err(_) => (Err(ReadError::Timeout), Vec::new()),
    }
}
