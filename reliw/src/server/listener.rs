//! Listening sockets: one SO_REUSEPORT socket per worker and address, so
//! the kernel spreads connections over workers without a shared accept lock.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Socket, Type};

/// Binds `workers` sockets on `addr` (port 0: the first picks a free port
/// and the others share it). Returns them and the bound address.
pub(crate) fn bind_reuseport(
    addr: SocketAddr,
    workers: usize,
    backlog: u32,
) -> io::Result<(Vec<TcpListener>, SocketAddr)> {
    let mut out = Vec::with_capacity(workers);
    let mut bound = addr;
    for _ in 0..workers {
        let socket = Socket::new(Domain::for_address(bound), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        if bound.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&bound.into())?;
        socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
        let listener: TcpListener = socket.into();
        bound = listener.local_addr()?;
        out.push(listener);
    }
    Ok((out, bound))
}
