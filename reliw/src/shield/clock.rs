//! The clocks the shield needs: `CLOCK_MONOTONIC` (ban times as people
//! and the sweeper see them), the kernel's tick counter (jiffies, the
//! only clock the XDP program reads) and the wall clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::time::{ClockId, clock_gettime};

/// Nanoseconds on `CLOCK_MONOTONIC`, comparable with the XDP program's clock.
pub fn monotonic_ns() -> u64 {
    let ts = clock_gettime(ClockId::Monotonic);
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Seconds since the Unix epoch.
pub fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The wall-clock time (Unix seconds) at which a monotonic instant falls.
pub fn monotonic_to_unix_seconds(mono_ns: u64) -> u64 {
    let now_mono = monotonic_ns();
    let now_unix = unix_seconds();
    if mono_ns >= now_mono {
        now_unix.saturating_add(Duration::from_nanos(mono_ns - now_mono).as_secs())
    } else {
        now_unix.saturating_sub(Duration::from_nanos(now_mono - mono_ns).as_secs())
    }
}

/// The kernel's tick (1 / HZ): how often jiffies, the XDP program's clock,
/// move on. `CLOCK_MONOTONIC_COARSE` moves on the same tick, and its
/// resolution is the tick's length.
pub fn tick() -> Duration {
    let ts = rustix::time::clock_getres(ClockId::MonotonicCoarse);
    let nanos = u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0));
    // A kernel that reports nothing useful: assume HZ=100, the coarsest.
    if nanos == 0 {
        Duration::from_millis(10)
    } else {
        Duration::from_nanos(nanos)
    }
}

/// Where jiffies stood at one `CLOCK_MONOTONIC` instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Calibration {
    jiffies: u64,
    monotonic_ns: u64,
    tick_ns: u64,
}

/// The jiffies value at a `CLOCK_MONOTONIC` instant, rounded up (so an
/// expiry converted here never comes early), within one tick.
pub fn jiffies_at(monotonic_ns: u64) -> u64 {
    static CALIBRATION: std::sync::OnceLock<Calibration> = std::sync::OnceLock::new();
    let c = CALIBRATION.get_or_init(calibrate);
    let delta = i128::from(monotonic_ns) - i128::from(c.monotonic_ns);
    let tick = i128::from(c.tick_ns.max(1));
    // Rounded up, and one tick more: the calibration's jiffy may have
    // begun up to a tick before its instant.
    let ticks = if delta >= 0 {
        (delta + tick - 1) / tick + 1
    } else {
        delta / tick + 1
    };
    u64::try_from((i128::from(c.jiffies) + ticks).max(0)).unwrap_or(u64::MAX)
}

/// Jiffies and the monotonic time of one read of `/proc/timer_list`
/// (root only); without it, from the boot value of jiffies, which is off
/// by the ticks between boot and the start of the tick (tens of ms).
fn calibrate() -> Calibration {
    let tick_ns = u64::try_from(tick().as_nanos()).unwrap_or(4_000_000);
    if let Some(c) = std::fs::read_to_string("/proc/timer_list")
        .ok()
        .and_then(|text| parse_timer_list(&text, tick_ns))
    {
        return c;
    }
    tracing::debug!("/proc/timer_list unreadable: jiffies estimated from the boot value");
    // The kernel starts jiffies 300 s before a 32-bit wrap (INITIAL_JIFFIES).
    let hz = 1_000_000_000 / tick_ns.max(1);
    let initial = (1u64 << 32).wrapping_sub(300 * hz);
    let now = monotonic_ns();
    Calibration {
        jiffies: initial + now / tick_ns.max(1),
        monotonic_ns: now,
        tick_ns,
    }
}

/// `now at N nsecs` (CLOCK_MONOTONIC at the read) and the first
/// `jiffies: N` of a `/proc/timer_list` text.
fn parse_timer_list(text: &str, tick_ns: u64) -> Option<Calibration> {
    let mut now = None;
    let mut jiffies = None;
    for line in text.lines() {
        let line = line.trim();
        if now.is_none()
            && let Some(rest) = line.strip_prefix("now at ")
        {
            now = rest.split_whitespace().next()?.parse().ok();
        } else if jiffies.is_none()
            && let Some(rest) = line.strip_prefix("jiffies:")
        {
            jiffies = rest.trim().parse().ok();
        }
        if now.is_some() && jiffies.is_some() {
            break;
        }
    }
    Some(Calibration {
        jiffies: jiffies?,
        monotonic_ns: now?,
        tick_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_list_gives_jiffies_at_its_read() {
        let text = "Timer List Version: v0.10\nHRTIMER_MAX_CLOCK_BASES: 8\nnow at 70797021151490 nsecs\n\ncpu: 0\n  .last_jiffies   : 4312591512\njiffies: 4312591513\n";
        assert_eq!(
            parse_timer_list(text, 4_000_000),
            Some(Calibration {
                jiffies: 4_312_591_513,
                monotonic_ns: 70_797_021_151_490,
                tick_ns: 4_000_000,
            })
        );
        assert_eq!(parse_timer_list("now at 5 nsecs\n", 4_000_000), None);
    }

    #[test]
    fn jiffies_follow_the_monotonic_clock_rounded_up() {
        let now = monotonic_ns();
        let tick = u64::try_from(tick().as_nanos()).unwrap_or(1);
        let a = jiffies_at(now);
        assert_eq!(jiffies_at(now + 10 * tick), a + 10);
        assert!(jiffies_at(now + 1) >= a);
        assert!(jiffies_at(now.saturating_sub(10 * tick)) <= a - 9);
        // Never early: the jiffy of an instant is past the one the kernel
        // had at the calibration.
        let c = calibrate();
        assert!(jiffies_at(c.monotonic_ns) > c.jiffies);
    }
}
