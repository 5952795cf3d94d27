//! Per-source budgets: `shield.rate_limit` turned into the GCRA parameters
//! the XDP program applies (`reliw_common::RateLimits`).
//!
//! The program's clock is the kernel's tick counter (jiffies), whose time
//! moves in ticks (1-10 ms by the kernel's HZ). Every packet within one tick sees the same "now",
//! so a budget whose tolerance is shorter than a tick would pass one burst
//! per tick, far below its rate. The tolerance is therefore never less
//! than one tick: the smallest effective burst is one tick's worth of the
//! rate, and [`Plan::raised`] says when the configured one was raised.

use std::time::Duration;

use reliw_common::{Budget, RateLimits};

use crate::config::ShieldRateLimit;

/// What the program will apply, and what differs from the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub limits: RateLimits,
    /// Bursts raised to one tick's worth: `(packet, syn)`, `None` when kept.
    pub raised: (Option<u64>, Option<u64>),
}

/// The program's parameters for `config`, with the kernel's `tick`.
pub fn plan(config: &ShieldRateLimit, tick: Duration) -> Plan {
    let tick_ns = u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX);
    let (packet, packet_raised) = budget(config.packets_per_second, config.packet_burst, tick_ns);
    let (syn, syn_raised) = budget(config.syns_per_second, config.syn_burst, tick_ns);
    let limits = RateLimits {
        packet,
        syn,
        escalate_after_ns: config.escalate_after_seconds.saturating_mul(1_000_000_000),
        v6_prefix_len: config.ipv6_prefix.clamp(1, 128),
        _pad: 0,
    };
    Plan {
        limits: if limits.enabled() {
            limits
        } else {
            RateLimits::default()
        },
        raised: (packet_raised, syn_raised),
    }
}

/// One budget: `per_second` (0: off) with a burst (default one second's
/// worth); the effective burst when it had to be raised.
fn budget(per_second: u64, burst: Option<u64>, tick_ns: u64) -> (Budget, Option<u64>) {
    if per_second == 0 {
        return (Budget::default(), None);
    }
    let interval_ns = (1_000_000_000 / per_second).max(1);
    let burst = burst.unwrap_or(per_second).max(1);
    let tolerance_ns = (burst - 1).saturating_mul(interval_ns);
    // A rate slower than one per tick loses at most a tick per packet.
    if tolerance_ns >= tick_ns || interval_ns >= tick_ns {
        return (
            Budget {
                interval_ns,
                tolerance_ns,
            },
            None,
        );
    }
    let effective = tick_ns / interval_ns + 1;
    (
        Budget {
            interval_ns,
            tolerance_ns: tick_ns,
        },
        Some(effective),
    )
}

/// The budgets as a person or tool reads them: the inverse of [`plan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct View {
    pub enabled: bool,
    pub packets_per_second: u64,
    pub packet_burst: u64,
    pub syns_per_second: u64,
    pub syn_burst: u64,
    pub ipv6_prefix: u32,
    pub escalate_after_seconds: u64,
}

/// What `limits` allow, in the config's units.
pub fn view(limits: &RateLimits) -> View {
    let per_second = |b: &Budget| match (
        1_000_000_000u64.checked_div(b.interval_ns),
        b.tolerance_ns.checked_div(b.interval_ns),
    ) {
        (Some(rate), Some(extra)) => (rate, extra + 1),
        _ => (0, 0),
    };
    let (packets_per_second, packet_burst) = per_second(&limits.packet);
    let (syns_per_second, syn_burst) = per_second(&limits.syn);
    View {
        enabled: limits.enabled(),
        packets_per_second,
        packet_burst,
        syns_per_second,
        syn_burst,
        ipv6_prefix: limits.v6_prefix_len,
        escalate_after_seconds: limits.escalate_after_ns / 1_000_000_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(4);

    fn config(packets: u64, syns: u64) -> ShieldRateLimit {
        ShieldRateLimit {
            packets_per_second: packets,
            syns_per_second: syns,
            ..ShieldRateLimit::default()
        }
    }

    #[test]
    fn no_rate_means_no_limits() {
        let plan = plan(&ShieldRateLimit::default(), TICK);
        assert_eq!(plan.limits, RateLimits::default());
        assert!(!plan.limits.enabled());
    }

    #[test]
    fn default_burst_is_one_second_of_the_rate() {
        let plan = plan(&config(1000, 50), TICK);
        assert_eq!(plan.limits.packet.interval_ns, 1_000_000);
        assert_eq!(plan.limits.packet.tolerance_ns, 999 * 1_000_000);
        assert_eq!(plan.limits.syn.interval_ns, 20_000_000);
        assert_eq!(plan.limits.syn.tolerance_ns, 49 * 20_000_000);
        assert_eq!(plan.limits.v6_prefix_len, 64);
        assert_eq!(plan.limits.escalate_after_ns, 10_000_000_000);
        assert_eq!(plan.raised, (None, None));
    }

    #[test]
    fn the_view_reads_back_what_the_config_said() {
        let mut c = config(1000, 50);
        c.packet_burst = Some(200);
        c.escalate_after_seconds = 30;
        let v = view(&plan(&c, TICK).limits);
        assert_eq!(
            (
                v.packets_per_second,
                v.packet_burst,
                v.syns_per_second,
                v.syn_burst
            ),
            (1000, 200, 50, 50)
        );
        assert_eq!(
            (v.ipv6_prefix, v.escalate_after_seconds, v.enabled),
            (64, 30, true)
        );
    }

    #[test]
    fn a_burst_below_one_tick_is_raised_to_it() {
        let mut c = config(10_000, 0);
        c.packet_burst = Some(1);
        let plan = plan(&c, TICK);
        // 10k/s is one per 100 us; a 4 ms tick holds 40 of them.
        assert_eq!(plan.limits.packet.tolerance_ns, 4_000_000);
        assert_eq!(plan.raised, (Some(41), None));
        assert_eq!(plan.limits.syn, Budget::default());
    }
}
