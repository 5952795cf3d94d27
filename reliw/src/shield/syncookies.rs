//! `shield.syn_cookies` turned into the program's settings, and the one
//! kernel setting the XDP cookie path depends on.
//!
//! The program answers SYNs with the kernel's own cookies; the client's
//! ACK is then validated by the listening socket, which accepts a cookie
//! only while it has sent cookies itself in the last two minutes. With
//! `net.ipv4.tcp_syncookies = 2` it sends one for every SYN it sees, and the
//! program leaves it one SYN a second per CPU, so the window never closes.
//! The sysctl belongs to the network namespace reliw runs in.

use std::path::Path;

use reliw_common::{SynCookies, cookie_mode};

use crate::config::ShieldSynCookies;

const SYSCTL: &str = "/proc/sys/net/ipv4/tcp_syncookies";

/// The program's settings: `listening` are the ports reliw serves, used
/// when the config names none.
pub fn plan(config: &ShieldSynCookies, listening: &[u16]) -> SynCookies {
    let mode = match config.mode.as_str() {
        "on" => cookie_mode::ON,
        "auto" => cookie_mode::AUTO,
        _ => cookie_mode::OFF,
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

/// Sets `net.ipv4.tcp_syncookies` to 2 when cookies are on; returns the
/// value it had when it was changed. A failure is returned for the
/// caller to log: cookies answered in XDP would then be refused.
pub fn prepare_kernel(settings: &SynCookies) -> std::io::Result<Option<String>> {
    if settings.mode == cookie_mode::OFF {
        return Ok(None);
    }
    set_sysctl(Path::new(SYSCTL))
}

fn set_sysctl(path: &Path) -> std::io::Result<Option<String>> {
    let before = std::fs::read_to_string(path)?.trim().to_owned();
    if before == "2" {
        return Ok(None);
    }
    std::fs::write(path, "2\n")?;
    Ok(Some(before))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_default_to_the_listening_ones() {
        let config = ShieldSynCookies {
            mode: String::from("auto"),
            ..ShieldSynCookies::default()
        };
        let s = plan(&config, &[80, 443]);
        assert_eq!(s.mode, cookie_mode::AUTO);
        assert_eq!(&s.ports[..3], &[80, 443, 0]);
        assert!(s.above_per_cpu >= 1);
        let config = ShieldSynCookies {
            mode: String::from("on"),
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
        assert_eq!(set_sysctl(&file).ok().flatten().as_deref(), Some("1"));
        assert_eq!(std::fs::read_to_string(&file).unwrap_or_default(), "2\n");
        assert_eq!(set_sysctl(&file).ok().flatten(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
