//! The shield's background thread: removes expired bans every `sweep_every`,
//! hands the program's escalation reports (sources that stayed over their
//! budget) to whoever bans them, keeps `net.ipv4.tcp_syncookies` in step
//! with the program's SYN cookies (and restores it when it stops), and,
//! when enabled, forwards the XDP program's aya-log lines.
//!
//! The XDP program already ignores expired bans; sweeping frees their LRU
//! slots and keeps `reliw shield list` short.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya::maps::{MapData, RingBuf};
use reliw_common::Escalation;

use super::{Escalated, ShieldMaps, addr::from_addr};

type EbpfLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// Log forwarding latency when the eBPF log is on, and the most an
/// escalation waits to be read.
const POLL: Duration = Duration::from_millis(100);

/// The program's escalation ring and where its reports go.
pub(super) struct Escalations {
    pub(super) ring: RingBuf<MapData>,
    pub(super) to: tokio::sync::mpsc::Sender<Escalated>,
}

/// Stops and joins the thread on drop.
pub(super) struct Housekeeper {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Housekeeper {
    pub(super) fn spawn(
        maps: Arc<Mutex<ShieldMaps>>,
        sweep_every: Duration,
        mut logger: Option<EbpfLogger>,
        mut escalations: Escalations,
        mut kernel_cookies: Option<super::syncookies::KernelCookies>,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let tick = POLL.min(sweep_every);
        let thread = std::thread::Builder::new()
            .name(String::from("reliw-shield"))
            .spawn(move || {
                let mut next_sweep = Instant::now() + sweep_every;
                // A message or a dropped sender both mean stop.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    if let Some(logger) = logger.as_mut() {
                        logger.flush();
                    }
                    escalations.forward();
                    if let Some(kernel) = kernel_cookies.as_mut() {
                        let sent = maps
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .counter(reliw_common::stat::SYN_COOKIE);
                        if let Ok(sent) = sent {
                            kernel.observe(sent);
                        }
                    }
                    if Instant::now() >= next_sweep {
                        next_sweep = Instant::now() + sweep_every;
                        sweep(&maps);
                    }
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Escalations {
    /// Hands every report in the ring on. A full channel (the banning side
    /// is behind by a thousand) drops the report: the program reports the
    /// source again in its next over-budget stretch.
    fn forward(&mut self) {
        while let Some(item) = self.ring.next() {
            let Some(report) = parse_escalation(&item) else {
                tracing::warn!(
                    len = item.len(),
                    "shield: ignored a malformed escalation report"
                );
                continue;
            };
            if self.to.try_send(report).is_err() {
                tracing::warn!(ip = %report.ip, "shield: escalation queue full; report dropped");
            }
        }
    }
}

fn parse_escalation(bytes: &[u8]) -> Option<Escalated> {
    if bytes.len() < size_of::<Escalation>() {
        return None;
    }
    // SAFETY: the length is checked above; Escalation is plain data
    // (`aya::Pod`) and the ring gives no alignment, hence read_unaligned.
    #[allow(unsafe_code)]
    let raw: Escalation = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    Some(Escalated {
        ip: from_addr(&raw.addr),
        budget: reliw_common::budget::name(raw.budget),
        dry_run: raw.dry_run != 0,
    })
}

fn sweep(maps: &Mutex<ShieldMaps>) {
    let mut maps = maps.lock().unwrap_or_else(|p| p.into_inner());
    match maps.sweep_expired() {
        Ok(0) => {}
        Ok(n) => tracing::debug!("shield: removed {n} expired bans"),
        Err(e) => tracing::warn!("shield: sweeping expired bans failed: {e}"),
    }
}

impl Drop for Housekeeper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
