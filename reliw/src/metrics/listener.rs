//! The metrics listener (`metrics.ip`:`metrics.port`, default
//! 127.0.0.1:9101): `GET /metrics` answers in the Prometheus text format
//! with RELIW's fleet counters from the store, then this node's metrics.
//! Any other path is 404; a store that cannot be read makes it 503 (the
//! fleet counters would be missing, and a partial scrape looks like a
//! reset to Prometheus).
//!
//! It runs on its own thread and runtime, away from the request workers,
//! with one store handle for its whole life (no connection per scrape),
//! and at most [`MAX_CLIENTS`] scrapes at a time.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::NodeMetrics;
use crate::config::MetricsConfig;
use crate::http::{Limits, Method, Status, parse_head};
use crate::store::{Backend, Keys, Store, StoreError, StoreSpec};

const MAX_CLIENTS: usize = 64;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const HEAD_LIMIT: usize = 8192;

/// Binds the listener (so a port in use fails start-up) and starts its
/// thread; the bound address is returned.
pub fn spawn(
    config: &MetricsConfig,
    spec: StoreSpec,
    prefix: String,
    node: Arc<NodeMetrics>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind((config.ip, config.port))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let scan = (config.scan_count, config.scan_limit as usize);
    crate::background::spawn("reliw-metrics", move || {
        serve(listener, spec, Keys::new(&prefix), scan, node)
    })?;
    Ok(addr)
}

struct State {
    store: Option<Backend>,
    keys: Keys,
    scan: (u32, usize),
    node: Arc<NodeMetrics>,
}

async fn serve(
    listener: TcpListener,
    spec: StoreSpec,
    keys: Keys,
    scan: (u32, usize),
    node: Arc<NodeMetrics>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "metrics listener failed");
            return;
        }
    };
    let store = match spec.open() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "metrics: store unusable; fleet counters off");
            None
        }
    };
    let state = Rc::new(State {
        store,
        keys,
        scan,
        node,
    });
    let active = Rc::new(std::cell::Cell::new(0usize));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if active.get() >= MAX_CLIENTS {
            drop(stream);
            continue;
        }
        active.set(active.get() + 1);
        let state = Rc::clone(&state);
        let active = Rc::clone(&active);
        tokio::task::spawn_local(async move {
            let _ = tokio::time::timeout(READ_TIMEOUT * 2, one_request(stream, &state)).await;
            active.set(active.get() - 1);
        });
    }
}

async fn one_request(mut stream: tokio::net::TcpStream, state: &State) {
    let limits = Limits {
        line: HEAD_LIMIT,
        head: HEAD_LIMIT,
        headers: 100,
    };
    let mut buf = Vec::with_capacity(1024);
    let head = loop {
        match parse_head(&buf, &limits) {
            Ok(Some((head, _))) => break head,
            Ok(None) => {}
            Err(e) => return respond(&mut stream, e.status, "", false).await,
        }
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    };
    let head_only = head.method == Method::Head;
    if !matches!(head.method, Method::Get | Method::Head) {
        return respond(&mut stream, Status::METHOD_NOT_ALLOWED, "", head_only).await;
    }
    if head.path() != "/metrics" {
        return respond(&mut stream, Status::NOT_FOUND, "not found\n", head_only).await;
    }
    let mut text = String::with_capacity(4096);
    if let Some(store) = &state.store
        && let Err(e) = fleet(store, &state.keys, state.scan, &mut text).await
    {
        state.node.store_errors.inc();
        tracing::warn!(error = %e, "metrics: cannot read the fleet counters");
        return respond(
            &mut stream,
            Status::SERVICE_UNAVAILABLE,
            "store unavailable\n",
            head_only,
        )
        .await;
    }
    state.node.encode(&mut text);
    respond(&mut stream, Status::OK, &text, head_only).await;
}

async fn respond(stream: &mut tokio::net::TcpStream, status: Status, body: &str, head_only: bool) {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        status.code(),
        status.reason(),
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    let _ = stream.write_all(out.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// RELIW's fleet counters: hosts found by SCAN (bounded), then each one's
/// `total` and `by_method` hashes, in RELIW's text.
async fn fleet(
    store: &Backend,
    keys: &Keys,
    (count, limit): (u32, usize),
    out: &mut String,
) -> Result<(), StoreError> {
    let head = keys.metrics("", "");
    let (prefix, _) = head.split_at(head.len() - 2);
    let pattern = format!("{prefix}:*:total");
    let mut hosts: Vec<String> = store
        .scan(&pattern, count, limit)
        .await?
        .into_iter()
        .filter_map(|k| {
            k.strip_prefix(prefix)
                .and_then(|r| r.strip_prefix(':'))
                .and_then(|r| r.strip_suffix(":total"))
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
        })
        .collect();
    hosts.sort();
    hosts.dedup();
    let mut by_method = String::new();
    out.push_str("# TYPE http_requests_total counter\n");
    for host in &hosts {
        for (code, n) in store.hgetall(&keys.metrics(host, "total")).await? {
            let _ = writeln!(
                out,
                "http_requests_total{{host=\"{}\",code=\"{}\"}} {}",
                label(host),
                label(&code),
                String::from_utf8_lossy(&n)
            );
        }
        for (method, n) in store.hgetall(&keys.metrics(host, "by_method")).await? {
            let _ = writeln!(
                by_method,
                "http_requests_by_method{{host=\"{}\",method=\"{}\"}} {}",
                label(host),
                label(&method),
                String::from_utf8_lossy(&n)
            );
        }
    }
    out.push_str("# TYPE http_requests_by_method counter\n");
    out.push_str(&by_method);
    Ok(())
}

/// Escapes a label value (the text format's `\\`, `\"`, `\n`).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
