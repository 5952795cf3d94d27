//! The reverse proxy's protocol side, sans-IO: what `P:PROXY:<host>` says
//! ([`target`]), the heads that cross ([`head`]) and the TLS settings for
//! upstreams ([`upstream_tls`]). Moving bytes is the server's job
//! (`server::forward`, `server::upstream`).

pub mod head;
pub mod target;
pub mod upstream_tls;

pub use target::{PoolKey, ProxyTarget, UpstreamTls};
