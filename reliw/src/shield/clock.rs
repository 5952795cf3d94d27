//! The clocks the shield needs: `CLOCK_MONOTONIC` (the clock of
//! `bpf_ktime_get_ns`, which ban expiries use) and the wall clock.

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

/// The tick of `CLOCK_MONOTONIC_COARSE`, the clock the XDP program reads
/// (`bpf_ktime_get_coarse_ns`): its time moves in steps this long.
pub fn coarse_tick() -> Duration {
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
