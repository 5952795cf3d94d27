//! An upgraded connection (101): bytes both ways until both sides close
//! or it idles out.

use std::time::Duration;

use super::send::write_within;
use crate::config::Config;
use crate::server::transport::Transport;
use crate::server::upstream::UpConn;

/// Relays bytes both ways after a 101 until both sides close or the
/// tunnel idles out. `from_client` and `from_up` hold bytes already read.
/// Returns the bytes sent to the client.
pub(super) async fn tunnel<T: Transport, U: Transport>(
    client: &mut T,
    from_client: &mut Vec<u8>,
    up: &mut UpConn<U>,
    mut from_up: Vec<u8>,
    config: &Config,
) -> u64 {
    let idle = Duration::from_millis(config.proxy.tunnel_idle_timeout_ms);
    let size = config.proxy.buffer_size;
    let mut sent = 0u64;
    let mut to_up = std::mem::take(from_client);
    let mut client_open = true;
    let mut up_open = true;
    loop {
        if !to_up.is_empty() {
            let (res, b) = write_within(up, to_up, idle).await;
            to_up = b;
            to_up.clear();
            if res.is_err() {
                return sent;
            }
        }
        if !from_up.is_empty() {
            let len = from_up.len() as u64;
            let (res, b) = write_within(client, from_up, idle).await;
            from_up = b;
            from_up.clear();
            if res.is_err() {
                return sent;
            }
            sent += len;
        }
        if !client_open && !up_open {
            return sent;
        }
        enum Side {
            Client,
            Up,
        }
        let side = tokio::select! {
            r = client.wait_readable(), if client_open => r.map(|()| Side::Client),
            r = up.wait_readable(), if up_open => r.map(|()| Side::Up),
            () = tokio::time::sleep(idle) => return sent,
        };
        let Ok(side) = side else { return sent };
        match side {
            Side::Client => {
                to_up.reserve(size);
                let (res, b) = client.read(to_up).await;
                to_up = b;
                match res {
                    Ok(0) => {
                        client_open = false;
                        up.finish().await;
                        up.shutdown_write();
                    }
                    Ok(_) => {}
                    Err(_) => return sent,
                }
            }
            Side::Up => {
                from_up.reserve(size);
                let (res, b) = up.read(from_up).await;
                from_up = b;
                match res {
                    Ok(0) => {
                        up_open = false;
                        client.finish().await;
                        client.shutdown_write();
                    }
                    Ok(_) => {}
                    Err(_) => return sent,
                }
            }
        }
    }
}
