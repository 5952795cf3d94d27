//! `shield.syn_cookies` turned into the program's settings, and the one
//! kernel setting the XDP cookie path depends on.
//!
//! The program answers SYNs with the kernel's own cookies; the client's
//! ACK is then validated by the listening socket, which accepts a cookie
//! only while it has sent cookies itself in the last two minutes. With
//! `net.ipv4.tcp_syncookies = 2` it sends one for every SYN it sees, and the
//! program leaves it one SYN a second per CPU and listener, so the window
//! never closes. [`KernelCookies`] keeps the sysctl (of the network
//! namespace reliw runs in) at 2 only while that is needed.

use std::path::Path;

use reliw_common::{SynCookies, cookie_mode};

use crate::config::{CookieMode, ShieldSynCookies};

const SYSCTL: &str = "/proc/sys/net/ipv4/tcp_syncookies";

/// The program's settings: `listening` are the ports reliw serves, used
/// when the config names none.
pub fn plan(config: &ShieldSynCookies, listening: &[u16]) -> SynCookies {
    let mode = match config.mode {
        CookieMode::On => cookie_mode::ON,
        CookieMode::Auto => cookie_mode::AUTO,
        CookieMode::Off => cookie_mode::OFF,
    };
    let mut ports = [0u16; 8];
    let chosen = if config.ports.is_empty() {
        listening
    } else {
        &config.ports
    };
    for (slot, port) in ports.iter_mut().zip(chosen.iter().filter(|p| **p != 0)) {
        *slot = *port;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    SynCookies {
        mode,
        above_per_cpu: u32::try_from(config.above_per_second.div_ceil(cpus)).unwrap_or(u32::MAX),
        ports,
    }
}

/// `net.ipv4.tcp_syncookies` while the program answers with cookies.
///
/// At 2 the kernel sends a cookie for every SYN it sees, which it must
/// for the program's cookies to be accepted, but which also costs every
/// client without TCP timestamps its window scaling. So in `on` mode it is
/// 2 from start to exit; in `auto` mode it is 2 only while the program is
/// sending cookies (and 30 s after the last), and the old value otherwise.
/// The first handshakes of a flood in `auto` mode can fail for about a
/// second, until the kernel has sent a cookie itself. The old value is
/// put back when the shield stops.
pub struct KernelCookies {
    auto: bool,
    /// The value before we changed it, while it is changed.
    saved: Option<String>,
    last_count: u64,
    last_sent: Option<std::time::Instant>,
}

/// How long `auto` keeps the sysctl at 2 after the last cookie.
const AUTO_LINGER: std::time::Duration = std::time::Duration::from_secs(30);

impl KernelCookies {
    /// For `settings`; `None` when cookies are off. In `on` mode the
    /// sysctl is set here.
    pub fn start(settings: &SynCookies) -> Option<Self> {
        let mut k = match settings.mode {
            cookie_mode::ON => Self {
                auto: false,
                saved: None,
                last_count: 0,
                last_sent: None,
            },
            cookie_mode::AUTO => Self {
                auto: true,
                saved: None,
                last_count: 0,
                last_sent: None,
            },
            _ => return None,
        };
        if !k.auto {
            k.raise();
        }
        Some(k)
    }

    /// Told the program's `syn_cookie` counter now and then (the
    /// housekeeper's tick): raises the sysctl when cookies are being sent
    /// and, in `auto` mode, restores it after a quiet spell.
    pub fn observe(&mut self, syn_cookies_sent: u64) {
        if !self.auto {
            return;
        }
        let now = std::time::Instant::now();
        if syn_cookies_sent != self.last_count {
            self.last_count = syn_cookies_sent;
            self.last_sent = Some(now);
            if self.saved.is_none() {
                self.raise();
            }
        } else if self.saved.is_some()
            && self
                .last_sent
                .is_none_or(|t| now.duration_since(t) > AUTO_LINGER)
        {
            self.restore();
        }
    }

    fn raise(&mut self) {
        match set_sysctl(Path::new(SYSCTL), "2") {
            Ok(Some(before)) => {
                tracing::warn!(
                    "shield: net.ipv4.tcp_syncookies set to 2 (was {before}) while the shield answers SYNs with cookies"
                );
                self.saved = Some(before);
            }
            Ok(None) => {}
            Err(e) => tracing::error!(
                "shield: cannot set net.ipv4.tcp_syncookies to 2 ({e}): clients answered with a SYN cookie will be refused"
            ),
        }
    }

    fn restore(&mut self) {
        if let Some(before) = self.saved.take() {
            match set_sysctl(Path::new(SYSCTL), &before) {
                Ok(_) => tracing::info!("shield: net.ipv4.tcp_syncookies back to {before}"),
                Err(e) => tracing::warn!(
                    "shield: cannot restore net.ipv4.tcp_syncookies to {before}: {e}"
                ),
            }
        }
    }
}

impl Drop for KernelCookies {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Writes `value` unless the file holds it already; returns the value
/// it replaced.
fn set_sysctl(path: &Path, value: &str) -> std::io::Result<Option<String>> {
    let before = std::fs::read_to_string(path)?.trim().to_owned();
    if before == value {
        return Ok(None);
    }
    std::fs::write(path, format!("{value}\n"))?;
    Ok(Some(before))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_default_to_the_listening_ones() {
        let config = ShieldSynCookies {
            mode: CookieMode::Auto,
            ..ShieldSynCookies::default()
        };
        let s = plan(&config, &[80, 443]);
        assert_eq!(s.mode, cookie_mode::AUTO);
        assert_eq!(&s.ports[..3], &[80, 443, 0]);
        assert!(s.above_per_cpu >= 1);
        let config = ShieldSynCookies {
            mode: CookieMode::On,
            ports: vec![8443],
            ..ShieldSynCookies::default()
        };
        assert_eq!(&plan(&config, &[80]).ports[..2], &[8443, 0]);
        assert_eq!(
            plan(&ShieldSynCookies::default(), &[80]).mode,
            cookie_mode::OFF
        );
    }

    #[test]
    fn the_sysctl_is_set_once_and_its_old_value_reported() {
        let dir = std::env::temp_dir().join(format!("reliw-sysctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let file = dir.join("tcp_syncookies");
        std::fs::write(&file, "1\n").unwrap_or_default();
        assert_eq!(set_sysctl(&file, "2").ok().flatten().as_deref(), Some("1"));
        assert_eq!(std::fs::read_to_string(&file).unwrap_or_default(), "2\n");
        assert_eq!(set_sysctl(&file, "2").ok().flatten(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
