//! The shield's background thread: removes expired bans every `sweep_every`
//! and, when enabled, forwards the XDP program's aya-log lines.
//!
//! The XDP program already ignores expired bans; sweeping frees their LRU
//! slots and keeps `reliw shield list` short.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::ShieldMaps;

type EbpfLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// Log forwarding latency when the eBPF log is on.
const LOG_POLL: Duration = Duration::from_millis(200);

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
    ) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let tick = if logger.is_some() {
            LOG_POLL.min(sweep_every)
        } else {
            sweep_every
        };
        let thread = std::thread::Builder::new()
            .name(String::from("reliw-shield"))
            .spawn(move || {
                let mut next_sweep = Instant::now() + sweep_every;
                // A message or a dropped sender both mean stop.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    if let Some(logger) = logger.as_mut() {
                        logger.flush();
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
